//! Probe results: per-phase timings or exactly one failure class.
//!
//! Connect timeout and response timeout are separate classes everywhere
//! (samples, rankings, metrics, logs): the first says the origin could not be
//! reached in time, the second that it was reached but did not answer in time.
//! CloudFront reports both as "origin timeout"; telling them apart is much of
//! why this project exists.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch. Wall-clock time is used only where
/// several processes must agree on it (samples shared between workers,
/// published rankings); durations are measured on a monotonic clock.
pub type UnixMillis = u64;

/// Reads the wall clock as [`UnixMillis`]. Only binaries and I/O layers call
/// this; ranking and decision logic take `now` as an argument.
pub fn unix_millis_now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How far a timestamp made by another process (a sample's `at`, a
/// ranking's `generated_at`) may run ahead of this clock: the clock skew
/// tolerated between hosts. Further ahead is a runaway clock, never
/// trusted. Ten seconds is far above what NTP-synchronised hosts drift
/// (milliseconds) and far below a ranking's useful life.
pub const MAX_CLOCK_SKEW_MS: u64 = 10_000;

// The config's idea of the readers' tolerance is this one.
const _: () = assert!(crate::config::READERS_SKEW.as_millis() == MAX_CLOCK_SKEW_MS as u128);

/// Longest phase or failure time a sample may report: no probe budget
/// reaches it, so more is corrupt.
const MAX_SAMPLE_DURATION: Duration = Duration::from_secs(3600);

/// Why a probe or race attempt failed. Every failure is exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    /// The name did not resolve (or resolution timed out).
    Dns,
    /// The TCP connection was refused or the network said the host is unreachable.
    ConnectRefused,
    /// No TCP connection within the connect budget (SYN unanswered).
    ConnectTimeout,
    /// The TLS handshake failed (bad certificate, wrong name, protocol alert).
    Tls,
    /// Connected, but no complete answer within the response budget
    /// (a stalled TLS handshake counts here: the peer accepted and went quiet).
    ResponseTimeout,
    /// An answer whose status is outside the accepted range.
    HttpStatus(u16),
    /// An accepted status whose body lacks the expected text.
    BodyMismatch,
    /// The connection was reset or closed before a valid answer arrived.
    Reset,
}

impl FailureClass {
    /// The class name without the status code: the metric label value.
    pub fn name(&self) -> &'static str {
        match self {
            FailureClass::Dns => "dns",
            FailureClass::ConnectRefused => "connect_refused",
            FailureClass::ConnectTimeout => "connect_timeout",
            FailureClass::Tls => "tls",
            FailureClass::ResponseTimeout => "response_timeout",
            FailureClass::HttpStatus(_) => "http_status",
            FailureClass::BodyMismatch => "body_mismatch",
            FailureClass::Reset => "reset",
        }
    }

    /// Every class name, for documentation and metric pre-registration.
    pub const NAMES: [&'static str; 8] = [
        "dns",
        "connect_refused",
        "connect_timeout",
        "tls",
        "response_timeout",
        "http_status",
        "body_mismatch",
        "reset",
    ];
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::HttpStatus(code) => write!(f, "http_status:{code}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Error for a failure class string that is not one of the known classes.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a failure class (expected one of dns, connect_refused, connect_timeout, tls, response_timeout, http_status:CODE, body_mismatch, reset)")]
pub struct UnknownFailureClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "dns" => FailureClass::Dns,
            "connect_refused" => FailureClass::ConnectRefused,
            "connect_timeout" => FailureClass::ConnectTimeout,
            "tls" => FailureClass::Tls,
            "response_timeout" => FailureClass::ResponseTimeout,
            "body_mismatch" => FailureClass::BodyMismatch,
            "reset" => FailureClass::Reset,
            other => match other.strip_prefix("http_status:").map(str::parse::<u16>) {
                Some(Ok(code)) if (100..=999).contains(&code) => FailureClass::HttpStatus(code),
                _ => return Err(UnknownFailureClass(truncate(other, 64))),
            },
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Serialize for FailureClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FailureClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Durations of each phase of one successful probe, on a monotonic clock.
///
/// Phases are consecutive: `dns + connect + tls + first_byte <= total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimings {
    /// Name resolution (zero when the origin host is an IP address).
    #[serde(with = "micros")]
    pub dns: Duration,
    /// TCP handshake.
    #[serde(with = "micros")]
    pub connect: Duration,
    /// TLS handshake (zero for plain HTTP).
    #[serde(with = "micros")]
    pub tls: Duration,
    /// From the request being written to the response head arriving.
    #[serde(with = "micros")]
    pub first_byte: Duration,
    /// From the start of the probe to the end of the response.
    #[serde(with = "micros")]
    pub total: Duration,
}

