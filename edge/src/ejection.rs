//! Passive ejection: an origin that answers this container with
//! `consecutive_5xx` 5xx responses in a row, or (when `error_ratio` is set)
//! with at least that fraction of 5xx among at least `error_min_requests`
//! answers within the last `error_window`, is not chosen again until its
//! ejection expires, without waiting for the probers.
//!
//! The model is Envoy's outlier detection
//! (<https://www.envoyproxy.io/docs/envoy/v1.10.0/intro/arch_overview/outlier>):
//! - a non-5xx answer resets the origin's count;
//! - the error ratio is Envoy's failure-percentage detector over a sliding
//!   window rather than Envoy's fixed interval: the window is
//!   [`WINDOW_SLOTS`] slots of `error_window / WINDOW_SLOTS` each, so an
//!   origin is judged on the answers of the last `error_window` (give or
//!   take one slot) at every 5xx, not once per interval. A run of 5xx too
//!   short for `consecutive_5xx` but frequent (an origin failing one
//!   request in two) is what it catches. An ejection empties the window:
//!   an origin coming back is judged on its answers after it;
//! - the n-th ejection in a row lasts `base_ejection_time × n`, capped at
//!   `max_ejection_time`. Envoy lowers the multiplier again while a host
//!   stays healthy; here it drops by one for every `base_ejection_time` the
//!   origin spent un-ejected since its last ejection ended, worked out when
//!   it is next ejected (no timer);
//! - `max_ejection_percent`, Envoy's documented rule: "If no hosts have been
//!   ejected, Envoy will eject the host immediately. Otherwise, it checks to
//!   make sure the number of ejected hosts is below the allowed threshold."
//!   We count the new ejection in: a further origin is ejected only if the
//!   ejected origins, it included, stay within the percentage. So the first
//!   ejection is always allowed (even at 0 %), and the percentage is never
//!   exceeded by a second one;
//! - never the last origin: an ejection that would leave the pool with no
//!   origin is refused, and the router ignores the
//!   ejections when they would leave no origin the ranking holds usable.
//!
//! State is per container (Lambda@Edge keeps no shared memory), kept only
//! for the (pool, origin) pairs of the bundled config, so its size is fixed
//! whatever the events say. Pure over (events, now): time is tokio's
//! [`Instant`], so tests run on paused time.
//!
//! What CloudFront tells the origin-response trigger. The CloudFront
//! developer guide ("CloudFront events that can trigger a Lambda@Edge
//! function",
//! <https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/lambda-cloudfront-trigger-events.html>)
//! says the origin-response function "executes even if an error is returned
//! from the origin", and does not run when the requested object is in the
//! cache and not expired, or when an origin-request function generated the
//! response (the event's shape, `request.origin` included, is checked
//! against "Lambda@Edge event structure", Response events, in
//! `tests/fixtures/cloudfront/origin-response.json`). "How
//! CloudFront processes HTTP 4xx and 5xx status codes from your origin"
//! (<https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/HTTPStatusCodes.html>)
//! says an origin that does not respond makes the request time out, which
//! "is considered an HTTP 5xx error from the origin". Whether CloudFront
//! runs the origin-response trigger for the 502/504 it generates itself
//! (connection refused, TLS failure, origin read timeout) is not stated in
//! the pages we could read: we cannot confirm it either way. So an origin
//! that cannot be reached at all may never be counted here; it is left to
//! the probers (and to the edge's own race when no ranking is fresh). An
//! origin that answers with 5xx is counted. "Restrictions on Lambda@Edge"
//! adds one case where none of this runs: CloudFront resolves the
//! distribution's configured origin name before the origin-request
//! function, and answers 502 without calling it when that name does not
//! resolve (deploy/README.md says to configure a name that always does).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use origin_router::config::{LatencyMode, OutlierConfig, PoolConfig};
use tokio::time::Instant;

/// How many slots the error-ratio window is cut into.
pub const WINDOW_SLOTS: usize = 10;

/// The answers and 5xx of the last `error_window`, in [`WINDOW_SLOTS`]
/// slots: fixed size whatever the traffic.
#[derive(Debug, Clone, Default)]
struct Window {
    /// Where slot numbers count from: the first answer counted.
    epoch: Option<Instant>,
    /// Per slot: its number (time since `epoch` / slot length), answers,
    /// 5xx. A slot whose number is too old is stale and counts nothing.
    slots: [(u64, u32, u32); WINDOW_SLOTS],
}

impl Window {
    /// The slot `now` falls in, counted from `epoch`.
    fn slot_number(epoch: Instant, now: Instant, slot: Duration) -> u64 {
        let n = now.saturating_duration_since(epoch).as_nanos() / slot.as_nanos().max(1);
        n.min(u64::MAX as u128) as u64
    }

