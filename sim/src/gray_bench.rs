//! `sim bench-gray`: how fast each region's edge container leaves an origin
//! gone gray (its health path still fast, its pages slow), through latency
//! demotion alone, and how fast it comes back once the pages are fast again.
//!
//! The world's three regions each run one edge container (the real handler
//! and [`edge::router::Router`], in process) over one in-memory store that
//! holds each region's ranking: `a` (5 ms) before `b` (60 ms), fresh all
//! along, as the probers would keep it (they time `a`'s health path, which
//! stays fast). Every miss is run as CloudFront runs it: an origin-request
//! event, a real HTTP GET of a page from the region's loopback address to
//! the origin chosen, and an origin-response event carrying the request as
//! routed (with the edge's stamp) at the wall clock of the answer.
//!
//! Per trial (fresh containers): one miss each, on `a`; then `a`'s pages
//! slow down to `--slow-ms` for everyone, and each container counts the
//! misses it sends to `a` and the time until its first decision for
//! another origin; once every container has left, the pages are fast
//! again, and each counts the misses it sends elsewhere and the time until
//! its first decision for `a`. Misses come back to back (one at a time:
//! each waits for the previous answer), or at `--rate` per second per
//! container, each fetched while the next ones start, since a container
//! is free between a miss's origin-request and its origin-response; the
//! events of one container still run one at a time, as Lambda runs them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use edge::handler::{invoke, Answer, Edge, Observed};
use edge::router::Decision;
use origin_router::config::{Config, LatencyMode};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::{MemoryStore, RankingStore};
use origin_router_tests::loopback;
use origin_router_tests::stats::Percentiles;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::world::{self, OriginSpec, Region, World, REGIONS};
use crate::SimError;

const REQUEST: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/cloudfront/origin-response.json");

/// What a miss fetches: a page, not the health path.
pub const PAGE: &str = "/products/42";
/// The longest a GET may take before the miss counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a phase may last before the trial fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// `a`: 5 ms from every region (its health path, always; its pages until
/// gray). `b`: 60 ms.
const ORIGINS: [OriginSpec; 2] = [
    OriginSpec::new("a", 81, [5, 5, 5]).gray(),
    OriginSpec::new("b", 82, [60, 60, 60]),
];

#[derive(Debug, Args)]
pub struct GrayArgs {
    /// Trials (each with fresh containers).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub trials: u64,
    /// Misses per second per container, overlapping; 0 sends them back
    /// to back, one at a time.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub rate: u64,
    /// How long `a`'s pages take once gray, ms (its health path keeps
    /// answering in 5 ms; `b` answers in 60 ms).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub slow_ms: u64,
    /// `outlier.base_ejection_time`, seconds: how long a demotion lasts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub ejection_s: u64,
}

/// One Lambda@Edge container: the handler, and its events one at a time.
#[derive(Clone)]
pub struct Container {
    edge: Edge,
    events: Arc<Mutex<()>>,
}

impl Container {
    pub fn new(edge: Edge) -> Container {
        Container {
            edge,
            events: Arc::default(),
        }
    }

    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The origin-request of a miss of [`PAGE`], now: the request as
    /// routed (JSON) and the decision.
    pub async fn origin_request(&self) -> Result<(Value, Decision), SimError> {
        let mut event: Value = serde_json::from_str(REQUEST)?;
        event["Records"][0]["cf"]["request"]["uri"] = PAGE.into();
        let _one = self.events.lock().await;
        let Answer::Request(routed) =
            invoke(&self.edge, &event.to_string(), unix_millis_now()).await?
        else {
            return Err("an origin-request was not routed".into());
        };
        Ok((serde_json::to_value(&routed.request)?, routed.decision))
    }

