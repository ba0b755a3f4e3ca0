//! The edge handler: cache lifetimes, the table read's bound, the live
//! race's budgets, region proximity.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Validator;

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
    /// reads a pool at most twice a second while busy.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Past `cache_ttl` and up to this age a cached ranking is still used
    /// while a background refresh runs. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// A ranking whose `generated_at` is older than this is not fresh: its
    /// prober has stopped. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub ranking_max_age: Duration,
    /// Bound on one table Query. Default: 250ms.
    #[serde(with = "humantime_serde")]
    pub table_timeout: Duration,
    /// Per-origin budget of the live race. Default: 800ms.
    #[serde(with = "humantime_serde")]
    pub race_attempt_timeout: Duration,
    /// The live race gives up and returns the default origin after this.
    /// Default: 900ms.
    #[serde(with = "humantime_serde")]
    pub race_watchdog: Duration,
    /// How long a race winner is reused. Default: 5s.
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
        if e.max_stale < e.cache_ttl {
            v.fail("edge.max_stale", "must be at least edge.cache_ttl");
        }
        for (field, d) in [
            ("table_timeout", e.table_timeout),
            ("race_attempt_timeout", e.race_attempt_timeout),
            ("race_watchdog", e.race_watchdog),
            ("ranking_max_age", e.ranking_max_age),
        ] {
            if d.is_zero() {
                v.fail(format!("edge.{field}"), "must be above 0");
            }
        }
        if e.race_watchdog > Duration::from_secs(25) {
            v.fail(
                "edge.race_watchdog",
                "must be at most 25s (origin-request functions time out at 30s)",
            );
        }
        for (region, order) in &e.proximity {
            v.name(&format!("edge.proximity.{region}"), region);
            for (i, r) in order.iter().enumerate() {
                v.name(&format!("edge.proximity.{region}[{i}]"), r);
            }
        }
    }
}
