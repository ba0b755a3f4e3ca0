//! The router: the I/O and bookkeeping around the pure decision
//! ([`crate::decision::decide`]). It keeps one cache entry per pool (the
//! rankings and controls of its last good read, a recent race winner, and
//! the state of reads), reads the table, runs the live race, counts
//! origin-response answers for passive ejection, and logs. It never
//! chooses an origin itself: each step asks the decision.
//!
//! Deadlines: one holds for the whole decision, `race_watchdog` after it
//! began. A table read gets at most what is left of it, the live race the
//! rest, so the pool's default origin is answered by then whatever fails.
//!
//! Cache ages use tokio's clock, so tests run on paused time; ranking
//! freshness uses the wall clock passed in as `now`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use origin_router::config::{OriginConfig, PoolConfig};
use origin_router::control::{self, Control};
use origin_router::document::RankingDocument;
use origin_router::sample::{FailureClass, UnixMillis};
use origin_router::store::RankingStore;
use tokio::time::Instant;

use crate::decision::{self, FailOpen, PoolView, Read, ReadNext, Source, Verdict};
use crate::ejection::{Ejections, Recorded};
use crate::race::Racer;

/// The pools of the bundled config, by name: all the router, the
/// decision and ejection know of the config's origins.
pub type Pools = BTreeMap<String, PoolConfig>;

/// A decision as the router made it, with what the log line needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub pool: String,
    pub origin: String,
    pub source: Source,
    /// Region whose ranking was used, and its age.
    pub ranking_region: Option<String>,
    pub ranking_age_ms: Option<u64>,
    /// Failure classes of race attempts that lost.
    pub losers: Vec<(String, FailureClass)>,
    /// How many origins a `band` pool's choice was made among (`None`
    /// when no ranking steered it, 1 under `fastest`).
    pub band: Option<usize>,
    /// Time spent deciding.
    pub elapsed: Duration,
    /// Origins of the pool ejected in this container when it decided.
    pub ejected: Vec<String>,
}

impl Decision {
    /// A decision that no ranking made (passthrough, override, race).
    pub fn unranked(pool: &str, origin: String, source: Source, elapsed: Duration) -> Self {
        Decision {
            pool: pool.to_string(),
            origin,
            source,
            ranking_region: None,
            ranking_age_ms: None,
            losers: Vec::new(),
            band: None,
            elapsed,
            ejected: Vec::new(),
        }
    }

    /// The request passes through to the distribution's own origin.
    pub fn passthrough(pool: &str, elapsed: Duration) -> Self {
        Decision::unranked(pool, String::new(), Source::Passthrough, elapsed)
    }
}

/// The router's own time budgets (from `[edge]`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Bound on one table Query (`table_timeout`).
    pub table_timeout: Duration,
    /// The one deadline of a decision (`race_watchdog`).
    pub race_watchdog: Duration,
    /// How long a race winner is reused (`race_cache_ttl`).
    pub race_cache_ttl: Duration,
    /// How often a failed read may be retried (`cache_ttl`).
    pub cache_ttl: Duration,
}

/// One pool's cache entry.
#[derive(Default)]
struct Entry {
    /// The last good read: rankings, controls, and when.
    rankings: Arc<Vec<RankingDocument>>,
    controls: Arc<Vec<Control>>,
    fetched: Option<Instant>,
    /// A background refresh in flight since.
    refreshing: Option<Instant>,
    race_winner: Option<(String, Instant)>,
    /// When the last read of the pool failed or timed out (cleared by a
    /// successful one): reads are then retried only in the background, at
    /// most one per `cache_ttl`, so an outage costs a container about one
    /// Query per `cache_ttl`, not one per request.
    read_failed: Option<Instant>,
}

/// What a decision reads of an entry, taken under the lock and used
/// without it.
struct Snapshot {
    rankings: Arc<Vec<RankingDocument>>,
    controls: Arc<Vec<Control>>,
    read: Read,
    read_failed: bool,
    race_winner: Option<String>,
}

