//! `prober bench-failover`: the failover timeline, measured.
//!
//! Three simulated regions (probers bound to 127.0.0.2-4, one solo worker
//! each, the real worker code) publish to an embedded store; one edge
//! router per region (the real decision code, default cache settings)
//! decides every 10 ms. Origin `fast` answers in 5 ms from everywhere, so
//! every edge uses it; each trial kills it (connections refused) at a random
//! point of the probe round and records, per region, when the first probe
//! failed, when the ranking marked it down, when that ranking was written,
//! and when the edge stopped choosing it. The timeline reported is when the
//! *last* region reached each stage. Then `fast` is restored and the next
//! trial waits until every edge uses it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::decision::{ProbeRacer, Router};
use origin_router::document::{OriginState, RankingDocument};
use origin_router::sample::{unix_millis_now, Outcome, Sample, UnixMillis};
use origin_router::store::{EmbeddedStore, PoolRankings, RankingStore, StoreError, WriteOutcome};
use origin_router_tests::{loopback, Mode, TestOrigin};
use rand::Rng;

use crate::cli::CliError;

/// Options of the failover benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Kill-and-restore trials.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
}

const REGIONS: [(&str, u8); 3] = [("us-east-1", 2), ("eu-west-1", 3), ("ap-southeast-1", 4)];
const VICTIM: &str = "fast";

/// Records when each ranking was written.
struct TimedStore {
    inner: EmbeddedStore,
    writes: Mutex<Vec<(UnixMillis, RankingDocument)>>,
}

#[async_trait]
impl RankingStore for TimedStore {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        self.inner.read_pool(pool).await
    }
    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        let outcome = self.inner.write(doc).await?;
        if outcome == WriteOutcome::Written {
            self.writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((unix_millis_now(), doc.clone()));
        }
        Ok(outcome)
    }
    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list_pools().await
    }
}

fn delays(latencies: [u64; 3]) -> Mode {
    crate::demo::region_delays(&REGIONS, latencies)
}

