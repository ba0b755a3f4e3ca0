//! Coordination of the workers of one region: shared samples, the leader
//! lease and the fencing number (`seq`) that orders published rankings.
//!
//! - [`RedisCoordinator`]: several workers per region through Redis.
//! - [`Solo`]: no Redis configured; the single worker is its own leader.
//! - [`Degraded`]: Redis configured but unreachable; which pools this
//!   worker publishes then, and why ([`Reason`]), so a region keeps one
//!   view.
//! - [`Clock`]: this worker's clock against the region's (Redis' `TIME`,
//!   else the store's), measured at every lease attempt: what the worker
//!   dates its samples and rankings with, and what bars a worker whose
//!   clock is off from leading.
//!
//! `seq` is never a bare counter: it is `max(previous + 1, now_ms * 1000)`,
//! from Redis (atomically with the lease check) or, for a solo or degraded
//! worker, from this process. Time-based numbers keep the table's
//! conditional write meaningful across modes: a ranking computed later
//! always carries a larger `seq` (up to clock skew between workers), so
//! switching between Redis-coordinated and degraded publishing can never
//! write an older ranking over a newer one.

pub mod clock;
mod degraded;
mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use origin_router::document::RankingDocument;
use origin_router::sample::{Sample, UnixMillis};
use origin_router::store::RankingStore;

pub use self::clock::{Clock, Judged};
pub use self::degraded::{Degraded, DegradedParams, Plan, Reason, Stored};
pub use self::redis::{
    read_clocks as redis_clocks, read_rankings as redis_rankings, worker_of, RedisCoordinator,
};

/// This worker's role for the current round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Holds the lease; publish with this `seq`, dated `at` (the region's
    /// clock when the lease was renewed, Unix ms).
    Leader { seq: u64, at: UnixMillis },
    /// Another worker leads.
    Follower { leader: Option<String> },
    /// This worker's clock is off the region's by more than
    /// `prober.max_clock_skew`: it neither took nor renewed the lease (and
    /// gave it up if it held it).
    Barred { offset_ms: i64 },
}

/// A coordination failure (Redis unreachable, bad reply).
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct CoordError {
    pub op: &'static str,
    pub message: String,
}

/// How workers of one region cooperate.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Shares this worker's samples of one round.
    async fn share(&self, samples: &[Sample]) -> Result<(), CoordError>;

    /// Measures this worker's clock against the region's, then takes or
    /// renews the lease (a leader also gets a fresh `seq`), unless the
    /// clock is off ([`Role::Barred`]).
    async fn lead(&self, now: UnixMillis) -> Result<Role, CoordError>;

    /// All live workers' samples within `window` of `now`.
    async fn samples(&self, now: UnixMillis, window: Duration) -> Result<Vec<Sample>, CoordError>;

    /// Gives the lease up (shutdown), so another worker takes over at once.
    async fn release(&self) -> Result<(), CoordError>;

    /// Forgets what workers gone for good left behind (the leader, once a
    /// round). Best effort.
    async fn prune(&self, _now: UnixMillis) -> Result<(), CoordError> {
        Ok(())
    }

    /// Keeps the latest published ranking where `prober rankings` can read
    /// it. Best effort.
    async fn record_ranking(&self, _doc: &RankingDocument) -> Result<(), CoordError> {
        Ok(())
    }
}

/// This worker's own recent samples, per origin, bounded.
#[derive(Debug)]
pub struct LocalSamples {
    per_origin: usize,
    samples: Mutex<HashMap<(String, String), VecDeque<Sample>>>,
}

impl LocalSamples {
    pub fn new(per_origin: usize) -> Self {
        LocalSamples {
            per_origin: per_origin.max(1),
            samples: Mutex::new(HashMap::new()),
        }
    }

    pub fn extend(&self, samples: &[Sample]) {
        let mut map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples {
            let q = map.entry((s.pool.clone(), s.origin.clone())).or_default();
            q.push_back(s.clone());
            while q.len() > self.per_origin {
                q.pop_front();
            }
        }
    }

