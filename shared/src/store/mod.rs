//! Where rankings live. One trait, several backends:
//!
//! - [`MemoryStore`]: in process, for tests;
//! - [`EmbeddedStore`]: files on local disk that one prober and any number of
//!   edge processes on the same machine share (the default);
//! - [`DynamoStore`]: the DynamoDB global table used in AWS.
//!
//! Every backend refuses a write whose `seq` is not newer than the stored
//! one, so a deposed leader can never replace a newer ranking.

mod dynamodb;
mod embedded;
#[cfg(target_os = "linux")]
mod kernel_clock;
mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use dynamodb::{codec, ClientTuning, DynamoStore};
pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;

use crate::config::StoreConfig;
use crate::control::{Control, PoolControls};
use crate::document::{seq_ceiling, RankingDocument};
use crate::sample::UnixMillis;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored.
    Written,
    /// Refused: the store holds a ranking with this `seq` or a newer one.
    Stale,
}

/// Rankings of one pool, one per region, plus what could not be decoded,
/// and the pool's drains and overrides from the same read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolRankings {
    pub rankings: Vec<RankingDocument>,
    /// Entries skipped as unreadable: (region or key, reason). Callers log
    /// them; a bad entry never hides the good ones.
    pub skipped: Vec<(String, String)>,
    /// The pool's stored drains and overrides (in force or expired: filter
    /// with [`crate::control::active`]) and the unreadable ones.
    pub controls: PoolControls,
}

/// What [`RankingStore::put_control`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlWrite {
    /// Stored.
    Written,
    /// Not stored: a control with the same key is in force and the caller
    /// did not ask to replace it.
    InForce,
}

impl PoolRankings {
    pub fn region(&self, region: &str) -> Option<&RankingDocument> {
        self.rankings.iter().find(|r| r.region == region)
    }
}

/// A store failure (as opposed to a refused stale write).
///
/// [`StoreError::is_permanent`] tells a publisher whether a retry can help:
/// an invalid ranking is invalid on every attempt.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid name `{0}` (1-64 of A-Z a-z 0-9 _ . -)")]
    InvalidName(String),
    #[error("invalid ranking: {0}")]
    Invalid(#[from] crate::document::DocumentError),
    /// A DynamoDB call failed. `message` is one line for logs (the
    /// service's code and message, or the transport failure: never the raw
    /// response); `source` keeps the SDK's error itself, so a caller can
    /// walk the chain or downcast it.
    #[error("DynamoDB {operation}: {message}")]
    Dynamo {
        /// The API call, e.g. `Query`, `PutItem`.
        operation: &'static str,
        message: String,
        #[source]
        source: BoxError,
    },
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("invalid control: {0}")]
    InvalidControl(String),
    #[error("{path}: refusing an unsafe store location: {why}")]
    Unsafe { path: String, why: String },
}

/// One reading of a store's own clock against this process's wall clock.
///
/// A worker without Redis compares its clock with the store it publishes
/// to, so that a worker whose clock is off can tell before it leads (issue
/// 24). Like NTP, the reading assumes the server read its clock halfway
/// through the call: the error of that assumption is at most half the
/// round trip, plus half the server clock's own resolution (see
/// [`StoreClock::uncertainty`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreClock {
    /// The store's time at the midpoint of the call, best estimate (Unix ms).
    pub server_ms: UnixMillis,
    /// This process's wall clock at the same midpoint (Unix ms).
    pub local_ms: UnixMillis,
    /// The call's round trip.
    pub rtt: std::time::Duration,
    /// How coarse the server's reading is (1 s for an HTTP `Date` header).
    pub resolution: std::time::Duration,
}

impl StoreClock {
    /// server − local, ms (positive: this process's clock is behind).
    pub fn offset_ms(&self) -> i64 {
        // Both are Unix ms, far below i64::MAX; saturate rather than wrap
        // on absurd input.
        let server = i64::try_from(self.server_ms).unwrap_or(i64::MAX);
        let local = i64::try_from(self.local_ms).unwrap_or(i64::MAX);
        server.saturating_sub(local)
    }

    /// How far the true offset may be from `offset_ms`: half the round trip
    /// plus half the resolution.
    ///
    /// The server read its clock at some instant inside the round trip, so
    /// taking the midpoint is off by at most rtt / 2; a reading truncated
    /// to `resolution` (and taken as the middle of its interval) is off by
    /// at most resolution / 2 more.
    pub fn uncertainty(&self) -> std::time::Duration {
        self.rtt / 2 + self.resolution / 2
    }