impl PhaseTimings {
    /// Time from the start of the probe until the response head: what a fresh
    /// request from this vantage point waits before it sees an answer. This is
    /// the latency the ranking uses.
    pub fn until_first_byte(&self) -> Duration {
        self.dns + self.connect + self.tls + self.first_byte
    }
}

/// A failed probe: its class, when it was detected, and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    /// Time from the start of the probe until the failure was known.
    #[serde(with = "micros")]
    pub after: Duration,
    /// What the network stack or server said; for logs, never parsed.
    pub detail: String,
}

/// One probe result: what a worker observed of one origin at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Origin id within its pool.
    pub origin: String,
    /// Pool the origin belongs to.
    pub pool: String,
    /// Worker that took the sample.
    pub worker: String,
    /// Wall-clock start of the probe.
    pub at: UnixMillis,
    /// Timings, or the failure.
    pub outcome: Outcome,
}

impl Sample {
    /// Checks a sample that came from another process (Redis): names in
    /// the safe alphabet, `at` no further ahead of `now` than the allowed
    /// skew, durations plausible. A sample that fails is skipped, never
    /// ranked.
    pub fn check(&self, now: UnixMillis) -> Result<(), String> {
        for (field, value) in [
            ("origin", &self.origin),
            ("pool", &self.pool),
            ("worker", &self.worker),
        ] {
            if !crate::config::is_name(value) {
                return Err(format!("{field} is not a valid name"));
            }
        }
        if self.at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(format!(
                "at {} is {} ms ahead of this clock",
                self.at,
                self.at - now
            ));
        }
        let longest = match &self.outcome {
            Outcome::Ok(t) => [t.dns, t.connect, t.tls, t.first_byte, t.total]
                .into_iter()
                .max()
                .unwrap_or_default(),
            Outcome::Failed(f) => f.after,
        };
        if longest > MAX_SAMPLE_DURATION {
            return Err(format!("a duration of {longest:?} is not a measurement"));
        }
        Ok(())
    }
}

/// The result of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(PhaseTimings),
    Failed(Failure),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    pub fn failure_class(&self) -> Option<FailureClass> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Failed(f) => Some(f.class),
        }
    }

    /// Latency until first byte, for successful probes.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            Outcome::Ok(t) => Some(t.until_first_byte()),
            Outcome::Failed(_) => None,
        }
    }
}

/// Serde helper: a `Duration` as whole microseconds.
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_class_round_trips_through_its_string_form() {
        let all = [
            FailureClass::Dns,
            FailureClass::ConnectRefused,
            FailureClass::ConnectTimeout,
            FailureClass::Tls,
            FailureClass::ResponseTimeout,
            FailureClass::HttpStatus(503),
            FailureClass::BodyMismatch,
            FailureClass::Reset,
        ];
        for class in all {
            let text = class.to_string();
            assert_eq!(text.parse::<FailureClass>().unwrap(), class, "{text}");
            assert!(FailureClass::NAMES.contains(&class.name()));
        }
    }

    #[test]
    fn unknown_failure_classes_are_rejected_with_their_name() {
        let err = "timeout".parse::<FailureClass>().unwrap_err();
        assert!(err.to_string().contains("`timeout`"), "{err}");
        assert!("http_status:abc".parse::<FailureClass>().is_err());
        assert!("http_status:70000".parse::<FailureClass>().is_err());
        assert!("http_status:42".parse::<FailureClass>().is_err());
    }

    #[test]
    fn sample_json_round_trip() {
        let sample = Sample {
            origin: "a".into(),
            pool: "web".into(),
            worker: "w1".into(),
            at: 1_700_000_000_000,
            outcome: Outcome::Failed(Failure {
                class: FailureClass::ConnectTimeout,
                after: Duration::from_millis(1000),
                detail: "no SYN-ACK".into(),
            }),
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert!(json.contains("\"connect_timeout\""), "{json}");
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
    }
}