/// The stateful edge decision: cache, table, race. Cheap to share.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Arc<Pools>,
    settings: decision::Settings,
    traffic: crate::traffic::Settings,
    timing: Timing,
    store: Arc<dyn RankingStore>,
    racer: Arc<dyn Racer>,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Passive ejection state: its own lock, taken briefly by both event
    /// types.
    ejections: Mutex<Ejections>,
}

impl Router {
    pub fn new(
        pools: Arc<Pools>,
        settings: decision::Settings,
        traffic: crate::traffic::Settings,
        timing: Timing,
        store: Arc<dyn RankingStore>,
        racer: Arc<dyn Racer>,
    ) -> Self {
        let ejections = Mutex::new(Ejections::new(&pools));
        let entries = pools
            .keys()
            .map(|name| (name.clone(), Entry::default()))
            .collect();
        Router {
            inner: Arc::new(Inner {
                pools,
                settings,
                traffic,
                timing,
                store,
                racer,
                entries: Mutex::new(entries),
                ejections,
            }),
        }
    }

    /// The pools of the bundled config.
    pub fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    pub fn region(&self) -> &str {
        &self.inner.settings.region
    }

    /// The decision's settings.
    pub fn settings(&self) -> &decision::Settings {
        &self.inner.settings
    }

    pub fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    /// Decides for `pool` at wall-clock `now`. An unknown pool is a
    /// passthrough with an empty origin.
    pub async fn decide(&self, pool_name: &str, now: UnixMillis) -> Decision {
        self.decide_keyed(pool_name, "", now).await
    }

    /// [`Router::decide`] for a request whose steering key is `key` (see
    /// [`crate::key`]): a `band` pool spreads keys over its band. A race
    /// winner, an override or a default is not steered.
    pub async fn decide_keyed(&self, pool_name: &str, key: &str, now: UnixMillis) -> Decision {
        let started = Instant::now();
        let ejected = self.ejected(pool_name, started);
        let mut decision = self
            .decide_among(pool_name, key, now, started, &ejected)
            .await;
        decision.ejected = ejected;
        decision
    }

    async fn decide_among(
        &self,
        pool_name: &str,
        key: &str,
        now: UnixMillis,
        started: Instant,
        ejected: &[String],
    ) -> Decision {
        let inner = &self.inner;
        let deadline = started + inner.timing.race_watchdog;
        let pool = inner.pools.get(pool_name);
        let Some(snapshot) = pool.and_then(|_| self.snapshot(pool_name)) else {
            return Decision::passthrough(pool_name, started.elapsed());
        };
        let mut verdict = self.verdict(pool_name, pool, &snapshot, ejected, key, now);
        if let Verdict::Unranked {
            read: ReadNext::Foreground,
            ..
        } = verdict
        {
            let budget = inner
                .timing
                .table_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            if let Some((rankings, controls)) = self.fetch(pool_name, budget).await {
                let read = Snapshot {
                    rankings,
                    controls,
                    read: Read::Now,
                    read_failed: false,
                    race_winner: None,
                };
                verdict = self.verdict(pool_name, pool, &read, ejected, key, now);
            }
        }
        match verdict {
            Verdict::Passthrough { read } => {
                if read == ReadNext::Background {
                    self.refresh_in_background(pool_name);
                }
                Decision::passthrough(pool_name, started.elapsed())
            }
            Verdict::Chosen {
                origin,
                source,
                ranking,
                band,
                read,
                ..
            } => {
                if read == ReadNext::Background {
                    self.refresh_in_background(pool_name);
                }
                let (region, age) = ranking.unzip();
                Decision {
                    pool: pool_name.to_string(),
                    origin: origin.id.clone(),
                    source,
                    ranking_region: region,
                    ranking_age_ms: age,
                    losers: Vec::new(),
                    band,
                    elapsed: started.elapsed(),
                    ejected: Vec::new(),
                }
            }
            Verdict::Unranked {
                among,
                default,
                read,
            } => {
                if read == ReadNext::Background {
                    self.refresh_in_background(pool_name);
                }
                self.race(pool_name, &among, default, started, deadline)
                    .await
            }
        }
    }

