//! One probe round: every configured origin probed once, spread over the
//! jitter window, with bounded concurrency and never two probes of one
//! origin in flight (a round that finds an origin still being probed by the
//! previous round skips it, so a slow origin cannot pile up probes or delay
//! the schedule).
//!
//! When a probe's result differs from the origin's previous one, the origin
//! is re-probed `fast_interval` later, up to `fall - 1` (or `rise - 1`) times
//! in the same round, as HAProxy's `fastinter` does: a dead origin collects
//! its `fall` failures within one round instead of `fall` rounds.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::{Config, OriginConfig, ProberConfig};
use origin_router::probe::{resolve, ProbeEngine, ProbeSettings, TlsError};
use origin_router::sample::{unix_millis_now, Outcome, Sample};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::identity::Identity;
use crate::metrics::TargetMetrics;

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

const UNKNOWN: u8 = 0;
const LAST_OK: u8 = 1;
const LAST_FAILED: u8 = 2;

struct TargetState {
    in_flight: AtomicBool,
    last: AtomicU8,
    metrics: TargetMetrics,
}

/// Round options.
#[derive(Debug, Clone, Copy)]
pub struct RoundSettings {
    pub concurrency: usize,
    pub jitter: Duration,
    pub fast_interval: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl From<&ProberConfig> for RoundSettings {
    fn from(prober: &ProberConfig) -> Self {
        RoundSettings {
            concurrency: prober.concurrency,
            jitter: prober.jitter,
            fast_interval: prober.fast_interval,
            rise: prober.rise,
            fall: prober.fall,
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
        RoundSettings::from(&config.prober),
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
                last: AtomicU8::new(UNKNOWN),
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
            // In the round's span, so each probe's log lines name the
            // region and the worker.
            tasks.spawn(
                async move {
                    let samples = inner.probe_target(index).await;
                    inner.state[index].in_flight.store(false, Ordering::Release);
                    samples
                }
                .in_current_span(),
            );
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
        let s = self.settings;
        let most = s.rise.max(s.fall).max(1) as usize;
        let mut samples = Vec::with_capacity(1);
        let mut confirmations_left = 0u32;
        loop {
            let outcome = {
                let _permit = self
                    .limit
                    .acquire()
                    .await
                    .expect("semaphore is never closed");
                let at = unix_millis_now();
                // Boxed so the probe's state (about 5 KiB: connection, TLS,
                // HTTP) is allocated only once it holds a permit; a task
                // still waiting for one stays small.
                let outcome = Box::pin(self.engine.probe(&target.origin)).await;
                state.metrics.record(&outcome);
                samples.push(Sample {
                    origin: target.origin.id.clone(),
                    pool: target.pool.clone(),
                    worker: self.worker.clone(),
                    at,
                    outcome,
                });
                &samples.last().expect("just pushed").outcome
            };
            log_outcome(target, outcome);
            let ok = outcome.is_ok();
            let previous = state
                .last
                .swap(if ok { LAST_OK } else { LAST_FAILED }, Ordering::AcqRel);
            if previous != UNKNOWN && (previous == LAST_OK) != ok {
                confirmations_left = if ok { s.rise } else { s.fall }.saturating_sub(1);
            } else {
                confirmations_left = confirmations_left.saturating_sub(1);
            }
            if confirmations_left == 0 || samples.len() >= most {
                return samples;
            }
            tokio::time::sleep(s.fast_interval).await;
        }
    }
}

fn log_outcome(target: &ProbeTarget, outcome: &Outcome) {
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
            after_us = f.after.as_micros() as u64,
            detail = %f.detail,
            "probe failed"
        ),
    }
}
