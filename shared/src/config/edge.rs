//! The edge handler: cache lifetimes, the table read's bound, the live
//! race's budgets, region proximity.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{fmt_duration, Validator};

const MS: Duration = Duration::from_millis(1);
/// `cache_ttl` and `race_cache_ttl`: [0s, 5m].
const CACHE_TTL_MAX: Duration = Duration::from_secs(5 * 60);
/// `max_stale`: [0s, 1h].
const MAX_STALE_MAX: Duration = Duration::from_secs(3_600);
/// `ranking_max_age`: [1s, 1h].
const RANKING_MAX_AGE_MIN: Duration = Duration::from_secs(1);
const RANKING_MAX_AGE_MAX: Duration = Duration::from_secs(3_600);
/// `table_timeout`: [1ms, 5s].
const TABLE_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// `race_attempt_timeout` and `race_watchdog`: [1ms, 25s], well inside the
/// 30s an origin-request function may run.
const RACE_MAX: Duration = Duration::from_secs(25);

/// The edge handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// A ranking read from the table is used without I/O for this long.
    /// Default: 500ms. It is the edge's share of a failover: with the
    /// default prober settings an origin is marked down within one
    /// interval, plus up to 0.5 s of round start lag, plus two 250 ms
    /// re-probes of its death; every edge has switched within this TTL
    /// more (p99 2.7-3.0 s in `sim bench-failover`). Each container
    /// reads a pool at most twice a second while busy. Range [0s, 5m], and
    /// at most `ranking_max_age` (a cached ranking older than that can
    /// never be fresh, so every request would race).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Past `cache_ttl` and up to this age a cached ranking is still used
    /// while a background refresh runs. Default: 60s; range [0s, 1h], and
    /// at least `cache_ttl`.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// A ranking whose `generated_at` is older than this is not fresh: its
    /// prober has stopped. Default: 30s; range [1s, 1h], and at least
    /// 2 × `prober.interval` (a ranking is republished once a round).
    #[serde(with = "humantime_serde")]
    pub ranking_max_age: Duration,
    /// Bound on one table Query. Default: 250ms; range [1ms, 5s] (a viewer
    /// waits on it), and below `race_watchdog`, the one deadline of the
    /// whole decision.
    #[serde(with = "humantime_serde")]
    pub table_timeout: Duration,
    /// Per-origin budget of the live race. Default: 800ms; range
    /// [1ms, 25s].
    #[serde(with = "humantime_serde")]
    pub race_attempt_timeout: Duration,
    /// The live race gives up and returns the default origin after this.
    /// Default: 900ms; range [1ms, 25s] (origin-request functions time out
    /// at 30s), and at least `race_attempt_timeout`.
    #[serde(with = "humantime_serde")]
    pub race_watchdog: Duration,
    /// How long a race winner is reused. Default: 5s; range [0s, 5m].
    #[serde(with = "humantime_serde")]
    pub race_cache_ttl: Duration,
    /// Region to nearest-first list of regions, overriding the built-in
    /// geography. Default: empty.
    pub proximity: BTreeMap<String, Vec<String>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            cache_ttl: Duration::from_millis(500),
            max_stale: Duration::from_secs(60),
            ranking_max_age: Duration::from_secs(30),
            table_timeout: Duration::from_millis(250),
            race_attempt_timeout: Duration::from_millis(800),
            race_watchdog: Duration::from_millis(900),
            race_cache_ttl: Duration::from_secs(5),
            proximity: BTreeMap::new(),
        }
    }
}

impl EdgeConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        let e = self;
        // Ranges first; a contradiction between two fields is reported only
        // when both are in range, so one wrong value gives one message.
        let cache_ttl = v.duration("edge.cache_ttl", e.cache_ttl, Duration::ZERO, CACHE_TTL_MAX);
        let max_stale = v.duration("edge.max_stale", e.max_stale, Duration::ZERO, MAX_STALE_MAX);
        let max_age = v.duration(
            "edge.ranking_max_age",
            e.ranking_max_age,
            RANKING_MAX_AGE_MIN,
            RANKING_MAX_AGE_MAX,
        );
        let table = v.duration("edge.table_timeout", e.table_timeout, MS, TABLE_TIMEOUT_MAX);
        let attempt = v.duration(
            "edge.race_attempt_timeout",
            e.race_attempt_timeout,
            MS,
            RACE_MAX,
        );
        let watchdog = v.duration("edge.race_watchdog", e.race_watchdog, MS, RACE_MAX);
        v.duration(
            "edge.race_cache_ttl",
            e.race_cache_ttl,
            Duration::ZERO,
            CACHE_TTL_MAX,
        );
        let mut contradiction =
            |ok: bool, path: &str, a: Duration, rel: &str, other: &str, b: Duration| {
                if ok {
                    v.fail(
                        path,
                        format!("{} {rel} {other} ({})", fmt_duration(a), fmt_duration(b)),
                    );
                }
            };
        contradiction(
            cache_ttl && max_stale && e.max_stale < e.cache_ttl,
            "edge.max_stale",
            e.max_stale,
            "is below",
            "edge.cache_ttl",
            e.cache_ttl,
        );
        contradiction(
            cache_ttl && max_age && e.cache_ttl > e.ranking_max_age,
            "edge.cache_ttl",
            e.cache_ttl,
            "is above",
            "edge.ranking_max_age",
            e.ranking_max_age,
        );
        contradiction(
            attempt && watchdog && e.race_watchdog < e.race_attempt_timeout,
            "edge.race_watchdog",
            e.race_watchdog,
            "is below",
            "edge.race_attempt_timeout",
            e.race_attempt_timeout,
        );
        contradiction(
            table && watchdog && e.table_timeout >= e.race_watchdog,
            "edge.table_timeout",
            e.table_timeout,
            "is not below",
            "edge.race_watchdog",
            e.race_watchdog,
        );
        for (region, order) in &e.proximity {
            v.name(&format!("edge.proximity.{region}"), region);
            for (i, r) in order.iter().enumerate() {
                v.name(&format!("edge.proximity.{region}[{i}]"), r);
            }
        }
    }
}
