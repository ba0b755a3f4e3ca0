//! Running the generated CloudFront Function under Node with the stand-in
//! `cloudfront` module (`edge/tests/function/cloudfront.mjs`), and the Rust
//! decision it is held to: `edge/tests/function.rs` (the vectors, generated
//! cases) and `edge/tests/function_attacks.rs` (hostile inputs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edge::decision::{self, PoolView, Read, Verdict};
use edge::settings::EdgeSettings;
use origin_router::compact;
use origin_router::config::{Config, PoolConfig};
use origin_router::control::Control;
use origin_router::document::{RankingDocument, MAX_CLOCK_SKEW_MS};
use serde_json::{json, Value};

const STAND_IN: &str = include_str!("../function/cloudfront.mjs");

pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("node_modules/cloudfront");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("index.mjs"), STAND_IN).unwrap();
    std::fs::write(
        module.join("package.json"),
        r#"{"name":"cloudfront","type":"module","main":"index.mjs"}"#,
    )
    .unwrap();
    dir
}

pub fn write_function(dir: &Path, name: &str, config: &Config) -> PathBuf {
    let code = edge::function::generate(
        config,
        edge::function::Options {
            allow_ip_origins: true,
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = dir.join(format!("{name}.mjs"));
    std::fs::write(&path, format!("{code}\nexport {{ handler }};\n")).unwrap();
    path
}

/// Runs `cases` under Node. A case: `fn`, `kvs`, `now`, `event`, and
/// either `region` or `edgeLocation` (the whole object, `null` for none);
/// `kvsThrows`: every `get` throws.
pub fn run_node(dir: &Path, cases: &[Value]) -> Vec<Value> {
    let runner = dir.join("run.mjs");
    std::fs::write(
        &runner,
        "import { readFileSync } from 'node:fs';\n\
         import { pathToFileURL } from 'node:url';\n\
         import cf, { state } from 'cloudfront';\n\
         state.allowIp = true;\n\
         const kvs = cf.kvs;\n\
         const mods = {};\n\
         const out = [];\n\
         for (const line of readFileSync(0, 'utf8').split('\\n').filter((l) => l.trim())) {\n\
           const c = JSON.parse(line);\n\
           mods[c.fn] ||= await import(pathToFileURL(c.fn).href);\n\
           state.kvs = c.kvs || {};\n\
           state.edgeLocation = 'edgeLocation' in c ? c.edgeLocation : { name: 'TST', serverIp: '127.0.0.1', region: c.region };\n\
           cf.kvs = c.kvsThrows ? () => ({ get: async () => { throw new Error('KVS down'); } }) : kvs;\n\
           state.distributionOrigins = c.distributionOrigins || null; state.calls = []; state.decision = null;\n\
           Date.now = () => c.now;\n\
           try { await mods[c.fn].handler(c.event); out.push(JSON.stringify({ decision: state.decision, calls: state.calls })); }\n\
           catch (e) { out.push(JSON.stringify({ error: String(e && e.stack || e) })); }\n\
         }\n\
         process.stdout.write(out.join('\\n') + '\\n');\n",
    )
    .unwrap();
    let mut child = Command::new("node")
        .arg(&runner)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be installed to run the CloudFront Function");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for c in cases {
            writeln!(stdin, "{c}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), cases.len());
    results
}

/// The function's decision with origin indexes made ids; a throw as
/// `{"error"}`.
pub fn named(result: &Value, pool: Option<&PoolConfig>) -> Value {
    if let Some(e) = result.get("error") {
        return json!({ "error": e });
    }
    let d = &result["decision"];
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|i| pool?.origins.get(i as usize))
            .map(|o| o.id.clone())
    };
    if d["source"] == "passthrough" {
        return json!({"source": "passthrough"});
    }
    json!({
        "source": d["source"],
        "origin": id(&d["origin"]),
        "region": d["region"],
        "band": d["band"],
        "failover": id(&d["failover"]),
        "timeouts": d["timeouts"],
    })
}

pub fn rust_view(
    settings: &EdgeSettings,
    pool_name: Option<&str>,
    docs: &[RankingDocument],
    controls: &[Control],
    key: &str,
    now: u64,
) -> Value {
    let Some(pool_name) = pool_name else {
        return json!({"source": "passthrough"});
    };
    let pool = settings.pools.get(pool_name);
    let view = PoolView {
        rankings: docs,
        read: Read::Now,
        read_failed: false,
        controls,
        ejected: &[],
        race_winner: None,
    };
    let timeouts = |t: decision::OriginTimeouts| {
        let mut m = serde_json::Map::new();
        if let Some(c) = t.connection_timeout {
            m.insert("connect".into(), json!(c));
            m.insert("attempts".into(), json!(t.connection_attempts));
        }
        if let Some(r) = t.read_timeout {
            m.insert("read".into(), json!(r));
        }
        Value::Object(m)
    };
    match decision::decide(pool_name, pool, &view, &settings.decision, key, now).verdict {
        Verdict::Passthrough { .. } => json!({"source": "passthrough"}),
        Verdict::Chosen {
            origin,
            source,
            ranking,
            band,
            failover,
            timeouts: t,
            ..
        } => json!({
            "source": source.as_str(),
            "origin": origin.id,
            "region": ranking.map(|(r, _)| r),
            "band": band,
            "failover": failover.map(|o| o.id.clone()),
            "timeouts": timeouts(t),
        }),
        Verdict::Unranked { default, .. } => json!({
            "source": "default",
            "origin": default.id,
            "region": null,
            "band": null,
            "failover": null,
            "timeouts": timeouts(decision::timeouts::for_origin(pool.unwrap(), None, false)),
        }),
    }
}

/// What the function reads of `kvs` for `pool_name` at an edge in
/// `edge_region`, as the Rust side decodes it: the values `compact::decode`
/// accepts, nearest first, and the controls of the newest value the
/// function trusts: not dated more than the clock skew ahead of `now`
/// (else the least far ahead).
pub fn read_back(
    config: &Config,
    pool_name: &str,
    edge_region: &str,
    kvs: &serde_json::Map<String, Value>,
    now: u64,
) -> (Vec<RankingDocument>, Vec<Control>) {
    let pool = &config.pools[pool_name];
    let order = origin_router::geo::nearest_first(
        edge_region,
        config.store.kvs_regions.iter().map(String::as_str),
        &config.edge.proximity,
    );
    let mut docs = Vec::new();
    let mut controls: Vec<Vec<Control>> = Vec::new();
    for r in order {
        let Some(v) = kvs.get(&compact::key(pool_name, r)).and_then(Value::as_str) else {
            continue;
        };
        if let Ok((d, c)) = compact::decode(pool_name, pool, r, v) {
            docs.push(d);
            controls.push(c);
        }
    }
    let rank = |d: &RankingDocument| {
        if d.generated_at > now + MAX_CLOCK_SKEW_MS {
            -(d.generated_at as i128)
        } else {
            d.generated_at as i128
        }
    };
    let mut newest: Option<usize> = None;
    for (i, d) in docs.iter().enumerate() {
        if newest.is_none_or(|n| rank(d) > rank(&docs[n])) {
            newest = Some(i);
        }
    }
    let controls = newest.map(|n| controls[n].clone()).unwrap_or_default();
    (docs, controls)
}

/// Asserts the function's decision (`got`) is the Rust one (`rust`) for
/// every named case, listing every case that differs.
pub fn assert_agree<'a>(cases: impl Iterator<Item = (&'a str, &'a Value, Value)>) {
    let failures: Vec<String> = cases
        .filter(|(_, rust, got)| got != *rust)
        .map(|(name, rust, got)| format!("{name}:\n  rust     {rust}\n  function {got}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
