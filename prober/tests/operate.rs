//! The operator commands (`drain`, `undrain`, `override`, `status`) through
//! the real `prober` binary, on the embedded store a new user starts with.

mod common;

use std::process::{Command, Output, Stdio};

use common::{prober_binary, REGION, TABLE};
use origin_router_tests::services::MotoServer;

fn prober(args: &[&str]) -> Output {
    prober_env(args, Vec::new())
}

fn prober_env(args: &[&str], env: Vec<(String, String)>) -> Output {
    Command::new(prober_binary())
        .args(args)
        .envs(env)
        .env("RUST_LOG", "warn")
        .env_remove("USER")
        .stdin(Stdio::null())
        .output()
        .expect("prober runs")
}

fn ok(args: &[&str]) -> String {
    let out = prober(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = prober(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

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
    serde_json::from_str(&ok(&["status", "-c", config, "--format", "json"])).unwrap()
}

#[test]
fn drain_override_and_status_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = new_user_config(dir.path());
    let c = c.as_str();

    ok(&[
        "drain", "-c", c, "web", "a", "--for", "30m", "--reason", "patching", "--by", "alice",
    ]);
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
    let table = ok(&["status", "-c", c]);
    assert!(
        table.contains("drained") && table.contains("by alice: patching"),
        "{table}"
    );

    // An override in one region; a second one is refused without --replace.
    let o = ["--region", "eu-west-1", "--by", "bob"];
    ok(&[
        &[
            "override", "-c", c, "web", "b", "--for", "1h", "--reason", "incident",
        ][..],
        &o,
    ]
    .concat());
    let err = fails(
        &[
            &[
                "override", "-c", c, "web", "a", "--for", "1h", "--reason", "x",
            ][..],
            &o,
        ]
        .concat(),
    );
    assert!(
        err.contains("is in force") && err.contains("--replace"),
        "{err}"
    );
    ok(&[
        &[
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
        ][..],
        &o,
    ]
    .concat());
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

    ok(&["override", "-c", c, "web", "--clear"]);
    ok(&["undrain", "-c", c, "web", "a"]);
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
        let err = fails(&[args, &by[..]].concat());
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // No USER and no --by: who set it must be known.
    let err = fails(&["drain", "-c", c, "web", "a", "--reason", "r"]);
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
                prober_env(&args, env)
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
