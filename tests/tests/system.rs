//! The whole system on real parts: 3 regions x 2 `prober` processes (one
//! Redis, per-region keys) x 4 origins whose latency depends on the region
//! asking, moto as the table, and one `edge` process per region driven
//! through the Lambda Runtime API with its `AWS_REGION`.
//!
//! One test with sequential phases, because the parts take seconds to start
//! and the machine has two cores: running several copies side by side would
//! measure the scheduler, not the system.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use origin_router::store::RankingStore;
use origin_router_tests::runtime_api::Function;
use origin_router_tests::services::{debug_binary, redis_get, MotoServer, RedisServer};
use origin_router_tests::{loopback, Mode, TestOrigin};
use serde_json::Value;

/// (region, loopback hosts of its two workers and its edge)
const REGIONS: [(&str, [u8; 2]); 3] = [
    ("us-east-1", [2, 5]),
    ("eu-west-1", [3, 6]),
    ("ap-southeast-1", [4, 7]),
];
/// (origin, loopback host, latency in ms from each region above)
const ORIGINS: [(&str, u8, [u64; 3]); 4] = [
    ("o1", 11, [10, 60, 120]),
    ("o2", 12, [60, 8, 90]),
    ("o3", 13, [120, 90, 9]),
    ("o4", 14, [40, 45, 50]),
];
const FIXTURE: &str = include_str!("../fixtures/cloudfront/origin-request.json");

