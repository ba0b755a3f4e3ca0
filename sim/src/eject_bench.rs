//! `sim bench-eject`: how fast one edge container stops choosing an origin
//! that starts answering 5xx, through passive ejection alone.
//!
//! One container (the real [`edge::router::Router`] and handler, in process) serves
//! misses one at a time, as a Lambda container does, the way CloudFront
//! runs them: an origin-request event, a real HTTP GET to the origin it
//! chose (on loopback), and an origin-response event with that origin's
//! real status. The ranking is fresh and keeps naming the failing origin
//! best (the probers have not noticed yet). Per trial the chosen origin
//! switches to 503; the bench counts the requests sent to it from then on
//! and the time until the first decision for another origin. Misses
//! arrive back to back, or paced at `--rate` per second per container.
//! `--fail-every N` makes the origin fail one request in N (the others
//! answer 200), which a run of `consecutive_5xx` never sees for N > 1;
//! `--error-ratio R` turns on the error-ratio detector for that case.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use edge::handler::{invoke, Answer, Edge};
use edge::race::ProbeRacer;
use edge::settings::EdgeSettings;
use origin_router::config::Config;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::MemoryStore;
use origin_router_tests::stats::Percentiles;
use origin_router_tests::{loopback, Mode, TestOrigin};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SimError;

const REQUEST: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/cloudfront/origin-response.json");

#[derive(Debug, Args)]
pub struct EjectArgs {
    /// Trials (each a fresh container).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub trials: u64,
    /// Misses per second per container; 0 sends them back to back.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub rate: u64,
    /// The failing origin answers 503 to one request in this many (the
    /// first of each N), 200 to the others; 1: every request.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub fail_every: u64,
    /// `outlier.error_ratio` (0: off, the default); `consecutive_5xx`
    /// stays 5 and `error_min_requests` 20.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub error_ratio: f64,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{text}` is not a ratio in [0, 1]")),
    }
}

/// What one trial measured.
struct Trial {
    requests_to_failing: u64,
    until_switched: Duration,
}

pub async fn run(args: EjectArgs) -> Result<(), SimError> {
    let failing = TestOrigin::start(SocketAddr::new(loopback(71), 0), Mode::Ok).await?;
    let spare = TestOrigin::start(SocketAddr::new(loopback(72), 0), Mode::Ok).await?;
    let text = format!(
        r#"
        [routing]
        default_pool = "web"
        [pools.web]
        origins = [
            {{ id = "failing", host = "{}", port = {}, protocol = "http" }},
            {{ id = "spare", host = "{}", port = {}, protocol = "http" }},
        ]
        [pools.web.outlier]
        consecutive_5xx = 5
        max_ejection_percent = 50
        error_ratio = {}
        "#,
        failing.addr().ip(),
        failing.port(),
        spare.addr().ip(),
        spare.port(),
        args.error_ratio,
    );
    let config = Arc::new(Config::from_toml(&text, "bench-eject.toml")?);
    let outlier = &config.pools["web"].outlier;
    println!(
        "bench-eject: {} trials, misses {}, the origin fails {}, consecutive_5xx = {}, error_ratio = {} (window {:?}, at least {} answers)",
        args.trials,
        if args.rate == 0 {
            "back to back".to_string()
        } else {
            format!("at {}/s", args.rate)
        },
        if args.fail_every == 1 {
            "every request".to_string()
        } else {
            format!("one request in {}", args.fail_every)
        },
        outlier.consecutive_5xx,
        outlier.error_ratio,
        outlier.error_window,
        outlier.error_min_requests,
    );
    let mut trials = Vec::new();
    for _ in 0..args.trials {
        failing.set_mode(Mode::Ok);
        trials.push(trial(&config, &failing, args.rate, args.fail_every).await?);
    }
    let requests = Percentiles::new(trials.iter().map(|t| t.requests_to_failing).collect());
    let times = Percentiles::new(trials.iter().map(|t| t.until_switched).collect());
    println!(
        "requests sent to the failing origin after it failed: p50 {} max {}",
        requests.p50().unwrap_or(0),
        requests.max().unwrap_or(0)
    );
    println!(
        "time from the origin starting to answer 503 to the first decision for another origin: p50 {:.2?} p99 {:.2?} max {:.2?}",
        times.p50().unwrap_or_default(),
        times.p99().unwrap_or_default(),
        times.max().unwrap_or_default()
    );
    Ok(())
}

async fn trial(
    config: &Arc<Config>,
    failing: &TestOrigin,
    rate: u64,
    fail_every: u64,
) -> Result<Trial, SimError> {
    let store = Arc::new(MemoryStore::new());
    store.put(RankingDocument::new(
        "web",
        "local",
        1,
        unix_millis_now(),
        vec![
            RankedOrigin::measured("failing", OriginState::Healthy, 5.0, 2),
            RankedOrigin::measured("spare", OriginState::Healthy, 50.0, 2),
        ],
    ));
    let settings = EdgeSettings::new(config, "local");
    let racer = Arc::new(ProbeRacer::with_settings(&settings.race, config.origins())?);
    let router = settings.edge(store, racer);
    router.router().warm_up().await;
    let gap = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    // Warm: one healthy miss on the failing origin first.
    let (origin, _) = miss(&router).await?;
    if origin != "failing" {
        return Err(format!("the ranking's best was not chosen: {origin}").into());
    }
    failing.set_mode(Mode::Status(503));
    let started = Instant::now();
    let mut requests_to_failing = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        if let Some(gap) = gap {
            next += gap;
            tokio::time::sleep_until(next).await;
        }
        // The first request of each `fail_every` fails, the rest succeed.
        let fails = requests_to_failing % fail_every == 0;
        failing.set_mode(if fails { Mode::Status(503) } else { Mode::Ok });
        let (origin, status) = miss(&router).await?;
        if origin != "failing" {
            return Ok(Trial {
                requests_to_failing,
                until_switched: started.elapsed(),
            });
        }
        if status != if fails { 503 } else { 200 } {
            return Err(format!("the failing origin answered {status}").into());
        }
        requests_to_failing += 1;
        if requests_to_failing > 10_000 {
            return Err("never ejected after 10000 requests".into());
        }
    }
}

/// One miss: origin-request, the GET to the chosen origin, origin-response.
/// The chosen origin's id and its status.
async fn miss(router: &Edge) -> Result<(String, u16), SimError> {
    let now = unix_millis_now();
    let Answer::Request(routed) = invoke(router, REQUEST, now).await? else {
        return Err("an origin-request was not routed".into());
    };
    let request = serde_json::to_value(&routed.request)?;
    let custom = &request["origin"]["custom"];
    let addr = format!(
        "{}:{}",
        custom["domainName"].as_str().unwrap_or_default(),
        custom["port"]
    );
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    let status: u16 = std::str::from_utf8(&head[9..12])?.parse()?;
    let mut event: Value = serde_json::from_str(RESPONSE)?;
    event["Records"][0]["cf"]["request"] = request;
    event["Records"][0]["cf"]["response"]["status"] = status.to_string().into();
    let Answer::Response(_) = invoke(router, &event.to_string(), now).await? else {
        return Err("an origin-response was routed".into());
    };
    Ok((routed.decision.origin, status))
}
