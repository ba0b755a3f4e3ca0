//! `sim bench-failover`: the failover timeline, measured.
//!
//! Three simulated regions (probers bound to 127.0.0.2-4, one solo worker
//! each, the real worker run as `prober run` runs it) publish to an
//! embedded store; one edge router per region (the real decision code,
//! default cache settings) decides every 10 ms, each decision standing for
//! one request. Origin `fast` (HTTPS, so a certificate can go bad) answers
//! in 5 ms from everywhere, so every edge uses it; each trial fails it in
//! one of the classes of [`Failure`] (refused, hang, blackhole, http_5xx,
//! reset, tls, slow) at a random point of the probe round and records,
//! per region, when the first probe failed (from the worker's own log
//! events, [`crate::observe`]), when the ranking marked it down (the
//! ranking's `generated_at`), when that ranking was in the store (polled
//! every 5 ms), and when the edge stopped choosing it. The timeline
//! reported is when the *last* region reached each stage, and the requests
//! the edges still sent to `fast` after it failed. Then `fast` is restored
//! and the next trial waits until every edge uses it again.
//!
//! `--fixed-budgets` runs the same trials with `prober.adaptive_budget =
//! false`, `ranking.step_factor = 0` and `prober.fast_interval = 250ms`:
//! the prober as it was before adaptive budgets, defaults included, for a
//! before/after comparison.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use origin_router::config::Config;
use origin_router::document::{OriginState, RankingDocument};
use origin_router::sample::{unix_millis_now, UnixMillis};
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::stats::Percentiles;
use rand::Rng;

use crate::observe::ProbeFailures;
use crate::world::{self, Failure, OriginSpec, World, REGIONS};
use crate::SimError;

/// Options of the failover benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Fail-and-restore trials per failure class.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub trials: u64,
    /// Failure classes to inject, comma-separated. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub failure: Vec<Failure>,
    /// Fixed probe budgets and no latency-step following (the prober
    /// before adaptive budgets).
    #[arg(long)]
    pub fixed_budgets: bool,
}

const VICTIM: &str = "fast";

const ORIGINS: [OriginSpec; 4] = [
    OriginSpec::new(VICTIM, 11, [5, 5, 5]).https(),
    OriginSpec::new("virginia", 12, [20, 60, 120]),
    OriginSpec::new("ireland", 13, [60, 20, 90]),
    OriginSpec::new("singapore", 14, [120, 90, 20]),
];

