//! Adaptive probe budgets: how long one origin's probe may take before its
//! silence counts as a failure.
//!
//! A fixed `response_timeout` (2 s by default) treats an origin that
//! normally answers in 5 ms and one that answers in 400 ms alike: a hung
//! 5 ms origin is known to have failed only 2 s after each probe starts, so
//! `fall` failures take seconds while a refused connection takes
//! milliseconds. TCP faced the same problem with retransmissions and
//! derives its timeout from each path's own smoothed round-trip time and
//! its variation (RFC 6298). A probe budget is derived the same way, from
//! this worker's recent successful probes of this origin:
//!
//! ```text
//! srtt   <- 7/8 srtt   + 1/8 latency
//! rttvar <- 3/4 rttvar + 1/4 |srtt - latency|
//! budget  = clamp(max(srtt + 4 rttvar, 2 srtt), floor, ceiling)
//! ```
//!
//! `2 srtt` keeps a steady distant origin (250 ms ± 30 %) well inside its
//! budget even when its variation happens to be small for a while; the
//! floor (`prober.budget_floor`, 150 ms by default) keeps a near origin's
//! ordinary hiccups (a 50 ms answer from a 5 ms origin) from counting as
//! failures; the ceiling is `response_timeout`. Until [`MIN_SAMPLES`]
//! successes are seen, and while the origin is down, the budget is the
//! ceiling: an origin that is merely slower than it was comes back up at its
//! new latency after `rise` probes, and the estimate starts from those.
//! Probes that fail do not feed the estimate (Karn's rule: a timeout says
//! nothing about the latency, only that it is above the budget).
//!
//! A probe cut by its budget is a timeout failure whose `after` is the
//! budget: the age of the probe when it was cut is a lower bound on the
//! origin's latency now, and the ranking uses it as such.

use std::time::Duration;

/// Successes seen before the budget adapts (before, it is the ceiling).
pub const MIN_SAMPLES: u32 = 2;

/// One worker's latency estimate of one origin. Pure state: no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetEstimator {
    /// Smoothed latency, ms.
    srtt: f64,
    /// Smoothed mean deviation, ms.
    rttvar: f64,
    samples: u32,
}

