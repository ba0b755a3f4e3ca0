//! `sim bench-function`: the CloudFront Function edge's size and its time
//! per call under Node.
//!
//! Size: the function generated ([`edge::function::generate`]) for one pool
//! of 1, 8 and 64 origins (ids `origin-00`..., hosts `o00.example.com`...,
//! three publishing regions), `fastest` and `band`, against CloudFront's
//! 10,240-byte limit.
//!
//! Time: the function for a `band` pool of 8 origins, run under Node by the
//! edge's test harness (`edge/tests/function/harness.mjs`, with the
//! stand-in `cloudfront` module beside it) on one viewer-request: the three
//! regions' fresh compact rankings ([`origin_router::compact::encode`]) in
//! the KeyValueStore, one drain in force (on the best origin), the key from
//! the URI. The harness times each call of the handler (`hrtime` around
//! it, the stand-in's KVS reads included) and gives the nearest-rank p50
//! and p99. CloudFront reports a function's compute utilisation (a share of
//! its allowed time), not its time, so these are a relative measure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use edge::function::{generate, Options, MAX_CODE_BYTES};
use origin_router::compact;
use origin_router::config::Config;
use origin_router::control::{Control, ControlKind, ALL_REGIONS};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use serde_json::{json, Value};

use crate::SimError;

/// The harness and the stand-in module, as the edge's tests run them.
const HARNESS: &str = include_str!("../../edge/tests/function/harness.mjs");
const CLOUDFRONT: &str = include_str!("../../edge/tests/function/cloudfront.mjs");

/// The publishing regions of every config here.
pub const KVS_REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];
/// The pool's name and the viewer's Host.
const POOL: &str = "web";
const HOST: &str = "www.example.com";
/// Pool sizes whose function size is reported.
const SIZES: [usize; 3] = [1, 8, 64];
/// Origins of the timed pool.
const TIMED_ORIGINS: usize = 8;

#[derive(Debug, Args)]
pub struct FunctionArgs {
    /// Calls of the handler per timed run.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub calls: u64,
    /// Timed runs (each a fresh Node process).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub runs: u64,
    /// The Node.js binary.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
}

/// A config of one pool `web` of `n` origins (`origin-NN`,
/// `oNN.example.com`), steered by `policy`, published from
/// [`KVS_REGIONS`], with `www.example.com` routed to it.
pub fn config(n: usize, policy: &str) -> Result<Config, SimError> {
    let mut text = format!(
        "[store]\nkvs_regions = {regions:?}\n[routing.hosts]\n\"{HOST}\" = \"{POOL}\"\n\
         [pools.{POOL}]\n[pools.{POOL}.steering]\npolicy = \"{policy}\"\n",
        regions = KVS_REGIONS,
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[pools.{POOL}.origins]]\nid = \"origin-{i:02}\"\nhost = \"o{i:02}.example.com\"\n"
        ));
    }
    let config = Config::from_toml(&text, "bench-function.toml")?;
    config
        .validate()
        .map_err(|p| format!("bench config: {p:?}").into())
}

/// The generated function, ready to run under Node: a temporary directory
/// holding it (`fn.mjs`, with the handler exported), the harness and the
/// stand-in `cloudfront` module where both resolve it.
pub struct NodeFunction {
    dir: tempfile::TempDir,
    node: PathBuf,
    allow_ip: bool,
}

impl NodeFunction {
    pub fn new(code: &str, node: &Path, allow_ip: bool) -> Result<NodeFunction, SimError> {
        let dir = tempfile::Builder::new()
            .prefix("origin-router-function")
            .tempdir()?;
        std::fs::write(
            dir.path().join("fn.mjs"),
            format!("{code}\nexport {{ handler }};\n"),
        )?;
        std::fs::write(dir.path().join("harness.mjs"), HARNESS)?;
        let module = dir.path().join("node_modules/cloudfront");
        std::fs::create_dir_all(&module)?;
        std::fs::write(module.join("index.mjs"), CLOUDFRONT)?;
        std::fs::write(
            module.join("package.json"),
            r#"{"name":"cloudfront","type":"module","main":"index.mjs"}"#,
        )?;
        Ok(NodeFunction {
            dir,
            node: node.to_path_buf(),
            allow_ip,
        })
    }