    /// A reading from a call that started at `started` (this process's
    /// wall clock, Unix ms) and took `rtt` (measured on the monotonic
    /// clock), in which the server's clock read `server_ms` (already the
    /// middle of its `resolution` interval). Public so that other clocks a
    /// worker compares with (Redis' `TIME`) are read the same way.
    pub fn midpoint(
        started: UnixMillis,
        rtt: std::time::Duration,
        server_ms: UnixMillis,
        resolution: std::time::Duration,
    ) -> StoreClock {
        let half = u64::try_from(rtt.as_millis() / 2).unwrap_or(u64::MAX);
        StoreClock {
            server_ms,
            local_ms: started.saturating_add(half),
            rtt,
            resolution,
        }
    }
}

/// Any error, as a store failure's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StoreError {
    /// A failed DynamoDB `operation` whose cause is `source`; the message
    /// is `source` and its chain on one line. (The DynamoDB store builds
    /// its errors from the SDK's; test fakes pass a text:
    /// `StoreError::dynamo("Query", "ThrottlingException: slow down")`.)
    pub fn dynamo(operation: &'static str, source: impl Into<BoxError>) -> StoreError {
        let source = source.into();
        StoreError::Dynamo {
            operation,
            message: error_chain(source.as_ref()),
            source,
        }
    }

    /// The same write would fail the same way again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::Invalid(_)
                | StoreError::InvalidName(_)
                | StoreError::InvalidControl(_)
                | StoreError::Unsafe { .. }
        )
    }
}

/// `e` and each of its sources, joined by `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Whether a write of `doc` may replace `stored` at `now`: only a newer
/// `seq`, unless the stored one is above [`seq_ceiling`] (a runaway clock
/// wrote it; any sane writer may repair it). Every backend decides with
/// this rule, DynamoDB in its condition expression.
pub fn may_replace(stored: &RankingDocument, doc: &RankingDocument, now: UnixMillis) -> bool {
    stored.seq < doc.seq || stored.seq > seq_ceiling(now)
}

/// A place rankings are published to and read from.
#[async_trait]
pub trait RankingStore: Send + Sync + 'static {
    /// Every region's ranking of `pool`, and the pool's drains and
    /// overrides, in one read (DynamoDB: one Query of the pool's
    /// partition).
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError>;

    /// Stores `doc` if [`may_replace`] allows it over the stored ranking of
    /// the same (pool, region). A ranking that fails validation or
    /// [`RankingDocument::check_clock`] is an error, never stored.
    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError>;

    /// Removes the ranking of (pool, region), whatever its `seq`; returns
    /// whether there was one. The operator's repair for a poisoned item
    /// (`prober reset-ranking`).
    async fn delete(&self, pool: &str, region: &str) -> Result<bool, StoreError>;

    /// Pools that have at least one ranking.
    async fn list_pools(&self) -> Result<Vec<String>, StoreError>;

    /// The drains and overrides stored for `pool`: those of
    /// [`RankingStore::read_pool`], which reads them with the rankings.
    async fn controls(&self, pool: &str) -> Result<PoolControls, StoreError> {
        Ok(self.read_pool(pool).await?.controls)
    }

    /// Stores `control` under its key. With `replace` false it is stored
    /// only if no control under that key is in force at `control.set_at`,
    /// decided atomically by the store (DynamoDB: a condition expression;
    /// embedded: under the pool's lock), so two operators setting the same
    /// override at once cannot both win. A control failing
    /// [`Control::validate`] is an error, never stored.
    ///
    /// Required, with [`RankingStore::delete_control`]: every store holds
    /// drains and overrides (the contract test checks each backend), so a
    /// new backend cannot compile without them.
    async fn put_control(
        &self,
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError>;

    /// Removes the control with `key` ([`Control::key`]) of `pool`; returns
    /// whether there was one.
    async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError>;

    /// One reading of the store's own clock against this process's, or
    /// `None` if the store has no clock of its own to compare with.
    ///
    /// The default is `None`: a store living inside this process (the
    /// [`MemoryStore`], test fakes) shares this process's clock, so there is
    /// nothing to compare. Stores with a clock of their own override it:
    /// DynamoDB reads its answer's `Date` header; the embedded store reads
    /// the kernel's clock in a way a process-level fake cannot touch (see
    /// its module docs for what that can and cannot catch).
    async fn clock(&self) -> Result<Option<StoreClock>, StoreError> {
        Ok(None)
    }
}

/// The store a configuration names: the DynamoDB table if one is set (the
/// replica nearest `region`, see [`DynamoStore::connect`]), else the
/// embedded store. The one way the prober, the CLI and the edge open it.
pub async fn open(
    config: &StoreConfig,
    region: &str,
    client: ClientTuning,
) -> Arc<dyn RankingStore> {
    match DynamoStore::connect(config, region, client).await {
        Some(table) => Arc::new(table),
        None => Arc::new(EmbeddedStore::new(config.embedded_path.clone())),
    }
}

