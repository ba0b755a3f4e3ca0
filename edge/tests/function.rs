//! The generated CloudFront Function under Node, held to the decision
//! vectors and to the Rust decision.
//!
//! For each vector, the KeyValueStore holds what the Lambda edge decided
//! on (its cache's rankings and controls, or the table's when it read the
//! table), encoded as the probers write it (`compact::encode`). The
//! function must then:
//! - give the vector's expected origin, source (a ranking's source,
//!   `cache`, `stale` or `table`, is `table` for the function, which reads
//!   the store on every request), ranking region, band, failover and
//!   timeouts, for every vector a function can meet;
//! - for the Lambda edge's own vectors (a live race or watchdog, ejections,
//!   a recent race winner, a failed read), do what the Rust decision does
//!   with every read fresh and no race: the set's default (`default`).
//!
//! Then 1,200 generated cases (random pools, rankings, controls, regions
//! and keys) compare the function with the Rust decision over the same
//! decoded values. Node must be installed (the test command has it).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edge::decision::{self, PoolView, Read, Verdict};
use edge::settings::EdgeSettings;
use origin_router::compact;
use origin_router::config::{Config, PoolConfig};
use origin_router::control::{Control, ControlKind};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use serde_json::{json, Value};

use common::node::{named, run_node, rust_view, workdir, write_function};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

/// The rankings and controls of a vector's `cache` or `table`.
fn stored(v: &Value, pool: &str) -> (Vec<RankingDocument>, Vec<Control>) {
    let docs = v["rankings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let origins = r["origins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let state: OriginState = serde_json::from_value(e["state"].clone()).unwrap();
                    let mut o = RankedOrigin::measured(e["id"].as_str().unwrap(), state, 1.0, 1);
                    o.score = e["score"].as_f64();
                    o.latency_ms = o.score;
                    o.connect_budget_ms = e["connect_budget_ms"].as_f64();
                    o
                })
                .collect();
            RankingDocument::new(
                pool,
                r["region"].as_str().unwrap(),
                1,
                r["generated_at"].as_u64().unwrap(),
                origins,
            )
        })
        .collect();
    let controls = v["controls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Control {
            kind: serde_json::from_value(c["kind"].clone()).unwrap(),
            pool: c["pool"].as_str().unwrap_or(pool).to_string(),
            region: c["region"].as_str().unwrap().to_string(),
            origin: c["origin"].as_str().unwrap().to_string(),
            set_at: c["set_at"].as_u64().unwrap(),
            until: c["until"].as_u64().unwrap(),
            by: "vectors".into(),
            reason: "contract".into(),
        })
        .collect();
    (docs, controls)
}

/// The KeyValueStore for `docs` and `controls` of `pool`, as the probers
/// write it, and the same rankings and controls read back as the function
/// reads them.
fn store(
    pool_name: &str,
    pool: &PoolConfig,
    docs: &[RankingDocument],
    controls: &[Control],
    now: u64,
    region: &str,
) -> (
    serde_json::Map<String, Value>,
    Vec<RankingDocument>,
    Vec<Control>,
) {
    let mut kvs = serde_json::Map::new();
    let mut back_docs = Vec::new();
    let mut back_controls = Vec::new();
    let pool_controls: Vec<Control> = controls
        .iter()
        .filter(|c| c.pool == pool_name)
        .cloned()
        .collect();
    // Controls travel with the rankings. Controls and no ranking at all: a
    // value naming no origin (passed over by the choice) carries them, as
    // a leader whose ranking names none of the pool would write it.
    let carrier;
    let docs = if docs.is_empty() && !pool_controls.is_empty() {
        carrier = [RankingDocument::new(pool_name, region, 1, now, Vec::new())];
        &carrier[..]
    } else {
        docs
    };
    for doc in docs {
        let encoded = compact::encode(pool, doc, &pool_controls, now).unwrap();
        let (d, c) = compact::decode(pool_name, pool, &doc.region, &encoded.value).unwrap();
        kvs.insert(compact::key(pool_name, &doc.region), json!(encoded.value));
        back_docs.push(d);
        back_controls = c;
    }
    (kvs, back_docs, back_controls)
}

