//! The edge decision: which origin of a pool serves this request.
//!
//! In order (see ARCHITECTURE.md, "The edge decision"):
//! 1. only origins of the pool in the *bundled* config can be chosen; a
//!    ranking entry naming anything else is ignored;
//! 2. a cached ranking within `cache_ttl`: choose from it, no I/O (`cache`);
//! 3. past `cache_ttl` but within `max_stale`: choose from it and refresh in
//!    the background; the request never waits (`stale`);
//! 4. nothing usable cached: one Query on the nearest replica, bounded by
//!    `table_timeout`; take the nearest region whose ranking is fresh
//!    (`table`);
//! 5. no fresh ranking anywhere: race all origins live, 0.8 s per attempt,
//!    0.9 s watchdog that returns the pool's default origin (`race`,
//!    `watchdog`); the winner is cached for `race_cache_ttl`;
//! 6. a fresh ranking says every origin is down: the default at once
//!    (`known_down`), never a race against what is known to be down.
//!
//! Wherever a ranking decides (2-4), the origin is the pool's *steering*
//! choice among the ranking's usable origins ([`crate::steering`]): the
//! first under `fastest`, a weighted rendezvous pick of the request's key
//! within the latency band under `band`. A race winner, the default and an
//! override are not steered.
//!
//! Operators' controls (see `origin_router::control`), read with the
//! pool's rankings and cached with them, come before all of this: an
//! override in force for this edge's region sends the pool to its origin
//! (`override`); a drained origin is taken out of the pool for every step
//! above, the race and the default included, unless every origin of the
//! pool is drained (then the drains are ignored with a log line: the pool
//! fails open rather than having nowhere to go).
//!
//! Passive ejection ([`crate::ejection`]) comes after the controls: an
//! origin this container saw answer `consecutive_5xx` 5xx in a row (or,
//! with `error_ratio` set, that fraction of 5xx within `error_window`) is
//! left out of every step above while its ejection lasts, unless that would
//! leave no origin the ranking holds usable (then the ejections are
//! ignored for that decision). The decision line names the ejections in
//! force.
//!
//! [`choose`] is the pure part (rankings + now in, choice out); [`Router`]
//! adds the cache, the table and the race. Cache ages use tokio's clock, so
//! tests run on paused time; ranking freshness uses the wall clock passed in
//! as `now`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::borrow::Cow;

use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::control::{self, Control};
use origin_router::document::RankingDocument;
use origin_router::sample::{FailureClass, UnixMillis};
use origin_router::store::RankingStore;
use tokio::time::Instant;

use crate::ejection::{self, Ejections, Recorded};
use crate::race::Racer;
use crate::steering::{self, Ranked};

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Cache,
    Stale,
    Table,
    Race,
    /// The race found no winner (watchdog fired, or every attempt failed):
    /// the pool's default origin.
    Watchdog,
    KnownDown,
    /// An operator's override in force.
    Override,
    /// No pool for the request: it goes where CloudFront sends it.
    Passthrough,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Stale => "stale",
            Source::Table => "table",
            Source::Race => "race",
            Source::Watchdog => "watchdog",
            Source::KnownDown => "known_down",
            Source::Override => "override",
            Source::Passthrough => "passthrough",
        }
    }

    pub const ALL: [Source; 8] = [
        Source::Cache,
        Source::Stale,
        Source::Table,
        Source::Race,
        Source::Watchdog,
        Source::KnownDown,
        Source::Override,
        Source::Passthrough,
    ];
}

/// The outcome of the pure choice over a pool's rankings.
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
    },
    /// The nearest fresh ranking holds every known origin down.
    AllDown {
        origin: &'p OriginConfig,
        region: String,
        age_ms: u64,
    },
    /// No fresh ranking names any origin of the pool.
    NoFreshRanking,
}

