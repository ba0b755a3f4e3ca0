//! The ranking engine: samples in, a ranking out, as a pure function of
//! `(pool, previous ranking, samples, settings, now)`. No clock reads, no I/O.
//!
//! Two steps:
//!
//! 1. **Per worker** ([`worker_view`]): each worker's samples of an origin,
//!    replayed in time order through rise/fall [`Health`], give that worker's
//!    up/down verdict, a time-decayed latency (each sample weighs
//!    `2^(-age / half_life)`, so an origin that recovers is seen to recover)
//!    that follows steps ([`latency_estimate`]: `fall` successive samples
//!    `step_factor` times slower, or `rise` that much faster, replace the
//!    estimate at once, while a lone outlier moves nothing),
//!    a time-decayed success ratio counted from when the origin last came up
//!    (so a clean recovery is healthy after `rise` successes, while an origin
//!    that stays up but keeps failing some probes is `degraded`), and the
//!    last failure class. Recomputing
//!    from the retained window (rather than carrying counters) means any
//!    leader computes the same ranking from the same samples: a new leader
//!    needs no hand-over.
//! 2. **Across workers** ([`rank`]): an origin is `down` only if a strict
//!    majority of the workers that saw it recently hold it down, so one
//!    worker's bad network path cannot eject it. Latency and success ratio
//!    are medians across workers. Origins sort by state, then score (latency
//!    divided by weight), then config order, so ties are deterministic.
//!    Finally the previous top origin keeps its place unless the challenger
//!    is better by more than the switching margin (relative and absolute),
//!    so near-equal origins do not flap.

mod health;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

pub use health::Health;

use crate::config::{PoolConfig, ProberConfig, RankingConfig};
use crate::document::{OriginState, RankedOrigin, RankingDocument, SCHEMA_VERSION};
use crate::sample::{FailureClass, Sample, UnixMillis};

/// Ranking parameters, from `[prober]` and `[ranking]` of the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub rise: u32,
    pub fall: u32,
    /// Samples older than this are ignored.
    pub window: Duration,
    /// Half-life of a sample's weight in latency and success ratio.
    pub half_life: Duration,
    pub switch_margin_relative: f64,
    pub switch_margin_absolute: Duration,
    pub degraded_below: f64,
    pub probe_interval: Duration,
    /// A worker whose newest sample of an origin is older than this no
    /// longer votes on it (it has stopped, or stopped probing it).
    pub vote_expiry: Duration,
    /// Latency step factor ([`latency_estimate`]); 0: off.
    pub step_factor: f64,
}

impl Settings {
    /// The thresholds and probe timing come from the prober's section (they
    /// are what the workers run with), the rest from the ranking's.
    pub fn new(prober: &ProberConfig, ranking: &RankingConfig) -> Self {
        Settings {
            rise: prober.rise,
            fall: prober.fall,
            window: ranking.window,
            half_life: ranking.half_life,
            switch_margin_relative: ranking.switch_margin_relative,
            switch_margin_absolute: ranking.switch_margin_absolute,
            degraded_below: ranking.degraded_below,
            probe_interval: prober.interval,
            vote_expiry: prober.max_silence(),
            step_factor: ranking.step_factor,
        }
    }
}

impl Default for Settings {
    /// The settings of a default configuration.
    fn default() -> Self {
        Settings::new(&ProberConfig::default(), &RankingConfig::default())
    }
}

/// What one worker's samples say about one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub up: bool,
    /// Time-decayed mean latency until first byte of successful samples, ms.
    pub latency_ms: Option<f64>,
    /// The connect budget of the successful samples since the origin was
    /// last up, ms ([`connect_budget`]).
    pub connect_budget_ms: Option<f64>,
    /// Time-decayed share of successful samples.
    pub success_ratio: f64,
    pub last_failure: Option<FailureClass>,
    /// Start time of the newest sample.
    pub newest: UnixMillis,
}

