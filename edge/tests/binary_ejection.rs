//! Passive ejection in the real `edge` binary, driven through the Lambda
//! Runtime API with both event types, as CloudFront would: each
//! origin-request's answer is sent to a real origin on loopback, and that
//! origin's real status comes back as an origin-response event. Once in the
//! configuration a new user starts with (embedded store, no Redis), once
//! with DynamoDB (moto).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::runtime_api::{Function, RuntimeApi};
use origin_router_tests::services::MotoServer;
use origin_router_tests::{loopback, Mode, TestOrigin};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGION: &str = "eu-west-1";
const REQUEST: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/cloudfront/origin-response.json");

fn ranking() -> RankingDocument {
    RankingDocument::new(
        "eject",
        REGION,
        1,
        unix_millis_now(),
        vec![
            RankedOrigin::measured("sick", OriginState::Healthy, 1.0, 2),
            RankedOrigin::measured("spare", OriginState::Healthy, 9.0, 2),
        ],
    )
}

fn config_text(sick: &TestOrigin, spare: &TestOrigin, store: &str) -> String {
    let http = |id: &str, o: &TestOrigin| {
        format!(
            r#"{{ id = "{id}", host = "{}", port = {}, protocol = "http" }}"#,
            o.addr().ip(),
            o.port()
        )
    };
    format!(
        r#"
        [routing.hosts]
        "eject.test" = "eject"
        [pools.eject]
        origins = [{sick}, {spare}]
        [pools.eject.outlier]
        consecutive_5xx = 5
        base_ejection_time = "1s"
        max_ejection_percent = 50
        error_ratio = 0.5
        error_window = "60s"
        error_min_requests = 10
        [edge]
        cache_ttl = "10s"
        {store}
        "#,
        sick = http("sick", sick),
        spare = http("spare", spare),
    )
}

