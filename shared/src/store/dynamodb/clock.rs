//! DynamoDB's clock, as its answers' HTTP `Date` header gives it.
//!
//! Every HTTP answer from an origin server with a clock carries `Date`, the
//! moment the answer was generated, as an IMF-fixdate to the whole second
//! (RFC 9110 §6.6.1 and §5.6.7; RFC 7231 §7.1.1 before it). The SDK itself
//! reads the same header to correct SigV4 signing for a skewed client
//! clock (aws-runtime's `ServiceClockSkew` interceptor); here the skew is
//! what we want to know, so a worker without Redis can tell that its own
//! clock is off before it dates rankings with it (issue 24).
//!
//! The reading is one `Query` of a partition that never holds an item
//! ([`CLOCK_PARTITION`]): `dynamodb:Query` on the table is already in the
//! prober's IAM policy (deploy/prober.yaml, which allows no `GetItem` or
//! `DescribeTable`), and an empty Query costs the minimum read (0.5 RCU,
//! eventually consistent). An interceptor on that one call notes this
//! process's clock just before the request is sent and the round trip
//! when the answer's headers arrive, per attempt, so a retried call is
//! measured by the attempt that answered.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::AttributeValue;

use super::{dynamo_error, DynamoStore};
use crate::sample::{unix_millis_now, UnixMillis};
use crate::store::{StoreClock, StoreError};

/// The partition key the clock's Query asks for. `#` is outside the pool
/// name alphabet every write enforces, so no ranking or control is ever
/// stored under it and the Query always answers empty.
const CLOCK_PARTITION: &str = "#clock";

/// How coarse a `Date` header is: whole seconds.
const DATE_RESOLUTION: Duration = Duration::from_secs(1);

/// How long a clock reading may take when the store's tuning sets no
/// timeout (the prober's default). A reading slower than this is too
/// uncertain to be of use anyway.
pub(super) const DEFAULT_CLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the interceptor saw of the last attempt.
#[derive(Debug, Default)]
struct Attempt {
    /// This process's wall clock just before the request was sent.
    sent_at: UnixMillis,
    /// The monotonic clock at the same moment.
    sent: Option<Instant>,
    /// Until the answer's headers arrived.
    rtt: Option<Duration>,
    /// The answer's `Date` header, as sent.
    date: Option<String>,
}

/// Notes the send time, the round trip and the `Date` header of each
/// attempt of the one call it is attached to.
#[derive(Debug, Clone, Default)]
struct DateReader(Arc<Mutex<Attempt>>);

impl DateReader {
    fn attempt(&self) -> std::sync::MutexGuard<'_, Attempt> {
        // Each hook replaces or fills plain fields: a poisoned lock still
        // holds a consistent value.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Intercept for DateReader {
    fn name(&self) -> &'static str {
        "OriginRouterStoreClock"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        *self.attempt() = Attempt {
            sent_at: unix_millis_now(),
            sent: Some(Instant::now()),
            rtt: None,
            date: None,
        };
        Ok(())
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let mut attempt = self.attempt();
        attempt.rtt = attempt.sent.map(|sent| sent.elapsed());
        attempt.date = context.response().headers().get("date").map(str::to_owned);
        Ok(())
    }
}

/// The Unix ms of an HTTP `Date` value, at the start of its second; an
/// error saying what is wrong with it (never the whole value if it is
/// long). Only IMF-fixdate is accepted: RFC 9110 §5.6.7 has every sender
/// generate it, and DynamoDB does.
fn parse_http_date(value: &str) -> Result<UnixMillis, String> {
    let shown: String = value
        .chars()
        .take(64)
        .flat_map(char::escape_debug)
        .collect();
    let date = DateTime::from_str(value, DateTimeFormat::HttpDate)
        .map_err(|e| format!("`Date` header \"{shown}\" is not an HTTP date: {e}"))?;
    u64::try_from(date.secs())
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .ok_or_else(|| format!("`Date` header \"{shown}\" is before 1970"))
}

/// A [`StoreClock`] from the send time, round trip and `Date` of one call.
fn reading(sent_at: UnixMillis, rtt: Duration, date: Option<&str>) -> Result<StoreClock, String> {
    let date = date.ok_or("the answer has no `Date` header")?;
    let second = parse_http_date(date)?;
    // The server read its clock somewhere in that second: its middle is
    // the best guess, off by at most half the resolution.
    let server_ms = second.saturating_add(DATE_RESOLUTION.as_millis() as u64 / 2);
    Ok(StoreClock::midpoint(
        sent_at,
        rtt,
        server_ms,
        DATE_RESOLUTION,
    ))
}

impl DynamoStore {
    /// One reading of the table's clock (see the module docs), bounded by
    /// the store's clock timeout.
    pub(super) async fn read_clock(&self) -> Result<StoreClock, StoreError> {
        let reader = DateReader::default();
        let call = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", "pool")
            .expression_attribute_values(":p", AttributeValue::S(CLOCK_PARTITION.into()))
            .limit(1)
            .customize()
            .interceptor(reader.clone())
            .send();
        match tokio::time::timeout(self.clock_timeout, call).await {
            Err(_) => return Err(StoreError::Timeout(self.clock_timeout)),
            Ok(result) => {
                result.map_err(dynamo_error("Query"))?;
            }
        }
        let attempt = reader.attempt();
        let rtt = attempt
            .rtt
            .ok_or_else(|| StoreError::dynamo("Query", "no answer was timed"))?;
        reading(attempt.sent_at, rtt, attempt.date.as_deref())
            .map_err(|why| StoreError::dynamo("Query", why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imf_fixdate_is_read_to_the_second() {
        // RFC 9110 §5.6.7's example.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Ok(784_111_777_000)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Ok(0));
    }

    #[test]
    fn a_bad_date_is_an_error_naming_the_header_never_a_panic() {
        for bad in [
            "",
            "yesterday",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 19ǿ4 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{202e}",
            "Sun, 06 Nov 99999 08:49:37 GMT",
            &"9".repeat(10_000),
        ] {
            let e = parse_http_date(bad).expect_err(bad);
            assert!(e.starts_with("`Date` header"), "{e}");
            assert!(e.len() < 400, "{e}");
        }
    }

    #[test]
    fn a_reading_takes_the_middle_of_the_second_and_of_the_call() {
        let c = reading(
            1_700_000_000_000,
            Duration::from_millis(100),
            Some("Tue, 14 Nov 2023 22:13:20 GMT"),
        )
        .unwrap();
        assert_eq!(c.server_ms, 1_700_000_000_500);
        assert_eq!(c.local_ms, 1_700_000_000_050);
        assert_eq!(c.offset_ms(), 450);
        assert_eq!(c.resolution, DATE_RESOLUTION);
        assert_eq!(c.uncertainty(), Duration::from_millis(550));

        let e = reading(0, Duration::ZERO, None).unwrap_err();
        assert!(e.contains("no `Date` header"), "{e}");
        let e = reading(0, Duration::ZERO, Some("soon")).unwrap_err();
        assert!(e.contains("`Date` header \"soon\""), "{e}");
    }
}
