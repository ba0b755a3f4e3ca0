//! `prober bench`: how many probes per second this worker sustains on this
//! machine, how far its first-byte times are from the origins' known delays,
//! and its peak memory. Everything runs on loopback: local origins answer
//! after a fixed delay, the worker's real round machinery (spawned probes,
//! concurrency limit, jitter, metrics) probes `--origins` configured origins
//! at `--rate` probes per second, a new connection per probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::probe::{ProbeEngine, ProbeSettings};
use origin_router::sample::Outcome;
use origin_router_tests::{loopback, Mode, TestOrigin};
use tokio::time::Instant;

use crate::cli::CliError;
use crate::round::{self, RoundSettings, Rounds};

/// Options of the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Origins configured (spread over `--servers` local servers).
    #[arg(long, default_value_t = 1000)]
    pub origins: usize,
    /// Target probes per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Measured time.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Local origin servers (on 127.0.0.11, .12, ...).
    #[arg(long, default_value_t = 4)]
    pub servers: u8,
    /// Answer delay of every origin, ms.
    #[arg(long, default_value_t = 5)]
    pub delay_ms: u64,
    /// Probes in flight at most.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.origins == 0 || args.servers == 0 || args.seconds == 0 {
        return Err("--origins, --servers and --seconds must be above 0".into());
    }
    let delay = Duration::from_millis(args.delay_ms);
    let mut servers = Vec::new();
    for i in 0..args.servers {
        servers.push(
            TestOrigin::start(SocketAddr::new(loopback(11 + i), 0), Mode::Delay(delay)).await?,
        );
    }
    let mut config = Config::default();
    let origins: Vec<OriginConfig> = (0..args.origins)
        .map(|i| {
            let s = &servers[i % servers.len()];
            OriginConfig::http(&format!("o{i}"), &s.addr().ip().to_string(), s.port())
        })
        .collect();
    config.pools.insert(
        "bench".into(),
        PoolConfig {
            default_origin: None,
            origins,
        },
    );
    // One round covers every origin; rounds repeat to reach the rate.
    let round_every = if args.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(args.origins as f64 / args.rate as f64)
    };
    let settings = RoundSettings {
        concurrency: args.concurrency,
        // Spread each round's probes over the whole round, as an operator
        // with many origins sets `prober.jitter` close to the interval.
        jitter: round_every,
        fast_interval: Duration::from_millis(250),
        rise: 1,
        fall: 1,
    };
    let probe_settings = ProbeSettings {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        total_timeout: None,
        source_address: None,
        max_body: 1024,
    };
    let engine = Arc::new(ProbeEngine::from_config(&config, probe_settings)?);
    let rounds = Rounds::new(engine, round::targets(&config), settings, "bench", "bench");
    let _ = crate::metrics::recorder();

    println!(
        "bench: {} origins on {} local servers, delay {} ms, target {} probes/s, {} s, concurrency {}",
        args.origins,
        args.servers,
        args.delay_ms,
        if args.rate == 0 { "max".to_string() } else { args.rate.to_string() },
        args.seconds,
        args.concurrency
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    let mut next = start;
    while Instant::now() < end {
        let r = rounds.clone();
        tasks.spawn(async move { r.run().await });
        if round_every.is_zero() {
            // As fast as possible: keep at most two rounds going.
            if tasks.len() >= 2 {
                if let Some(r) = tasks.join_next().await {
                    results.push(r?);
                }
            }
        } else {
            next += round_every;
            tokio::time::sleep_until(next).await;
        }
    }
    while let Some(r) = tasks.join_next().await {
        results.push(r?);
    }
    let elapsed = start.elapsed();
    let samples: Vec<_> = results.iter().flat_map(|r| r.samples.iter()).collect();
    let skipped: usize = results.iter().map(|r| r.skipped_in_flight).sum();
    let mut errors_us: Vec<u64> = samples
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Ok(t) => Some(t.first_byte.saturating_sub(delay).as_micros() as u64),
            Outcome::Failed(_) => None,
        })
        .collect();
    let failed = samples.len() - errors_us.len();
    errors_us.sort_unstable();
    let pct = |p: f64| {
        errors_us
            .get(((errors_us.len() as f64 * p) as usize).min(errors_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let mut failures = std::collections::BTreeMap::new();
    for s in &samples {
        if let Some(c) = s.outcome.failure_class() {
            *failures.entry(c.to_string()).or_insert(0u64) += 1;
        }
    }
    println!(
        "probes:            {} in {:.2} s",
        samples.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "probes/s:          {:.0}",
        samples.len() as f64 / elapsed.as_secs_f64()
    );
    println!("failed:            {failed} {failures:?}");
    println!("skipped in flight: {skipped}");
    println!(
        "timing error (first byte - delay): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(0.50),
        pct(0.99),
        errors_us.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "peak RSS:          {}",
        peak_rss()
            .map(|kb| format!("{:.1} MiB", kb as f64 / 1024.0))
            .unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
