//! The edge's warm in-process path: parse the event bytes, decide from a
//! cached fresh ranking, serialize the rewritten request; under `fastest`
//! (the fixture's one URI) and under `band` (three origins in the band,
//! the key from 1024 different URIs with query strings, cycled), and
//! under `band` with one of the three origins ejected (passive ejection in
//! force: the decision chooses among the others).
//! `cargo bench -p edge --bench warm_path` (filter with `-- band`).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use edge::handler::Edge;
use edge::settings::EdgeSettings;
use origin_router::config::Config;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::MemoryStore;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/cloudfront/origin-request.json");

#[path = "../tests/common/racer.rs"]
#[allow(dead_code)]
mod racer;
use racer::ScriptedRacer;

/// The pool's steering: `fastest`, or a band that holds all three origins
/// (with none or one of them ejected).
#[derive(Clone, Copy, PartialEq)]
enum Steering {
    Fastest,
    Band,
    BandEjected,
}

const ALL: [Steering; 3] = [Steering::Fastest, Steering::Band, Steering::BandEjected];

fn build(rt: &tokio::runtime::Runtime, steering: Steering) -> (Edge, u64) {
    let band = if steering != Steering::Fastest {
        "[pools.web.steering]\npolicy = \"band\"\nband_absolute = \"200ms\"\n"
    } else {
        ""
    };
    let mut config = Config::from_toml(
        &format!(
            r#"
        [routing]
        default_pool = "web"
        [pools.web]
        origins = [
            {{ id = "us", host = "origin-us.example.net" }},
            {{ id = "eu", host = "origin-eu.example.net", max_share = 0.5 }},
            {{ id = "ap", host = "origin-ap.example.net" }},
        ]
        {band}
        "#
        ),
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
    // The warm path never races (checked once the cache is primed).
    let racer = ScriptedRacer::nobody();
    let router = EdgeSettings::new(&config, "eu-west-1").edge(store, racer.clone());
    if steering == Steering::BandEjected {
        // consecutive_5xx (5 by default) answers of 503 from `us`: ejected
        // for 30 s, longer than a run.
        for _ in 0..5 {
            router
                .router()
                .record_response("web", "us", 503, tokio::time::Instant::now());
        }
        assert_eq!(
            router.router().ejected("web", tokio::time::Instant::now()),
            ["us"],
            "ejected"
        );
    }
    // Prime the cache: the measured path does no I/O.
    rt.block_on(async {
        let event = serde_json::from_slice(FIXTURE).unwrap();
        edge::handler::handle(&router, event, now).await.unwrap();
    });
    assert_eq!(racer.races(), 0, "the warm path raced");
    (router, now)
}

/// The event texts one case cycles through: the fixture as it is under
/// `fastest`; 1024 URIs with query strings under `band`.
fn events(steering: Steering) -> Vec<String> {
    let fixture = std::str::from_utf8(FIXTURE).unwrap().to_string();
    match steering {
        Steering::Fastest => vec![fixture],
        Steering::Band | Steering::BandEjected => (0..1024)
            .map(|i| {
                fixture
                    .replace(
                        "\"uri\": \"/\"",
                        &format!("\"uri\": \"/static/app/{i}.js\""),
                    )
                    .replace("\"querystring\": \"\"", "\"querystring\": \"v=3&lang=en\"")
            })
            .collect(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn name(steering: Steering) -> &'static str {
    match steering {
        Steering::Fastest => "warm path: parse, decide from cache, serialize",
        Steering::Band => "warm path band: parse, key, steer from cache, serialize",
        Steering::BandEjected => {
            "warm path band, one origin ejected: parse, key, steer among the rest, serialize"
        }
    }
}

fn warm_path(c: &mut Criterion) {
    for steering in ALL {
        let rt = runtime();
        let (router, now) = build(&rt, steering);
        let events = events(steering);
        let mut next = events.iter().cycle();
        c.bench_function(name(steering), |b| {
            b.iter(|| {
                let text = std::hint::black_box(next.next().unwrap().as_str());
                rt.block_on(async {
                    let routed = edge::handler::handle_raw(&router, text, now).await.unwrap();
                    assert_eq!(routed.decision.source, edge::decision::Source::Cache);
                    serde_json::to_vec(&routed.request).unwrap()
                })
            })
        });
    }
}

/// Criterion reports means; the target is a p99, so time each iteration.
fn warm_path_percentiles(_: &mut Criterion) {
    for steering in ALL {
        // Honour a name filter (`cargo bench ... -- band`) here too.
        let filters: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        if !filters.iter().all(|f| name(steering).contains(f.as_str())) {
            continue;
        }
        let rt = runtime();
        let (router, now) = build(&rt, steering);
        let events = events(steering);
        let mut samples = Vec::with_capacity(100_000);
        let mut bands = std::collections::BTreeMap::new();
        for text in events.iter().cycle().take(100_000) {
            let t = std::time::Instant::now();
            let band = rt.block_on(async {
                let routed = edge::handler::handle_raw(&router, text, now).await.unwrap();
                std::hint::black_box(serde_json::to_vec(&routed.request).unwrap());
                (routed.decision.band, routed.decision.origin)
            });
            samples.push(t.elapsed());
            *bands.entry(band).or_insert(0u32) += 1;
        }
        let p = origin_router_tests::stats::Percentiles::new(samples);
        println!(
            "{} over 100000 iterations: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}; (band, origin): {:?}",
            name(steering),
            p.p50().unwrap_or_default(),
            p.p99().unwrap_or_default(),
            p.at(0.999).unwrap_or_default(),
            p.at(1.0).unwrap_or_default(),
            bands
        );
    }
}

/// Steering alone: the band of three (one capped) and a key, no parsing:
/// what `band` adds to a decision.
fn steer_only(c: &mut Criterion) {
    let rt = runtime();
    let (router, _) = build(&rt, Steering::Band);
    let pool = &router.router().pools()["web"];
    let usable: Vec<edge::steering::Ranked<'_>> = [("eu", 5.0), ("us", 70.0), ("ap", 150.0)]
        .iter()
        .map(|(id, score)| edge::steering::Ranked {
            origin: pool.origin(id).unwrap(),
            state: OriginState::Healthy,
            score: Some(*score),
        })
        .collect();
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("/static/app/{i}.js?v=3&lang=en"))
        .collect();
    let mut next = keys.iter().cycle();
    c.bench_function("band steering alone: band, water-fill, rendezvous", |b| {
        b.iter(|| {
            let key = std::hint::black_box(next.next().unwrap().as_str());
            edge::steering::steer(&pool.steering, &usable, key)
                .unwrap()
                .band
        })
    });
}

criterion_group!(benches, warm_path, warm_path_percentiles, steer_only);
criterion_main!(benches);