    /// The pure decision over `snapshot`, with its fail-open log line.
    fn verdict<'p>(
        &self,
        pool_name: &str,
        pool: Option<&'p PoolConfig>,
        snapshot: &Snapshot,
        ejected: &[String],
        key: &str,
        now: UnixMillis,
    ) -> Verdict<'p> {
        let view = PoolView {
            rankings: &snapshot.rankings,
            read: snapshot.read,
            read_failed: snapshot.read_failed,
            controls: &snapshot.controls,
            ejected,
            race_winner: snapshot.race_winner.as_deref(),
        };
        let outcome = decision::decide(pool_name, pool, &view, &self.inner.settings, key, now);
        match outcome.fail_open {
            Some(FailOpen::AllDrained) => tracing::warn!(
                pool = pool_name,
                "every origin is drained: ignoring the drains (fail open)"
            ),
            Some(FailOpen::DrainedUp) => tracing::warn!(
                pool = pool_name,
                "every origin the drains leave is down: using a drained one (fail open)"
            ),
            None => {}
        }
        if matches!(outcome.verdict, Verdict::Passthrough { .. }) && pool.is_some() {
            tracing::warn!(
                pool = pool_name,
                "every origin is drained and operations.fail_open is off: passing the request through"
            );
        }
        outcome.verdict
    }

    /// The pool's entry as a decision sees it now.
    fn snapshot(&self, pool_name: &str) -> Option<Snapshot> {
        let timing = &self.inner.timing;
        let entries = self.inner.lock();
        let entry = entries.get(pool_name)?;
        Some(Snapshot {
            rankings: entry.rankings.clone(),
            controls: entry.controls.clone(),
            read: match entry.fetched {
                Some(at) => Read::Cached { age: at.elapsed() },
                None => Read::Never,
            },
            read_failed: entry.read_failed.is_some(),
            race_winner: entry
                .race_winner
                .as_ref()
                .filter(|(_, at)| at.elapsed() <= timing.race_cache_ttl)
                .map(|(id, _)| id.clone()),
        })
    }

    /// Reads every pool's rankings once, concurrently, each bounded by
    /// `table_timeout`: run at start-up, so the first viewer finds them
    /// cached, and the SDK's one-time set-up (credentials, HTTP client)
    /// is paid before any request rather than inside one's deadline. A
    /// failed read is remembered as any other.
    pub async fn warm_up(&self) {
        let timeout = self.inner.timing.table_timeout;
        let reads = self
            .inner
            .pools
            .keys()
            .map(|pool| self.fetch(pool, timeout));
        futures::future::join_all(reads).await;
    }

    /// Records an origin's answer (from an origin-response event) at
    /// `at`; logs an ejection or a refused one. `None` when the pair is not
    /// in the config.
    pub fn record_response(
        &self,
        pool: &str,
        origin: &str,
        status: u16,
        at: Instant,
    ) -> Option<Recorded> {
        let recorded = self.ejections().record(pool, origin, status, at)?;
        log_recorded(pool, origin, &recorded, Evidence::Status(status));
        Some(recorded)
    }

    /// Records a miss of `origin` (of `pool`) that took `latency`, seen at
    /// `at` (tokio's clock; `now` is the wall clock, for the ranking's
    /// freshness): judged against the next usable origin's ranked latency
    /// (see [`crate::traffic`]), and demoted, by the pool's settings. Logs
    /// a demotion or a refused one. `None` when the pair is not in the
    /// config.
    pub fn record_latency(
        &self,
        pool: &str,
        origin: &str,
        latency: Duration,
        now: UnixMillis,
        at: Instant,
    ) -> Option<(Recorded, Option<f64>)> {
        let (next_ms, own_ms) = self.ranked_latencies(pool, origin, now, at);
        let bar = next_ms.and_then(|ms| self.inner.traffic.bar(ms));
        let recorded = self
            .ejections()
            .record_latency(pool, origin, latency, bar, at)?;
        log_recorded(pool, origin, &recorded, Evidence::Latency { latency, bar });
        Some((recorded, own_ms))
    }

    /// From the nearest fresh cached ranking naming origins of `pool`: the
    /// ranked latency (ms) of the best origin other than `origin` that this
    /// container could send the miss to instead (usable in the ranking and
    /// not ejected or demoted here at `at`: a demoted origin's fast probes
    /// must not make its stand-in look slow), and of `origin` itself.
    fn ranked_latencies(
        &self,
        pool_name: &str,
        origin: &str,
        now: UnixMillis,
        at: Instant,
    ) -> (Option<f64>, Option<f64>) {
        let out = self.ejected(pool_name, at);
        let Some(pool) = self.inner.pools.get(pool_name) else {
            return (None, None);
        };
        let Some(rankings) = self.with_entry(pool_name, |e| e.rankings.clone()) else {
            return (None, None);
        };
        let settings = &self.inner.settings;
        let order = origin_router::geo::nearest_first(
            &settings.region,
            rankings.iter().map(|r| r.region.as_str()),
            &settings.proximity,
        );
        let max_age = settings.ranking_max_age.as_millis() as u64;
        for region in order {
            let Some(doc) = rankings.iter().find(|r| r.region == region) else {
                continue;
            };
            if doc.age_ms(now).is_none_or(|age| age > max_age)
                || !doc.origins.iter().any(|e| pool.origin(&e.id).is_some())
            {
                continue;
            }
            let next = doc
                .origins
                .iter()
                .find(|e| {
                    e.id != origin
                        && e.state.is_usable()
                        && pool.origin(&e.id).is_some()
                        && !out.contains(&e.id)
                })
                .and_then(|e| e.latency_ms);
            let own = doc.entry(origin).and_then(|e| e.latency_ms);
            return (next, own);
        }
        (None, None)
    }

    /// The decayed mean latency of `origin`'s misses in this container.
    pub fn observed_ms(&self, pool: &str, origin: &str) -> Option<f64> {
        self.ejections().observed_ms(pool, origin)
    }

    fn ejections(&self) -> std::sync::MutexGuard<'_, Ejections> {
        self.inner
            .ejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The origins of `pool` ejected in this container at `at`.
    pub fn ejected(&self, pool: &str, at: Instant) -> Vec<String> {
        self.ejections()
            .ejected(pool, at)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Reads the pool's rankings and controls from the store within
    /// `timeout` and caches them. Bad items were already skipped by the
    /// store; they are logged here.
    async fn fetch(
        &self,
        pool_name: &str,
        timeout: Duration,
    ) -> Option<(Arc<Vec<RankingDocument>>, Arc<Vec<Control>>)> {
        let inner = &self.inner;
        let result = tokio::time::timeout(timeout, inner.store.read_pool(pool_name)).await;
        let read = match result {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::warn!(pool = pool_name, error = %e, "reading rankings failed");
                self.with_entry(pool_name, |e| e.read_failed = Some(Instant::now()));
                return None;
            }
            Err(_) => {
                tracing::warn!(
                    pool = pool_name,
                    timeout_ms = timeout.as_millis() as u64,
                    "reading rankings timed out"
                );
                self.with_entry(pool_name, |e| e.read_failed = Some(Instant::now()));
                return None;
            }
        };
        for (region, reason) in &read.skipped {
            tracing::warn!(pool = pool_name, region = %region, reason = %reason, "skipped an unreadable ranking");
        }
        if let Some(pool) = inner.pools.get(pool_name) {
            let now = origin_router::sample::unix_millis_now();
            for (key, reason) in control::unused_in(
                &read.controls,
                pool,
                &inner.settings.operations,
                pool_name,
                now,
            ) {
                tracing::warn!(pool = pool_name, key = %key, reason = %reason, "ignored a drain or override");
            }
        }
        let rankings = Arc::new(read.rankings);
        let controls = Arc::new(read.controls.controls);
        self.with_entry(pool_name, |e| {
            e.rankings = rankings.clone();
            e.controls = controls.clone();
            e.fetched = Some(Instant::now());
            e.read_failed = None;
        });
        Some((rankings, controls))
    }

    /// Starts one background refresh per pool; the caller never waits.
    /// At most one at a time per pool, and none within `cache_ttl` of a
    /// failed read: a table that fails fast (throttling, access denied)
    /// sees about one Query per `cache_ttl` from a container, whichever
    /// path asks.
    fn refresh_in_background(&self, pool_name: &str) {
        let timing = self.inner.timing;
        let start = self.with_entry(pool_name, |e| {
            let busy = e
                .refreshing
                .is_some_and(|since| since.elapsed() < timing.table_timeout * 4);
            let failed_lately = e
                .read_failed
                .is_some_and(|at| at.elapsed() <= timing.cache_ttl);
            if busy || failed_lately {
                return false;
            }
            e.refreshing = Some(Instant::now());
            true
        });
        if start != Some(true) {
            return;
        }
        let (router, pool) = (self.clone(), pool_name.to_string());
        tokio::spawn(async move {
            router.fetch(&pool, timing.table_timeout).await;
            router.with_entry(&pool, |e| e.refreshing = None);
        });
    }

    /// Races `among` live with what is left of the deadline; the winner is
    /// cached for `race_cache_ttl`, and no winner gives `default`.
    async fn race(
        &self,
        pool_name: &str,
        among: &[&OriginConfig],
        default: &OriginConfig,
        started: Instant,
        deadline: Instant,
    ) -> Decision {
        let watchdog = deadline.saturating_duration_since(Instant::now());
        let outcome = self.inner.racer.race(among, watchdog).await;
        let (origin, source) = match outcome.winner {
            Some(winner) if among.iter().any(|o| o.id == winner) => {
                self.with_entry(pool_name, |e| {
                    e.race_winner = Some((winner.clone(), Instant::now()))
                });
                (winner, Source::Race)
            }
            _ => (default.id.clone(), Source::Watchdog),
        };
        let mut decision = Decision::unranked(pool_name, origin, source, started.elapsed());
        decision.losers = outcome.losers;
        decision
    }

    /// Runs `f` on the pool's entry under the lock (`None`: no such pool).
    fn with_entry<T>(&self, pool_name: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.inner.lock().get_mut(pool_name).map(f)
    }
}