pub async fn run(args: FailoverArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("origin-router-failover")
        .tempdir()?;
    let store = Arc::new(TimedStore {
        inner: EmbeddedStore::new(dir.path()),
        writes: Mutex::new(Vec::new()),
    });
    let origin_modes = [
        (VICTIM, 11u8, [5u64, 5, 5]),
        ("virginia", 12, [20, 60, 120]),
        ("ireland", 13, [60, 20, 90]),
        ("singapore", 14, [120, 90, 20]),
    ];
    let mut origins = Vec::new();
    let mut pool = PoolConfig {
        default_origin: Some("virginia".into()),
        origins: Vec::new(),
    };
    for (name, host, latencies) in origin_modes {
        let o = TestOrigin::start(SocketAddr::new(loopback(host), 0), delays(latencies)).await?;
        pool.origins.push(OriginConfig::http(
            name,
            &loopback(host).to_string(),
            o.port(),
        ));
        origins.push(o);
    }
    // Default settings throughout, except what a loopback simulation needs.
    let mut base = Config::default();
    base.pools.insert("web".into(), pool);
    base.prober.metrics_listen = None;
    base.store.embedded_path = dir.path().to_path_buf();
    let base = base.validate().map_err(|p| format!("config: {p:?}"))?;

    let (samples_tx, mut samples_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Sample>>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut routers = Vec::new();
    for (region, host) in REGIONS {
        let mut c = base.clone();
        c.prober.region = Some(region.into());
        c.prober.worker_id = Some(format!("{region}-bench"));
        c.prober.source_address = Some(loopback(host));
        let mut stop = stop_rx.clone();
        let hooks = crate::worker::Hooks {
            samples: Some(samples_tx.clone()),
        };
        workers.push(tokio::spawn(crate::worker::run_with(
            c.clone(),
            store.clone(),
            hooks,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        let racer = Arc::new(ProbeRacer::from_config(&base)?);
        routers.push((
            region,
            Router::new(Arc::new(base.clone()), region, store.clone(), racer),
        ));
    }
    // Failed samples of the victim: (region of the worker, detection time).
    let failures: Arc<Mutex<Vec<(String, UnixMillis)>>> = Arc::default();
    let sink = failures.clone();
    tokio::spawn(async move {
        while let Some(batch) = samples_rx.recv().await {
            for s in batch.iter().filter(|s| s.origin == VICTIM) {
                if let Outcome::Failed(f) = &s.outcome {
                    let region = s.worker.trim_end_matches("-bench").to_string();
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((region, s.at + f.after.as_millis() as u64));
                }
            }
        }
    });
    // Edge decisions every 10 ms: the latest choice per region.
    let choices: Arc<Mutex<HashMap<&'static str, (String, UnixMillis)>>> = Arc::default();
    let record = choices.clone();
    let edges = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            for (region, router) in &routers {
                let d = router.decide("web", unix_millis_now()).await;
                let mut c = record.lock().unwrap_or_else(|p| p.into_inner());
                let changed = c.get(region).is_none_or(|(o, _)| *o != d.origin);
                if changed {
                    c.insert(region, (d.origin, unix_millis_now()));
                }
            }
        }
    });

    println!(
        "failover timeline: {} trials, 3 regions, default settings (interval {:?}, fast_interval {:?}, fall {}, edge cache_ttl {:?})",
        args.trials, base.prober.interval, base.prober.fast_interval, base.prober.fall, base.edge.cache_ttl
    );
    let all_on = |origin: &str| {
        let c = choices.lock().unwrap_or_else(|p| p.into_inner());
        REGIONS
            .iter()
            .all(|(r, _)| c.get(r).is_some_and(|(o, _)| o == origin))
    };
    let mut stages: [Vec<u64>; 4] = Default::default();
    for trial in 0..args.trials {
        let wait = tokio::time::Instant::now() + Duration::from_secs(30);
        while !all_on(VICTIM) {
            if tokio::time::Instant::now() > wait {
                return Err(format!("trial {trial}: the edges never all chose `{VICTIM}`").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill at a random point of the probe round.
        let phase = rand::rng().random_range(0..base.prober.interval.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        failures.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let t0 = unix_millis_now();
        origins[0].set_mode(Mode::Stopped);
        let wait = tokio::time::Instant::now() + Duration::from_secs(30);
        let switched = loop {
            let done = {
                let c = choices.lock().unwrap_or_else(|p| p.into_inner());
                REGIONS
                    .iter()
                    .map(|(r, _)| {
                        c.get(r)
                            .filter(|(o, at)| o != VICTIM && *at >= t0)
                            .map(|(_, at)| *at)
                    })
                    .collect::<Option<Vec<_>>>()
            };
            if let Some(times) = done {
                break times.into_iter().max().unwrap_or(t0);
            }
            if tokio::time::Instant::now() > wait {
                return Err(format!("trial {trial}: some edge never moved away").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let per_region = |f: &dyn Fn(&str) -> Option<u64>| {
            REGIONS
                .iter()
                .map(|(r, _)| f(r))
                .collect::<Option<Vec<u64>>>()
                .and_then(|v| v.into_iter().max())
        };
        let first_fail = {
            let f = failures.lock().unwrap_or_else(|p| p.into_inner());
            per_region(&|r| {
                f.iter()
                    .filter(|(reg, at)| reg == r && *at >= t0)
                    .map(|(_, at)| *at)
                    .min()
            })
        };
        let (state, published) = {
            let w = store.writes.lock().unwrap_or_else(|p| p.into_inner());
            let marks = |r: &str| {
                w.iter()
                    .filter(|(_, d)| d.region == r && d.generated_at >= t0)
                    .find(|(_, d)| {
                        d.entry(VICTIM)
                            .is_some_and(|e| e.state == OriginState::Down)
                            || d.top().is_some_and(|t| t.id != VICTIM)
                    })
                    .map(|(written, d)| (d.generated_at, *written))
            };
            (
                per_region(&|r| marks(r).map(|m| m.0)),
                per_region(&|r| marks(r).map(|m| m.1)),
            )
        };
        let (Some(first_fail), Some(state), Some(published)) = (first_fail, state, published)
        else {
            return Err(format!("trial {trial}: a stage was not observed").into());
        };
        let row = [first_fail - t0, state - t0, published - t0, switched - t0];
        println!(
            "  trial {:>2}: first failed probe {:>5} ms, marked down {:>5} ms, published {:>5} ms, every edge switched {:>5} ms",
            trial + 1,
            row[0],
            row[1],
            row[2],
            row[3]
        );
        for (stage, v) in stages.iter_mut().zip(row) {
            stage.push(v);
        }
        origins[0].set_mode(delays([5, 5, 5]));
    }
    let pct = |v: &Vec<u64>, p: f64| {
        let mut v = v.clone();
        v.sort_unstable();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("\nstage (ms after the kill)        p50     p99     max");
    for (name, v) in [
        "first failed probe",
        "state change",
        "ranking published",
        "every edge switched",
    ]
    .iter()
    .zip(&stages)
    {
        println!(
            "{name:<28} {:>7} {:>7} {:>7}",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    let _ = stop_tx.send(true);
    edges.abort();
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
