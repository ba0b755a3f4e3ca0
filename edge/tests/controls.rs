//! Every control the operator CLI accepts is honoured: generated drains
//! and overrides (unicode reasons with multi-byte text and emoji, names up
//! to 64 bytes, every region the geography knows and one of
//! `store.table_regions`, durations at the configured maximum in the
//! config's grammar) go through the CLI's own checks
//! ([`origin_router::control::input::controls`]); each one accepted is
//! stored, read back whole, marked by the prober's ranking step
//! ([`control::mark_drained`]) and honoured by the edge's router, on the
//! embedded store and on DynamoDB (moto). The fixed cases of the audit go
//! through the real `prober` binary.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::racer::ScriptedRacer;
use edge::decision::Source;
use edge::settings::EdgeSettings;
use origin_router::config::Config;
use origin_router::control::input::{self, Request};
use origin_router::control::{self, ControlKind, ALL_REGIONS};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::geo;
use origin_router::sample::{unix_millis_now, UnixMillis};
use origin_router::store::{ControlWrite, EmbeddedStore, RankingStore};
use origin_router_tests::services::MotoServer;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

/// A region `store.table_regions` lists that the geography does not know.
const LAB: &str = "zz-lab-1";

/// One generated operator request, before the CLI's checks.
#[derive(Debug, Clone)]
struct Case {
    kind: ControlKind,
    pool: String,
    origins: Vec<String>,
    target: usize,
    /// `None`: no `--region` (every region).
    region: Option<String>,
    /// Where the edge runs (the control's region, or any for every region).
    edge_region: String,
    max_drain: &'static str,
    duration: String,
    reason: String,
    by: String,
}

fn regions() -> Vec<String> {
    geo::REGIONS
        .iter()
        .map(|r| r.0.to_string())
        .chain([LAB.to_string(), "mars-1".into(), "eu-west1".into()])
        .collect()
}

fn name(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[a-z][a-z0-9_.-]{{0,{}}}", max - 1)).unwrap(),
        proptest::string::string_regex(&format!("[a-z0-9]{{{},{max}}}", max - 2)).unwrap(),
    ]
}

/// Reasons and names of every kind: plain, any printable unicode,
/// emoji around the byte limit, all-escaped JSON, and a few with a
/// bidirectional override or a control character.
fn text(limit: usize) -> impl Strategy<Value = String> {
    let emoji = limit / 4;
    prop_oneof![
        3 => "[a-zA-Z ,.]{1,40}",
        3 => "\\PC{1,120}",
        3 => (emoji - 2..=emoji + 2).prop_map(|n| "😀".repeat(n)),
        1 => (limit - 2..=limit + 2).prop_map(|n| "é".repeat(n / 2) + &"\"".repeat(n % 2)),
        1 => (limit - 2..=limit + 2).prop_map(|n| "\\".repeat(n)),
        1 => ("[a-z]{0,8}", prop::sample::select(vec!['\u{202E}', '\u{2066}', '\u{200F}', '\n', '\u{1b}']))
            .prop_map(|(s, c)| format!("{s}{c}x")),
    ]
}

/// `--for` around the configured maximum, written in the config's
/// grammar in several ways.
fn duration(max_drain: &'static str, kind: ControlKind) -> impl Strategy<Value = String> {
    let max = match kind {
        ControlKind::Drain => parse_max(max_drain),
        ControlKind::Override => Duration::from_secs(24 * 3600),
    };
    let secs = max.as_secs();
    prop_oneof![
        (secs - 2..=secs + 1).prop_map(|s| format!("{s}s")),
        (secs - 2..=secs + 1).prop_map(|s| { as_config_writes(Duration::from_secs(s)) }),
        prop::sample::select(vec![
            "90m".to_string(),
            "1h 30m".into(),
            "1day".into(),
            "7days".into(),
            "8days".into(),
        ]),
    ]
}

/// A configured maximum, read as the CLI reads `--for`.
fn parse_max(text: &str) -> Duration {
    control::parse_duration(text, ControlKind::Drain, control::MAX_DRAIN).unwrap()
}

