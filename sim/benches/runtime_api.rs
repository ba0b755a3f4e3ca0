//! One invocation through the Lambda Runtime API: the edge binary against
//! an echo handler on the same local Runtime API, plus the edge's start-up
//! time to its first answer (one store read included) and its peak RSS.
//! `cargo bench -p sim --bench runtime_api`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::runtime_api::Function;
use origin_router_tests::services::{peak_rss_kib, thread_cpu};
use origin_router_tests::stats::Percentiles;
use serde_json::Value;

const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

/// Pins every thread of process `pid` to the machine's last CPU, when it
/// has more than one.
///
/// Lambda@Edge runs a function (128 MB) on a share of one vCPU, beside its
/// log agent; so each function here runs pinned to one CPU with its log
/// drainer, and this harness has the other. Unpinned, the drainer's
/// wake-up after each log line landed on the other CPU at random and the
/// edge/echo ratio swung from 1.01 to 1.43 between runs.
#[allow(unsafe_code)] // sched_setaffinity on another process's threads.
fn pin_to_last_cpu(pid: u32) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET adds one
        // CPU below CPU_SETSIZE, and the call gets the set and its size.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpus - 1, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        assert_eq!(rc, 0, "cannot pin thread {tid} of process {pid}");
    }
}

/// Starts a function whose stdout (the edge's EMF lines) is a pipe that a
/// separate `cat` process drains into `log`, as Lambda's log agent drains
/// a function's stdout, rather than a thread of this benchmark. Both are
/// pinned to one CPU (see [`pin_to_last_cpu`]).
async fn start(binary: &str, config: &std::path::Path, log: &std::path::Path) -> Function {
    let env = [
        ("ORIGIN_ROUTER_CONFIG", config.as_os_str()),
        ("AWS_REGION", "eu-west-1".as_ref()),
        ("RUST_LOG", "error".as_ref()),
    ];
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut drain = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(log)
        .spawn()
        .unwrap();
    pin_to_last_cpu(drain.id());
    let pipe = drain.stdin.take().unwrap();
    // `cat` ends when the function's end of the pipe closes; reap it then.
    std::thread::spawn(move || drain.wait());
    let function = Function::start_logging_to(std::path::Path::new(binary), env, pipe.into())
        .await
        .unwrap();
    pin_to_last_cpu(function.pid());
    function
}

/// Lines in the log file that are EMF decision lines.
fn decision_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"message\":\"origin decision\""))
        .count()
}

/// Waits (up to 5 s) for `cat` to drain `n` more decision lines than `before`.
fn wait_for_lines(log: &std::path::Path, before: usize, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = decision_lines(log) - before;
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// One function's invocation times: to the response, and to its next
/// request for an event.
#[derive(Default)]
struct Timings {
    response: Vec<Duration>,
    cycle: Vec<Duration>,
}

impl Timings {
    fn extend(&mut self, other: Timings) {
        self.response.extend(other.response);
        self.cycle.extend(other.cycle);
    }
}

fn percentiles(v: Vec<Duration>) -> (Duration, Duration) {
    let p = Percentiles::new(v);
    (p.p50().unwrap_or_default(), p.p99().unwrap_or_default())
}

/// The shipped `edge` binary, built in this bench's profile: it belongs to
/// another package, so cargo gives this bench no path to it.
fn edge_binary() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "edge", "--bin", "edge"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cannot build the edge binary");
    let exe = std::env::current_exe().expect("the bench knows its path");
    // target/release/deps/runtime_api-HASH -> target/release/edge
    let dir = exe.parent().and_then(|d| d.parent()).expect("a target dir");
    dir.join("edge").display().to_string()
}

