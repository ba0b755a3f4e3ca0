//! Publishing compact rankings to a CloudFront KeyValueStore, for the
//! CloudFront Function edge (`store.kvs_arn`).
//!
//! The region's leader hands each round's ranking of every pool, with the
//! pool's controls, to [`KvsPublisher::submit`], at the point it hands the
//! ranking to its ranking store. `submit` only replaces the pool's newest
//! ranking under a lock held for a map insert, and wakes the writer: a
//! failing, hanging or slow KeyValueStore never delays probing or the
//! DynamoDB (or embedded) publish, which go on without it.
//!
//! - [`decide`]: whether a ranking is worth a write (its choice changed,
//!   or the heartbeat is due), a pure function;
//! - [`writer`]: the background task: batches of at most 50 keys per
//!   `UpdateKeys`, the store's ETag, conflicts between regions, bounds;
//! - [`client`]: the two calls on the SDK, and the endpoint override for a
//!   local server.
//!
//! Values are [`origin_router::compact`] lines under `pool/region`; their
//! `seq` and `generated_at` are the ranking's.
//!
//! Keys are only ever put, never deleted: a pool removed from the config
//! (or a region no longer probed) leaves its last value in the store for
//! good. The CloudFront Function generated from the new config never reads
//! it, and one generated from the old config takes it as stale once it is
//! older than `edge.ranking_max_age`; it only takes room (up to 1 KB a key)
//! until removed by hand (`aws cloudfront-keyvaluestore delete-key`).
//!
//! The store has no fencing of its own (one ETag for every key, no `seq`
//! check), so leadership is kept by the worker: one that stops leading
//! calls [`KvsPublisher::stand_down`], after which nothing it submitted is
//! written (an `UpdateKeys` already sent excepted), and its next
//! submission starts a new term in which every key is written afresh.

pub mod client;
pub mod decide;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use origin_router::config::{Config, PoolConfig};
use origin_router::control::Control;
use origin_router::document::RankingDocument;
use origin_router::sample::{unix_millis_now, UnixMillis};
use tokio::sync::Notify;

pub use client::{EndpointOverride, KvsApi, KvsError, SdkKvs};
pub use decide::{Choice, Why};

/// What the publisher needs of the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The region whose rankings these are (the keys' second half, and
    /// the metrics' label).
    pub region: String,
    /// `prober.kvs_heartbeat`.
    pub heartbeat: Duration,
    /// The pools as configured: a value names origins by their index here.
    pub pools: Arc<BTreeMap<String, PoolConfig>>,
}