    /// The origin-response of `request` (as routed) answered with
    /// `status`, now.
    pub async fn origin_response(&self, request: Value, status: u16) -> Result<Observed, SimError> {
        let mut event: Value = serde_json::from_str(RESPONSE)?;
        event["Records"][0]["cf"]["request"] = request;
        event["Records"][0]["cf"]["response"]["status"] = status.to_string().into();
        let _one = self.events.lock().await;
        match invoke(&self.edge, &event.to_string(), unix_millis_now()).await? {
            Answer::Response(observed) => Ok(observed),
            Answer::Request(_) => Err("an origin-response was routed".into()),
        }
    }

    /// One whole miss from `source`: origin-request, the GET, and the
    /// origin-response. The decision, the status and what was observed.
    pub async fn miss(&self, source: IpAddr) -> Result<(Decision, u16, Observed), SimError> {
        let (request, decision) = self.origin_request().await?;
        let status = fetch(&request, source).await?;
        let observed = self.origin_response(request, status).await?;
        Ok((decision, status, observed))
    }
}

/// CloudFront's fetch: GETs the routed `request`'s URI from the origin it
/// names, connecting from `source`; the status.
pub async fn fetch(request: &Value, source: IpAddr) -> Result<u16, SimError> {
    let custom = &request["origin"]["custom"];
    let host: IpAddr = custom["domainName"].as_str().unwrap_or_default().parse()?;
    let port = custom["port"].as_u64().unwrap_or_default() as u16;
    let uri = request["uri"].as_str().unwrap_or("/");
    let get = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(SocketAddr::new(host, port)).await?;
        let head = format!("GET {uri} HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).await?;
        Ok::<_, SimError>(std::str::from_utf8(&status[9..12])?.parse()?)
    };
    tokio::time::timeout(FETCH_TIMEOUT, get)
        .await
        .map_err(|_| format!("GET {uri} from {host}:{port} took over {FETCH_TIMEOUT:?}"))?
}

/// Where a trial is: set by the trial, followed by every container.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// One miss each, `a` fast.
    Warm,
    /// `a`'s pages slow since then.
    Gray(Instant),
    /// `a`'s pages fast again since then.
    Fast(Instant),
    Stop,
}

/// What a container tells the trial.
#[derive(Debug)]
enum Event {
    Warm,
    Left,
    Back,
    Failed(String),
}

/// What one container measured in one trial.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Misses sent to `a` after its pages went slow.
    to_gray: u64,
    /// From the pages going slow to the first decision for another origin.
    left_after: Duration,
    /// Misses sent elsewhere after the pages were fast again.
    to_others: u64,
    /// From the pages being fast again to the first decision for `a`.
    back_after: Duration,
    /// From the first decision elsewhere to the first for `a` again.
    away_for: Duration,
}

pub async fn run(args: GrayArgs) -> Result<(), SimError> {
    let world = World::start(&ORIGINS, Some("a")).await?;
    let mut base = Config::default();
    let mut pool = world.pool().clone();
    pool.outlier.latency = LatencyMode::Demote;
    pool.outlier.base_ejection_time = Duration::from_secs(args.ejection_s);
    base.pools.insert("web".into(), pool);
    base.routing.default_pool = Some("web".into());
    base.edge.cache_ttl = Duration::from_secs(300);
    base.edge.max_stale = Duration::from_secs(3600);
    base.edge.ranking_max_age = Duration::from_secs(3600);
    let config = base
        .validate()
        .map_err(|p| format!("bench config: {p:?}"))?;
    let outlier = &config.pools["web"].outlier;
    let bar = (60.0 * (1.0 + config.ranking.switch_margin_relative))
        .max(60.0 + config.ranking.switch_margin_absolute.as_secs_f64() * 1000.0);
    println!(
        "bench-gray: {} trials, {} regions with one edge container each, misses {}; \
         a: health path 5 ms, pages {} ms once gray; b: 60 ms; each region's ranking: a (5 ms) > b (60 ms), \
         so a miss of a is slow above {bar:.0} ms; latency = demote, latency_min_requests = {}, \
         latency_window = {:?}, base_ejection_time = {:?}",
        args.trials,
        REGIONS.len(),
        if args.rate == 0 {
            "back to back".to_string()
        } else {
            format!("at {}/s per container", args.rate)
        },
        args.slow_ms,
        outlier.latency_min_requests,
        outlier.latency_window,
        outlier.base_ejection_time,
    );
    let slow = Duration::from_millis(args.slow_ms);
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); REGIONS.len()];
    for _ in 0..args.trials {
        world.restore("a");
        let figures = trial(&config, &world, slow, args.rate).await;
        world.restore("a");
        for (region, f) in figures?.into_iter().enumerate() {
            all[region].push(f);
        }
    }
    let every: Vec<Figures> = all.iter().flatten().copied().collect();
    println!(
        "over {} containers ({} trials x {} regions), p50 / max:",
        every.len(),
        args.trials,
        REGIONS.len()
    );
    report(&every, "  ");
    for (region, figures) in REGIONS.iter().zip(&all) {
        println!("{}:", region.name);
        report(figures, "  ");
    }
    Ok(())
}