/// How the config would write `d` (`7days 23h 59m 59s`).
fn as_config_writes(d: Duration) -> String {
    // The config's grammar reads what its formatter writes; the CLI
    // takes exactly that grammar.
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, rest) = (rest / 3600, rest % 3600);
    let (m, s) = (rest / 60, rest % 60);
    let mut parts = Vec::new();
    for (n, unit) in [(days, "days"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
    }
    parts.join(" ")
}

fn case() -> impl Strategy<Value = Case> {
    let all = regions();
    (
        prop_oneof![Just(ControlKind::Drain), Just(ControlKind::Override)],
        name(64),
        prop::collection::btree_set(name(64), 2..4),
        any::<prop::sample::Index>(),
        prop::option::weighted(0.85, prop::sample::select(all)),
        prop::sample::select(
            geo::REGIONS
                .iter()
                .map(|r| r.0.to_string())
                .collect::<Vec<_>>(),
        ),
        prop::sample::select(vec!["2h", "7days", "30days"]),
        text(control::MAX_REASON_BYTES),
        text(control::MAX_BY_BYTES),
    )
        .prop_flat_map(
            |(kind, pool, origins, target, region, anywhere, max_drain, reason, by)| {
                let origins: Vec<String> = origins.into_iter().collect();
                let target = target.index(origins.len());
                let edge_region = region.clone().unwrap_or(anywhere);
                duration(max_drain, kind).prop_map(move |duration| Case {
                    kind,
                    pool: pool.clone(),
                    origins: origins.clone(),
                    target,
                    region: region.clone(),
                    edge_region: edge_region.clone(),
                    max_drain,
                    duration,
                    reason: reason.clone(),
                    by: by.clone(),
                })
            },
        )
}

fn config_of(case: &Case) -> Config {
    let origins: Vec<String> = case
        .origins
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{{ id = \"{id}\", host = \"127.0.0.{}\" }}", i + 1))
        .collect();
    Config::from_toml(
        &format!(
            r#"
            [pools."{}"]
            origins = [{}]
            [store]
            table_regions = ["eu-west-1", "{LAB}"]
            [operations]
            max_drain = "{}"
            "#,
            case.pool,
            origins.join(", "),
            case.max_drain
        ),
        "generated",
    )
    .expect("generated configs are valid")
}

/// The ranking the edge reads: the control's origin first and healthy,
/// so a drain that is not honoured shows.
fn ranking(case: &Case, now: UnixMillis) -> RankingDocument {
    let target = &case.origins[case.target];
    let mut ids: Vec<&String> = vec![target];
    ids.extend(case.origins.iter().filter(|o| *o != target));
    let origins = ids
        .iter()
        .enumerate()
        .map(|(i, id)| RankedOrigin::measured(id, OriginState::Healthy, 10.0 + i as f64, 1))
        .collect();
    RankingDocument::new(&case.pool, &case.edge_region, 1, now, origins)
}

/// What the CLI must refuse whatever else holds.
fn must_refuse(case: &Case) -> Option<&'static str> {
    let bad_text = |t: &str, max: usize| t.len() > max || t.chars().any(control::is_forbidden_char);
    if bad_text(&case.reason, control::MAX_REASON_BYTES) {
        return Some("reason");
    }
    if bad_text(&case.by, control::MAX_BY_BYTES) {
        return Some("by");
    }
    match &case.region {
        Some(r) if !geo::is_known(r) && r != LAB => Some("region"),
        _ => None,
    }
}

