//! The regional worker: scheduled probe rounds, coordination, ranking and
//! publishing, until shutdown.
//!
//! Each round (a tokio-cron-scheduler job, fixed interval or cron):
//! 1. probe every origin ([`crate::round`]);
//! 2. share the samples with the region's other workers (Redis);
//! 3. take or renew the leader lease; the leader ranks every pool from all
//!    live workers' samples and hands the rankings to the publisher.
//!
//! Redis down (degraded mode): the worker keeps probing and publishes
//! rankings of its own samples with a time-based `seq`, so nothing older
//! overwrites anything newer; when Redis answers again, coordination
//! resumes by itself. Without Redis configured the worker is its own leader.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use origin_router::config::Config;
use origin_router::control::{self, Control};
use origin_router::document::RankingDocument;
use origin_router::ranking::{self, Settings, Target};
use origin_router::sample::{unix_millis_now, Sample, UnixMillis};
use origin_router::store::{self, ClientTuning, RankingStore};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::coord::{
    Clock, Coordinator, Degraded, DegradedParams, LocalSamples, RedisCoordinator, Role, Solo,
};
use crate::events::bridge::{Bridge, EventBridge};
use crate::events::Events;
use crate::identity::Identity;
use crate::kvs::KvsPublisher;
use crate::metrics::Health;
use crate::publish::Publisher;
use crate::round::{self, Rounds};

