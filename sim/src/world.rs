//! The one model of a simulated world that the demo and the failover bench
//! share: regions (a prober and an edge each, told apart by the loopback
//! address they connect from), origins whose answer time depends on which
//! region asks, and failure injection (an origin declared
//! [`OriginSpec::gray`] can also go gray: health fast, pages slow).
//!
//! Loopback addresses stand in for places: 127.0.0.2-4 are the regions,
//! 127.0.0.11 and up the origins. An origin answers a region after that
//! region's delay, anyone else after 50 ms.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge::handler::Edge;
use edge::race::ProbeRacer;
use edge::router::Router;
use edge::settings::EdgeSettings;
use origin_router::config::{Config, OriginConfig, PoolConfig, Protocol};
use origin_router::probe::TlsError;
use origin_router::store::{EmbeddedStore, RankingStore};
use origin_router_tests::{loopback, Mode, TestOrigin};

use crate::gray::GrayOrigin;

/// A simulated AWS region: its name, and the loopback host its probers
/// and edge connect from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub name: &'static str,
    pub host: u8,
}

/// The three regions of every simulation.
pub const REGIONS: [Region; 3] = [
    Region {
        name: "us-east-1",
        host: 2,
    },
    Region {
        name: "eu-west-1",
        host: 3,
    },
    Region {
        name: "ap-southeast-1",
        host: 4,
    },
];

/// An origin of the world: its id, its loopback host, its answer time in
/// ms from each of [`REGIONS`], in order, and whether it speaks HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginSpec {
    pub id: &'static str,
    pub host: u8,
    pub latency_ms: [u64; 3],
    pub https: bool,
    /// Served by a [`GrayOrigin`]: it can go gray ([`World::gray`]), and
    /// its health path is [`GRAY_HEALTH_PATH`].
    pub gray: bool,
}

/// The health path of a gray-capable origin; every other path is a page.
pub const GRAY_HEALTH_PATH: &str = "/health";

impl OriginSpec {
    pub const fn new(id: &'static str, host: u8, latency_ms: [u64; 3]) -> Self {
        OriginSpec {
            id,
            host,
            latency_ms,
            https: false,
            gray: false,
        }
    }

    /// The same origin over HTTPS, its certificate from a CA of its own
    /// that the config trusts (`ca_file`).
    pub const fn https(self) -> Self {
        OriginSpec {
            https: true,
            gray: false,
            ..self
        }
    }

    /// The same origin (plain HTTP) able to go gray: its health path
    /// ([`GRAY_HEALTH_PATH`]) keeps its answer times while its pages slow
    /// down ([`World::gray`]). The other failures do not apply to it.
    pub const fn gray(self) -> Self {
        OriginSpec {
            gray: true,
            https: false,
            ..self
        }
    }
}

/// How an injected failure shows itself: the classes production sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Failure {
    /// Connections refused: the listener is gone.
    Refused,
    /// Accepts connections, reads the request, never answers (how an
    /// overloaded origin usually fails).
    Hang,
    /// The TCP handshake never completes: the accept backlog is full.
    Blackhole,
    /// Answers 503 at once.
    #[value(name = "http_5xx")]
    Http5xx,
    /// Reads the request and resets the connection.
    Reset,
    /// Presents a certificate that fails verification (HTTPS origins).
    Tls,
    /// Answers, 10x slower than before.
    Slow,
}

impl Failure {
    pub const ALL: [Failure; 7] = [
        Failure::Refused,
        Failure::Hang,
        Failure::Blackhole,
        Failure::Http5xx,
        Failure::Reset,
        Failure::Tls,
        Failure::Slow,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Hang => "hang",
            Failure::Blackhole => "blackhole",
            Failure::Http5xx => "http_5xx",
            Failure::Reset => "reset",
            Failure::Tls => "tls",
            Failure::Slow => "slow",
        }
    }
}

/// One running origin of the world.
enum Served {
    Test(TestOrigin),
    Gray(GrayOrigin),
}

/// Running origins, one pool of them.
pub struct World {
    specs: Vec<OriginSpec>,
    origins: Vec<Served>,
    pool: PoolConfig,
    /// CA certificates of the HTTPS origins.
    _certs: tempfile::TempDir,
}

