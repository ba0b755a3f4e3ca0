//! Drains in the published ranking and state-change events, through the
//! real `prober` binary: on the embedded store a new user starts with (log
//! lines), and on moto with an EventBridge bus whose rule sends every
//! `origin-router` event to an SQS queue the test reads.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, prober, run_ok, Proc, REGION};
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::services::MotoServer;
use origin_router_tests::{Mode, TestOrigin};

async fn two_origins() -> (TestOrigin, TestOrigin) {
    let a = TestOrigin::start("127.0.0.1:0".parse().unwrap(), Mode::Ok)
        .await
        .unwrap();
    let b = TestOrigin::start(
        "127.0.0.2:0".parse().unwrap(),
        Mode::Delay(Duration::from_millis(30)),
    )
    .await
    .unwrap();
    (a, b)
}

fn write_config(dir: &Path, a: &TestOrigin, b: &TestOrigin, rest: &str) -> String {
    let text = format!(
        r#"
        [pools.web]
        origins = [
            {{ id = "a", host = "127.0.0.1", port = {}, protocol = "http" }},
            {{ id = "b", host = "127.0.0.2", port = {}, protocol = "http" }},
        ]
        [prober]
        region = "{REGION}"
        interval = "1s"
        metrics_listen = "127.0.0.1:{}"
        {rest}
        "#,
        a.port(),
        b.port(),
        origin_router_tests::services::free_port()
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The published states of `web` once `want` holds of them (within 30 s),
/// or, failing that, the last ones seen.
async fn states_until(
    store: &dyn RankingStore,
    want: impl Fn(&[(String, String)]) -> bool,
) -> Result<Vec<(String, String)>, Vec<(String, String)>> {
    let found = eventually(Duration::from_secs(30), || async {
        Some(states(store).await).filter(|s| want(s))
    })
    .await;
    match found {
        Some(s) => Ok(s),
        None => Err(states(store).await),
    }
}

/// Everything a worker started with [`Proc`] logged into `dir` (files:
/// no colour sequences, see `cli.rs`).
fn worker_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("worker.log")).unwrap()
        + &std::fs::read_to_string(dir.join("worker.err")).unwrap()
}

