//! Publishing rankings without ever making probing wait.
//!
//! The worker hands each new ranking to [`Publisher::submit`], which only
//! replaces the pending ranking of that pool and returns. A background task
//! writes pending rankings to the store; on failure (throttling, outage) it
//! retries with capped exponential backoff and full jitter, and always
//! writes the *newest* pending ranking of a pool, so after an outage the
//! table gets the current ranking, not a backlog. A write refused as stale
//! (another leader published a newer one) is dropped, and so is one the
//! store rejects as invalid (it would be rejected on every retry).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use origin_router::document::RankingDocument;

use crate::events::Events;
use origin_router::store::{RankingStore, WriteOutcome};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Backoff bounds of failed writes.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Bound on one write attempt.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes rankings in the background.
pub struct Publisher {
    shared: Arc<Shared>,
    events: Events,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    pending: Mutex<BTreeMap<String, RankingDocument>>,
    /// The last ranking submitted per pool, for state-change events.
    last: Mutex<BTreeMap<String, RankingDocument>>,
    notify: Notify,
    idle: Notify,
    in_progress: Mutex<usize>,
    /// Since when every write has failed or been rejected (never a stale
    /// refusal: that is being deposed, which the lease says), cleared by
    /// the next successful write: what tells a leader that cannot publish
    /// to step down ([`Publisher::failing_for`]).
    failing_since: Mutex<Option<Instant>>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RankingDocument>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Publisher {
    /// Starts the writer of `region`'s rankings; state changes between
    /// submitted rankings go to `events`.
    pub fn spawn(store: Arc<dyn RankingStore>, region: String, events: Events) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(BTreeMap::new()),
            last: Mutex::new(BTreeMap::new()),
            notify: Notify::new(),
            idle: Notify::new(),
            in_progress: Mutex::new(0),
            failing_since: Mutex::new(None),
        });
        let task = tokio::spawn(write_loop(store, region, shared.clone()));
        Publisher {
            shared,
            events,
            task,
        }
    }

    /// Queues `doc`, replacing any older pending ranking of its pool.
    pub fn submit(&self, doc: RankingDocument) {
        {
            let mut last = self.shared.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(&doc.pool).is_none_or(|l| l.seq < doc.seq) {
                let events = crate::events::diff(last.get(&doc.pool), &doc);
                self.events.emit(&doc.pool, events, doc.generated_at);
                last.insert(doc.pool.clone(), doc.clone());
            }
        }
        let mut pending = self.shared.pending();
        match pending.get(&doc.pool) {
            Some(queued) if queued.seq >= doc.seq => {}
            _ => {
                pending.insert(doc.pool.clone(), doc);
            }
        }
        drop(pending);
        self.shared.notify.notify_one();
    }

    /// How long every write has been failing or rejected by the store (a
    /// stale refusal ends the run: another leader wrote, and the lease
    /// tells this worker so); `None` while the store answers.
    pub fn failing_for(&self) -> Option<Duration> {
        self.shared
            .failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }

    /// Forgets a run of failures (a worker that stepped down starts afresh
    /// when it leads again).
    pub fn forget_failures(&self) {
        *self
            .shared
            .failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Waits until nothing is pending or `within` passes; returns whether
    /// everything was written (or refused as stale).
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let idle = self.shared.idle.notified();
            let busy = !self.shared.pending().is_empty()
                || *self
                    .shared
                    .in_progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    > 0;
            if !busy {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write_loop(store: Arc<dyn RankingStore>, region: String, shared: Arc<Shared>) {
    // Each pool backs off on its own: (failures in a row, not before). One
    // pool that keeps failing (a stuck lock, a throttled key) never holds
    // back the others, which are taken in turn after the last one tried.
    let mut backoffs: HashMap<String, (u32, Instant)> = HashMap::new();
    let mut last_pool = String::new();
    loop {
        let now = Instant::now();
        let ready = |pool: &String| backoffs.get(pool).is_none_or(|(_, at)| *at <= now);
        let (next, wait) = {
            let mut pending = shared.pending();
            let after = pending
                .range::<String, _>((Bound::Excluded(&last_pool), Bound::Unbounded))
                .map(|(k, _)| k);
            let pool = after.chain(pending.keys()).find(|p| ready(p)).cloned();
            // Nothing ready: sleep until the first pool's backoff ends.
            let wait = pending
                .keys()
                .filter_map(|p| backoffs.get(p).map(|(_, at)| *at))
                .min();
            let doc = pool.and_then(|p| pending.remove(&p));
            if doc.is_some() {
                *shared.in_progress.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            }
            (doc, wait)
        };
        let Some(doc) = next else {
            match wait {
                Some(at) => {
                    // A new ranking of a ready pool wakes the loop early.
                    let _ = tokio::time::timeout_at(at, shared.notify.notified()).await;
                }
                None => {
                    last_pool.clear();
                    shared.idle.notify_waiters();
                    shared.notify.notified().await;
                }
            }
            continue;
        };
        last_pool.clone_from(&doc.pool);
        let started = Instant::now();
        let result = tokio::time::timeout(WRITE_TIMEOUT, store.write(&doc)).await;
        let elapsed = started.elapsed();
        let labels = [("region", region.clone()), ("pool", doc.pool.clone())];
        let failed = !matches!(result, Ok(Ok(_)));
        {
            let mut since = shared
                .failing_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Any answer from the store ends a run of failures: a stale
            // refusal too (another leader wrote, which the lease says).
            match result {
                Ok(Ok(_)) => *since = None,
                _ if failed => {
                    since.get_or_insert(started);
                }
                _ => {}
            }
        }
        let retry = match result {
            Ok(Ok(WriteOutcome::Written)) => {
                metrics::histogram!("origin_router_publish_seconds", &labels)
                    .record(elapsed.as_secs_f64());
                crate::metrics::record_published(&region, &doc);
                tracing::debug!(pool = %doc.pool, seq = doc.seq, elapsed_ms = elapsed.as_millis() as u64, "ranking published");
                false
            }
            Ok(Ok(WriteOutcome::Stale)) => {
                metrics::counter!("origin_router_publish_stale_total", &labels).increment(1);
                tracing::info!(pool = %doc.pool, seq = doc.seq, "ranking refused: the store holds a newer one");
                false
            }
            Ok(Err(e)) if e.is_permanent() => {
                // Invalid on every attempt: retrying would block this
                // pool's newer rankings behind it forever.
                metrics::counter!("origin_router_publish_rejected_total", &labels).increment(1);
                tracing::error!(pool = %doc.pool, seq = doc.seq, error = %e, "ranking rejected by the store; dropped");
                false
            }
            Ok(Err(e)) => {
                metrics::counter!("origin_router_publish_failures_total", &labels).increment(1);
                tracing::warn!(pool = %doc.pool, seq = doc.seq, error = %e, "publishing failed; will retry");
                true
            }
            Err(_) => {
                metrics::counter!("origin_router_publish_failures_total", &labels).increment(1);
                tracing::warn!(pool = %doc.pool, seq = doc.seq, "publishing timed out; will retry");
                true
            }
        };
        if retry {
            let failures = backoffs
                .get(&doc.pool)
                .map_or(0, |(n, _)| *n)
                .saturating_add(1);
            backoffs.insert(
                doc.pool.clone(),
                (failures, Instant::now() + backoff(failures)),
            );
            // Put it back unless a newer ranking of the pool arrived.
            shared.pending().entry(doc.pool.clone()).or_insert(doc);
        } else {
            backoffs.remove(&doc.pool);
        }
        *shared.in_progress.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base * 2^n))`,
/// at least 10 ms.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    let ms = rand::rng().random_range(10..=ceiling.as_millis().max(10) as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use origin_router::store::{MemoryStore, PoolRankings, StoreError};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A store whose writes fail while `down` is set, and always for
    /// `down_pool`; it counts write attempts and delegates the rest.
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
        down_pool: Option<&'static str>,
        attempts: AtomicUsize,
    }

    impl Flaky {
        fn new(down: bool, down_pool: Option<&'static str>) -> Flaky {
            Flaky {
                inner: MemoryStore::new(),
                down: AtomicBool::new(down),
                down_pool,
                attempts: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl RankingStore for Flaky {
        async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
            self.inner.read_pool(pool).await
        }
        async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::dynamo("PutItem", "service unavailable"));
            }
            if self.down_pool == Some(doc.pool.as_str()) {
                return Err(StoreError::dynamo("PutItem", "ThrottlingException"));
            }
            self.inner.write(doc).await
        }
        async fn delete(&self, pool: &str, region: &str) -> Result<bool, StoreError> {
            self.inner.delete(pool, region).await
        }
        async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
            self.inner.list_pools().await
        }
        async fn put_control(
            &self,
            control: &origin_router::control::Control,
            replace: bool,
        ) -> Result<origin_router::store::ControlWrite, StoreError> {
            self.inner.put_control(control, replace).await
        }
        async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
            self.inner.delete_control(pool, key).await
        }
    }

    fn doc(seq: u64) -> RankingDocument {
        RankingDocument {
            schema_version: 1,
            pool: "web".into(),
            region: "eu-west-1".into(),
            seq,
            generated_at: 1_780_000_000_000,
            probe_interval_ms: 2000,
            workers: 1,
            origins: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outage_retries_with_backoff_then_publishes_only_the_newest() {
        let store = Arc::new(Flaky::new(true, None));
        let publisher = Publisher::spawn(
            store.clone(),
            "eu-west-1".into(),
            crate::events::Events::log_only("eu-west-1"),
        );
        publisher.submit(doc(1));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let attempts = store.attempts.load(Ordering::SeqCst);
        // Capped backoff: at least a few retries, far fewer than a tight loop.
        assert!((3..=300).contains(&attempts), "{attempts} attempts in 30 s");
        for seq in 2..=5 {
            publisher.submit(doc(seq));
        }
        store.down.store(false, Ordering::SeqCst);
        assert!(publisher.flush(Duration::from_secs(10)).await);
        let stored = store.inner.read_pool("web").await.unwrap();
        assert_eq!(stored.rankings[0].seq, 5);
        // Older rankings were superseded while queued, never written.
        let before = store.attempts.load(Ordering::SeqCst);
        publisher.submit(doc(4));
        assert!(publisher.flush(Duration::from_secs(10)).await);
        assert_eq!(store.attempts.load(Ordering::SeqCst), before + 1);
        assert_eq!(
            store.inner.read_pool("web").await.unwrap().rankings[0].seq,
            5
        );
    }

    /// A ranking the store rejects as invalid (here: from a clock an hour
    /// ahead) is dropped after one attempt, and the pool's next ranking is
    /// published as usual.
    #[tokio::test(start_paused = true)]
    async fn an_invalid_ranking_is_dropped_not_retried_forever() {
        let store = Arc::new(Flaky::new(false, None));
        let publisher = Publisher::spawn(
            store.clone(),
            "eu-west-1".into(),
            crate::events::Events::log_only("eu-west-1"),
        );
        let mut future = doc(7);
        future.generated_at = origin_router::sample::unix_millis_now() + 3_600_000;
        publisher.submit(future);
        assert!(publisher.flush(Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.attempts.load(Ordering::SeqCst), 1, "not retried");
        assert!(store
            .inner
            .read_pool("web")
            .await
            .unwrap()
            .rankings
            .is_empty());
        publisher.submit(doc(8));
        assert!(publisher.flush(Duration::from_secs(10)).await);
        assert_eq!(
            store.inner.read_pool("web").await.unwrap().rankings[0].seq,
            8
        );
    }

    /// A pool whose writes keep failing (it sorts first) never holds back
    /// another pool's rankings.
    #[tokio::test(start_paused = true)]
    async fn one_failing_pool_never_starves_another() {
        let store = Arc::new(Flaky::new(false, Some("api")));
        let publisher = Publisher::spawn(
            store.clone(),
            "eu-west-1".into(),
            crate::events::Events::log_only("eu-west-1"),
        );
        for seq in 1..=5 {
            let mut api = doc(seq);
            api.pool = "api".into();
            publisher.submit(api);
            publisher.submit(doc(seq));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let web = store.inner.read_pool("web").await.unwrap();
            assert_eq!(
                web.rankings.first().map(|d| d.seq),
                Some(seq),
                "round {seq}"
            );
        }
    }

    #[test]
    fn backoff_is_capped() {
        for n in 0..40 {
            let b = backoff(n);
            assert!(
                b >= Duration::from_millis(10) && b <= BACKOFF_CAP,
                "{n}: {b:?}"
            );
        }
    }
}
