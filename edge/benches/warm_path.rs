//! The edge's warm in-process path: parse the event bytes, decide from a
//! cached fresh ranking, serialize the rewritten request.
//! `cargo bench -p edge --bench warm_path`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use edge::decision::Router;
use edge::race::{RaceOutcome, Racer};
use origin_router::config::{Config, OriginConfig};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::MemoryStore;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/cloudfront/origin-request.json");

struct NoRace;

#[async_trait]
impl Racer for NoRace {
    async fn race(&self, _: &[&OriginConfig], _: Duration) -> RaceOutcome {
        unreachable!("the warm path never races")
    }
}

fn build(rt: &tokio::runtime::Runtime) -> (Router, u64) {
    let mut config = Config::from_toml(
        r#"
        [routing]
        default_pool = "web"
        [pools.web]
        origins = [
            { id = "us", host = "origin-us.example.net" },
            { id = "eu", host = "origin-eu.example.net" },
            { id = "ap", host = "origin-ap.example.net" },
        ]
        "#,
        "bench.toml",
    )
    .unwrap();
    config.edge.cache_ttl = Duration::from_secs(3600);
    config.edge.max_stale = Duration::from_secs(3600);
    let store = Arc::new(MemoryStore::new());
    let entry = |id: &str, ms: f64| RankedOrigin::measured(id, OriginState::Healthy, ms, 3);
    let now = unix_millis_now();
    store.put(RankingDocument::new(
        "web",
        "eu-west-1",
        1,
        now,
        vec![entry("eu", 5.0), entry("us", 70.0), entry("ap", 150.0)],
    ));
    let router = Router::new(Arc::new(config), "eu-west-1", store, Arc::new(NoRace));
    // Prime the cache: the measured path does no I/O.
    rt.block_on(async {
        let event = serde_json::from_slice(FIXTURE).unwrap();
        edge::handler::handle(&router, event, now).await.unwrap();
    });
    (router, now)
}

fn warm_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (router, now) = build(&rt);
    c.bench_function("warm path: parse, decide from cache, serialize", |b| {
        b.iter(|| {
            rt.block_on(async {
                let text = std::str::from_utf8(std::hint::black_box(FIXTURE)).unwrap();
                let routed = edge::handler::handle_raw(&router, text, now).await.unwrap();
                assert_eq!(routed.decision.source, edge::decision::Source::Cache);
                serde_json::to_vec(&routed.request).unwrap()
            })
        })
    });
}

/// Criterion reports means; the target is a p99, so time each iteration.
fn warm_path_percentiles(_: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (router, now) = build(&rt);
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = std::time::Instant::now();
        rt.block_on(async {
            let text = std::str::from_utf8(std::hint::black_box(FIXTURE)).unwrap();
            let routed = edge::handler::handle_raw(&router, text, now).await.unwrap();
            std::hint::black_box(serde_json::to_vec(&routed.request).unwrap());
        });
        samples.push(t.elapsed());
    }
    let p = origin_router_tests::stats::Percentiles::new(samples);
    println!(
        "warm path over 100000 iterations: p50 {:?}, p99 {:?}, p99.9 {:?}",
        p.p50().unwrap_or_default(),
        p.p99().unwrap_or_default(),
        p.at(0.999).unwrap_or_default()
    );
}

criterion_group!(benches, warm_path, warm_path_percentiles);
criterion_main!(benches);
