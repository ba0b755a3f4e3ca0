//! `sim bench`: how many probes per second this worker sustains on this
//! machine, how far its first-byte times are from the origins' known delays,
//! and its peak memory. Everything runs on loopback: local origins answer
//! after a fixed delay, the worker's real round machinery (spawned probes,
//! concurrency limit, jitter, metrics) probes `--origins` configured origins
//! at `--rate` probes per second, a new connection per probe.
//!
//! The origins run on threads and a runtime of their own, as if on another
//! host: their tasks never wait in the prober's run queues. By default they
//! are two threads at real-time priority, so they answer on time and the
//! timing error is the prober's, not theirs; `--throughput` gives them one
//! thread at normal priority instead, which leaves the prober the most of
//! the two CPUs. The prober's own CPU time per probe is reported apart from
//! the origins'. For the run, the bench asks the kernel to keep
//! idle CPUs out of deep sleep (`/dev/cpu_dma_latency` = 0), the usual setup
//! of latency benchmarks such as cyclictest: waking a sleeping virtual CPU
//! takes a millisecond or more, which would time the machine, not the
//! prober. `--no-latency-hold` measures without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::probe::{resolve, ProbeEngine, ProbeSettings};
use origin_router::sample::Outcome;
use origin_router_tests::stats::Percentiles;
use origin_router_tests::{loopback, Mode, TestOrigin};
use prober::pacing::PacingSettings;
use prober::round::{self, RoundSettings, Rounds};
use tokio::time::Instant;

use crate::SimError;

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
    /// Throughput run: the origins get one thread at normal priority,
    /// leaving the prober the most CPU, rather than two real-time threads
    /// that answer on time (the reference for the timing error).
    #[arg(long)]
    pub throughput: bool,
}

