//! Coordination through one Redis per region. Keys (the `{region}` hash tag
//! keeps a region's keys on one cluster slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `origin-router:{R}:leader` | string, PX lease | the leader: `WORKER#NONCE` |
//! | `origin-router:{R}:seq` | string | last fencing number handed out |
//! | `origin-router:{R}:workers` | zset | worker id, scored by last share (ms) |
//! | `origin-router:{R}:samples:{W}` | list | worker W's rounds, newest first, `ID\nJSON` |
//! | `origin-router:{R}:ranking:{P}` | string | latest published ranking of pool P (JSON) |
//! | `origin-router:{R}:clocks` | hash | worker id → `OFFSET_MS AT_MS`: each worker's last measured clock offset to Redis' `TIME` (for `prober status`) |
//!
//! Before every lease attempt and renewal a worker reads Redis' `TIME`
//! and measures its own clock's offset to it ([`super::clock`]); past
//! `prober.max_clock_skew` it does not run the lease script at all, and
//! gives the lease up if it held it.
//!
//! The lease is renewed, and `seq` handed out, by one Lua script that first
//! checks the caller still holds the lease: renewal and fencing are atomic,
//! and only the holder can renew. `seq` is made from Redis' clock (`TIME`),
//! one clock for the whole region, so no worker's runaway clock can push
//! it ahead; a stored `seq` further ahead than the allowed skew (written
//! before, by a runaway clock) is reset to Redis' time.
//!
//! The lease value carries a nonce drawn by each process, so two workers
//! started by mistake with one `worker_id` are still two contenders: only
//! one of them can hold the lease.
//!
//! Redis values are never trusted: an entry that does not parse is skipped
//! with a log line (once), and never stops the ranking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use origin_router::document::{RankingDocument, MAX_CLOCK_SKEW_MS, SEQ_PER_MS};
use origin_router::sample::{Sample, UnixMillis};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use origin_router::store::StoreClock;

use super::clock::{Clock, Judged};
use super::{CoordError, Coordinator, Role};

const LEAD: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  holder = ARGV[1]
end
if holder ~= ARGV[1] then
  return {0, holder, ''}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local floor = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if current ~= current or current < 0 or current > floor + tonumber(ARGV[4]) then current = floor end
local nxt = current + 1
if floor > nxt then nxt = floor end
local text = string.format('%d', nxt)
redis.call('SET', KEYS[2], text)
return {1, text, string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))}
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Workers of one region coordinating through Redis.
pub struct RedisCoordinator {
    conn: ConnectionManager,
    region: String,
    worker: String,
    /// `worker#nonce`: what this process writes into the lease.
    lease_value: String,
    lease_ttl: Duration,
    retention: usize,
    batch_counter: AtomicU64,
    /// Parsed batches by id, so the leader parses each batch once.
    parsed: Mutex<HashMap<String, Arc<Vec<Sample>>>>,
    lead_script: redis::Script,
    release_script: redis::Script,
    /// This worker's clock against Redis'.
    clock: Arc<Clock>,
}

/// The worker id in a lease value (`worker#nonce`).
pub fn worker_of(lease_value: &str) -> &str {
    lease_value.split('#').next().unwrap_or_default()
}

fn key(region: &str, rest: &str) -> String {
    format!("origin-router:{{{region}}}:{rest}")
}

fn err(op: &'static str) -> impl Fn(redis::RedisError) -> CoordError {
    move |e| CoordError {
        op,
        message: e.to_string(),
    }
}

/// A connection manager that connects lazily and fails fast: one retry,
/// short timeouts. The crate's default (6 retries with backoff) holds a
/// call for ~10 s on a refused connection; a round must not wait that long.
pub fn connection(url: &str) -> Result<ConnectionManager, CoordError> {
    let client = redis::Client::open(url).map_err(err("connect"))?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    ConnectionManager::new_lazy_with_config(client, config).map_err(err("connect"))
}

impl RedisCoordinator {
    pub fn new(
        url: &str,
        region: &str,
        worker: &str,
        lease_ttl: Duration,
        retention: usize,
        clock: Arc<Clock>,
    ) -> Result<Self, CoordError> {
        Ok(RedisCoordinator {
            conn: connection(url)?,
            region: region.to_string(),
            worker: worker.to_string(),
            lease_value: format!("{worker}#{:016x}", rand::random::<u64>()),
            lease_ttl,
            retention: retention.max(1),
            batch_counter: AtomicU64::new(0),
            parsed: Mutex::new(HashMap::new()),
            lead_script: redis::Script::new(LEAD),
            release_script: redis::Script::new(RELEASE),
            clock,
        })
    }