/// CPU time a process has run, summed over its threads.
fn cpu(pid: u32) -> Option<Duration> {
    Some(thread_cpu(pid)?.into_iter().map(|(_, used)| used).sum())
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
    let edge_log = dir.path().join("edge.log");
    let echo_log = dir.path().join("echo.log");
    let edge_bin = edge_binary();
    let edge = rt.block_on(start(&edge_bin, &config, &edge_log));
    let echo = rt.block_on(start(
        env!("CARGO_BIN_EXE_echo-handler"),
        &config,
        &echo_log,
    ));
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

    // Percentiles, interleaved so machine noise hits both alike: blocks of
    // pairs, which of the two goes first alternating, and the CPU time each
    // process spent (from the kernel's scheduler statistics), which machine
    // noise disturbs far less than wall time. Each invocation is timed twice:
    // to its response (what the viewer waits for) and to the function's next
    // request for an event (what Lambda bills, the decision line included).
    // The next invocation starts only then, so neither function's work after
    // its response lands in the other's time.
    const BLOCKS: usize = 10;
    const PAIRS: usize = 1000;
    let logged_before = decision_lines(&edge_log);
    let (mut e, mut o) = (Timings::default(), Timings::default());
    let mut block_ratios = Vec::new();
    let cpu_before = (cpu(edge.pid()), cpu(echo.pid()));
    for _ in 0..BLOCKS {
        let (mut be, mut bo) = (Timings::default(), Timings::default());
        for i in 0..PAIRS {
            let timed = |f: &Function, into: &mut Timings| {
                let t = Instant::now();
                call(f);
                into.response.push(t.elapsed());
                assert!(rt.block_on(f.api.wait_ready(Duration::from_secs(5))));
                into.cycle.push(t.elapsed());
            };
            if i % 2 == 0 {
                timed(&edge, &mut be);
                timed(&echo, &mut bo);
            } else {
                timed(&echo, &mut bo);
                timed(&edge, &mut be);
            }
        }
        let (b50, _) = percentiles(be.response.clone());
        let (c50, _) = percentiles(bo.response.clone());
        block_ratios.push(b50.as_secs_f64() / c50.as_secs_f64());
        e.extend(be);
        o.extend(bo);
    }
    let cpu_after = (cpu(edge.pid()), cpu(echo.pid()));
    // The edge did its whole job: one decision line per invocation.
    assert_eq!(
        wait_for_lines(&edge_log, logged_before, BLOCKS * PAIRS),
        BLOCKS * PAIRS
    );
    let (e50, e99) = percentiles(e.response);
    let (o50, o99) = percentiles(o.response);
    block_ratios.sort_by(f64::total_cmp);
    println!(
        "invocation to response p50/p99: edge {e50:?}/{e99:?}, echo {o50:?}/{o99:?}; edge/echo at p50 {:.3}; per block of {PAIRS} pairs, edge/echo p50 from {:.3} to {:.3}, median {:.3}",
        e50.as_secs_f64() / o50.as_secs_f64(),
        block_ratios[0],
        block_ratios[BLOCKS - 1],
        block_ratios[BLOCKS / 2],
    );
    let (e50, e99) = percentiles(e.cycle);
    let (o50, o99) = percentiles(o.cycle);
    println!(
        "invocation to next event request p50/p99: edge {e50:?}/{e99:?}, echo {o50:?}/{o99:?}; edge/echo at p50 {:.3}",
        e50.as_secs_f64() / o50.as_secs_f64(),
    );
    if let ((Some(e0), Some(o0)), (Some(e1), Some(o1))) = (cpu_before, cpu_after) {
        let n = (BLOCKS * PAIRS) as f64;
        let per = |used: Duration| used.as_secs_f64() * 1e6 / n;
        let (ec, oc) = (per(e1.saturating_sub(e0)), per(o1.saturating_sub(o0)));
        println!(
            "function CPU per invocation: edge {ec:.1} us, echo {oc:.1} us; edge/echo {:.3}",
            ec / oc
        );
    }
    println!(
        "peak RSS after {} invocations: edge {} KiB, echo {} KiB",
        BLOCKS * PAIRS + 50,
        peak_rss_kib(edge.pid()).unwrap_or(0),
        peak_rss_kib(echo.pid()).unwrap_or(0)
    );

    // Start-up: spawn to first answer, with the first store read.
    let mut starts = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let f = rt.block_on(start(&edge_bin, &config, &edge_log));
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