/// One worker's view of one origin from its samples (any order). `None` if
/// no sample lies in the window or the newest one is past `vote_expiry`.
pub fn worker_view(
    samples: &[&Sample],
    settings: &Settings,
    now: UnixMillis,
) -> Option<WorkerView> {
    let oldest = now.saturating_sub(settings.window.as_millis() as u64);
    let mut in_window: Vec<&Sample> = samples.iter().copied().filter(|s| s.at >= oldest).collect();
    in_window.sort_by_key(|s| s.at);
    let newest = in_window.last()?.at;
    if now.saturating_sub(newest) > settings.vote_expiry.as_millis() as u64 {
        return None;
    }
    let half_life_ms = settings.half_life.as_secs_f64() * 1000.0;
    let weight = |s: &Sample| (-(now.saturating_sub(s.at) as f64) / half_life_ms).exp2();
    let mut health = Health::default();
    // The success ratio counts from the last time the origin came back up:
    // an origin that recovered cleanly (rise successes) is healthy again at
    // once, while one that stays up but keeps failing some probes is not.
    let mut since_up = 0;
    let mut came_back = false;
    let mut last_failure = None;
    for (i, s) in in_window.iter().enumerate() {
        let ok = s.outcome.is_ok();
        if health.observe(ok, settings.rise, settings.fall) && ok {
            since_up = (i + 1).saturating_sub(settings.rise.max(1) as usize);
            came_back = true;
        }
        if let Some(class) = s.outcome.failure_class() {
            last_failure = Some(class);
        }
    }
    // An origin that came back up is measured afresh from the probes that
    // brought it back: its latency before it went down says nothing now.
    let since_recovery = if came_back { since_up } else { 0 };
    let latency_ms = latency_estimate(&in_window[since_recovery..], settings, now);
    let connect_budget_ms = connect_budget(&in_window[since_recovery..]);
    let (ok_w, all_w) = in_window[since_up..]
        .iter()
        .fold((0.0, 0.0), |(ok, all), s| {
            let w = weight(s);
            (if s.outcome.is_ok() { ok + w } else { ok }, all + w)
        });
    Some(WorkerView {
        up: health.is_up(),
        latency_ms,
        connect_budget_ms,
        success_ratio: if all_w > 0.0 { ok_w / all_w } else { 0.0 },
        last_failure,
        newest,
    })
}

/// How long a connection to one origin may take, from one worker's
/// samples in time order, ms: the probe-budget rule of
/// [`crate::probe::budget`] (`max(srtt + 4 rttvar, 2 srtt)`, RFC 6298's
/// estimator) over the connect phase of the successful samples, without
/// floor or ceiling (the edge applies CloudFront's). `None` before
/// [`crate::probe::budget::MIN_SAMPLES`] successes. Failed samples do not
/// feed it (Karn's rule, as for probe budgets).
pub fn connect_budget(samples: &[&Sample]) -> Option<f64> {
    let mut estimate = crate::probe::budget::BudgetEstimator::default();
    for s in samples {
        if let crate::sample::Outcome::Ok(t) = &s.outcome {
            estimate.observe(t.connect);
        }
    }
    estimate.smoothed()?;
    let budget = estimate.budget(
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
    );
    Some(round3(budget.as_secs_f64() * 1000.0))
}

