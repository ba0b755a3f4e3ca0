//! Passive ejection through the handler, on paused tokio time with an
//! in-memory store: origin-response events eject an origin, origin-request
//! decisions leave it out until the ejection expires, and the response is
//! always returned as it came in.

use std::sync::Arc;
use std::time::Duration;

use common::racer::ScriptedRacer;
use edge::decision::Source;
use edge::ejection::{Recorded, Trigger};
use edge::handler::{handle, handle_raw, invoke, Answer, Edge, EdgeError};
use origin_router::config::Config;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::MemoryStore;
use proptest::prelude::*;
use serde_json::Value;

mod common;

const REQUEST: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/cloudfront/origin-response.json");
const NOW: u64 = 1_780_000_000_000;

fn config(origins: usize) -> Config {
    config_with(origins, "")
}

/// [`config`] with more `[pools.web.outlier]` lines.
fn config_with(origins: usize, outlier: &str) -> Config {
    let mut text = format!(
        r#"
        [routing]
        default_pool = "web"
        [pools.web]
        [pools.web.outlier]
        consecutive_5xx = 5
        base_ejection_time = "30s"
        max_ejection_time = "300s"
        max_ejection_percent = 50
        {outlier}
        [edge]
        cache_ttl = "1s"
        max_stale = "60s"
        ranking_max_age = "30s"
        table_timeout = "250ms"
    "#,
    );
    for i in 0..origins {
        text.push_str(&format!(
            "[[pools.web.origins]]\nid = \"o{i}\"\nhost = \"o{i}.example.net\"\n"
        ));
    }
    Config::from_toml(&text, "test.toml").unwrap()
}

/// A router over `origins` origins `o0`.. whose ranking (fresh at `NOW`)
/// puts them in order, with the given states.
fn router(states: &[OriginState]) -> (Edge, Arc<ScriptedRacer>) {
    router_with(config(states.len()), states)
}

fn router_with(config: Config, states: &[OriginState]) -> (Edge, Arc<ScriptedRacer>) {
    let store = Arc::new(MemoryStore::new());
    store.put(RankingDocument::new(
        "web",
        "eu-west-1",
        1,
        NOW - 1_000,
        states
            .iter()
            .enumerate()
            .map(|(i, s)| RankedOrigin::measured(&format!("o{i}"), *s, 10.0 + i as f64, 1))
            .collect(),
    ));
    let racer = ScriptedRacer::first();
    let r = common::edge(&config, "eu-west-1", store, racer.clone());
    (r, racer)
}

fn healthy(n: usize) -> Vec<OriginState> {
    vec![OriginState::Healthy; n]
}

/// The origin-response fixture from `domain:port` with `status`.
fn response_event(domain: &str, port: u16, status: Value) -> String {
    let mut v: Value = serde_json::from_str(RESPONSE).unwrap();
    let cf = &mut v["Records"][0]["cf"];
    cf["request"]["origin"]["custom"]["domainName"] = domain.into();
    cf["request"]["origin"]["custom"]["port"] = port.into();
    cf["response"]["status"] = status;
    v.to_string()
}

/// Sends `n` origin-responses with `status` from origin `o{i}`.
async fn answers(r: &Edge, i: usize, status: &str, n: usize) -> Vec<Recorded> {
    let text = response_event(&format!("o{i}.example.net"), 443, status.into());
    let mut out = Vec::new();
    for _ in 0..n {
        let sent: Value = serde_json::from_str(&text).unwrap();
        let Answer::Response(observed) = invoke(r, &text, NOW).await.unwrap() else {
            panic!("an origin-response was routed");
        };
        out.extend(observed.recorded.iter().map(|(_, _, rec)| *rec));
        let answer: Value =
            serde_json::from_str(&serde_json::to_string(&Answer::Response(observed)).unwrap())
                .unwrap();
        assert_eq!(answer, sent["Records"][0]["cf"]["response"], "unchanged");
    }
    out
}

async fn chosen(r: &Edge) -> (String, Vec<String>) {
    let h = handle(r, serde_json::from_str(REQUEST).unwrap(), NOW)
        .await
        .unwrap();
    (h.decision.origin, h.decision.ejected)
}

