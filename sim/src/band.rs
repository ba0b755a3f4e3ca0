//! The demo's latency band: a second pool, [`POOL`], whose two origins are
//! near-equal from every region, with `band` steering on the URI. Each
//! demo tick sends [`MISSES_PER_TICK`] cache misses (new URIs) per region
//! through that region's real edge decision, and counts where they go.

use std::collections::BTreeMap;

use edge::router::Router;
use origin_router::config::{PoolConfig, SteeringPolicy};
use origin_router::sample::UnixMillis;

use crate::world::{OriginSpec, World};

/// The band pool's name (after `web`, so the status page lists it second).
pub const POOL: &str = "web-static";

/// Two origins a few ms apart from each region: within the default band
/// (10 ms or 20 % of the best) everywhere.
pub const ORIGINS: [OriginSpec; 2] = [
    OriginSpec::new("london", 15, [78, 8, 150]),
    OriginSpec::new("frankfurt", 16, [80, 9, 155]),
];

/// Misses per region per 100 ms tick.
pub const MISSES_PER_TICK: u64 = 10;

/// The band pool over `world`'s origins.
pub fn pool(world: &World) -> PoolConfig {
    let mut pool = world.pool().clone();
    pool.steering.policy = SteeringPolicy::Band;
    pool
}

/// Where one region's misses of the band pool went (those decided from a
/// ranking: before the first one, a race decides, unsteered).
#[derive(Debug, Default)]
pub struct Spread {
    next: u64,
    counts: BTreeMap<String, u64>,
}

impl Spread {
    /// Decides [`MISSES_PER_TICK`] new URIs of the band pool.
    pub async fn misses(&mut self, router: &Router, now: UnixMillis) {
        for _ in 0..MISSES_PER_TICK {
            self.next += 1;
            let uri = format!("/static/{}.jpg", self.next);
            let d = router.decide_keyed(POOL, &uri, now).await;
            // Before the first ranking a race decides, unsteered.
            if d.band.is_some() {
                *self.counts.entry(d.origin).or_default() += 1;
            }
        }
    }

    /// `london 231 (51%), frankfurt 219 (49%)`, or `-` before any miss.
    pub fn summary(&self) -> String {
        let total: u64 = self.counts.values().sum();
        if total == 0 {
            return "-".into();
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(o, n)| format!("{o} {n} ({:.0}%)", *n as f64 * 100.0 / total as f64))
            .collect();
        parts.join(", ")
    }
}
