//! The handler on paused tokio time with an in-memory store: every step of
//! the decision order, the rewrite, and bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::racer::{ScriptedRacer, Winner};
use edge::decision::Source;
use edge::handler::{handle, Edge, EdgeError};
use origin_router::config::Config;
use origin_router::control::{Control, ControlKind, ALL_REGIONS};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::{
    ControlWrite, MemoryStore, PoolRankings, RankingStore, StoreError, WriteOutcome,
};
use origin_router::FailureClass;
use serde_json::Value;

mod common;

const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const NOW: u64 = 1_780_000_000_000;

fn config() -> Config {
    let text = r#"
        [routing]
        default_pool = "web"
        hosts = { "api.example.org" = "api" }
        [pools.web]
        default_origin = "us"
        origins = [
            { id = "us", host = "origin-us.example.net" },
            { id = "eu", host = "origin-eu.example.net", port = 8443, host_header = { fixed = "www.example.org" } },
            { id = "ap", host = "origin-ap.example.net", protocol = "http", host_header = "viewer" },
        ]
        [pools.api]
        origins = [{ id = "api1", host = "api1.example.net" }]
        [pools.api.cloudfront]
        read_timeout = "20s"
        [edge]
        cache_ttl = "1s"
        max_stale = "60s"
        ranking_max_age = "30s"
        table_timeout = "250ms"
    "#;
    Config::from_toml(text, "test.toml").unwrap()
}

fn entry(id: &str, state: OriginState, ms: f64) -> RankedOrigin {
    RankedOrigin::measured(id, state, ms, 1)
}

fn doc(region: &str, seq: u64, generated_at: u64, origins: Vec<RankedOrigin>) -> RankingDocument {
    RankingDocument::new("web", region, seq, generated_at, origins)
}

/// Counts reads; can be made slow or failing.
struct Store {
    inner: MemoryStore,
    reads: AtomicUsize,
    delay: std::sync::Mutex<Duration>,
    skipped: std::sync::Mutex<Vec<(String, String)>>,
    /// Reads fail at once (throttling, access denied).
    fail: std::sync::Mutex<bool>,
}

impl Store {
    fn new() -> Arc<Self> {
        Arc::new(Store {
            inner: MemoryStore::new(),
            reads: AtomicUsize::new(0),
            delay: std::sync::Mutex::new(Duration::ZERO),
            skipped: std::sync::Mutex::new(Vec::new()),
            fail: std::sync::Mutex::new(false),
        })
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RankingStore for Store {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if *self.fail.lock().unwrap() {
            return Err(StoreError::dynamo(
                "Query",
                "ThrottlingException: slow down",
            ));
        }
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let mut read = self.inner.read_pool(pool).await?;
        read.skipped.extend(self.skipped.lock().unwrap().clone());
        Ok(read)
    }
    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
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
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        self.inner.put_control(control, replace).await
    }
    async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
        self.inner.delete_control(pool, key).await
    }
}

/// A race won by `winner` after `takes_ms`, whose losers are `us`
/// (connect timeout) and `eu` (response timeout).
fn racer(winner: Option<&'static str>, takes_ms: u64) -> Arc<ScriptedRacer> {
    Arc::new(ScriptedRacer::with(
        winner.map_or(Winner::Nobody, |w| Winner::Named(w.into())),
        Duration::from_millis(takes_ms),
        vec![
            ("us".into(), FailureClass::ConnectTimeout),
            ("eu".into(), FailureClass::ResponseTimeout),
        ],
    ))
}

fn router(store: Arc<Store>, racer: Arc<ScriptedRacer>, region: &str) -> Edge {
    common::edge(&config(), region, store, racer)
}

fn event() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

fn custom(request: &Value) -> &Value {
    &request["origin"]["custom"]
}

