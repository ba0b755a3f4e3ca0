//! The background writer: takes the newest ranking of each pool, writes
//! those whose choice changed or whose heartbeat is due, in batches, and
//! keeps whatever it could not write for the next round.
//!
//! One store serves every region, and every write names the store's ETag
//! (`If-Match`): two regions' leaders writing at once conflict, though
//! their keys never overlap. The loser reads the ETag again and retries
//! after a full-jitter backoff ([`backoff`]), a bounded number of times per
//! round; what is still unwritten then waits for the next round rather
//! than holding the writer, and is written then if still newest.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use origin_router::compact;
use origin_router::sample::unix_millis_now;
use rand::Rng;
use tokio::time::Instant;

use super::client::{KvsApi, KvsError};
use super::decide::{decide, Choice, Why};
use super::{Settings, Shared, Submitted};

/// Keys per `UpdateKeys` call: "UpdateKeys: 50 keys or 3 MB payload,
/// whichever comes first" (CloudFront quotas,
/// <https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/cloudfront-limits.html#limits-keyvaluestores>).
/// 50 values of at most 1 KB stay far below 3 MB.
pub const MAX_KEYS_PER_UPDATE: usize = 50;
/// `UpdateKeys` attempts per batch and round (conflicts included).
pub const MAX_ATTEMPTS: u32 = 8;
/// Full-jitter backoff after a conflict: uniform in
/// `[0, min(CAP, BASE × 2^(attempt - 1))]`.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// One value to write.
struct Due {
    pool: String,
    key: String,
    value: String,
    choice: Choice,
    why: Why,
}

/// What the writer remembers between rounds.
#[derive(Default)]
struct State {
    /// The choice last written per pool: what [`decide`] compares with.
    written: HashMap<String, Choice>,
    /// The newest ranking per pool not yet judged or not yet written.
    pending: BTreeMap<String, Submitted>,
    /// The ETag the last `UpdateKeys` returned: the next write tries it
    /// before describing the store again.
    etag: Option<String>,
    /// The publishing term of `written` and `pending`.
    term: u64,
}

pub(super) async fn run(api: Arc<dyn KvsApi>, settings: Settings, shared: Arc<Shared>) {
    let mut state = State::default();
    loop {
        // A submission during the last round left a permit: no wake-up is
        // lost.
        shared.notify.notified().await;
        let term = shared.term();
        if term != state.term {
            // Stood down (and maybe leading again): nothing of the last
            // term is written, and the keys are judged afresh.
            state.term = term;
            state.pending.clear();
            state.written.clear();
        }
        for (pool, sub) in std::mem::take(&mut *shared.latest()) {
            if sub.term != term {
                continue;
            }
            match state.pending.get(&pool) {
                Some(queued) if queued.doc.seq > sub.doc.seq => {}
                _ => {
                    state.pending.insert(pool, sub);
                }
            }
        }
        round(api.as_ref(), &settings, &shared, &mut state).await;
    }
}