    /// Reads Redis' `TIME`, timed: one reading of the region's clock.
    pub async fn time(&self) -> Result<StoreClock, CoordError> {
        let mut conn = self.conn.clone();
        let started = origin_router::sample::unix_millis_now();
        let timer = std::time::Instant::now();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(err("time"))?;
        let rtt = timer.elapsed();
        Ok(StoreClock {
            server_ms: secs.saturating_mul(1000).saturating_add(micros / 1000),
            local_ms: started.saturating_add(rtt.as_millis() as u64 / 2),
            rtt,
            resolution: Duration::from_millis(1),
        })
    }

    fn parse_batch(&self, worker: &str, entry: &str) -> Arc<Vec<Sample>> {
        let Some((id, json)) = entry.split_once('\n') else {
            tracing::warn!(region = %self.region, %worker, "skipping a Redis sample entry without an id line");
            return Arc::new(Vec::new());
        };
        if let Some(batch) = self
            .parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return batch.clone();
        }
        let now = self
            .clock
            .region_time(origin_router::sample::unix_millis_now());
        let batch = match serde_json::from_str::<Vec<Sample>>(json) {
            Ok(samples) => {
                let (good, bad): (Vec<Sample>, Vec<Sample>) = samples
                    .into_iter()
                    .partition(|s| s.worker == worker && s.check(now).is_ok());
                if let Some(s) = bad.first() {
                    let why = if s.worker != worker {
                        format!("worker `{}` in worker `{worker}`'s list", s.worker)
                    } else {
                        s.check(now).err().unwrap_or_default()
                    };
                    tracing::warn!(region = %self.region, %worker, batch = %id, skipped = bad.len(), reason = %why, "skipping implausible samples from Redis");
                }
                good
            }
            Err(e) => {
                tracing::warn!(region = %self.region, %worker, batch = %id, error = %e, "skipping an unreadable Redis sample entry");
                Vec::new()
            }
        };
        let batch = Arc::new(batch);
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), batch.clone());
        batch
    }
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    async fn share(&self, samples: &[Sample]) -> Result<(), CoordError> {
        let now = self
            .clock
            .region_time(origin_router::sample::unix_millis_now());
        let id = format!(
            "{}:{}:{}",
            self.worker,
            now,
            self.batch_counter.fetch_add(1, Ordering::Relaxed)
        );
        let entry = format!(
            "{id}\n{}",
            serde_json::to_string(samples).map_err(|e| CoordError {
                op: "share",
                message: e.to_string(),
            })?
        );
        let list = key(&self.region, &format!("samples:{}", self.worker));
        let workers = key(&self.region, "workers");
        let keep_ms = (self.lease_ttl.as_millis() as u64).max(60_000) * 2;
        let mut conn = self.conn.clone();
        redis::pipe()
            .lpush(&list, entry)
            .ignore()
            .ltrim(&list, 0, self.retention as isize - 1)
            .ignore()
            .pexpire(&list, keep_ms as i64)
            .ignore()
            .zadd(&workers, &self.worker, now)
            .ignore()
            .zrembyscore(&workers, "-inf", now.saturating_sub(keep_ms))
            .ignore()
            .hset(
                key(&self.region, "clocks"),
                &self.worker,
                format!("{} {now}", self.clock.offset_ms().unwrap_or(0)),
            )
            .ignore()
            .pexpire(key(&self.region, "clocks"), keep_ms as i64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(err("share"))
    }

    /// `now` is not used: the clock check and the fencing number come from
    /// Redis' clock.
    async fn lead(&self, _now: UnixMillis) -> Result<Role, CoordError> {
        let reading = self.time().await?;
        if let Judged::Off { offset_ms } = self.clock.record(&reading, "redis") {
            // Neither take nor renew: give the lease up if this worker
            // held it, so a sane worker takes over at its next round.
            self.release().await?;
            return Ok(Role::Barred { offset_ms });
        }
        let mut conn = self.conn.clone();
        let (held, value, at): (i64, String, String) = self
            .lead_script
            .key(key(&self.region, "leader"))
            .key(key(&self.region, "seq"))
            .arg(&self.lease_value)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(SEQ_PER_MS)
            .arg(MAX_CLOCK_SKEW_MS * SEQ_PER_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(err("lead"))?;
        if held == 1 {
            let seq = value.parse::<u64>().map_err(|_| CoordError {
                op: "lead",
                message: format!("seq `{value}` is not a number"),
            })?;
            let at = at.parse::<u64>().map_err(|_| CoordError {
                op: "lead",
                message: format!("time `{at}` is not a number"),
            })?;
            Ok(Role::Leader { seq, at })
        } else {
            Ok(Role::Follower {
                leader: Some(worker_of(&value).to_string()),
            })
        }
    }

    async fn samples(&self, now: UnixMillis, window: Duration) -> Result<Vec<Sample>, CoordError> {
        let mut conn = self.conn.clone();
        let since = now.saturating_sub(window.as_millis() as u64);
        let workers: Vec<String> = conn
            .zrangebyscore(key(&self.region, "workers"), since, "+inf")
            .await
            .map_err(err("samples"))?;
        let mut out = Vec::new();
        let mut seen_ids = Vec::new();
        for worker in workers {
            if !origin_router::config::is_name(&worker) {
                tracing::warn!(region = %self.region, "skipping a worker with an invalid id in Redis");
                continue;
            }
            let entries: Vec<String> = conn
                .lrange(key(&self.region, &format!("samples:{worker}")), 0, -1)
                .await
                .map_err(err("samples"))?;
            for entry in entries {
                if let Some((id, _)) = entry.split_once('\n') {
                    seen_ids.push(id.to_string());
                }
                out.extend(
                    self.parse_batch(&worker, &entry)
                        .iter()
                        .filter(|s| s.at >= since)
                        .cloned(),
                );
            }
        }
        // Forget batches that have left Redis.
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        let keep: std::collections::HashSet<String> = seen_ids.into_iter().collect();
        parsed.retain(|id, _| keep.contains(id));
        Ok(out)
    }

    async fn release(&self) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        self.release_script
            .key(key(&self.region, "leader"))
            .arg(&self.lease_value)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(err("release"))
    }

    async fn prune(&self, now: UnixMillis) -> Result<(), CoordError> {
        // Workers that have not shared for the samples' lifetime are gone
        // (a restart gets a new id): their clock entries go too, so the
        // hash `prober status` lists stays the size of the region.
        let keep_ms = (self.lease_ttl.as_millis() as u64).max(60_000) * 2;
        let mut conn = self.conn.clone();
        let clocks: HashMap<String, String> = conn
            .hgetall(key(&self.region, "clocks"))
            .await
            .map_err(err("prune"))?;
        let gone: Vec<&String> = clocks
            .iter()
            .filter(|(_, v)| {
                v.split_once(' ')
                    .and_then(|(_, at)| at.parse::<u64>().ok())
                    .is_none_or(|at| now.saturating_sub(at) > keep_ms)
            })
            .map(|(w, _)| w)
            .collect();
        if !gone.is_empty() {
            conn.hdel::<_, _, ()>(key(&self.region, "clocks"), gone)
                .await
                .map_err(err("prune"))?;
        }
        Ok(())
    }

    async fn record_ranking(&self, doc: &RankingDocument) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(
            key(&self.region, &format!("ranking:{}", doc.pool)),
            doc.to_json(),
            86_400,
        )
        .await
        .map_err(err("record_ranking"))
    }
}

