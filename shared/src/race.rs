//! The live race: probe every origin of a pool at once and take the first
//! that answers well. Used by the edge only when no fresh ranking exists
//! (and by the prober CLI). Budgets from the original edge script: each
//! attempt 0.8 s, a watchdog at 0.9 s after which the caller uses the pool's
//! default origin.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::config::OriginConfig;
use crate::probe::ProbeEngine;
use crate::sample::{FailureClass, Outcome};

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

/// Races `origins`; `engine` carries the per-attempt budget (see
/// [`crate::probe::ProbeSettings::race_attempt`]).
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