/// A CloudFront Functions viewer-request event whose steering key is `key`
/// under the pool's key kind.
fn event(case: &Value, key_kind: &origin_router::config::SteeringKey) -> Value {
    use origin_router::config::SteeringKey;
    let req = &case["request"];
    let key = req["key"].as_str().unwrap_or("");
    let mut headers = serde_json::Map::new();
    if let Some(h) = req["host"].as_str() {
        headers.insert("host".into(), json!({"value": h}));
    }
    let mut cookies = serde_json::Map::new();
    let mut uri = key.to_string();
    match key_kind {
        SteeringKey::Header(n) => {
            headers.insert(n.to_ascii_lowercase(), json!({"value": key}));
        }
        SteeringKey::Cookie(n) => {
            cookies.insert(n.clone(), json!({"value": key}));
        }
        _ => {}
    }
    if !matches!(key_kind, SteeringKey::Uri) {
        uri = "/".into();
    }
    json!({
        "version": "1.0",
        "context": {"distributionId": req["distribution_id"], "eventType": "viewer-request"},
        "viewer": {"ip": key},
        "request": {"method": "GET", "uri": uri, "querystring": {}, "headers": headers, "cookies": cookies},
    })
}

/// Whether a vector is the Lambda edge's alone.
fn lambda_only(case: &Value) -> bool {
    let source = case["expect"]["source"].as_str().unwrap_or("");
    matches!(source, "race" | "watchdog")
        || case["ejected"].as_array().is_some_and(|e| !e.is_empty())
        || case["race_winner"].is_string()
        || case["read_failed"].as_bool().unwrap_or(false)
}

