//! One probe round: every configured origin probed once, spread over the
//! jitter window, with bounded concurrency and never two probes of one
//! origin in flight (a round that finds an origin still being probed by the
//! previous round skips it, so a slow origin cannot pile up probes or delay
//! the schedule).
//!
//! When a probe's result differs from the origin's previous one, the origin
//! is re-probed `fast_interval` later, up to `fall - 1` (or `rise - 1`) times
//! in the same round, as HAProxy's `fastinter` does: a dead origin collects
//! its `fall` failures within one round instead of `fall` rounds. How long
//! each probe may take and when a result needs confirming is the origin's
//! [`Pacing`]: adaptive budgets, latency steps confirmed like failures, and
//! a round that does not wait for the probes of origins that are down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use origin_router::config::{Config, OriginConfig};
use origin_router::probe::{resolve, ProbeEngine, ProbeSettings, TlsError};
use origin_router::sample::{unix_millis_now, Outcome, Sample};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::identity::Identity;
use crate::metrics::TargetMetrics;
use crate::pacing::{Pacing, PacingSettings};

/// One origin to probe, with its pool.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub pool: String,
    pub origin: OriginConfig,
}

/// Every origin of every pool of a configuration.
pub fn targets(config: &Config) -> Vec<ProbeTarget> {
    config
        .pools
        .iter()
        .flat_map(|(pool, p)| {
            p.origins.iter().map(move |o| ProbeTarget {
                pool: pool.clone(),
                origin: o.clone(),
            })
        })
        .collect()
}

struct TargetState {
    in_flight: AtomicBool,
    pacing: Mutex<Pacing>,
    metrics: TargetMetrics,
}