/// One round: judge every pending ranking, write the due ones in batches.
async fn round(api: &dyn KvsApi, settings: &Settings, shared: &Shared, state: &mut State) {
    let region = settings.region.as_str();
    let mut due = Vec::new();
    let pools: Vec<String> = state.pending.keys().cloned().collect();
    for pool in pools {
        let Some(sub) = state.pending.get(&pool) else {
            continue;
        };
        let choice = Choice::of(&sub.doc, &sub.controls);
        let Some(why) = decide(
            state.written.get(&pool),
            &choice,
            sub.doc.generated_at,
            settings.heartbeat,
        ) else {
            // Not due: the next round's ranking is judged instead.
            state.pending.remove(&pool);
            continue;
        };
        let Some(pool_config) = settings.pools.get(&pool) else {
            tracing::warn!(%region, %pool, "not written to the KeyValueStore: the pool is not in the config");
            state.pending.remove(&pool);
            continue;
        };
        match compact::encode(pool_config, &sub.doc, &sub.controls, sub.doc.generated_at) {
            Ok(encoded) => {
                if encoded.dropped_origins > 0 {
                    metrics::counter!("origin_router_kvs_dropped_origins_total", "region" => region.to_string(), "pool" => pool.clone())
                        .increment(encoded.dropped_origins as u64);
                    tracing::warn!(
                        %region,
                        %pool,
                        seq = sub.doc.seq,
                        dropped_origins = encoded.dropped_origins,
                        bytes = encoded.value.len(),
                        "KeyValueStore value leaves out the least preferred origins to fit 1 KB"
                    );
                }
                due.push(Due {
                    key: compact::key(&pool, region),
                    pool,
                    value: encoded.value,
                    choice,
                    why,
                });
            }
            Err(e) => {
                // The same ranking would fail the same way: dropped; the
                // next one is tried afresh.
                metrics::counter!("origin_router_kvs_encode_errors_total", "region" => region.to_string(), "pool" => pool.clone())
                    .increment(1);
                tracing::error!(%region, %pool, seq = sub.doc.seq, error = %e, "ranking not written to the KeyValueStore: it cannot be encoded");
                state.pending.remove(&pool);
            }
        }
    }
    for batch in due.chunks(MAX_KEYS_PER_UPDATE) {
        let puts: Vec<(String, String)> = batch
            .iter()
            .map(|d| (d.key.clone(), d.value.clone()))
            .collect();
        let started = Instant::now();
        let term = state.term;
        let current = || shared.term() == term;
        match write_batch(api, region, &mut state.etag, &puts, &current).await {
            Ok(attempts) => {
                let elapsed = started.elapsed();
                shared
                    .last_success
                    .store(unix_millis_now(), Ordering::Relaxed);
                metrics::counter!("origin_router_kvs_writes_total", "region" => region.to_string())
                    .increment(1);
                metrics::histogram!("origin_router_kvs_write_seconds", "region" => region.to_string())
                    .record(elapsed.as_secs_f64());
                metrics::gauge!("origin_router_kvs_last_write_age_seconds", "region" => region.to_string())
                    .set(0.0);
                for d in batch {
                    metrics::counter!("origin_router_kvs_keys_written_total", "region" => region.to_string(), "reason" => d.why.as_str())
                        .increment(1);
                    tracing::debug!(
                        %region,
                        pool = %d.pool,
                        key = %d.key,
                        seq = d.choice.seq,
                        why = d.why.as_str(),
                        bytes = d.value.len(),
                        attempts,
                        elapsed_ms = elapsed.as_millis() as u64,
                        "written to the KeyValueStore"
                    );
                    state.pending.remove(&d.pool);
                    state.written.insert(d.pool.clone(), d.choice.clone());
                    shared
                        .written()
                        .insert(d.pool.clone(), d.choice.generated_at);
                }
            }
            Err(KvsError::StoodDown) => {
                tracing::info!(%region, keys = batch.len(), "not written to the KeyValueStore: this worker stood down");
                state.pending.clear();
                return;
            }
            Err(e) => {
                metrics::counter!("origin_router_kvs_failures_total", "region" => region.to_string(), "op" => e.op())
                    .increment(1);
                tracing::warn!(
                    %region,
                    keys = batch.len(),
                    error = %e,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "KeyValueStore write failed; the rankings stay pending for the next round"
                );
            }
        }
    }
}

/// Writes `puts` in one `UpdateKeys` call under the store's ETag (the one
/// the last write returned, else a fresh `DescribeKeyValueStore`),
/// re-reading it and backing off after each conflict, at most
/// [`MAX_ATTEMPTS`] calls; every call bounded by the call timeout. Returns
/// the attempts it took. Gives up as [`KvsError::StoodDown`] before any
/// attempt once `current` says the term is over.
async fn write_batch(
    api: &dyn KvsApi,
    region: &str,
    etag: &mut Option<String>,
    puts: &[(String, String)],
    current: &(dyn Fn() -> bool + Sync),
) -> Result<u32, KvsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tag = match etag.take() {
            Some(tag) => tag,
            None => bounded("DescribeKeyValueStore", api.etag()).await?,
        };
        if !current() {
            *etag = Some(tag);
            return Err(KvsError::StoodDown);
        }
        match bounded("UpdateKeys", api.update(&tag, puts)).await {
            Ok(new) => {
                *etag = Some(new);
                return Ok(attempt);
            }
            Err(e @ KvsError::Conflict { .. }) => {
                metrics::counter!("origin_router_kvs_conflicts_total", "region" => region.to_string())
                    .increment(1);
                tracing::debug!(%region, attempt, error = %e, "KeyValueStore conflict: another writer went first");
                if attempt >= MAX_ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
            // A timed-out write may have gone through and moved the ETag:
            // the next attempt describes the store again.
            Err(e) => return Err(e),
        }
    }
}

/// Bound on each call: a store that accepts and never answers holds the
/// writer this long, never the rounds.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, KvsError>>,
) -> Result<T, KvsError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(KvsError::Timeout {
            op,
            after: CALL_TIMEOUT,
        }))
}

/// Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
/// uniform in `[0, min(cap, base × 2^(attempt - 1))]`, so writers that
/// conflicted together spread apart.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use origin_router::config::{OriginConfig, PoolConfig};
    use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    /// A store that answers `conflicts` conflicts, then succeeds; it keeps
    /// what was written and counts calls.
    #[derive(Default)]
    struct Fake {
        conflicts: AtomicU32,
        fail: std::sync::atomic::AtomicBool,
        describes: AtomicU32,
        updates: AtomicU32,
        items: Mutex<BTreeMap<String, String>>,
        batch_sizes: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl KvsApi for Fake {
        async fn etag(&self) -> Result<String, KvsError> {
            self.describes.fetch_add(1, Ordering::SeqCst);
            Ok("e".into())
        }
        async fn update(&self, _etag: &str, puts: &[(String, String)]) -> Result<String, KvsError> {
            self.updates.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(KvsError::Failed {
                    op: "UpdateKeys",
                    message: "InternalServerException".into(),
                });
            }
            if self
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(KvsError::Conflict {
                    op: "UpdateKeys",
                    message: "stale".into(),
                });
            }
            self.batch_sizes.lock().unwrap().push(puts.len());
            self.items.lock().unwrap().extend(puts.iter().cloned());
            Ok("e".into())
        }
    }

    fn settings(pools: usize) -> Settings {
        let pools = (0..pools)
            .map(|i| {
                (
                    format!("p{i:03}"),
                    PoolConfig {
                        origins: vec![
                            OriginConfig::http("a", "a.example", 80),
                            OriginConfig::http("b", "b.example", 80),
                        ],
                        ..Default::default()
                    },
                )
            })
            .collect();
        Settings {
            region: "eu-west-1".into(),
            heartbeat: Duration::from_secs(10),
            pools: Arc::new(pools),
        }
    }

    fn doc(pool: &str, seq: u64) -> RankingDocument {
        RankingDocument::new(
            pool,
            "eu-west-1",
            seq,
            1_780_000_000_000 + seq * 1000,
            vec![
                RankedOrigin::measured("a", OriginState::Healthy, 10.0, 1),
                RankedOrigin::measured("b", OriginState::Healthy, 20.0, 1),
            ],
        )
    }

    fn submit_all(state: &mut State, settings: &Settings, seq: u64) {
        for pool in settings.pools.keys() {
            state.pending.insert(
                pool.clone(),
                Submitted {
                    doc: doc(pool, seq),
                    controls: Vec::new(),
                    term: 0,
                },
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_and_twenty_pools_go_in_batches_of_fifty() {
        let fake = Fake::default();
        let settings = settings(120);
        let shared = Shared::default();
        let mut state = State::default();
        submit_all(&mut state, &settings, 1);
        round(&fake, &settings, &shared, &mut state).await;
        assert_eq!(*fake.batch_sizes.lock().unwrap(), vec![50, 50, 20]);
        // One describe; the next batches reuse the ETag each write returned.
        assert_eq!(fake.describes.load(Ordering::SeqCst), 1);
        assert!(state.pending.is_empty());
        assert_eq!(fake.items.lock().unwrap().len(), 120);
        // Unchanged a second later: nothing to write.
        submit_all(&mut state, &settings, 2);
        round(&fake, &settings, &shared, &mut state).await;
        assert_eq!(fake.updates.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_retried_with_a_fresh_etag_within_the_attempt_bound() {
        let fake = Fake::default();
        let settings = settings(1);
        let shared = Shared::default();
        let mut state = State::default();
        fake.conflicts.store(3, Ordering::SeqCst);
        submit_all(&mut state, &settings, 1);
        round(&fake, &settings, &shared, &mut state).await;
        assert_eq!(fake.updates.load(Ordering::SeqCst), 4);
        assert_eq!(fake.describes.load(Ordering::SeqCst), 4);
        assert!(state.pending.is_empty());
        // More conflicts than attempts: given up for the round, kept.
        fake.conflicts.store(100, Ordering::SeqCst);
        let mut changed = doc("p000", 2);
        changed.origins.swap(0, 1);
        state.pending.insert(
            "p000".into(),
            Submitted {
                doc: changed,
                controls: vec![],
                term: 0,
            },
        );
        round(&fake, &settings, &shared, &mut state).await;
        assert_eq!(fake.updates.load(Ordering::SeqCst), 4 + MAX_ATTEMPTS);
        assert!(
            state.pending.contains_key("p000"),
            "kept for the next round"
        );
        fake.conflicts.store(0, Ordering::SeqCst);
        round(&fake, &settings, &shared, &mut state).await;
        assert!(state.pending.is_empty());
        let value = fake.items.lock().unwrap()["p000/eu-west-1"].clone();
        let (back, _) =
            compact::decode("p000", &settings.pools["p000"], "eu-west-1", &value).unwrap();
        assert_eq!(back.origins[0].id, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_stays_pending_and_the_newest_goes_next() {
        let fake = Fake::default();
        let settings = settings(1);
        let shared = Shared::default();
        let mut state = State::default();
        fake.fail.store(true, Ordering::SeqCst);
        submit_all(&mut state, &settings, 1);
        round(&fake, &settings, &shared, &mut state).await;
        assert_eq!(
            fake.updates.load(Ordering::SeqCst),
            1,
            "not retried at once"
        );
        assert_eq!(state.pending["p000"].doc.seq, 1);
        fake.fail.store(false, Ordering::SeqCst);
        submit_all(&mut state, &settings, 2);
        round(&fake, &settings, &shared, &mut state).await;
        assert!(state.pending.is_empty());
        assert_eq!(state.written["p000"].seq, 2);
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        for attempt in 1..=40 {
            let ceiling = (50u64 << (attempt - 1).min(16)).min(2000);
            for _ in 0..50 {
                let d = backoff(attempt).as_millis() as u64;
                assert!(d <= ceiling, "{attempt}: {d} > {ceiling}");
            }
        }
    }
}
