//! The chosen origin's CloudFront timeouts, from what was measured.
//!
//! Left alone, CloudFront uses the distribution's origin settings: 10 s to
//! connect, three attempts, 30 s to read. A request sent to an origin that
//! stopped accepting connections before the probers noticed then waits up
//! to 30 s before CloudFront gives up. The connection timeout is derived
//! instead from the origin's measured *connect budget* (the prober's probe
//! budget rule over the connect phase, `RankedOrigin::connect_budget_ms`):
//! in whole seconds, rounded up, never below the pool's `connect_floor` and
//! within CloudFront's 1-10 s. With a second origin to fail over to (an
//! origin group), one attempt: the group's failover is the retry, at
//! another origin, so a blackholed primary costs about one connection
//! timeout (1 s for a near origin). Alone, three attempts (CloudFront's
//! most): a single lost SYN must not fail the request when there is
//! nowhere else to go.
//!
//! The read timeout is different: a health endpoint answers in
//! milliseconds while a real page may legitimately take seconds to render,
//! so probe latency says nothing about it. It is set only from the pool's
//! `cloudfront.read_timeout`, never derived.
//!
//! Which edge sets what: a CloudFront Function's `cf.updateRequestOrigin`
//! takes `timeouts.connectionTimeout`, `connectionAttempts` and
//! `timeouts.readTimeout`; a Lambda@Edge origin-request event's custom
//! origin takes only `readTimeout` (and `keepaliveTimeout`), so the Lambda
//! edge sets the read timeout alone (CloudFront Developer Guide, "Helper
//! methods for origin modification" and "Lambda@Edge event structure").

use origin_router::config::{PoolConfig, CONNECTION_ATTEMPTS_RANGE, CONNECTION_TIMEOUT_RANGE};

/// Timeouts to set on the chosen origin; `None` leaves the distribution's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginTimeouts {
    /// Seconds, 1-10.
    pub connection_timeout: Option<u64>,
    /// 1-3.
    pub connection_attempts: Option<u8>,
    /// Seconds (the pool's `cloudfront.read_timeout`).
    pub read_timeout: Option<u64>,
}

/// The timeouts for an origin of `pool` whose measured connect budget is
/// `connect_budget_ms` (`None`: not measured), with or without a second
/// origin to fail over to.
pub fn for_origin(
    pool: &PoolConfig,
    connect_budget_ms: Option<f64>,
    failover: bool,
) -> OriginTimeouts {
    let read_timeout = pool.cloudfront.read_timeout_secs();
    let Some(budget) = connect_budget_ms.filter(|b| b.is_finite() && *b >= 0.0) else {
        return OriginTimeouts {
            read_timeout,
            ..OriginTimeouts::default()
        };
    };
    let (lo, hi) = CONNECTION_TIMEOUT_RANGE;
    let floor = pool.cloudfront.connect_floor_secs().max(lo);
    // Whole seconds, rounded up; the budget is at most an hour (the
    // document's bound), so the cast cannot overflow.
    let secs = ((budget / 1000.0).ceil() as u64).clamp(floor, hi);
    let (fewest, most) = CONNECTION_ATTEMPTS_RANGE;
    OriginTimeouts {
        connection_timeout: Some(secs),
        connection_attempts: Some(if failover { fewest } else { most }),
        read_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(floor: u64, read: Option<u64>) -> PoolConfig {
        let mut p = PoolConfig::default();
        p.cloudfront.connect_floor = Duration::from_secs(floor);
        p.cloudfront.read_timeout = read.map(Duration::from_secs);
        p
    }

    #[test]
    fn rounded_up_within_the_floor_and_cloudfronts_range() {
        let p = pool(1, None);
        let ct = |ms: f64| for_origin(&p, Some(ms), true).connection_timeout;
        assert_eq!(ct(0.0), Some(1));
        assert_eq!(ct(25.0), Some(1));
        assert_eq!(ct(1000.0), Some(1));
        assert_eq!(ct(1000.5), Some(2));
        assert_eq!(ct(3_600_000.0), Some(10));
        assert_eq!(
            for_origin(&pool(3, None), Some(25.0), true).connection_timeout,
            Some(3)
        );
    }

    #[test]
    fn one_attempt_with_somewhere_to_fail_over_three_alone() {
        let p = pool(1, None);
        assert_eq!(
            for_origin(&p, Some(25.0), true).connection_attempts,
            Some(1)
        );
        assert_eq!(
            for_origin(&p, Some(25.0), false).connection_attempts,
            Some(3)
        );
    }

    #[test]
    fn unmeasured_or_hostile_budgets_leave_the_distributions_and_read_is_configured_only() {
        let p = pool(1, Some(20));
        for b in [None, Some(f64::NAN), Some(-1.0), Some(f64::INFINITY)] {
            assert_eq!(
                for_origin(&p, b, true),
                OriginTimeouts {
                    read_timeout: Some(20),
                    ..Default::default()
                },
                "{b:?}"
            );
        }
        assert_eq!(
            for_origin(&pool(1, None), Some(5.0), true).read_timeout,
            None
        );
    }
}
