//! Latency measured on real misses: how long CloudFront took from the
//! request this edge routed to the origin's response headers, per pool and
//! origin. The probers time `health_path`; this catches the gray failure a
//! health endpoint hides (health fast, pages slow).
//!
//! **The mechanism.** The origin-request handler stamps the request it
//! returns with one header, [`HEADER`] (`x-origin-router-sent: t=UNIX_MS`,
//! the wall clock when the decision was made), and the origin-response
//! handler reads it back from the event's `request`: CloudFront passes the
//! origin-response function the request as it sent it to the origin (in
//! AWS's "Lambda@Edge event structure", Response events, that `request`
//! carries the headers CloudFront itself added for the origin, `Via`,
//! `X-Forwarded-For`, `User-Agent: Amazon CloudFront`), together with
//! `request.origin`, which maps the answer back to the pool and origin
//! chosen (as passive ejection does). The measurement therefore needs no
//! state shared between the two events: the origin-request and the
//! origin-response of one miss may run in different containers.
//!
//! Fields relied on: origin-request `Records[0].cf.request.headers` (the
//! stamp is written there) and `request.origin.custom`; origin-response
//! `Records[0].cf.request.headers` (read back), `request.origin.custom`
//! (`domainName`, `port`: which origin) and `response.status`.
//! `config.requestId` would identify the miss too, but using it needs
//! memory shared by the two events' containers, which Lambda@Edge lacks.
//!
//! **Forgery and sanity.** The origin-request handler removes any
//! [`HEADER`] the viewer sent, on every request, routed or not, before it
//! writes its own: a viewer cannot make the origin-response handler read a
//! value the edge did not write. The other container's clock is another
//! machine's: a measurement below zero or above [`MAX_PLAUSIBLE`] (beyond
//! the longest origin read timeout CloudFront allows) is dropped and
//! counted, never recorded. The origin sees this one header; a pool with
//! `outlier.latency = "off"` sends none.
//!
//! **The estimate** ([`crate::ejection`]): per (pool, origin), the answers
//! of the last `latency_window` in ten slots, each counted as *slow* when
//! it took longer than the next usable origin's ranked (probed) latency
//! plus the ranking's switch margin. A container demotes an origin when a
//! majority of at least `latency_min_requests` answers are slow: the
//! window's median is above the bar. linkerd's Peak-EWMA was the other
//! candidate, and is the right tool for what linkerd does with it
//! (weighting every request towards the currently fastest endpoint): it
//! jumps to each peak and decays after it, so one answer ten times slower
//! moves it at once. A demotion must not follow one slow answer: a median
//! is unmoved by a 1 % burst of 10x slow answers, whatever their size, and
//! it decays as the slots age out, so an origin that recovers is judged on
//! its new answers. An exponentially decayed mean is kept beside it for the
//! reports.
//!
//! **What the bar compares, and where `demote` misleads.** The bar is a
//! *page's* latency against another origin's *health path* latency, as the
//! design asks. That suits pools whose pages answer about as fast as their
//! health path (static content, caches in front of the origin, thin APIs).
//! Where pages carry application work of their own (100 ms of rendering
//! on every origin), every miss is above the bar: the origin chosen is
//! demoted, the next one has no bar while it stands in, and the two swap
//! at each demotion's end. Such pools belong on `observe` (the default),
//! where the same numbers reach the dashboard and the gray-latency alarm
//! without moving traffic; a bar that compares like with like (each
//! origin's misses against its own probes, or against other origins'
//! misses where a band spreads traffic) is the open follow-up.

use std::time::Duration;

use origin_router::sample::UnixMillis;

use crate::cloudfront::Request;

/// The one header the edge adds to a routed request (lower case, as the
/// event's `headers` keys are).
pub const HEADER: &str = "x-origin-router-sent";
/// Its canonical spelling, as sent to the origin.
pub const HEADER_CANONICAL: &str = "X-Origin-Router-Sent";

/// Longest plausible time from a routed request to the origin's answer:
/// CloudFront's origin response timeout is at most 180 s (with a quota
/// increase; 60 s by default), so anything longer comes from a clock, not
/// from an origin.
pub const MAX_PLAUSIBLE: Duration = Duration::from_secs(180);