/// Chooses from `rankings` (any regions) as seen from `region`, steering
/// by the pool's policy with the request's `key` (see [`crate::steering`];
/// `fastest` ignores it).
pub fn choose<'p>(
    pool: &'p PoolConfig,
    rankings: &[RankingDocument],
    region: &str,
    proximity: &BTreeMap<String, Vec<String>>,
    max_age: Duration,
    now: UnixMillis,
    key: &str,
) -> Choice<'p> {
    let order = origin_router::geo::nearest_first(
        region,
        rankings.iter().map(|r| r.region.as_str()),
        proximity,
    );
    for candidate in order {
        let Some(doc) = rankings.iter().find(|r| r.region == candidate) else {
            continue;
        };
        // A ranking from further ahead than the allowed clock skew comes
        // from a runaway clock: it is never fresh, whatever it says.
        let Some(age_ms) = doc.age_ms(now) else {
            continue;
        };
        if age_ms > max_age.as_millis() as u64 {
            continue;
        }
        // Only origins of the bundled config; unknown names are ignored.
        let mut known = doc
            .origins
            .iter()
            .filter_map(|e| pool.origin(&e.id).map(|o| (e, o)))
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
        return match steering::steer(pool, &usable, key) {
            Some(steered) => Choice::Ranked {
                origin: steered.origin,
                region: doc.region.clone(),
                age_ms,
                band: steered.band,
            },
            None => Choice::AllDown {
                origin: pool
                    .origin(pool.default_origin_id())
                    .unwrap_or(&pool.origins[0]),
                region: doc.region.clone(),
                age_ms,
            },
        };
    }
    Choice::NoFreshRanking
}

/// A decision with what the log line needs.
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
    fn unranked(pool: &str, origin: String, source: Source, started: Instant) -> Self {
        Decision {
            pool: pool.to_string(),
            origin,
            source,
            ranking_region: None,
            ranking_age_ms: None,
            losers: Vec::new(),
            band: None,
            elapsed: started.elapsed(),
            ejected: Vec::new(),
        }
    }

    /// Every origin drained, no fail-open: the request passes through to
    /// the distribution's own origin.
    fn closed(pool: &str, started: Instant) -> Self {
        Decision::unranked(pool, String::new(), Source::Passthrough, started)
    }
}

struct Cached {
    rankings: Arc<Vec<RankingDocument>>,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    rankings: HashMap<String, Cached>,
    refreshing: HashMap<String, Instant>,
    race_winners: HashMap<String, (String, Instant)>,
    /// When the last read of a pool failed or timed out (cleared by a
    /// successful one): reads are then retried only in the background, at
    /// most one per `cache_ttl`, so an outage costs a container about one
    /// Query per `cache_ttl`, not one per request.
    read_failed: HashMap<String, Instant>,
    /// Each pool's stored drains and overrides, from its last good read.
    controls: HashMap<String, Arc<Vec<Control>>>,
}

/// The stateful edge decision: cache, table, race. Cheap to share.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    region: String,
    store: Arc<dyn RankingStore>,
    racer: Arc<dyn Racer>,
    state: Mutex<State>,
    /// Passive ejection state: its own lock, taken briefly by both event
    /// types.
    ejections: Mutex<Ejections>,
}

