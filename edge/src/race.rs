//! The live race: probe every origin of a pool at once and take the first
//! that answers well. Used only when no fresh ranking exists. Budgets from the original edge script: each
//! attempt 0.8 s, a watchdog at 0.9 s after which the caller uses the pool's
//! default origin.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::net::IpAddr;

use origin_router::config::OriginConfig;
use origin_router::probe::{resolve, ProbeEngine, ProbeSettings, TlsError};
use origin_router::sample::{FailureClass, Outcome};
use tokio::time::Instant;

/// How a race ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceOutcome {
    /// The first origin to answer with an accepted status.
    pub winner: Option<String>,
    /// Time until the winner answered, every attempt failed, or the
    /// watchdog fired.
    pub elapsed: Duration,
    /// The watchdog fired before any origin answered.
    pub watchdog_fired: bool,
    /// Attempts that failed before the race ended, with their class
    /// (connect timeout and response timeout stay apart).
    pub losers: Vec<(String, FailureClass)>,
}

/// Races a pool's origins live. A trait so the decision's tests and
/// benchmarks can race without a network.
#[async_trait]
pub trait Racer: Send + Sync + 'static {
    async fn race(&self, origins: &[&OriginConfig], watchdog: Duration) -> RaceOutcome;
}

/// The race's settings (from `[edge]` and `[resolve]`).
#[derive(Debug, Clone, Default)]
pub struct RaceSettings {
    /// Per-origin budget (`edge.race_attempt_timeout`).
    pub attempt_timeout: Duration,
    /// Static name-to-address overrides tried before the resolver.
    pub resolve: BTreeMap<String, IpAddr>,
}

/// The real race: a probe of each origin with the per-attempt budget.
pub struct ProbeRacer {
    engine: ProbeEngine,
}

impl ProbeRacer {
    pub fn new(engine: ProbeEngine) -> Self {
        ProbeRacer { engine }
    }

    /// Attempts bounded by `settings.attempt_timeout`, names resolved
    /// through `settings.resolve` first, every one of `origins`' CA files
    /// loaded once.
    pub fn with_settings<'a>(
        settings: &RaceSettings,
        origins: impl IntoIterator<Item = &'a OriginConfig>,
    ) -> Result<Self, TlsError> {
        let engine = ProbeEngine::new(
            ProbeSettings::race_attempt(settings.attempt_timeout),
            resolve::with_overrides(&settings.resolve),
            origins,
        )?;
        Ok(ProbeRacer::new(engine))
    }
}

#[async_trait]
impl Racer for ProbeRacer {
    async fn race(&self, origins: &[&OriginConfig], watchdog: Duration) -> RaceOutcome {
        race(&self.engine, origins, watchdog).await
    }
}

/// Races `origins`; `engine` carries the per-attempt budget (see
/// [`ProbeSettings::race_attempt`]).
pub async fn race(
    engine: &ProbeEngine,
    origins: &[&OriginConfig],
    watchdog: Duration,
) -> RaceOutcome {
    let start = Instant::now();
    let deadline = start + watchdog;
    let mut attempts: FuturesUnordered<_> = origins
        .iter()
        .map(|o| async move { (o.id.clone(), engine.probe(o).await) })
        .collect();
    let mut losers = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, attempts.next()).await {
            Ok(Some((id, Outcome::Ok(_)))) => {
                return RaceOutcome {
                    winner: Some(id),
                    elapsed: start.elapsed(),
                    watchdog_fired: false,
                    losers,
                }
            }
            Ok(Some((id, Outcome::Failed(f)))) => losers.push((id, f.class)),
            Ok(None) => {
                return RaceOutcome {
                    winner: None,
                    elapsed: start.elapsed(),
                    watchdog_fired: false,
                    losers,
                }
            }
            Err(_) => {
                return RaceOutcome {
                    winner: None,
                    elapsed: start.elapsed(),
                    watchdog_fired: true,
                    losers,
                }
            }
        }
    }
}
