//! `[operations]`: limits on what operators may do with drains and
//! overrides, and what happens when a drain would leave a pool empty.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Validator;
use crate::control::{MAX_DRAIN, MAX_OVERRIDE};

const MIN_CONTROL: Duration = Duration::from_secs(60);

/// Operator controls: how long a drain or override may last, and whether a
/// pool whose every usable origin is drained still serves (fail open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// Longest `prober drain --for`. Default 7d; [1m, 30d]. A stored drain
    /// lasting longer is ignored by the edge and the prober, with a log
    /// line: no control lives forever.
    #[serde(with = "humantime_serde")]
    pub max_drain: Duration,
    /// Longest `prober override --for`. Default 24h; [1m, 7d].
    #[serde(with = "humantime_serde")]
    pub max_override: Duration,
    /// When every origin of a pool that is not down is drained: `true`
    /// (default) ignores the drains of that pool (traffic goes on to a
    /// drained origin rather than nowhere); `false` honours them (the edge
    /// answers with the pool's default origin as for an all-down ranking,
    /// the race is skipped).
    pub fail_open: bool,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            max_drain: Duration::from_secs(7 * 24 * 3600),
            max_override: Duration::from_secs(24 * 3600),
            fail_open: true,
        }
    }
}

impl OperationsConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        v.duration(
            "operations.max_drain",
            self.max_drain,
            MIN_CONTROL,
            MAX_DRAIN,
        );
        v.duration(
            "operations.max_override",
            self.max_override,
            MIN_CONTROL,
            MAX_OVERRIDE,
        );
    }
}
