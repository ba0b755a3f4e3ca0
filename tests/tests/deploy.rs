//! The deploy artefacts: templates lint clean and grant only what the guide
//! documents; the edge package has the expected layout and its bundled
//! bridge answers a CloudFront event with the bundled binary and config,
//! reading the table (a moto server) as it would in Lambda.

use std::path::{Path, PathBuf};
use std::process::Command;

use origin_router_tests::services::{workspace_root, MotoServer};

fn venv_tool(name: &str) -> PathBuf {
    let path = workspace_root().join(".test-services/venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn templates_are_lint_clean() {
    let templates: Vec<PathBuf> = [
        "table.yaml",
        "prober.yaml",
        "edge.yaml",
        "edge-alarms.yaml",
        "function.yaml",
    ]
    .iter()
    .map(|t| workspace_root().join("deploy").join(t))
    .collect();
    run(Command::new(venv_tool("cfn-lint")).args(&templates));
}

#[test]
fn roles_hold_only_the_actions_the_guide_lists() {
    let out = run(Command::new(venv_tool("python"))
        .arg(workspace_root().join("deploy/tests/check_templates.py")));
    assert!(out.contains("ok: 3 roles match the guide"), "{out}");
    // The probers' KeyValueStore grant: exactly DescribeKeyValueStore and
    // UpdateKeys, on the KeyValueStoreArn parameter only.
    assert!(
        out.contains("ok: the probers' KeyValueStore grant is DescribeKeyValueStore and UpdateKeys on KeyValueStoreArn only"),
        "{out}"
    );
    // A CloudFront Function has no role: its template defines none.
    assert!(
        out.contains("ok: the CloudFront Function template defines no IAM role"),
        "{out}"
    );
}

/// A stand-in for `edge cloudfront-function --config FILE`: prints `code`
/// (the packaging script's contract with the generator, not the generator
/// itself, which has its own tests).
fn stub_generator(dir: &Path, name: &str, code: &str) -> PathBuf {
    let js = dir.join(format!("{name}.js"));
    std::fs::write(&js, code).unwrap();
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = cloudfront-function ] && [ \"$2\" = --config ] || exit 64\ncat '{}'\n",
            js.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn function_package_inlines_the_code_and_the_origins_and_lints_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin-router.toml");
    std::fs::write(
        &config,
        "[pools.web]\ndefault_origin = \"eu\"\norigins = [{ id = \"us\", host = \"origin-us.example.net\" }, { id = \"eu\", host = \"origin-eu.example.net\", port = 8443 }]\n",
    )
    .unwrap();
    // Indented lines, quotes, colons and hashes: a block scalar keeps them.
    let code = "import cf from 'cloudfront';\nconst kvs = cf.kvs();\nasync function handler(event) {\n  // \"a\": b # c\n    return event.request;\n}\n";
    let generator = stub_generator(dir.path(), "gen", code);
    let out_dir = dir.path().join("out");
    let out = run(
        Command::new(workspace_root().join("deploy/package-function.sh"))
            .arg(&config)
            .arg(&out_dir)
            .env("EDGE_BINARY", &generator),
    );
    assert!(out.contains("limit 10240"), "{out}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("origin-router.js")).unwrap(),
        code
    );
    let packaged = out_dir.join("function.yaml");
    run(Command::new(venv_tool("cfn-lint")).arg(&packaged));
    // Parsed back, the template holds the code byte for byte, and the
    // example distribution one origin per configured origin, by id.
    let parsed = run(Command::new(venv_tool("python")).arg("-c").arg(
        "import json, sys\nfrom cfnlint.decode import decode\nd, m = decode(sys.argv[1])\nassert not m, m\nr = d['Resources']\nprint(json.dumps({'code': r['EdgeFunction']['Properties']['FunctionCode'], 'origins': [o['Id'] for o in r['ExampleDistribution']['Properties']['DistributionConfig']['Origins']], 'target': r['ExampleDistribution']['Properties']['DistributionConfig']['DefaultCacheBehavior']['TargetOriginId']}))",
    ).arg(&packaged));
    let parsed: serde_json::Value = serde_json::from_str(parsed.trim()).unwrap();
    assert_eq!(parsed["code"], code);
    assert_eq!(parsed["origins"], serde_json::json!(["us", "eu"]));
    assert_eq!(parsed["target"], "eu");
    let origins: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("distribution-origins.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(origins["Quantity"], 2);
    assert_eq!(origins["Items"][1]["CustomOriginConfig"]["HTTPSPort"], 8443);
    assert_eq!(origins["Items"][0]["ConnectionAttempts"], 1);
}

#[test]
fn function_package_refuses_no_pools_and_code_over_10_kb() {
    let dir = tempfile::tempdir().unwrap();
    // Packaging `config` with `generator` fails, naming `problem`, and
    // writes nothing.
    let refuses = |config: &Path, generator: &Path, out: &str, problem: &str| {
        let out = dir.path().join(out);
        let result = Command::new(workspace_root().join("deploy/package-function.sh"))
            .arg(config)
            .arg(&out)
            .env("EDGE_BINARY", generator)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert!(!out.exists());
    };
    let small = stub_generator(
        dir.path(),
        "small",
        "import cf from 'cloudfront';\nfunction handler(e) { return e.request; }\n",
    );
    let no_pools = dir.path().join("no-pools.toml");
    std::fs::write(&no_pools, "[store]\ndynamodb_table = \"rankings\"\n").unwrap();
    refuses(&no_pools, &small, "a", "no pools");

    let config = dir.path().join("ok.toml");
    std::fs::write(
        &config,
        "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n",
    )
    .unwrap();
    let big = stub_generator(
        dir.path(),
        "big",
        &format!("import cf from 'cloudfront';\n//{}\n", "x".repeat(10_240)),
    );
    refuses(&config, &big, "b", "at most 10240 (10 KB)");
    let no_import = stub_generator(
        dir.path(),
        "no-import",
        "function handler(e) { return e.request; }\n",
    );
    refuses(
        &config,
        &no_import,
        "c",
        "must start with: import cf from 'cloudfront';",
    );
}

fn edge_binary() -> PathBuf {
    let path = origin_router_tests::services::debug_binary("edge");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Extracts as Lambda does, keeping each entry's Unix mode; returns the
/// entries and their modes.
fn unzip(zip: &Path, into: &Path) -> Vec<(String, u32)> {
    let listing = run(Command::new("python3").args([
        "-c",
        "import os, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nz.extractall(sys.argv[2])\nfor i in z.infolist():\n    mode = (i.external_attr >> 16) & 0o777\n    os.chmod(os.path.join(sys.argv[2], i.filename), mode)\n    print(i.filename, mode)",
    ]).arg(zip).arg(into));
    listing
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, mode)| (name.to_string(), mode.trim().parse::<u32>().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_package_layout_and_its_bundled_bridge_answer() {
    use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
    use origin_router::store::RankingStore;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("origin-router.toml");
    // As deployed: the table named, endpoint and credentials from the
    // environment.
    std::fs::write(
        &config,
        "[routing]\ndefault_pool = \"web\"\n[pools.web]\norigins = [{ id = \"us\", host = \"origin-us.example.net\" }, { id = \"eu\", host = \"origin-eu.example.net\" }]\n[store]\ndynamodb_table = \"rankings\"\n",
    )
    .unwrap();
    let moto = MotoServer::start().await.unwrap();
    let table = moto.rankings_table("us-east-1");
    table.create_table().await.unwrap();
    let ranked = |id: &str, ms: f64| RankedOrigin::measured(id, OriginState::Healthy, ms, 1);
    table
        .write(&RankingDocument::new(
            "web",
            "us-east-1",
            1,
            origin_router::sample::unix_millis_now() + 5_000,
            vec![ranked("eu", 3.0), ranked("us", 9.0)],
        ))
        .await
        .unwrap();

    let zip = dir.path().join("edge.zip");
    let out = run(
        Command::new(workspace_root().join("deploy/package-edge.sh"))
            .arg(&config)
            .arg(&zip)
            .env("EDGE_BINARY", edge_binary()),
    );
    assert!(out.contains("limit 50 MiB"), "{out}");
    let glibc = out
        .rsplit("glibc >= ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let parts: Vec<u32> = glibc.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts[0] == 2 && parts[1] <= 34,
        "needs glibc {glibc}, Amazon Linux 2023 has 2.34"
    );

    let unpacked = dir.path().join("unpacked");
    let mut entries = unzip(&zip, &unpacked);
    entries.sort();
    assert_eq!(
        entries,
        [
            ("bootstrap".to_string(), 0o755),
            ("index.js".to_string(), 0o644),
            ("origin-router.toml".to_string(), 0o644)
        ]
    );

    let fixture = workspace_root().join("tests/fixtures/cloudfront/origin-request.json");
    let script = "const h = require('./index.js').handler;\n\
        const e = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));\n\
        h(e, { getRemainingTimeInMillis: () => 5000 }).then(r => { console.log('RESULT ' + JSON.stringify(r)); setTimeout(() => process.exit(0), 300); },\n\
        err => { console.error(err); process.exit(1); });";
    // The Node.js runtime's environment, which the bridge hands to the
    // binary: AWS_EXECUTION_ENV says it runs as a Lambda function, where
    // it starts only because the config names its table.
    let out = run(Command::new("node")
        .args(["-e", script])
        .arg(&fixture)
        .current_dir(&unpacked)
        .envs(moto.aws_env("us-east-1"))
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_nodejs24.x")
        .env("RUST_LOG", "warn"));
    let result = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("the bridge answered");
    let request: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(
        request["origin"]["custom"]["domainName"],
        "origin-eu.example.net"
    );
    let decision = out
        .lines()
        .find(|l| l.contains("\"Source\""))
        .expect("an EMF decision line");
    // Every pool is read once at start-up, so the first request is a cache hit.
    assert!(decision.contains("\"Source\":\"cache\""), "{decision}");
}

#[test]
fn package_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pools.web]\norigins = []\n").unwrap();
    // Packaging `config` into `zip` fails, naming `problem`, and writes
    // no zip.
    let refuses = |config: &Path, zip: &str, problem: &str| {
        let zip = dir.path().join(zip);
        let out = Command::new(workspace_root().join("deploy/package-edge.sh"))
            .arg(config)
            .arg(&zip)
            .env("EDGE_BINARY", edge_binary())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert!(!zip.exists());
    };
    refuses(
        &bad,
        "x.zip",
        "pools.web.origins: at least one origin is required",
    );

    // Valid for a local run, but not an origin CloudFront can use: an IP
    // address as the origin's domain name. Packaging refuses it by name.
    let ip = dir.path().join("ip.toml");
    std::fs::write(
        &ip,
        format!("[pools.web]\norigins = [{{ id = \"a\", host = \"192.0.2.10\" }}]\n{TABLE}"),
    )
    .unwrap();
    refuses(&ip, "y.zip", "pools.web.origins[0].host");

    // Valid for a local run, but without a table: in Lambda the edge
    // would read an empty embedded store and race every request.
    // Packaging refuses it by name.
    let no_table = dir.path().join("no-table.toml");
    std::fs::write(
        &no_table,
        "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n",
    )
    .unwrap();
    refuses(
        &no_table,
        "z.zip",
        "no-table.toml: store.dynamodb_table: is required",
    );
    // The same config with its table set is packaged.
    std::fs::write(
        &no_table,
        format!("[pools.web]\norigins = [{{ id = \"a\", host = \"a.example.net\" }}]\n{TABLE}"),
    )
    .unwrap();
    run(
        Command::new(workspace_root().join("deploy/package-edge.sh"))
            .arg(&no_table)
            .arg(dir.path().join("z.zip"))
            .env("EDGE_BINARY", edge_binary()),
    );
    assert!(dir.path().join("z.zip").exists());
}

/// The store section an edge package needs.
const TABLE: &str = "[store]\ndynamodb_table = \"rankings\"\n";
