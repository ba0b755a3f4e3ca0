//! How the edge spreads a pool's requests (`steering`) and when it stops
//! choosing an origin that answers with errors (`outlier`).
//!
//! `fastest` sends every miss to the top of the ranking (the default, so a
//! config without a `steering` table keeps its meaning). `band` takes every
//! usable origin whose score is within `band_absolute` *or* `band_relative`
//! of the best and spreads requests over them by weighted rendezvous hashing
//! of a key, so a key keeps its origin while the band is unchanged. Past the
//! band's edge an origin's weight fades to zero over `band_taper` × the
//! band's width, so an origin whose score hovers at the edge moves a few
//! keys with each ranking, not its whole share.
//!
//! Outlier detection follows Envoy's (`consecutive_5xx`,
//! `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`, with
//! Envoy's defaults): an origin ejected for the n-th time stays out for
//! `base_ejection_time × n`, capped at `max_ejection_time`. Beside the run
//! of 5xx, an *error ratio* over a sliding window (Envoy's failure
//! percentage, off by default as there) ejects an origin that fails often
//! but not in a row: `error_ratio` of at least `error_min_requests`
//! answers within `error_window`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::Validator;

/// Largest `band_absolute`: a band wider than this is no longer "near the
/// best" (use weights instead).
pub const MAX_BAND_ABSOLUTE: Duration = Duration::from_secs(10);
/// Largest `band_relative` (score up to 11 × the best).
pub const MAX_BAND_RELATIVE: f64 = 10.0;
/// Largest `band_taper` (a fade 10 × as wide as the band itself).
pub const MAX_BAND_TAPER: f64 = 10.0;
/// Largest `consecutive_5xx`.
pub const MAX_CONSECUTIVE_5XX: u32 = 10_000;
const EJECTION_MIN: Duration = Duration::from_secs(1);
const EJECTION_MAX: Duration = Duration::from_secs(24 * 3600);
/// The range of `error_window`: a window under a second holds too few
/// answers to judge, one over an hour remembers failures long fixed.
const ERROR_WINDOW_MIN: Duration = Duration::from_secs(1);
const ERROR_WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Largest `error_min_requests`.
pub const MAX_ERROR_MIN_REQUESTS: u32 = 1_000_000;

/// A pool's steering policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// `"fastest"` (default) or `"band"`.
    #[serde(default)]
    pub policy: SteeringPolicy,
    /// An origin is in the band if its score is at most this much above
    /// the best's. Default 10ms; [0, 10s].
    #[serde(default = "default_band_absolute", with = "humantime_serde")]
    pub band_absolute: Duration,
    /// ...or at most this fraction above the best's (0.2: within 20 %).
    /// Default 0.2; [0, 10].
    #[serde(default = "default_band_relative")]
    pub band_relative: f64,
    /// Past the band's edge, an origin's weight fades linearly to zero over
    /// this fraction of the band's width (edge − best): at 0.5 with a band
    /// of 50-60 ms, an origin at 62.5 ms keeps half its weight, one at
    /// 65 ms or more has none. A score wandering across the edge then moves
    /// keys in proportion to how far it moved, instead of the origin's
    /// whole share at once. 0 gives a hard edge. Default 0.5; [0, 10].
    #[serde(default = "default_band_taper")]
    pub band_taper: f64,
    /// What is hashed to pick within the band: `"uri"` (path and query
    /// string, the default: each object stays on one origin, so origin
    /// caches stay warm), `"clientIp"`, `"header:NAME"` or `"cookie:NAME"`
    /// (session affinity).
    #[serde(default)]
    pub key: SteeringKey,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        SteeringConfig {
            policy: SteeringPolicy::default(),
            band_absolute: default_band_absolute(),
            band_relative: default_band_relative(),
            band_taper: default_band_taper(),
            key: SteeringKey::default(),
        }
    }
}

fn default_band_absolute() -> Duration {
    Duration::from_millis(10)
}

fn default_band_relative() -> f64 {
    0.2
}

fn default_band_taper() -> f64 {
    0.5
}

/// `fastest` or `band`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SteeringPolicy {
    /// The top of the ranking takes every request.
    #[default]
    Fastest,
    /// Weighted rendezvous hashing over the origins near the best.
    Band,
}

