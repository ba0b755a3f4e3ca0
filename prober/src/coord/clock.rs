//! This worker's clock against its region's.
//!
//! A region's rankings and fencing numbers are dated on one clock: Redis'
//! `TIME` when the workers share a Redis, else the store's own clock where
//! it has one (DynamoDB's `Date` answer header; for the embedded store, the
//! kernel's clock as this process cannot fake it, see
//! `origin_router::store::embedded`). A worker measures its offset to that
//! clock at every lease attempt and renewal, as NTP does (the server read
//! its clock halfway through the call, so the error is at most half the
//! round trip, plus half the server clock's resolution), and then:
//!
//! - dates everything it shares and publishes on the region's clock (its
//!   own wall clock plus the offset), so a worker an hour off still
//!   contributes samples the leader can use, and `generated_at` and `seq`
//!   of a ranking come from the same clock;
//! - leads only while the offset is within `prober.max_clock_skew`: past
//!   it the worker neither takes nor renews the lease, and says why.
//!
//! A worker off by an hour that led would write rankings every reader
//! takes for a runaway clock's (future-dated: stale at every edge) or that
//! every store refuses (a `seq` from Redis above the ceiling of the
//! worker's own clock), while it kept the lease from the sane workers.
//!
//! The judgement is a pure function ([`judge`]); [`Clock`] keeps the last
//! reading for the round, the metric and `prober status`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use origin_router::sample::UnixMillis;
use origin_router::store::{RankingStore, StoreClock};

/// The log target of this module's lines: the CloudWatch metric filter
/// `ClockOffFilter` of `deploy/prober.yaml` counts its warnings (a test in
/// `crate::worker` holds the template to it).
pub const LOG_TARGET: &str = module_path!();

/// What a reading says of this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Within `max_clock_skew` (give or take the reading's uncertainty).
    Sane { offset_ms: i64 },
    /// Past it, beyond any doubt the reading leaves: this worker must not
    /// lead.
    Off { offset_ms: i64 },
}

impl Judged {
    pub fn offset_ms(self) -> i64 {
        match self {
            Judged::Sane { offset_ms } | Judged::Off { offset_ms } => offset_ms,
        }
    }
}

/// Judges `reading` against `max_skew`: off only when even the smallest
/// offset the reading allows (its offset less its uncertainty) is past the
/// limit, so a coarse clock (DynamoDB's whole seconds) never bars a sane
/// worker; the price is that an offset just past the limit may pass by up
/// to the uncertainty (half a second and half a round trip on DynamoDB,
/// about a millisecond on Redis).
pub fn judge(reading: &StoreClock, max_skew: Duration) -> Judged {
    let offset_ms = reading.offset_ms();
    let least = offset_ms
        .unsigned_abs()
        .saturating_sub(reading.uncertainty().as_millis() as u64);
    if least > max_skew.as_millis() as u64 {
        Judged::Off { offset_ms }
    } else {
        Judged::Sane { offset_ms }
    }
}

/// The offset of this worker's wall clock to its region's, as last
/// measured. Shared by the coordinator (which measures) and the worker
/// (which dates its samples and rankings with it).
#[derive(Debug)]
pub struct Clock {
    max_skew: Duration,
    region: String,
    worker: String,
    offset_ms: AtomicI64,
    known: AtomicBool,
    off: AtomicBool,
}

impl Clock {
    pub fn new(max_skew: Duration, region: &str, worker: &str) -> Clock {
        Clock {
            max_skew,
            region: region.to_string(),
            worker: worker.to_string(),
            offset_ms: AtomicI64::new(0),
            known: AtomicBool::new(false),
            off: AtomicBool::new(false),
        }
    }

