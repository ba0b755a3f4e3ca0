//! Who publishes while Redis is down (degraded mode), and why.
//!
//! Without Redis the workers of a region cannot agree on a leader, yet the
//! edges must keep seeing one view per region, not rankings that flip
//! between two workers' measurements. The rule:
//!
//! - the last leader goes on publishing every pool for one lease lifetime
//!   after it last held the lease (after that, a worker that still reaches
//!   Redis may lead, and two views would compete);
//! - any other worker publishes only a pool whose stored ranking for this
//!   region has gone silent (none stored, older than `quiet`, from a
//!   runaway clock, or the store cannot say), because then the last
//!   leader is gone too and no view is worse than this worker's own.
//!
//! The rule itself is pure functions of what the worker knows and `now`
//! ([`recently_led`], [`judge`]), tested with exact numbers below;
//! [`Degraded`] keeps the little state they need (when this worker last
//! led, its own fencing numbers) and reads the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use origin_router::sample::UnixMillis;
use origin_router::store::{PoolRankings, RankingStore, StoreError};

use super::clock::{Clock, Judged};
use super::LocalSeq;

/// How long one store read may take while deciding: a store that does not
/// answer within it counts as one that cannot say (the pool is published).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The two durations the rule needs, and nothing else of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DegradedParams {
    /// How long after it last held the lease a worker still speaks for
    /// the region: one lease lifetime.
    pub lease_ttl: Duration,
    /// How old a stored ranking may be before its pool counts as silent.
    pub quiet: Duration,
}

impl DegradedParams {
    /// `quiet` is three probe intervals, or two thirds of the edges'
    /// `ranking_max_age` if that is less, so a worker takes over a silent
    /// pool before any edge sees its ranking as stale.
    pub fn new(lease_ttl: Duration, interval: Duration, ranking_max_age: Duration) -> Self {
        DegradedParams {
            lease_ttl,
            quiet: (interval * 3).min(ranking_max_age * 2 / 3),
        }
    }
}

/// What the store says of a pool's ranking for this worker's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// An error or no answer in time: the store cannot say.
    Unanswered,
    /// No ranking of this region is stored.
    Missing,
    /// A ranking of this age ([`origin_router::RankingDocument::age_ms`]):
    /// `None` when it claims to come from further in the future than
    /// clocks may disagree (a runaway clock).
    Ranking { age_ms: Option<u64> },
}

impl Stored {
    /// What a store read (or its timeout, `None`) says of `region`.
    pub fn of(
        read: Option<Result<PoolRankings, StoreError>>,
        region: &str,
        now: UnixMillis,
    ) -> Stored {
        match read {
            Some(Ok(read)) => match read.region(region) {
                Some(doc) => Stored::Ranking {
                    age_ms: doc.age_ms(now),
                },
                None => Stored::Missing,
            },
            _ => Stored::Unanswered,
        }
    }
}

/// Why this worker does, or does not, publish a pool in degraded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It led the region within one lease lifetime: it keeps the region's
    /// one view going.
    LastLeader,
    /// The store cannot say: publishing is what a store that cannot be
    /// read needs most.
    StoreUnanswered,
    /// No ranking of this region is stored for the pool.
    NoneStored,
    /// The stored ranking is older than `quiet`: its publisher is gone.
    Silent { age_ms: u64 },
    /// The stored ranking claims to come from the future: never fresh.
    RunawayClock,
    /// Another worker keeps the stored ranking fresh: this one stays out.
    PublishedElsewhere { age_ms: u64 },
    /// The stored ranking is one this worker wrote in degraded mode: it
    /// goes on keeping the region's view (without this, a worker that took
    /// over a silent pool would take its own ranking for another's at its
    /// next round and publish only once per `quiet`).
    OwnRanking,
    /// This worker's clock is off the store's by more than
    /// `prober.max_clock_skew`: its rankings would be misdated, so it
    /// publishes nothing ([`super::clock`]).
    ClockOff { offset_ms: i64 },
}

impl Reason {
    /// Whether this worker publishes the pool.
    pub fn publishes(self) -> bool {
        !matches!(
            self,
            Reason::PublishedElsewhere { .. } | Reason::ClockOff { .. }
        )
    }

    /// The reason as a log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LastLeader => "last_leader",
            Reason::StoreUnanswered => "store_unanswered",
            Reason::NoneStored => "none_stored",
            Reason::Silent { .. } => "silent",
            Reason::RunawayClock => "runaway_clock",
            Reason::PublishedElsewhere { .. } => "published_elsewhere",
            Reason::ClockOff { .. } => "clock_off",
            Reason::OwnRanking => "own_ranking",
        }
    }
}