/// What identifies a request for the band's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SteeringKey {
    /// URI and query string.
    #[default]
    Uri,
    /// The viewer's address.
    ClientIp,
    /// A request header (name lower case, as in CloudFront events).
    Header(String),
    /// A cookie.
    Cookie(String),
}

impl fmt::Display for SteeringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteeringKey::Uri => f.write_str("uri"),
            SteeringKey::ClientIp => f.write_str("clientIp"),
            SteeringKey::Header(h) => write!(f, "header:{h}"),
            SteeringKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

/// An HTTP token (RFC 9110 `tchar`), as header and cookie names must be.
fn is_token(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl FromStr for SteeringKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad_name = |kind: &str, name: &str| {
            format!(
                "`{}` is not a {kind} name (1-128 HTTP token characters)",
                name.escape_debug()
            )
        };
        match s {
            "uri" => Ok(SteeringKey::Uri),
            "clientIp" => Ok(SteeringKey::ClientIp),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    if !is_token(name) {
                        return Err(bad_name("header", name));
                    }
                    Ok(SteeringKey::Header(name.to_ascii_lowercase()))
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    if !is_token(name) {
                        return Err(bad_name("cookie", name));
                    }
                    Ok(SteeringKey::Cookie(name.to_string()))
                } else {
                    Err(format!(
                        "`{}` is not a steering key (expected \"uri\", \"clientIp\", \"header:NAME\" or \"cookie:NAME\")",
                        s.chars().take(64).collect::<String>().escape_debug()
                    ))
                }
            }
        }
    }
}

impl Serialize for SteeringKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SteeringKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Passive outlier detection at the edge (Envoy's names, semantics and
/// defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// 5xx answers in a row (as seen by one edge container) that eject an
    /// origin. 0 turns this detector off (and ejection with it, unless
    /// `error_ratio` is set). Default 5; [0, 10000].
    #[serde(default = "default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// An origin ejected for the n-th time stays out for this × n.
    /// Default 30s; [1s, 24h].
    #[serde(default = "default_base_ejection_time", with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// The cap on one ejection's length. Default 300s; [base_ejection_time, 24h].
    #[serde(default = "default_max_ejection_time", with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// At most this percentage of the pool's origins is ejected at once,
    /// though one may always be (as in Envoy), and never the last origin
    /// the ranking holds usable. Default 10; [0, 100].
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Eject an origin when at least this fraction of its answers within
    /// `error_window` were 5xx (and there were at least
    /// `error_min_requests` of them), in a row or not. Envoy's failure
    /// percentage, as a fraction. 0 (the default, as in Envoy) turns it
    /// off; (0, 1].
    #[serde(default)]
    pub error_ratio: f64,
    /// The sliding window the ratio is taken over. Default 10s (Envoy's
    /// `interval`); [1s, 1h].
    #[serde(default = "default_error_window", with = "humantime_serde")]
    pub error_window: Duration,
    /// The fewest answers in the window for the ratio to count: a handful
    /// of answers is no evidence. Default 20; [1, 1000000].
    #[serde(default = "default_error_min_requests")]
    pub error_min_requests: u32,
    /// What the edge does with the latency its misses observe (from the
    /// routed request to the origin's response headers, measured between
    /// the origin-request and origin-response events): `off` (no header is
    /// sent to the origin, nothing is measured), `observe` (the default:
    /// measured and reported, decisions unchanged) or `demote` (an origin
    /// whose misses are slower than the next usable origin's ranked
    /// latency by the ranking's switch margin, for most answers of
    /// `latency_window`, is left out like an ejected one; for pools whose
    /// pages answer about as fast as their health path: see
    /// `edge::traffic`).
    #[serde(default)]
    pub latency: LatencyMode,
    /// The sliding window the latency test is taken over. Default 10s;
    /// [1s, 1h].
    #[serde(default = "default_error_window", with = "humantime_serde")]
    pub latency_window: Duration,
    /// The fewest answers in `latency_window` for the test to count.
    /// Default 10; [1, 1000000]. Below 3, one slow answer alone in a quiet
    /// window is a majority and demotes.
    #[serde(default = "default_latency_min_requests")]
    pub latency_min_requests: u32,
}