impl Settings {
    pub fn from_config(config: &Config, region: &str) -> Settings {
        Settings {
            region: region.to_string(),
            heartbeat: config.prober.kvs_heartbeat,
            pools: Arc::new(
                config
                    .pools
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }
}

/// A pool's ranking and controls, as handed over.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub doc: RankingDocument,
    pub controls: Vec<Control>,
    /// The publishing term it was submitted in ([`KvsPublisher::stand_down`]).
    pub term: u64,
}

/// Between the leader and the writer.
#[derive(Default)]
pub(crate) struct Shared {
    /// The newest submitted ranking per pool, not yet taken by the writer.
    latest: Mutex<BTreeMap<String, Submitted>>,
    notify: Notify,
    /// Unix ms of the last successful write; 0: none yet.
    last_success: AtomicU64,
    /// Per pool, the `generated_at` of the value this region last wrote.
    written: Mutex<BTreeMap<String, UnixMillis>>,
    /// The publishing term: moved on by [`KvsPublisher::stand_down`]. The
    /// writer drops whatever was submitted in an older term, and checks
    /// before every `UpdateKeys` attempt, so a deposed leader's rankings
    /// are not written over its successor's.
    term: AtomicU64,
    /// Whether the current term has ended (stood down, no submission since).
    standing_down: AtomicBool,
}

impl Shared {
    fn latest(&self) -> MutexGuard<'_, BTreeMap<String, Submitted>> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn written(&self) -> MutexGuard<'_, BTreeMap<String, UnixMillis>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
}

/// Writes a region's rankings to a KeyValueStore in the background.
pub struct KvsPublisher {
    shared: Arc<Shared>,
    region: String,
    /// Unix ms when its current term started (it started, or published
    /// again after standing down).
    started: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl KvsPublisher {
    /// Starts the writer on `api`.
    pub fn spawn(api: Arc<dyn KvsApi>, settings: Settings) -> KvsPublisher {
        let shared = Arc::new(Shared::default());
        let region = settings.region.clone();
        let span = tracing::info_span!("kvs", region = %region);
        let task = tokio::spawn(tracing::Instrument::instrument(
            writer::run(api, settings, shared.clone()),
            span,
        ));
        KvsPublisher {
            shared,
            region,
            started: AtomicU64::new(unix_millis_now()),
            task,
        }
    }

    /// The publisher of `config`'s store (`store.kvs_arn`, through
    /// `store.kvs_endpoint` if set) for `region`; none without a store.
    pub async fn connect(config: &Config, region: &str) -> Option<KvsPublisher> {
        let arn = config.store.kvs_arn.as_deref()?;
        let api = SdkKvs::connect(
            arn,
            config.store.kvs_endpoint.as_deref(),
            writer::CALL_TIMEOUT,
        )
        .await;
        tracing::info!(
            %region,
            kvs_arn = arn,
            endpoint = config.store.kvs_endpoint.as_deref().unwrap_or("AWS"),
            heartbeat_ms = config.prober.kvs_heartbeat.as_millis() as u64,
            "compact rankings go to the KeyValueStore"
        );
        Some(KvsPublisher::spawn(
            Arc::new(api),
            Settings::from_config(config, region),
        ))
    }

    /// Hands over `doc` (one pool's ranking of this region) and the pool's
    /// `controls`, replacing any older ranking of the pool not yet taken.
    /// Never waits on the store.
    pub fn submit(&self, doc: RankingDocument, controls: Vec<Control>) {
        // How old the pool's value in the store is, on the ranking's clock
        // (the one the function judges freshness by): whatever keeps it
        // from being rewritten (a store that refuses, conflicts that never
        // settle, a ranking that cannot be encoded) shows here, per pool.
        // Before the first write of the pool in this term: since the term
        // started (a leader leading again is not judged by its old writes).
        if self.shared.standing_down.load(Ordering::Acquire) {
            self.shared.written().clear();
            self.started.store(unix_millis_now(), Ordering::Relaxed);
        }
        let written = self.shared.written().get(&doc.pool).copied();
        let age_ms = doc
            .generated_at
            .saturating_sub(written.unwrap_or(self.started.load(Ordering::Relaxed)));
        metrics::gauge!(
            "origin_router_kvs_value_age_seconds",
            "region" => self.region.clone(),
            "pool" => doc.pool.clone()
        )
        .set(age_ms as f64 / 1000.0);
        {
            let mut latest = self.shared.latest();
            // The first submission after standing down starts a new term:
            // the writer forgets what it wrote in the last one (another
            // worker may have written the keys since).
            if self.shared.standing_down.swap(false, Ordering::AcqRel) {
                self.shared.term.fetch_add(1, Ordering::AcqRel);
            }
            let term = self.shared.term();
            match latest.get(&doc.pool) {
                Some(queued) if queued.term == term && queued.doc.seq > doc.seq => {}
                _ => {
                    latest.insert(
                        doc.pool.clone(),
                        Submitted {
                            doc,
                            controls,
                            term,
                        },
                    );
                }
            }
        }
        self.shared.notify.notify_one();
        // Set here, each round, so the age grows while the writer is stuck
        // on a store that does not answer.
        if let Some(age) = self.last_write_age() {
            metrics::gauge!("origin_router_kvs_last_write_age_seconds", "region" => self.region.clone())
                .set(age.as_secs_f64());
        }
    }

    /// This worker no longer publishes the region's rankings (it follows,
    /// is barred, or stepped down): nothing it submitted is written from
    /// now on, not even a batch between two attempts (an `UpdateKeys`
    /// already sent cannot be called back). Its next submission starts a
    /// new term, judged afresh (every pool written at once), since the
    /// keys may hold another worker's values by then. Cheap and
    /// idempotent: called every round the worker does not publish.
    pub fn stand_down(&self) {
        if self.shared.standing_down.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut latest = self.shared.latest();
            self.shared.term.fetch_add(1, Ordering::AcqRel);
            latest.clear();
        }
        // Wakes the writer, so it drops what it kept pending.
        self.shared.notify.notify_one();
    }

    /// Stops writing and ends the writer task (the worker shutting
    /// down); an `UpdateKeys` in flight is abandoned. Idempotent.
    pub fn close(&self) {
        self.stand_down();
        self.task.abort();
    }

    /// Whether the writer task has ended.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    /// Time since the last successful write; `None` before the first.
    pub fn last_write_age(&self) -> Option<Duration> {
        match self.shared.last_success.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(unix_millis_now().saturating_sub(at))),
        }
    }
}

impl Drop for KvsPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