#[tokio::test(start_paused = true)]
async fn fresh_ranking_from_the_table_then_from_the_cache_without_io() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("us", OriginState::Healthy, 50.0),
        ],
    ));
    let r = router(store.clone(), racer(None, 0), "eu-west-1");

    let first = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(first.decision.source, Source::Table);
    assert_eq!(first.decision.ranking_region.as_deref(), Some("eu-west-1"));
    assert_eq!(first.decision.ranking_age_ms, Some(1_000));
    assert_eq!(
        custom(&first.request)["domainName"],
        "origin-eu.example.net"
    );
    assert_eq!(custom(&first.request)["port"], 8443);
    assert_eq!(custom(&first.request)["protocol"], "https");
    assert_eq!(
        first.request["headers"]["host"][0]["value"], "www.example.org",
        "fixed Host header"
    );

    tokio::time::advance(Duration::from_millis(900)).await;
    let second = handle(&r, event(), NOW + 900).await.unwrap();
    assert_eq!(second.decision.source, Source::Cache);
    assert_eq!(second.decision.origin, "eu");
    assert_eq!(
        store.reads(),
        1,
        "a cached ranking within its TTL costs no I/O"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_cache_is_served_at_once_and_refreshed_in_the_background() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("us", OriginState::Healthy, 50.0),
        ],
    ));
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    assert_eq!(
        handle(&r, event(), NOW).await.unwrap().decision.source,
        Source::Table
    );

    // The table now says eu is down, and answers slowly.
    store.inner.put(doc(
        "eu-west-1",
        2,
        NOW + 4_000,
        vec![
            entry("us", OriginState::Healthy, 50.0),
            entry("eu", OriginState::Down, 10.0),
        ],
    ));
    *store.delay.lock().unwrap() = Duration::from_millis(200);
    tokio::time::advance(Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    let stale = handle(&r, event(), NOW + 5_000).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the request never waits for the refresh"
    );
    assert_eq!(stale.decision.source, Source::Stale);
    assert_eq!(stale.decision.origin, "eu");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.reads(), 2, "one background refresh");
    let after = handle(&r, event(), NOW + 5_300).await.unwrap();
    assert_eq!(
        (after.decision.source, after.decision.origin.as_str()),
        (Source::Cache, "us")
    );
    assert_eq!(
        custom(&after.request)["domainName"],
        "origin-us.example.net"
    );
    assert_eq!(
        after.request["headers"]["host"][0]["value"], "origin-us.example.net",
        "origin Host header"
    );
}

#[tokio::test(start_paused = true)]
async fn nearest_fresh_region_is_used_when_the_own_one_is_stale_or_missing() {
    let store = Store::new();
    // Own region's ranking is 40 s old (past ranking_max_age 30 s).
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 40_000,
        vec![entry("us", OriginState::Healthy, 1.0)],
    ));
    store.inner.put(doc(
        "ap-southeast-2",
        1,
        NOW,
        vec![entry("ap", OriginState::Healthy, 1.0)],
    ));
    store.inner.put(doc(
        "eu-central-1",
        1,
        NOW - 2_000,
        vec![entry("eu", OriginState::Healthy, 1.0)],
    ));
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(h.decision.source, Source::Table);
    assert_eq!(h.decision.ranking_region.as_deref(), Some("eu-central-1"));
    assert_eq!(h.decision.origin, "eu");
}

#[tokio::test(start_paused = true)]
async fn no_fresh_ranking_races_and_caches_the_winner() {
    let store = Store::new();
    let race = racer(Some("ap"), 120);
    let r = router(store.clone(), race.clone(), "eu-west-1");
    let started = tokio::time::Instant::now();
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(120));
    assert_eq!(h.decision.source, Source::Race);
    assert_eq!(h.decision.origin, "ap");
    assert_eq!(custom(&h.request)["protocol"], "http");
    assert_eq!(custom(&h.request)["port"], 80);
    assert_eq!(
        h.request["headers"]["host"][0]["value"], "example.org",
        "viewer Host header kept"
    );
    assert_eq!(h.decision.losers.len(), 2);

    tokio::time::advance(Duration::from_secs(2)).await;
    let again = handle(&r, event(), NOW + 2_000).await.unwrap();
    assert_eq!(
        (again.decision.source, again.decision.origin.as_str()),
        (Source::Race, "ap")
    );
    assert_eq!(
        race.races(),
        1,
        "the winner is reused within race_cache_ttl"
    );
}

#[tokio::test(start_paused = true)]
async fn every_origin_hanging_gives_the_default_at_the_watchdog() {
    let store = Store::new();
    let r = router(store, racer(Some("eu"), 5_000), "eu-west-1");
    let started = tokio::time::Instant::now();
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(900),
        "the 0.9 s watchdog"
    );
    assert_eq!(h.decision.source, Source::Watchdog);
    assert_eq!(h.decision.origin, "us", "the pool's default origin");
    assert_eq!(h.decision.losers[0].1, FailureClass::ConnectTimeout);
    assert_eq!(h.decision.losers[1].1, FailureClass::ResponseTimeout);
}