/// What the edge does with the latency its misses observe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyMode {
    /// Nothing is measured; no header is sent to the origin.
    Off,
    /// Measured and reported (EMF), decisions unchanged.
    #[default]
    Observe,
    /// Measured, reported, and a slow origin is demoted.
    Demote,
}

impl LatencyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyMode::Off => "off",
            LatencyMode::Observe => "observe",
            LatencyMode::Demote => "demote",
        }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: default_consecutive_5xx(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejection_percent: default_max_ejection_percent(),
            error_ratio: 0.0,
            error_window: default_error_window(),
            error_min_requests: default_error_min_requests(),
            latency: LatencyMode::default(),
            latency_window: default_error_window(),
            latency_min_requests: default_latency_min_requests(),
        }
    }
}

impl OutlierConfig {
    /// Whether any detector is on.
    pub fn enabled(&self) -> bool {
        self.consecutive_5xx > 0 || self.error_ratio > 0.0
    }
}

fn default_consecutive_5xx() -> u32 {
    5
}
fn default_base_ejection_time() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    10
}
fn default_error_window() -> Duration {
    Duration::from_secs(10)
}
fn default_latency_min_requests() -> u32 {
    10
}
fn default_error_min_requests() -> u32 {
    20
}

impl SteeringConfig {
    pub(crate) fn validate(&self, v: &mut Validator, at: &str) {
        v.duration(
            &format!("{at}.band_absolute"),
            self.band_absolute,
            Duration::ZERO,
            MAX_BAND_ABSOLUTE,
        );
        if !(self.band_relative.is_finite()
            && (0.0..=MAX_BAND_RELATIVE).contains(&self.band_relative))
        {
            v.fail(
                format!("{at}.band_relative"),
                format!(
                    "{} is not in [0, {MAX_BAND_RELATIVE}] (a fraction of the best score: 0.2 is within 20 %)",
                    self.band_relative
                ),
            );
        }
        if !(self.band_taper.is_finite() && (0.0..=MAX_BAND_TAPER).contains(&self.band_taper)) {
            v.fail(
                format!("{at}.band_taper"),
                format!(
                    "{} is not in [0, {MAX_BAND_TAPER}] (a fraction of the band's width; 0 is a hard edge)",
                    self.band_taper
                ),
            );
        }
    }
}

