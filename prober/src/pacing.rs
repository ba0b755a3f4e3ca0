//! Per-origin probe pacing: how long this worker's next probe of an origin
//! may take, and whether a result needs confirming re-probes, from what the
//! worker saw of that origin so far. Pure state (no clock, no I/O), driven
//! by [`crate::round`] and tested on paused time.
//!
//! The design, and why (the budget formula is in
//! [`origin_router::probe::budget`]):
//!
//! - **Adaptive budgets.** While an origin is up, its probe is cut at a
//!   budget derived from its own smoothed latency and variation, never
//!   above `response_timeout`, never below `budget_floor`. A hung origin
//!   (accepts, then silence) or a blackholed one (the handshake never
//!   completes) then fails each probe after about `budget_floor` rather
//!   than after `response_timeout`: `fall` failures take about as long as
//!   `fall` refused connections.
//! - **Confirmations spaced start to start.** A result that differs from
//!   the previous one is confirmed by up to `fall - 1` (or `rise - 1`)
//!   re-probes in the same round (HAProxy's `fastinter`), each starting
//!   `fast_interval` after the previous one *started*: a probe that ran
//!   into its budget does not also wait a full `fast_interval` after it.
//! - **Latency steps are results too.** A success `step_factor` times
//!   slower (or faster) than the smoothed latency is confirmed by re-probes
//!   the same way, so the ranking (which restarts its latency estimate after
//!   `fall` such samples, [`origin_router::ranking::latency_estimate`]) sees
//!   a sustained step within one round. Once confirmed here, the budget
//!   restarts from the new latency.
//! - **In-flight evidence.** A probe is never left in flight past its
//!   budget: it is cut there and recorded as a timeout whose `after` is the
//!   budget, which the ranking reads as a lower bound on the latency (an
//!   origin that kept a probe waiting 150 ms is not a 5 ms origin). A round
//!   does not wait for the probes of origins that are down (probed with the
//!   full budgets, so a slower origin can come back): their results join
//!   the next round's samples, so a down origin never delays the others'
//!   rankings, at the cost of publishing a recovery up to one interval
//!   later. A round does wait for up origins, at most `fall` budgets each.
//! - **Slower than its budget is down.** A cut cannot tell an origin that
//!   hangs from one that became much slower than its budget allows (for a
//!   5 ms origin, over 150 ms; for a 100 ms one, over about 2x). Both are
//!   taken down after `fall` cuts, and a merely slower one comes back up at
//!   its new latency after `rise` probes at the full budgets, about one
//!   round later. A step the budget does allow (under about 2x for distant
//!   origins, any step under the floor for near ones) is followed as a
//!   latency step, without going down.
//! - **Near the ceiling, fixed budgets.** An origin whose adaptive budget
//!   would reach `response_timeout` keeps the fixed budgets
//!   (`connect_timeout`, then `response_timeout`): adaptive budgets only
//!   ever tighten what the fixed ones allow.
//! - **Down origins get the full budgets**, and their estimate restarts
//!   from the probes that bring them back: an origin that is merely slower
//!   than it was comes back up at its new latency after `rise` probes.
//!
//! `prober.adaptive_budget = false` turns all of this off: fixed budgets,
//! `fast_interval` after each probe ends, rounds that wait for every probe.

use std::time::Duration;

use origin_router::config::{Config, ProberConfig};
use origin_router::probe::budget::BudgetEstimator;
use origin_router::ranking::Health;
use origin_router::sample::Outcome;

/// What pacing depends on, from `[prober]` and `[ranking]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingSettings {
    pub adaptive: bool,
    pub floor: Duration,
    pub ceiling: Duration,
    pub fast_interval: Duration,
    pub rise: u32,
    pub fall: u32,
    /// 0: latency steps are not confirmed.
    pub step_factor: f64,
}

impl PacingSettings {
    pub fn new(prober: &ProberConfig, step_factor: f64) -> Self {
        PacingSettings {
            adaptive: prober.adaptive_budget,
            floor: prober.budget_floor,
            ceiling: prober.response_timeout,
            fast_interval: prober.fast_interval,
            rise: prober.rise.max(1),
            fall: prober.fall.max(1),
            step_factor,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.prober, config.ranking.step_factor)
    }