#[tokio::test(start_paused = true)]
async fn known_down_gives_the_default_at_once_without_racing() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW,
        vec![
            entry("eu", OriginState::Down, 1.0),
            entry("ap", OriginState::Down, 2.0),
            entry("us", OriginState::Down, 3.0),
        ],
    ));
    let race = racer(Some("eu"), 100);
    let r = router(store, race.clone(), "eu-west-1");
    let started = tokio::time::Instant::now();
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::KnownDown, "us")
    );
    assert_eq!(race.races(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_ranking_naming_an_origin_outside_the_config_never_routes_there() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW,
        vec![
            entry("evil", OriginState::Healthy, 0.1),
            entry("ap", OriginState::Healthy, 5.0),
        ],
    ));
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(h.decision.origin, "ap");
    assert_eq!(custom(&h.request)["domainName"], "origin-ap.example.net");

    // A ranking of only unknown names is no ranking at all: race.
    store.inner.put(doc(
        "eu-west-1",
        2,
        NOW,
        vec![entry("evil", OriginState::Healthy, 0.1)],
    ));
    let r = router(store, racer(Some("us"), 10), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Race, "us")
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_pool_and_non_custom_origins_pass_through_unchanged() {
    let mut c = config();
    c.routing.default_pool = None;
    let r = common::edge(&c, "eu-west-1", Store::new(), racer(None, 0));
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(h.decision.source, Source::Passthrough);
    assert_eq!(h.request, event()["Records"][0]["cf"]["request"]);

    let mut s3 = event();
    s3["Records"][0]["cf"]["request"]["origin"] =
        serde_json::json!({"s3": {"domainName": "bucket.s3.amazonaws.com"}});
    let r = router(Store::new(), racer(None, 0), "eu-west-1");
    let h = handle(&r, s3.clone(), NOW).await.unwrap();
    assert_eq!(h.decision.source, Source::Passthrough);
    assert_eq!(h.request, s3["Records"][0]["cf"]["request"]);
}