impl World {
    /// Starts every origin on its loopback host; `default_origin` is the
    /// pool's default (else the first).
    pub async fn start(
        specs: &[OriginSpec],
        default_origin: Option<&str>,
    ) -> std::io::Result<World> {
        let mut origins = Vec::new();
        let mut pool = PoolConfig {
            default_origin: default_origin.map(str::to_string),
            origins: Vec::new(),
            ..Default::default()
        };
        let certs = tempfile::Builder::new()
            .prefix("origin-router-world")
            .tempdir()?;
        for spec in specs {
            let ip = loopback(spec.host);
            let addr = SocketAddr::new(ip, 0);
            let origin = if spec.gray {
                let (delays, default) = source_delays(spec.latency_ms);
                Served::Gray(GrayOrigin::start(addr, GRAY_HEALTH_PATH, delays, default).await?)
            } else if spec.https {
                Served::Test(
                    TestOrigin::start_tls(addr, delays(spec.latency_ms), &[&ip.to_string()])
                        .await?,
                )
            } else {
                Served::Test(TestOrigin::start(addr, delays(spec.latency_ms)).await?)
            };
            let port = match &origin {
                Served::Test(o) => o.port(),
                Served::Gray(o) => o.port(),
            };
            let mut config = OriginConfig::http(spec.id, &ip.to_string(), port);
            if spec.gray {
                config.health_path = GRAY_HEALTH_PATH.to_string();
            }
            if let (true, Served::Test(o)) = (spec.https, &origin) {
                config.protocol = Protocol::Https;
                config.ca_file = Some(o.write_ca(certs.path())?);
            }
            pool.origins.push(config);
            origins.push(origin);
        }
        Ok(World {
            specs: specs.to_vec(),
            origins,
            pool,
            _certs: certs,
        })
    }

    /// The pool of every origin, as a config names it.
    pub fn pool(&self) -> &PoolConfig {
        &self.pool
    }

    pub fn specs(&self) -> &[OriginSpec] {
        &self.specs
    }

    /// Makes origin `id` fail as `failure` says, at once (for new
    /// connections; `tls` needs an HTTPS origin, and a gray-capable origin
    /// only goes gray: [`World::gray`]).
    pub fn fail(&self, id: &str, failure: Failure) {
        if let Some(i) = self.index(id) {
            let Served::Test(origin) = &self.origins[i] else {
                return;
            };
            let mode = match failure {
                Failure::Refused => Mode::Stopped,
                Failure::Hang => Mode::Hang,
                Failure::Blackhole => Mode::BacklogFull,
                Failure::Http5xx => Mode::Status(503),
                Failure::Reset => Mode::Reset,
                Failure::Tls => Mode::UntrustedCertificate,
                Failure::Slow => delays(self.specs[i].latency_ms.map(|ms| ms * 10)),
            };
            origin.set_mode(mode);
        }
    }

    /// Makes gray-capable origin `id` ([`OriginSpec::gray`]) go gray from
    /// its next request on: its health path answers each region as before,
    /// its pages after `pages` for everyone. False if it cannot.
    pub fn gray(&self, id: &str, pages: Duration) -> bool {
        match self.index(id).map(|i| &self.origins[i]) {
            Some(Served::Gray(origin)) => {
                origin.slow_pages(pages);
                true
            }
            _ => false,
        }
    }

    /// Brings origin `id` back to its normal per-region answer times.
    pub fn restore(&self, id: &str) {
        if let Some(i) = self.index(id) {
            match &self.origins[i] {
                Served::Test(o) => o.set_mode(delays(self.specs[i].latency_ms)),
                Served::Gray(o) => o.restore(),
            }
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.id == id)
    }
}

/// Answer after `latency_ms[i]` for connections from region `i`'s host,
/// 50 ms for anyone else.
fn delays(latency_ms: [u64; 3]) -> Mode {
    let (delays, default) = source_delays(latency_ms);
    Mode::DelayBySource { delays, default }
}

/// Each region's host with its answer time, and the time for anyone else.
fn source_delays(latency_ms: [u64; 3]) -> (HashMap<IpAddr, Duration>, Duration) {
    let delays = REGIONS
        .iter()
        .zip(latency_ms)
        .map(|(region, ms)| (loopback(region.host), Duration::from_millis(ms)))
        .collect();
    (delays, Duration::from_millis(50))
}

/// `base` as the worker of `region` runs it: the region's name, a worker
/// id, and probes from the region's loopback host.
pub fn worker_config(base: &Config, region: Region, worker: &str) -> Config {
    let mut config = base.clone();
    config.prober.region = Some(region.name.into());
    config.prober.worker_id = Some(format!("{}-{worker}", region.name));
    config.prober.source_address = Some(loopback(region.host));
    config
}

/// Starts the real prober worker of `region` (solo, the store `base`
/// names) until `stop` completes.
pub fn spawn_worker(
    base: &Config,
    region: Region,
    worker: &str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), prober::WorkerError>> {
    tokio::spawn(prober::run(worker_config(base, region, worker), stop))
}

/// The real edge decision of `region` over the embedded store at `path`.
pub fn router(base: &Config, region: Region, path: &Path) -> Result<Router, TlsError> {
    let store: Arc<dyn RankingStore> = Arc::new(EmbeddedStore::new(path));
    Ok(edge(base, region, store)?.router().clone())
}

/// The real edge handler of `region` (the request → pool map and the
/// decision) over `store`: one Lambda@Edge container.
pub fn edge(base: &Config, region: Region, store: Arc<dyn RankingStore>) -> Result<Edge, TlsError> {
    let settings = EdgeSettings::new(base, region.name);
    let racer = Arc::new(ProbeRacer::with_settings(&settings.race, base.origins())?);
    Ok(settings.edge(store, racer))
}
