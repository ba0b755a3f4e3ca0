//! `sim demo`: the whole system on one machine, offline.
//!
//! Four origins listen on 127.0.0.11-14; their answer time depends on which
//! loopback address asks, so 127.0.0.2, .3 and .4 stand in for three AWS
//! regions at different distances. One prober worker per region (the real
//! worker, solo leader, no Redis) publishes to an embedded store in a
//! temporary directory; one edge router per region (the real decision code,
//! with its cache) decides every 100 ms. Midway the origin that is fastest
//! from the first region fails (connections refused); the demo shows each
//! region moving away and how long it took, then restores it and shows the
//! traffic coming back after the rise threshold. A second pool steers by
//! a latency band over two near-equal origins ([`crate::band`]): the demo
//! shows how each region's misses spread over them. After the restore, the
//! origin the second region uses goes gray (health path fast, pages slow):
//! that region's edge, timing its real misses, leaves it while the probers
//! still rank it first ([`crate::demo_gray`]). Then one region's edge
//! ejects an origin that answers 503 on its own, before any prober could
//! tell ([`crate::demo_eject`]). While the origin is failed, the generated
//! CloudFront Function decides under Node on the same rankings, encoded as
//! KeyValueStore values, beside the Rust decision ([`crate::demo_function`]).
//! A live status page
//! (`prober dashboard`'s) over the same store shows it all in a browser.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use edge::decision::Source;
use edge::router::Router;
use origin_router::config::{Config, LatencyMode};
use origin_router::document::RankingDocument;
use origin_router::sample::unix_millis_now;
use origin_router::store::{EmbeddedStore, RankingStore};
use prober::dashboard::{Dashboard, Options};
use tokio::time::Instant;

use crate::band;
use crate::gray_bench::Container;
use crate::world::{self, Failure, OriginSpec, World, REGIONS};
use crate::SimError;

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Total run time; the failure starts at a third and ends at two thirds.
    #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u64).range(15..=600))]
    pub seconds: u64,
    /// Print each view below the previous one instead of redrawing.
    #[arg(long)]
    pub plain: bool,
}

/// Four origins, each nearest one region (or none).
const ORIGINS: [OriginSpec; 4] = [
    OriginSpec::new("virginia", 11, [8, 40, 110]),
    OriginSpec::new("ireland", 12, [40, 6, 85]).gray(),
    OriginSpec::new("singapore", 13, [110, 85, 7]),
    OriginSpec::new("oregon", 14, [35, 70, 80]),
];
const POOL: &str = "web";
/// How often the demo's status page reads the store.
const POLL: Duration = Duration::from_millis(500);
/// The region whose edge sees its origin go gray, and how long after the
/// restore that starts.
const GRAY_REGION: usize = 1;
const GRAY_AFTER_RESTORE: Duration = Duration::from_millis(500);

struct RegionView {
    region: &'static str,
    router: Router,
    last: Option<(String, Source, Vec<String>)>,
    away_after: Option<Duration>,
    back_after: Option<Duration>,
    sources: BTreeMap<&'static str, u64>,
    used_failed_origin: bool,
    band: band::Spread,
}

