//! One invocation through the Lambda Runtime API: the edge binary against
//! an echo handler on the same local Runtime API, plus the edge's start-up
//! time to its first answer (one store read included) and its peak RSS.
//! `cargo bench -p edge --bench runtime_api`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::runtime_api::Function;
use serde_json::Value;

const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

async fn start(binary: &str, config: &std::path::Path) -> Function {
    let env = [
        ("ORIGIN_ROUTER_CONFIG", config.as_os_str()),
        ("AWS_REGION", "eu-west-1".as_ref()),
        ("RUST_LOG", "error".as_ref()),
    ];
    Function::start(std::path::Path::new(binary), env)
        .await
        .unwrap()
}

fn setup(dir: &std::path::Path) -> std::path::PathBuf {
    let store_dir = dir.join("store");
    let config = dir.join("origin-router.toml");
    std::fs::write(
        &config,
        format!(
            "[routing]\ndefault_pool = \"web\"\n[pools.web]\norigins = [{{ id = \"us\", host = \"origin-us.example.net\" }}, {{ id = \"eu\", host = \"origin-eu.example.net\" }}]\n[edge]\ncache_ttl = \"1h\"\nmax_stale = \"1h\"\nranking_max_age = \"1h\"\n[store]\nembedded_path = \"{}\"\n",
            store_dir.display()
        ),
    )
    .unwrap();
    let entry = |id: &str, ms: f64| RankedOrigin::measured(id, OriginState::Healthy, ms, 1);
    let doc = RankingDocument::new(
        "web",
        "eu-west-1",
        1,
        unix_millis_now(),
        vec![entry("eu", 5.0), entry("us", 70.0)],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(EmbeddedStore::new(&store_dir).write(&doc))
        .unwrap();
    config
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn invocation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let event: Value = serde_json::from_str(FIXTURE).unwrap();
    let edge = rt.block_on(start(env!("CARGO_BIN_EXE_edge"), &config));
    let echo = rt.block_on(start(env!("CARGO_BIN_EXE_echo-handler"), &config));
    let call = |f: &Function| {
        rt.block_on(f.api.invoke(&event, Duration::from_secs(5)))
            .expect("answer")
            .expect("no error")
    };
    for _ in 0..50 {
        call(&edge);
        call(&echo);
    }
    let mut group = c.benchmark_group("runtime api invocation");
    group.bench_function("edge", |b| b.iter(|| call(&edge)));
    group.bench_function("echo handler", |b| b.iter(|| call(&echo)));
    group.finish();

    // Percentiles, interleaved so machine noise hits both alike.
    let (mut e, mut o) = (Vec::new(), Vec::new());
    for _ in 0..3000 {
        let t = Instant::now();
        call(&edge);
        e.push(t.elapsed());
        let t = Instant::now();
        call(&echo);
        o.push(t.elapsed());
    }
    let (e50, e99) = percentiles(e);
    let (o50, o99) = percentiles(o);
    println!(
        "invocation p50/p99: edge {e50:?}/{e99:?}, echo {o50:?}/{o99:?}; edge/echo at p50 {:.3}",
        e50.as_secs_f64() / o50.as_secs_f64()
    );
    println!(
        "peak RSS after {} invocations: edge {} KiB, echo {} KiB",
        3000 + 50,
        peak_rss_kib(edge.pid()).unwrap_or(0),
        peak_rss_kib(echo.pid()).unwrap_or(0)
    );

    // Start-up: spawn to first answer, with the first store read.
    let mut starts = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let f = rt.block_on(start(env!("CARGO_BIN_EXE_edge"), &config));
        call(&f);
        starts.push(t.elapsed());
    }
    let (s50, s99) = percentiles(starts);
    println!("process start to first answer (one store read): p50 {s50:?}, max of 20 {s99:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = invocation
}
criterion_main!(benches);