    /// Records a reading of the region's clock from `source` (`redis`,
    /// `dynamodb`, `embedded`): the offset, its gauge, and the judgement.
    pub fn record(&self, reading: &StoreClock, source: &'static str) -> Judged {
        let judged = judge(reading, self.max_skew);
        let offset_ms = judged.offset_ms();
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
        let was_off = self
            .off
            .swap(matches!(judged, Judged::Off { .. }), Ordering::Relaxed);
        metrics::gauge!(
            "origin_router_clock_offset_seconds",
            "region" => self.region.clone(),
            "worker" => self.worker.clone(),
            "source" => source
        )
        .set(offset_ms as f64 / 1000.0);
        match judged {
            Judged::Off { .. } => {
                metrics::counter!(
                    "origin_router_lease_refusals_total",
                    "region" => self.region.clone(),
                    "worker" => self.worker.clone(),
                    "reason" => "clock_skew"
                )
                .increment(1);
                tracing::warn!(
                    region = %self.region,
                    worker = %self.worker,
                    source,
                    offset_ms,
                    uncertainty_ms = reading.uncertainty().as_millis() as u64,
                    max_clock_skew_ms = self.max_skew.as_millis() as u64,
                    "not leading: this worker's clock is off the region's by more than prober.max_clock_skew"
                );
            }
            Judged::Sane { .. } if was_off => tracing::info!(
                region = %self.region,
                worker = %self.worker,
                source,
                offset_ms,
                "this worker's clock is within prober.max_clock_skew again: it may lead"
            ),
            Judged::Sane { .. } => {}
        }
        judged
    }

    /// The last measured offset (region − local, ms), if any.
    pub fn offset_ms(&self) -> Option<i64> {
        self.known
            .load(Ordering::Relaxed)
            .then(|| self.offset_ms.load(Ordering::Relaxed))
    }

    /// Whether the last reading barred this worker from leading.
    pub fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// `local` (this worker's wall clock, Unix ms) on the region's clock:
    /// `local` itself until a reading exists.
    pub fn region_time(&self, local: UnixMillis) -> UnixMillis {
        shift(local, self.offset_ms().unwrap_or(0))
    }
}

/// How long a store's clock may take to answer before the worker goes on
/// without a reading (its last offset stands).
const STORE_CLOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads `store`'s own clock into `clock`, bounded: `None` when the store
/// has no clock (the memory store), or it failed or did not answer in time
/// (logged; the worker cannot tell, and goes on as before).
pub async fn read_store_clock(store: &dyn RankingStore, clock: &Clock) -> Option<Judged> {
    match tokio::time::timeout(STORE_CLOCK_TIMEOUT, store.clock()).await {
        Ok(Ok(Some(reading))) => Some(clock.record(&reading, "store")),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "could not read the store's clock");
            None
        }
        Err(_) => {
            tracing::debug!("the store's clock did not answer within 1 s");
            None
        }
    }
}

/// `at` moved by `offset_ms`, saturating.
pub fn shift(at: UnixMillis, offset_ms: i64) -> UnixMillis {
    if offset_ms >= 0 {
        at.saturating_add(offset_ms as u64)
    } else {
        at.saturating_sub(offset_ms.unsigned_abs())
    }
}