pub async fn run(args: DemoArgs) -> Result<(), SimError> {
    let total = Duration::from_secs(args.seconds);
    let fail_at = total / 3;
    let restore_at = total * 2 / 3;
    let dir = tempfile::Builder::new()
        .prefix("origin-router-demo")
        .tempdir()?;
    let store = EmbeddedStore::new(dir.path());
    let world = Arc::new(World::start(&ORIGINS, Some("virginia")).await?);
    let band_world = World::start(&band::ORIGINS, None).await?;

    let mut base = Config::default();
    // The edge times its misses and demotes an origin they find slow.
    let mut pool = world.pool().clone();
    pool.outlier.latency = LatencyMode::Demote;
    base.pools.insert(POOL.into(), pool);
    base.routing.default_pool = Some(POOL.into());
    base.pools
        .insert(band::POOL.into(), band::pool(&band_world));
    base.prober.interval = Duration::from_secs(1);
    base.prober.connect_timeout = Duration::from_millis(500);
    base.prober.response_timeout = Duration::from_millis(1000);
    base.prober.jitter = Duration::from_millis(100);
    base.prober.fast_interval = Duration::from_millis(200);
    base.prober.lease_ttl = Duration::from_secs(5);
    base.prober.metrics_listen = None;
    base.edge.cache_ttl = Duration::from_millis(500);
    base.edge.ranking_max_age = Duration::from_secs(10);
    base.store.embedded_path = dir.path().to_path_buf();
    let base = base.validate().map_err(|p| format!("demo config: {p:?}"))?;

    // The status page over the demo's store: the preferred port if free.
    let dashboard = start_dashboard(&base, dir.path()).await?;

    // One prober worker and one edge router per region.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut views = Vec::new();
    let mut containers = Vec::new();
    for region in REGIONS {
        let mut stop = stop_rx.clone();
        workers.push(world::spawn_worker(&base, region, "demo", async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        // One edge container per region: the handler for the gray part's
        // misses, its router for the view's decisions.
        let container = Container::new(world::edge(
            &base,
            region,
            Arc::new(EmbeddedStore::new(dir.path())),
        )?);
        views.push(RegionView {
            region: region.name,
            router: container.edge().router().clone(),
            last: None,
            away_after: None,
            back_after: None,
            sources: BTreeMap::new(),
            used_failed_origin: false,
            band: band::Spread::default(),
        });
        containers.push(container);
    }

    // The origin to fail: the fastest from the first region.
    let failed = ORIGINS
        .iter()
        .min_by_key(|o| o.latency_ms[0])
        .map(|o| o.id)
        .unwrap_or("virginia");
    // The origin to go gray: the fastest from the gray part's region.
    let gray = ORIGINS
        .iter()
        .filter(|o| o.gray)
        .min_by_key(|o| o.latency_ms[GRAY_REGION])
        .map(|o| o.id)
        .unwrap_or("ireland");
    let gray_at = restore_at + GRAY_AFTER_RESTORE;
    let mut gray_part = None;
    let redraw = !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!(
        "Origin Router demo: {} regions, {} origins, embedded store at {}",
        REGIONS.len(),
        ORIGINS.len(),
        dir.path().display()
    );
    println!(
        "Live status page: {} (open it to watch the failover)",
        dashboard.url()
    );
    println!(
        "{failed} fails at {}s and returns at {}s; {gray}'s pages slow down at {:.1}s \
         (its health path stays fast); the demo ends at {}s.\n",
        fail_at.as_secs(),
        restore_at.as_secs(),
        gray_at.as_secs_f64(),
        total.as_secs()
    );

    let start = Instant::now();
    // The CloudFront Function edge on the same rankings, beside the loop,
    // until the restore.
    let function_part = tokio::spawn(crate::demo_function::run(
        base.clone(),
        Arc::new(EmbeddedStore::new(dir.path())),
        POOL,
        failed,
        start,
        fail_at,
        restore_at,
    ));
    let mut phase = 0; // 0 before the failure, 1 during, 2 after
    let mut next_view = start;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while start.elapsed() < total {
        tick.tick().await;
        let t = start.elapsed();
        if phase == 0 && t >= fail_at {
            world.fail(failed, Failure::Refused);
            phase = 1;
            for v in &mut views {
                v.used_failed_origin = v.last.as_ref().is_some_and(|(o, _, _)| o == failed);
            }
        } else if phase == 1 && t >= restore_at {
            world.restore(failed);
            phase = 2;
        }
        if phase == 2 && t >= gray_at && gray_part.is_none() {
            let store: Arc<dyn RankingStore> = Arc::new(EmbeddedStore::new(dir.path()));
            gray_part = Some(tokio::spawn(crate::demo_gray::run(
                containers[GRAY_REGION].clone(),
                REGIONS[GRAY_REGION],
                world.clone(),
                store,
                POOL,
                gray,
            )));
        }
        let now = unix_millis_now();
        for v in &mut views {
            let d = v.router.decide(POOL, now).await;
            *v.sources.entry(d.source.as_str()).or_default() += 1;
            if phase == 1 && v.used_failed_origin && v.away_after.is_none() && d.origin != failed {
                v.away_after = Some(t - fail_at);
            }
            if phase == 2 && v.used_failed_origin && v.back_after.is_none() && d.origin == failed {
                v.back_after = Some(t - restore_at);
            }
            v.last = Some((d.origin, d.source, d.ejected));
            v.band.misses(&v.router, now).await;
        }
        if Instant::now() >= next_view {
            next_view += Duration::from_secs(1);
            let rankings = store.read_pool(POOL).await?;
            let label = match phase {
                0 => "steady".to_string(),
                1 => "origin failed".to_string(),
                _ if gray_part.is_some() => format!("origin restored; {gray} gray"),
                _ => "origin restored".to_string(),
            };
            render(&views, &rankings.rankings, t, &label, failed, redraw);
        }
    }

    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    // Ended at the restore: the loop went on past it.
    for line in function_part.await?? {
        println!("{line}");
    }
    let lines = match gray_part {
        Some(part) => Some(part.await),
        None => None,
    };
    world.restore(gray);
    match lines {
        Some(lines) => {
            for line in lines?? {
                println!("{line}");
            }
        }
        None => println!("\n(The demo ended before {gray} went gray.)"),
    }
    crate::demo_eject::show(&views[0].router, views[0].region, &world, POOL).await?;
    println!(
        "\nSummary ({failed} failed at {}s, restored at {}s):",
        fail_at.as_secs(),
        restore_at.as_secs()
    );
    for v in &views {
        let moves = if !v.used_failed_origin {
            "was not using it".to_string()
        } else {
            format!(
                "moved away after {}, came back {} after it returned",
                v.away_after
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "never".into()),
                v.back_after
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "never".into()),
            )
        };
        let sources: Vec<String> = v.sources.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!(
            "  {:<15} {moves}; decisions: {}",
            v.region,
            sources.join(", ")
        );
    }
    println!(
        "\nPool {} (band steering by URI over two near-equal origins), misses per region:",
        band::POOL
    );
    for v in &views {
        println!("  {:<15} band: {}", v.region, v.band.summary());
    }
    println!(
        "\nEach part for real:\n  \
         prober check-config examples/origin-router.toml   validate a config\n  \
         prober run --config examples/origin-router.toml   a regional worker (add store.redis_url for several per region)\n  \
         prober rankings --config examples/origin-router.toml   what the edge reads, per region with its age\n  \
         edge (bootstrap) with ORIGIN_ROUTER_CONFIG=...     the CloudFront origin-request and origin-response handler (see deploy/README.md)"
    );
    Ok(())
}