#[test]
fn the_function_passes_every_decision_vector_under_node() {
    let dir = workdir();
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(VECTORS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in &files {
        let suite: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let mut config =
            Config::from_toml(suite["config"].as_str().unwrap(), "vector.toml").unwrap();
        // The function reads the regions the vectors' rankings come from.
        let mut regions: Vec<String> = Vec::new();
        for case in suite["cases"].as_array().unwrap() {
            for part in ["cache", "table"] {
                for r in case[part]["rankings"].as_array().into_iter().flatten() {
                    let r = r["region"].as_str().unwrap().to_string();
                    if !regions.contains(&r) {
                        regions.push(r);
                    }
                }
            }
        }
        if regions.is_empty() {
            regions.push("us-east-1".into());
        }
        config.store.kvs_regions = regions;
        let function = write_function(dir.path(), &name, &config);
        for case in suite["cases"].as_array().unwrap() {
            let region = case["region"].as_str().unwrap();
            let settings = EdgeSettings::new(&config, region.to_string());
            let pool_name = edge::routing::pool_for(
                &settings.routing,
                case["request"]["host"].as_str(),
                case["request"]["distribution_id"].as_str(),
            );
            let pool = pool_name.and_then(|p| config.pools.get(p));
            // What the Lambda edge decided on: its cache, unless it read
            // the table (nothing usable cached, a read allowed).
            let now = case["now"].as_u64().unwrap();
            let key = case["request"]["key"].as_str().unwrap_or("");
            let from_cache = pool_name
                .map(|p| stored(&case["cache"], p))
                .unwrap_or_default();
            let from_table = pool_name
                .map(|p| stored(&case["table"], p))
                .unwrap_or_default();
            let read_table = case.get("table").is_some() && {
                let age = case["cache"]["age_ms"].as_u64();
                let view = PoolView {
                    rankings: &from_cache.0,
                    read: age.map_or(Read::Never, |a| Read::Cached {
                        age: Duration::from_millis(a),
                    }),
                    read_failed: case["read_failed"].as_bool().unwrap_or(false),
                    controls: &from_cache.1,
                    ejected: &[],
                    race_winner: None,
                };
                pool_name.is_some_and(|p| {
                    matches!(
                        decision::decide(p, pool, &view, &settings.decision, key, now).verdict,
                        Verdict::Unranked {
                            read: decision::ReadNext::Foreground,
                            ..
                        }
                    )
                })
            };
            let (docs, controls) = if read_table { from_table } else { from_cache };
            let (kvs, back_docs, back_controls) = match (pool_name, pool) {
                (Some(pn), Some(p)) => {
                    store(pn, p, &docs, &controls, now, &config.store.kvs_regions[0])
                }
                _ => Default::default(),
            };
            let rust = rust_view(
                &settings,
                pool_name.filter(|_| pool.is_some()),
                &back_docs,
                &back_controls,
                key,
                now,
            );
            let kind = pool
                .map(|p| p.steering.key.clone())
                .unwrap_or(origin_router::config::SteeringKey::Uri);
            cases.push(json!({
                "fn": function, "kvs": kvs, "region": region, "now": now, "event": event(case, &kind),
            }));
            wants.push((
                format!("{name} / {}", case["name"]),
                case.clone(),
                rust,
                pool.cloned(),
            ));
        }
    }
    let results = run_node(dir.path(), &cases);
    let mut failures = Vec::new();
    let (mut contract, mut own) = (0, 0);
    for ((name, case, rust, pool), result) in wants.iter().zip(&results) {
        let got = named(result, pool.as_ref());
        if got != *rust {
            failures.push(format!("{name}: the function and the Rust decision differ\n  rust     {rust}\n  function {got}"));
            continue;
        }
        if lambda_only(case) {
            own += 1;
            continue;
        }
        contract += 1;
        let want = &case["expect"];
        let source = match want["source"].as_str().unwrap() {
            "cache" | "stale" | "table" => "table",
            other => other,
        };
        let mut ok =
            got["source"] == source && (source == "passthrough" || got["origin"] == want["origin"]);
        if let Some(r) = want.get("ranking_region") {
            ok &= got["region"] == *r;
        }
        if let Some(b) = want.get("band") {
            ok &= got["band"] == *b;
        }
        if let Some(f) = want.get("failover") {
            ok &= got["failover"].as_str().unwrap_or("") == f.as_str().unwrap();
        }
        if let Some(t) = want.get("timeouts") {
            ok &= got["timeouts"]["connect"] == t["connection_timeout"]
                && got["timeouts"]["attempts"] == t["connection_attempts"]
                && got["timeouts"]["read"] == t["read_timeout"];
        }
        if !ok {
            failures.push(format!(
                "{name}: the function misses the vector\n  want {want}\n  got  {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "the function met {contract} vectors; {own} Lambda-only vectors matched its own rule"
    );
    assert!(
        contract >= 170,
        "only {contract} vectors held the function to the contract"
    );
    assert!(own >= 200, "only {own} Lambda-only vectors checked");
}

/// xorshift64*: a fixed sequence, so a failure names a case that can be
/// run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-1",
    "eu-central-1",
    "sa-east-1",
];

#[test]
fn the_function_and_the_rust_decision_agree_on_1200_generated_cases() {
    let dir = workdir();
    let mut rng = Rng(0x005e_ed0f_c10d_f00d);
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    for config_no in 0..40 {
        let n = 1 + rng.below(8) as usize;
        let band = rng.chance(2);
        let mut text = String::from("[routing]\ndefault_pool = \"web\"\n[pools.web]\n");
        if rng.chance(3) {
            text.push_str(&format!("default_origin = \"o{}\"\n", rng.below(n as u64)));
        }
        text.push_str("origins = [\n");
        for i in 0..n {
            let weight = [1.0, 1.0, 2.0, 0.5][rng.below(4) as usize];
            let cap = if rng.chance(4) {
                ", max_share = 0.4"
            } else {
                ""
            };
            text.push_str(&format!(
                "  {{ id = \"o{i}\", host = \"o{i}.example.net\", weight = {weight}{cap} }},\n"
            ));
        }
        text.push_str("]\n");
        if band {
            let key = ["uri", "clientIp", "header:x-user", "cookie:sid"][rng.below(4) as usize];
            text.push_str(&format!(
                "[pools.web.steering]\npolicy = \"band\"\nband_absolute = \"{}ms\"\nband_relative = 0.{}\nband_taper = 0.{}\nkey = \"{key}\"\n",
                1 + rng.below(30),
                rng.below(5),
                rng.below(9)
            ));
        }
        text.push_str(&format!(
            "[pools.web.cloudfront]\nconnect_floor = \"{}s\"\n[operations]\nfail_open = {}\n",
            1 + rng.below(3),
            rng.chance(2)
        ));
        let mut config =
            Config::from_toml(&text, "generated.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.store.kvs_regions = REGIONS[..1 + rng.below(5) as usize]
            .iter()
            .map(|r| r.to_string())
            .collect();
        let function = write_function(dir.path(), &format!("generated-{config_no}"), &config);
        let pool = config.pools["web"].clone();
        for _ in 0..30 {
            let now = 1_780_000_000_000 + rng.below(1_000_000);
            let edge_region = REGIONS[rng.below(5) as usize];
            let mut docs = Vec::new();
            for r in &config.store.kvs_regions {
                if rng.chance(4) {
                    continue;
                }
                let mut ids: Vec<usize> = (0..n).collect();
                for i in (1..ids.len()).rev() {
                    ids.swap(i, rng.below(i as u64 + 1) as usize);
                }
                ids.truncate(1 + rng.below(n as u64) as usize);
                let mut score = 0.0;
                let origins = ids
                    .iter()
                    .map(|i| {
                        let state = [
                            OriginState::Healthy,
                            OriginState::Healthy,
                            OriginState::Degraded,
                            OriginState::Down,
                            OriginState::Drained,
                        ][rng.below(5) as usize];
                        score += rng.below(40_000) as f64 / 1000.0;
                        let mut o = RankedOrigin::measured(&format!("o{i}"), state, score, 1);
                        if rng.chance(6) {
                            o.score = None;
                        }
                        o.connect_budget_ms = (!rng.chance(3)).then(|| rng.below(12_000) as f64);
                        o
                    })
                    .collect();
                let age = [0, 1_000, 20_000, 40_000, 200_000][rng.below(5) as usize];
                let generated_at = if rng.chance(15) {
                    now + 60_000
                } else {
                    now - age
                };
                docs.push(RankingDocument::new("web", r, 1, generated_at, origins));
            }
            let controls: Vec<Control> = (0..rng.below(3))
                .map(|_| Control {
                    kind: if rng.chance(3) {
                        ControlKind::Override
                    } else {
                        ControlKind::Drain
                    },
                    pool: "web".into(),
                    region: [edge_region, "all-regions", "eu-west-1"][rng.below(3) as usize].into(),
                    origin: format!("o{}", rng.below(n as u64)),
                    set_at: now - rng.below(100_000),
                    until: now + 1 + rng.below(3_600_000),
                    by: "generated".into(),
                    reason: "parity".into(),
                })
                .collect();
            let key = format!("/k{}", rng.below(1000));
            let settings = EdgeSettings::new(&config, edge_region.to_string());
            let (kvs, back_docs, back_controls) = store(
                "web",
                &pool,
                &docs,
                &controls,
                now,
                &config.store.kvs_regions[0],
            );
            // Only what is in the store counts: the rankings of regions
            // the function reads.
            let rust = rust_view(
                &settings,
                Some("web"),
                &back_docs,
                &back_controls,
                &key,
                now,
            );
            let case = json!({"request": {"host": "www.example.org", "key": key}});
            cases.push(json!({
                "fn": function, "kvs": kvs, "region": edge_region, "now": now,
                "event": event(&case, &pool.steering.key),
                "distributionOrigins": pool.origins.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
            }));
            wants.push((format!("config {config_no}"), rust, pool.clone()));
        }
    }
    let results = run_node(dir.path(), &cases);
    let mut failures = Vec::new();
    let mut sources = std::collections::BTreeMap::new();
    for ((name, rust, pool), result) in wants.iter().zip(&results) {
        let got = named(result, Some(pool));
        *sources
            .entry(got["source"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
        if got != *rust {
            failures.push(format!("{name}:\n  rust     {rust}\n  function {got}"));
        }
    }
    assert_eq!(cases.len(), 1200);
    assert!(
        failures.is_empty(),
        "{} of 1200 differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("1200 generated cases agree; by the function's source: {sources:?}");
    for s in ["table", "known_down", "override", "default", "passthrough"] {
        assert!(
            sources.get(s).copied().unwrap_or(0) >= 10,
            "too few `{s}` cases: {sources:?}"
        );
    }
}

#[test]
fn the_minified_runtime_is_what_minify_sh_gives() {
    let Some(terser) = std::env::var_os("ORIGIN_ROUTER_TERSER") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ORIGIN_ROUTER_TERSER is not set (scripts/test.sh installs terser and sets it)"
        );
        eprintln!("skipped: ORIGIN_ROUTER_TERSER is not set (scripts/test.sh sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runtime.min.js");
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/function/minify.sh"
        ))
        .env("TERSER", terser)
        .env("OUT", &out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        edge::function::RUNTIME,
        "edge/src/function/runtime.min.js is stale: run edge/src/function/minify.sh"
    );
}