fn report(figures: &[Figures], indent: &str) {
    let counts = |f: fn(&Figures) -> u64| Percentiles::new(figures.iter().map(f).collect());
    let times = |f: fn(&Figures) -> Duration| Percentiles::new(figures.iter().map(f).collect());
    let (to_gray, to_others) = (counts(|f| f.to_gray), counts(|f| f.to_others));
    let (left, back, away) = (
        times(|f| f.left_after),
        times(|f| f.back_after),
        times(|f| f.away_for),
    );
    println!(
        "{indent}misses sent to a after its pages went slow: p50 {} max {}",
        to_gray.p50().unwrap_or(0),
        to_gray.max().unwrap_or(0)
    );
    println!(
        "{indent}time from a's pages going slow to the first decision for another origin: p50 {:.2?} max {:.2?}",
        left.p50().unwrap_or_default(),
        left.max().unwrap_or_default()
    );
    println!(
        "{indent}misses sent elsewhere after a's pages were fast again: p50 {} max {}",
        to_others.p50().unwrap_or(0),
        to_others.max().unwrap_or(0)
    );
    println!(
        "{indent}time from a's pages being fast again to the first decision for a: p50 {:.2?} max {:.2?}",
        back.p50().unwrap_or_default(),
        back.max().unwrap_or_default()
    );
    println!(
        "{indent}time a was left out (first decision elsewhere to first for a again): p50 {:.2?} max {:.2?}",
        away.p50().unwrap_or_default(),
        away.max().unwrap_or_default()
    );
}

/// One trial: fresh containers over a fresh store; their figures in
/// [`REGIONS`] order.
async fn trial(
    config: &Config,
    world: &World,
    slow: Duration,
    rate: u64,
) -> Result<Vec<Figures>, SimError> {
    let store = Arc::new(MemoryStore::new());
    for region in REGIONS {
        store.put(RankingDocument::new(
            "web",
            region.name,
            1,
            unix_millis_now(),
            vec![
                RankedOrigin::measured("a", OriginState::Healthy, 5.0, 2),
                RankedOrigin::measured("b", OriginState::Healthy, 60.0, 2),
            ],
        ));
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::Warm);
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let mut drivers = JoinSet::new();
    for (i, region) in REGIONS.into_iter().enumerate() {
        let store: Arc<dyn RankingStore> = store.clone();
        let container = Container::new(world::edge(config, region, store)?);
        container.edge().router().warm_up().await;
        let (phases, events) = (phase_rx.clone(), event_tx.clone());
        drivers.spawn(async move {
            let result = drive(container, region, rate, phases, &events, i).await;
            if let Err(e) = &result {
                let _ = events.send((i, Event::Failed(e.to_string())));
            }
            (i, result)
        });
    }
    let outcome = async {
        wait_all(&mut events, |e| matches!(e, Event::Warm)).await?;
        world.gray("a", slow);
        phase_tx.send_replace(Phase::Gray(Instant::now()));
        wait_all(&mut events, |e| matches!(e, Event::Left)).await?;
        world.restore("a");
        phase_tx.send_replace(Phase::Fast(Instant::now()));
        wait_all(&mut events, |e| matches!(e, Event::Back)).await
    }
    .await;
    phase_tx.send_replace(Phase::Stop);
    let mut figures = vec![None; REGIONS.len()];
    while let Some(joined) = drivers.join_next().await {
        let (i, result) = joined?;
        figures[i] = result?;
    }
    outcome?;
    figures
        .into_iter()
        .map(|f| f.ok_or_else(|| SimError::from("a container measured nothing")))
        .collect()
}

