//! How samples become a ranking: the window, the decay and the switching
//! margins (the engine is `crate::ranking`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{fmt_duration, Validator};

/// `window`: [1s, 1day] (and at least 2 × `prober.interval`, checked by
/// `Config::validate`).
const WINDOW_MIN: Duration = Duration::from_secs(1);
const WINDOW_MAX: Duration = Duration::from_secs(86_400);
/// `half_life`: [100ms, 1h] and at most `window`.
const HALF_LIFE_MIN: Duration = Duration::from_millis(100);
const HALF_LIFE_MAX: Duration = Duration::from_secs(3_600);
/// `switch_margin_absolute`: [0s, 10s].
const MARGIN_MAX: Duration = Duration::from_secs(10);

/// How samples become a ranking. See [`crate::ranking`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingConfig {
    /// Samples older than this are ignored. Default: 60s; range [1s, 1day],
    /// and at least 2 × `prober.interval` (so a window always holds two
    /// rounds).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A sample's weight in the smoothed latency halves every this much
    /// time, so an origin that recovers is seen to recover. Default: 10s;
    /// range [100ms, 1h], and at most `window` (a longer half-life never
    /// decays within the window).
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// The top origin changes only if the challenger's score is better by
    /// more than this fraction of the incumbent's... Default: 0.10.
    pub switch_margin_relative: f64,
    /// ...and by more than this much. Default: 5ms; range [0s, 10s].
    #[serde(with = "humantime_serde")]
    pub switch_margin_absolute: Duration,
    /// A latency step: `fall` successive probes of an origin at least this
    /// many times slower than its smoothed latency (or `rise` probes this
    /// many times faster) replace the smoothed latency at once, so a
    /// sustained step changes the ranking within one round or a few, while
    /// jitter (even ±50 %) and single outliers never do. 0 turns step
    /// following off (the latency then only decays, by `half_life`).
    /// Default: 2.5; 0 or in [1.5, 100].
    pub step_factor: f64,
    /// An up origin whose success ratio is below this is `degraded` and
    /// ranked after healthy ones. Default: 0.9.
    pub degraded_below: f64,
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            window: Duration::from_secs(60),
            half_life: Duration::from_secs(10),
            switch_margin_relative: 0.10,
            switch_margin_absolute: Duration::from_millis(5),
            step_factor: 2.5,
            degraded_below: 0.9,
        }
    }
}

impl RankingConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        let r = self;
        let window_ok = v.duration("ranking.window", r.window, WINDOW_MIN, WINDOW_MAX);
        if v.duration(
            "ranking.half_life",
            r.half_life,
            HALF_LIFE_MIN,
            HALF_LIFE_MAX,
        ) && window_ok
            && r.half_life > r.window
        {
            v.fail(
                "ranking.half_life",
                format!(
                    "{} is above ranking.window ({})",
                    fmt_duration(r.half_life),
                    fmt_duration(r.window)
                ),
            );
        }
        v.duration(
            "ranking.switch_margin_absolute",
            r.switch_margin_absolute,
            Duration::ZERO,
            MARGIN_MAX,
        );
        if !(r.switch_margin_relative.is_finite() && (0.0..1.0).contains(&r.switch_margin_relative))
        {
            v.fail(
                "ranking.switch_margin_relative",
                format!("{} is not in [0, 1)", r.switch_margin_relative),
            );
        }
        if !(r.step_factor == 0.0 || (1.5..=100.0).contains(&r.step_factor)) {
            v.fail(
                "ranking.step_factor",
                format!(
                    "{} is neither 0 (off) nor in [1.5, 100]: below 1.5, ordinary jitter would look like a step",
                    r.step_factor
                ),
            );
        }
        if !(r.degraded_below.is_finite() && (0.0..=1.0).contains(&r.degraded_below)) {
            v.fail(
                "ranking.degraded_below",
                format!("{} is not in [0, 1]", r.degraded_below),
            );
        }
    }
}