/// The latency of one origin from one worker's samples in time order, ms:
/// a time-decayed mean that follows steps.
///
/// Every sample weighs `2^(-age / half_life)`. A sample at least
/// `step_factor` times slower than the estimate so far (or that much
/// faster) is held apart as a possible step; `fall` such samples in a row
/// (`rise` for faster ones) are a step, and the estimate restarts from them,
/// so a 5× slower origin is seen as 5× slower after `fall` probes (within
/// one round, with the worker's confirming re-probes) rather than after
/// several half-lives. A sample within the factor ends the run: held slower
/// samples were outliers and are left out, so a lone 10× slower answer
/// moves nothing; held faster ones count as usual (an origin that sometimes
/// answers much faster, a cache hit, say, really does: dropping them would
/// rank a bimodal origin by its slow mode alone).
///
/// With step following on, a probe cut by its budget (a connect or
/// response timeout) counts with its age when cut: a lower bound on the
/// latency, so an origin whose probes go unanswered for 150 ms is not a
/// 5 ms origin (never below the estimate so far: a timeout is no evidence
/// of speed). With it off (`step_factor` 0), only successes count and the
/// estimate is the plain decayed mean.
pub fn latency_estimate(samples: &[&Sample], settings: &Settings, now: UnixMillis) -> Option<f64> {
    let half_life_ms = settings.half_life.as_secs_f64() * 1000.0;
    let weight = |s: &Sample| (-(now.saturating_sub(s.at) as f64) / half_life_ms).exp2();
    let follow = settings.step_factor > 1.0;
    // Decayed sums of the current regime, and the run of held samples.
    let (mut sum_w, mut sum_wx) = (0.0f64, 0.0f64);
    let mut held: Vec<(f64, f64)> = Vec::new();
    let mut held_slower = false;
    for s in samples {
        let x = match (&s.outcome, follow) {
            (crate::sample::Outcome::Ok(_), _) => s.outcome.latency(),
            (crate::sample::Outcome::Failed(f), true)
                if matches!(
                    f.class,
                    FailureClass::ConnectTimeout | FailureClass::ResponseTimeout
                ) =>
            {
                Some(f.after)
            }
            _ => None,
        };
        let Some(x) = x.map(|d| d.as_secs_f64() * 1000.0) else {
            continue;
        };
        let w = weight(s);
        let estimate = (sum_w > 0.0).then(|| sum_wx / sum_w);
        // A timeout is evidence of slowness only: never of a faster step.
        let x = match (&s.outcome, estimate) {
            (crate::sample::Outcome::Failed(_), Some(e)) => x.max(e),
            _ => x,
        };
        let step = match estimate {
            Some(e) if follow && crate::probe::budget::is_step(e, x, settings.step_factor) => {
                Some(x > e)
            }
            _ => None,
        };
        // A run of held samples that ends short of a step: slower ones were
        // outliers and are dropped; faster ones are kept (an origin that
        // sometimes answers much faster, say a cache hit, really does).
        let mut end_run = |held: &mut Vec<(f64, f64)>, slower: bool| {
            if !slower {
                sum_w += held.iter().map(|(w, _)| w).sum::<f64>();
                sum_wx += held.iter().map(|(w, x)| w * x).sum::<f64>();
            }
            held.clear();
        };
        match step {
            None => {
                end_run(&mut held, held_slower);
                sum_w += w;
                sum_wx += w * x;
            }
            Some(slower) => {
                if held_slower != slower {
                    end_run(&mut held, held_slower);
                }
                held_slower = slower;
                held.push((w, x));
                // Never one sample: a lone outlier is not a step.
                let needed = if slower { settings.fall } else { settings.rise };
                if held.len() >= needed.max(2) as usize {
                    sum_w = held.iter().map(|(w, _)| w).sum();
                    sum_wx = held.iter().map(|(w, x)| w * x).sum();
                    held.clear();
                }
            }
        }
    }
    // A faster run still open counts, as one that ended would.
    if !held_slower {
        sum_w += held.iter().map(|(w, _)| w).sum::<f64>();
        sum_wx += held.iter().map(|(w, x)| w * x).sum::<f64>();
    }
    (sum_w > 0.0)
        .then(|| sum_wx / sum_w)
        .filter(|x| x.is_finite())
}

/// What a ranking is computed for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub pool_name: &'a str,
    pub pool: &'a PoolConfig,
    pub region: &'a str,
    /// Fencing number for the document (from the leader lease).
    pub seq: u64,
}