/// Reads the latest rankings recorded in Redis (all regions, or one),
/// skipping unreadable values with a log line.
pub async fn read_rankings(
    url: &str,
    region: Option<&str>,
) -> Result<Vec<RankingDocument>, CoordError> {
    let mut conn = connection(url)?;
    let pattern = match region {
        Some(r) => key(r, "ranking:*"),
        None => "origin-router:*:ranking:*".to_string(),
    };
    let mut keys: Vec<String> = Vec::new();
    let mut iter: redis::AsyncIter<'_, String> =
        conn.scan_match(&pattern).await.map_err(err("scan"))?;
    while let Some(k) = futures::StreamExt::next(&mut iter).await {
        keys.push(k.map_err(err("scan"))?);
    }
    drop(iter);
    let mut docs = Vec::new();
    for k in keys {
        let value: Option<String> = conn.get(&k).await.map_err(err("get"))?;
        match value.map(|v| RankingDocument::from_json(v.as_bytes())) {
            Some(Ok(doc)) => docs.push(doc),
            Some(Err(e)) => {
                tracing::warn!(key = %k, error = %e, "skipping an unreadable ranking in Redis")
            }
            None => {}
        }
    }
    Ok(docs)
}

/// Each worker's last measured clock offset to Redis' `TIME` in `region`:
/// (worker, offset ms, when, Unix ms on Redis' clock), skipping unreadable
/// entries with a log line.
pub async fn read_clocks(url: &str, region: &str) -> Result<Vec<(String, i64, u64)>, CoordError> {
    let mut conn = connection(url)?;
    let all: HashMap<String, String> = conn
        .hgetall(key(region, "clocks"))
        .await
        .map_err(err("clocks"))?;
    let mut out = Vec::new();
    for (worker, value) in all {
        let parsed = value
            .split_once(' ')
            .and_then(|(o, at)| Some((o.parse::<i64>().ok()?, at.parse::<u64>().ok()?)));
        match parsed {
            Some((offset, at)) if origin_router::config::is_name(&worker) => {
                out.push((worker, offset, at))
            }
            _ => tracing::warn!(region, "skipping an unreadable clock entry in Redis"),
        }
    }
    out.sort();
    Ok(out)
}
