//! The choice from a pool's rankings: the nearest fresh ranking that names
//! an origin of the set, steered among its usable origins.

use std::collections::BTreeMap;
use std::time::Duration;

use origin_router::config::{OriginConfig, PoolConfig};
use origin_router::document::RankingDocument;
use origin_router::sample::UnixMillis;

use super::usable::OriginSet;
use crate::steering::{self, Ranked};

/// Which rankings count, and where this edge is.
#[derive(Debug, Clone, Copy)]
pub struct Freshness<'s> {
    /// The edge's region: rankings are tried nearest first from here.
    pub region: &'s str,
    /// Region to nearest-first regions, over the built-in geography.
    pub proximity: &'s BTreeMap<String, Vec<String>>,
    /// A ranking older than this (or dated ahead beyond the skew the
    /// document allows) is not fresh.
    pub max_age: Duration,
}

/// The outcome of the choice over a pool's rankings.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice<'p> {
    /// The steered choice among the usable origins of the nearest fresh
    /// ranking (under `fastest`, the best of them).
    Ranked {
        origin: &'p OriginConfig,
        region: String,
        age_ms: u64,
        /// Origins in the band the choice was made from (1: `fastest`).
        band: usize,
        /// The best other usable origin of the set in this ranking: where
        /// an origin group fails over to.
        failover: Option<&'p OriginConfig>,
        /// The chosen origin's measured connect budget in this ranking.
        connect_budget_ms: Option<f64>,
    },
    /// The nearest fresh ranking holds every origin of the set it names
    /// down; `origin` is the set's default.
    AllDown {
        origin: &'p OriginConfig,
        region: String,
        age_ms: u64,
    },
    /// No fresh ranking names any origin of the set.
    NoFreshRanking,
}

/// Chooses among the origins of `pool` in `set` from `rankings` (any
/// regions), steering by the pool's policy with the request's `key`
/// (`fastest` ignores it). A ranking entry naming an origin outside the
/// set (or outside the bundled config) is ignored; a ranking naming none
/// of the set is passed over for the next region.
pub fn choose<'p>(
    pool: &'p PoolConfig,
    set: OriginSet,
    rankings: &[RankingDocument],
    fresh: Freshness<'_>,
    now: UnixMillis,
    key: &str,
) -> Choice<'p> {
    let order = origin_router::geo::nearest_first(
        fresh.region,
        rankings.iter().map(|r| r.region.as_str()),
        fresh.proximity,
    );
    let max_age = fresh.max_age.as_millis() as u64;
    for candidate in order {
        let Some(doc) = rankings.iter().find(|r| r.region == candidate) else {
            continue;
        };
        // A ranking from further ahead than the allowed clock skew comes
        // from a runaway clock: it is never fresh, whatever it says.
        let Some(age_ms) = doc.age_ms(now) else {
            continue;
        };
        if age_ms > max_age {
            continue;
        }
        let mut known = doc
            .origins
            .iter()
            .filter_map(|e| {
                pool.origin(&e.id)
                    .filter(|o| set.contains(pool, &o.id))
                    .map(|o| (e, o))
            })
            .peekable();
        if known.peek().is_none() {
            continue;
        }
        let usable: Vec<Ranked<'p>> = known
            .filter(|(e, _)| e.state.is_usable())
            .map(|(e, origin)| Ranked {
                origin,
                state: e.state,
                score: e.score,
            })
            .collect();
        return match steering::steer(&pool.steering, &usable, key) {
            Some(steered) => Choice::Ranked {
                origin: steered.origin,
                region: doc.region.clone(),
                age_ms,
                band: steered.band,
                failover: usable
                    .iter()
                    .map(|r| r.origin)
                    .find(|o| o.id != steered.origin.id),
                // The chosen origin's first entry (the one steering saw).
                connect_budget_ms: doc
                    .origins
                    .iter()
                    .find(|e| e.id == steered.origin.id)
                    .and_then(|e| e.connect_budget_ms),
            },
            None => Choice::AllDown {
                origin: set.default_origin(pool),
                region: doc.region.clone(),
                age_ms,
            },
        };
    }
    Choice::NoFreshRanking
}
