//! The one fake live race of the edge's tests and benches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use edge::race::{RaceOutcome, Racer};
use origin_router::config::OriginConfig;
use origin_router::FailureClass;

/// Who wins a scripted race.
#[derive(Debug, Clone)]
pub enum Winner {
    /// Nobody: every attempt fails.
    Nobody,
    /// This origin, if the race takes less than the watchdog.
    Named(String),
    /// The first origin the race is given.
    First,
}

/// A race with a scripted winner that takes a scripted time (never more
/// than the watchdog), and records the origins each race was given.
pub struct ScriptedRacer {
    winner: Winner,
    takes: Duration,
    losers: Vec<(String, FailureClass)>,
    given: Mutex<Vec<Vec<String>>>,
    races: AtomicUsize,
}

impl ScriptedRacer {
    /// Won by `winner` after `takes_ms` (no winner when that reaches the
    /// watchdog).
    pub fn new(winner: Option<&str>, takes_ms: u64) -> Arc<ScriptedRacer> {
        Arc::new(ScriptedRacer::with(
            winner.map_or(Winner::Nobody, |w| Winner::Named(w.to_string())),
            Duration::from_millis(takes_ms),
            Vec::new(),
        ))
    }

    /// Won at once by the first origin it is given.
    pub fn first() -> Arc<ScriptedRacer> {
        Arc::new(ScriptedRacer::with(
            Winner::First,
            Duration::ZERO,
            Vec::new(),
        ))
    }

    /// Lost at once by every origin.
    pub fn nobody() -> Arc<ScriptedRacer> {
        ScriptedRacer::new(None, 0)
    }

    pub fn with(
        winner: Winner,
        takes: Duration,
        losers: Vec<(String, FailureClass)>,
    ) -> ScriptedRacer {
        ScriptedRacer {
            winner,
            takes,
            losers,
            given: Mutex::new(Vec::new()),
            races: AtomicUsize::new(0),
        }
    }

    /// How many races were run.
    pub fn races(&self) -> usize {
        self.races.load(Ordering::SeqCst)
    }

    /// The origins each race was given, in order.
    pub fn given(&self) -> Vec<Vec<String>> {
        self.given.lock().unwrap().clone()
    }
}

#[async_trait]
impl Racer for ScriptedRacer {
    async fn race(&self, origins: &[&OriginConfig], watchdog: Duration) -> RaceOutcome {
        self.races.fetch_add(1, Ordering::SeqCst);
        self.given
            .lock()
            .unwrap()
            .push(origins.iter().map(|o| o.id.clone()).collect());
        let t = self.takes.min(watchdog);
        if !t.is_zero() {
            tokio::time::sleep(t).await;
        }
        let in_time = self.takes < watchdog;
        let winner = match &self.winner {
            _ if !in_time => None,
            Winner::Nobody => None,
            Winner::Named(w) => Some(w.clone()),
            Winner::First => origins.first().map(|o| o.id.clone()),
        };
        RaceOutcome {
            winner,
            elapsed: t,
            watchdog_fired: !in_time,
            losers: self.losers.clone(),
        }
    }
}