/// What `prober status` says of clocks: this host's offset to the
/// region's clock (Redis' `TIME` when `redis_url` is set, else the
/// store's), and each worker's last offset as recorded in Redis. Lines
/// for the table, and the same as JSON.
pub async fn status(
    redis_url: Option<&str>,
    region: &str,
    store: &dyn RankingStore,
    max_skew: Duration,
) -> (Vec<String>, serde_json::Value) {
    let mut lines = Vec::new();
    let mut now = origin_router::sample::unix_millis_now();
    let (source, reading) = match redis_url {
        Some(url) => {
            let reading = async {
                let coord = super::RedisCoordinator::new(
                    url,
                    region,
                    "status",
                    Duration::from_secs(10),
                    1,
                    std::sync::Arc::new(Clock::new(max_skew, region, "status")),
                )
                .ok()?;
                tokio::time::timeout(STORE_CLOCK_TIMEOUT, coord.time())
                    .await
                    .ok()?
                    .ok()
            };
            ("Redis' TIME", reading.await)
        }
        None => (
            "the store's clock",
            tokio::time::timeout(STORE_CLOCK_TIMEOUT, store.clock())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
        ),
    };
    let mut json = serde_json::json!({
        "max_clock_skew_ms": max_skew.as_millis() as u64,
        "against": source,
    });
    match reading {
        Some(r) => {
            let judged = judge(&r, max_skew);
            lines.push(format!(
                "clock: this host is {:+.3} s (± {:.3} s) off {source}; prober.max_clock_skew is {:.3} s{}",
                r.offset_ms() as f64 / 1000.0,
                r.uncertainty().as_secs_f64(),
                max_skew.as_secs_f64(),
                if matches!(judged, Judged::Off { .. }) {
                    ": a worker here would not lead"
                } else {
                    ""
                }
            ));
            json["offset_ms"] = r.offset_ms().into();
            json["uncertainty_ms"] = (r.uncertainty().as_millis() as u64).into();
            json["off"] = matches!(judged, Judged::Off { .. }).into();
            // The workers' entries are dated on the region's clock: their
            // age is read on it too.
            now = shift(now, r.offset_ms());
        }
        None => lines.push(format!(
            "clock: not checked: {source} could not be read (the in-memory store has none)"
        )),
    }
    if let Some(url) = redis_url {
        match super::redis_clocks(url, region).await {
            Ok(workers) => {
                let mut list = Vec::new();
                for (worker, offset_ms, at) in workers {
                    // Their readings are Redis' (about a millisecond of
                    // doubt): off as the worker judged itself.
                    let off = offset_ms.unsigned_abs() > max_skew.as_millis() as u64 + 1;
                    lines.push(format!(
                        "  worker {worker}: {:+.3} s off Redis' TIME, measured {} s ago{}",
                        offset_ms as f64 / 1000.0,
                        now.saturating_sub(at) / 1000,
                        if off { ": clock off, not leading" } else { "" }
                    ));
                    list.push(serde_json::json!({
                        "worker": worker, "offset_ms": offset_ms, "measured_at": at, "off": off,
                    }));
                }
                json["workers"] = list.into();
            }
            Err(e) => lines.push(format!("  workers' clocks: Redis could not be read: {e}")),
        }
    }
    (lines, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(offset_ms: i64, rtt_ms: u64, resolution_ms: u64) -> StoreClock {
        let local = 1_800_000_000_000u64;
        StoreClock {
            server_ms: shift(local, offset_ms),
            local_ms: local,
            rtt: Duration::from_millis(rtt_ms),
            resolution: Duration::from_millis(resolution_ms),
        }
    }

    #[test]
    fn an_offset_is_off_only_past_the_limit_and_the_readings_doubt() {
        let max = Duration::from_secs(2);
        // Redis: 1 ms resolution, 2 ms round trip: uncertainty 1 ms.
        assert_eq!(
            judge(&reading(2_001, 2, 1), max),
            Judged::Sane { offset_ms: 2_001 }
        );
        assert_eq!(
            judge(&reading(2_002, 2, 1), max),
            Judged::Off { offset_ms: 2_002 }
        );
        assert_eq!(
            judge(&reading(-2_002, 2, 1), max),
            Judged::Off { offset_ms: -2_002 }
        );
        // DynamoDB's whole seconds: half a second and half the trip.
        assert!(matches!(
            judge(&reading(2_540, 80, 1_000), max),
            Judged::Sane { .. }
        ));
        assert!(matches!(
            judge(&reading(2_541, 80, 1_000), max),
            Judged::Off { .. }
        ));
        // An hour either way.
        assert!(matches!(
            judge(&reading(3_600_000, 80, 1_000), max),
            Judged::Off { .. }
        ));
        assert!(matches!(
            judge(&reading(-3_600_000, 1, 1), max),
            Judged::Off { .. }
        ));
        assert!(matches!(judge(&reading(0, 1, 1), max), Judged::Sane { .. }));
    }

    #[test]
    fn the_clock_dates_on_the_regions_time_once_measured() {
        let clock = Clock::new(Duration::from_secs(2), "eu-west-1", "w1");
        assert_eq!(clock.offset_ms(), None);
        assert_eq!(clock.region_time(1_000_000), 1_000_000);
        assert!(!clock.is_off());
        clock.record(&reading(-3_600_000, 2, 1), "redis");
        assert!(clock.is_off());
        assert_eq!(clock.offset_ms(), Some(-3_600_000));
        assert_eq!(
            clock.region_time(1_800_000_000_000),
            1_800_000_000_000 - 3_600_000
        );
        clock.record(&reading(5, 2, 1), "redis");
        assert!(!clock.is_off());
        assert_eq!(clock.region_time(100), 105);
    }

    #[test]
    fn shifting_saturates() {
        assert_eq!(shift(5, -10), 0);
        assert_eq!(shift(u64::MAX - 1, 10), u64::MAX);
        assert_eq!(shift(5, i64::MIN), 0);
    }
}