/// Runs the bench; `failures` must be installed in the global subscriber
/// (the `sim` binary does so), or no trial can see its first failed probe.
pub async fn run(args: FailoverArgs, failures: ProbeFailures) -> Result<(), SimError> {
    let dir = tempfile::Builder::new()
        .prefix("origin-router-failover")
        .tempdir()?;
    let world = World::start(&ORIGINS, Some("virginia")).await?;
    // Default settings throughout, except what a loopback simulation needs.
    let mut base = Config::default();
    base.pools.insert("web".into(), world.pool().clone());
    base.prober.metrics_listen = None;
    base.store.embedded_path = dir.path().to_path_buf();
    if args.fixed_budgets {
        base.prober.adaptive_budget = false;
        base.ranking.step_factor = 0.0;
        base.prober.fast_interval = Duration::from_millis(250);
    }
    let base = base.validate().map_err(|p| format!("config: {p:?}"))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut routers = Vec::new();
    for region in REGIONS {
        let mut stop = stop_rx.clone();
        workers.push(world::spawn_worker(&base, region, "bench", async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        routers.push((region.name, world::router(&base, region, dir.path())?));
    }
    // Every ranking that reaches the store: (first seen, document).
    let seen: Arc<Mutex<Vec<(UnixMillis, RankingDocument)>>> = Arc::default();
    let watcher = {
        let (seen, store) = (seen.clone(), EmbeddedStore::new(dir.path()));
        tokio::spawn(async move {
            let mut last: HashMap<String, u64> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                let Ok(read) = store.read_pool("web").await else {
                    continue;
                };
                let now = unix_millis_now();
                for doc in read.rankings {
                    if last.insert(doc.region.clone(), doc.seq) != Some(doc.seq) {
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((now, doc));
                    }
                }
            }
        })
    };
    // Edge decisions every 10 ms: the latest choice per region.
    let choices: Arc<Mutex<HashMap<&'static str, (String, UnixMillis)>>> = Arc::default();
    let record = choices.clone();
    // Decisions (requests) that chose the victim, all regions.
    let victim_requests = Arc::new(AtomicU64::new(0));
    let count = victim_requests.clone();
    let edges = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            for (region, router) in &routers {
                let d = router.decide("web", unix_millis_now()).await;
                if d.origin == VICTIM {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                let mut c = record.lock().unwrap_or_else(|p| p.into_inner());
                let changed = c.get(region).is_none_or(|(o, _)| *o != d.origin);
                if changed {
                    c.insert(region, (d.origin, unix_millis_now()));
                }
            }
        }
    });

    let classes = if args.failure.is_empty() {
        Failure::ALL.to_vec()
    } else {
        args.failure.clone()
    };
    println!(
        "failover timeline: {} trials per class, 3 regions, 100 requests/s per region, {} (interval {:?}, fast_interval {:?}, fall {}, budget_floor {:?}, response_timeout {:?}, edge cache_ttl {:?})",
        args.trials,
        if args.fixed_budgets { "fixed budgets" } else { "default settings" },
        base.prober.interval,
        base.prober.fast_interval,
        base.prober.fall,
        base.prober.budget_floor,
        base.prober.response_timeout,
        base.edge.cache_ttl
    );
    let all_on = |origin: &str| {
        let c = choices.lock().unwrap_or_else(|p| p.into_inner());
        REGIONS
            .iter()
            .all(|r| c.get(r.name).is_some_and(|(o, _)| o == origin))
    };
    let mut summary = Vec::new();
    for failure in classes {
        println!("\n{}:", failure.name());
        let mut stages: [Vec<u64>; 4] = Default::default();
        let mut misrouted = Vec::new();
        for trial in 0..args.trials {
            let wait = tokio::time::Instant::now() + Duration::from_secs(60);
            while !all_on(VICTIM) {
                if tokio::time::Instant::now() > wait {
                    return Err(format!(
                        "{} trial {trial}: the edges never all chose `{VICTIM}`",
                        failure.name()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Fail it at a random point of the probe round.
            let phase = rand::rng().random_range(0..base.prober.interval.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(phase)).await;
            failures.clear();
            let t0 = unix_millis_now();
            let before = victim_requests.load(Ordering::Relaxed);
            world.fail(VICTIM, failure);
            let wait = tokio::time::Instant::now() + Duration::from_secs(60);
            let switched = loop {
                let done = {
                    let c = choices.lock().unwrap_or_else(|p| p.into_inner());
                    REGIONS
                        .iter()
                        .map(|r| {
                            c.get(r.name)
                                .filter(|(o, at)| o != VICTIM && *at >= t0)
                                .map(|(_, at)| *at)
                        })
                        .collect::<Option<Vec<_>>>()
                };
                if let Some(times) = done {
                    break times.into_iter().max().unwrap_or(t0);
                }
                if tokio::time::Instant::now() > wait {
                    return Err(format!(
                        "{} trial {trial}: some edge never moved away",
                        failure.name()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let after = victim_requests.load(Ordering::Relaxed) - before;
            let per_region = |f: &dyn Fn(&str) -> Option<u64>| {
                REGIONS
                    .iter()
                    .map(|r| f(r.name))
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|v| v.into_iter().max())
            };
            let first_fail = per_region(&|r| failures.first(r, t0));
            let (state, published) = {
                let w = seen.lock().unwrap_or_else(|p| p.into_inner());
                let marks = |r: &str| {
                    w.iter()
                        .filter(|(_, d)| d.region == r && d.generated_at >= t0)
                        .find(|(_, d)| {
                            d.entry(VICTIM)
                                .is_some_and(|e| e.state == OriginState::Down)
                                || d.top().is_some_and(|t| t.id != VICTIM)
                        })
                        .map(|(written, d)| (d.generated_at, *written))
                };
                (
                    per_region(&|r| marks(r).map(|m| m.0)),
                    per_region(&|r| marks(r).map(|m| m.1)),
                )
            };
            let (Some(state), Some(published)) = (state, published) else {
                return Err(
                    format!("{} trial {trial}: a stage was not observed", failure.name()).into(),
                );
            };
            // A slow origin has no failed probe (unless one ran past its
            // budget): that stage is then left out.
            let first_fail = first_fail.map(|f| f.saturating_sub(t0));
            let row = [state - t0, published - t0, switched - t0];
            println!(
                "  trial {:>2}: first failed probe {:>5} ms, left the top {:>5} ms, published {:>5} ms, every edge switched {:>5} ms, requests to it after the failure {:>4}",
                trial + 1,
                first_fail.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                row[0],
                row[1],
                row[2],
                after
            );
            if let Some(f) = first_fail {
                stages[0].push(f);
            }
            for (stage, v) in stages[1..].iter_mut().zip(row) {
                stage.push(v);
            }
            misrouted.push(after);
            world.restore(VICTIM);
        }
        println!("  stage (ms after the failure)   p50     p99     max");
        for (name, v) in [
            "first failed probe",
            "left the top",
            "ranking published",
            "every edge switched",
        ]
        .iter()
        .zip(&stages)
        {
            let p = Percentiles::new(v.clone());
            println!(
                "  {name:<28} {:>7} {:>7} {:>7}",
                p.p50().map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                p.p99().map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                p.max().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
            );
        }
        let p = Percentiles::new(misrouted.clone());
        println!(
            "  {:<28} {:>7} {:>7} {:>7}",
            "requests to it after failure",
            p.p50().unwrap_or(0),
            p.p99().unwrap_or(0),
            p.max().unwrap_or(0)
        );
        summary.push((failure, Percentiles::new(stages[3].clone()), p));
    }
    println!("\nclass       switched p50  p99   max (ms)   requests after failure p50  p99  max");
    for (failure, switched, requests) in &summary {
        println!(
            "{:<11} {:>12} {:>5} {:>5}            {:>26} {:>4} {:>4}",
            failure.name(),
            switched.p50().unwrap_or(0),
            switched.p99().unwrap_or(0),
            switched.max().unwrap_or(0),
            requests.p50().unwrap_or(0),
            requests.p99().unwrap_or(0),
            requests.max().unwrap_or(0)
        );
    }
    let _ = stop_tx.send(true);
    edges.abort();
    watcher.abort();
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
