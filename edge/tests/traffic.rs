//! Latency measured on real misses through the handler, on paused tokio
//! time with an in-memory store: the origin-request handler stamps the
//! routed request (and removes a stamp the viewer sent), the
//! origin-response handler of *another* container reads it back, slow
//! origins are demoted by the container that saw them, and bad stamps are
//! dropped and counted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::racer::ScriptedRacer;
use edge::decision::Source;
use edge::decision_log::DecisionLog;
use edge::handler::{handle, invoke, Answer, Edge};
use edge::traffic::{Dropped, HEADER};
use origin_router::config::Config;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::MemoryStore;
use serde_json::Value;

const REQUEST: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/cloudfront/origin-response.json");
const NOW: u64 = 1_780_000_000_000;

/// Pool `web`: `a` (ranked 5 ms) and `b` (ranked 60 ms), `latency` as
/// given, ten answers to judge, demotions of 2 s.
fn config(latency: &str) -> Config {
    let text = format!(
        r#"
        [routing]
        default_pool = "web"
        [pools.web]
        origins = [{{ id = "a", host = "a.example.net" }}, {{ id = "b", host = "b.example.net" }}]
        [pools.web.outlier]
        consecutive_5xx = 0
        latency = "{latency}"
        latency_min_requests = 10
        base_ejection_time = "2s"
        max_ejection_percent = 100
        [ranking]
        switch_margin_relative = 0.2
        switch_margin_absolute = "5ms"
        [edge]
        cache_ttl = "5m"
        max_stale = "1h"
        ranking_max_age = "1h"
    "#
    );
    Config::from_toml(&text, "traffic.toml").unwrap()
}

/// One container over a store holding the probes' ranking: `a` first.
async fn container(config: &Config, store: &Arc<MemoryStore>) -> Edge {
    let edge = common::edge(config, "eu-west-1", store.clone(), ScriptedRacer::nobody());
    edge.router().warm_up().await;
    edge
}

fn store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    store.put(RankingDocument::new(
        "web",
        "eu-west-1",
        1,
        NOW - 1_000,
        vec![
            RankedOrigin::measured("a", OriginState::Healthy, 5.0, 1),
            RankedOrigin::measured("b", OriginState::Healthy, 60.0, 1),
        ],
    ));
    store
}

/// The origin-request fixture, with a stamp the viewer sent.
fn request_event(viewer_stamp: Option<&str>) -> Value {
    let mut v: Value = serde_json::from_str(REQUEST).unwrap();
    if let Some(stamp) = viewer_stamp {
        v["Records"][0]["cf"]["request"]["headers"][HEADER] =
            serde_json::json!([{"key": "X-Origin-Router-Sent", "value": stamp}]);
    }
    v
}

/// Routes one miss in `edge` at `now`: the request as sent to the origin.
async fn route(edge: &Edge, now: u64) -> Value {
    let h = handle(edge, request_event(Some("t=1")), now).await.unwrap();
    assert_ne!(h.decision.source, Source::Passthrough);
    h.request
}

/// The origin-response event for `request` (as the origin-request handler
/// returned it) answered with `status`.
fn response_to(request: &Value, status: &str) -> String {
    let mut v: Value = serde_json::from_str(RESPONSE).unwrap();
    v["Records"][0]["cf"]["request"] = request.clone();
    v["Records"][0]["cf"]["response"]["status"] = status.into();
    v.to_string()
}

async fn answer(edge: &Edge, request: &Value, now: u64) -> edge::handler::Observed {
    match invoke(edge, &response_to(request, "200"), now)
        .await
        .unwrap()
    {
        Answer::Response(o) => o,
        Answer::Request(_) => panic!("an origin-response was routed"),
    }
}

fn stamp_of(request: &Value) -> Option<&str> {
    request["headers"][HEADER][0]["value"].as_str()
}