/// Whether a worker that last held the lease at `led_at` (`None`: not
/// since it last followed, or never) still speaks for the region at
/// `now`: within one lease lifetime, inclusive.
pub fn recently_led(led_at: Option<UnixMillis>, now: UnixMillis, lease_ttl: Duration) -> bool {
    led_at.is_some_and(|at| now.saturating_sub(at) <= lease_ttl.as_millis() as u64)
}

/// Why a worker that has not led recently does or does not publish a
/// pool, from what the store says of it; a ranking exactly `quiet` old is
/// still fresh.
pub fn judge(stored: Stored, quiet: Duration) -> Reason {
    match stored {
        Stored::Unanswered => Reason::StoreUnanswered,
        Stored::Missing => Reason::NoneStored,
        Stored::Ranking { age_ms: None } => Reason::RunawayClock,
        Stored::Ranking {
            age_ms: Some(age_ms),
        } if age_ms > quiet.as_millis() as u64 => Reason::Silent { age_ms },
        Stored::Ranking {
            age_ms: Some(age_ms),
        } => Reason::PublishedElsewhere { age_ms },
    }
}

/// One degraded round's answer: the fencing number to publish with and,
/// per pool, whether and why this worker publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seq: u64,
    pub pools: BTreeMap<String, Reason>,
}

impl Plan {
    /// Whether this worker publishes `pool` this round.
    pub fn publishes(&self, pool: &str) -> bool {
        self.pools.get(pool).is_some_and(|r| r.publishes())
    }
}

/// Degraded-mode leadership of one worker: remembers when it last led
/// (told by the rounds through [`Degraded::led`] and
/// [`Degraded::followed`]) and answers each degraded round with a
/// [`Plan`].
pub struct Degraded {
    params: DegradedParams,
    store: Arc<dyn RankingStore>,
    /// This worker's clock against the store's.
    clock: Arc<Clock>,
    region: String,
    pools: Vec<String>,
    /// When this worker last held the lease (wall clock, ms; 0: not since
    /// it last followed). An atomic, not a lock: rounds may overlap.
    led_at: AtomicU64,
    /// Fencing numbers while Redis cannot give them: time-based, so they
    /// never go back across modes (see [`super`]).
    seq: LocalSeq,
    /// Per pool, the fencing numbers of this worker's last degraded plans
    /// that published it (a few: the store may still hold an older one
    /// while the newest is being written).
    wrote: std::sync::Mutex<BTreeMap<String, std::collections::VecDeque<u64>>>,
}

/// How many of its own fencing numbers per pool a worker remembers.
const OWN_SEQS: usize = 8;