    /// Runs the harness with `extra` arguments over `cases` (one JSON line
    /// each); its output lines.
    fn harness(&self, cases: &[Value], extra: &[String]) -> Result<Vec<Value>, SimError> {
        let mut command = Command::new(&self.node);
        command
            .current_dir(self.dir.path())
            .arg("harness.mjs")
            .arg("fn.mjs");
        if self.allow_ip {
            command.arg("--allow-ip");
        }
        let input: String = cases.iter().map(|c| format!("{c}\n")).collect();
        let input_path = self.dir.path().join("cases.jsonl");
        std::fs::write(&input_path, input)?;
        let output = command
            .args(extra)
            .stdin(std::fs::File::open(&input_path)?)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("running {}: {e}", self.node.display()))?;
        if !output.status.success() {
            return Err(format!(
                "the harness failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        String::from_utf8(output.stdout)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(SimError::from))
            .collect()
    }

    /// Runs the function on each case; each result
    /// (`{decision, calls, request}` or `{error}`).
    pub fn run(&self, cases: &[Value]) -> Result<Vec<Value>, SimError> {
        let out = self.harness(cases, &[])?;
        if out.len() != cases.len() {
            return Err(format!("{} cases gave {} results", cases.len(), out.len()).into());
        }
        Ok(out)
    }

    /// Runs the function on `case` `calls` times; the harness's
    /// `{calls, p50_ns, p99_ns, max_ns}`.
    pub fn bench(&self, case: &Value, calls: u64) -> Result<Value, SimError> {
        let out = self.harness(
            std::slice::from_ref(case),
            &["--bench".into(), calls.to_string()],
        )?;
        out.into_iter()
            .next()
            .ok_or_else(|| "the harness printed nothing".into())
    }
}

/// A case for the harness: the KVS, the edge location's region, the
/// clock, and a viewer-request for `uri` on `HOST`.
pub fn case(kvs: &Value, region: &str, now: u64, uri: &str) -> Value {
    json!({
        "kvs": kvs,
        "region": region,
        "now": now,
        "event": {
            "version": "1.0",
            "context": {"distributionId": "EDFDVBD6EXAMPLE", "eventType": "viewer-request"},
            "viewer": {"ip": "198.51.100.7"},
            "request": {
                "method": "GET",
                "uri": uri,
                "querystring": {},
                "headers": {"host": {"value": HOST}},
                "cookies": {}
            }
        }
    })
}

/// The timed pool's rankings: each region's own order of its 8 origins,
/// healthy, 20-120 ms, with connect budgets, generated 2 s before `now`.
fn rankings(config: &Config, now: u64) -> Vec<RankingDocument> {
    let ids: Vec<&str> = config.pools[POOL]
        .origins
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    let scores = [20.0, 22.5, 26.0, 31.0, 45.0, 60.0, 85.0, 120.0];
    KVS_REGIONS
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let origins = (0..ids.len())
                .map(|i| {
                    let mut e = RankedOrigin::measured(
                        ids[(i + 3 * r) % ids.len()],
                        OriginState::Healthy,
                        scores[i % scores.len()] + r as f64,
                        2,
                    );
                    e.connect_budget_ms = Some(scores[i % scores.len()] * 0.6);
                    e
                })
                .collect();
            RankingDocument::new(POOL, region, 40 + r as u64, now - 2_000, origins)
        })
        .collect()
}

