//! The regional prober worker: schedule, probe budgets, health thresholds,
//! coordination timing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{fmt_duration, Validator};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// `interval`: whole seconds within [1s, 5m].
pub(crate) const INTERVAL_MIN: Duration = SECOND;
pub(crate) const INTERVAL_MAX: Duration = Duration::from_secs(5 * 60);
/// `connect_timeout` and `response_timeout`: [1ms, 60s].
const TIMEOUT_MAX: Duration = MINUTE;
/// `lease_ttl`: [1s, 10m].
const LEASE_TTL_MAX: Duration = Duration::from_secs(10 * 60);
/// `max_clock_skew`: [100ms, 8s]. The readers' tolerance is 10 s
/// (`sample::MAX_CLOCK_SKEW_MS`, held equal to [`READERS_SKEW`] by a
/// compile-time check: the config knows no engine, so it does not import
/// it); a worker is barred only when its offset less the reading's
/// uncertainty (up to about a second on DynamoDB) is past the limit, so
/// the limit stays 2 s under the tolerance.
const MAX_CLOCK_SKEW_MIN: Duration = Duration::from_millis(100);
const MAX_CLOCK_SKEW_MAX: Duration = Duration::from_secs(8);
pub(crate) const READERS_SKEW: Duration = Duration::from_secs(10);
/// `shutdown_grace`: [0s, 5m].
const SHUTDOWN_GRACE_MAX: Duration = Duration::from_secs(5 * 60);
/// `kvs_heartbeat`: [1s, 5m].
const KVS_HEARTBEAT_MAX: Duration = Duration::from_secs(5 * 60);

/// The regional prober worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProberConfig {
    /// AWS region this worker probes from. Default: `AWS_REGION`, else
    /// `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Unique worker id within the region. Default: host name plus pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Time between probe rounds. Default: 2s; whole seconds within
    /// [1s, 5m] (the leader's lease, at most 10m, must outlive a round).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A cron expression with seconds (`*/5 * * * * *`) used instead of
    /// `interval`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Budget for name resolution plus the TCP handshake. Default: 1s;
    /// range [1ms, 60s].
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Budget from the TCP connection to the complete answer, TLS handshake
    /// included. Default: 2s; range [1ms, 60s].
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Derive each origin's probe budget from its own recent latency and
    /// variation (as TCP derives its retransmission timeout), so a hung or
    /// slowed origin is known to fail about as fast as one that refuses
    /// connections; see `origin_router::probe::budget`. While on: a probe
    /// of an up origin is cut at its budget (a timeout failure), re-probes
    /// are spaced `fast_interval` from start to start, a latency step
    /// (beyond `ranking.step_factor`) is confirmed by re-probes like a
    /// changed result, and a round publishes without waiting for probes of
    /// origins that are down. Off: every probe gets `connect_timeout` and
    /// `response_timeout`, as before (with `fast_interval = "250ms"`, the
    /// default then, exactly as before). Default: true.
    pub adaptive_budget: bool,
    /// The least an adaptive budget can be: an origin's answers slower than
    /// this count as failures only if they are also slower than its own
    /// latency allows. Default: 150ms; range [1ms, 60s] and at most
    /// `response_timeout` (the most a budget can be).
    #[serde(with = "humantime_serde")]
    pub budget_floor: Duration,
    /// After a probe whose result differs from the origin's previous one,
    /// the worker re-probes it this soon, up to `fall - 1` (or `rise - 1`)
    /// times in the same round, so a state change is confirmed in well under
    /// one interval (HAProxy's `fastinter`). With adaptive budgets the
    /// re-probes are spaced this much start to start, so a dead or hung
    /// origin is confirmed within `(fall - 1) × fast_interval` plus one
    /// budget. Default: 150ms (it was 250ms before adaptive budgets: 200 ms
    /// less to every failover, for the same number of probes); range
    /// [1ms, 1m], below `interval`, and `(max(rise, fall) - 1) ×
    /// fast_interval` below `interval`.
    #[serde(with = "humantime_serde")]
    pub fast_interval: Duration,
    /// Consecutive successes that bring a down origin back. Default: 2.
    pub rise: u32,
    /// Consecutive failures that take an origin down. Default: 3.
    pub fall: u32,
    /// Probes in flight at once, across all origins. Default: 256.
    pub concurrency: usize,
    /// Probes are spread over this much time at the start of each round so
    /// origins do not see bursts. Default: 200ms; range [0s, 1m] and below
    /// `interval`.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Local address probes connect from. Default: chosen by the OS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// Samples kept per worker and origin in Redis. Default: 32.
    pub sample_retention: usize,
    /// Leader lease lifetime; the leader renews it every round. Default: 10s;
    /// range [1s, 10m] and above `interval`.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Address of the `/metrics` and `/healthz` endpoint. Default:
    /// `127.0.0.1:9464`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight probes. Default: 3s; range
    /// [0s, 5m].
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How far this worker's wall clock may be from the region's (Redis'
    /// `TIME`; without Redis, the store's clock) for it to lead. Past it
    /// the worker neither takes nor renews the lease (it keeps probing and
    /// sharing samples, dated on the region's clock). Default: 2s; range
    /// [100ms, 8s]: under the readers' tolerance (10 s: an edge and a
    /// store take a ranking dated further ahead for a runaway clock's) by
    /// more than a reading's uncertainty, so no leader's ranking is ever
    /// refused or thought stale for its date;
    /// 2 s leaves room for the 1 s resolution of DynamoDB's `Date` header,
    /// the only clock a worker without Redis can compare with.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// With `store.kvs_arn` set, the leader rewrites a pool's compact
    /// ranking in the KeyValueStore at least this often (at its first round
    /// this long after the last write) even when the choice it carries has
    /// not changed, so the value's `generated_at` shows the edge that its
    /// prober is alive; a changed choice is written at once. It must stay
    /// well below `edge.ranking_max_age`, past which a reader takes the
    /// value for a stopped prober's: with `store.kvs_arn` set, validation
    /// refuses a heartbeat of half `edge.ranking_max_age` or more (one
    /// round may pass before the write, and the write needs time to
    /// propagate). Default: 10s; range [1s, 5m]. Each rewrite is one
    /// `UpdateKeys` call for up to 50 pools.
    #[serde(with = "humantime_serde")]
    pub kvs_heartbeat: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            region: None,
            worker_id: None,
            interval: Duration::from_secs(2),
            schedule: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            adaptive_budget: true,
            budget_floor: Duration::from_millis(150),
            fast_interval: Duration::from_millis(150),
            rise: 2,
            fall: 3,
            concurrency: 256,
            jitter: Duration::from_millis(200),
            source_address: None,
            sample_retention: 32,
            lease_ttl: Duration::from_secs(10),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            shutdown_grace: Duration::from_secs(3),
            max_clock_skew: Duration::from_secs(2),
            kvs_heartbeat: Duration::from_secs(10),
        }
    }
}