/// Local origins served by a thread and runtime of their own.
struct OriginHost {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginHost {
    fn start(servers: u8, delay: Duration, realtime: bool) -> Result<OriginHost, SimError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-origins".into())
            .spawn(move || {
                let mut builder = if realtime {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(2)
                        .thread_name("bench-origins")
                        .on_thread_start(realtime_priority);
                    b
                } else {
                    tokio::runtime::Builder::new_current_thread()
                };
                let runtime = match builder.enable_all().build() {
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
            .map_err(|_| SimError::from("the origin thread ended before starting"))??;
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
#[allow(unsafe_code)] // sched_setscheduler: neither std nor nix wraps it.
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

pub async fn run(args: BenchArgs) -> Result<(), SimError> {
    if args.origins == 0 || args.servers == 0 || args.seconds == 0 {
        return Err("--origins, --servers and --seconds must be above 0".into());
    }
    let delay = Duration::from_millis(args.delay_ms);
    let host = OriginHost::start(args.servers, delay, !args.throughput)?;
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
            ..Default::default()
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
        pacing: PacingSettings {
            // Fixed budgets: this bench measures the probe engine's cost.
            adaptive: false,
            floor: Duration::from_millis(150),
            ceiling: Duration::from_secs(2),
            fast_interval: Duration::from_millis(250),
            rise: 1,
            fall: 1,
            step_factor: 0.0,
        },
    };
    let probe_settings = ProbeSettings {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        total_timeout: None,
        source_address: None,
        max_body: 1024,
    };
    let engine = Arc::new(ProbeEngine::new(
        probe_settings,
        resolve::with_overrides(&config.resolve),
        config.origins(),
    )?);
    let rounds = Rounds::new(engine, round::targets(&config), settings, "bench", "bench");
    let _ = prober::metrics::recorder();

    println!(
        "bench: {} origins on {} local servers ({}), delay {} ms, target {} probes/s, {} s, concurrency {}, idle states {}",
        args.origins,
        args.servers,
        if args.throughput { "one thread, normal priority" } else { "two real-time threads" },
        args.delay_ms,
        if args.rate == 0 { "max".to_string() } else { args.rate.to_string() },
        args.seconds,
        args.concurrency,
        if hold.is_some() { "held shallow" } else { "as they are" },
    );
    let cpu_before = thread_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    // Each round's samples are folded in as the round ends, so the bench
    // holds one number per probe, not the samples: the RSS is the worker's.
    let mut tally = Tally::default();
    let mut next = start;
    while Instant::now() < end {
        let r = rounds.clone();
        tasks.spawn(async move { r.run().await });
        if round_every.is_zero() {
            // As fast as possible: keep at most two rounds going.
            if tasks.len() >= 2 {
                if let Some(r) = tasks.join_next().await {
                    tally.add(r?, delay);
                }
            }
        } else {
            next += round_every;
            tokio::time::sleep_until(next).await;
            while let Some(r) = tasks.try_join_next() {
                tally.add(r?, delay);
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        tally.add(r?, delay);
    }
    let elapsed = start.elapsed();
    let cpu_after = thread_cpu();
    let Tally {
        probes,
        errors_us,
        failures,
        skipped,
    } = tally;
    let failed = probes - errors_us.len();
    let errors = Percentiles::new(errors_us);
    let ms = |us: Option<u64>| us.unwrap_or(0) as f64 / 1000.0;
    println!(
        "probes:            {} in {:.2} s",
        probes,
        elapsed.as_secs_f64()
    );
    println!(
        "probes/s:          {:.0}",
        probes as f64 / elapsed.as_secs_f64()
    );
    println!("failed:            {failed} {failures:?}");
    println!("skipped in flight: {skipped}");
    println!(
        "timing error (first byte - delay): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(errors.p50()),
        ms(errors.p99()),
        ms(errors.max())
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let prober = after.prober.saturating_sub(before.prober);
        let origins = after.origins.saturating_sub(before.origins);
        let per_probe = prober.as_secs_f64() / probes.max(1) as f64;
        println!(
            "CPU (user+sys):    prober {:.2} s ({:.0} us per probe), origins {:.2} s, over {:.2} s on {} CPUs",
            prober.as_secs_f64(),
            per_probe * 1e6,
            origins.as_secs_f64(),
            elapsed.as_secs_f64(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
    }
    println!(
        "peak RSS:          {}",
        origin_router_tests::services::peak_rss_kib(std::process::id())
            .map(|kb| format!("{:.1} MiB", kb as f64 / 1024.0))
            .unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

/// What the bench keeps of the rounds.
#[derive(Default)]
struct Tally {
    probes: usize,
    /// First byte minus the origins' delay, µs, per successful probe.
    errors_us: Vec<u64>,
    failures: std::collections::BTreeMap<String, u64>,
    skipped: usize,
}

impl Tally {
    fn add(&mut self, round: round::RoundReport, delay: Duration) {
        self.skipped += round.skipped_in_flight;
        for s in round.samples {
            self.probes += 1;
            match &s.outcome {
                Outcome::Ok(t) => self
                    .errors_us
                    .push(t.first_byte.saturating_sub(delay).as_micros() as u64),
                Outcome::Failed(f) => {
                    *self.failures.entry(f.class.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
}

/// CPU time used so far by this process's threads: the origins' thread
/// apart from the rest (the prober).
struct ThreadCpu {
    prober: Duration,
    origins: Duration,
}

/// `None` where /proc has no per-thread counts (not Linux). Loopback
/// delivery runs in the sender's thread, so each side also carries some of
/// the other's receive work.
fn thread_cpu() -> Option<ThreadCpu> {
    let mut cpu = ThreadCpu {
        prober: Duration::ZERO,
        origins: Duration::ZERO,
    };
    for (name, used) in origin_router_tests::services::thread_cpu(std::process::id())? {
        if name == "bench-origins" {
            cpu.origins += used;
        } else {
            cpu.prober += used;
        }
    }
    Some(cpu)
}