/// Runs `case` through the CLI's checks and, if accepted, through `store`,
/// the prober's marking and the edge's router. Returns whether accepted.
async fn check(case: &Case, store: Arc<dyn RankingStore>) -> Result<bool, TestCaseError> {
    let config = config_of(case);
    let now = unix_millis_now();
    let named: Vec<String> = case.region.iter().cloned().collect();
    let request = Request {
        kind: case.kind,
        pool: &case.pool,
        origin: &case.origins[case.target],
        regions: &named,
        duration: &case.duration,
        reason: &case.reason,
        by: &case.by,
    };
    let controls = match input::controls(&config, &request, now) {
        Ok(controls) => controls,
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.is_empty());
            return Ok(false);
        }
    };
    if let Some(field) = must_refuse(case) {
        return Err(TestCaseError::fail(format!("accepted a bad {field}")));
    }
    prop_assert_eq!(controls.len(), 1);
    let c = &controls[0];
    prop_assert!(c.to_json().len() <= control::MAX_CONTROL_BYTES);
    prop_assert_eq!(
        c.region.as_str(),
        case.region.as_deref().unwrap_or(ALL_REGIONS)
    );
    prop_assert_eq!(
        store.put_control(c, true).await.unwrap(),
        ControlWrite::Written
    );
    let doc = ranking(case, now);
    store.write(&doc).await.unwrap();

    // Read back whole, with nothing skipped.
    let read = store.read_pool(&case.pool).await.unwrap();
    prop_assert!(
        read.controls.skipped.is_empty(),
        "{:?}",
        read.controls.skipped
    );
    prop_assert_eq!(&read.controls.controls, &controls);

    // The prober's ranking step: a drained origin is marked and ranked last.
    let (active, ignored) = control::active(
        &read.controls.controls,
        &config,
        &case.pool,
        &case.edge_region,
        now,
    );
    prop_assert!(ignored.is_empty(), "{:?}", ignored);
    let target = case.origins[case.target].as_str();
    match case.kind {
        ControlKind::Drain => {
            let mut marked = doc.clone();
            let drained = control::drained(&active);
            prop_assert_eq!(&drained, &[target]);
            let done = control::mark_drained(&mut marked, &drained, config.operations.fail_open);
            prop_assert_eq!(done, [target.to_string()]);
            let last = marked.origins.last().unwrap();
            prop_assert!(last.id == target && last.state == OriginState::Drained);
        }
        ControlKind::Override => {
            prop_assert_eq!(control::override_of(&active), Some(c));
        }
    }

    // The edge, in the control's region (any region for every region).
    let router = EdgeSettings::new(&config, case.edge_region.clone())
        .router(store.clone(), ScriptedRacer::first());
    let d = router.decide(&case.pool, now + 1_000).await;
    match case.kind {
        ControlKind::Drain => {
            prop_assert_ne!(&d.origin, target, "{:?}", d);
            prop_assert_eq!(d.source, Source::Table, "{:?}", d);
        }
        ControlKind::Override => {
            prop_assert_eq!(&d.origin, target, "{:?}", d);
            prop_assert_eq!(d.source, Source::Override, "{:?}", d);
        }
    }
    // Leave the store as found for the next case.
    prop_assert!(store.delete_control(&case.pool, &c.key()).await.unwrap());
    store.delete(&case.pool, &case.edge_region).await.unwrap();
    Ok(true)
}

/// Runs 64 generated cases against the store `open` gives; some 40% are
/// accepted, and at least 12 must be, so the property is not vacuous.
fn run_cases(rt: &tokio::runtime::Runtime, open: impl Fn() -> Arc<dyn RankingStore>) {
    let accepted = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&case(), |case| {
            if rt.block_on(check(&case, open()))? {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.into_inner();
    eprintln!("{accepted} of 64 generated controls accepted and honoured");
    assert!(accepted >= 12, "only {accepted} of 64 cases accepted");
}

#[test]
fn every_control_the_cli_accepts_is_honoured_on_the_embedded_store() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn RankingStore> = Arc::new(EmbeddedStore::new(dir.path()));
    run_cases(&rt, || store.clone());
}

#[test]
fn every_control_the_cli_accepts_is_honoured_on_dynamodb() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_moto, store) = rt.block_on(async {
        let moto = MotoServer::start().await.unwrap();
        let store: Arc<dyn RankingStore> = Arc::new(common::moto_table(&moto, "eu-west-1").await);
        (moto, store)
    });
    run_cases(&rt, || store.clone());
}

