//! The `prober` binary as operators run it: as processes against a real
//! Redis and moto, configured only through files and the standard AWS
//! environment.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use origin_router_tests::services::{free_port, MotoServer, RedisServer};
use origin_router_tests::{Mode, TestOrigin};

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "run",
        "once",
        "check-config",
        "rankings",
        "init-table",
        "healthcheck",
        "drain",
        "undrain",
        "override",
        "status",
    ] {
        let out = run_ok(prober(&[]).args([sub, "--help"]));
        assert!(out.contains("Usage: prober"), "{sub}: {out}");
    }
}

#[test]
fn check_config_prints_the_effective_config_or_the_error() {
    let example =
        origin_router_tests::services::workspace_root().join("examples/origin-router.toml");
    let out = run_ok(prober(&[]).arg("check-config").arg(&example));
    assert!(out.contains("race_watchdog = \"900ms\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pools.web]\norigins = [{ id = \"a\", host = \"a.test\", port = 70000 }]\n",
    )
    .unwrap();
    let out = prober(&[]).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: pools.web.origins[0].port: 70000 is not a valid port"),
        "{err}"
    );
    let out = prober(&[])
        .args(["check-config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml: cannot read"));
    let out = prober(&[])
        .args(["rankings", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad arguments are clap errors");
}

#[tokio::test]
async fn once_prints_every_phase_and_failure_class() {
    let ok = TestOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Delay(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let err = TestOrigin::start("127.0.0.1:0".parse().unwrap(), Mode::Status(503))
        .await
        .unwrap();
    let hang = TestOrigin::start("127.0.0.1:0".parse().unwrap(), Mode::Hang)
        .await
        .unwrap();
    let origins = [ok, err, hang];
    let mut c = config(&origins, "once", None, None);
    c.store.dynamodb_table = None;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&c, dir.path(), "once");
    let out = tokio::task::spawn_blocking(move || {
        run_ok(prober(&[]).args(["once", "--config"]).arg(&path))
    })
    .await
    .unwrap();
    for expected in [
        "dns ms",
        "conn ms",
        "tls ms",
        "1st byte ms",
        "http_status:503",
        "response_timeout",
        "rank",
        "healthy",
    ] {
        assert!(out.contains(expected), "missing {expected}:\n{out}");
    }
}

/// The item the worker writes, read with the raw DynamoDB API: the layout
/// the deploy guide documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_item_has_the_documented_layout_and_the_cli_reads_it() {
    let moto = MotoServer::start().await.unwrap();
    let origins = origins([&[], &[], &[]]).await;
    let c = config(&origins, "solo", None, None);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&c, dir.path(), "solo");

    let p = path.clone();
    let env = moto.aws_env(REGION);
    let init = tokio::task::spawn_blocking(move || {
        let first = run_ok(prober(&env).args(["init-table", "--config"]).arg(&p));
        let second = run_ok(prober(&env).args(["init-table", "--config"]).arg(&p));
        (first, second)
    })
    .await
    .unwrap();
    assert!(
        init.0.contains("created") && init.1.contains("already exists"),
        "{init:?}"
    );

    let worker = Proc(
        prober(&moto.aws_env(REGION))
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let client = dynamo_client(&moto);
    let item = eventually(Duration::from_secs(15), || async {
        client
            .get_item()
            .table_name(TABLE)
            .key("pool", AttributeValue::S("web".into()))
            .key("region", AttributeValue::S(REGION.into()))
            .send()
            .await
            .ok()?
            .item
    })
    .await
    .expect("the worker publishes an item");
    drop(worker);

    let n = |k: &str| match &item[k] {
        AttributeValue::N(n) => n.parse::<f64>().unwrap(),
        other => panic!("{k} is not a number: {other:?}"),
    };
    assert_eq!(n("schema_version"), 1.0);
    assert!(n("seq") > 1e15, "time-based fencing number");
    let now = origin_router::sample::unix_millis_now() as f64;
    assert!((now - n("generated_at")).abs() < 60_000.0);
    assert!(
        (n("expires_at") - (now / 1000.0 + 86_400.0)).abs() < 120.0,
        "TTL one day ahead, in seconds"
    );
    assert_eq!(n("probe_interval_ms"), 1000.0);
    let AttributeValue::L(entries) = &item["origins"] else {
        panic!("origins is a list")
    };
    assert_eq!(entries.len(), 3);
    for e in entries {
        let AttributeValue::M(m) = e else {
            panic!("entry is a map")
        };
        let s = |k: &str| match &m[k] {
            AttributeValue::S(s) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert!(["a", "b", "c"].contains(&s("id").as_str()));
        assert_eq!(s("state"), "healthy");
        for k in [
            "latency_ms",
            "score",
            "success_ratio",
            "voters",
            "down_votes",
        ] {
            assert!(matches!(m[k], AttributeValue::N(_)), "{k}");
        }
    }

    let p = path.clone();
    let env = moto.aws_env(REGION);
    let (json, table) = tokio::task::spawn_blocking(move || {
        let json = run_ok(
            prober(&env)
                .args(["rankings", "--format", "json", "--config"])
                .arg(&p),
        );
        let table = run_ok(
            prober(&env)
                .args(["rankings", "--region", REGION, "--config"])
                .arg(&p),
        );
        (json, table)
    })
    .await
    .unwrap();
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(docs.len(), 1);
    assert!(docs[0]["age_ms"].as_u64().is_some());
    assert!(table.contains("pool web  region eu-west-1"), "{table}");
}

/// Three worker processes; the leader is killed (SIGKILL, no lease
/// release). Another worker takes over within the lease TTL plus a round,
/// and the region's ranking keeps being published. SIGTERM stops a worker
/// with exit code 0 and releases its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_sigterm_exits_cleanly() {
    let redis = RedisServer::start().await.unwrap();
    let moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let origins = origins([&[], &[], &[]]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs: HashMap<String, Proc> = HashMap::new();
    let mut health_ports = Vec::new();
    for i in 1..=3 {
        let name = format!("w{i}");
        let mut c = config(&origins, &name, None, Some(redis.url()));
        let port = free_port();
        health_ports.push(port);
        c.prober.metrics_listen = Some(([127, 0, 0, 1], port).into());
        let path = write_config(&c, dir.path(), &name);
        procs.insert(
            name,
            Proc(
                prober(&moto.aws_env(REGION))
                    .args(["run", "--config"])
                    .arg(&path)
                    .spawn()
                    .unwrap(),
            ),
        );
    }
    let leader = eventually(Duration::from_secs(15), || async {
        leader_worker(&redis.url()).await
    })
    .await
    .expect("a leader");
    let before = eventually(Duration::from_secs(15), || async {
        ranking(store.as_ref()).await
    })
    .await
    .unwrap();

    let killed_at = Instant::now();
    let mut old = procs.remove(&leader).unwrap();
    old.0.kill().unwrap();
    old.0.wait().unwrap();
    let new_leader = eventually(Duration::from_secs(10), || async {
        leader_worker(&redis.url()).await.filter(|l| *l != leader)
    })
    .await
    .expect("another worker takes over");
    let kill_ms = origin_router::sample::unix_millis_now();
    let published = eventually(Duration::from_secs(10), || async {
        ranking(store.as_ref())
            .await
            .filter(|d| d.seq > before.seq && d.generated_at > kill_ms)
    })
    .await
    .expect("the region's ranking keeps being published");
    let took = killed_at.elapsed();
    // Lease TTL 3 s + one 1 s round, with slack for a loaded machine.
    assert!(
        took < Duration::from_secs(8),
        "takeover and publish took {took:?}"
    );
    assert!(published.workers >= 2);

    let mut survivor = procs.remove(&new_leader).unwrap();
    sigterm(&survivor.0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = survivor.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM did not stop the worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let next = leader_worker(&redis.url()).await;
    assert_ne!(
        next.as_deref(),
        Some(new_leader.as_str()),
        "the lease was released on SIGTERM"
    );
}

/// A new user's first worker: one origin, the embedded store, no Redis,
/// no AWS. Its `/metrics` carries every per-origin probe metric (their
/// handles are made when the worker starts, so the recorder must be in
/// place before them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solo_worker_on_the_embedded_store_exports_per_origin_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, path, metrics) = solo_setup(dir.path(), "").await;
    let _worker = Proc(
        prober(&[])
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let wanted = [
        r#"origin_router_probe_phase_seconds_bucket{region="eu-west-1",pool="web",origin="only",phase="first_byte""#,
        r#"origin_router_probes_total{region="eu-west-1",pool="web",origin="only",result="ok"}"#,
        r#"origin_router_probe_failures_total{region="eu-west-1",pool="web",origin="only",class="connect_refused"}"#,
    ];
    let url = format!("http://{metrics}/metrics");
    let scraped = eventually(Duration::from_secs(15), || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        wanted.iter().all(|w| body.contains(w)).then_some(body)
    })
    .await;
    let last = reqwest::get(&url).await.ok();
    let body = match last {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    assert!(
        scraped.is_some(),
        "missing per-origin metrics; /metrics said:\n{body}"
    );
}

/// Logs written to a pipe (a log collector, `| grep`) carry no terminal
/// colour codes: the worker's own lines and those of its probes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, path, metrics) = solo_setup(dir.path(), "").await;
    let mut worker = Proc(
        prober(&[])
            .env("RUST_LOG", "debug")
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read as it comes, so a full pipe never holds the worker up; the
    // reader ends when the worker does.
    let mut stderr = worker.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // A round has run once a probe is counted: there is something of
    // every kind in the log by then.
    let url = format!("http://{metrics}/metrics");
    let ran = eventually(Duration::from_secs(15), || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        body.lines()
            .any(|l| {
                l.starts_with("origin_router_probes_total{")
                    && l.contains(r#"result="ok""#)
                    && !l.ends_with(" 0")
            })
            .then_some(())
    })
    .await;
    drop(worker);
    let out = reader.join().unwrap();
    assert!(ran.is_some(), "the worker never probed:\n{out}");
    assert!(out.contains("prober worker starting"), "{out}");
    assert!(
        !out.contains("\u{1b}["),
        "colour codes in piped logs:\n{out}"
    );
}

/// What a worker whose clock ran an hour ahead (or a hand-edit) leaves in
/// the store: `generated_at` an hour from now, `seq = i64::MAX`, one origin.
fn runaway_ranking(
    origin: &str,
    state: origin_router::OriginState,
) -> origin_router::RankingDocument {
    origin_router::RankingDocument::new(
        "web",
        REGION,
        i64::MAX as u64,
        origin_router::sample::unix_millis_now() + 3_600_000,
        vec![origin_router::RankedOrigin::measured(origin, state, 1.0, 1)],
    )
}

/// A ranking from a clock an hour ahead, with `seq = i64::MAX`, planted in
/// the table as a runaway worker (or a hand-edit) would leave it: the real
/// worker replaces it within a few rounds, since its seq is beyond the
/// ceiling; `prober reset-ranking` deletes an item outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_table_item_is_replaced_and_reset_ranking_deletes_one() {
    let moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let origins = origins([&[], &[], &[]]).await;
    let c = config(&origins, "solo", None, None);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&c, dir.path(), "solo");
    let poisoned = runaway_ranking("b", origin_router::OriginState::Healthy);
    dynamo_client(&moto)
        .put_item()
        .table_name(TABLE)
        .set_item(Some(origin_router::store::codec::to_item(&poisoned, 0)))
        .send()
        .await
        .unwrap();
    let listed = run_ok(
        prober(&moto.aws_env(REGION))
            .args(["rankings", "--config"])
            .arg(&path),
    );
    assert!(listed.contains("FROM THE FUTURE"), "{listed}");

    let worker = Proc(
        prober(&moto.aws_env(REGION))
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let repaired = eventually(Duration::from_secs(15), || async {
        ranking(store.as_ref()).await.filter(|d| {
            let now = origin_router::sample::unix_millis_now();
            d.seq <= origin_router::document::seq_ceiling(now) && d.age_ms(now).is_some()
        })
    })
    .await;
    drop(worker);
    assert!(
        repaired.is_some(),
        "the worker never replaced the poisoned item"
    );

    let out = run_ok(
        prober(&moto.aws_env(REGION))
            .args(["reset-ranking", "--config"])
            .arg(&path)
            .args(["web", REGION]),
    );
    assert!(out.contains("deleted the ranking of pool web"), "{out}");
    assert!(ranking(store.as_ref()).await.is_none());
    let out = run_ok(
        prober(&moto.aws_env(REGION))
            .args(["reset-ranking", "--config"])
            .arg(&path)
            .args(["web", REGION]),
    );
    assert!(out.contains("there was no ranking"), "{out}");
    let bad = prober(&moto.aws_env(REGION))
        .args(["reset-ranking", "--config"])
        .arg(&path)
        .args(["../web", REGION])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pool `../web` is not a valid name"));
}

/// The same repair in the configuration a new user starts with: the
/// embedded store, no Redis, no AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_embedded_ranking_is_replaced_by_a_solo_worker() {
    let origin = TestOrigin::start("127.0.0.1:0".parse().unwrap(), Mode::Ok)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let path = solo_config(dir.path(), origin.port(), "");
    let poisoned = runaway_ranking("only", origin_router::OriginState::Down);
    std::fs::create_dir_all(root.join("web")).unwrap();
    std::fs::write(root.join(format!("web/{REGION}.json")), poisoned.to_json()).unwrap();
    let store = origin_router::store::EmbeddedStore::new(&root);
    let _worker = Proc(
        prober(&[])
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let repaired = eventually(Duration::from_secs(15), || async {
        use origin_router::store::RankingStore;
        let read = store.read_pool("web").await.ok()?;
        read.region(REGION)
            .filter(|d| {
                d.seq < i64::MAX as u64
                    && d.top()
                        .is_some_and(|t| t.state == origin_router::OriginState::Healthy)
            })
            .cloned()
    })
    .await;
    assert!(
        repaired.is_some(),
        "the worker never replaced the poisoned file"
    );
}

/// Two origins in the configuration a new user starts with (embedded
/// store, no Redis, every prober and ranking setting at its default).
fn two_origin_config(dir: &std::path::Path, a: u16, b: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
        [pools.web]
        origins = [
            {{ id = "a", host = "127.0.0.1", port = {a}, protocol = "http" }},
            {{ id = "b", host = "127.0.0.1", port = {b}, protocol = "http" }},
        ]
        [prober]
        region = "{REGION}"
        metrics_listen = "127.0.0.1:{}"
        [store]
        embedded_path = "{}"
        "#,
        free_port(),
        dir.join("store").display()
    );
    let path = dir.join("two.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// How long the shipped worker takes, with default settings, to take `a`
/// off the top after `fail` is applied to it. With fixed budgets a hung
/// origin needs `fall` response timeouts (at least 3 x 2 s) and a 10x
/// slower one several half-lives; adaptive budgets and step following do
/// it within about one round. The bound (6 s) sits between the two.
async fn time_to_leave_the_top(
    fail: Mode,
    a_mode: Mode,
    b_mode: Mode,
) -> (Duration, origin_router::RankingDocument) {
    use origin_router::store::RankingStore;
    let a = TestOrigin::start("127.0.0.1:0".parse().unwrap(), a_mode)
        .await
        .unwrap();
    let b = TestOrigin::start("127.0.0.1:0".parse().unwrap(), b_mode)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = two_origin_config(dir.path(), a.port(), b.port());
    let store = origin_router::store::EmbeddedStore::new(dir.path().join("store"));
    let _worker = Proc(
        prober(&[])
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let top = || async {
        let read = store.read_pool("web").await.ok()?;
        let doc = read.region(REGION)?.clone();
        Some(doc)
    };
    // Three rounds with `a` healthy on top: its latency is learnt.
    let mut seqs = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settled = None;
    while Instant::now() < deadline {
        let on_top = top().await.filter(|doc| {
            doc.top()
                .is_some_and(|t| t.id == "a" && t.state == origin_router::OriginState::Healthy)
        });
        match on_top {
            Some(doc) => {
                seqs.insert(doc.seq);
                if seqs.len() >= 3 {
                    settled = Some(());
                    break;
                }
            }
            None => seqs.clear(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled.is_some(),
        "`a` never settled on top: {:?}",
        top().await
    );
    a.set_mode(fail);
    let failed_at = Instant::now();
    let left = eventually(Duration::from_secs(20), || async {
        let doc = top().await?;
        doc.top().is_some_and(|t| t.id != "a").then_some(doc)
    })
    .await;
    let took = failed_at.elapsed();
    let Some(doc) = left else {
        panic!("`a` never left the top: {:?}", top().await);
    };
    (took, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_origin_leaves_the_top_about_as_fast_as_a_dead_one() {
    let (took, doc) =
        time_to_leave_the_top(Mode::Hang, Mode::Ok, Mode::Delay(Duration::from_millis(20))).await;
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // Cut at its budget: down, as a response timeout.
    let a = doc.entry("a").unwrap();
    assert_eq!(a.state, origin_router::OriginState::Down, "{doc:?}");
    assert_eq!(
        a.last_failure,
        Some(origin_router::sample::FailureClass::ResponseTimeout),
        "{doc:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10x_slower_origin_leaves_the_top_within_a_round_or_two() {
    let (took, doc) = time_to_leave_the_top(
        Mode::Delay(Duration::from_millis(100)),
        Mode::Delay(Duration::from_millis(10)),
        Mode::Delay(Duration::from_millis(80)),
    )
    .await;
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // Under its budget (the 150 ms floor), the step is a latency step: `a`
    // is ranked at its new latency, not taken down.
    let a = doc.entry("a").unwrap();
    assert_eq!(a.state, origin_router::OriginState::Healthy, "{doc:?}");
    assert!(a.latency_ms.is_some_and(|l| l > 90.0), "{doc:?}");
}