impl Degraded {
    pub fn new(
        params: DegradedParams,
        store: Arc<dyn RankingStore>,
        clock: Arc<Clock>,
        region: &str,
        pools: impl IntoIterator<Item = String>,
    ) -> Self {
        Degraded {
            params,
            store,
            clock,
            region: region.to_string(),
            pools: pools.into_iter().collect(),
            led_at: AtomicU64::new(0),
            seq: LocalSeq::default(),
            wrote: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// This worker held the lease at `now`.
    pub fn led(&self, now: UnixMillis) {
        self.led_at.store(now, Ordering::Relaxed);
    }

    /// Another worker holds the lease: this one is no last leader.
    pub fn followed(&self) {
        self.led_at.store(0, Ordering::Relaxed);
    }

    /// Which pools this worker publishes in a degraded round at `now`
    /// (on the region's clock), and why. First the store's clock is read
    /// where it has one: a worker whose clock is off it publishes nothing.
    /// The store's rankings are read (each read bounded) only when this
    /// worker is not the recent leader.
    pub async fn plan(&self, now: UnixMillis) -> Plan {
        let mut pools = BTreeMap::new();
        if let Some(Judged::Off { offset_ms }) =
            super::clock::read_store_clock(self.store.as_ref(), &self.clock).await
        {
            for name in &self.pools {
                pools.insert(name.clone(), Reason::ClockOff { offset_ms });
            }
            return Plan { seq: 0, pools };
        }
        let led_at = Some(self.led_at.load(Ordering::Relaxed)).filter(|at| *at > 0);
        let last_leader = recently_led(led_at, now, self.params.lease_ttl);
        let seq = self.seq.next(now);
        for name in &self.pools {
            let reason = if last_leader {
                Reason::LastLeader
            } else {
                let read = tokio::time::timeout(READ_TIMEOUT, self.store.read_pool(name))
                    .await
                    .ok();
                let stored_seq = match &read {
                    Some(Ok(r)) => r.region(&self.region).map(|d| d.seq),
                    _ => None,
                };
                if stored_seq.is_some_and(|s| self.wrote_seq(name, s)) {
                    Reason::OwnRanking
                } else {
                    judge(Stored::of(read, &self.region, now), self.params.quiet)
                }
            };
            if reason.publishes() {
                let mut wrote = self.wrote.lock().unwrap_or_else(|p| p.into_inner());
                let seqs = wrote.entry(name.clone()).or_default();
                seqs.push_back(seq);
                while seqs.len() > OWN_SEQS {
                    seqs.pop_front();
                }
            }
            tracing::debug!(
                pool = %name,
                publishes = reason.publishes(),
                reason = reason.as_str(),
                "degraded-mode publishing"
            );
            pools.insert(name.clone(), reason);
        }
        Plan { seq, pools }
    }

    /// Whether this worker's degraded plans published `pool` with `seq`.
    fn wrote_seq(&self, pool: &str, seq: u64) -> bool {
        self.wrote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool)
            .is_some_and(|seqs| seqs.contains(&seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the memory store cannot check (it has none).
    fn clock() -> Arc<Clock> {
        Arc::new(Clock::new(Duration::from_secs(2), "eu-west-1", "w"))
    }
    use origin_router::store::MemoryStore;
    use origin_router::RankingDocument;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn quiet_is_three_intervals_or_two_thirds_of_the_edges_max_age() {
        let p = DegradedParams::new(3 * SECOND, SECOND, 30 * SECOND);
        assert_eq!(p.quiet, 3 * SECOND);
        assert_eq!(p.lease_ttl, 3 * SECOND);
        let p = DegradedParams::new(3 * SECOND, 10 * SECOND, 9 * SECOND);
        assert_eq!(p.quiet, 6 * SECOND);
    }

    #[test]
    fn the_last_leader_speaks_for_one_lease_lifetime_inclusive() {
        let ttl = 3 * SECOND;
        assert!(recently_led(Some(10_000), 10_000, ttl));
        assert!(recently_led(Some(10_000), 13_000, ttl));
        assert!(!recently_led(Some(10_000), 13_001, ttl));
        assert!(!recently_led(None, 10_000, ttl));
        // A clock that stepped back still counts as within the lifetime.
        assert!(recently_led(Some(10_000), 9_000, ttl));
    }

    #[test]
    fn only_a_pool_nobody_keeps_fresh_is_published_by_another_worker() {
        let quiet = 3 * SECOND;
        assert_eq!(judge(Stored::Unanswered, quiet), Reason::StoreUnanswered);
        assert_eq!(judge(Stored::Missing, quiet), Reason::NoneStored);
        assert_eq!(
            judge(Stored::Ranking { age_ms: None }, quiet),
            Reason::RunawayClock
        );
        assert_eq!(
            judge(
                Stored::Ranking {
                    age_ms: Some(3_000)
                },
                quiet
            ),
            Reason::PublishedElsewhere { age_ms: 3_000 }
        );
        assert_eq!(
            judge(
                Stored::Ranking {
                    age_ms: Some(3_001)
                },
                quiet
            ),
            Reason::Silent { age_ms: 3_001 }
        );
        for r in [
            Reason::LastLeader,
            Reason::StoreUnanswered,
            Reason::NoneStored,
            Reason::Silent { age_ms: 1 },
            Reason::RunawayClock,
        ] {
            assert!(r.publishes(), "{r:?}");
        }
        assert!(!Reason::PublishedElsewhere { age_ms: 0 }.publishes());
    }

    fn doc(pool: &str, region: &str, generated_at: UnixMillis) -> RankingDocument {
        RankingDocument::new(pool, region, generated_at * 1000, generated_at, Vec::new())
    }

    #[test]
    fn what_the_store_says_is_read_for_this_region_only() {
        let now = 1_800_000_000_000;
        let read = |docs: Vec<RankingDocument>| {
            Some(Ok(PoolRankings {
                rankings: docs,
                ..PoolRankings::default()
            }))
        };
        assert_eq!(Stored::of(None, "eu-west-1", now), Stored::Unanswered);
        assert_eq!(
            Stored::of(
                read(vec![doc("web", "us-east-1", now - 10)]),
                "eu-west-1",
                now
            ),
            Stored::Missing
        );
        assert_eq!(
            Stored::of(
                read(vec![doc("web", "eu-west-1", now - 10)]),
                "eu-west-1",
                now
            ),
            Stored::Ranking { age_ms: Some(10) }
        );
        assert_eq!(
            Stored::of(
                read(vec![doc("web", "eu-west-1", now + 3_600_000)]),
                "eu-west-1",
                now
            ),
            Stored::Ranking { age_ms: None }
        );
    }

    #[tokio::test]
    async fn a_recent_leader_publishes_all_others_only_silent_pools() {
        // The store checks what it is given against the real clock.
        let now = origin_router::sample::unix_millis_now();
        let store = Arc::new(MemoryStore::new());
        for (pool, at) in [("fresh", now - 1_000), ("stale", now - 25_000)] {
            store.write(&doc(pool, "eu-west-1", at)).await.unwrap();
        }
        // Quiet after 20 s (two thirds of the edges' 30 s).
        let params = DegradedParams::new(3 * SECOND, 10 * SECOND, 30 * SECOND);
        let pools = ["fresh", "stale", "unseen"].map(String::from);
        let degraded = Degraded::new(params, store, clock(), "eu-west-1", pools);

        let plan = degraded.plan(now).await;
        assert_eq!(
            plan.pools.into_iter().collect::<Vec<_>>(),
            [
                ("fresh".into(), Reason::PublishedElsewhere { age_ms: 1_000 }),
                ("stale".into(), Reason::Silent { age_ms: 25_000 }),
                ("unseen".into(), Reason::NoneStored),
            ]
        );

        degraded.led(now);
        let plan = degraded.plan(now + 3_000).await;
        assert!(plan.pools.values().all(|r| *r == Reason::LastLeader));
        assert!(["fresh", "stale", "unseen"]
            .iter()
            .all(|p| plan.publishes(p)));
        assert!(!plan.publishes("not-configured"));

        // One lease lifetime on, or once another worker led, it is one
        // worker among others again.
        assert!(!degraded.plan(now + 3_001).await.publishes("fresh"));
        degraded.led(now + 5_000);
        degraded.followed();
        assert!(!degraded.plan(now + 5_000).await.publishes("fresh"));
    }

    /// A worker that took over a silent pool keeps publishing it: the
    /// ranking it finds stored next round is its own, not another
    /// worker's. Another worker's fresh ranking still keeps it out.
    #[tokio::test]
    async fn a_worker_that_took_over_a_pool_knows_its_own_ranking() {
        let now = origin_router::sample::unix_millis_now();
        let store = Arc::new(MemoryStore::new());
        let params = DegradedParams::new(3 * SECOND, SECOND, 30 * SECOND);
        let degraded = Degraded::new(params, store.clone(), clock(), "eu-west-1", ["web".into()]);
        let first = degraded.plan(now).await;
        assert_eq!(first.pools["web"], Reason::NoneStored);
        let mut written = doc("web", "eu-west-1", now);
        written.seq = first.seq;
        store.write(&written).await.unwrap();
        for round in 1..5u64 {
            let plan = degraded.plan(now + round * 1_000).await;
            assert_eq!(plan.pools["web"], Reason::OwnRanking, "round {round}");
            let mut written = doc("web", "eu-west-1", now + round * 1_000);
            written.seq = plan.seq;
            store.write(&written).await.unwrap();
        }
        // Another worker's newer ranking: this one stays out.
        let mut other = doc("web", "eu-west-1", now + 5_000);
        other.seq = degraded.seq.next(now + 5_000) + 1;
        store.write(&other).await.unwrap();
        assert!(matches!(
            degraded.plan(now + 5_100).await.pools["web"],
            Reason::PublishedElsewhere { .. }
        ));
    }

    #[tokio::test]
    async fn fencing_numbers_are_time_based_and_increase() {
        let store = Arc::new(MemoryStore::new());
        let params = DegradedParams::new(3 * SECOND, SECOND, 30 * SECOND);
        let degraded = Degraded::new(params, store, clock(), "eu-west-1", []);
        let a = degraded.plan(1_000).await.seq;
        let b = degraded.plan(1_000).await.seq;
        assert_eq!(a, 1_000_000);
        assert!(b > a);
    }
}