#[tokio::test(start_paused = true)]
async fn an_origin_failing_every_other_answer_is_ejected_by_the_error_ratio_and_comes_back() {
    let config = config_with(
        3,
        "error_ratio = 0.5\n        error_window = \"60s\"\n        error_min_requests = 10",
    );
    let (r, _) = router_with(config, &healthy(3));
    // Nine answers over 0.9 s, every other one a 503: never two in a row,
    // and too few answers to judge.
    let mut recorded = Vec::new();
    for i in 0..9 {
        let status = if i % 2 == 0 { "200" } else { "503" };
        recorded.extend(answers(&r, 0, status, 1).await);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert!(
        recorded
            .iter()
            .all(|r| !matches!(r, Recorded::Ejected { .. })),
        "{recorded:?}"
    );
    assert_eq!(chosen(&r).await, ("o0".to_string(), vec![]));
    // The tenth (5 of 10 failed) ejects it.
    assert_eq!(
        answers(&r, 0, "503", 1).await,
        [Recorded::Ejected {
            duration: Duration::from_secs(30),
            times: 1,
            trigger: Trigger::ErrorRatio,
        }]
    );
    assert_eq!(chosen(&r).await, ("o1".to_string(), vec!["o0".to_string()]));
    // Late answers while it is out change nothing.
    assert_eq!(answers(&r, 0, "503", 3).await, [Recorded::Unchanged; 3]);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(chosen(&r).await, ("o0".to_string(), vec![]));
    // Judged afresh: its old answers are gone with the ejection.
    assert_eq!(
        answers(&r, 0, "503", 1).await,
        [Recorded::Counted { consecutive_5xx: 1 }]
    );
}

#[tokio::test(start_paused = true)]
async fn five_5xx_eject_the_origin_until_its_ejection_expires_and_a_second_lasts_twice_as_long() {
    let (r, _) = router(&healthy(3));
    assert_eq!(chosen(&r).await.0, "o0");

    // Four 5xx, a 200, four more: never five in a row.
    answers(&r, 0, "503", 4).await;
    assert_eq!(answers(&r, 0, "200", 1).await, [Recorded::Reset]);
    answers(&r, 0, "500", 4).await;
    assert_eq!(chosen(&r).await, ("o0".to_string(), vec![]));

    // The fifth in a row ejects it for base_ejection_time.
    assert_eq!(
        answers(&r, 0, "502", 1).await,
        [Recorded::Ejected {
            duration: Duration::from_secs(30),
            times: 1,
            trigger: Trigger::Consecutive5xx,
        }]
    );
    assert_eq!(chosen(&r).await, ("o1".to_string(), vec!["o0".to_string()]));
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert_eq!(chosen(&r).await.0, "o1");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(chosen(&r).await, ("o0".to_string(), vec![]));

    // Failing again at once: the second ejection lasts 60 s.
    let second = answers(&r, 0, "504", 5).await;
    assert_eq!(
        second.last(),
        Some(&Recorded::Ejected {
            duration: Duration::from_secs(60),
            times: 2,
            trigger: Trigger::Consecutive5xx,
        })
    );
    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert_eq!(chosen(&r).await.0, "o1");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(chosen(&r).await.0, "o0");
}

#[tokio::test(start_paused = true)]
async fn the_last_usable_origin_is_chosen_even_when_ejected() {
    // The ranking holds only o0 usable; o0 is ejected (allowed: three
    // origins in the config), yet it is the one chosen, and the line says
    // it is ejected.
    let (r, _) = router(&[OriginState::Healthy, OriginState::Down, OriginState::Down]);
    answers(&r, 0, "503", 5).await;
    let h = handle(&r, serde_json::from_str(REQUEST).unwrap(), NOW)
        .await
        .unwrap();
    assert_eq!(h.decision.origin, "o0");
    assert_eq!(h.decision.ejected, ["o0"]);
    assert_ne!(h.decision.source, Source::KnownDown);
    // A second origin cannot be ejected past 50 % of three.
    let refused = answers(&r, 1, "503", 5).await;
    assert!(
        matches!(refused.last(), Some(Recorded::Refused(_))),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_race_leaves_ejected_origins_out() {
    // No ranking at all: the race decides, among the origins not ejected.
    let store = Arc::new(MemoryStore::new());
    let racer = ScriptedRacer::first();
    let r = common::edge(&config(3), "eu-west-1", store, racer.clone());
    answers(&r, 0, "503", 5).await;
    let (origin, ejected) = chosen(&r).await;
    assert_eq!(
        (origin.as_str(), ejected.as_slice()),
        ("o1", &["o0".to_string()][..])
    );
    assert_eq!(racer.given(), [vec!["o1", "o2"]]);
}

#[tokio::test(start_paused = true)]
async fn bad_origin_responses_change_nothing_and_return_the_response() {
    let (r, _) = router(&healthy(3));
    // Unknown origin, wrong port, non-string and malformed statuses.
    let cases = [
        response_event("elsewhere.example.net", 443, "503".into()),
        response_event("o0.example.net", 8443, "503".into()),
        response_event("o0.example.net", 443, 503.into()),
        response_event("o0.example.net", 443, Value::Null),
        response_event("o0.example.net", 443, "5033".into()),
        response_event("o0.example.net", 443, "abc".into()),
        response_event("o0.example.net", 443, "".into()),
        response_event("o0.example.net", 443, "\u{202e}503".into()),
    ];
    for text in &cases {
        for _ in 0..6 {
            let sent: Value = serde_json::from_str(text).unwrap();
            let Answer::Response(observed) = invoke(&r, text, NOW).await.unwrap() else {
                panic!("an origin-response was routed")
            };
            assert!(observed.recorded.is_empty(), "{text}");
            let answer = serde_json::to_string(&Answer::Response(observed)).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&answer).unwrap(),
                sent["Records"][0]["cf"]["response"]
            );
        }
    }
    assert_eq!(chosen(&r).await, ("o0".to_string(), vec![]));
    // The domain is matched case-insensitively, as DNS names are.
    let upper = response_event("O0.EXAMPLE.NET", 443, "503".into());
    let Answer::Response(observed) = invoke(&r, &upper, NOW).await.unwrap() else {
        panic!()
    };
    assert_eq!(observed.recorded.len(), 1);

    // A malformed request part (port as a string, no uri): the response
    // still goes back unchanged, counted nowhere.
    for broken in [
        |v: &mut Value| v["Records"][0]["cf"]["request"]["origin"]["custom"]["port"] = "443".into(),
        |v: &mut Value| {
            v["Records"][0]["cf"]["request"]
                .as_object_mut()
                .unwrap()
                .remove("uri");
        },
        |v: &mut Value| v["Records"][0]["cf"]["request"] = Value::Null,
    ] {
        let mut v: Value =
            serde_json::from_str(&response_event("o0.example.net", 443, "503".into())).unwrap();
        broken(&mut v);
        let Answer::Response(observed) = invoke(&r, &v.to_string(), NOW).await.unwrap() else {
            panic!("routed")
        };
        assert!(observed.recorded.is_empty());
        let answer: Value =
            serde_json::from_str(&serde_json::to_string(&Answer::Response(observed)).unwrap())
                .unwrap();
        assert_eq!(answer, v["Records"][0]["cf"]["response"]);
    }
    // A response that is not an object, or an origin-request with a
    // "response": no fallback, the named error.
    let mut v: Value = serde_json::from_str(RESPONSE).unwrap();
    v["Records"][0]["cf"]["response"] = "503".into();
    v["Records"][0]["cf"]["request"] = Value::Null;
    assert!(invoke(&r, &v.to_string(), NOW).await.is_err());
    let mut v: Value = serde_json::from_str(RESPONSE).unwrap();
    v["Records"][0]["cf"]["config"]["eventType"] = "origin-request".into();
    v["Records"][0]["cf"]["request"] = Value::Null;
    assert!(invoke(&r, &v.to_string(), NOW).await.is_err());

    // No response at all: nothing to return, a named error.
    let mut v: Value = serde_json::from_str(RESPONSE).unwrap();
    v["Records"][0]["cf"]
        .as_object_mut()
        .unwrap()
        .remove("response");
    let e = invoke(&r, &v.to_string(), NOW).await.unwrap_err();
    assert!(matches!(e, EdgeError::MalformedEvent(_)), "{e}");
    assert!(
        e.to_string().contains("without Records[0].cf.response"),
        "{e}"
    );
    // The origin-request entry point refuses an origin-response.
    let e = handle_raw(&r, RESPONSE, NOW).await.unwrap_err();
    assert!(e.to_string().contains("origin-response"), "{e}");
    // An origin-request through the Lambda entry point is routed.
    assert!(matches!(
        invoke(&r, REQUEST, NOW).await.unwrap(),
        Answer::Request(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the origins answer and however time passes: the decision
    /// never names an origin that is ejected while another origin the
    /// ranking holds usable is not, and never a down one while one is up.
    #[test]
    fn an_ejected_or_down_origin_is_never_chosen_while_another_is_usable(
        states in proptest::collection::vec(prop_oneof![Just(OriginState::Healthy), Just(OriginState::Down)], 2..6),
        steps in proptest::collection::vec((0usize..6, prop_oneof![Just("200"), Just("503"), Just("500")], 0u64..20_000), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (r, _) = router(&states);
            for (i, status, advance) in steps {
                answers(&r, i % states.len(), status, 1).await;
                tokio::time::advance(Duration::from_millis(advance)).await;
                let (origin, ejected) = chosen(&r).await;
                let index: usize = origin[1..].parse().unwrap();
                let usable = |i: usize| states[i].is_usable();
                let free = |i: usize| !ejected.contains(&format!("o{i}"));
                if (0..states.len()).any(|i| usable(i) && free(i)) {
                    prop_assert!(usable(index) && free(index), "{origin} chosen; ejected {ejected:?}, states {states:?}");
                } else if (0..states.len()).any(usable) {
                    prop_assert!(usable(index), "{origin} chosen; states {states:?}");
                }
            }
            Ok(())
        })?;
    }
}
