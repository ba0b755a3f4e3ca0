//! The Node.js Lambda@Edge bridge against the real `edge` binary: runs the
//! bridge's own tests (`node --test`) with a config and an embedded store
//! prepared here.

use std::path::PathBuf;
use std::process::Command;

use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::{EmbeddedStore, RankingStore};

#[tokio::test]
async fn bridge_runs_the_binary_through_the_runtime_api() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_edge"));
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let config = dir.path().join("origin-router.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [routing]
            default_pool = "web"
            [pools.web]
            origins = [
                {{ id = "us", host = "origin-us.example.net" }},
                {{ id = "eu", host = "origin-eu.example.net" }},
            ]
            [store]
            embedded_path = "{}"
            "#,
            store_dir.display()
        ),
    )
    .unwrap();
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(
        &bad_config,
        "[pools.web]\norigins = [{ id = \"a\", host = \"a.test\", port = 70000 }]\n",
    )
    .unwrap();
    let store = EmbeddedStore::new(&store_dir);
    let entry = |id: &str, ms: f64| RankedOrigin::measured(id, OriginState::Healthy, ms, 1);
    store
        .write(&RankingDocument::new(
            "web",
            "eu-west-1",
            1,
            // Fresh for the test's lifetime (ranking_max_age is 30 s; 5 s ahead
            // is within the allowed clock skew).
            origin_router::sample::unix_millis_now() + 5_000,
            vec![entry("eu", 5.0), entry("us", 80.0)],
        ))
        .await
        .unwrap();

    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "test/"])
            .current_dir(root.join("bridge"))
            .env("EDGE_BINARY", &binary)
            .env("EDGE_CONFIG", &config)
            .env("EDGE_BAD_CONFIG", &bad_config)
            .env(
                "FIXTURE",
                root.join("../tests/fixtures/cloudfront/origin-request.json"),
            )
            .env("EXPECT_DOMAIN", "origin-eu.example.net")
            .env("AWS_REGION", "eu-west-1")
            .env("RUST_LOG", "warn")
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bridge tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("# pass 9") && stdout.contains("# fail 0"),
        "{stdout}"
    );
}