/// The traffic measurement's settings (from `[ranking]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The ranking's switch margin: an origin is slow when its misses take
    /// longer than the next origin's ranked latency × (1 + relative), or
    /// + absolute, whichever is larger.
    pub margin_relative: f64,
    pub margin_absolute: Duration,
}

impl Settings {
    /// The bar a miss of another origin must stay under, given the next
    /// usable origin's ranked latency `next_ms`.
    pub fn bar(&self, next_ms: f64) -> Option<Duration> {
        if !(next_ms.is_finite() && next_ms >= 0.0) {
            return None;
        }
        let ms = (next_ms * (1.0 + self.margin_relative))
            .max(next_ms + self.margin_absolute.as_secs_f64() * 1000.0);
        (ms.is_finite() && ms < MAX_PLAUSIBLE.as_secs_f64() * 1000.0)
            .then(|| Duration::from_secs_f64(ms / 1000.0))
    }
}

/// One timed miss, counted against a (pool, origin).
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub pool: String,
    pub origin: String,
    pub latency: std::time::Duration,
    /// The origin's latency in the nearest fresh ranking (the probes').
    pub ranked_ms: Option<f64>,
    pub slow: bool,
}

/// Why a measurement was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No stamp in the request (the pool measures nothing, or the
    /// origin-request trigger is not attached).
    Missing,
    /// A stamp the edge did not write: not `t=` and digits.
    Malformed,
    /// The answer came before the stamp: another container's clock is
    /// behind.
    Negative,
    /// Longer than [`MAX_PLAUSIBLE`].
    Absurd,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Missing => "missing",
            Dropped::Malformed => "malformed",
            Dropped::Negative => "negative",
            Dropped::Absurd => "absurd",
        }
    }
}

/// Removes any stamp from `request` (the viewer's, if it sent one), then
/// stamps it with `sent` when `stamp` is set.
pub fn stamp(request: &mut Request, sent: Option<UnixMillis>) {
    request.remove_header(HEADER);
    if let Some(sent) = sent {
        request.set_header(HEADER, HEADER_CANONICAL, &format!("t={sent}"));
    }
}

/// The latency of a miss whose request carried `value` (the stamp), its
/// answer seen at `now` (Unix ms).
pub fn measure(value: Option<&str>, now: UnixMillis) -> Result<Duration, Dropped> {
    let value = value.ok_or(Dropped::Missing)?;
    let digits = value.strip_prefix("t=").ok_or(Dropped::Malformed)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Dropped::Malformed);
    }
    let sent: u64 = digits.parse().map_err(|_| Dropped::Malformed)?;
    let ms = now.checked_sub(sent).ok_or(Dropped::Negative)?;
    let latency = Duration::from_millis(ms);
    if latency > MAX_PLAUSIBLE {
        return Err(Dropped::Absurd);
    }
    Ok(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_the_time_since_it() {
        assert_eq!(
            measure(Some("t=1000"), 1_400),
            Ok(Duration::from_millis(400))
        );
        assert_eq!(measure(Some("t=1000"), 1_000), Ok(Duration::ZERO));
        assert_eq!(measure(None, 1), Err(Dropped::Missing));
        for bad in [
            "",
            "t=",
            "1000",
            "t=-5",
            "t=1e3",
            "t= 1",
            "t=99999999999999999999",
            "t=１",
        ] {
            assert_eq!(
                measure(Some(bad), 1_000),
                Err(Dropped::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(measure(Some("t=1001"), 1_000), Err(Dropped::Negative));
        assert_eq!(
            measure(Some("t=0"), MAX_PLAUSIBLE.as_millis() as u64),
            Ok(MAX_PLAUSIBLE)
        );
        assert_eq!(
            measure(Some("t=0"), MAX_PLAUSIBLE.as_millis() as u64 + 1),
            Err(Dropped::Absurd)
        );
    }

    #[test]
    fn the_bar_is_the_next_origins_latency_plus_the_larger_margin() {
        let s = Settings {
            margin_relative: 0.2,
            margin_absolute: Duration::from_millis(5),
        };
        assert_eq!(s.bar(60.0), Some(Duration::from_millis(72)));
        assert_eq!(s.bar(10.0), Some(Duration::from_millis(15)));
        assert_eq!(s.bar(f64::NAN), None);
        assert_eq!(s.bar(-1.0), None);
        assert_eq!(s.bar(1e300), None);
    }
}
