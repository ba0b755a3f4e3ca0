//! Delivery of events to Amazon EventBridge (`PutEvents`, source
//! [`super::SOURCE`]) without ever making the leader wait.
//!
//! [`Bridge::put`] only queues (a bounded channel: when EventBridge is
//! down for long enough to fill it, new events are dropped with a log line
//! and a metric, never queued without bound). One background task sends
//! them in batches of up to [`BATCH`] entries (the API's limit); a failed
//! call, or the entries a partly failed call names, are retried with capped
//! exponential backoff and full jitter, at most [`MAX_ATTEMPTS`] times each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use origin_router::config::EventsConfig;
use rand::Rng;
use serde_json::Value;
use tokio::sync::mpsc;

/// Entries per `PutEvents` call (EventBridge's maximum).
pub const BATCH: usize = 10;
/// Events waiting for delivery at most.
pub const QUEUE: usize = 1024;
/// Attempts per event before it is dropped.
pub const MAX_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Bound on one `PutEvents` call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One event to put.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub detail_type: &'static str,
    pub detail: String,
    attempts: u32,
}

/// What sends a batch: EventBridge, or a test double.
#[async_trait]
pub trait Putter: Send + Sync + 'static {
    /// Sends `entries`; `Ok` holds, per entry, whether it failed (a
    /// partly failed call), `Err` a failed call.
    async fn put(&self, entries: &[Entry]) -> Result<Vec<bool>, String>;
}

/// EventBridge's `PutEvents` on one bus.
pub struct EventBridge {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridge {
    /// A client for `config.event_bus` (region: the config's, the bus
    /// ARN's, else the SDK default chain; endpoint: the config's).
    pub async fn connect(config: &EventsConfig) -> Option<Self> {
        let bus = config.event_bus.clone()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(region) = config.bus_region() {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        Some(EventBridge {
            client: aws_sdk_eventbridge::Client::new(&sdk),
            bus,
        })
    }
}

#[async_trait]
impl Putter for EventBridge {
    async fn put(&self, entries: &[Entry]) -> Result<Vec<bool>, String> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let mut call = self.client.put_events();
        for e in entries {
            call = call.entries(
                PutEventsRequestEntry::builder()
                    .source(super::SOURCE)
                    .detail_type(e.detail_type)
                    .detail(&e.detail)
                    .event_bus_name(&self.bus)
                    .build(),
            );
        }
        let out = tokio::time::timeout(CALL_TIMEOUT, call.send())
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())?;
        let results = out.entries();
        Ok((0..entries.len())
            .map(|i| {
                results
                    .get(i)
                    .is_none_or(|r| r.error_code().is_some() || r.event_id().is_none())
            })
            .collect())
    }
}

/// The queue in front of a [`Putter`]. Cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    tx: mpsc::Sender<Entry>,
}

impl Bridge {
    /// Starts the delivery task; it ends when every `Bridge` is dropped
    /// and the queue is sent (or given up).
    pub fn spawn(putter: Arc<dyn Putter>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(deliver(putter, rx));
        (Bridge { tx }, task)
    }

    /// Queues one event; never waits.
    pub fn put(&self, detail_type: &'static str, detail: Value) {
        let entry = Entry {
            detail_type,
            detail: detail.to_string(),
            attempts: 0,
        };
        if let Err(e) = self.tx.try_send(entry) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "delivery stopped",
            };
            metrics::counter!("origin_router_events_total", "result" => "dropped").increment(1);
            tracing::warn!(detail_type, reason, "event not sent to EventBridge");
        }
    }
}

async fn deliver(putter: Arc<dyn Putter>, mut rx: mpsc::Receiver<Entry>) {
    let mut retry: VecDeque<Entry> = VecDeque::new();
    let mut failures = 0u32;
    loop {
        if retry.is_empty() {
            match rx.recv().await {
                Some(e) => retry.push_back(e),
                None => return,
            }
        }
        while retry.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => retry.push_back(e),
                Err(_) => break,
            }
        }
        let batch: Vec<Entry> = retry.drain(..retry.len().min(BATCH)).collect();
        let failed = match putter.put(&batch).await {
            Ok(failed) => failed,
            Err(e) => {
                tracing::warn!(error = %e, events = batch.len(), "PutEvents failed; will retry");
                vec![true; batch.len()]
            }
        };
        let mut any_failed = false;
        for (mut entry, failed) in batch.into_iter().zip(failed) {
            if !failed {
                metrics::counter!("origin_router_events_total", "result" => "put").increment(1);
                continue;
            }
            any_failed = true;
            entry.attempts += 1;
            if entry.attempts >= MAX_ATTEMPTS {
                metrics::counter!("origin_router_events_total", "result" => "failed").increment(1);
                tracing::error!(
                    detail_type = entry.detail_type,
                    attempts = entry.attempts,
                    "event given up after repeated PutEvents failures"
                );
            } else {
                retry.push_back(entry);
            }
        }
        if any_failed {
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(failures)).await;
        } else {
            failures = 0;
        }
    }
}

/// Full-jitter exponential backoff after `failures` failed calls in a row.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    rand::rng().random_range(Duration::ZERO..=exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails the first `fail_calls` calls, then fails entries whose detail
    /// contains "poison", and records what it was given.
    struct Flaky {
        fail_calls: Mutex<u32>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl Putter for Flaky {
        async fn put(&self, entries: &[Entry]) -> Result<Vec<bool>, String> {
            self.calls
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.detail.clone()).collect());
            let mut fail = self.fail_calls.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err("throttled".into());
            }
            Ok(entries
                .iter()
                .map(|e| e.detail.contains("poison"))
                .collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_calls_are_retried_in_batches_and_a_poisoned_entry_is_given_up() {
        let flaky = Arc::new(Flaky {
            fail_calls: Mutex::new(3),
            calls: Mutex::new(Vec::new()),
        });
        let (bridge, task) = Bridge::spawn(flaky.clone());
        let started = tokio::time::Instant::now();
        for i in 0..25 {
            bridge.put("Test", serde_json::json!({ "n": i }));
        }
        bridge.put("Test", serde_json::json!({ "n": "poison" }));
        // Queuing never waited.
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop(bridge);
        task.await.unwrap();
        let calls = flaky.calls.lock().unwrap();
        assert!(calls.iter().all(|c| c.len() <= BATCH), "{calls:?}");
        // Every good event was put exactly once in a successful call.
        let succeeded: Vec<&String> = calls[3..].iter().flatten().collect();
        for i in 0..25 {
            let want = serde_json::json!({ "n": i }).to_string();
            assert_eq!(succeeded.iter().filter(|d| ***d == want).count(), 1, "{i}");
        }
        // The poisoned one was tried MAX_ATTEMPTS times in all.
        let poison = calls
            .iter()
            .flatten()
            .filter(|d| d.contains("poison"))
            .count();
        assert_eq!(poison as u32, MAX_ATTEMPTS);
        // Backoff spaced the retries (paused time only moves in sleeps).
        assert!(started.elapsed() > Duration::ZERO);
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_events_without_waiting() {
        struct Never;
        #[async_trait]
        impl Putter for Never {
            async fn put(&self, _: &[Entry]) -> Result<Vec<bool>, String> {
                std::future::pending().await
            }
        }
        let (bridge, task) = Bridge::spawn(Arc::new(Never));
        let started = std::time::Instant::now();
        for i in 0..(QUEUE + 3 * BATCH) {
            bridge.put("Test", serde_json::json!({ "n": i }));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        task.abort();
    }
}