impl ProberConfig {
    /// How long a worker's silence is tolerated: three missed rounds plus
    /// the longest a probe may take. Past it, a worker's samples no longer
    /// vote in the ranking and its `/healthz` reports it stale.
    ///
    /// At most 17m for a validated config (3 × 5m + 2 × 60s); saturating
    /// arithmetic, so it cannot panic whatever the values.
    pub fn max_silence(&self) -> Duration {
        self.interval
            .saturating_mul(3)
            .saturating_add(self.connect_timeout)
            .saturating_add(self.response_timeout)
    }
}

impl ProberConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        let p = self;
        if let Some(region) = &p.region {
            v.name("prober.region", region);
        }
        if let Some(id) = &p.worker_id {
            v.name("prober.worker_id", id);
        }
        // Rounds are scheduled by tokio-cron-scheduler, whose repeated jobs
        // count whole seconds.
        // The fields compared with the interval are, only when it is in its
        // range: one wrong value gives one message.
        let interval_ok = v.duration("prober.interval", p.interval, INTERVAL_MIN, INTERVAL_MAX);
        if interval_ok && p.interval.subsec_nanos() != 0 {
            v.fail(
                "prober.interval",
                format!(
                    "{} is not a whole number of seconds",
                    fmt_duration(p.interval)
                ),
            );
        }
        if v.duration("prober.fast_interval", p.fast_interval, MS, MINUTE)
            && interval_ok
            && p.fast_interval >= p.interval
        {
            v.fail(
                "prober.fast_interval",
                format!(
                    "{} is not below prober.interval ({})",
                    fmt_duration(p.fast_interval),
                    fmt_duration(p.interval)
                ),
            );
        }
        if let Some(cron) = &p.schedule {
            let fields = cron.split_whitespace().count();
            if !(6..=7).contains(&fields) {
                v.fail(
                "prober.schedule",
                format!("`{cron}` is not a cron expression with seconds (6 fields, e.g. \"*/5 * * * * *\")"),
            );
            }
        }
        for (field, d) in [
            ("connect_timeout", p.connect_timeout),
            ("response_timeout", p.response_timeout),
        ] {
            v.duration(&format!("prober.{field}"), d, MS, TIMEOUT_MAX);
        }
        let budget_ok = v.duration("prober.budget_floor", p.budget_floor, MS, TIMEOUT_MAX);
        if budget_ok
            && (MS..=TIMEOUT_MAX).contains(&p.response_timeout)
            && p.budget_floor > p.response_timeout
        {
            v.fail(
                "prober.budget_floor",
                format!(
                    "{} is above prober.response_timeout ({}): a budget is never above the response timeout, so it could never reach its floor",
                    fmt_duration(p.budget_floor),
                    fmt_duration(p.response_timeout)
                ),
            );
        }
        let mut counts_ok = true;
        for (field, n) in [("rise", p.rise), ("fall", p.fall)] {
            if !(1..=100).contains(&n) {
                v.fail(format!("prober.{field}"), format!("{n} is not in 1..=100"));
                counts_ok = false;
            }
        }
        // The confirming re-probes of one state change must fit in a round,
        // or the next round finds the origin still in flight and skips it.
        if counts_ok && interval_ok && p.fast_interval < p.interval {
            let confirmations = p.rise.max(p.fall) - 1;
            let spread = p.fast_interval.saturating_mul(confirmations);
            if confirmations > 0 && spread >= p.interval {
                v.fail(
                    "prober.fast_interval",
                    format!(
                        "{} × {confirmations} re-probes (max(rise, fall) - 1) = {} is not below prober.interval ({}): a state change could not be confirmed within a round",
                        fmt_duration(p.fast_interval),
                        fmt_duration(spread),
                        fmt_duration(p.interval)
                    ),
                );
            }
        }
        if !(1..=100_000).contains(&p.concurrency) {
            v.fail(
                "prober.concurrency",
                format!("{} is not in 1..=100000", p.concurrency),
            );
        }
        if v.duration("prober.jitter", p.jitter, Duration::ZERO, MINUTE)
            && interval_ok
            && p.jitter >= p.interval
        {
            v.fail(
                "prober.jitter",
                format!(
                    "{} is not below prober.interval ({})",
                    fmt_duration(p.jitter),
                    fmt_duration(p.interval)
                ),
            );
        }
        if !(1..=10_000).contains(&p.sample_retention) {
            v.fail("prober.sample_retention", "must be in 1..=10000");
        }
        if v.duration("prober.lease_ttl", p.lease_ttl, SECOND, LEASE_TTL_MAX)
            && interval_ok
            && p.lease_ttl <= p.interval
        {
            v.fail(
                "prober.lease_ttl",
                format!(
                    "{} is not above prober.interval ({}): the leader renews it once a round",
                    fmt_duration(p.lease_ttl),
                    fmt_duration(p.interval)
                ),
            );
        }
        v.duration(
            "prober.shutdown_grace",
            p.shutdown_grace,
            Duration::ZERO,
            SHUTDOWN_GRACE_MAX,
        );
        v.duration(
            "prober.max_clock_skew",
            p.max_clock_skew,
            MAX_CLOCK_SKEW_MIN,
            MAX_CLOCK_SKEW_MAX,
        );
        v.duration(
            "prober.kvs_heartbeat",
            p.kvs_heartbeat,
            SECOND,
            KVS_HEARTBEAT_MAX,
        );
    }

    /// The heartbeat against the readers' `edge.ranking_max_age` (same
    /// config): below half of it, or a value rewritten only at the
    /// heartbeat (plus one round) would be near the age at which readers
    /// give it up. Checked only when the KeyValueStore is written
    /// (`kvs_arn` set): otherwise the heartbeat is unused, and configs with
    /// a short `ranking_max_age` (tests, the demo) stay valid.
    pub(crate) fn validate_kvs_heartbeat(
        &self,
        v: &mut Validator,
        kvs_arn: Option<&str>,
        ranking_max_age: Duration,
    ) {
        let in_range = (SECOND..=KVS_HEARTBEAT_MAX).contains(&self.kvs_heartbeat);
        if kvs_arn.is_some() && in_range && self.kvs_heartbeat >= ranking_max_age / 2 {
            v.fail(
                "prober.kvs_heartbeat",
                format!(
                    "{} is not below half of edge.ranking_max_age ({}): a KeyValueStore value rewritten this seldom would be near the age at which readers take its prober for stopped",
                    fmt_duration(self.kvs_heartbeat),
                    fmt_duration(ranking_max_age)
                ),
            );
        }
    }
}