    /// Counts one answer at `now`.
    fn add(&mut self, now: Instant, slot: Duration, error: bool) {
        let epoch = *self.epoch.get_or_insert(now);
        let n = Self::slot_number(epoch, now, slot);
        let s = &mut self.slots[(n % WINDOW_SLOTS as u64) as usize];
        if s.0 != n {
            *s = (n, 0, 0);
        }
        s.1 = s.1.saturating_add(1);
        s.2 = s.2.saturating_add(error as u32);
    }

    /// (answers, 5xx) of the slots within the window ending at `now`.
    fn totals(&self, now: Instant, slot: Duration) -> (u32, u32) {
        let Some(epoch) = self.epoch else {
            return (0, 0);
        };
        let n = Self::slot_number(epoch, now, slot);
        let oldest = n.saturating_sub(WINDOW_SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|(k, _, _)| (oldest..=n).contains(k))
            .fold((0u32, 0u32), |(a, e), (_, sa, se)| {
                (a.saturating_add(*sa), e.saturating_add(*se))
            })
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

/// One (pool, origin) pair's outlier state.
#[derive(Debug, Clone, Default)]
struct Tracked {
    id: String,
    consecutive_5xx: u32,
    /// Ejections in a row (the multiplier of `base_ejection_time`).
    times_ejected: u32,
    ejected_until: Option<Instant>,
    /// Answers of the last `error_window` (only when `error_ratio` is on).
    window: Window,
    /// Timed answers of the last `latency_window`, slow ones counted as
    /// errors (only when `latency` is not off).
    latency: Window,
    /// The decayed mean of the timed answers, ms, and when it was last
    /// moved: the estimate the reports carry (see [`crate::traffic`]).
    latency_mean: Option<(f64, Instant)>,
}

impl Tracked {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

#[derive(Debug, Clone)]
struct PoolOutliers {
    config: OutlierConfig,
    origins: Vec<Tracked>,
}

/// What one answer did to an origin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Not a 5xx: the count is back to zero.
    Reset,
    /// A 5xx, counted; not yet enough to eject.
    Counted { consecutive_5xx: u32 },
    /// This answer ejected the origin for `duration` (its `times`-th
    /// ejection in a row), by the detector `trigger`.
    Ejected {
        duration: Duration,
        times: u32,
        trigger: Trigger,
    },
    /// Enough 5xx, but ejecting would break a limit: it stays in (the next
    /// 5xx tries again).
    Refused(Refusal),
    /// Already ejected, or ejection is off for the pool: nothing changes.
    Unchanged,
    /// A timed answer, counted: `slow` when it was above the bar.
    Timed { slow: bool },
}

/// Which detector ejected an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `consecutive_5xx` 5xx in a row.
    Consecutive5xx,
    /// `error_ratio` of the answers within `error_window` were 5xx.
    ErrorRatio,
    /// Most of the answers within `latency_window` were slower than the
    /// next usable origin's ranked latency by the switch margin (a
    /// demotion: see [`crate::traffic`]).
    Latency,
}

impl Trigger {
    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Consecutive5xx => "consecutive_5xx",
            Trigger::ErrorRatio => "error_ratio",
            Trigger::Latency => "latency",
        }
    }
}

/// Why an ejection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is the last origin of the pool not ejected.
    LastOrigin,
    /// It would take the pool past `max_ejection_percent`.
    MaxPercent,
}

/// Every configured (pool, origin) pair's outlier state in this container.
#[derive(Debug, Clone, Default)]
pub struct Ejections {
    pools: HashMap<String, PoolOutliers>,
}

impl Ejections {
    /// Tracks exactly the pools and origins of the bundled config.
    pub fn new(pools: &BTreeMap<String, PoolConfig>) -> Ejections {
        let pools = pools
            .iter()
            .map(|(name, pool)| (name.clone(), PoolOutliers::new(pool)))
            .collect();
        Ejections { pools }
    }

    /// Records one answer of `origin` (of `pool`) with HTTP `status` at
    /// `now`. `None` when the pair is not in the config (nothing is kept).
    pub fn record(
        &mut self,
        pool: &str,
        origin: &str,
        status: u16,
        now: Instant,
    ) -> Option<Recorded> {
        let p = self.pools.get_mut(pool)?;
        let index = p.origins.iter().position(|o| o.id == origin)?;
        Some(p.record(index, status, now))
    }

    /// Records one timed answer of `origin` (of `pool`): `latency`, judged
    /// slow against `bar` (none: no other usable origin to compare with,
    /// so nothing is slow), at `now`. `None` when the pair is not in the
    /// config.
    pub fn record_latency(
        &mut self,
        pool: &str,
        origin: &str,
        latency: Duration,
        bar: Option<Duration>,
        now: Instant,
    ) -> Option<Recorded> {
        let p = self.pools.get_mut(pool)?;
        let index = p.origins.iter().position(|o| o.id == origin)?;
        Some(p.record_latency(index, latency, bar, now))
    }

