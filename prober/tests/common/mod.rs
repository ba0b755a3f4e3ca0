//! Shared parts of the prober's tests: configs, an explicit-endpoint
//! DynamoDB store, HTTP and Redis helpers, and running workers.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::document::RankingDocument;
use origin_router::store::{DynamoStore, RankingStore};
use origin_router_tests::services::MotoServer;
pub use origin_router_tests::services::{redis_get, redis_set};
use origin_router_tests::{loopback, Mode, TestOrigin};

pub const REGION: &str = "eu-west-1";
pub const TABLE: &str = "origin-router-rankings";

/// A DynamoDB client for the moto server, without touching the process
/// environment (tests run in parallel).
pub fn dynamo_client(moto: &MotoServer) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// The worker holding the region's lease (the lease value is
/// `worker#nonce`).
pub async fn leader_worker(url: &str) -> Option<String> {
    redis_get(url, LEADER_KEY)
        .await
        .map(|v| prober::coord::worker_of(&v).to_string())
}

/// The test credentials and region for workers that open the table from
/// their config through the standard AWS configuration chain. Set once per
/// test binary, the same for every test, before any worker reads them.
pub fn aws_test_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in aws_test_vars(REGION) {
            std::env::set_var(name, value);
        }
    });
}

/// The test credentials and `region`, as a child process's environment
/// (what [`aws_test_env`] sets in this one).
pub fn aws_test_vars(region: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", region),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn dynamo(moto: &MotoServer) -> Arc<DynamoStore> {
    let store = DynamoStore::new(dynamo_client(moto), TABLE, Duration::from_secs(86_400));
    store.create_table().await.expect("create table");
    Arc::new(store)
}

/// Origins `a`, `b`, `c` on 127.0.0.21-23 with per-source delays.
pub async fn origins(delays: [&[(u8, u64)]; 3]) -> Vec<TestOrigin> {
    let mut out = Vec::new();
    for (i, d) in delays.iter().enumerate() {
        let delays: HashMap<IpAddr, Duration> = d
            .iter()
            .map(|(src, ms)| (loopback(*src), Duration::from_millis(*ms)))
            .collect();
        let o = TestOrigin::start(
            SocketAddr::new(loopback(21 + i as u8), 0),
            Mode::DelayBySource {
                delays,
                default: Duration::from_millis(5),
            },
        )
        .await
        .expect("origin starts");
        out.push(o);
    }
    out
}

/// A pool of plain-HTTP origins named `ids` in order.
pub fn pool<'a>(origins: impl Iterator<Item = &'a TestOrigin>, ids: &[&str]) -> PoolConfig {
    PoolConfig {
        default_origin: None,
        origins: origins
            .zip(ids)
            .map(|(o, id)| OriginConfig::http(id, &o.addr().ip().to_string(), o.port()))
            .collect(),
        ..Default::default()
    }
}

/// A worker config over `origins`, fast enough for tests.
pub fn config(
    origins: &[TestOrigin],
    worker: &str,
    source: Option<u8>,
    redis: Option<String>,
) -> Config {
    let mut c = Config::default();
    c.pools
        .insert("web".into(), pool(origins.iter(), &["a", "b", "c", "d"]));
    c.prober.region = Some(REGION.into());
    c.prober.worker_id = Some(worker.into());
    c.prober.interval = Duration::from_secs(1);
    c.prober.connect_timeout = Duration::from_millis(300);
    c.prober.response_timeout = Duration::from_millis(500);
    c.prober.jitter = Duration::from_millis(50);
    c.prober.fast_interval = Duration::from_millis(100);
    c.prober.lease_ttl = Duration::from_secs(3);
    c.prober.shutdown_grace = Duration::from_secs(2);
    c.prober.source_address = source.map(loopback);
    c.prober.metrics_listen = None;
    c.store.redis_url = redis;
    c.store.dynamodb_table = Some(TABLE.into());
    c.validate().expect("test config is valid")
}

/// Writes a config as TOML for a `prober` process.
pub fn write_config(config: &Config, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config.to_toml()).expect("write config");
    path
}

/// The `prober` binary built by `cargo build` (scripts/test.sh builds it
/// before the tests run).
pub fn prober_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_prober"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// The one way these tests run the `prober` CLI: the built binary with
/// `env` added (moto's AWS settings, say), logs at `warn` (a test that
/// reads log lines sets `RUST_LOG` itself), no `USER` (so who runs the
/// tests never decides who set a drain) and stdin closed (a command that
/// waited for input would hang the test).
pub fn prober(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(prober_binary());
    cmd.envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .env_remove("USER")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to the end and returns its stdout; fails the test, showing
/// both outputs, unless it exited 0.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("prober runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to the end and returns its stderr; fails the test unless it
/// exited non-zero.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("prober runs");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The config a new user starts with, written to `dir/solo.toml`: one
/// origin on 127.0.0.1:`port`, the embedded store at `dir/store`, no Redis,
/// no AWS; `prober_extra` is added to `[prober]`.
pub fn solo_config(dir: &Path, port: u16, prober_extra: &str) -> PathBuf {
    let text = format!(
        r#"
        [pools.web]
        origins = [{{ id = "only", host = "127.0.0.1", port = {port}, protocol = "http" }}]
        [prober]
        region = "{REGION}"
        {prober_extra}
        [store]
        embedded_path = "{}"
        "#,
        dir.join("store").display()
    );
    let path = dir.join("solo.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A new user's setup on loopback: one origin that answers OK on
/// 127.0.0.1 (keep it alive as long as the worker), and [`solo_config`]
/// for it in `dir` with `/metrics` on a free port and `prober_extra`;
/// returns the origin, the config's path and the metrics address.
pub async fn solo_setup(dir: &Path, prober_extra: &str) -> (TestOrigin, PathBuf, SocketAddr) {
    let origin = TestOrigin::start("127.0.0.1:0".parse().unwrap(), Mode::Ok)
        .await
        .expect("origin starts");
    let metrics: SocketAddr = ([127, 0, 0, 1], origin_router_tests::services::free_port()).into();
    let path = solo_config(
        dir,
        origin.port(),
        &format!("metrics_listen = \"{metrics}\"\n{prober_extra}"),
    );
    (origin, path, metrics)
}

/// Polls `f` every 100 ms until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn ranking(store: &dyn RankingStore) -> Option<RankingDocument> {
    store.read_pool("web").await.ok()?.region(REGION).cloned()
}

pub const LEADER_KEY: &str = "origin-router:{eu-west-1}:leader";

/// A child process (a worker) killed when the test ends, whatever happens.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `origin_router_*` names a query or rule expression uses.
pub fn metric_names(query: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("origin_router_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.insert(name);
    }
    out
}

/// Series names in a Prometheus text exposition: a histogram shows as
/// its `_bucket`, `_sum` and `_count` series, never under its bare name,
/// so a query must name one of those, as the scrape does.
pub fn exported(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Names `queries` use that `scrape` does not export.
pub fn missing(queries: &[String], scrape: &str) -> std::collections::BTreeSet<String> {
    let have = exported(scrape);
    queries
        .iter()
        .flat_map(|q| metric_names(q))
        .filter(|n| !have.contains(n))
        .collect()
}