/// Waits until every container has sent an event `wanted` accepts (or one
/// failed, or [`PHASE_TIMEOUT`] passed).
async fn wait_all(
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
    wanted: impl Fn(&Event) -> bool,
) -> Result<(), SimError> {
    let mut seen = [false; REGIONS.len()];
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !seen.iter().all(|s| *s) {
        let Ok(event) = tokio::time::timeout_at(deadline, events.recv()).await else {
            return Err(
                format!("a phase took over {PHASE_TIMEOUT:?}: containers done {seen:?}").into(),
            );
        };
        match event {
            Some((_, Event::Failed(e))) => return Err(e.into()),
            Some((i, e)) if wanted(&e) => seen[i] = true,
            Some(_) => {}
            None => return Err("every container stopped".into()),
        }
    }
    Ok(())
}

/// One region's container: misses until the trial says stop. Its figures
/// once it has left `a` and come back (else none).
async fn drive(
    container: Container,
    region: Region,
    rate: u64,
    mut phases: watch::Receiver<Phase>,
    events: &mpsc::UnboundedSender<(usize, Event)>,
    index: usize,
) -> Result<Option<Figures>, SimError> {
    let source = loopback(region.host);
    let (warm, _, _) = container.miss(source).await?;
    if warm.origin != "a" {
        return Err(format!(
            "{}: the ranking's best was not chosen: {}",
            region.name, warm.origin
        )
        .into());
    }
    let _ = events.send((index, Event::Warm));
    phases.wait_for(|p| *p != Phase::Warm).await?;
    let gap = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut in_flight = JoinSet::new();
    let (mut to_gray, mut to_others) = (0, 0);
    let mut left: Option<(Duration, Instant)> = None;
    let mut figures = None;
    let mut next = Instant::now();
    let deadline = Instant::now() + 3 * PHASE_TIMEOUT;
    loop {
        let phase = *phases.borrow();
        if phase == Phase::Stop {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{}: never told to stop", region.name).into());
        }
        if let Some(gap) = gap {
            next += gap;
            tokio::time::sleep_until(next).await;
        }
        let (request, decision) = container.origin_request().await?;
        let on_a = decision.origin == "a";
        match phase {
            Phase::Gray(since) if left.is_none() => {
                if on_a {
                    to_gray += 1;
                } else {
                    left = Some((since.elapsed(), Instant::now()));
                    let _ = events.send((index, Event::Left));
                }
            }
            Phase::Fast(since) if figures.is_none() => match left {
                Some((left_after, at)) if on_a => {
                    figures = Some(Figures {
                        to_gray,
                        left_after,
                        to_others,
                        back_after: since.elapsed(),
                        away_for: at.elapsed(),
                    });
                    let _ = events.send((index, Event::Back));
                }
                Some(_) => to_others += 1,
                None => {
                    return Err(
                        format!("{}: the pages were fast before it left", region.name).into(),
                    )
                }
            },
            _ => {}
        }
        // CloudFront fetches and answers; the container is free meanwhile
        // (at a rate) or waits for it (back to back).
        let c = container.clone();
        let answer = async move {
            let status = fetch(&request, source).await?;
            c.origin_response(request, status).await.map(|_| ())
        };
        if gap.is_some() {
            in_flight.spawn(answer);
            while let Some(done) = in_flight.try_join_next() {
                done??;
            }
        } else {
            answer.await?;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(figures)
}