/// Why a worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("TLS setup: {0}")]
    Tls(#[from] origin_router::probe::TlsError),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("coordination: {0}")]
    Coordination(#[from] crate::coord::CoordError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a round needs; shared by the scheduled jobs.
struct Worker {
    config: Config,
    id: Identity,
    settings: Settings,
    rounds: Rounds,
    local: Arc<LocalSamples>,
    coord: Arc<dyn Coordinator>,
    /// Who publishes what while Redis is unreachable.
    degraded: Degraded,
    store: Arc<dyn RankingStore>,
    publisher: Publisher,
    /// The KeyValueStore writer (`store.kvs_arn`), beside the publisher,
    /// on its own task.
    kvs: Option<KvsPublisher>,
    health: Arc<Health>,
    /// Last ranking this worker computed per pool (hysteresis input).
    previous: Mutex<HashMap<String, RankingDocument>>,
    was_leader: std::sync::atomic::AtomicBool,
    /// Each pool's stored drains and overrides, refreshed in the
    /// background ([`Worker::refresh_controls`]) so a slow store never
    /// delays a round.
    controls: Mutex<HashMap<String, Arc<Vec<Control>>>>,
    /// The override in force per pool at the last publish (for events).
    overrides: Mutex<HashMap<String, Option<Control>>>,
    /// Where state-change events go.
    events: Events,
    /// This worker's clock against the region's: what it dates samples
    /// and rankings with.
    clock: Arc<Clock>,
    /// A leader that could not publish stepped down: it does not ask for
    /// the lease again before this (tokio time), so another worker takes
    /// over.
    stand_aside_until: Mutex<Option<tokio::time::Instant>>,
}

/// Runs a worker until `shutdown` completes, then stops within the
/// configured grace: in-flight probes finish or are dropped, the lease is
/// released, pending rankings get a last chance to be written.
///
/// The one way to run a worker: everything it uses (the store, Redis, the
/// metrics endpoint) comes from `config`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    let id = Identity::from_config(&config);
    // The recorder goes in before anything registers a metric: a handle
    // made earlier (the rounds make every per-origin one) binds to the
    // no-op recorder for good.
    let recorder = config
        .prober
        .metrics_listen
        .map(|_| crate::metrics::recorder());
    let store = store::open(&config.store, &id.region, ClientTuning::default()).await;
    let rounds = round::rounds_for(&config, &id)?;
    let settings = Settings::new(&config.prober, &config.ranking);
    let local = Arc::new(LocalSamples::new(config.prober.sample_retention.max(8) * 4));
    let clock = Arc::new(Clock::new(
        config.prober.max_clock_skew,
        &id.region,
        &id.worker,
    ));
    let coord: Arc<dyn Coordinator> = match &config.store.redis_url {
        Some(url) => Arc::new(RedisCoordinator::new(
            url,
            &id.region,
            &id.worker,
            config.prober.lease_ttl,
            config.prober.sample_retention,
            clock.clone(),
        )?),
        None => Arc::new(Solo::new(local.clone(), store.clone(), clock.clone())),
    };
    let health = Arc::new(Health::new(
        &id.region,
        &id.worker,
        config.prober.max_silence(),
    ));
    let metrics_task = match (config.prober.metrics_listen, recorder) {
        (Some(addr), Some(recorder)) => Some(
            crate::metrics::serve(addr, recorder, health.clone())
                .await
                .map_err(|source| WorkerError::Metrics { addr, source })?,
        ),
        _ => None,
    };
    let events = match EventBridge::connect(&config.events).await {
        Some(bus) => {
            tracing::info!(
                bus = config.events.event_bus.as_deref().unwrap_or(""),
                "state-change events go to EventBridge"
            );
            Events::with_bridge(&id.region, Bridge::spawn(Arc::new(bus)).0)
        }
        None => Events::log_only(&id.region),
    };
    let degraded = Degraded::new(
        DegradedParams::new(
            config.prober.lease_ttl,
            config.prober.interval,
            config.edge.ranking_max_age,
        ),
        store.clone(),
        clock.clone(),
        &id.region,
        config.pools.keys().cloned(),
    );
    let kvs = KvsPublisher::connect(&config, &id.region).await;
    let worker = Arc::new(Worker {
        publisher: Publisher::spawn(store.clone(), id.region.clone(), events.clone()),
        kvs,
        controls: Mutex::new(HashMap::new()),
        overrides: Mutex::new(HashMap::new()),
        events,
        config,
        id,
        settings,
        rounds,
        local,
        coord,
        degraded,
        store,
        health,
        previous: Mutex::new(HashMap::new()),
        was_leader: false.into(),
        clock,
        stand_aside_until: Mutex::new(None),
    });
    tracing::info!(
        region = %worker.id.region,
        worker = %worker.id.worker,
        origins = worker.rounds.targets().len(),
        redis = worker.config.store.redis_url.is_some(),
        store = %store::describe(&worker.config.store),
        "prober worker starting"
    );

    let controls_task = tokio::spawn(worker.clone().refresh_controls().instrument(worker.span()));
    let tracker = TaskTracker::new();
    let scheduler = schedule(worker.clone(), tracker.clone()).await?;
    // The first round starts at once rather than one interval from now.
    tracker.spawn(
        worker
            .clone()
            .round(unix_millis_now())
            .instrument(worker.span()),
    );

    shutdown.await;
    tracing::info!(worker = %worker.id.worker, "shutting down");
    let mut scheduler = scheduler;
    let _ = scheduler.shutdown().await;
    tracker.close();
    if tokio::time::timeout(worker.config.prober.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight probes did not finish within the shutdown grace; dropping them");
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), worker.coord.release())
        .await
        .unwrap_or(Err(crate::coord::CoordError {
            op: "release",
            message: "timed out".into(),
        }))
    {
        tracing::warn!(error = %e, "could not release the lease; it expires by itself");
    }
    worker.health.leader.store(false, Ordering::Relaxed);
    worker.publisher.flush(Duration::from_secs(2)).await;
    // The KeyValueStore writer ends with the worker, whoever still holds
    // the worker (the scheduler's job does): the next leader rewrites the
    // keys.
    if let Some(kvs) = &worker.kvs {
        kvs.close();
    }
    controls_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!(worker = %worker.id.worker, "stopped");
    Ok(())
}