/// The dashboard on 127.0.0.1:9465, or any free loopback port if that one
/// is taken (a second demo, a running `prober dashboard`).
async fn start_dashboard(base: &Config, store: &std::path::Path) -> Result<Dashboard, SimError> {
    let store: Arc<dyn RankingStore> = Arc::new(EmbeddedStore::new(store));
    let mut last = None;
    for port in [9465, 0] {
        let mut options = Options::from_config(base, ([127, 0, 0, 1], port).into(), POLL);
        options.store_label = format!("demo {}", options.store_label);
        match Dashboard::start(store.clone(), options).await {
            Ok(d) => return Ok(d),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(SimError::from)
        .unwrap_or_else(|| "no dashboard".into()))
}

fn render(
    views: &[RegionView],
    rankings: &[RankingDocument],
    t: Duration,
    label: &str,
    failed: &str,
    redraw: bool,
) {
    let mut out = String::new();
    if redraw {
        out.push_str("\x1b[H\x1b[J");
    }
    out.push_str(&format!(
        "t={:>5.1}s  [{label}]  (the origin to fail: {failed})\n",
        t.as_secs_f64()
    ));
    for v in views {
        let doc = rankings.iter().find(|d| d.region == v.region);
        let order = doc
            .map(prober::worker::summary)
            .unwrap_or_else(|| "(no ranking yet)".into());
        let (origin, source, left_out) = v
            .last
            .as_ref()
            .map(|(o, s, e)| (o.as_str(), s.as_str(), e.join(", ")))
            .unwrap_or(("-", "-", String::new()));
        let left_out = if left_out.is_empty() {
            String::new()
        } else {
            format!(", left out here: {left_out}")
        };
        out.push_str(&format!(
            "  {:<15} edge -> {:<10} ({source}{left_out})\n",
            v.region, origin
        ));
        out.push_str(&format!("  {:<15} ranking: {order}\n", ""));
        out.push_str(&format!(
            "  {:<15} {} misses: {}\n",
            "",
            band::POOL,
            v.band.summary()
        ));
    }
    print!("{out}");
}