#[tokio::test(start_paused = true)]
async fn the_pools_read_timeout_is_set_and_no_other_pools_origin_is_touched() {
    let original = custom(&event()["Records"][0]["cf"]["request"])["readTimeout"].clone();
    let mut e = event();
    e["Records"][0]["cf"]["request"]["headers"]["host"][0]["value"] = "api.example.org".into();
    let r = router(Store::new(), racer(Some("api1"), 5), "eu-west-1");
    let h = handle(&r, e, NOW).await.unwrap();
    assert_eq!(
        custom(&h.request)["readTimeout"],
        20,
        "pools.api.cloudfront.read_timeout"
    );
    // Pool `web` sets none: the distribution's own stays, whatever was
    // measured (a health path says nothing about a page's time).
    let r = router(Store::new(), racer(Some("eu"), 5), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(h.decision.origin, "eu");
    assert_eq!(custom(&h.request)["readTimeout"], original);
}

#[tokio::test(start_paused = true)]
async fn host_header_selects_the_pool() {
    let mut e = event();
    e["Records"][0]["cf"]["request"]["headers"]["host"][0]["value"] = "API.example.org".into();
    let race = racer(Some("api1"), 5);
    let r = router(Store::new(), race, "eu-west-1");
    let h = handle(&r, e, NOW).await.unwrap();
    assert_eq!(
        (h.decision.pool.as_str(), h.decision.origin.as_str()),
        ("api", "api1")
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_events_are_named_errors() {
    let r = router(Store::new(), racer(None, 0), "eu-west-1");
    let mut e = event();
    e["Records"][0]["cf"]["request"]["uri"] = Value::Null;
    let err = handle(&r, e, NOW).await.unwrap_err();
    assert!(matches!(err, EdgeError::MalformedEvent(_)));
    assert!(
        err.to_string().contains("Records[0].cf.request.uri"),
        "{err}"
    );
    let diagnostic: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "MalformedEvent");
}

#[tokio::test(start_paused = true)]
async fn unreadable_items_are_skipped_and_the_decision_goes_on() {
    let store = Store::new();
    store
        .skipped
        .lock()
        .unwrap()
        .push(("eu-west-1".into(), "unknown schema version 9".into()));
    store.inner.put(doc(
        "eu-west-2",
        1,
        NOW,
        vec![entry("eu", OriginState::Healthy, 3.0)],
    ));
    let r = router(store, racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.ranking_region.as_deref()),
        (Source::Table, Some("eu-west-2"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_table_is_abandoned_after_its_timeout() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW,
        vec![entry("eu", OriginState::Healthy, 3.0)],
    ));
    *store.delay.lock().unwrap() = Duration::from_secs(10);
    let r = router(store, racer(Some("ap"), 50), "eu-west-1");
    let started = tokio::time::Instant::now();
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(300),
        "250 ms table timeout, then a 50 ms race"
    );
    assert_eq!(h.decision.source, Source::Race);
}

/// A table that never answers and origins that all hang: the default
/// origin comes by the one deadline of the decision (race_watchdog after it
/// began), not after table_timeout plus race_watchdog.
#[tokio::test(start_paused = true)]
async fn one_deadline_holds_when_the_table_and_every_origin_hang() {
    let store = Store::new();
    *store.delay.lock().unwrap() = Duration::from_secs(3600);
    let r = router(store.clone(), racer(Some("eu"), 5_000), "eu-west-1");
    let started = tokio::time::Instant::now();
    let d = handle(&r, event(), NOW).await.unwrap().decision;
    assert_eq!(d.source, Source::Watchdog);
    assert_eq!(d.origin, "us", "the pool's default origin");
    assert_eq!(started.elapsed(), Duration::from_millis(900));
    assert_eq!(store.reads(), 1);
}

/// A failing table is remembered for cache_ttl: meanwhile requests read
/// nothing; after it, one background read per cache_ttl, never on the
/// request's time. A cached race winner answers before any read. When the
/// table answers again, its ranking is used.
#[tokio::test(start_paused = true)]
async fn a_silent_table_costs_one_read_per_cache_ttl_and_never_delays_a_request() {
    let store = Store::new();
    *store.delay.lock().unwrap() = Duration::from_secs(3600);
    let race = racer(Some("eu"), 20);
    let r = router(store.clone(), race.clone(), "eu-west-1");
    let first = handle(&r, event(), NOW).await.unwrap().decision;
    assert_eq!((first.source, first.origin.as_str()), (Source::Race, "eu"));
    assert_eq!(
        first.elapsed,
        Duration::from_millis(270),
        "250 ms read, 20 ms race"
    );

    // Three seconds of requests, one every 10 ms (cache_ttl is 1 s).
    for i in 1..=300u64 {
        tokio::time::advance(Duration::from_millis(10)).await;
        let d = handle(&r, event(), NOW + i * 10).await.unwrap().decision;
        assert_eq!(
            (d.source, d.origin.as_str()),
            (Source::Race, "eu"),
            "request {i}"
        );
        assert_eq!(d.elapsed, Duration::ZERO, "request {i} waited");
    }
    let reads = store.reads();
    assert!((2..=4).contains(&reads), "{reads} reads in 3 s");
    assert_eq!(race.races(), 1, "the winner is reused");

    // The table comes back with a fresh ranking: within about one
    // cache_ttl more, the edge routes by it.
    *store.delay.lock().unwrap() = Duration::ZERO;
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW + 3_000,
        vec![
            entry("ap", OriginState::Healthy, 10.0),
            entry("eu", OriginState::Healthy, 50.0),
        ],
    ));
    let mut routed_by_table = None;
    for i in 301..=600u64 {
        tokio::time::advance(Duration::from_millis(10)).await;
        let d = handle(&r, event(), NOW + i * 10).await.unwrap().decision;
        if d.origin == "ap" {
            routed_by_table = Some(i);
            break;
        }
    }
    let at = routed_by_table.expect("the recovered table is used");
    assert!(at <= 301 + 150, "after {} ms", (at - 300) * 10);
}

/// A ranking from a clock an hour ahead is never fresh (it would otherwise
/// be "age 0" forever); one within the allowed skew is used.
#[tokio::test(start_paused = true)]
async fn a_ranking_from_the_future_is_stale_and_one_within_the_skew_is_fresh() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        i64::MAX as u64,
        NOW + 3_600_000,
        vec![entry("ap", OriginState::Healthy, 1.0)],
    ));
    let r = router(store.clone(), racer(Some("eu"), 20), "eu-west-1");
    let d = handle(&r, event(), NOW).await.unwrap().decision;
    assert_eq!(d.source, Source::Race, "{d:?}");
    assert_ne!(d.origin, "ap");

    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        7,
        NOW + 5_000,
        vec![entry("ap", OriginState::Healthy, 1.0)],
    ));
    let r = router(store.clone(), racer(Some("eu"), 20), "eu-west-1");
    let d = handle(&r, event(), NOW).await.unwrap().decision;
    assert_eq!((d.source, d.origin.as_str()), (Source::Table, "ap"));
    assert_eq!(d.ranking_age_ms, Some(0));
}