/// The published states of `web` in the region, best first.
async fn states(store: &dyn RankingStore) -> Vec<(String, String)> {
    let Ok(read) = store.read_pool("web").await else {
        return Vec::new();
    };
    read.region(REGION)
        .map(|d| {
            d.origins
                .iter()
                .map(|o| (o.id.clone(), o.state.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A new user's worker (embedded store, no Redis, no AWS): a drain shows
/// as `drained`, ranked last, in the ranking it publishes, with an
/// `origin_state` log line; after `undrain` the origin is back on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_published_and_logged_by_a_new_users_worker() {
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let c = write_config(
        dir.path(),
        &a,
        &b,
        &format!("[store]\nembedded_path = \"{}\"", store_dir.display()),
    );
    let log = dir.path().join("worker.log");
    let _worker = Proc(
        prober(&[])
            .env("RUST_LOG", "info")
            .args(["run", "-c", &c])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("worker.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let store = EmbeddedStore::new(&store_dir);
    let healthy =
        |s: &[(String, String)]| s.len() == 2 && s[0] == ("a".to_string(), "healthy".to_string());
    if let Err(s) = states_until(&store, healthy).await {
        panic!("a never ranked first: {:?}", s);
    }
    run_ok(prober(&[]).args([
        "drain", "-c", &c, "web", "a", "--for", "10m", "--reason", "patching", "--by", "ops",
    ]));
    let drained = states_until(&store, a_drained).await;
    assert_eq!(
        drained.as_ref().ok().map(|s| s[0].0.as_str()),
        Some("b"),
        "not published drained: {:?}",
        states(&store).await
    );
    let logged = worker_log(dir.path());
    assert!(
        logged.lines().any(|l| l.contains("event=\"origin_state\"")
            && l.contains("origin=a")
            && l.contains("to=\"drained\"")),
        "no drained event in the log:\n{logged}"
    );
    run_ok(prober(&[]).args(["undrain", "-c", &c, "web", "a"]));
    if let Err(s) = states_until(&store, healthy).await {
        panic!("a not back after undrain: {:?}", s);
    }
}

/// What the queue has delivered so far, searched and read further.
struct Queue<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    url: &'a str,
    received: &'a mut Vec<serde_json::Value>,
}

impl Queue<'_> {
    /// The first event received that `want` accepts, reading the queue for
    /// up to 40 s.
    async fn find(
        &mut self,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(found) = self.received.iter().find(|e| want(e)) {
                return Some(found.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let out = self
                .sqs
                .receive_message()
                .queue_url(self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages() {
                self.received
                    .push(serde_json::from_str(m.body().unwrap()).unwrap());
            }
        }
    }
}

/// The AWS configuration of the moto server, for every client the test
/// itself uses (SQS, EventBridge).
async fn moto_sdk(moto: &MotoServer) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// The full configuration (DynamoDB on moto, `events.event_bus` set): a
/// rule on the bus sends `origin-router` events to an SQS queue, and the
/// test reads there the drain (an `Origin State Changed` to `drained`), the
/// top-origin change, and an override's start and end, each with the
/// documented detail fields. Operators set them without `--by`: the AWS
/// identity (STS) is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_an_sqs_queue_through_an_eventbridge_rule() {
    let moto = MotoServer::start().await.unwrap();
    let env = moto.aws_env(REGION);
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let c = write_config(
        dir.path(),
        &a,
        &b,
        &format!(
            "[store]\ndynamodb_table = \"{}\"\n[events]\nevent_bus = \"ops\"\nendpoint = \"{}\"\nregion = \"{REGION}\"",
            common::TABLE,
            moto.endpoint()
        ),
    );
    run_ok(prober(&env).args(["init-table", "-c", &c]));

    let sdk = moto_sdk(&moto).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs.create_queue().queue_name("ops").send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_string();
    let queue_arn = format!("arn:aws:sqs:{REGION}:123456789012:ops");
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    events.create_event_bus().name("ops").send().await.unwrap();
    events
        .put_rule()
        .name("origin-router-to-sqs")
        .event_bus_name("ops")
        .event_pattern(r#"{"source":["origin-router"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("origin-router-to-sqs")
        .event_bus_name("ops")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let _worker = Proc(
        prober(&env)
            .env("RUST_LOG", "info")
            .args(["run", "-c", &c])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut received: Vec<serde_json::Value> = Vec::new();
    let mut read_until = Queue {
        sqs: &sqs,
        url: &queue_url,
        received: &mut received,
    };

    // The first ranking is published with `a` on top; draining it moves
    // the top to `b`.
    let store = common::dynamo(&moto).await;
    if let Err(s) = states_until(store.as_ref(), |s| {
        s.first().map(|t| t.0.as_str()) == Some("a")
    })
    .await
    {
        panic!("no ranking with a on top: {s:?}");
    }
    run_ok(prober(&env).args([
        "drain", "-c", &c, "web", "a", "--region", REGION, "--for", "10m", "--reason", "patching",
    ]));
    let drained = read_until
        .find(|e| e["detail-type"] == "Origin State Changed" && e["detail"]["to"] == "drained")
        .await
        .expect("a drained event reaches the queue");
    assert_eq!(drained["source"], "origin-router");
    let d = &drained["detail"];
    assert_eq!(d["version"], "1");
    assert_eq!(
        (
            d["pool"].as_str(),
            d["region"].as_str(),
            d["origin"].as_str()
        ),
        (Some("web"), Some(REGION), Some("a"))
    );
    assert_eq!(d["from"], "healthy");
    assert!(d["at"].as_u64().is_some(), "{d}");
    let top = read_until
        .find(|e| e["detail-type"] == "Top Origin Changed")
        .await
        .expect("a top-origin event reaches the queue");
    assert_eq!(
        (top["detail"]["from"].as_str(), top["detail"]["to"].as_str()),
        (Some("a"), Some("b"))
    );

    // The drain was recorded with the caller's AWS identity.
    let status: serde_json::Value = serde_json::from_str(&run_ok(
        prober(&env).args(["status", "-c", &c, "--format", "json"]),
    ))
    .unwrap();
    let by = status["web"]["controls"][0]["by"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(by.starts_with("arn:aws:"), "by = {by}");

    run_ok(prober(&env).args([
        "override",
        "-c",
        &c,
        "web",
        "b",
        "--for",
        "10m",
        "--reason",
        "incident 42",
        "--by",
        "oncall",
    ]));
    let started = read_until
        .find(|e| e["detail-type"] == "Override Started")
        .await
        .expect("an override-started event reaches the queue");
    let d = &started["detail"];
    assert_eq!(
        (d["origin"].as_str(), d["by"].as_str(), d["reason"].as_str()),
        (Some("b"), Some("oncall"), Some("incident 42"))
    );
    assert!(d["until"].as_u64().unwrap() > d["set_at"].as_u64().unwrap());
    run_ok(prober(&env).args(["override", "-c", &c, "web", "--clear"]));
    let ended = read_until
        .find(|e| e["detail-type"] == "Override Ended")
        .await
        .expect("an override-ended event reaches the queue");
    assert_eq!(ended["detail"]["origin"], "b");
}

/// An EventBridge endpoint that accepts connections and never answers, and
/// hostile controls in the store (an origin outside the config, a drain
/// longer than `operations.max_drain`): the worker goes on publishing, the
/// good drain still applies, each bad control is logged as ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_event_bus_and_hostile_controls_never_stop_publishing() {
    use origin_router::control::{Control, ControlKind, ALL_REGIONS};
    let (a, b) = two_origins().await;
    // Accepts, reads, never answers; holds every connection.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let c = write_config(
        dir.path(),
        &a,
        &b,
        &format!(
            "[store]\nembedded_path = \"{}\"\n[operations]\nmax_drain = \"1h\"\n[events]\nevent_bus = \"ops\"\nendpoint = \"http://{silent_addr}\"\nregion = \"{REGION}\"",
            store_dir.display()
        ),
    );
    let store = EmbeddedStore::new(&store_dir);
    let now = origin_router::sample::unix_millis_now();
    let drain = |origin: &str, hours: u64| Control {
        kind: ControlKind::Drain,
        pool: "web".into(),
        region: ALL_REGIONS.into(),
        origin: origin.into(),
        set_at: now,
        until: now + hours * 3_600_000,
        by: "someone".into(),
        reason: "hostile".into(),
    };
    store.put_control(&drain("ghost", 1), true).await.unwrap();
    store.put_control(&drain("b", 48), true).await.unwrap();
    let log = dir.path().join("worker.log");
    let _worker = Proc(
        prober(&[
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ])
        .env("RUST_LOG", "info")
        .args(["run", "-c", &c])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("worker.err")).unwrap())
        .spawn()
        .unwrap(),
    );
    // b's drain lasts beyond the maximum: ignored, so both are usable.
    let both = states_until(&store, |s| {
        s.len() == 2 && s.iter().all(|(_, st)| st == "healthy")
    })
    .await;
    assert!(both.is_ok(), "{both:?}");
    // A good drain while every event put hangs: still published.
    run_ok(prober(&[]).args([
        "drain", "-c", &c, "web", "a", "--for", "10m", "--reason", "patching", "--by", "ops",
    ]));
    if let Err(s) = states_until(&store, a_drained).await {
        panic!("{s:?}");
    }
    // Rankings keep coming while the bus stays silent.
    let seq = |s: &Option<origin_router::RankingDocument>| s.as_ref().map(|d| d.seq).unwrap_or(0);
    let first = store
        .read_pool("web")
        .await
        .unwrap()
        .region(REGION)
        .cloned();
    let later = eventually(Duration::from_secs(20), || async {
        let d = store.read_pool("web").await.ok()?.region(REGION).cloned();
        (seq(&d) > seq(&first)).then_some(())
    })
    .await;
    assert!(later.is_some(), "publishing stopped");
    let logged = worker_log(dir.path());
    for key in ["drain#all-regions#ghost", "drain#all-regions#b"] {
        assert!(
            logged
                .lines()
                .any(|l| l.contains("ignored a drain or override") && l.contains(key)),
            "{key} not logged as ignored:\n{logged}"
        );
    }
    held.abort();
}

/// `a` published drained, last.
fn a_drained(s: &[(String, String)]) -> bool {
    s.last() == Some(&("a".to_string(), "drained".to_string()))
}