/// What an answer told of an origin, for the line of what it did.
enum Evidence {
    /// An origin-response status.
    Status(u16),
    /// A timed miss and the bar it was held to.
    Latency {
        latency: Duration,
        bar: Option<Duration>,
    },
}

/// Logs an ejection (or demotion) an answer caused, or one refused.
fn log_recorded(pool: &str, origin: &str, recorded: &Recorded, evidence: Evidence) {
    let (status, latency_ms, bar_ms, acted, refused) = match evidence {
        Evidence::Status(status) => (
            Some(status),
            None,
            None,
            "ejected an origin answering 5xx",
            "not ejecting an origin despite its 5xx answers",
        ),
        Evidence::Latency { latency, bar } => (
            None,
            Some(latency.as_millis() as u64),
            bar.map(|b| b.as_millis() as u64),
            "demoted an origin whose misses are slower than the next origin's ranked latency",
            "not demoting a slow origin",
        ),
    };
    match recorded {
        Recorded::Ejected {
            duration,
            times,
            trigger,
        } => tracing::warn!(
            pool,
            origin,
            status,
            latency_ms,
            bar_ms,
            trigger = trigger.as_str(),
            ejection_ms = duration.as_millis() as u64,
            times_ejected = times,
            "{acted}"
        ),
        Recorded::Refused(refusal) => tracing::info!(
            pool,
            origin,
            status,
            latency_ms,
            reason = ?refusal,
            "{refused}"
        ),
        _ => {}
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