#[tokio::test(start_paused = true)]
async fn the_stamp_replaces_the_viewers_and_another_container_times_the_miss() {
    let (config, store) = (config("observe"), store());
    let first = container(&config, &store).await;
    let second = container(&config, &store).await;
    let request = route(&first, NOW).await;
    // The viewer's `t=1` is gone: one header, the edge's, dated now.
    assert_eq!(request["headers"][HEADER].as_array().unwrap().len(), 1);
    assert_eq!(stamp_of(&request), Some(format!("t={NOW}").as_str()));
    assert_eq!(request["origin"]["custom"]["domainName"], "a.example.net");

    // The answer reaches another container 400 ms later.
    let observed = answer(&second, &request, NOW + 400).await;
    assert_eq!(observed.dropped, None);
    assert_eq!(observed.timed.len(), 1, "{observed:?}");
    let t = &observed.timed[0];
    assert_eq!((t.pool.as_str(), t.origin.as_str()), ("web", "a"));
    assert_eq!(t.latency, Duration::from_millis(400));
    assert_eq!(t.ranked_ms, Some(5.0));
    assert!(t.slow, "400 ms is above b's 60 ms + 20 %");

    // Its EMF lines: the latency beside the ranked one.
    let (log, lines) = captured_log();
    log.record_ejections(&observed, "eu-west-1", NOW + 400);
    log.flush();
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["message"], "origin latency");
    assert_eq!(line["OriginLatencyMs"], 400.0);
    assert_eq!(line["RankedLatencyMs"], 5.0);
    assert_eq!(line["Origin"], "a");
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"],
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_demotes_an_origin_its_misses_find_slow_and_takes_it_back() {
    let (config, store) = (config("demote"), store());
    let edge = container(&config, &store).await;
    let mut now = NOW;
    // a answers every miss in 400 ms: the container leaves it at its
    // tenth (latency_min_requests), with an EMF line naming the trigger.
    let mut to_a = 0;
    let demoted = loop {
        let request = route(&edge, now).await;
        assert_eq!(request["origin"]["custom"]["domainName"], "a.example.net");
        to_a += 1;
        now += 400;
        tokio::time::advance(Duration::from_millis(400)).await;
        let observed = answer(&edge, &request, now).await;
        if observed.ejections().next().is_some() {
            break observed;
        }
        assert!(to_a < 20, "still on a after {to_a} misses");
    };
    assert_eq!(to_a, 10);
    let (log, lines) = captured_log();
    log.record_ejections(&demoted, "eu-west-1", now);
    log.flush();
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(text.contains(r#""Trigger":"latency""#), "{text}");
    // For the demotion (base_ejection_time, 2 s) misses go to b, which
    // answers in 60 ms; the decision names the demotion.
    for _ in 0..4 {
        let h = handle(&edge, request_event(None), now).await.unwrap();
        assert_eq!(h.decision.origin, "b");
        assert_eq!(h.decision.ejected, ["a"]);
        now += 60;
        tokio::time::advance(Duration::from_millis(60)).await;
        // Not held to a's probes: a is demoted here, so b has no
        // stand-in to be slower than.
        let observed = answer(&edge, &h.request, now).await;
        assert_eq!(observed.timed.len(), 1);
        assert!(!observed.timed[0].slow, "{observed:?}");
        now += 340;
        tokio::time::advance(Duration::from_millis(340)).await;
    }
    // Then a is back, judged afresh: fast answers keep it.
    tokio::time::advance(Duration::from_millis(500)).await;
    now += 500;
    for _ in 0..20 {
        let request = route(&edge, now).await;
        assert_eq!(request["origin"]["custom"]["domainName"], "a.example.net");
        now += 20;
        tokio::time::advance(Duration::from_millis(20)).await;
        answer(&edge, &request, now).await;
    }
}

#[tokio::test(start_paused = true)]
async fn bad_stamps_are_dropped_and_counted_never_recorded() {
    let (config, store) = (config("demote"), store());
    let edge = container(&config, &store).await;
    let request = route(&edge, NOW).await;
    // The other container's clock is behind: negative.
    assert_eq!(
        answer(&edge, &request, NOW - 5).await.dropped,
        Some(Dropped::Negative)
    );
    // Absurd: longer than CloudFront lets an origin take.
    let late = NOW + edge::traffic::MAX_PLAUSIBLE.as_millis() as u64 + 1;
    let observed = answer(&edge, &request, late).await;
    assert_eq!(observed.dropped, Some(Dropped::Absurd));
    assert!(observed.timed.is_empty());
    let (log, lines) = captured_log();
    log.record_ejections(&observed, "eu-west-1", late);
    log.flush();
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(text.contains(r#""DroppedLatencies":1"#), "{text}");
    assert!(text.contains(r#""Reason":"absurd""#), "{text}");
    // A stamp the viewer forged reaches no origin-response: the request
    // was stamped anew. One that is not ours at all is malformed; none at
    // all is missing.
    let mut forged = request.clone();
    forged["headers"][HEADER][0]["value"] = "t=abc".into();
    assert_eq!(
        answer(&edge, &forged, NOW).await.dropped,
        Some(Dropped::Malformed)
    );
    // No stamp at all (a request the edge passed through): nothing is
    // timed, and nothing is counted.
    forged["headers"].as_object_mut().unwrap().remove(HEADER);
    let observed = answer(&edge, &forged, NOW).await;
    assert_eq!(observed.dropped, None);
    assert!(observed.timed.is_empty());
    // None of these demoted anything: a is still chosen.
    assert_eq!(
        route(&edge, NOW).await["origin"]["custom"]["domainName"],
        "a.example.net"
    );
}

#[tokio::test(start_paused = true)]
async fn off_sends_no_header_and_times_nothing() {
    let (config, store) = (config("off"), store());
    let edge = container(&config, &store).await;
    let request = route(&edge, NOW).await;
    assert_eq!(
        request["headers"].get(HEADER),
        None,
        "the viewer's stamp is removed too"
    );
    let observed = answer(&edge, &request, NOW + 400).await;
    assert!(observed.timed.is_empty() && observed.dropped.is_none());
}

/// A decision log writing into a buffer the test reads.
fn captured_log() -> (DecisionLog, Arc<std::sync::Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    (DecisionLog::to(Box::new(Shared(buf.clone()))), buf)
}