    pub fn snapshot(&self, now: UnixMillis, window: Duration) -> Vec<Sample> {
        let oldest = now.saturating_sub(window.as_millis() as u64);
        let map = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .flatten()
            .filter(|s| s.at >= oldest)
            .cloned()
            .collect()
    }
}

/// Fencing numbers made by this process: `max(last + 1, now_ms * 1000)`,
/// where a `last` further ahead than the allowed clock skew (the clock ran
/// ahead, then came back) is forgotten: otherwise every ranking for as long
/// as the clock ran ahead would carry a seq the stores refuse.
#[derive(Debug, Default)]
pub struct LocalSeq {
    last: AtomicU64,
}

impl LocalSeq {
    pub fn next(&self, now: UnixMillis) -> u64 {
        let floor = now.saturating_mul(origin_router::document::SEQ_PER_MS);
        let ceiling = origin_router::document::seq_ceiling(now);
        let mut current = self.last.load(Ordering::Acquire);
        loop {
            let base = if current > ceiling { 0 } else { current };
            let next = floor.max(base + 1);
            match self
                .last
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}

/// No Redis: this worker alone, the leader while its clock agrees with
/// the store's (where the store has one), ranking its own samples.
pub struct Solo {
    local: Arc<LocalSamples>,
    seq: LocalSeq,
    store: Arc<dyn RankingStore>,
    clock: Arc<Clock>,
}

impl Solo {
    pub fn new(local: Arc<LocalSamples>, store: Arc<dyn RankingStore>, clock: Arc<Clock>) -> Self {
        Solo {
            local,
            seq: LocalSeq::default(),
            store,
            clock,
        }
    }
}

#[async_trait]
impl Coordinator for Solo {
    async fn share(&self, _samples: &[Sample]) -> Result<(), CoordError> {
        Ok(())
    }

    async fn lead(&self, now: UnixMillis) -> Result<Role, CoordError> {
        if let Some(Judged::Off { offset_ms }) =
            clock::read_store_clock(self.store.as_ref(), &self.clock).await
        {
            return Ok(Role::Barred { offset_ms });
        }
        let at = self
            .clock
            .region_time(origin_router::sample::unix_millis_now())
            .max(now);
        Ok(Role::Leader {
            seq: self.seq.next(at),
            at,
        })
    }

    async fn samples(&self, now: UnixMillis, window: Duration) -> Result<Vec<Sample>, CoordError> {
        Ok(self.local.snapshot(now, window))
    }

    async fn release(&self) -> Result<(), CoordError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_seq_is_time_based_and_strictly_increasing() {
        let seq = LocalSeq::default();
        let a = seq.next(1_000);
        let b = seq.next(1_000);
        let c = seq.next(999); // a clock step backwards
        let d = seq.next(2_000);
        assert_eq!(a, 1_000_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(d, 2_000_000);
    }

    #[test]
    fn local_seq_forgets_a_clock_that_ran_an_hour_ahead() {
        let seq = LocalSeq::default();
        let now = 1_800_000_000_000;
        let ahead = seq.next(now + 3_600_000);
        let back = seq.next(now);
        assert!(back < ahead);
        assert_eq!(back, now * 1000);
        assert!(back <= origin_router::document::seq_ceiling(now));
        assert!(seq.next(now) > back, "still strictly increasing");
    }

    #[test]
    fn local_samples_are_bounded_per_origin_and_windowed() {
        let local = LocalSamples::new(3);
        let sample = |at| Sample {
            origin: "a".into(),
            pool: "web".into(),
            worker: "w".into(),
            at,
            outcome: origin_router::Outcome::Failed(origin_router::sample::Failure {
                class: origin_router::FailureClass::Reset,
                after: Duration::ZERO,
                detail: String::new(),
            }),
        };
        local.extend(
            &(0..10)
                .map(|i| sample(1_000 + i * 1_000))
                .collect::<Vec<_>>(),
        );
        let all = local.snapshot(10_000, Duration::from_secs(60));
        assert_eq!(
            all.iter().map(|s| s.at).collect::<Vec<_>>(),
            [8_000, 9_000, 10_000]
        );
        assert_eq!(
            local.snapshot(10_000, Duration::from_millis(1_500)).len(),
            2
        );
    }
}