pub async fn run(args: FunctionArgs) -> Result<(), SimError> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let node_version = Command::new(&args.node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map_err(|e| format!("running {}: {e}", args.node.display()))?;
    println!(
        "bench-function: the CloudFront Function edge, generated for one pool with {} publishing regions ({}); Node {node_version}; load average {}",
        KVS_REGIONS.len(),
        KVS_REGIONS.join(", "),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("size (CloudFront's limit: {MAX_CODE_BYTES} bytes):");
    for n in SIZES {
        let mut line = format!("  {n:>2} origins:");
        for policy in ["fastest", "band"] {
            let bytes = generate(&config(n, policy)?, Options::default())?.len();
            line.push_str(&format!(
                "  {policy} {bytes} bytes ({:.1} %, {} left)",
                bytes as f64 * 100.0 / MAX_CODE_BYTES as f64,
                MAX_CODE_BYTES as i64 - bytes as i64
            ));
        }
        println!("{line}");
    }

    // The timed case.
    let config = config(TIMED_ORIGINS, "band")?;
    let pool = &config.pools[POOL];
    let now = unix_millis_now();
    let docs = rankings(&config, now);
    // A drain of the first region's best, everywhere, set a minute ago.
    let drained = docs[0].origins[0].id.clone();
    let drain = Control {
        kind: ControlKind::Drain,
        pool: POOL.into(),
        region: ALL_REGIONS.into(),
        origin: drained.clone(),
        set_at: now - 60_000,
        until: now + 3_600_000,
        by: "bench".into(),
        reason: "bench-function".into(),
    };
    let mut kvs = serde_json::Map::new();
    for doc in &docs {
        let encoded = compact::encode(pool, doc, std::slice::from_ref(&drain), now)?;
        if encoded.dropped_origins > 0 {
            return Err(format!("{}: origins dropped", doc.region).into());
        }
        kvs.insert(compact::key(POOL, &doc.region), encoded.value.into());
    }
    let kvs = Value::Object(kvs);
    let case = case(&kvs, KVS_REGIONS[0], now, "/products/42?colour=blue");
    let code = generate(&config, Options::default())?;
    let function = NodeFunction::new(&code, &args.node, false)?;
    let result = function
        .run(std::slice::from_ref(&case))?
        .pop()
        .unwrap_or_default();
    let decision = &result["decision"];
    let chosen = decision["origin"]
        .as_u64()
        .and_then(|i| pool.origins.get(i as usize))
        .map(|o| o.id.as_str());
    if decision["source"] != "table" || chosen.is_none() || chosen == Some(drained.as_str()) {
        return Err(format!("the timed case did not decide from the table: {result}").into());
    }
    let value_bytes: Vec<String> = kvs
        .as_object()
        .map(|m| {
            m.values()
                .map(|v| v.as_str().unwrap_or("").len().to_string())
        })
        .into_iter()
        .flatten()
        .collect();
    println!(
        "time per call: band pool of {TIMED_ORIGINS} origins ({} bytes of code), {} fresh rankings in the KVS ({} bytes), \
         {drained} drained in all regions, edge location in {}; the function decides {} -> {} (band of {}, failover {}), \
         calls {}",
        code.len(),
        KVS_REGIONS.len(),
        value_bytes.join(" / "),
        KVS_REGIONS[0],
        decision["source"],
        chosen.unwrap_or("-"),
        decision["band"],
        decision["failover"]
            .as_u64()
            .and_then(|i| pool.origins.get(i as usize))
            .map_or("none", |o| o.id.as_str()),
        result["calls"]
            .as_array()
            .map(|c| c
                .iter()
                .map(|c| c["call"].as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
    );
    let ns = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1000.0;
    for run in 1..=args.runs {
        let figures = function.bench(&case, args.calls)?;
        println!(
            "  run {run}: {} calls, p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs",
            figures["calls"],
            ns(&figures["p50_ns"]),
            ns(&figures["p99_ns"]),
            ns(&figures["max_ns"]),
        );
    }
    println!(
        "(Node's time on this machine, a relative measure: CloudFront reports a function's compute utilisation, \
         a share of its allowed time, not its time.)"
    );
    Ok(())
}
