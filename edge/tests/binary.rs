//! The real `edge` binary as a separate process, driven through the Lambda
//! Runtime API protocol, reading a real DynamoDB API server (moto) through
//! the standard AWS environment, racing real local origins.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::RankingStore;
use origin_router_tests::runtime_api::{Function, RuntimeApi};
use origin_router_tests::services::MotoServer;
use origin_router_tests::{loopback, Mode, TestOrigin};
use serde_json::Value;

const REGION: &str = "eu-west-1";
const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

/// The decision line of the last invocation.
fn decision(edge: &Function) -> Value {
    edge.next_json_with("Source", Duration::from_secs(5))
        .expect("a decision line from the edge")
}

fn entry(id: &str, state: OriginState, ms: f64) -> RankedOrigin {
    RankedOrigin::measured(id, state, ms, 2)
}

fn doc(pool: &str, seq: u64, origins: Vec<RankedOrigin>) -> RankingDocument {
    RankingDocument::new(pool, REGION, seq, unix_millis_now(), origins)
}

fn event_for(host: &str) -> Value {
    let mut e: Value = serde_json::from_str(FIXTURE).unwrap();
    e["Records"][0]["cf"]["request"]["headers"]["host"][0]["value"] = host.into();
    e
}

async fn invoke(api: &RuntimeApi, edge: &Function, host: &str) -> (Value, Value, Duration) {
    let started = Instant::now();
    let answer = api
        .invoke(&event_for(host), Duration::from_secs(10))
        .await
        .expect("the edge answers")
        .unwrap_or_else(|e| panic!("invocation failed: {e}"));
    let took = started.elapsed();
    (answer, decision(edge), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_decides_through_the_runtime_api() {
    let moto = MotoServer::start().await.unwrap();
    let table = common::moto_table(&moto, REGION).await;

    let fast = TestOrigin::start(
        SocketAddr::new(loopback(31), 0),
        Mode::Delay(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let hang1 = TestOrigin::start(SocketAddr::new(loopback(32), 0), Mode::Hang)
        .await
        .unwrap();
    let hang2 = TestOrigin::start(SocketAddr::new(loopback(33), 0), Mode::BacklogFull)
        .await
        .unwrap();
    let http = |id: &str, o: &TestOrigin| {
        format!(
            r#"{{ id = "{id}", host = "{}", port = {}, protocol = "http" }}"#,
            o.addr().ip(),
            o.port()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin-router.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [routing.hosts]
            "fresh.test" = "fresh"
            "stale.test" = "stale"
            "race.test" = "race"
            "hang.test" = "hang"
            "down.test" = "down"
            "evil.test" = "evil"
            [pools.fresh]
            origins = [{{ id = "a", host = "a.example.net" }}, {{ id = "b", host = "b.example.net" }}]
            [pools.stale]
            origins = [{{ id = "a", host = "a.example.net" }}, {{ id = "b", host = "b.example.net" }}]
            [pools.race]
            origins = [{hang1}, {fast}]
            [pools.hang]
            default_origin = "h2"
            origins = [{hang1b}, {hang2}]
            [pools.down]
            default_origin = "b"
            origins = [{{ id = "a", host = "a.example.net" }}, {{ id = "b", host = "b.example.net" }}]
            [pools.evil]
            origins = [{{ id = "a", host = "a.example.net" }}]
            [edge]
            cache_ttl = "1s"
            [store]
            dynamodb_table = "rankings"
            [resolve]
            # Loopback only: a race never resolves or reaches a real host.
            "a.example.net" = "127.0.0.40"
            "b.example.net" = "127.0.0.41"
            "#,
            hang1 = http("h1", &hang1),
            fast = http("fast", &fast),
            hang1b = http("h1", &hang1),
            hang2 = http("h2", &hang2),
        ),
    )
    .unwrap();
    table
        .write(&doc(
            "fresh",
            1,
            vec![
                entry("b", OriginState::Healthy, 5.0),
                entry("a", OriginState::Healthy, 9.0),
            ],
        ))
        .await
        .unwrap();
    table
        .write(&doc(
            "stale",
            1,
            vec![
                entry("a", OriginState::Healthy, 5.0),
                entry("b", OriginState::Healthy, 9.0),
            ],
        ))
        .await
        .unwrap();
    table
        .write(&doc(
            "down",
            1,
            vec![
                entry("a", OriginState::Down, 5.0),
                entry("b", OriginState::Down, 9.0),
            ],
        ))
        .await
        .unwrap();
    table
        .write(&doc(
            "evil",
            1,
            vec![entry("attacker", OriginState::Healthy, 0.1)],
        ))
        .await
        .unwrap();

    let mut env = moto.aws_env(REGION);
    env.push(("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()));
    env.push(("RUST_LOG".into(), "warn".into()));
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    let api = &edge.api;

    // Fresh ranking: read once at start-up (every pool is), so even the
    // first request is served from the cache.
    let (request, d, _) = invoke(api, &edge, "fresh.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("cache"), Some("b"))
    );
    assert_eq!(d["RankingRegion"], REGION);
    assert_eq!(request["origin"]["custom"]["domainName"], "b.example.net");
    let (_, d, _) = invoke(api, &edge, "fresh.test").await;
    assert_eq!(d["Source"], "cache");

    // Stale: the table changes; past the cache TTL the old choice is served
    // at once and the new one arrives by a background refresh.
    invoke(api, &edge, "stale.test").await;
    table
        .write(&doc(
            "stale",
            2,
            vec![
                entry("b", OriginState::Healthy, 5.0),
                entry("a", OriginState::Down, 9.0),
            ],
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (_, d, _) = invoke(api, &edge, "stale.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("stale"), Some("a"))
    );
    let refreshed = async {
        for _ in 0..20 {
            let (_, d, _) = invoke(api, &edge, "stale.test").await;
            if d["Origin"] == "b" {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the background refresh never landed");
    }
    .await;
    assert_eq!(refreshed["Source"], "cache");

    // No ranking: a live race; the answering origin wins, the hanging one loses.
    let (request, d, took) = invoke(api, &edge, "race.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("race"), Some("fast"))
    );
    assert_eq!(
        request["origin"]["custom"]["domainName"],
        fast.addr().ip().to_string()
    );
    assert_eq!(request["origin"]["custom"]["port"], fast.port());
    eprintln!("live race: answered in {took:?}");
    assert!(took < Duration::from_millis(800), "{took:?}");

    // Every origin hangs (one accepts and never answers, one never accepts):
    // the default within the watchdog, and the two timeouts told apart.
    let (request, d, took) = invoke(api, &edge, "hang.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("watchdog"), Some("h2"))
    );
    eprintln!("every origin hanging: answered in {took:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "watchdog took {took:?}"
    );
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert_eq!(request["origin"]["custom"]["port"], hang2.port());
    let classes: Vec<&str> = d["RaceLosers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["class"].as_str())
        .collect();
    assert!(
        classes.contains(&"response_timeout") && classes.contains(&"connect_timeout"),
        "{classes:?}"
    );

    // The ranking says all down: the default at once, no race.
    let (_, d, took) = invoke(api, &edge, "down.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("known_down"), Some("b"))
    );
    eprintln!("all known down: answered in {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");

    // A ranking naming an origin outside the config is never followed: it
    // counts as no ranking (the race finds nothing listening, so the
    // default).
    let (request, d, _) = invoke(api, &edge, "evil.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("watchdog"), Some("a"))
    );
    assert_eq!(request["origin"]["custom"]["domainName"], "a.example.net");

    // A malformed event is a named error, and the process keeps serving.
    let answer = api
        .invoke(
            &serde_json::json!({"Records": "nope"}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let err = answer.unwrap_err();
    assert_eq!(err["errorType"], "MalformedEvent", "{err}");
    assert!(
        err["errorMessage"].as_str().unwrap().contains("Records"),
        "{err}"
    );
    let (_, d, _) = invoke(api, &edge, "fresh.test").await;
    assert_eq!(d["Origin"], "b");
}

/// The table's endpoint accepts connections and never answers, and every
/// origin hangs: the binary answers the pool's default within its one
/// deadline (0.9 s after the decision began, table read included), on
/// every request, and later requests do not wait for the table again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_table_and_hanging_origins_cost_one_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    // Accept, then hold every connection open without a byte.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let hang1 = TestOrigin::start(SocketAddr::new(loopback(34), 0), Mode::Hang)
        .await
        .unwrap();
    let hang2 = TestOrigin::start(SocketAddr::new(loopback(35), 0), Mode::BacklogFull)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin-router.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [routing]
            default_pool = "hang"
            [pools.hang]
            default_origin = "h2"
            origins = [
                {{ id = "h1", host = "{}", port = {}, protocol = "http" }},
                {{ id = "h2", host = "{}", port = {}, protocol = "http" }},
            ]
            [store]
            dynamodb_table = "rankings"
            dynamodb_endpoint = "{endpoint}"
            "#,
            hang1.addr().ip(),
            hang1.port(),
            hang2.addr().ip(),
            hang2.port(),
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = [
        ("ORIGIN_ROUTER_CONFIG", config.display().to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    // Timed from a started process: its start-up read of the silent table
    // is not a request's.
    assert!(
        edge.api.wait_ready(Duration::from_secs(10)).await,
        "the edge starts"
    );
    let (mut took, mut decided) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        let (request, d, t) = invoke(&edge.api, &edge, "anything.test").await;
        assert_eq!(
            (d["Source"].as_str(), d["Origin"].as_str()),
            (Some("watchdog"), Some("h2"))
        );
        assert_eq!(request["origin"]["custom"]["port"], hang2.port());
        took.push(t);
        decided.push(Duration::from_micros(d["DecisionMicros"].as_u64().unwrap()));
    }
    eprintln!("silent table, hanging origins: decided in {decided:?}, answered in {took:?}");
    for (d, t) in decided.iter().zip(&took) {
        // The decision's own clock: its one deadline is 0.9 s.
        assert!(*d <= Duration::from_millis(950), "decided in {decided:?}");
        // End to end through the Runtime API, with slack for a busy machine.
        assert!(*t < Duration::from_millis(1_500), "answered in {took:?}");
    }
    holder.abort();
}

/// The embedded store as a hostile or unlucky machine leaves it: a ranking
/// from a clock an hour ahead, a FIFO, a symlink to /dev/zero and a 100 MB
/// file where rankings should be. The binary ignores each at once (a race
/// decides those pools), still uses the good ranking beside them, and
/// stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_in_the_embedded_store_are_ignored_at_once() {
    let fast = TestOrigin::start(
        SocketAddr::new(loopback(36), 0),
        Mode::Delay(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let pools = ["good", "future", "fifo", "zero", "big"];
    let mut text = String::from("[routing.hosts]\n");
    for p in pools {
        text.push_str(&format!("\"{p}.test\" = \"{p}\"\n"));
    }
    for p in pools {
        text.push_str(&format!(
            "[pools.{p}]\norigins = [{{ id = \"fast\", host = \"{}\", port = {}, protocol = \"http\" }}, {{ id = \"other\", host = \"127.0.0.37\", port = 1025, protocol = \"http\" }}]\n",
            fast.addr().ip(),
            fast.port()
        ));
    }
    text.push_str(&format!(
        "[store]\nembedded_path = \"{}\"\n",
        root.display()
    ));
    let config = dir.path().join("origin-router.toml");
    std::fs::write(&config, text).unwrap();

    let store = origin_router::store::EmbeddedStore::new(&root);
    store
        .write(&doc(
            "good",
            1,
            vec![
                entry("other", OriginState::Healthy, 1.0),
                entry("fast", OriginState::Healthy, 9.0),
            ],
        ))
        .await
        .unwrap();
    for p in ["future", "fifo", "zero", "big"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    let file = |p: &str| root.join(p).join(format!("{REGION}.json"));
    let mut future = doc(
        "future",
        i64::MAX as u64,
        vec![entry("other", OriginState::Healthy, 1.0)],
    );
    future.generated_at = unix_millis_now() + 3_600_000;
    std::fs::write(file("future"), future.to_json()).unwrap();
    nix::unistd::mkfifo(&file("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", file("zero")).unwrap();
    std::fs::write(file("big"), vec![b' '; 100 * 1024 * 1024]).unwrap();

    let env: Vec<(String, String)> = vec![
        ("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()),
        ("AWS_REGION".into(), REGION.into()),
        ("RUST_LOG".into(), "error".into()),
    ];
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    let (_, d, _) = invoke(&edge.api, &edge, "good.test").await;
    assert_eq!(
        (d["Source"].as_str(), d["Origin"].as_str()),
        (Some("cache"), Some("other")),
        "read at start-up"
    );
    for round in 0..3 {
        for p in ["future", "fifo", "zero", "big"] {
            let (_, d, took) = invoke(&edge.api, &edge, &format!("{p}.test")).await;
            assert_eq!(d["Origin"], "fast", "{p}: {d}");
            assert_ne!(d["Source"], "table", "{p}: {d}");
            assert!(
                took < Duration::from_millis(1_500),
                "{p} round {round}: {took:?}"
            );
        }
    }
    let rss = origin_router_tests::services::peak_rss_kib(edge.pid()).unwrap_or(0);
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
}

/// Band steering through the binary: a pool with `band` over two
/// near-equal origins (a third outside it) sends different URIs to
/// different origins, the same URI always to the same one, and names the
/// band's size in the decision line. `store_toml` picks the store.
async fn band_spreads_and_keys_stay(
    store_toml: &str,
    store: &dyn RankingStore,
    env: Vec<(String, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        [routing.hosts]
        "band.test" = "band"
        [pools.band]
        origins = [
            {{ id = "near1", host = "127.0.0.42", port = 1025, protocol = "http" }},
            {{ id = "near2", host = "127.0.0.43", port = 1025, protocol = "http" }},
            {{ id = "far", host = "127.0.0.44", port = 1025, protocol = "http" }},
        ]
        [pools.band.steering]
        policy = "band"
        band_absolute = "3ms"
        band_relative = 0.1
        {store_toml}
        "#
    );
    let config = dir.path().join("origin-router.toml");
    std::fs::write(&config, text).unwrap();
    store
        .write(&doc(
            "band",
            1,
            vec![
                entry("near1", OriginState::Healthy, 20.0),
                entry("near2", OriginState::Healthy, 21.0),
                entry("far", OriginState::Healthy, 40.0),
            ],
        ))
        .await
        .unwrap();
    let mut env = env;
    env.push(("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()));
    env.push(("RUST_LOG".into(), "warn".into()));
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    let mut chosen = std::collections::BTreeMap::new();
    for round in 0..3 {
        for i in 0..16 {
            let uri = format!("/objects/{i}.bin");
            let mut event = event_for("band.test");
            event["Records"][0]["cf"]["request"]["uri"] = uri.clone().into();
            let answer = edge
                .api
                .invoke(&event, Duration::from_secs(10))
                .await
                .expect("the edge answers")
                .unwrap_or_else(|e| panic!("invocation failed: {e}"));
            let d = decision(&edge);
            assert_eq!(d["Source"], "cache", "{d}");
            assert_eq!(d["Band"], 2, "{d}");
            let origin = d["Origin"].as_str().unwrap().to_string();
            let host = match origin.as_str() {
                "near1" => "127.0.0.42",
                "near2" => "127.0.0.43",
                other => panic!("{uri} went to {other}, outside the band"),
            };
            assert_eq!(answer["origin"]["custom"]["domainName"], host);
            if round == 0 {
                chosen.insert(uri, origin);
            } else {
                assert_eq!(chosen[&uri], origin, "{uri} moved in round {round}");
            }
        }
    }
    let on_near1 = chosen.values().filter(|o| *o == "near1").count();
    assert!(
        (1..16).contains(&on_near1),
        "16 URIs over a band of two all went one way: {chosen:?}"
    );
}

/// The configuration a new user starts with: the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_spreads_a_band_and_keeps_each_key_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = origin_router::store::EmbeddedStore::new(&root);
    band_spreads_and_keys_stay(
        &format!("[store]\nembedded_path = \"{}\"", root.display()),
        &store,
        vec![("AWS_REGION".into(), REGION.into())],
    )
    .await;
}

/// The full configuration: DynamoDB (moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_spreads_a_band_and_keeps_each_key_dynamodb() {
    let moto = MotoServer::start().await.unwrap();
    let table = common::moto_table(&moto, REGION).await;
    band_spreads_and_keys_stay(
        "[store]\ndynamodb_table = \"rankings\"",
        &table,
        moto.aws_env(REGION),
    )
    .await;
}

/// An operator's drain and override, as `prober drain` / `prober override`
/// store them in the embedded store a new user starts with: the binary
/// never sends the pool to the drained origin, and follows the override
/// whatever the ranking says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_honours_a_drain_and_an_override() {
    use origin_router::control::{Control, ControlKind, ALL_REGIONS};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut text = String::from(
        "[routing.hosts]\n\"drained.test\" = \"drained\"\n\"overridden.test\" = \"overridden\"\n",
    );
    for p in ["drained", "overridden"] {
        text.push_str(&format!(
            "[pools.{p}]\norigins = [{{ id = \"best\", host = \"127.0.0.38\", port = 1025, protocol = \"http\" }}, {{ id = \"spare\", host = \"127.0.0.39\", port = 1025, protocol = \"http\" }}]\n"
        ));
    }
    text.push_str(&format!(
        "[store]\nembedded_path = \"{}\"\n",
        root.display()
    ));
    let config = dir.path().join("origin-router.toml");
    std::fs::write(&config, text).unwrap();

    let store = origin_router::store::EmbeddedStore::new(&root);
    let now = unix_millis_now();
    for (pool, kind, origin, region) in [
        ("drained", ControlKind::Drain, "best", REGION),
        ("overridden", ControlKind::Override, "spare", ALL_REGIONS),
    ] {
        store
            .write(&doc(
                pool,
                1,
                vec![
                    entry("best", OriginState::Healthy, 1.0),
                    entry("spare", OriginState::Healthy, 9.0),
                ],
            ))
            .await
            .unwrap();
        store
            .put_control(
                &Control {
                    kind,
                    pool: pool.into(),
                    region: region.into(),
                    origin: origin.into(),
                    set_at: now,
                    until: now + 600_000,
                    by: "ops".into(),
                    reason: "test".into(),
                },
                true,
            )
            .await
            .unwrap();
    }
    let env: Vec<(String, String)> = vec![
        ("ORIGIN_ROUTER_CONFIG".into(), config.display().to_string()),
        ("AWS_REGION".into(), REGION.into()),
        ("RUST_LOG".into(), "error".into()),
    ];
    let edge = Function::start(std::path::Path::new(env!("CARGO_BIN_EXE_edge")), env)
        .await
        .unwrap();
    for _ in 0..2 {
        let (answer, d, _) = invoke(&edge.api, &edge, "drained.test").await;
        assert_eq!(
            (d["Source"].as_str(), d["Origin"].as_str()),
            (Some("cache"), Some("spare")),
            "{d}"
        );
        assert_eq!(answer["origin"]["custom"]["domainName"], "127.0.0.39");
        let (answer, d, _) = invoke(&edge.api, &edge, "overridden.test").await;
        assert_eq!(
            (d["Source"].as_str(), d["Origin"].as_str()),
            (Some("override"), Some("spare")),
            "{d}"
        );
        assert_eq!(answer["origin"]["custom"]["domainName"], "127.0.0.39");
    }
}