impl OutlierConfig {
    pub(crate) fn validate(&self, v: &mut Validator, at: &str) {
        if self.consecutive_5xx > MAX_CONSECUTIVE_5XX {
            v.fail(
                format!("{at}.consecutive_5xx"),
                format!(
                    "{} is not in [0, {MAX_CONSECUTIVE_5XX}] (0 turns this detector off)",
                    self.consecutive_5xx
                ),
            );
        }
        let base_ok = v.duration(
            &format!("{at}.base_ejection_time"),
            self.base_ejection_time,
            EJECTION_MIN,
            EJECTION_MAX,
        );
        let min = if base_ok {
            self.base_ejection_time
        } else {
            EJECTION_MIN
        };
        v.duration(
            &format!("{at}.max_ejection_time"),
            self.max_ejection_time,
            min,
            EJECTION_MAX,
        );
        if self.max_ejection_percent > 100 {
            v.fail(
                format!("{at}.max_ejection_percent"),
                format!("{} is not in [0, 100]", self.max_ejection_percent),
            );
        }
        if !(self.error_ratio.is_finite() && (0.0..=1.0).contains(&self.error_ratio)) {
            v.fail(
                format!("{at}.error_ratio"),
                format!(
                    "{} is not in [0, 1] (a fraction of the answers: 0.5 ejects at half 5xx; 0 turns it off)",
                    self.error_ratio
                ),
            );
        }
        v.duration(
            &format!("{at}.error_window"),
            self.error_window,
            ERROR_WINDOW_MIN,
            ERROR_WINDOW_MAX,
        );
        if !(1..=MAX_ERROR_MIN_REQUESTS).contains(&self.error_min_requests) {
            v.fail(
                format!("{at}.error_min_requests"),
                format!(
                    "{} is not in [1, {MAX_ERROR_MIN_REQUESTS}]",
                    self.error_min_requests
                ),
            );
        }
        v.duration(
            &format!("{at}.latency_window"),
            self.latency_window,
            ERROR_WINDOW_MIN,
            ERROR_WINDOW_MAX,
        );
        if !(1..=MAX_ERROR_MIN_REQUESTS).contains(&self.latency_min_requests) {
            v.fail(
                format!("{at}.latency_min_requests"),
                format!(
                    "{} is not in [1, {MAX_ERROR_MIN_REQUESTS}]",
                    self.latency_min_requests
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_back() {
        for text in ["uri", "clientIp", "header:x-user", "cookie:session_id"] {
            let key: SteeringKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        assert_eq!(
            "header:X-User".parse::<SteeringKey>().unwrap(),
            SteeringKey::Header("x-user".into())
        );
        for bad in ["", "url", "header:", "cookie:a b", "header:a\nb", "Uri"] {
            let e = bad.parse::<SteeringKey>().unwrap_err();
            assert!(e.contains("is not a"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_named_by_field() {
        let text = r#"
[pools.web]
[pools.web.steering]
policy = "band"
band_absolute = "11s"
band_relative = -0.5
band_taper = nan
key = "header:x-user"
[pools.web.outlier]
consecutive_5xx = 10001
base_ejection_time = "10s"
max_ejection_time = "5s"
max_ejection_percent = 101
error_ratio = 1.5
error_window = "2h"
error_min_requests = 0
[[pools.web.origins]]
id = "a"
host = "a.example.net"
max_share = 1.5
"#;
        let e = crate::config::Config::from_toml(text, "t.toml")
            .unwrap_err()
            .to_string();
        for field in [
            "pools.web.steering.band_absolute",
            "pools.web.steering.band_relative",
            "pools.web.steering.band_taper",
            "pools.web.outlier.consecutive_5xx",
            "pools.web.outlier.max_ejection_time",
            "pools.web.outlier.max_ejection_percent",
            "pools.web.outlier.error_ratio",
            "pools.web.outlier.error_window",
            "pools.web.outlier.error_min_requests",
            "pools.web.origins[0].max_share",
        ] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
        let e =
            crate::config::Config::from_toml(&text.replace("header:x-user", "header:"), "t.toml")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("steering.key") && e.contains("not a header name"),
            "{e}"
        );
        let c = crate::config::Config::from_toml(
            "[pools.web]\n[[pools.web.origins]]\nid = \"a\"\nhost = \"a.example.net\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pools["web"].steering.policy, SteeringPolicy::Fastest);
        assert_eq!(c.pools["web"].outlier, OutlierConfig::default());
        assert!(c.pools["web"].outlier.enabled());
    }

    #[test]
    fn error_ratio_is_off_by_default_and_refuses_nan_and_infinity() {
        let pool = |outlier: &str| {
            format!("[pools.web]\n[pools.web.outlier]\n{outlier}\n[[pools.web.origins]]\nid = \"a\"\nhost = \"a.example.net\"\n")
        };
        let c = crate::config::Config::from_toml(&pool(""), "t.toml").unwrap();
        let o = &c.pools["web"].outlier;
        assert_eq!(o.error_ratio, 0.0);
        assert_eq!(o.error_window, Duration::from_secs(10));
        assert_eq!(o.error_min_requests, 20);
        for bad in ["nan", "inf", "-inf", "-0.1"] {
            let e =
                crate::config::Config::from_toml(&pool(&format!("error_ratio = {bad}")), "t.toml")
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("pools.web.outlier.error_ratio"), "{bad}: {e}");
        }
        let c = crate::config::Config::from_toml(
            &pool("consecutive_5xx = 0\nerror_ratio = 0.5\nerror_window = \"30s\"\nerror_min_requests = 10"),
            "t.toml",
        )
        .unwrap();
        let o = &c.pools["web"].outlier;
        assert!(o.enabled());
        assert_eq!((o.error_ratio, o.error_min_requests), (0.5, 10));
        let c = crate::config::Config::from_toml(&pool("consecutive_5xx = 0"), "t.toml").unwrap();
        assert!(!c.pools["web"].outlier.enabled());
    }
}