impl TargetState {
    fn pacing(&self) -> std::sync::MutexGuard<'_, Pacing> {
        self.pacing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Round options.
#[derive(Debug, Clone, Copy)]
pub struct RoundSettings {
    pub concurrency: usize,
    pub jitter: Duration,
    pub pacing: PacingSettings,
}

impl RoundSettings {
    pub fn from_config(config: &Config) -> Self {
        RoundSettings {
            concurrency: config.prober.concurrency,
            jitter: config.prober.jitter,
            pacing: PacingSettings::from_config(config),
        }
    }
}

/// The rounds a worker of `config` runs: every origin, the prober's probe
/// budgets, names resolved through `[resolve]` first.
pub fn rounds_for(config: &Config, id: &Identity) -> Result<Rounds, TlsError> {
    let engine = ProbeEngine::new(
        ProbeSettings::from(&config.prober),
        resolve::with_overrides(&config.resolve),
        config.origins(),
    )?;
    Ok(Rounds::new(
        Arc::new(engine),
        targets(config),
        RoundSettings::from_config(config),
        &id.region,
        &id.worker,
    ))
}

/// Runs probe rounds over a fixed set of targets. Cheap to clone.
#[derive(Clone)]
pub struct Rounds {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<ProbeEngine>,
    targets: Vec<ProbeTarget>,
    state: Vec<TargetState>,
    limit: Semaphore,
    settings: RoundSettings,
    worker: String,
    /// Samples of probes the round that started them did not wait for
    /// (origins that were down): the next round to end takes them.
    late: Mutex<Vec<Sample>>,
}

/// What a round did.
#[derive(Debug, Default)]
pub struct RoundReport {
    pub samples: Vec<Sample>,
    /// Origins skipped because the previous round still probes them.
    pub skipped_in_flight: usize,
}

impl Rounds {
    pub fn new(
        engine: Arc<ProbeEngine>,
        targets: Vec<ProbeTarget>,
        settings: RoundSettings,
        region: &str,
        worker: &str,
    ) -> Self {
        let state = targets
            .iter()
            .map(|t| TargetState {
                in_flight: AtomicBool::new(false),
                pacing: Mutex::new(Pacing::new(settings.pacing)),
                metrics: TargetMetrics::new(region, &t.pool, &t.origin.id),
            })
            .collect();
        Rounds {
            inner: Arc::new(Inner {
                engine,
                targets,
                state,
                limit: Semaphore::new(settings.concurrency.max(1)),
                settings,
                worker: worker.to_string(),
                late: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn targets(&self) -> &[ProbeTarget] {
        &self.inner.targets
    }

    /// Runs one round; returns when every probe it started has finished.
    pub async fn run(&self) -> RoundReport {
        let mut report = RoundReport::default();
        let mut tasks = JoinSet::new();
        let start = tokio::time::Instant::now();
        // Each origin gets a random start offset within the jitter window;
        // probes are spawned when their offset comes, in order, so only the
        // probes actually in flight hold memory (not one sleeping task per
        // origin for the whole window).
        let jitter_us = self.inner.settings.jitter.as_micros() as u64;
        let mut schedule: Vec<(u64, usize)> = {
            let mut rng = rand::rng();
            (0..self.inner.targets.len())
                .map(|i| {
                    (
                        if jitter_us == 0 {
                            0
                        } else {
                            rng.random_range(0..jitter_us)
                        },
                        i,
                    )
                })
                .collect()
        };
        schedule.sort_unstable();
        for (offset_us, index) in schedule {
            let at = start + Duration::from_micros(offset_us);
            if at > tokio::time::Instant::now() {
                // Collect finished probes while waiting for the next start.
                loop {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(at) => break,
                        Some(done) = tasks.join_next() => collect(&mut report, done),
                    }
                }
            }
            if self.inner.state[index]
                .in_flight
                .swap(true, Ordering::AcqRel)
            {
                report.skipped_in_flight += 1;
                continue;
            }
            let inner = self.inner.clone();
            // With adaptive pacing, a down origin is probed with the full
            // budgets and the round does not wait for it: its samples go
            // to the next round, so it never delays the others' rankings.
            let waited =
                !self.inner.settings.pacing.adaptive || self.inner.state[index].pacing().is_up();
            // In the round's span, so each probe's log lines name the
            // region and the worker.
            let probe = async move {
                let samples = inner.probe_target(index).await;
                inner.state[index].in_flight.store(false, Ordering::Release);
                if waited {
                    samples
                } else {
                    inner
                        .late
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(samples);
                    Vec::new()
                }
            }
            .in_current_span();
            if waited {
                tasks.spawn(probe);
            } else {
                tokio::spawn(probe);
            }
        }
        if report.skipped_in_flight > 0 {
            metrics::counter!("origin_router_probes_skipped_in_flight_total")
                .increment(report.skipped_in_flight as u64);
            tracing::debug!(
                skipped = report.skipped_in_flight,
                "origins still probed by the previous round"
            );
        }
        while let Some(done) = tasks.join_next().await {
            collect(&mut report, done);
        }
        report.samples.extend(std::mem::take(
            &mut *self.inner.late.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        report
    }
}

fn collect(report: &mut RoundReport, done: Result<Vec<Sample>, tokio::task::JoinError>) {
    match done {
        Ok(samples) => report.samples.extend(samples),
        Err(e) => tracing::error!(error = %e, "probe task failed"),
    }
}

impl Inner {
    async fn probe_target(&self, index: usize) -> Vec<Sample> {
        let target = &self.targets[index];
        let state = &self.state[index];
        let mut samples = Vec::with_capacity(1);
        loop {
            let budget = state.pacing().budget();
            let fixed = self.engine.settings();
            state
                .metrics
                .set_budget(budget, fixed.connect_timeout + fixed.response_timeout);
            let (outcome, took) = {
                let _permit = self
                    .limit
                    .acquire()
                    .await
                    .expect("semaphore is never closed");
                let at = unix_millis_now();
                let started = tokio::time::Instant::now();
                // Boxed so the probe's state (about 5 KiB: connection, TLS,
                // HTTP) is allocated only once it holds a permit; a task
                // still waiting for one stays small.
                let outcome = Box::pin(self.engine.probe_within(&target.origin, budget)).await;
                let took = started.elapsed();
                state.metrics.record(&outcome);
                samples.push(Sample {
                    origin: target.origin.id.clone(),
                    pool: target.pool.clone(),
                    worker: self.worker.clone(),
                    at,
                    outcome,
                });
                (&samples.last().expect("just pushed").outcome, took)
            };
            log_outcome(target, outcome, budget);
            let next = state.pacing().record(outcome, took, samples.len());
            match next {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return samples,
            }
        }
    }
}

fn log_outcome(target: &ProbeTarget, outcome: &Outcome, budget: Option<Duration>) {
    let budget_ms = budget.map(|b| b.as_millis() as u64);
    match outcome {
        Outcome::Ok(t) => tracing::debug!(
            pool = %target.pool,
            origin = %target.origin.id,
            dns_us = t.dns.as_micros() as u64,
            connect_us = t.connect.as_micros() as u64,
            tls_us = t.tls.as_micros() as u64,
            first_byte_us = t.first_byte.as_micros() as u64,
            total_us = t.total.as_micros() as u64,
            "probe ok"
        ),
        Outcome::Failed(f) => tracing::debug!(
            pool = %target.pool,
            origin = %target.origin.id,
            class = %f.class,
            budget_ms,
            after_us = f.after.as_micros() as u64,
            detail = %f.detail,
            "probe failed"
        ),
    }
}