    /// The decayed mean latency of `origin`'s timed answers in this
    /// container, ms, if it has any.
    pub fn observed_ms(&self, pool: &str, origin: &str) -> Option<f64> {
        let p = self.pools.get(pool)?;
        p.origins
            .iter()
            .find(|o| o.id == origin)?
            .latency_mean
            .map(|(ms, _)| ms)
    }

    /// The origins of `pool` ejected at `now`, in config order.
    pub fn ejected(&self, pool: &str, now: Instant) -> Vec<&str> {
        self.pools
            .get(pool)
            .map(|p| {
                p.origins
                    .iter()
                    .filter(|o| o.is_ejected(now))
                    .map(|o| o.id.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When `origin`'s ejection ends, if it is ejected at `now`.
    pub fn ejected_until(&self, pool: &str, origin: &str, now: Instant) -> Option<Instant> {
        let p = self.pools.get(pool)?;
        let o = p.origins.iter().find(|o| o.id == origin)?;
        o.ejected_until.filter(|_| o.is_ejected(now))
    }
}

impl PoolOutliers {
    fn new(pool: &PoolConfig) -> PoolOutliers {
        PoolOutliers {
            config: pool.outlier.clone(),
            origins: pool
                .origins
                .iter()
                .map(|o| Tracked {
                    id: o.id.clone(),
                    ..Tracked::default()
                })
                .collect(),
        }
    }

    fn record(&mut self, index: usize, status: u16, now: Instant) -> Recorded {
        let c = &self.config;
        if !c.enabled() {
            return Recorded::Unchanged;
        }
        if self.origins[index].is_ejected(now) {
            // Answers to requests sent before the ejection still arrive;
            // they neither extend nor end it.
            return Recorded::Unchanged;
        }
        let is_5xx = (500..=599).contains(&status);
        let slot = c.error_window / WINDOW_SLOTS as u32;
        let ratio_on = c.error_ratio > 0.0;
        let o = &mut self.origins[index];
        if ratio_on {
            o.window.add(now, slot, is_5xx);
        }
        if !is_5xx {
            o.consecutive_5xx = 0;
            return Recorded::Reset;
        }
        let count = o.consecutive_5xx.saturating_add(1);
        o.consecutive_5xx = count;
        let trigger = if c.consecutive_5xx > 0 && count >= c.consecutive_5xx {
            Trigger::Consecutive5xx
        } else if ratio_on && {
            let (answers, errors) = o.window.totals(now, slot);
            // A quotient, not `errors >= ratio × answers`: the product
            // rounds (0.28 × 25 is 7.000000000000001), the quotient of two
            // small integers is the decimal the operator wrote.
            answers >= c.error_min_requests
                && f64::from(errors) / f64::from(answers) >= c.error_ratio
        } {
            Trigger::ErrorRatio
        } else {
            return Recorded::Counted {
                consecutive_5xx: count,
            };
        };
        self.eject(index, trigger, now)
    }

    /// Times one answer of origin `index` (see [`Ejections::record_latency`]).
    fn record_latency(
        &mut self,
        index: usize,
        latency: Duration,
        bar: Option<Duration>,
        now: Instant,
    ) -> Recorded {
        let c = &self.config;
        if c.latency == LatencyMode::Off || self.origins[index].is_ejected(now) {
            return Recorded::Unchanged;
        }
        let (slot, min, demote) = (
            c.latency_window / WINDOW_SLOTS as u32,
            c.latency_min_requests,
            c.latency == LatencyMode::Demote,
        );
        let tau = c.latency_window.as_secs_f64() / 3.0;
        let o = &mut self.origins[index];
        let ms = latency.as_secs_f64() * 1000.0;
        o.latency_mean = Some(match o.latency_mean {
            // Decayed by the time since the last answer, not per answer,
            // so the estimate means the same at any request rate.
            Some((mean, at)) => {
                let w = (-(now.saturating_duration_since(at).as_secs_f64()) / tau).exp();
                (w * mean + (1.0 - w) * ms, now)
            }
            None => (ms, now),
        });
        let slow = bar.is_some_and(|b| latency > b);
        o.latency.add(now, slot, slow);
        if !(demote && slow) {
            return Recorded::Timed { slow };
        }
        let (answers, slow_answers) = o.latency.totals(now, slot);
        // A strict majority: the window's median is above the bar.
        if answers < min || slow_answers * 2 <= answers {
            return Recorded::Timed { slow };
        }
        self.eject(index, Trigger::Latency, now)
    }

    /// Ejects origin `index` by `trigger`, within the limits.
    fn eject(&mut self, index: usize, trigger: Trigger, now: Instant) -> Recorded {
        let c = &self.config;
        if let Some(refusal) = self.refusal(now) {
            return Recorded::Refused(refusal);
        }
        let (base, max) = (c.base_ejection_time, c.max_ejection_time);
        let o = &mut self.origins[index];
        // Envoy lowers the multiplier while the host stays healthy: one
        // step per base_ejection_time since the last ejection ended.
        if let Some(ended) = o.ejected_until {
            let healthy = now.saturating_duration_since(ended);
            let steps = (healthy.as_nanos() / base.as_nanos().max(1)).min(u32::MAX as u128) as u32;
            o.times_ejected = o.times_ejected.saturating_sub(steps);
        }
        o.times_ejected = o.times_ejected.saturating_add(1);
        let duration = ejection_time(base, max, o.times_ejected);
        o.ejected_until = Some(now + duration);
        o.consecutive_5xx = 0;
        // Judged afresh when it is back.
        o.window.clear();
        o.latency.clear();
        Recorded::Ejected {
            duration,
            times: o.times_ejected,
            trigger,
        }
    }

    /// Why one more origin may not be ejected now, if it may not.
    fn refusal(&self, now: Instant) -> Option<Refusal> {
        let total = self.origins.len();
        let ejected = self.origins.iter().filter(|o| o.is_ejected(now)).count();
        if ejected + 1 >= total {
            return Some(Refusal::LastOrigin);
        }
        if ejected > 0 && (ejected + 1) * 100 > total * self.config.max_ejection_percent as usize {
            return Some(Refusal::MaxPercent);
        }
        None
    }
}

/// The length of the `times`-th ejection in a row: `base × times`, capped
/// at `max` (no overflow whatever `times` is).
pub fn ejection_time(base: Duration, max: Duration, times: u32) -> Duration {
    base.checked_mul(times.max(1)).unwrap_or(max).min(max)
}

/// Parses an origin-response `status` ("503"): a three-digit code in
/// 100-599, or `None`.
pub fn parse_status(text: &str) -> Option<u16> {
    if text.len() != 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|s| (100..=599).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::config::Config;
    use proptest::prelude::*;

    fn config(origins: usize, consecutive: u32, percent: u32) -> Config {
        let mut text = format!(
            "[pools.web]\n[pools.web.outlier]\nconsecutive_5xx = {consecutive}\nbase_ejection_time = \"30s\"\nmax_ejection_time = \"300s\"\nmax_ejection_percent = {percent}\n"
        );
        for i in 0..origins {
            text.push_str(&format!(
                "[[pools.web.origins]]\nid = \"o{i}\"\nhost = \"o{i}.example.net\"\n"
            ));
        }
        Config::from_toml(&text, "t.toml").unwrap()
    }

    /// `origins` origins, consecutive 5xx off, the error ratio on.
    fn ratio_config(origins: usize, ratio: f64, window_s: u64, min: u32) -> Config {
        let mut c = config(origins, 0, 100);
        let o = &mut c.pools.get_mut("web").unwrap().outlier;
        o.error_ratio = ratio;
        o.error_window = Duration::from_secs(window_s);
        o.error_min_requests = min;
        c
    }

    /// `origins` origins, 5xx detectors off, latency demotion on over a
    /// 10 s window of at least `min` answers.
    fn latency_config(origins: usize, min: u32) -> Config {
        let mut c = config(origins, 0, 100);
        let o = &mut c.pools.get_mut("web").unwrap().outlier;
        o.latency = LatencyMode::Demote;
        o.latency_window = Duration::from_secs(10);
        o.latency_min_requests = min;
        c
    }

    const BAR: Option<Duration> = Some(Duration::from_millis(72));

    #[test]
    fn a_majority_of_slow_answers_demotes_and_the_ejection_ends() {
        let mut e = Ejections::new(&latency_config(2, 10).pools);
        let start = Instant::now();
        let slow = Duration::from_millis(400);
        for i in 0..9 {
            let at = start + Duration::from_millis(100 * i);
            assert_eq!(
                e.record_latency("web", "o0", slow, BAR, at),
                Some(Recorded::Timed { slow: true }),
                "answer {i}"
            );
        }
        let tenth = start + Duration::from_millis(900);
        let Some(Recorded::Ejected {
            trigger, duration, ..
        }) = e.record_latency("web", "o0", slow, BAR, tenth)
        else {
            panic!("not demoted at the tenth slow answer");
        };
        assert_eq!(trigger, Trigger::Latency);
        assert_eq!(e.ejected("web", tenth), ["o0"]);
        // Late answers change nothing while it is out; it is back after
        // base_ejection_time, judged afresh.
        assert_eq!(
            e.record_latency("web", "o0", slow, BAR, tenth),
            Some(Recorded::Unchanged)
        );
        let back = tenth + duration;
        assert!(e.ejected("web", back).is_empty());
        assert_eq!(
            e.record_latency("web", "o0", slow, BAR, back),
            Some(Recorded::Timed { slow: true })
        );
        assert!(e
            .observed_ms("web", "o0")
            .is_some_and(|ms| (399.0..=401.0).contains(&ms)));
    }

    #[test]
    fn half_slow_is_no_majority_and_observe_only_never_demotes() {
        let mut e = Ejections::new(&latency_config(2, 10).pools);
        let start = Instant::now();
        for i in 0..40u64 {
            // Fast first: never more slow answers than fast ones.
            let latency = Duration::from_millis(if i % 2 == 1 { 400 } else { 50 });
            let r = e.record_latency(
                "web",
                "o0",
                latency,
                BAR,
                start + Duration::from_millis(50 * i),
            );
            assert!(matches!(r, Some(Recorded::Timed { .. })), "{i}: {r:?}");
        }
        let mut c = latency_config(2, 1);
        c.pools.get_mut("web").unwrap().outlier.latency = LatencyMode::Observe;
        let mut e = Ejections::new(&c.pools);
        for i in 0..40u64 {
            let r = e.record_latency(
                "web",
                "o0",
                Duration::from_secs(2),
                BAR,
                start + Duration::from_millis(i),
            );
            assert_eq!(r, Some(Recorded::Timed { slow: true }));
        }
        // Without a bar (no other usable origin ranked) nothing is slow.
        let mut e = Ejections::new(&latency_config(2, 1).pools);
        assert_eq!(
            e.record_latency("web", "o0", Duration::from_secs(2), None, start),
            Some(Recorded::Timed { slow: false })
        );
        // Off: nothing is kept.
        let mut c = latency_config(2, 1);
        c.pools.get_mut("web").unwrap().outlier.latency = LatencyMode::Off;
        let mut e = Ejections::new(&c.pools);
        assert_eq!(
            e.record_latency("web", "o0", Duration::from_secs(2), BAR, start),
            Some(Recorded::Unchanged)
        );
        assert_eq!(e.observed_ms("web", "o0"), None);
    }

    #[test]
    fn demotion_keeps_the_ejection_limits() {
        let start = Instant::now();
        let slow = Duration::from_secs(1);
        // Never the last origin.
        let mut e = Ejections::new(&latency_config(2, 1).pools);
        assert!(matches!(
            e.record_latency("web", "o0", slow, BAR, start),
            Some(Recorded::Ejected {
                trigger: Trigger::Latency,
                ..
            })
        ));
        assert_eq!(
            e.record_latency("web", "o1", slow, BAR, start),
            Some(Recorded::Refused(Refusal::LastOrigin))
        );
        // max_ejection_percent counts demotions and ejections together.
        let mut c = latency_config(10, 1);
        c.pools.get_mut("web").unwrap().outlier.max_ejection_percent = 10;
        c.pools.get_mut("web").unwrap().outlier.consecutive_5xx = 1;
        let mut e = Ejections::new(&c.pools);
        assert!(matches!(
            e.record("web", "o0", 503, start),
            Some(Recorded::Ejected { .. })
        ));
        assert_eq!(
            e.record_latency("web", "o1", slow, BAR, start),
            Some(Recorded::Refused(Refusal::MaxPercent))
        );
    }

    proptest! {
        /// A healthy origin with a burst of a few slow answers (1 % of its
        /// answers ten times slower than the bar) is never demoted,
        /// whatever the rate and wherever the bursts fall, with
        /// `latency_min_requests` of 3 or more (the default is 10): a
        /// window holds that many answers before it can judge, and then a
        /// majority must be slow. (With 1 or 2, one slow answer alone in a
        /// quiet window is a majority: the config's docs say so.)
        #[test]
        fn one_percent_of_slow_answers_never_demotes(
            gaps_ms in proptest::collection::vec(1u64..400, 200..2000),
            slow_every in 90usize..110,
            offset in 0usize..100,
            min in 3u32..40,
        ) {
            let mut e = Ejections::new(&latency_config(3, min).pools);
            let mut at = Instant::now();
            for (i, gap) in gaps_ms.iter().enumerate() {
                at += Duration::from_millis(*gap);
                let latency = if (i + offset) % slow_every == 0 {
                    Duration::from_millis(720)
                } else {
                    Duration::from_millis(60)
                };
                let r = e.record_latency("web", "o0", latency, BAR, at);
                prop_assert!(matches!(r, Some(Recorded::Timed { .. })), "answer {i}: {r:?}");
            }
        }
    }

    fn fail(e: &mut Ejections, origin: &str, times: u32, now: Instant) -> Option<Recorded> {
        let mut last = None;
        for _ in 0..times {
            last = e.record("web", origin, 503, now);
        }
        last
    }

    #[test]
    fn five_5xx_eject_and_a_success_in_between_resets() {
        let c = config(3, 5, 50);
        let mut e = Ejections::new(&c.pools);
        let t0 = Instant::now();
        assert_eq!(
            fail(&mut e, "o0", 4, t0),
            Some(Recorded::Counted { consecutive_5xx: 4 })
        );
        assert_eq!(e.record("web", "o0", 200, t0), Some(Recorded::Reset));
        assert_eq!(
            fail(&mut e, "o0", 4, t0),
            Some(Recorded::Counted { consecutive_5xx: 4 })
        );
        assert!(e.ejected("web", t0).is_empty());
        assert_eq!(
            e.record("web", "o0", 500, t0),
            Some(Recorded::Ejected {
                duration: Duration::from_secs(30),
                times: 1,
                trigger: Trigger::Consecutive5xx,
            })
        );
        assert_eq!(e.ejected("web", t0), ["o0"]);
        // A 404 is the origin answering: not a 5xx.
        assert_eq!(e.record("web", "o1", 404, t0), Some(Recorded::Reset));
        assert_eq!(e.record("web", "o0", 200, t0), Some(Recorded::Unchanged));
        assert_eq!(e.ejected("web", t0 + Duration::from_millis(29_999)), ["o0"]);
        assert!(e.ejected("web", t0 + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn one_answer_in_two_failing_is_ejected_by_the_error_ratio() {
        // A window longer than the ejection: the answers that ejected it
        // would still be in it when it is back.
        let mut e = Ejections::new(&ratio_config(3, 0.5, 60, 10).pools);
        let t0 = Instant::now();
        let mut last = None;
        for i in 0..10u64 {
            let status = if i % 2 == 0 { 200 } else { 503 };
            last = e.record("web", "o0", status, t0 + Duration::from_millis(100 * i));
            if i < 9 {
                assert!(
                    e.ejected("web", t0).is_empty(),
                    "ejected after {} answers",
                    i + 1
                );
            }
        }
        // The 10th answer (5 of 10 failed) ejects; no two 5xx were in a row.
        assert_eq!(
            last,
            Some(Recorded::Ejected {
                duration: Duration::from_secs(30),
                times: 1,
                trigger: Trigger::ErrorRatio,
            })
        );
        assert_eq!(e.ejected("web", t0 + Duration::from_secs(1)), ["o0"]);
        // Back after 30 s, judged afresh: the window was emptied, so one
        // 5xx is one answer of the 10 needed.
        let back = t0 + Duration::from_secs(32);
        assert!(e.ejected("web", back).is_empty());
        assert_eq!(
            e.record("web", "o0", 503, back),
            Some(Recorded::Counted { consecutive_5xx: 1 })
        );
    }

    #[test]
    fn an_exact_ratio_ejects_whatever_the_floating_point_product_says() {
        // 0.28 × 25 = 7.000000000000001 in f64: 7 of 25 must still eject.
        for (ratio, answers, errors) in [
            (0.28, 25u32, 7u32),
            (0.07, 100, 7),
            (0.14, 50, 7),
            (0.56, 25, 14),
            (0.55, 100, 55),
        ] {
            let mut e = Ejections::new(&ratio_config(2, ratio, 10, answers).pools);
            let t0 = Instant::now();
            for _ in 0..answers - errors {
                e.record("web", "o0", 200, t0);
            }
            assert_eq!(
                fail(&mut e, "o0", errors - 1, t0),
                Some(Recorded::Counted {
                    consecutive_5xx: errors - 1
                }),
                "{ratio}: {answers} answers"
            );
            assert!(
                matches!(
                    e.record("web", "o0", 503, t0),
                    Some(Recorded::Ejected {
                        trigger: Trigger::ErrorRatio,
                        ..
                    })
                ),
                "{ratio}: {errors} of {answers}"
            );
        }
    }

    #[test]
    fn the_error_ratio_counts_every_answer_of_its_window_not_only_the_latest() {
        // Ten answers 0.8 s apart (7.2 s in all, inside the 10 s window),
        // every other one a 503: the tenth ejects, counting all ten.
        let mut e = Ejections::new(&ratio_config(2, 0.5, 10, 10).pools);
        let t0 = Instant::now();
        for i in 0..9u64 {
            let status = if i % 2 == 0 { 200 } else { 503 };
            let r = e.record("web", "o0", status, t0 + Duration::from_millis(800 * i));
            assert!(!matches!(r, Some(Recorded::Ejected { .. })), "{i}: {r:?}");
        }
        assert!(matches!(
            e.record("web", "o0", 503, t0 + Duration::from_millis(7_200)),
            Some(Recorded::Ejected {
                trigger: Trigger::ErrorRatio,
                ..
            })
        ));
    }

    #[test]
    fn the_error_ratio_forgets_answers_older_than_its_window_and_counts_successes() {
        let t0 = Instant::now();
        // Nine 5xx, then a long pause: they are older than the window when
        // the tenth comes, so there are too few answers to judge.
        let mut e = Ejections::new(&ratio_config(3, 0.5, 10, 10).pools);
        assert_eq!(
            fail(&mut e, "o1", 9, t0),
            Some(Recorded::Counted { consecutive_5xx: 9 })
        );
        assert_eq!(
            e.record("web", "o1", 503, t0 + Duration::from_secs(11)),
            Some(Recorded::Counted {
                consecutive_5xx: 10
            })
        );
        // Twenty successes dilute ten 5xx below one half...
        let mut e = Ejections::new(&ratio_config(3, 0.5, 10, 10).pools);
        for _ in 0..20 {
            e.record("web", "o2", 200, t0);
        }
        assert_eq!(
            fail(&mut e, "o2", 10, t0),
            Some(Recorded::Counted {
                consecutive_5xx: 10
            })
        );
        // ...and the twentieth 5xx (20 of 40) ejects.
        assert!(matches!(
            fail(&mut e, "o2", 10, t0),
            Some(Recorded::Ejected {
                trigger: Trigger::ErrorRatio,
                ..
            })
        ));
        // With both detectors on, a run of 5xx is named as such.
        let mut c = ratio_config(3, 0.5, 10, 4);
        c.pools.get_mut("web").unwrap().outlier.consecutive_5xx = 4;
        let mut e = Ejections::new(&c.pools);
        assert!(matches!(
            fail(&mut e, "o0", 4, t0),
            Some(Recorded::Ejected {
                trigger: Trigger::Consecutive5xx,
                ..
            })
        ));
    }

    #[test]
    fn ejection_time_grows_with_repeats_caps_and_decays_when_healthy() {
        let c = config(3, 1, 50);
        let mut e = Ejections::new(&c.pools);
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..12 {
            match e.record("web", "o0", 502, now) {
                Some(Recorded::Ejected { duration, .. }) => lengths.push(duration.as_secs()),
                other => panic!("{other:?}"),
            }
            // Fails again the moment it is back.
            now = e.ejected_until("web", "o0", now).unwrap();
        }
        assert_eq!(
            lengths,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        // Healthy for 5 × base: the multiplier drops by 5 (12 → 7, then
        // this ejection makes it 8).
        now += Duration::from_secs(150);
        assert_eq!(
            e.record("web", "o0", 503, now),
            Some(Recorded::Ejected {
                duration: Duration::from_secs(240),
                times: 8,
                trigger: Trigger::Consecutive5xx,
            })
        );
        // Healthy for a long time: back to the base.
        now = e.ejected_until("web", "o0", now).unwrap() + Duration::from_secs(86_400);
        assert_eq!(
            e.record("web", "o0", 503, now),
            Some(Recorded::Ejected {
                duration: Duration::from_secs(30),
                times: 1,
                trigger: Trigger::Consecutive5xx,
            })
        );
        assert_eq!(
            ejection_time(
                Duration::from_secs(86_400),
                Duration::from_secs(86_400),
                u32::MAX
            ),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn never_the_last_origin_and_never_past_the_percent() {
        let t0 = Instant::now();
        // Two origins, 100 %: one may go, never the second.
        let mut e = Ejections::new(&config(2, 1, 100).pools);
        assert!(matches!(
            e.record("web", "o0", 503, t0),
            Some(Recorded::Ejected { .. })
        ));
        assert_eq!(
            e.record("web", "o1", 503, t0),
            Some(Recorded::Refused(Refusal::LastOrigin))
        );
        // A lone origin is never ejected.
        let mut e = Ejections::new(&config(1, 1, 100).pools);
        assert_eq!(
            e.record("web", "o0", 503, t0),
            Some(Recorded::Refused(Refusal::LastOrigin))
        );
        // Ten origins at 10 % (the default): the first always goes, a
        // second would be 20 %.
        let mut e = Ejections::new(&config(10, 1, 10).pools);
        assert!(matches!(
            e.record("web", "o3", 503, t0),
            Some(Recorded::Ejected { .. })
        ));
        assert_eq!(
            e.record("web", "o4", 503, t0),
            Some(Recorded::Refused(Refusal::MaxPercent))
        );
        // 0 % still ejects one, as Envoy does.
        let mut e = Ejections::new(&config(4, 1, 0).pools);
        assert!(matches!(
            e.record("web", "o0", 503, t0),
            Some(Recorded::Ejected { .. })
        ));
        assert_eq!(
            e.record("web", "o1", 503, t0),
            Some(Recorded::Refused(Refusal::MaxPercent))
        );
        // Once the first expires, another may go.
        let later = t0 + Duration::from_secs(30);
        assert!(matches!(
            e.record("web", "o1", 503, later),
            Some(Recorded::Ejected { .. })
        ));
    }

    #[test]
    fn off_unknown_and_bad_statuses() {
        let t0 = Instant::now();
        let mut e = Ejections::new(&config(3, 0, 100).pools);
        assert_eq!(fail(&mut e, "o0", 100, t0), Some(Recorded::Unchanged));
        assert!(e.ejected("web", t0).is_empty());
        assert_eq!(e.record("web", "nope", 503, t0), None);
        assert_eq!(e.record("other", "o0", 503, t0), None);
        assert!(e.ejected("other", t0).is_empty());
        for bad in [
            "", "5", "50x", "5033", "-50", " 503", "600", "099", "+50", "٥٠٣",
        ] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
        assert_eq!(parse_status("503"), Some(503));
        assert_eq!(parse_status("200"), Some(200));
    }

    proptest! {
        /// Whatever the answers and the clock, no ejection leaves the pool
        /// empty, more than max_ejection_percent is ejected only as the
        /// single first ejection, and no ejection outlasts the cap.
        #[test]
        fn limits_hold_for_any_answers(
            origins in 1usize..8,
            percent in 0u32..=100,
            consecutive in 1u32..4,
            steps in proptest::collection::vec((0usize..8, prop_oneof![Just(200u16), Just(404), Just(500), Just(503), Just(599)], 0u64..40_000), 1..300),
        ) {
            let c = config(origins, consecutive, percent);
            let mut e = Ejections::new(&c.pools);
            let mut now = Instant::now();
            for (origin, status, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                let id = format!("o{}", origin % origins);
                if let Some(Recorded::Ejected { duration, .. }) = e.record("web", &id, status, now) {
                    prop_assert!(duration <= Duration::from_secs(300));
                    prop_assert!(duration >= Duration::from_secs(30));
                }
                let ejected = e.ejected("web", now).len();
                prop_assert!(ejected < origins, "{ejected} of {origins} ejected");
                prop_assert!(ejected <= 1 || ejected * 100 <= origins * percent as usize,
                    "{ejected} of {origins} ejected at {percent} %");
            }
        }

        /// The error ratio ejects only on evidence from its window: when it
        /// ejects, the answers of the last `error_window` since the
        /// origin's last ejection (counted exactly, one by one) number at
        /// least `error_min_requests`, and their 5xx at least
        /// `error_ratio × error_min_requests`; and it is always on a 5xx.
        /// Complete, too: at a 5xx, when the answers of the last 9/10 of
        /// the window (which every slot boundary keeps) are at least
        /// `error_min_requests` and meet the ratio, and the older tenth
        /// holds no success to dilute them, it ejects.
        #[test]
        fn the_error_ratio_ejects_only_on_answers_within_its_window(
            ratio in 0.05f64..=1.0,
            window_s in 1u64..30,
            min in 1u32..30,
            steps in proptest::collection::vec((prop_oneof![Just(200u16), Just(503)], 0u64..3_000), 1..400),
        ) {
            let c = ratio_config(2, ratio, window_s, min);
            let window = Duration::from_secs(window_s);
            let mut e = Ejections::new(&c.pools);
            let mut now = Instant::now();
            // Every answer counted since the last ejection ended.
            let mut seen: Vec<(Instant, bool)> = Vec::new();
            for (status, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                let recorded = e.record("web", "o0", status, now);
                if status == 503 && !matches!(recorded, Some(Recorded::Unchanged)) {
                    let mut with_this = seen.clone();
                    with_this.push((now, true));
                    let kept: Vec<bool> = with_this
                        .iter()
                        .filter(|(at, _)| now.duration_since(*at) <= window * 9 / 10)
                        .map(|(_, failed)| *failed)
                        .collect();
                    let diluted = with_this.iter().any(|(at, failed)| {
                        let age = now.duration_since(*at);
                        !failed && age > window * 9 / 10 && age < window
                    });
                    let errors = kept.iter().filter(|f| **f).count();
                    if !diluted
                        && kept.len() >= min as usize
                        && errors as f64 / kept.len() as f64 >= ratio
                    {
                        prop_assert!(
                            matches!(recorded, Some(Recorded::Ejected { .. })),
                            "{errors} of {} answers in the window: {recorded:?}", kept.len()
                        );
                    }
                }
                match recorded {
                    Some(Recorded::Unchanged) => continue,
                    Some(Recorded::Ejected { trigger, .. }) => {
                        prop_assert_eq!(trigger, Trigger::ErrorRatio);
                        prop_assert_eq!(status, 503);
                        seen.push((now, true));
                        let recent: Vec<bool> = seen
                            .iter()
                            .filter(|(at, _)| now.duration_since(*at) < window)
                            .map(|(_, failed)| *failed)
                            .collect();
                        let errors = recent.iter().filter(|f| **f).count();
                        prop_assert!(recent.len() >= min as usize, "{} answers < {min}", recent.len());
                        prop_assert!(errors as f64 >= ratio * f64::from(min), "{errors} 5xx");
                        seen.clear();
                    }
                    Some(_) => seen.push((now, status == 503)),
                    None => prop_assert!(false, "o0 is configured"),
                }
            }
        }
    }
}