/// Computes the ranking of one pool for one region.
///
/// `samples` may hold any workers' samples of any pools: only this pool's
/// configured origins count, so samples of removed origins are ignored.
pub fn rank(
    target: Target<'_>,
    previous: Option<&RankingDocument>,
    samples: &[Sample],
    settings: &Settings,
    now: UnixMillis,
) -> RankingDocument {
    // origin -> worker -> samples
    let mut grouped: BTreeMap<&str, BTreeMap<&str, Vec<&Sample>>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.pool == target.pool_name) {
        grouped
            .entry(s.origin.as_str())
            .or_default()
            .entry(s.worker.as_str())
            .or_default()
            .push(s);
    }
    let mut all_workers = std::collections::BTreeSet::new();
    let mut entries: Vec<(usize, RankedOrigin)> = Vec::with_capacity(target.pool.origins.len());
    for (index, origin) in target.pool.origins.iter().enumerate() {
        let views: Vec<WorkerView> = grouped
            .get(origin.id.as_str())
            .into_iter()
            .flat_map(|by_worker| by_worker.iter())
            .filter_map(|(worker, samples)| {
                let view = worker_view(samples, settings, now)?;
                all_workers.insert(*worker);
                Some(view)
            })
            .collect();
        entries.push((index, combine(&origin.id, origin.weight, &views, settings)));
    }
    entries.sort_by(|(ia, a), (ib, b)| compare(a, b).then(ia.cmp(ib)));
    let mut origins: Vec<RankedOrigin> = entries.into_iter().map(|(_, e)| e).collect();
    apply_hysteresis(&mut origins, previous, settings);
    RankingDocument {
        schema_version: SCHEMA_VERSION,
        pool: target.pool_name.to_string(),
        region: target.region.to_string(),
        seq: target.seq,
        generated_at: now,
        probe_interval_ms: settings.probe_interval.as_millis().max(1) as u64,
        workers: all_workers.len() as u32,
        origins,
    }
}

/// Quorum across workers' views of one origin.
fn combine(id: &str, weight: f64, views: &[WorkerView], settings: &Settings) -> RankedOrigin {
    let voters = views.len() as u32;
    let down_votes = views.iter().filter(|v| !v.up).count() as u32;
    let last_failure = views
        .iter()
        .filter(|v| v.last_failure.is_some())
        .max_by_key(|v| v.newest)
        .and_then(|v| v.last_failure);
    if voters == 0 || down_votes * 2 > voters {
        // No recent sample at all counts as down: nothing vouches for it.
        return RankedOrigin {
            id: id.to_string(),
            state: OriginState::Down,
            score: None,
            latency_ms: median(views.iter().filter_map(|v| v.latency_ms)).map(round3),
            connect_budget_ms: None,
            success_ratio: median(views.iter().map(|v| v.success_ratio)).unwrap_or(0.0),
            last_failure,
            voters,
            down_votes,
        };
    }
    // The workers that hold it up decide its latency: a worker whose path is
    // broken would otherwise drag the median.
    let up_views = views.iter().filter(|v| v.up);
    let latency_ms = median(up_views.clone().filter_map(|v| v.latency_ms)).map(round3);
    let connect_budget_ms =
        median(up_views.clone().filter_map(|v| v.connect_budget_ms)).map(round3);
    let success_ratio = median(views.iter().map(|v| v.success_ratio)).unwrap_or(0.0);
    let state = if success_ratio >= settings.degraded_below {
        OriginState::Healthy
    } else {
        OriginState::Degraded
    };
    RankedOrigin {
        id: id.to_string(),
        state,
        score: latency_ms.map(|l| round3(l / weight)),
        latency_ms,
        connect_budget_ms,
        success_ratio: round3(success_ratio).clamp(0.0, 1.0),
        last_failure,
        voters,
        down_votes,
    }
}

/// Best first: state, then score (unmeasured last).
fn compare(a: &RankedOrigin, b: &RankedOrigin) -> Ordering {
    a.state
        .cmp(&b.state)
        .then_with(|| match (a.score, b.score) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// Keeps the previous top origin on top unless the new best beats it by
/// more than the margin. A worse state always loses top place.
fn apply_hysteresis(
    origins: &mut [RankedOrigin],
    previous: Option<&RankingDocument>,
    settings: &Settings,
) {
    let Some(prev_top) = previous.and_then(|p| p.top()) else {
        return;
    };
    let Some(pos) = origins.iter().position(|o| o.id == prev_top.id) else {
        return;
    };
    if pos == 0 {
        return;
    }
    let (best, incumbent) = (&origins[0], &origins[pos]);
    if incumbent.state != best.state {
        return;
    }
    let (Some(best_score), Some(incumbent_score)) = (best.score, incumbent.score) else {
        return;
    };
    let margin = (incumbent_score * settings.switch_margin_relative)
        .max(settings.switch_margin_absolute.as_secs_f64() * 1000.0);
    if incumbent_score - best_score <= margin {
        origins[..=pos].rotate_right(1);
    }
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Published numbers carry microsecond precision; more is noise.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
