//! Prometheus metrics and the `/metrics` + `/healthz` endpoint.
//!
//! Metric names (all prefixed `origin_router_`):
//! - `probe_phase_seconds{region,pool,origin,phase}`: histogram per phase
//!   (`dns`, `connect`, `tls`, `first_byte`, `total`) of successful probes;
//! - `probes_total{region,pool,origin,result}`: `ok` or the failure class;
//! - `probe_failures_total{region,pool,origin,class}`: failures by class
//!   (`connect_timeout` and `response_timeout` apart);
//! - `probe_budget_seconds{region,pool,origin}`: the budget the origin's
//!   next probe runs under (adaptive, or connect plus response timeout);
//! - `ranking_changes_total{region,pool}`: top origin changed;
//! - `publish_seconds{region,pool}`, `publish_failures_total{region,pool}`,
//!   `publish_stale_total{region,pool}`: publishing to the store;
//! - `origin_state{region,pool,origin,state}`: 1 for each origin's state
//!   (`healthy`, `degraded`, `down`, `drained`) in the last ranking this
//!   worker wrote to the store, 0 for the other three, so an alert can ask
//!   `== 1` and a state that ends resolves it;
//! - `ranking_generated_timestamp_seconds{region,pool}`: when the last
//!   ranking this worker wrote was generated (Unix seconds): `time()` minus
//!   it is the age an edge would see;
//! - `leader{region,worker}`: 1 while this worker leads its region;
//! - `round_lag_seconds{region}`: how late a round started after its
//!   scheduled time; `round_seconds{region}`: how long rounds take;
//! - `probes_skipped_in_flight_total`, `coordination_errors_total{op}`.
//! - with `store.kvs_arn`: `kvs_writes_total{region}` (successful
//!   `UpdateKeys` calls), `kvs_keys_written_total{region,reason}` (values
//!   written, by why: `first`, `order`, `controls`, `connect_timeout`,
//!   `score`, `heartbeat`), `kvs_conflicts_total{region}` (another writer
//!   moved the store's ETag), `kvs_failures_total{region,op}` (rounds whose
//!   batch stayed unwritten), `kvs_write_seconds{region}` (one batch,
//!   retries included), `kvs_value_age_seconds{region,pool}` (how old the pool's value
//!   in the store is on the ranking's clock, set each round: it grows
//!   whatever keeps a value from being rewritten), `kvs_last_write_age_seconds{region}` (set each
//!   round: time since the last successful write),
//!   `kvs_dropped_origins_total{region,pool}`,
//!   `kvs_encode_errors_total{region,pool}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use origin_router::document::{OriginState, RankingDocument};
use origin_router::sample::{unix_millis_now, FailureClass, Outcome};
use tokio::net::TcpListener;

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// The recorder keeps each histogram sample in a queue until something
/// folds the queues into buckets: a scrape does, and so does a thread
/// started here every `UPKEEP_EVERY`. Without it a prober that nobody
/// scrapes would keep every probe's timings, growing without bound
/// (`build_recorder`, unlike `install`, starts no upkeep of its own).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms fold only on scrape");
            }
            // Another recorder (a test harness) may already be installed;
            // then this handle renders an empty page, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Pre-registered handles for one origin, so a probe records without
/// building label sets (this matters at thousands of probes per second).
pub struct TargetMetrics {
    phases: [Histogram; 5],
    ok: Counter,
    failures: [Counter; 8],
    failed_results: [Counter; 8],
    budget: metrics::Gauge,
}

impl TargetMetrics {
    pub fn new(region: &str, pool: &str, origin: &str) -> Self {
        let labels = |extra: (&'static str, &'static str)| {
            vec![
                metrics::Label::new("region", region.to_string()),
                metrics::Label::new("pool", pool.to_string()),
                metrics::Label::new("origin", origin.to_string()),
                metrics::Label::new(extra.0, extra.1),
            ]
        };
        let phase =
            |p| metrics::histogram!("origin_router_probe_phase_seconds", labels(("phase", p)));
        let class =
            |c| metrics::counter!("origin_router_probe_failures_total", labels(("class", c)));
        let result = |c| metrics::counter!("origin_router_probes_total", labels(("result", c)));
        TargetMetrics {
            phases: ["dns", "connect", "tls", "first_byte", "total"].map(phase),
            ok: result("ok"),
            failures: FailureClass::NAMES.map(class),
            failed_results: FailureClass::NAMES.map(result),
            budget: metrics::gauge!(
                "origin_router_probe_budget_seconds",
                "region" => region.to_string(),
                "pool" => pool.to_string(),
                "origin" => origin.to_string()
            ),
        }
    }