async fn schedule(worker: Arc<Worker>, tracker: TaskTracker) -> Result<JobScheduler, WorkerError> {
    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| WorkerError::Scheduler(e.to_string()))?;
    let interval = worker.config.prober.interval;
    let cron = worker.config.prober.schedule.clone();
    let run = move |_id, _scheduler| {
        let (worker, tracker) = (worker.clone(), tracker.clone());
        Box::pin(async move {
            // Spawned so a slow round never delays the next one's start.
            if !tracker.is_closed() {
                let span = worker.span();
                tracker.spawn(worker.round(unix_millis_now()).instrument(span));
            }
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    let job = match &cron {
        Some(expr) => Job::new_async(expr.as_str(), run),
        None => Job::new_repeated_async(interval, run),
    }
    .map_err(|e| {
        WorkerError::Scheduler(format!(
            "cannot schedule rounds ({}): {e}",
            cron.as_deref().unwrap_or("interval")
        ))
    })?;
    scheduler
        .add(job)
        .await
        .map_err(|e| WorkerError::Scheduler(e.to_string()))?;
    scheduler
        .start()
        .await
        .map_err(|e| WorkerError::Scheduler(e.to_string()))?;
    Ok(scheduler)
}

/// Checks that a cron expression is one the scheduler accepts.
pub fn check_schedule(expr: &str) -> Result<(), String> {
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("`{expr}`: {e}"))
}

impl Worker {
    /// The span every round runs in: its log lines, probes included, name
    /// the region and the worker.
    fn span(&self) -> tracing::Span {
        tracing::info_span!("round", region = %self.id.region, worker = %self.id.worker)
    }

    /// One round: probe, share, lead, rank, publish. Everything shared
    /// and published is dated on the region's clock ([`Clock`]).
    async fn round(self: Arc<Self>, scheduled: UnixMillis) {
        let started = tokio::time::Instant::now();
        let lag_ms = unix_millis_now().saturating_sub(scheduled);
        metrics::gauge!("origin_router_round_lag_seconds", "region" => self.id.region.clone())
            .set(lag_ms as f64 / 1000.0);
        let mut report = self.rounds.run().await;
        // Probes are timed by the monotonic clock; their dates move onto
        // the region's clock, so a worker whose own clock is off still
        // contributes samples the leader can use.
        let offset_ms = self.clock.offset_ms().unwrap_or(0);
        for sample in &mut report.samples {
            sample.at = crate::coord::clock::shift(sample.at, offset_ms);
        }
        self.local.extend(&report.samples);
        self.health
            .last_round_end
            .store(unix_millis_now(), Ordering::Relaxed);
        metrics::histogram!("origin_router_round_seconds", "region" => self.id.region.clone())
            .record(started.elapsed().as_secs_f64());

        let now = self.clock.region_time(unix_millis_now());
        let shared = self.coord.share(&report.samples).await;
        let role = match shared {
            Ok(()) if self.standing_aside() => Ok(Role::Follower { leader: None }),
            Ok(()) => self.coord.lead(now).await,
            Err(e) => Err(e),
        };
        match role {
            Ok(Role::Leader { seq, at }) => {
                self.set_degraded(false, None);
                if self.step_down_if_unheard().await {
                    return;
                }
                let samples = match self.coord.samples(at, self.settings.window).await {
                    Ok(samples) => samples,
                    Err(e) => {
                        coordination_error(&e);
                        self.local.snapshot(at, self.settings.window)
                    }
                };
                self.set_leader(true).await;
                self.degraded.led(at);
                if let Err(e) = self.coord.prune(at).await {
                    coordination_error(&e);
                }
                self.publish(seq, &samples, at, |_| true).await;
            }
            Ok(Role::Follower { leader }) => {
                self.set_degraded(false, None);
                self.set_leader(false).await;
                self.stand_down_kvs();
                self.degraded.followed();
                tracing::debug!(leader = leader.as_deref().unwrap_or("?"), "following");
            }
            Ok(Role::Barred { offset_ms }) => {
                // Said at warn by the clock; here only the state.
                self.set_degraded(false, None);
                self.set_leader(false).await;
                self.stand_down_kvs();
                self.degraded.followed();
                tracing::debug!(offset_ms, "not leading: clock off");
            }
            Err(e) => {
                // Degraded: rank own samples; time-based seq never goes back.
                coordination_error(&e);
                self.set_degraded(true, Some(&e));
                self.set_leader(false).await;
                let samples = self.local.snapshot(now, self.settings.window);
                // One view per region: who publishes what is the
                // coordinator's answer ([`Degraded::plan`]).
                let plan = self.degraded.plan(now).await;
                self.publish(plan.seq, &samples, now, |pool| plan.publishes(pool))
                    .await;
            }
        }
    }

    /// Whether this worker stepped down lately and leaves the lease to
    /// the others for now.
    fn standing_aside(&self) -> bool {
        let mut until = self
            .stand_aside_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(at) if tokio::time::Instant::now() < at => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// A leader whose rankings the store has refused (for a reason other
    /// than a newer ranking: that is being deposed, which the lease says)
    /// for the last two rounds gives the lease up and stands aside for one
    /// lease lifetime, so a worker that can publish takes over at its next
    /// round: within three intervals of the first refused ranking. Only
    /// with Redis: a solo or degraded worker has nobody to hand over to.
    /// Returns whether it stepped down.
    async fn step_down_if_unheard(&self) -> bool {
        if self.config.store.redis_url.is_none() {
            return false;
        }
        let interval = self.config.prober.interval;
        let Some(failing) = self
            .publisher
            .failing_for()
            .filter(|f| *f >= interval * 3 / 2)
        else {
            return false;
        };
        // Only when another worker is there to take over (it shared
        // samples within the window): a lone worker standing aside would
        // only add a lease lifetime of silence.
        let now = self.clock.region_time(unix_millis_now());
        let others = match self.coord.samples(now, self.settings.window).await {
            Ok(samples) => samples.iter().any(|s| s.worker != self.id.worker),
            Err(_) => false,
        };
        if !others {
            return false;
        }
        metrics::counter!(
            "origin_router_leader_step_downs_total",
            "region" => self.id.region.clone(),
            "worker" => self.id.worker.clone(),
            "reason" => "store_refuses"
        )
        .increment(1);
        tracing::warn!(
            target: LOG_TARGET,
            region = %self.id.region,
            worker = %self.id.worker,
            failing_ms = failing.as_millis() as u64,
            "stepping down: the store has refused this leader's rankings for two rounds"
        );
        *self
            .stand_aside_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now() + self.config.prober.lease_ttl);
        self.publisher.forget_failures();
        if let Err(e) = self.coord.release().await {
            coordination_error(&e);
        }
        self.set_leader(false).await;
        self.stand_down_kvs();
        self.degraded.followed();
        true
    }

    /// This worker does not publish this round: its KeyValueStore values
    /// must not land over the leader's (the store has no fencing of its
    /// own, unlike the ranking store's `seq`). Not called in degraded
    /// mode, which publishes the pools its plan gives it.
    fn stand_down_kvs(&self) {
        if let Some(kvs) = &self.kvs {
            kvs.stand_down();
        }
    }

    async fn publish(
        &self,
        seq: u64,
        samples: &[Sample],
        now: UnixMillis,
        publishes: impl Fn(&str) -> bool,
    ) {
        for (name, pool) in self.config.pools.iter().filter(|(n, _)| publishes(n)) {
            let previous = self
                .previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned();
            let target = Target {
                pool_name: name,
                pool,
                region: &self.id.region,
                seq,
            };
            let ranked = ranking::rank(target, previous.as_ref(), samples, &self.settings, now);
            // Hysteresis goes on from the ranking as measured; what is
            // published (and compared below) carries the operators' drains.
            self.previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), ranked.clone());
            let doc = self.apply_controls(name, ranked, now);
            let old_top = previous
                .as_ref()
                .and_then(|p| p.top())
                .map(|o| (o.id.clone(), o.state));
            let new_top = doc.top().map(|o| (o.id.clone(), o.state));
            if old_top != new_top {
                metrics::counter!("origin_router_ranking_changes_total", "region" => self.id.region.clone(), "pool" => name.clone())
                    .increment(1);
                tracing::info!(
                    region = %self.id.region,
                    pool = %name,
                    seq,
                    from = old_top.as_ref().map(|t| t.0.as_str()).unwrap_or("-"),
                    to = new_top.as_ref().map(|t| t.0.as_str()).unwrap_or("-"),
                    order = %summary(&doc),
                    "ranking changed"
                );
            }
            for o in &doc.origins {
                let before = previous
                    .as_ref()
                    .and_then(|p| p.entry(&o.id))
                    .map(|e| e.state);
                if before.is_some_and(|b| b != o.state) {
                    tracing::warn!(
                        region = %self.id.region,
                        pool = %name,
                        origin = %o.id,
                        from = before.map(|b| b.as_str()).unwrap_or("-"),
                        to = o.state.as_str(),
                        last_failure = o.last_failure.map(|f| f.to_string()).unwrap_or_default(),
                        "origin state changed"
                    );
                }
            }
            if let Err(e) = self.coord.record_ranking(&doc).await {
                tracing::debug!(error = %e, "could not record the ranking in Redis");
            }
            if let Some(kvs) = &self.kvs {
                kvs.submit(doc.clone(), self.controls_in_force(name, now));
            }
            self.publisher.submit(doc);
        }
    }

    /// The ranking of `pool` as the drains in force leave it (marked
    /// `drained`, ranked last; see [`control::mark_drained`]); emits the
    /// override start and end events of this region.
    fn apply_controls(
        &self,
        pool: &str,
        mut doc: RankingDocument,
        now: UnixMillis,
    ) -> RankingDocument {
        let stored = self.stored_controls(pool);
        let (active, _) = control::active(&stored, &self.config, pool, &self.id.region, now);
        let drained = control::drained(&active);
        if !drained.is_empty() {
            control::mark_drained(&mut doc, &drained, self.config.operations.fail_open);
        }
        let current = control::override_of(&active).cloned();
        let before = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool.to_string(), current.clone())
            .flatten();
        self.events.emit(
            pool,
            crate::events::override_change(before.as_ref(), current.as_ref()),
            now,
        );
        doc
    }

    /// The pool's controls as last read from the store.
    fn stored_controls(&self, pool: &str) -> Arc<Vec<Control>> {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool)
            .cloned()
            .unwrap_or_default()
    }

    /// The pool's stored controls that are in force at `now` for the
    /// region each names (as [`control::active`] judges them): what the
    /// KeyValueStore value carries, for the function to apply in its own
    /// region.
    fn controls_in_force(&self, pool: &str, now: UnixMillis) -> Vec<Control> {
        let stored = self.stored_controls(pool);
        stored
            .iter()
            .filter(|c| {
                let one = std::slice::from_ref(*c);
                !control::active(one, &self.config, pool, &c.region, now)
                    .0
                    .is_empty()
            })
            .cloned()
            .collect()
    }

    /// Reads every pool's drains and overrides once per `prober.interval`
    /// (at least 1 s apart, at most 30 s), each read bounded; a failed read
    /// keeps the last good controls. An unusable stored control is logged
    /// once per key and reason, not every round.
    async fn refresh_controls(self: Arc<Self>) {
        let every = self
            .config
            .prober
            .interval
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut logged: HashSet<(String, String)> = HashSet::new();
        loop {
            for name in self.config.pools.keys() {
                match tokio::time::timeout(Duration::from_secs(5), self.store.read_pool(name)).await
                {
                    Ok(Ok(read)) => {
                        let now = unix_millis_now();
                        for (key, reason) in
                            control::unused(&read.controls, &self.config, name, now)
                        {
                            if logged.insert((format!("{name}/{key}"), reason.clone())) {
                                tracing::warn!(pool = %name, key = %key, reason = %reason, "ignored a drain or override");
                            }
                        }
                        self.controls
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone(), Arc::new(read.controls.controls));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(pool = %name, error = %e, "drains and overrides not read")
                    }
                    Err(_) => {
                        tracing::debug!(pool = %name, "reading drains and overrides timed out")
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// On becoming leader, starts hysteresis from what the region last
    /// published rather than from nothing.
    async fn set_leader(&self, leader: bool) {
        let was = self.was_leader.swap(leader, Ordering::AcqRel);
        self.health.leader.store(leader, Ordering::Relaxed);
        metrics::gauge!("origin_router_leader", "region" => self.id.region.clone(), "worker" => self.id.worker.clone())
            .set(if leader { 1.0 } else { 0.0 });
        if leader == was {
            return;
        }
        if leader {
            // A new term is judged on its own writes, not on a run of
            // failures left over from before.
            self.publisher.forget_failures();
        }
        tracing::info!(region = %self.id.region, worker = %self.id.worker, leader, "leadership changed");
        if leader {
            for name in self.config.pools.keys() {
                let read =
                    tokio::time::timeout(Duration::from_secs(1), self.store.read_pool(name)).await;
                if let Ok(Ok(read)) = read {
                    if let Some(doc) = read.region(&self.id.region) {
                        self.previous
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(name.clone())
                            .or_insert_with(|| doc.clone());
                    }
                }
            }
        }
    }

    fn set_degraded(&self, degraded: bool, error: Option<&crate::coord::CoordError>) {
        let was = self.health.degraded.swap(degraded, Ordering::Relaxed);
        if was != degraded {
            if degraded {
                tracing::warn!(
                    region = %self.id.region,
                    worker = %self.id.worker,
                    error = %error.map(|e| e.to_string()).unwrap_or_default(),
                    "Redis unreachable: degraded mode, publishing rankings of this worker's own samples"
                );
            } else {
                tracing::info!(region = %self.id.region, worker = %self.id.worker, "Redis reachable again: coordination resumed");
            }
        }
    }
}

fn coordination_error(e: &crate::coord::CoordError) {
    metrics::counter!("origin_router_coordination_errors_total", "op" => e.op).increment(1);
    tracing::debug!(error = %e, "coordination failed");
}

/// `a(healthy 12.1ms) > b(down)` for logs.
pub fn summary(doc: &RankingDocument) -> String {
    doc.origins
        .iter()
        .map(|o| match o.latency_ms {
            Some(ms) if o.state != origin_router::OriginState::Down => {
                format!("{}({} {:.1}ms)", o.id, o.state.as_str(), ms)
            }
            _ => format!("{}({})", o.id, o.state.as_str()),
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// The log target of this module's lines (the step-down warning is
/// counted by `StepDownFilter` in `deploy/prober.yaml`).
const LOG_TARGET: &str = module_path!();

#[cfg(test)]
mod tests {
    /// The `FilterPattern` of metric filter `resource` in
    /// `deploy/prober.yaml`.
    fn filter_pattern(resource: &str) -> String {
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/prober.yaml"
        ))
        .unwrap();
        template
            .lines()
            .skip_while(|l| !l.contains(&format!("{resource}:")))
            .find(|l| l.contains("FilterPattern:"))
            .unwrap()
            .to_string()
    }

    /// The CloudWatch metric filters of `deploy/prober.yaml` count log
    /// lines by their target (and, for step-downs, the line's start): they
    /// must name the modules that write them.
    #[test]
    fn the_alarm_filters_name_the_lines_they_count() {
        let clock = filter_pattern("ClockOffFilter");
        let target = format!("$.target = \"{}\"", crate::coord::clock::LOG_TARGET);
        assert!(clock.contains(&target), "{clock}");
        assert!(clock.contains("$.level = \"WARN\""), "{clock}");
        let step_down = filter_pattern("StepDownFilter");
        let target = format!("$.target = \"{}\"", super::LOG_TARGET);
        assert!(step_down.contains(&target), "{step_down}");
        assert!(
            step_down.contains("$.fields.message = \"stepping down*\""),
            "{step_down}"
        );
        let source = include_str!("worker.rs");
        assert!(source.contains(concat!("\"stepping down", ": the store")));
    }
}