impl BudgetEstimator {
    /// Feeds one successful probe's duration.
    pub fn observe(&mut self, latency: Duration) {
        let x = latency.as_secs_f64() * 1000.0;
        if !x.is_finite() {
            return;
        }
        if self.samples == 0 {
            self.srtt = x;
            self.rttvar = x / 2.0;
        } else {
            self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - x).abs();
            self.srtt = 0.875 * self.srtt + 0.125 * x;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Forgets everything: the next successes start a new estimate (after
    /// the origin was down, its old latency says nothing).
    pub fn reset(&mut self) {
        *self = BudgetEstimator::default();
    }

    /// Starts over from one latency, as if [`MIN_SAMPLES`] probes had seen
    /// it (after a confirmed latency step: the budget adapts at once, with
    /// room of half the latency either way).
    pub fn restart(&mut self, latency: Duration) {
        let x = latency.as_secs_f64() * 1000.0;
        *self = BudgetEstimator {
            srtt: x,
            rttvar: x / 2.0,
            samples: MIN_SAMPLES,
        };
    }

    /// The smoothed latency, once [`MIN_SAMPLES`] successes are seen.
    pub fn smoothed(&self) -> Option<Duration> {
        (self.samples >= MIN_SAMPLES).then(|| Duration::from_secs_f64(self.srtt / 1000.0))
    }

    /// The budget of the next probe, within `[floor, ceiling]`; the ceiling
    /// until the estimate has [`MIN_SAMPLES`] successes. A floor above the
    /// ceiling (rejected by config validation) yields the ceiling.
    pub fn budget(&self, floor: Duration, ceiling: Duration) -> Duration {
        if self.samples < MIN_SAMPLES {
            return ceiling;
        }
        let ms = (self.srtt + 4.0 * self.rttvar).max(2.0 * self.srtt);
        let adaptive = if ms.is_finite() && ms >= 0.0 {
            Duration::from_secs_f64((ms / 1000.0).min(ceiling.as_secs_f64()))
        } else {
            ceiling
        };
        adaptive.max(floor).min(ceiling)
    }

    /// Whether `latency` differs from the smoothed latency by at least
    /// `factor` (either way): a possible latency step, worth confirming
    /// with re-probes as a changed result is. Never true before the
    /// estimate is ready, or for a factor of 0 (step following off).
    pub fn is_step(&self, latency: Duration, factor: f64) -> bool {
        let Some(srtt) = self.smoothed() else {
            return false;
        };
        is_step(srtt.as_secs_f64(), latency.as_secs_f64(), factor)
    }
}

/// Whether `x` is at least `factor` times `reference`, or at most
/// `reference / factor`. False for a factor not above 1.
pub fn is_step(reference: f64, x: f64, factor: f64) -> bool {
    let usable = factor.is_finite() && factor > 1.0 && reference.is_finite() && reference > 0.0;
    if !usable || !x.is_finite() {
        return false;
    }
    x >= reference * factor || x <= reference / factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);
    const FLOOR: Duration = Duration::from_millis(150);
    const CEILING: Duration = Duration::from_secs(2);

    #[test]
    fn the_ceiling_until_enough_samples() {
        let mut e = BudgetEstimator::default();
        assert_eq!(e.budget(FLOOR, CEILING), CEILING);
        e.observe(5 * MS);
        assert_eq!(e.budget(FLOOR, CEILING), CEILING);
        e.observe(5 * MS);
        assert_eq!(e.budget(FLOOR, CEILING), FLOOR);
        e.reset();
        assert_eq!(e.budget(FLOOR, CEILING), CEILING);
    }

    #[test]
    fn a_distant_origin_gets_a_budget_above_its_latency() {
        let mut e = BudgetEstimator::default();
        for _ in 0..50 {
            e.observe(250 * MS);
        }
        // Steady 250 ms: no variation left, 2 × srtt holds.
        let b = e.budget(FLOOR, CEILING);
        assert!(b >= 499 * MS && b <= 501 * MS, "{b:?}");
    }

    #[test]
    fn the_budget_never_leaves_its_bounds() {
        let mut e = BudgetEstimator::default();
        for _ in 0..10 {
            e.observe(Duration::from_secs(30));
        }
        assert_eq!(e.budget(FLOOR, CEILING), CEILING);
        // A contradictory floor (above the ceiling) gives the ceiling.
        assert_eq!(e.budget(3 * CEILING, CEILING), CEILING);
    }

    #[test]
    fn steps_are_told_from_jitter() {
        let mut e = BudgetEstimator::default();
        for _ in 0..10 {
            e.observe(10 * MS);
        }
        assert!(!e.is_step(13 * MS, 2.5));
        assert!(!e.is_step(7 * MS, 2.5));
        assert!(e.is_step(50 * MS, 2.5));
        assert!(e.is_step(2 * MS, 2.5));
        assert!(!e.is_step(50 * MS, 0.0), "factor 0: step following off");
    }

    proptest! {
        /// An origin whose answers vary by ±30 % around any mean stays
        /// within its budget: the adaptive budget never marks it down.
        #[test]
        fn jitter_of_30_percent_stays_within_the_budget(
            mean_ms in 1.0f64..5000.0,
            jitter in prop::collection::vec(-0.3f64..0.3, 10..300),
        ) {
            let mut e = BudgetEstimator::default();
            for j in &jitter {
                let latency = Duration::from_secs_f64(mean_ms * (1.0 + j) / 1000.0);
                // At the ceiling the prober keeps the fixed budgets
                // (`Pacing::budget`), which allow connect plus response.
                let budget = e.budget(FLOOR, CEILING);
                prop_assert!(latency < budget || budget == CEILING,
                    "{latency:?} over its budget {budget:?} (mean {mean_ms} ms)");
                e.observe(latency);
            }
        }
    }
}