    /// The budget the next probe runs under: the adaptive one, or `fixed`
    /// (connect plus response timeout) when there is none.
    pub fn set_budget(&self, budget: Option<std::time::Duration>, fixed: std::time::Duration) {
        self.budget.set(budget.unwrap_or(fixed).as_secs_f64());
    }

    pub fn record(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok(t) => {
                self.ok.increment(1);
                for (h, d) in
                    self.phases
                        .iter()
                        .zip([t.dns, t.connect, t.tls, t.first_byte, t.total])
                {
                    h.record(d.as_secs_f64());
                }
            }
            Outcome::Failed(f) => {
                let i = FailureClass::NAMES
                    .iter()
                    .position(|n| *n == f.class.name())
                    .expect("every class has a name");
                self.failures[i].increment(1);
                self.failed_results[i].increment(1);
            }
        }
    }
}

/// The `state` label's values, indexed by [`state_index`].
const STATES: [&str; 4] = ["healthy", "degraded", "down", "drained"];

/// An exhaustive match: a new state stops this compiling until it has a
/// label value.
fn state_index(s: OriginState) -> usize {
    match s {
        OriginState::Healthy => 0,
        OriginState::Degraded => 1,
        OriginState::Down => 2,
        OriginState::Drained => 3,
    }
}

/// Records a ranking the store accepted: each origin's state and when the
/// ranking was generated. Called after the write, not when the ranking is
/// computed, so the gauges say what the edges can read; these are the
/// metrics the Prometheus rules in `deploy/prometheus/` alert on.
pub fn record_published(region: &str, doc: &RankingDocument) {
    for o in &doc.origins {
        let current = state_index(o.state);
        for (i, state) in STATES.iter().enumerate() {
            metrics::gauge!(
                "origin_router_origin_state",
                "region" => region.to_string(),
                "pool" => doc.pool.clone(),
                "origin" => o.id.clone(),
                "state" => *state
            )
            .set(if i == current { 1.0 } else { 0.0 });
        }
    }
    metrics::gauge!(
        "origin_router_ranking_generated_timestamp_seconds",
        "region" => region.to_string(),
        "pool" => doc.pool.clone()
    )
    .set(doc.generated_at as f64 / 1000.0);
}

/// What `/healthz` reports.
#[derive(Debug)]
pub struct Health {
    pub region: String,
    pub worker: String,
    pub leader: AtomicBool,
    /// Redis configured but unreachable: publishing from own samples.
    pub degraded: AtomicBool,
    pub last_round_end: AtomicU64,
    /// A round older than this means the worker is stuck.
    pub max_round_age: Duration,
}

impl Health {
    pub fn new(region: &str, worker: &str, max_round_age: Duration) -> Self {
        Health {
            region: region.to_string(),
            worker: worker.to_string(),
            leader: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            last_round_end: AtomicU64::new(unix_millis_now()),
            max_round_age,
        }
    }

    fn render(&self) -> (u16, String) {
        let age = unix_millis_now().saturating_sub(self.last_round_end.load(Ordering::Relaxed));
        let ok = age <= self.max_round_age.as_millis() as u64;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "stuck" },
            "region": self.region,
            "worker": self.worker,
            "leader": self.leader.load(Ordering::Relaxed),
            "degraded": self.degraded.load(Ordering::Relaxed),
            "last_round_age_ms": age,
        });
        (if ok { 200 } else { 503 }, body.to_string())
    }
}

/// Serves `/metrics` and `/healthz` until the returned task is aborted,
/// with the guards of [`crate::serve`] (accept backoff, header-read
/// timeout, connection limit).
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let (status, content_type, body) = match req.uri().path() {
            "/metrics" => (200, "text/plain; version=0.0.4", handle.render()),
            "/healthz" => {
                let (status, body) = health.render();
                (status, "application/json", body)
            }
            _ => (
                404,
                "text/plain",
                "not found: try /metrics or /healthz\n".to_string(),
            ),
        };
        std::future::ready(crate::serve::respond(status, content_type, &[], body))
    };
    Ok(tokio::spawn(crate::serve::serve(
        listener,
        crate::serve::Limits::default(),
        handler,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_label_is_the_states_own_name() {
        for s in [
            OriginState::Healthy,
            OriginState::Degraded,
            OriginState::Down,
            OriginState::Drained,
        ] {
            assert_eq!(STATES[state_index(s)], s.as_str());
        }
    }
}