impl Router {
    pub fn new(
        config: Arc<Config>,
        region: impl Into<String>,
        store: Arc<dyn RankingStore>,
        racer: Arc<dyn Racer>,
    ) -> Self {
        let ejections = Mutex::new(Ejections::new(&config));
        Router {
            inner: Arc::new(Inner {
                config,
                region: region.into(),
                store,
                racer,
                ejections,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Decides for `pool` at wall-clock `now`. An unknown pool is a
    /// passthrough with an empty origin.
    ///
    /// One deadline holds for the whole decision: `race_watchdog` after it
    /// began. A table read gets at most what is left of it, the live race
    /// the rest, so the pool's default origin is answered by then whatever
    /// fails.
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

    /// [`decide`](Self::decide) with the pool's ejected origins left out.
    async fn decide_among(
        &self,
        pool_name: &str,
        key: &str,
        now: UnixMillis,
        started: Instant,
        ejected: &[String],
    ) -> Decision {
        let inner = &self.inner;
        let edge = &inner.config.edge;
        let deadline = started + edge.race_watchdog;
        let Some(pool) = inner.config.pools.get(pool_name) else {
            return Decision::unranked(pool_name, String::new(), Source::Passthrough, started);
        };
        let pool = match self.controlled(pool_name, pool, now) {
            Controlled::Override(origin) => {
                return Decision::unranked(pool_name, origin, Source::Override, started)
            }
            Controlled::Closed => return Decision::closed(pool_name, started),
            Controlled::Pool(pool) => pool,
        };
        let pool: &PoolConfig = &pool;
        let decided = |choice: Choice<'_>, source: Source| -> Option<Decision> {
            let (origin, region, age, source, band) = match choice {
                Choice::Ranked {
                    origin,
                    region,
                    age_ms,
                    band,
                } => (origin, region, age_ms, source, Some(band)),
                Choice::AllDown {
                    origin,
                    region,
                    age_ms,
                } => (origin, region, age_ms, Source::KnownDown, None),
                Choice::NoFreshRanking => return None,
            };
            Some(Decision {
                pool: pool_name.to_string(),
                origin: origin.id.clone(),
                source,
                ranking_region: Some(region),
                ranking_age_ms: Some(age),
                losers: Vec::new(),
                band,
                elapsed: started.elapsed(),
                ejected: Vec::new(),
            })
        };

        // 2-3: the cache, fresh or stale.
        let (cached, winner, read_failed) = {
            let state = inner.lock();
            (
                state
                    .rankings
                    .get(pool_name)
                    .map(|c| (c.rankings.clone(), c.fetched.elapsed())),
                state
                    .race_winners
                    .get(pool_name)
                    .filter(|(_, at)| at.elapsed() <= edge.race_cache_ttl)
                    .map(|(id, _)| id.clone()),
                state.read_failed.get(pool_name).map(|at| at.elapsed()),
            )
        };
        // A read within cache_ttl found nothing fresh: reading again now
        // would find the same.
        let mut cache_is_current = false;
        if let Some((rankings, age)) = cached {
            if age <= edge.max_stale {
                let choice = self.choose(pool_name, pool, &rankings, now, key, ejected);
                if age <= edge.cache_ttl {
                    if let Some(d) = decided(choice, Source::Cache) {
                        return d;
                    }
                    cache_is_current = true;
                } else if let Some(d) = decided(choice, Source::Stale) {
                    self.refresh_in_background(pool_name);
                    return d;
                }
            }
        }

        // The table is silent or failing: never wait for it again before
        // cache_ttl has passed; after that, ask it in the background.
        let read_in_foreground = match read_failed {
            None => !cache_is_current,
            Some(_) => {
                // Skipped within cache_ttl of the failure.
                self.refresh_in_background(pool_name);
                false
            }
        };

        // A recent race winner answers before any read.
        if let Some(winner) = winner.filter(|w| pool.origin(w).is_some() && !ejected.contains(w)) {
            if read_in_foreground {
                self.refresh_in_background(pool_name);
            }
            return Decision::unranked(pool_name, winner, Source::Race, started);
        }

        // 4: the table, within what is left of the deadline.
        if read_in_foreground {
            let budget = edge
                .table_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            if let Some(rankings) = self.fetch(pool_name, budget).await {
                // The read brought the pool's controls too.
                let configured = &inner.config.pools[pool_name];
                let pool = match self.controlled(pool_name, configured, now) {
                    Controlled::Override(origin) => {
                        return Decision::unranked(pool_name, origin, Source::Override, started)
                    }
                    Controlled::Closed => return Decision::closed(pool_name, started),
                    Controlled::Pool(pool) => pool,
                };
                let choice = self.choose(pool_name, &pool, &rankings, now, key, ejected);
                if let Some(d) = decided(choice, Source::Table) {
                    return d;
                }
            }
        }

        // 5: the live race, with the rest of the deadline, among the
        // origins the controls leave (a read above may have brought them).
        match self.controlled(pool_name, &inner.config.pools[pool_name], now) {
            Controlled::Override(origin) => {
                Decision::unranked(pool_name, origin, Source::Override, started)
            }
            Controlled::Closed => Decision::closed(pool_name, started),
            Controlled::Pool(pool) => {
                let ejected: Vec<&str> = ejected.iter().map(String::as_str).collect();
                let left = ejection::without(&pool, &ejected);
                self.race(pool_name, left.as_ref().unwrap_or(&pool), started, deadline)
                    .await
            }
        }
    }

    /// Reads every pool's rankings once, concurrently, each bounded by
    /// `table_timeout`: run at start-up, so the first viewer finds them
    /// cached, and the SDK's one-time set-up (credentials, HTTP client)
    /// is paid before any request rather than inside one's deadline. A
    /// failed read is remembered as any other.
    pub async fn warm_up(&self) {
        let timeout = self.inner.config.edge.table_timeout;
        let reads = self
            .inner
            .config
            .pools
            .keys()
            .map(|pool| self.fetch(pool, timeout));
        futures::future::join_all(reads).await;
    }

    /// The pool as the cached controls leave it at `now`: an override's
    /// origin, or the pool without its drained origins (when every origin
    /// is drained: the whole pool if `operations.fail_open`, else closed).
    fn controlled<'p>(
        &self,
        pool_name: &str,
        pool: &'p PoolConfig,
        now: UnixMillis,
    ) -> Controlled<'p> {
        let inner = &self.inner;
        let Some(stored) = inner.lock().controls.get(pool_name).cloned() else {
            return Controlled::Pool(Cow::Borrowed(pool));
        };
        let (active, _) = control::active(&stored, &inner.config, pool_name, &inner.region, now);
        if let Some(o) = control::override_of(&active) {
            return Controlled::Override(o.origin.clone());
        }
        let drained = control::drained(&active);
        if drained.is_empty() {
            return Controlled::Pool(Cow::Borrowed(pool));
        }
        let mut left = pool.clone();
        left.origins.retain(|o| !drained.contains(&o.id.as_str()));
        if left.origins.is_empty() {
            if !inner.config.operations.fail_open {
                tracing::warn!(
                    pool = pool_name,
                    "every origin is drained and operations.fail_open is off: passing the request through"
                );
                return Controlled::Closed;
            }
            tracing::warn!(
                pool = pool_name,
                "every origin is drained: ignoring the drains (fail open)"
            );
            return Controlled::Pool(Cow::Borrowed(pool));
        }
        if left.origin(left.default_origin_id()).is_none() {
            left.default_origin = Some(left.origins[0].id.clone());
        }
        Controlled::Pool(Cow::Owned(left))
    }

    /// [`choose`] without the `ejected` origins, unless that leaves no
    /// usable origin: then with them (never eject the last usable origin).
    fn choose<'p>(
        &'p self,
        pool_name: &str,
        pool: &'p PoolConfig,
        rankings: &[RankingDocument],
        now: UnixMillis,
        key: &str,
        ejected: &[String],
    ) -> Choice<'p> {
        let ejected: Vec<&str> = ejected.iter().map(String::as_str).collect();
        if let Some(left) = ejection::without(pool, &ejected).filter(|_| !ejected.is_empty()) {
            if let Choice::Ranked {
                origin,
                region,
                age_ms,
                band,
            } = self.choose_in(pool_name, &left, rankings, now, key)
            {
                if let Some(origin) = pool.origin(&origin.id) {
                    return Choice::Ranked {
                        origin,
                        region,
                        age_ms,
                        band,
                    };
                }
            }
        }
        self.choose_in(pool_name, pool, rankings, now, key)
    }

    /// [`choose`] over the pool the controls (and ejections) leave; when
    /// that leaves only down origins and `operations.fail_open` is set, a
    /// drained origin that is up is chosen rather than a down one (it is
    /// the pool's last usable origin).
    fn choose_in<'q>(
        &'q self,
        pool_name: &str,
        pool: &'q PoolConfig,
        rankings: &[RankingDocument],
        now: UnixMillis,
        key: &str,
    ) -> Choice<'q> {
        let config = &self.inner.config;
        let edge = &config.edge;
        let pick = |pool: &'q PoolConfig| {
            choose(
                pool,
                rankings,
                &self.inner.region,
                &edge.proximity,
                edge.ranking_max_age,
                now,
                key,
            )
        };
        let choice = pick(pool);
        if matches!(choice, Choice::AllDown { .. }) && config.operations.fail_open {
            if let Some(configured) = config
                .pools
                .get(pool_name)
                .filter(|c| c.origins.len() != pool.origins.len())
            {
                if let ranked @ Choice::Ranked { .. } = pick(configured) {
                    tracing::warn!(
                        pool = pool_name,
                        "every origin the drains leave is down: using a drained one (fail open)"
                    );
                    return ranked;
                }
            }
        }
        choice
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
        let recorded = self
            .inner
            .ejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(pool, origin, status, at)?;
        match &recorded {
            Recorded::Ejected {
                duration,
                times,
                trigger,
            } => tracing::warn!(
                pool,
                origin,
                status,
                trigger = trigger.as_str(),
                ejection_ms = duration.as_millis() as u64,
                times_ejected = times,
                "ejected an origin answering 5xx"
            ),
            Recorded::Refused(refusal) => tracing::info!(
                pool,
                origin,
                status,
                reason = ?refusal,
                "not ejecting an origin despite its 5xx answers"
            ),
            _ => {}
        }
        Some(recorded)
    }

    /// The origins of `pool` ejected in this container at `at`.
    pub fn ejected(&self, pool: &str, at: Instant) -> Vec<String> {
        self.inner
            .ejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ejected(pool, at)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Reads the pool's rankings from the store within `table_timeout` and
    /// caches them. Bad items were already skipped by the store; they are
    /// logged here.
    async fn fetch(&self, pool_name: &str, timeout: Duration) -> Option<Arc<Vec<RankingDocument>>> {
        let inner = &self.inner;
        let result = tokio::time::timeout(timeout, inner.store.read_pool(pool_name)).await;
        if !matches!(result, Ok(Ok(_))) {
            inner
                .lock()
                .read_failed
                .insert(pool_name.to_string(), Instant::now());
        }
        match result {
            Ok(Ok(read)) => {
                for (region, reason) in &read.skipped {
                    tracing::warn!(pool = pool_name, region = %region, reason = %reason, "skipped an unreadable ranking");
                }
                let now = origin_router::sample::unix_millis_now();
                for (key, reason) in control::unused(&read.controls, &inner.config, pool_name, now)
                {
                    tracing::warn!(pool = pool_name, key = %key, reason = %reason, "ignored a drain or override");
                }
                let rankings = Arc::new(read.rankings);
                let controls = Arc::new(read.controls.controls);
                let mut state = inner.lock();
                state.controls.insert(pool_name.to_string(), controls);
                state.read_failed.remove(pool_name);
                state.rankings.insert(
                    pool_name.to_string(),
                    Cached {
                        rankings: rankings.clone(),
                        fetched: Instant::now(),
                    },
                );
                Some(rankings)
            }
            Ok(Err(e)) => {
                tracing::warn!(pool = pool_name, error = %e, "reading rankings failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    pool = pool_name,
                    timeout_ms = timeout.as_millis() as u64,
                    "reading rankings timed out"
                );
                None
            }
        }
    }

    /// Starts one background refresh per pool; the caller never waits.
    /// At most one at a time per pool, and none within `cache_ttl` of a
    /// failed read: a table that fails fast (throttling, access denied)
    /// sees about one Query per `cache_ttl` from a container, whichever
    /// path asks.
    fn refresh_in_background(&self, pool_name: &str) {
        {
            let edge = &self.inner.config.edge;
            let mut state = self.inner.lock();
            let busy = state
                .refreshing
                .get(pool_name)
                .is_some_and(|since| since.elapsed() < edge.table_timeout * 4);
            let failed_lately = state
                .read_failed
                .get(pool_name)
                .is_some_and(|at| at.elapsed() <= edge.cache_ttl);
            if busy || failed_lately {
                return;
            }
            state
                .refreshing
                .insert(pool_name.to_string(), Instant::now());
        }
        let (router, pool) = (self.clone(), pool_name.to_string());
        let timeout = self.inner.config.edge.table_timeout;
        tokio::spawn(async move {
            router.fetch(&pool, timeout).await;
            router.inner.lock().refreshing.remove(&pool);
        });
    }

    async fn race(
        &self,
        pool_name: &str,
        pool: &PoolConfig,
        started: Instant,
        deadline: Instant,
    ) -> Decision {
        let inner = &self.inner;
        let decision = |origin: String, source: Source, losers| Decision {
            pool: pool_name.to_string(),
            origin,
            source,
            ranking_region: None,
            ranking_age_ms: None,
            losers,
            band: None,
            elapsed: started.elapsed(),
            ejected: Vec::new(),
        };
        let origins: Vec<&OriginConfig> = pool.origins.iter().collect();
        let watchdog = deadline.saturating_duration_since(Instant::now());
        let outcome = inner.racer.race(&origins, watchdog).await;
        match outcome.winner {
            Some(winner) if pool.origin(&winner).is_some() => {
                inner
                    .lock()
                    .race_winners
                    .insert(pool_name.to_string(), (winner.clone(), Instant::now()));
                decision(winner, Source::Race, outcome.losers)
            }
            _ => decision(
                pool.default_origin_id().to_string(),
                Source::Watchdog,
                outcome.losers,
            ),
        }
    }
}

/// What the controls make of a pool.
enum Controlled<'p> {
    Override(String),
    Pool(Cow<'p, PoolConfig>),
    /// Every origin is drained and the config says not to fail open: the
    /// request goes to the distribution's own origin, unchanged.
    Closed,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