/// Serving a stale ranking while the table fails fast: the background
/// refreshes stop for cache_ttl after each failure, so the table sees about
/// one Query per cache_ttl, not one per request.
#[tokio::test(start_paused = true)]
async fn a_table_failing_fast_behind_a_stale_ranking_is_not_hammered() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("us", OriginState::Healthy, 50.0),
        ],
    ));
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    assert_eq!(
        handle(&r, event(), NOW).await.unwrap().decision.source,
        Source::Table
    );
    // The table now fails at once, every time.
    store.inner.clear();
    *store.fail.lock().unwrap() = true;
    tokio::time::advance(Duration::from_millis(1_100)).await;
    let before = store.reads();
    // Five seconds of requests, one every 10 ms, all served stale.
    for i in 0..500u64 {
        let d = handle(&r, event(), NOW + 1_100 + i * 10)
            .await
            .unwrap()
            .decision;
        assert_eq!((d.source, d.origin.as_str()), (Source::Stale, "eu"));
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let reads = store.reads() - before;
    assert!(
        (3..=7).contains(&reads),
        "{reads} reads in 5 s with cache_ttl 1 s"
    );
}

fn control(kind: ControlKind, region: &str, origin: &str, until: u64) -> Control {
    Control {
        kind,
        pool: "web".into(),
        region: region.into(),
        origin: origin.into(),
        set_at: NOW - 1_000,
        until,
        by: "alice".into(),
        reason: "test".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_drained_origin_is_never_chosen_by_ranking_race_or_default() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("us", OriginState::Healthy, 50.0),
        ],
    ));
    store
        .put_control(
            &control(ControlKind::Drain, "eu-west-1", "eu", NOW + 60_000),
            true,
        )
        .await
        .unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Table, "us")
    );

    // Drained in every region, the default "us" too: a known_down pool
    // goes to what is left, never to a drained default.
    store.inner.put(doc(
        "eu-west-1",
        2,
        NOW - 500,
        vec![
            entry("ap", OriginState::Down, 10.0),
            entry("us", OriginState::Down, 10.0),
        ],
    ));
    store
        .put_control(
            &control(ControlKind::Drain, ALL_REGIONS, "us", NOW + 60_000),
            true,
        )
        .await
        .unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::KnownDown, "ap")
    );

    // No fresh ranking: the race is never given a drained origin.
    store.inner.clear();
    let race = ScriptedRacer::first();
    let r = common::edge(&config(), "eu-west-1", store.clone(), race.clone());
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Race, "ap")
    );
    assert_eq!(race.given().as_slice(), [vec!["ap".to_string()]]);

    // Every origin drained: the drains are ignored (fail open).
    store
        .put_control(
            &control(ControlKind::Drain, ALL_REGIONS, "ap", NOW + 60_000),
            true,
        )
        .await
        .unwrap();
    let race = ScriptedRacer::first();
    let r = common::edge(&config(), "eu-west-1", store.clone(), race.clone());
    handle(&r, event(), NOW).await.unwrap();
    assert_eq!(race.given()[0].len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_override_wins_until_it_expires_and_hostile_ones_are_ignored() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("ap", OriginState::Healthy, 50.0),
        ],
    ));
    // An override naming an origin outside the config, and one set an
    // hour ahead: both ignored.
    store
        .put_control(
            &control(ControlKind::Override, "eu-west-1", "ghost", NOW + 60_000),
            true,
        )
        .await
        .unwrap();
    let mut ahead = control(ControlKind::Override, ALL_REGIONS, "ap", NOW + 3_700_000);
    ahead.set_at = NOW + 3_600_000;
    store.put_control(&ahead, true).await.unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Table, "eu")
    );

    store
        .put_control(
            &control(ControlKind::Override, "eu-west-1", "us", NOW + 5_000),
            true,
        )
        .await
        .unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Override, "us")
    );
    assert_eq!(custom(&h.request)["domainName"], "origin-us.example.net");
    // Another region's edge is not overridden.
    let other = router(store.clone(), racer(None, 0), "us-east-1");
    assert_ne!(
        handle(&other, event(), NOW).await.unwrap().decision.source,
        Source::Override
    );
    // From the cache, until it expires; then the ranking again.
    tokio::time::advance(Duration::from_millis(500)).await;
    let h = handle(&r, event(), NOW + 500).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Override, "us")
    );
    let h = handle(&r, event(), NOW + 5_000).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Cache, "eu")
    );
}