/// What CloudFront does with the rewritten request: one GET to the origin
/// it names; the status line's code.
async fn fetch_status(request: &Value) -> u16 {
    let custom = &request["origin"]["custom"];
    let addr = format!(
        "{}:{}",
        custom["domainName"].as_str().unwrap(),
        custom["port"]
    );
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: eject.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

fn origin_request() -> Value {
    let mut e: Value = serde_json::from_str(REQUEST).unwrap();
    e["Records"][0]["cf"]["request"]["headers"]["host"][0]["value"] = "eject.test".into();
    e
}

fn origin_response(request: &Value, status: Value) -> Value {
    let mut e: Value = serde_json::from_str(RESPONSE).unwrap();
    e["Records"][0]["cf"]["request"] = request.clone();
    e["Records"][0]["cf"]["response"]["status"] = status;
    e
}

async fn call(api: &RuntimeApi, event: &Value) -> Result<Value, Value> {
    api.invoke(event, Duration::from_secs(10))
        .await
        .expect("the edge answers")
}

/// One viewer miss as CloudFront runs it: origin-request, the real fetch,
/// origin-response. Returns the chosen origin's id (from the decision
/// line), the decision line, and the status the origin gave.
async fn miss(edge: &Function) -> (String, Value, u16) {
    let request = call(&edge.api, &origin_request())
        .await
        .unwrap_or_else(|e| panic!("origin-request failed: {e}"));
    let line = edge
        .next_json_with("Source", Duration::from_secs(5))
        .expect("a decision line");
    let status = fetch_status(&request).await;
    let event = origin_response(&request, status.to_string().into());
    let answer = call(&edge.api, &event)
        .await
        .unwrap_or_else(|e| panic!("origin-response failed: {e}"));
    assert_eq!(
        answer, event["Records"][0]["cf"]["response"],
        "the response comes back unchanged"
    );
    (line["Origin"].as_str().unwrap().to_string(), line, status)
}

/// The 5xx stream ejects `sick` after exactly consecutive_5xx misses; it is
/// chosen again once the 1 s ejection is over and answers 200 again; then
/// failing every other request, it is ejected by the error ratio.
async fn ejects_and_recovers(edge: &Function, sick: &TestOrigin) {
    let (origin, line, status) = miss(edge).await;
    assert_eq!((origin.as_str(), status), ("sick", 200), "{line}");
    assert_eq!(line["Ejected"], json!([]));

    sick.set_mode(Mode::Status(503));
    for i in 1..=5 {
        let (origin, line, status) = miss(edge).await;
        assert_eq!((origin.as_str(), status), ("sick", 503), "5xx #{i}: {line}");
    }
    // The fifth origin-response wrote the ejection's EMF line.
    let ejection = edge
        .next_json_with("Ejections", Duration::from_secs(5))
        .expect("an ejection line");
    assert_eq!(ejection["message"], "origin ejected", "{ejection}");
    assert_eq!(
        (
            &ejection["Pool"],
            &ejection["Origin"],
            &ejection["Region"],
            &ejection["Status"],
            &ejection["Trigger"],
            &ejection["TimesEjected"],
            &ejection["EjectionMs"],
        ),
        (
            &json!("eject"),
            &json!("sick"),
            &json!(REGION),
            &json!(503),
            &json!("consecutive_5xx"),
            &json!(1),
            &json!(1000),
        ),
        "{ejection}"
    );
    assert_eq!(
        ejection["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "Ejections"
    );
    let (origin, line, status) = miss(edge).await;
    assert_eq!((origin.as_str(), status), ("spare", 200), "{line}");
    assert_eq!(line["Ejected"], json!(["sick"]), "{line}");

    sick.set_mode(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (origin, line, _) = miss(edge).await;
    assert_eq!(origin, "sick", "back after its ejection: {line}");
    assert_eq!(line["Ejected"], json!([]));

    // Now it fails every other request: never two 5xx in a row, but half
    // of its answers. With the 200 just above, the ninth of these misses
    // makes 5 of 10 answers 5xx (error_ratio 0.5, error_min_requests 10):
    // the tenth goes elsewhere.
    for i in 0..9 {
        sick.set_mode(if i % 2 == 0 {
            Mode::Status(503)
        } else {
            Mode::Ok
        });
        let (origin, line, _) = miss(edge).await;
        assert_eq!(origin, "sick", "alternating miss #{i}: {line}");
    }
    let ejection = edge
        .next_json_with("Ejections", Duration::from_secs(5))
        .expect("an ejection line for the error ratio");
    assert_eq!(
        (
            &ejection["Origin"],
            &ejection["Status"],
            &ejection["Trigger"]
        ),
        (&json!("sick"), &json!(503), &json!("error_ratio")),
        "{ejection}"
    );
    let (origin, line, _) = miss(edge).await;
    assert_eq!(origin, "spare", "{line}");
    assert_eq!(line["Ejected"], json!(["sick"]), "{line}");
}

/// Hostile origin-responses: each is answered with its response unchanged
/// (or, with no response at all, a named error) and counts nothing.
async fn bad_origin_responses(edge: &Function) {
    let request = call(&edge.api, &origin_request()).await.unwrap();
    edge.next_json_with("Source", Duration::from_secs(5))
        .expect("a decision line");
    let mut elsewhere = request.clone();
    elsewhere["origin"]["custom"]["domainName"] = "attacker.example.net".into();
    for (req, status) in [
        (&elsewhere, json!("503")),
        (&request, json!(503)),
        (&request, json!("5O3")),
        (&request, json!("")),
        (&request, Value::Null),
    ] {
        for _ in 0..6 {
            let event = origin_response(req, status.clone());
            let answer = call(&edge.api, &event).await.unwrap();
            assert_eq!(answer, event["Records"][0]["cf"]["response"]);
        }
    }
    let mut none = origin_response(&request, json!("503"));
    none["Records"][0]["cf"]
        .as_object_mut()
        .unwrap()
        .remove("response");
    let e = call(&edge.api, &none).await.unwrap_err();
    assert_eq!(e["errorType"], "MalformedEvent", "{e}");
    // None of that ejected anything.
    let request = call(&edge.api, &origin_request()).await.unwrap();
    let line = edge
        .next_json_with("Source", Duration::from_secs(5))
        .unwrap();
    assert_eq!(line["Origin"], "sick", "{line}");
    assert_eq!(line["Ejected"], json!([]), "{request}");
}

async fn origins(first: u8) -> (TestOrigin, TestOrigin) {
    let sick = TestOrigin::start(SocketAddr::new(loopback(first), 0), Mode::Ok)
        .await
        .unwrap();
    let spare = TestOrigin::start(SocketAddr::new(loopback(first + 1), 0), Mode::Ok)
        .await
        .unwrap();
    (sick, spare)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ejects_an_origin_answering_5xx_with_the_embedded_store() {
    let (sick, spare) = origins(52).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    EmbeddedStore::new(&root).write(&ranking()).await.unwrap();
    let config = dir.path().join("origin-router.toml");
    let store = format!("[store]\nembedded_path = \"{}\"", root.display());
    std::fs::write(&config, config_text(&sick, &spare, &store)).unwrap();
    let env: Vec<(String, String)> = vec![
        ("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()),
        ("AWS_REGION".into(), REGION.into()),
        ("RUST_LOG".into(), "error".into()),
    ];
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    bad_origin_responses(&edge).await;
    ejects_and_recovers(&edge, &sick).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ejects_an_origin_answering_5xx_with_dynamodb() {
    let moto = MotoServer::start().await.unwrap();
    let table = common::moto_table(&moto, REGION).await;
    table.write(&ranking()).await.unwrap();
    let (sick, spare) = origins(54).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin-router.toml");
    std::fs::write(
        &config,
        config_text(&sick, &spare, "[store]\ndynamodb_table = \"rankings\""),
    )
    .unwrap();
    let mut env = moto.aws_env(REGION);
    env.push(("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()));
    env.push(("RUST_LOG".into(), "error".into()));
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    ejects_and_recovers(&edge, &sick).await;
}