fn binary(name: &str) -> PathBuf {
    let path = debug_binary(name);
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

fn origin_mode(i: usize) -> Mode {
    let delays: HashMap<IpAddr, Duration> = REGIONS
        .iter()
        .enumerate()
        .flat_map(|(r, (_, hosts))| {
            hosts
                .iter()
                .map(move |h| (loopback(*h), Duration::from_millis(ORIGINS[i].2[r])))
        })
        .collect();
    Mode::DelayBySource {
        delays,
        default: Duration::from_millis(200),
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Edge {
    function: Function,
}

impl Edge {
    /// One invocation: (chosen origin id, the decision line).
    async fn decide(&self) -> (String, Value) {
        let event: Value = serde_json::from_str(FIXTURE).unwrap();
        let v = self.function.decision_for(&event).await;
        (v["Origin"].as_str().unwrap_or_default().to_string(), v)
    }
}

fn write_config(dir: &Path, name: &str, pools: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{pools}\n{extra}")).unwrap();
    path
}

/// Decisions of one edge until `until` holds for the chosen origin, or the
/// time is up; returns the time taken.
async fn until_edge(
    edge: &Edge,
    within: Duration,
    until: impl Fn(&str, &Value) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let (origin, d) = edge.decide().await;
        if until(&origin, &d) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_end_to_end() {
    let redis = RedisServer::start().await.unwrap();
    let mut moto = MotoServer::start().await.unwrap();
    let table = moto.rankings_table("us-east-1");
    table.create_table().await.unwrap();

    let mut origins = Vec::new();
    let mut pool = String::from(
        "[routing]\ndefault_pool = \"web\"\n[pools.web]\ndefault_origin = \"o4\"\norigins = [\n",
    );
    for (i, (name, host, _)) in ORIGINS.iter().enumerate() {
        let o = TestOrigin::start(SocketAddr::new(loopback(*host), 0), origin_mode(i))
            .await
            .unwrap();
        pool.push_str(&format!(
            "  {{ id = \"{name}\", host = \"{}\", port = {}, protocol = \"http\" }},\n",
            loopback(*host),
            o.port()
        ));
        origins.push(o);
    }
    pool.push_str("]\n");
    let dir = tempfile::tempdir().unwrap();
    // moto keeps each region's tables apart and does not replicate, so the
    // one "global table" lives in us-east-1 and every part reads and writes
    // that replica (store.table_regions), as parts in regions without a
    // replica do in AWS.
    let store = format!(
        "[store]\ndynamodb_table = \"rankings\"\ntable_regions = [\"us-east-1\"]\nredis_url = \"{}\"\n",
        redis.url()
    );

    let mut workers: HashMap<String, Proc> = HashMap::new();
    let mut edges = Vec::new();
    for (region, hosts) in REGIONS {
        for (n, host) in hosts.iter().enumerate() {
            let id = format!("{region}-w{}", n + 1);
            let prober = format!(
                "[prober]\nregion = \"{region}\"\nworker_id = \"{id}\"\nsource_address = \"{}\"\ninterval = \"1s\"\nconnect_timeout = \"300ms\"\nresponse_timeout = \"500ms\"\nfast_interval = \"150ms\"\njitter = \"50ms\"\nlease_ttl = \"3s\"\nmetrics_listen = \"127.0.0.1:{}\"\n{store}",
                loopback(*host),
                origin_router_tests::services::free_port()
            );
            let config = write_config(dir.path(), &id, &pool, &prober);
            let child = Command::new(binary("prober"))
                .args(["run", "--config"])
                .arg(&config)
                .envs(moto.aws_env(region))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            workers.insert(id, Proc(child));
        }
        let edge_config = write_config(
            dir.path(),
            &format!("{region}-edge"),
            &pool,
            "[edge]\ncache_ttl = \"500ms\"\nmax_stale = \"3s\"\nranking_max_age = \"5s\"\n[store]\ndynamodb_table = \"rankings\"\ntable_regions = [\"us-east-1\"]\n",
        );
        let mut env = moto.aws_env(region);
        env.push((
            "ORIGIN_ROUTER_CONFIG".into(),
            edge_config.display().to_string(),
        ));
        env.push(("RUST_LOG".into(), "error".into()));
        let function = Function::start(&binary("edge"), env).await.unwrap();
        edges.push(Edge { function });
    }

    // 1. Each region's edge chooses the origin fastest from that region.
    let fastest = ["o1", "o2", "o3"];
    for (i, edge) in edges.iter().enumerate() {
        let took = until_edge(edge, Duration::from_secs(30), |o, d| {
            o == fastest[i] && d["RankingRegion"] == REGIONS[i].0
        })
        .await;
        assert!(
            took.is_some(),
            "{} never chose {}",
            REGIONS[i].0,
            fastest[i]
        );
    }

    // 2. o1 (fastest from us-east-1) is killed: us-east-1 routes away within
    //    the bound, and no decision goes to it after that.
    let us = &edges[0];
    origins[0].set_mode(Mode::Stopped);
    let away = until_edge(us, Duration::from_secs(10), |o, _| o != "o1")
        .await
        .expect("us-east-1 routes away from o1");
    assert!(
        away < Duration::from_secs(5),
        "routed away after {away:?} (the benchmark reports the real timeline)"
    );
    for _ in 0..20 {
        assert_ne!(
            us.decide().await.0,
            "o1",
            "a decision went to the dead origin after the switch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. o1 returns: traffic comes back, and once back it stays (no flapping).
    origins[0].set_mode(origin_mode(0));
    let back = until_edge(us, Duration::from_secs(10), |o, _| o == "o1")
        .await
        .expect("traffic returns to o1");
    assert!(
        back >= Duration::from_millis(100),
        "returned after {back:?}: faster than two probes (rise 2)"
    );
    for _ in 0..30 {
        assert_eq!(us.decide().await.0, "o1", "flapped after returning");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. eu-west-1's leader is killed: its ranking keeps being published.
    let leader = redis_get(&redis.url(), "origin-router:{eu-west-1}:leader")
        .await
        .expect("eu-west-1 has a leader");
    let before = table
        .read_pool("web")
        .await
        .unwrap()
        .region("eu-west-1")
        .unwrap()
        .seq;
    let killed = origin_router::sample::unix_millis_now();
    drop(workers.remove(&leader));
    let started = Instant::now();
    loop {
        let doc = table
            .read_pool("web")
            .await
            .unwrap()
            .region("eu-west-1")
            .cloned()
            .unwrap();
        if doc.seq > before && doc.generated_at > killed + 3_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "eu-west-1 stopped publishing after its leader died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. ap-southeast-1's probers stop entirely: its edge falls back to the
    //    nearest other region's ranking (eu-west-1 is nearer than us-east-1).
    drop(workers.remove("ap-southeast-1-w1"));
    drop(workers.remove("ap-southeast-1-w2"));
    let ap = &edges[2];
    let fell_back = until_edge(ap, Duration::from_secs(15), |_, d| {
        d["RankingRegion"] == "eu-west-1"
    })
    .await;
    assert!(
        fell_back.is_some(),
        "ap-southeast-1 never used eu-west-1's ranking"
    );
    let (origin, _) = ap.decide().await;
    assert_eq!(origin, "o2", "eu-west-1's choice");

    // 6. The table server stops: edges answer from cache, then stale, then
    //    race; when it returns (empty, as moto does), table-driven decisions
    //    resume.
    let eu = &edges[1];
    until_edge(eu, Duration::from_secs(5), |_, d| d["Source"] == "cache")
        .await
        .expect("a cached decision");
    moto.stop();
    let mut seen = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let (_, d) = eu.decide().await;
        let source = d["Source"].as_str().unwrap().to_string();
        if seen.last() != Some(&source) {
            seen.push(source);
        }
        if seen.last().map(String::as_str) == Some("race") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first decision may land just past the cache TTL.
    assert!(
        seen == ["cache", "stale", "race"] || seen == ["stale", "race"],
        "sources while the table is down: {seen:?}"
    );
    moto.restart().await.unwrap();
    moto.rankings_table("us-east-1")
        .create_table()
        .await
        .unwrap();
    let resumed = until_edge(eu, Duration::from_secs(15), |_, d| {
        d["Source"] == "table" || d["Source"] == "cache"
    })
    .await;
    assert!(resumed.is_some(), "table-driven decisions never resumed");
}