/// The `prober` binary built next to this crate's `edge` binary (one
/// target directory for the workspace).
fn prober_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_edge")).with_file_name("prober");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p prober` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// `prober ARGS` with no `USER` (who sets a control is always `--by`):
/// (exit code, stdout, stderr).
fn prober(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(prober_binary())
        .args(args)
        .env_remove("USER")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("prober runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The audit's cases through the real `prober` binary on the embedded
/// store it shares with the edge: the 512 emoji are refused (exit 1,
/// naming the field and its bytes) and nothing is stored, so the edge
/// goes on as before; a control at the exact byte limits, a `7days`
/// drain in one region and a `1h 30m` override in a region of
/// `store.table_regions`, are taken and honoured by the edge there and
/// only there.
#[tokio::test]
async fn the_audits_controls_through_the_prober_binary_are_refused_or_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let config_text = format!(
        r#"
        [pools.web]
        origins = [{{ id = "a", host = "127.0.0.1" }}, {{ id = "b", host = "127.0.0.2" }}]
        [store]
        embedded_path = "{}"
        table_regions = ["eu-west-1", "us-east-1", "{LAB}"]
        "#,
        store_path.display()
    );
    let config_path = dir.path().join("c.toml");
    std::fs::write(&config_path, &config_text).unwrap();
    let config = Config::from_toml(&config_text, "test").unwrap();
    let c = config_path.to_str().unwrap();
    let store: Arc<dyn RankingStore> = Arc::new(EmbeddedStore::new(&store_path));
    let now = unix_millis_now();
    for region in ["eu-west-1", "us-east-1", LAB] {
        let origins = vec![
            RankedOrigin::measured("a", OriginState::Healthy, 10.0, 1),
            RankedOrigin::measured("b", OriginState::Healthy, 20.0, 1),
        ];
        store
            .write(&RankingDocument::new("web", region, 1, now, origins))
            .await
            .unwrap();
    }
    let decide = |region: &str| {
        let router =
            EdgeSettings::new(&config, region).router(store.clone(), ScriptedRacer::first());
        async move { router.decide("web", unix_millis_now()).await }
    };

    let emoji = "😀".repeat(512);
    let (code, out, err) = prober(&[
        "drain", "-c", c, "web", "a", "--for", "1h", "--reason", &emoji, "--by", &emoji,
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        err.trim_end(),
        "error: --reason is 2,048 bytes (512 characters); a control's reason may take at most \
         1,024 bytes of UTF-8"
    );
    assert!(out.is_empty(), "{out}");
    assert!(store.controls("web").await.unwrap().controls.is_empty());
    assert_eq!(decide("eu-west-1").await.origin, "a");

    // Exactly at the byte limits, for 7days (the default maximum).
    let reason = "😀".repeat(control::MAX_REASON_BYTES / 4);
    let by = "😀".repeat(control::MAX_BY_BYTES / 4);
    let (code, out, err) = prober(&[
        "drain",
        "-c",
        c,
        "web",
        "a",
        "--for",
        "7days",
        "--region",
        "eu-west-1",
        "--reason",
        &reason,
        "--by",
        &by,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("drained a of pool web in eu-west-1 until"),
        "{out}"
    );
    let stored = store.controls("web").await.unwrap();
    assert!(stored.skipped.is_empty(), "{:?}", stored.skipped);
    assert_eq!(
        stored.controls[0].until - stored.controls[0].set_at,
        7 * 86_400_000
    );
    let d = decide("eu-west-1").await;
    assert_eq!((d.origin.as_str(), d.source), ("b", Source::Table), "{d:?}");
    assert_eq!(decide("us-east-1").await.origin, "a");

    let (code, _, err) = prober(&[
        "override",
        "-c",
        c,
        "web",
        "b",
        "--for",
        "1h 30m",
        "--region",
        LAB,
        "--reason",
        "failover drill",
        "--by",
        "ops",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let d = decide(LAB).await;
    assert_eq!(
        (d.origin.as_str(), d.source),
        ("b", Source::Override),
        "{d:?}"
    );
    assert_eq!(decide("us-east-1").await.origin, "a");

    // A region typo and a right-to-left override: refused, nothing more stored.
    let (code, _, err) = prober(&[
        "drain", "-c", c, "web", "b", "--region", "eu-west1", "--reason", "r", "--by", "ops",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim_end(),
        "error: --region: unknown region `eu-west1`; did you mean `eu-west-1`?"
    );
    let (code, _, err) = prober(&[
        "drain",
        "-c",
        c,
        "web",
        "b",
        "--reason",
        "fix \u{202E}gnp.exe",
        "--by",
        "ops",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("error: --reason holds U+202E (a bidirectional override) at character 5"),
        "{err}"
    );
    assert_eq!(store.controls("web").await.unwrap().controls.len(), 2);
}