/// A short description of where a configuration's rankings live.
pub fn describe(config: &StoreConfig) -> String {
    match &config.dynamodb_table {
        Some(table) => format!("dynamodb table {table}"),
        None => format!("embedded store {}", config.embedded_path.display()),
    }
}

/// The table replica region to use from `region`: the nearest of
/// `store.table_regions`, or `None` (the SDK's configured region) if none
/// are listed.
pub fn replica_for(config: &StoreConfig, region: &str) -> Option<String> {
    crate::geo::nearest_first(
        region,
        config.table_regions.iter().map(String::as_str),
        &BTreeMap::new(),
    )
    .first()
    .map(|r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::time::Duration;

    /// The offset's sign: positive when this process is behind.
    #[test]
    fn clock_offset_is_server_minus_local() {
        let c = StoreClock {
            server_ms: 1_700_000_003_600,
            local_ms: 1_700_000_000_000,
            rtt: Duration::from_millis(40),
            resolution: Duration::from_secs(1),
        };
        assert_eq!(c.offset_ms(), 3_600);
        let ahead = StoreClock {
            server_ms: 1_700_000_000_000,
            local_ms: 1_700_003_600_000,
            ..c
        };
        assert_eq!(ahead.offset_ms(), -3_600_000);
        // Absurd readings saturate, never wrap or panic.
        let absurd = StoreClock {
            server_ms: u64::MAX,
            local_ms: 0,
            ..c
        };
        assert_eq!(absurd.offset_ms(), i64::MAX);
        let absurd = StoreClock {
            server_ms: 0,
            local_ms: u64::MAX,
            ..c
        };
        assert_eq!(absurd.offset_ms(), -i64::MAX);
    }

    /// Half the round trip plus half the resolution.
    #[test]
    fn clock_uncertainty_is_half_rtt_plus_half_resolution() {
        let c = StoreClock {
            server_ms: 0,
            local_ms: 0,
            rtt: Duration::from_millis(40),
            resolution: Duration::from_secs(1),
        };
        assert_eq!(c.uncertainty(), Duration::from_millis(520));
        let exact = StoreClock {
            resolution: Duration::ZERO,
            rtt: Duration::from_micros(3),
            ..c
        };
        assert_eq!(exact.uncertainty(), Duration::from_nanos(1_500));
    }

    /// The local side of a reading is the middle of the call.
    #[test]
    fn clock_midpoint_is_half_way_through_the_call() {
        let c = StoreClock::midpoint(
            1_000,
            Duration::from_millis(41),
            2_500,
            Duration::from_secs(1),
        );
        assert_eq!(c.local_ms, 1_020);
        assert_eq!(c.offset_ms(), 1_480);
        assert_eq!(c.rtt, Duration::from_millis(41));
        let c = StoreClock::midpoint(u64::MAX, Duration::MAX, 0, Duration::ZERO);
        assert_eq!(c.local_ms, u64::MAX);
    }

    /// What a fake store passes to [`StoreError::dynamo`] is the source,
    /// and the message holds its chain.
    #[test]
    fn a_dynamo_error_from_any_cause_keeps_it() {
        let e = StoreError::dynamo("Query", "ThrottlingException: slow down");
        assert_eq!(
            e.to_string(),
            "DynamoDB Query: ThrottlingException: slow down"
        );
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("ThrottlingException: slow down")
        );

        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Dispatch(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        let e = StoreError::dynamo("Scan", Dispatch(io));
        assert_eq!(e.to_string(), "DynamoDB Scan: dispatch failure: no answer");
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<Dispatch>())
            .map(|d| d.0.kind());
        assert_eq!(io, Some(std::io::ErrorKind::TimedOut));
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! Behaviour every backend must show; each backend's tests run it.
    use super::*;
    use crate::document::tests::sample_doc;

    pub async fn check(store: &dyn RankingStore) {
        assert!(store.read_pool("web").await.unwrap().rankings.is_empty());
        let doc = sample_doc();
        assert_eq!(store.write(&doc).await.unwrap(), WriteOutcome::Written);
        let mut other_region = doc.clone();
        other_region.region = "us-east-1".into();
        other_region.seq = 1;
        assert_eq!(
            store.write(&other_region).await.unwrap(),
            WriteOutcome::Written
        );

        // Equal and older seq are refused; the stored ranking stays.
        let mut older = doc.clone();
        older.origins.reverse();
        assert_eq!(store.write(&older).await.unwrap(), WriteOutcome::Stale);
        older.seq = 3;
        assert_eq!(store.write(&older).await.unwrap(), WriteOutcome::Stale);
        let read = store.read_pool("web").await.unwrap();
        assert_eq!(read.rankings.len(), 2);
        assert_eq!(read.region("eu-west-1").unwrap(), &doc);

        let mut newer = doc.clone();
        newer.seq = 43;
        newer.origins.reverse();
        assert_eq!(store.write(&newer).await.unwrap(), WriteOutcome::Written);
        assert_eq!(
            store
                .read_pool("web")
                .await
                .unwrap()
                .region("eu-west-1")
                .unwrap(),
            &newer
        );

        let mut api = doc.clone();
        api.pool = "api".into();
        store.write(&api).await.unwrap();
        let mut pools = store.list_pools().await.unwrap();
        pools.sort();
        assert_eq!(pools, ["api", "web"]);

        // A runaway clock's ranking is refused, as an invalid one: from an
        // hour ahead, or with a seq beyond the ceiling.
        let now = crate::sample::unix_millis_now();
        let mut future = newer.clone();
        future.seq = 44;
        future.generated_at = now + 3_600_000;
        let err = store.write(&future).await.unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("generated_at"),
            "{err}"
        );
        let mut runaway = newer.clone();
        runaway.seq = seq_ceiling(now) + 1_000_000;
        let err = store.write(&runaway).await.unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("seq"),
            "{err}"
        );

        // Delete removes one (pool, region), whatever its seq.
        assert!(store.delete("web", "eu-west-1").await.unwrap());
        assert!(!store.delete("web", "eu-west-1").await.unwrap());
        let read = store.read_pool("web").await.unwrap();
        assert_eq!(read.rankings.len(), 1);
        assert_eq!(read.rankings[0].region, "us-east-1");
    }

    /// Controls: put, read back, replace by key, delete.
    pub async fn controls(store: &dyn RankingStore) {
        use super::ControlWrite::{InForce, Written};
        use crate::control::tests::drain;
        assert!(store.controls("web").await.unwrap().controls.is_empty());
        let a = drain("a", 1_000, 61_000);
        assert_eq!(store.put_control(&a, false).await.unwrap(), Written);
        let mut b = drain("b", 1_000, 61_000);
        assert_eq!(store.put_control(&b, true).await.unwrap(), Written);
        assert_eq!(
            store.controls("web").await.unwrap().controls,
            [a.clone(), b.clone()]
        );
        // The same read brings rankings and controls, and the controls are
        // never taken for rankings.
        let doc = crate::document::tests::sample_doc();
        store.write(&doc).await.unwrap();
        let read = store.read_pool("web").await.unwrap();
        assert_eq!(read.rankings, std::slice::from_ref(&doc));
        assert_eq!(read.controls.controls, [a.clone(), b.clone()]);
        assert!(read.skipped.is_empty() && read.controls.skipped.is_empty());
        assert!(store.delete("web", &doc.region).await.unwrap());

        // Without `replace`, one in force under the same key wins...
        let mut b2 = b.clone();
        b2.reason = "longer maintenance".into();
        b2.set_at = 30_000;
        b2.until = 90_000;
        assert_eq!(store.put_control(&b2, false).await.unwrap(), InForce);
        assert_eq!(store.controls("web").await.unwrap().controls[1], b);
        // ...unless it has ended by the new one's start...
        let mut b3 = b2.clone();
        b3.set_at = 61_000;
        b3.until = 120_000;
        assert_eq!(store.put_control(&b3, false).await.unwrap(), Written);
        assert_eq!(store.controls("web").await.unwrap().controls[1], b3);
        // ...or the caller replaces it.
        b.reason = "longer maintenance".into();
        assert_eq!(store.put_control(&b, true).await.unwrap(), Written);
        assert_eq!(
            store.controls("web").await.unwrap().controls,
            [a.clone(), b.clone()]
        );
        assert!(store.controls("api").await.unwrap().controls.is_empty());

        let mut bad = a.clone();
        bad.until = bad.set_at;
        let err = store.put_control(&bad, true).await.unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("until"),
            "{err}"
        );

        assert!(store.delete_control("web", &a.key()).await.unwrap());
        assert!(!store.delete_control("web", &a.key()).await.unwrap());
        assert_eq!(store.controls("web").await.unwrap().controls, [b]);
    }

    /// A stored ranking whose seq a runaway clock pushed beyond the
    /// ceiling is replaced by the next sane write; `plant` stores it
    /// without the store's checks.
    pub async fn poisoned_ranking_is_repaired(
        store: &dyn RankingStore,
        plant: impl FnOnce(RankingDocument),
    ) {
        let mut poisoned = sample_doc();
        poisoned.seq = i64::MAX as u64;
        plant(poisoned);
        assert_eq!(
            store.read_pool("web").await.unwrap().rankings[0].seq,
            i64::MAX as u64
        );
        let now = crate::sample::unix_millis_now();
        let mut sane = sample_doc();
        sane.seq = now * crate::document::SEQ_PER_MS;
        sane.generated_at = now;
        assert_eq!(store.write(&sane).await.unwrap(), WriteOutcome::Written);
        assert_eq!(store.read_pool("web").await.unwrap().rankings[0], sane);
    }
}
