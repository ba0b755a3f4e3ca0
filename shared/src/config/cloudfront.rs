//! How CloudFront reaches a pool's chosen origin: the connection timeout's
//! floor, the read timeout, and the status codes an origin group fails over
//! on (`[pools.NAME.cloudfront]`).
//!
//! Without these the distribution's own origin settings apply: 10 s to
//! connect, three attempts, 30 s to read. A request sent to an origin that
//! stopped accepting connections before the probers noticed then waits
//! 30 s. The edge derives the connection timeout from the chosen origin's
//! measured connect budget instead (see `edge::decision::timeouts`), never
//! below `connect_floor`. The read timeout is different: a health
//! endpoint's latency says nothing about how long a real page may take to
//! render, so it is only ever set from `read_timeout`, never from probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::{fmt_duration, Validator};

/// CloudFront's range for an origin's connection timeout, whole seconds
/// (CloudFront Developer Guide, "Connection timeout": 1-10 s, default 10).
pub const CONNECTION_TIMEOUT_RANGE: (u64, u64) = (1, 10);
/// CloudFront's range for connection attempts (same page: 1-3, default 3).
pub const CONNECTION_ATTEMPTS_RANGE: (u8, u8) = (1, 3);
/// The origin read (response) timeout both edges can set, whole seconds:
/// a Lambda@Edge origin-request event takes `readTimeout` in 4-60 s
/// (CloudFront Developer Guide, "Lambda@Edge event structure", origin
/// request, custom origin), a CloudFront Function's `updateRequestOrigin`
/// in 1-120 s ("Helper methods for origin modification"); the range both
/// accept.
pub const READ_TIMEOUT_RANGE: (u64, u64) = (4, 60);
/// The status codes an origin group may fail over on (CloudFront Developer
/// Guide, "Optimize high availability with CloudFront origin failover").
pub const FAILOVER_STATUS_ALLOWED: [u16; 8] = [400, 403, 404, 416, 500, 502, 503, 504];

/// `[pools.NAME.cloudfront]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudFrontOriginConfig {
    /// The least connection timeout the edge sets from a measured connect
    /// budget. Default: 1s; whole seconds in [1s, 10s].
    #[serde(with = "humantime_serde")]
    pub connect_floor: Duration,
    /// The origin read timeout the edge sets for this pool. Default: none
    /// (the distribution's, 30 s unless changed); whole seconds in
    /// [4s, 60s]. Never derived from probe latency: a health path answers in
    /// milliseconds while a real page may legitimately take seconds.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub read_timeout: Option<Duration>,
    /// Status codes from the primary that make an origin group (built by
    /// the CloudFront Function edge) retry on the second origin; CloudFront
    /// also fails over when it cannot connect. Default: 500, 502, 503, 504;
    /// each one of 400, 403, 404, 416, 500, 502, 503, 504.
    pub failover_status: Vec<u16>,
    /// Whether the CloudFront Function edge makes a two-origin origin
    /// group when a second usable origin exists. An origin group names its
    /// members by their origin ids in the distribution, so the distribution
    /// must define an origin whose id is each Origin Router origin id
    /// (`deploy/package-function.sh` writes them). Default: true.
    pub origin_group: bool,
}

impl Default for CloudFrontOriginConfig {
    fn default() -> Self {
        CloudFrontOriginConfig {
            connect_floor: Duration::from_secs(1),
            read_timeout: None,
            failover_status: vec![500, 502, 503, 504],
            origin_group: true,
        }
    }
}

impl CloudFrontOriginConfig {
    /// `connect_floor` in whole seconds (valid after validation).
    pub fn connect_floor_secs(&self) -> u64 {
        self.connect_floor
            .as_secs()
            .clamp(CONNECTION_TIMEOUT_RANGE.0, CONNECTION_TIMEOUT_RANGE.1)
    }

    /// `read_timeout` in whole seconds.
    pub fn read_timeout_secs(&self) -> Option<u64> {
        self.read_timeout.map(|d| d.as_secs())
    }

    pub(crate) fn validate(&self, v: &mut Validator, at: &str) {
        let whole = |v: &mut Validator, path: &str, d: Duration, (lo, hi): (u64, u64)| {
            if v.duration(path, d, Duration::from_secs(lo), Duration::from_secs(hi))
                && d.subsec_nanos() != 0
            {
                v.fail(
                    path,
                    format!(
                        "{} is not a whole number of seconds (CloudFront takes seconds)",
                        fmt_duration(d)
                    ),
                );
            }
        };
        whole(
            v,
            &format!("{at}.connect_floor"),
            self.connect_floor,
            CONNECTION_TIMEOUT_RANGE,
        );
        if let Some(read) = self.read_timeout {
            whole(v, &format!("{at}.read_timeout"), read, READ_TIMEOUT_RANGE);
        }
        if self.failover_status.is_empty() {
            v.fail(
                format!("{at}.failover_status"),
                "needs at least one status code",
            );
        }
        for (i, code) in self.failover_status.iter().enumerate() {
            if !FAILOVER_STATUS_ALLOWED.contains(code) {
                v.fail(
                    format!("{at}.failover_status[{i}]"),
                    format!(
                        "{code} is not a status CloudFront fails over on (one of {FAILOVER_STATUS_ALLOWED:?})"
                    ),
                );
            }
        }
        let mut seen = self.failover_status.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != self.failover_status.len() {
            v.fail(format!("{at}.failover_status"), "lists a status twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &CloudFrontOriginConfig) -> Vec<String> {
        let mut v = Validator::default();
        c.validate(&mut v, "pools.p.cloudfront");
        v.problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(problems(&CloudFrontOriginConfig::default()).is_empty());
    }

    #[test]
    fn absurd_values_are_named() {
        let c = CloudFrontOriginConfig {
            connect_floor: Duration::from_millis(1500),
            read_timeout: Some(Duration::from_secs(3600)),
            failover_status: vec![200, 502, 502],
            origin_group: true,
        };
        let p = problems(&c).join("\n");
        assert!(
            p.contains("pools.p.cloudfront.connect_floor: 1s 500ms is not a whole number"),
            "{p}"
        );
        assert!(
            p.contains("pools.p.cloudfront.read_timeout: 1h is not within [4s, 1m]"),
            "{p}"
        );
        assert!(p.contains("failover_status[0]: 200 is not a status"), "{p}");
        assert!(p.contains("lists a status twice"), "{p}");
        let zero = CloudFrontOriginConfig {
            connect_floor: Duration::ZERO,
            failover_status: vec![],
            ..Default::default()
        };
        let p = problems(&zero).join("\n");
        assert!(
            p.contains("connect_floor: 0s is not within [1s, 10s]"),
            "{p}"
        );
        assert!(p.contains("needs at least one status code"), "{p}");
    }
}
