//! `prober bench`: how many probes per second this worker sustains on this
//! machine, how far its first-byte times are from the origins' known delays,
//! and its peak memory. Everything runs on loopback: local origins answer
//! after a fixed delay, the worker's real round machinery (spawned probes,
//! concurrency limit, jitter, metrics) probes `--origins` configured origins
//! at `--rate` probes per second, a new connection per probe.
//!
//! The origins run on a thread and runtime of their own, as if on another
//! host: their tasks never wait in the prober's run queues, so what is
//! measured is the prober. For the run, the bench asks the kernel to keep
//! idle CPUs out of deep sleep (`/dev/cpu_dma_latency` = 0), the usual setup
//! of latency benchmarks such as cyclictest: waking a sleeping virtual CPU
//! takes a millisecond or more, which would time the machine, not the
//! prober. `--no-latency-hold` measures without it.

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
    /// Leave the CPUs' idle states as they are.
    #[arg(long)]
    pub no_latency_hold: bool,
    /// Run the origins' thread at normal priority, competing with the
    /// prober, rather than at real-time priority.
    #[arg(long)]
    pub origins_normal_priority: bool,
}

/// Local origins served by a thread and runtime of their own.
struct OriginHost {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginHost {
    fn start(servers: u8, delay: Duration, realtime: bool) -> Result<OriginHost, CliError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-origins".into())
            .spawn(move || {
                if realtime {
                    realtime_priority();
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut origins = Vec::new();
                    for i in 0..servers {
                        let addr = SocketAddr::new(loopback(11 + i), 0);
                        match TestOrigin::start(addr, Mode::Delay(delay)).await {
                            Ok(o) => origins.push(o),
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    let _ = ready_tx.send(Ok(origins.iter().map(|o| o.addr()).collect()));
                    let _ = stopped.await;
                });
            })?;
        let addrs = ready_rx
            .recv()
            .map_err(|_| CliError::from("the origin thread ended before starting"))??;
        Ok(OriginHost {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for OriginHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs the calling thread (the origins') at real-time priority, when
/// allowed: the origins are the reference the prober is measured against,
/// so when their answer is due they go first, as a separate host would.
fn realtime_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        println!(
            "bench: origins at normal priority ({})",
            std::io::Error::last_os_error()
        );
    }
}

/// Holds `/dev/cpu_dma_latency` at 0 while alive (the kernel drops the
/// request when the file closes).
struct LatencyHold(#[allow(dead_code)] std::fs::File);

impl LatencyHold {
    fn acquire() -> Result<LatencyHold, std::io::Error> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")?;
        file.write_all(&0i32.to_ne_bytes())?;
        Ok(LatencyHold(file))
    }
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.origins == 0 || args.servers == 0 || args.seconds == 0 {
        return Err("--origins, --servers and --seconds must be above 0".into());
    }
    let delay = Duration::from_millis(args.delay_ms);
    let host = OriginHost::start(args.servers, delay, !args.origins_normal_priority)?;
    let servers = &host.addrs;
    let hold = if args.no_latency_hold {
        None
    } else {
        match LatencyHold::acquire() {
            Ok(hold) => Some(hold),
            Err(e) => {
                println!("bench: CPU idle states left as they are (/dev/cpu_dma_latency: {e})");
                None
            }
        }
    };
    let mut config = Config::default();
    let origins: Vec<OriginConfig> = (0..args.origins)
        .map(|i| {
            let s = servers[i % servers.len()];
            OriginConfig::http(&format!("o{i}"), &s.ip().to_string(), s.port())
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
        "bench: {} origins on {} local servers ({} priority), delay {} ms, target {} probes/s, {} s, concurrency {}, idle states {}",
        args.origins,
        args.servers,
        if args.origins_normal_priority { "normal" } else { "real-time" },
        args.delay_ms,
        if args.rate == 0 { "max".to_string() } else { args.rate.to_string() },
        args.seconds,
        args.concurrency,
        if hold.is_some() { "held shallow" } else { "as they are" },
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
