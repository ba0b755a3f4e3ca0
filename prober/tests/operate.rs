//! The operator commands (`drain`, `undrain`, `override`, `status`) through
//! the real `prober` binary, on the embedded store a new user starts with.

mod common;

use std::process::Output;

use common::{prober, run_fails, run_ok, REGION, TABLE};
use origin_router_tests::services::MotoServer;

fn new_user_config(dir: &std::path::Path) -> String {
    let text = format!(
        r#"
        [pools.web]
        origins = [{{ id = "a", host = "127.0.0.1" }}, {{ id = "b", host = "127.0.0.2" }}]
        [store]
        embedded_path = "{}"
        "#,
        dir.join("store").display()
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn status_json(config: &str) -> serde_json::Value {
    serde_json::from_str(&run_ok(
        prober(&[]).args(["status", "-c", config, "--format", "json"]),
    ))
    .unwrap()
}

#[test]
fn drain_override_and_status_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let c = c.as_str();

    run_ok(prober(&[]).args([
        "drain", "-c", c, "web", "a", "--for", "30m", "--reason", "patching", "--by", "alice",
    ]));
    let status = status_json(c);
    let controls = status["web"]["controls"].as_array().unwrap();
    assert_eq!(controls.len(), 1);
    assert_eq!(controls[0]["kind"], "drain");
    assert_eq!(controls[0]["origin"], "a");
    assert_eq!(controls[0]["region"], "all-regions");
    assert_eq!(controls[0]["by"], "alice");
    assert_eq!(controls[0]["reason"], "patching");
    let lasts = controls[0]["until"].as_u64().unwrap() - controls[0]["set_at"].as_u64().unwrap();
    assert_eq!(lasts, 30 * 60 * 1000);
    let table = run_ok(prober(&[]).args(["status", "-c", c]));
    assert!(
        table.contains("drained") && table.contains("by alice: patching"),
        "{table}"
    );

    // An override in one region; a second one is refused without --replace.
    let o = ["--region", "eu-west-1", "--by", "bob"];
    run_ok(
        prober(&[])
            .args([
                "override", "-c", c, "web", "b", "--for", "1h", "--reason", "incident",
            ])
            .args(o),
    );
    let err = run_fails(
        prober(&[])
            .args([
                "override", "-c", c, "web", "a", "--for", "1h", "--reason", "x",
            ])
            .args(o),
    );
    assert!(
        err.contains("is in force") && err.contains("--replace"),
        "{err}"
    );
    run_ok(
        prober(&[])
            .args([
                "override",
                "-c",
                c,
                "web",
                "a",
                "--for",
                "1h",
                "--reason",
                "x",
                "--replace",
            ])
            .args(o),
    );
    let status = status_json(c);
    let over: Vec<_> = status["web"]["controls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "override")
        .collect();
    assert_eq!(over.len(), 1);
    assert_eq!(over[0]["origin"], "a");
    assert_eq!(over[0]["region"], "eu-west-1");

    run_ok(prober(&[]).args(["override", "-c", c, "web", "--clear"]));
    run_ok(prober(&[]).args(["undrain", "-c", c, "web", "a"]));
    assert!(status_json(c)["web"]["controls"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn bad_operator_input_is_an_error_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let c = c.as_str();
    let by = ["--by", "alice", "--reason", "r"];
    let cases: [(&[&str], &str); 8] = [
        (&["drain", "-c", c, "nope", "a"], "unknown pool `nope`"),
        (&["drain", "-c", c, "web", "zz"], "unknown origin `zz`"),
        (
            &["drain", "-c", c, "web", "a", "--for", "0s"],
            "`0s` is zero",
        ),
        (
            &["drain", "-c", c, "web", "a", "--for", "-5m"],
            "`-5m` is negative",
        ),
        (
            &["drain", "-c", c, "web", "a", "--for", "8d"],
            "`8d` is longer than",
        ),
        (
            &["drain", "-c", c, "web", "a", "--for", "soon"],
            "`soon` is not a duration",
        ),
        (
            &["override", "-c", c, "web", "a", "--for", "25h"],
            "`25h` is longer than",
        ),
        (
            &["drain", "-c", c, "web", "a", "--region", "../x"],
            "--region `../x`",
        ),
    ];
    for (args, expected) in cases {
        let err = run_fails(prober(&[]).args(args).args(by));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // No USER and no --by: who set it must be known.
    let err = run_fails(prober(&[]).args(["drain", "-c", c, "web", "a", "--reason", "r"]));
    assert!(err.contains("--by"), "{err}");
    // Nothing was stored by any of them.
    assert!(status_json(c)["web"]["controls"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The same on DynamoDB (moto): controls live in the pool's partition next
/// to its rankings, and a ranking reader never mistakes them for rankings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_override_on_dynamodb() {
    let moto = MotoServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [pools.web]
            origins = [{{ id = "a", host = "127.0.0.1" }}, {{ id = "b", host = "127.0.0.2" }}]
            [prober]
            region = "{REGION}"
            [store]
            dynamodb_table = "{TABLE}"
            "#
        ),
    )
    .unwrap();
    let c = path.display().to_string();
    let env: Vec<(String, String)> = moto
        .aws_env(REGION)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let run = move |args: Vec<String>| {
        let env = env.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                prober(&env).args(args).output().expect("prober runs")
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&["init-table", "-c", &c])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(args(&[
        "drain", "-c", &c, "web", "a", "--region", REGION, "--for", "2h", "--reason", "patch",
        "--by", "ops",
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for origin in ["b", "a"] {
        let out = run(args(&[
            "override", "-c", &c, "web", origin, "--for", "1h", "--reason", "inc", "--by", "ops",
        ]))
        .await;
        assert_eq!(
            out.status.success(),
            origin == "b",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(args(&["status", "-c", &c, "--format", "json"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let controls = status["web"]["controls"].as_array().unwrap();
    let kinds: Vec<(&str, &str, &str)> = controls
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["origin"].as_str().unwrap(),
                c["region"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("drain", "a", REGION), ("override", "b", "all-regions")]
    );
    // The ranking reader skips the control items silently.
    let out = run(args(&["rankings", "-c", &c, "--pool", "web"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("skipped"),
        "{stderr}"
    );

    let out = run(args(&["undrain", "-c", &c, "web", "a"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1"));
    let out = run(args(&["override", "-c", &c, "web", "--clear"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1"));
    let out = run(args(&["status", "-c", &c, "--format", "json"])).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["web"]["controls"].as_array().unwrap().is_empty());
}

/// `[operations]` sets the limits: a shorter maximum is enforced and named.
#[test]
fn the_configured_maximum_durations_hold() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let text = std::fs::read_to_string(&c).unwrap()
        + "\n[operations]\nmax_drain = \"2h\"\nmax_override = \"30m\"\n";
    std::fs::write(&c, text).unwrap();
    let by = ["--by", "alice", "--reason", "r"];
    let err = run_fails(
        prober(&[])
            .args(["drain", "-c", &c, "web", "a", "--for", "3h"])
            .args(by),
    );
    assert!(err.contains("operations.max_drain"), "{err}");
    let err = run_fails(
        prober(&[])
            .args(["override", "-c", &c, "web", "a", "--for", "31m"])
            .args(by),
    );
    assert!(err.contains("operations.max_override"), "{err}");
    run_ok(
        prober(&[])
            .args(["drain", "-c", &c, "web", "a", "--for", "2h"])
            .args(by),
    );
    // A maximum beyond the hard limit is a config error naming the field.
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("\"2h\"", "\"400d\"");
    std::fs::write(&c, text).unwrap();
    let err = run_fails(prober(&[]).args(["status", "-c", &c]));
    assert!(err.contains("operations.max_drain"), "{err}");
}

/// Two operators setting overrides of the same pool and region at the same
/// moment, neither with `--replace`: exactly one wins, the other is told
/// who holds it (the store decides atomically).
#[test]
fn of_two_simultaneous_overrides_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    for round in 0..3 {
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|origin| {
                let c = c.clone();
                std::thread::spawn(move || {
                    prober(&[])
                        .args([
                            "override",
                            "-c",
                            &c,
                            "web",
                            origin,
                            "--region",
                            "eu-west-1",
                            "--for",
                            "10m",
                            "--reason",
                            "incident",
                            "--by",
                            origin,
                        ])
                        .output()
                        .expect("prober runs")
                })
            })
            .collect();
        let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(won, 1, "round {round}: {outs:?}");
        let lost = outs.iter().find(|o| !o.status.success()).unwrap();
        let err = String::from_utf8_lossy(&lost.stderr);
        assert!(
            err.contains("is in force") || err.contains("same moment"),
            "{err}"
        );
        run_ok(prober(&[]).args(["override", "-c", &c, "web", "--clear"]));
    }
}

/// The DynamoDB store on moto: controls come back with the rankings from
/// the one Query of the pool's partition, and a write without `replace`
/// is refused by the table itself (a condition expression) while a
/// control under the same key is in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_reads_controls_with_rankings_and_refuses_a_second_override_atomically() {
    use origin_router::control::{Control, ControlKind};
    use origin_router::store::{ControlWrite, RankingStore};
    let moto = MotoServer::start().await.unwrap();
    let store = common::dynamo(&moto).await;
    let now = origin_router::sample::unix_millis_now();
    let over = |origin: &str, set_at: u64, until: u64| Control {
        kind: ControlKind::Override,
        pool: "web".into(),
        region: REGION.into(),
        origin: origin.into(),
        set_at,
        until,
        by: "ops".into(),
        reason: "incident".into(),
    };
    let first = over("a", now, now + 60_000);
    assert_eq!(
        store.put_control(&first, false).await.unwrap(),
        ControlWrite::Written
    );
    let second = over("b", now + 1_000, now + 60_000);
    assert_eq!(
        store.put_control(&second, false).await.unwrap(),
        ControlWrite::InForce
    );
    let doc = origin_router::RankingDocument::new(
        "web",
        REGION,
        1,
        now,
        vec![origin_router::RankedOrigin::measured(
            "a",
            origin_router::OriginState::Healthy,
            5.0,
            1,
        )],
    );
    store.write(&doc).await.unwrap();
    let read = store.read_pool("web").await.unwrap();
    assert_eq!(read.rankings.len(), 1);
    assert!(read.skipped.is_empty(), "{:?}", read.skipped);
    assert_eq!(read.controls.controls, std::slice::from_ref(&first));
    // After the first one's end, or with replace, the second is written.
    let later = over("b", now + 60_000, now + 120_000);
    assert_eq!(
        store.put_control(&later, false).await.unwrap(),
        ControlWrite::Written
    );
    assert_eq!(
        store.put_control(&second, true).await.unwrap(),
        ControlWrite::Written
    );
    assert_eq!(store.controls("web").await.unwrap().controls, [second]);
    // A hostile item in the partition is skipped with its reason, and the
    // ranking is still read.
    common::dynamo_client(&moto)
        .put_item()
        .table_name(TABLE)
        .item(
            "pool",
            aws_sdk_dynamodb::types::AttributeValue::S("web".into()),
        )
        .item(
            "region",
            aws_sdk_dynamodb::types::AttributeValue::S("drain#x#../../etc".into()),
        )
        .item(
            "control",
            aws_sdk_dynamodb::types::AttributeValue::S("{\"kind\":\"drain\"}".into()),
        )
        .send()
        .await
        .unwrap();
    let read = store.read_pool("web").await.unwrap();
    assert_eq!(read.rankings.len(), 1);
    assert_eq!(read.controls.controls.len(), 1);
    assert_eq!(
        read.controls.skipped.len(),
        1,
        "{:?}",
        read.controls.skipped
    );
}

/// The audit's controls through the binary: what a reader would refuse
/// or what applies nowhere is refused with the field and why, naming the
/// region meant for a typo; `--for` reads as the config does. Nothing
/// refused is stored; what is taken is stored as asked.
#[test]
fn every_control_the_cli_takes_is_one_readers_honour() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let c = c.as_str();
    let emoji = "😀".repeat(512);
    let rlo = "fix \u{202E}gnp.exe";
    let drain = |extra: &[&str]| {
        let mut cmd = prober(&[]);
        cmd.args(["drain", "-c", c, "web", "a"]).args(extra);
        cmd
    };
    let refusals: [(&[&str], &str); 7] = [
        (
            &["--for", "1h", "--reason", &emoji, "--by", &emoji],
            "error: --reason is 2,048 bytes (512 characters); a control's reason may take at \
             most 1,024 bytes of UTF-8",
        ),
        (
            &["--reason", "R", "--by", &emoji],
            "error: --by is 2,048 bytes (512 characters); a control's by may take at most 512 \
             bytes of UTF-8",
        ),
        (
            &["--region", "mars-1", "--reason", "R", "--by", "B"],
            "error: --region: unknown region `mars-1`: not an AWS region Origin Router knows",
        ),
        (
            &["--region", "eu-west1", "--reason", "R", "--by", "B"],
            "error: --region: unknown region `eu-west1`; did you mean `eu-west-1`?",
        ),
        (
            &["--reason", rlo, "--by", "B"],
            "error: --reason holds U+202E (a bidirectional override) at character 5",
        ),
        (
            &["--reason", "R", "--by", "ops\u{2066}"],
            "error: --by holds U+2066 (a bidirectional isolate) at character 4",
        ),
        (
            &["--for", "8days", "--reason", "R", "--by", "B"],
            "error: --for: duration `8days` is longer than the 7days maximum for a drain \
             (operations.max_drain)",
        ),
    ];
    for (args, expected) in refusals {
        let out = drain(args).output().expect("prober runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    assert!(status_json(c)["web"]["controls"]
        .as_array()
        .unwrap()
        .is_empty());
    // At the edge of every limit, in the config's grammar: taken, and
    // read back whole by the store's reader.
    let reason = "😀".repeat(256);
    let by = "é".repeat(256);
    for (duration, ms) in [("7days", 7 * 86_400_000u64), ("1h 30m", 5_400_000)] {
        let out = run_ok(&mut drain(&[
            "--for",
            duration,
            "--region",
            "eu-west-1",
            "--reason",
            &reason,
            "--by",
            &by,
        ]));
        assert!(
            out.starts_with("drained a of pool web in eu-west-1 until"),
            "{out}"
        );
        let status = status_json(c);
        let stored = &status["web"]["controls"][0];
        assert_eq!(stored["reason"], reason.as_str());
        assert_eq!(stored["by"], by.as_str());
        let lasts = stored["until"].as_u64().unwrap() - stored["set_at"].as_u64().unwrap();
        assert_eq!(lasts, ms, "{duration}");
    }
    // A typo when clearing is refused too (nothing would be removed).
    let err = run_fails(prober(&[]).args(["undrain", "-c", c, "web", "a", "--region", "eu-west1"]));
    assert!(err.contains("did you mean `eu-west-1`?"), "{err}");
    run_ok(prober(&[]).args(["undrain", "-c", c, "web", "a", "--region", "eu-west-1"]));
    // 8days under a wider maximum, as the config would read it.
    let text = std::fs::read_to_string(c).unwrap() + "\n[operations]\nmax_drain = \"30days\"\n";
    std::fs::write(c, text).unwrap();
    run_ok(&mut drain(&[
        "--for", "8days", "--reason", "R", "--by", "B",
    ]));
    let status = status_json(c);
    let stored = &status["web"]["controls"][0];
    let lasts = stored["until"].as_u64().unwrap() - stored["set_at"].as_u64().unwrap();
    assert_eq!(lasts, 8 * 86_400_000);
}

/// A control stored under a region nothing knows (as the CLI wrote them
/// before `--region` was checked) is named by `status` as applying
/// nowhere, and `undrain --region` of that name still removes it.
#[tokio::test]
async fn status_names_a_stored_control_of_an_unknown_region() {
    use origin_router::control::{Control, ControlKind};
    use origin_router::store::{EmbeddedStore, RankingStore};
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let now = origin_router::sample::unix_millis_now();
    let store = EmbeddedStore::new(dir.path().join("store"));
    let mars = Control {
        kind: ControlKind::Drain,
        pool: "web".into(),
        region: "mars-1".into(),
        origin: "a".into(),
        set_at: now,
        until: now + 3_600_000,
        by: "ops".into(),
        reason: "old".into(),
    };
    store.put_control(&mars, true).await.unwrap();
    let c2 = c.clone();
    let out = tokio::task::spawn_blocking(move || {
        prober(&[]).args(["status", "-c", &c2]).output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains("names region `mars-1`, which Origin Router does not know"),
        "{err}"
    );
    let out = tokio::task::spawn_blocking(move || {
        run_ok(prober(&[]).args(["undrain", "-c", &c, "web", "a", "--region", "mars-1"]))
    })
    .await
    .unwrap();
    assert!(out.contains("removed 1"), "{out}");
}

/// `prober status` says how far this host's clock is from the region's
/// (here the embedded store's: the kernel's clock) and the limit, in the
/// table and in JSON (under `#clock`, a key no pool can have).
#[test]
fn status_shows_this_hosts_clock_offset() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let table = run_ok(prober(&[]).args(["status", "-c", &c]));
    let line = table
        .lines()
        .find(|l| l.starts_with("clock: this host is "))
        .unwrap_or_else(|| panic!("no clock line: {table}"));
    assert!(line.contains("off the store's clock"), "{line}");
    assert!(line.contains("prober.max_clock_skew is 2.000 s"), "{line}");
    assert!(!line.contains("would not lead"), "{line}");
    let json = status_json(&c);
    let clock = &json["#clock"];
    assert_eq!(clock["max_clock_skew_ms"], 2000);
    assert_eq!(clock["off"], false);
    let offset = clock["offset_ms"].as_i64().unwrap();
    let uncertainty = clock["uncertainty_ms"].as_i64().unwrap();
    assert!(offset.abs() <= uncertainty + 100, "{clock}");
}