    /// Most probes of one origin in one round (the first and its
    /// confirmations).
    pub fn most_per_round(&self) -> usize {
        self.rise.max(self.fall) as usize
    }
}

/// One origin as this worker paces it.
#[derive(Debug, Clone)]
pub struct Pacing {
    settings: PacingSettings,
    health: Health,
    estimator: BudgetEstimator,
    last_ok: Option<bool>,
    confirmations_left: u32,
    /// Successive successes beyond the step factor, and their direction.
    step_run: u32,
    step_slower: bool,
}

impl Pacing {
    pub fn new(settings: PacingSettings) -> Self {
        Pacing {
            settings,
            health: Health::default(),
            estimator: BudgetEstimator::default(),
            last_ok: None,
            confirmations_left: 0,
            step_run: 0,
            step_slower: false,
        }
    }

    /// Whether this worker holds the origin up (rise/fall over its own
    /// probes; the ranking's verdict is the region's quorum).
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// The budget of the next probe as a bound on the whole attempt, or
    /// `None` for the fixed `connect_timeout` and `response_timeout`:
    /// adaptive pacing off, the origin down, or too few successes seen.
    pub fn budget(&self) -> Option<Duration> {
        let s = &self.settings;
        if !s.adaptive || !self.health.is_up() {
            return None;
        }
        self.estimator.smoothed()?;
        // An origin slow enough for its budget to reach the ceiling keeps
        // the fixed budgets (connect and response apart, up to their sum):
        // adaptive budgets only ever tighten them.
        let budget = self.estimator.budget(s.floor, s.ceiling);
        (budget < s.ceiling).then_some(budget)
    }

    /// The smoothed latency of successful probes, once known.
    pub fn smoothed(&self) -> Option<Duration> {
        self.estimator.smoothed()
    }

    /// Records one probe that took `took`, the `probes`-th of this origin
    /// in this round. Returns when to start a confirming re-probe, counted
    /// from now, or `None` when the round is done with this origin.
    pub fn record(&mut self, outcome: &Outcome, took: Duration, probes: usize) -> Option<Duration> {
        let s = self.settings;
        let ok = outcome.is_ok();
        let mut changed = self.last_ok.is_some_and(|last| last != ok);
        self.last_ok = Some(ok);
        let mut step_needs = None;
        match outcome {
            Outcome::Ok(timings) => {
                // The whole probe, as the budget counts it and the
                // estimator learns it.
                let latency = timings.total;
                if s.adaptive && self.estimator.is_step(latency, s.step_factor) {
                    let slower = latency > self.estimator.smoothed().unwrap_or_default();
                    if self.step_run == 0 || self.step_slower != slower {
                        self.step_run = 0;
                        changed = true;
                    }
                    self.step_slower = slower;
                    self.step_run += 1;
                    // Never one sample: a lone outlier is not a step.
                    let needed = if slower { s.fall } else { s.rise }.max(2);
                    if self.step_run >= needed {
                        // Confirmed: the old latency says nothing any more.
                        self.estimator.restart(timings.total);
                        self.step_run = 0;
                    } else {
                        // Held apart until confirmed, as the ranking does:
                        // a lone outlier moves neither.
                        step_needs = Some(needed);
                    }
                } else {
                    self.step_run = 0;
                    self.estimator.observe(timings.total);
                }
            }
            Outcome::Failed(_) => self.step_run = 0,
        }
        if self.health.observe(ok, s.rise, s.fall) && !ok {
            // Down: its old latency says nothing now. The successes that
            // bring it back up start the new estimate (full budgets until
            // then).
            self.estimator.reset();
            self.step_run = 0;
        }
        if changed {
            let needed = step_needs.unwrap_or(if ok { s.rise } else { s.fall });
            self.confirmations_left = needed.saturating_sub(1);
        } else {
            self.confirmations_left = self.confirmations_left.saturating_sub(1);
        }
        if self.confirmations_left == 0 || probes >= s.most_per_round() {
            return None;
        }
        Some(if s.adaptive {
            s.fast_interval.saturating_sub(took)
        } else {
            s.fast_interval
        })
    }
}

#[cfg(test)]
mod tests;