/// `operations.fail_open`: a drained origin that is the pool's last usable
/// one is still chosen (the default), or never (fail_open = false: the
/// all-down default, and with every origin drained the request passes
/// through to the distribution's own origin, unchanged).
#[tokio::test(start_paused = true)]
async fn a_drained_last_usable_origin_is_chosen_only_when_failing_open() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![
            entry("eu", OriginState::Healthy, 10.0),
            entry("us", OriginState::Down, 10.0),
            entry("ap", OriginState::Down, 10.0),
        ],
    ));
    store
        .put_control(
            &control(ControlKind::Drain, ALL_REGIONS, "eu", NOW + 60_000),
            true,
        )
        .await
        .unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Table, "eu")
    );

    let mut closed = config();
    closed.operations.fail_open = false;
    let r = common::edge(&closed, "eu-west-1", store.clone(), racer(None, 0));
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::KnownDown, "us")
    );

    for origin in ["us", "ap"] {
        store
            .put_control(
                &control(ControlKind::Drain, ALL_REGIONS, origin, NOW + 60_000),
                true,
            )
            .await
            .unwrap();
    }
    let r = common::edge(&closed, "eu-west-1", store.clone(), racer(Some("eu"), 0));
    let before = event();
    let h = handle(&r, before.clone(), NOW).await.unwrap();
    assert_eq!(h.decision.source, Source::Passthrough);
    assert_eq!(h.request, before["Records"][0]["cf"]["request"]);
}

/// An override, and a pool every origin of which is drained (fail-open
/// off), answer without a ranking; their controls are still refreshed
/// once older than cache_ttl, so a cleared override and an undrain are
/// seen, not only when the control ends days later.
#[tokio::test(start_paused = true)]
async fn a_cleared_override_and_an_undrain_are_seen_within_a_refresh() {
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![entry("eu", OriginState::Healthy, 10.0)],
    ));
    let o = control(ControlKind::Override, "eu-west-1", "ap", NOW + 3_600_000);
    store.put_control(&o, true).await.unwrap();
    let r = router(store.clone(), racer(None, 0), "eu-west-1");
    let h = handle(&r, event(), NOW).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Override, "ap")
    );
    store.delete_control("web", &o.key()).await.unwrap();
    // Past cache_ttl: still the override (no wait), and a refresh starts.
    tokio::time::advance(r.router().timing().cache_ttl + Duration::from_millis(1)).await;
    let h = handle(&r, event(), NOW + 2_000).await.unwrap();
    assert_eq!(h.decision.source, Source::Override);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let h = handle(&r, event(), NOW + 2_000).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Cache, "eu")
    );

    let mut closed = config();
    closed.operations.fail_open = false;
    let store = Store::new();
    store.inner.put(doc(
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![entry("eu", OriginState::Healthy, 10.0)],
    ));
    let drains: Vec<Control> = ["us", "eu", "ap"]
        .iter()
        .map(|origin| control(ControlKind::Drain, ALL_REGIONS, origin, NOW + 3_600_000))
        .collect();
    for d in &drains {
        store.put_control(d, true).await.unwrap();
    }
    let r = common::edge(&closed, "eu-west-1", store.clone(), racer(None, 0));
    r.router().warm_up().await;
    assert_eq!(
        handle(&r, event(), NOW).await.unwrap().decision.source,
        Source::Passthrough
    );
    for d in &drains {
        store.delete_control("web", &d.key()).await.unwrap();
    }
    tokio::time::advance(r.router().timing().cache_ttl + Duration::from_millis(1)).await;
    assert_eq!(
        handle(&r, event(), NOW + 2_000)
            .await
            .unwrap()
            .decision
            .source,
        Source::Passthrough
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let h = handle(&r, event(), NOW + 2_000).await.unwrap();
    assert_eq!(
        (h.decision.source, h.decision.origin.as_str()),
        (Source::Cache, "eu")
    );
}
