use std::time::Duration;

use origin_router::config::{Config, PoolConfig};
use origin_router::document::{OriginState, RankingDocument};
use origin_router::ranking::{self, Settings, Target};
use origin_router::sample::{Failure, FailureClass, Outcome, PhaseTimings, Sample, UnixMillis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn ok(latency: Duration) -> Outcome {
    Outcome::Ok(PhaseTimings {
        dns: Duration::ZERO,
        connect: Duration::ZERO,
        tls: Duration::ZERO,
        first_byte: latency,
        total: latency,
    })
}

fn timeout(after: Duration) -> Outcome {
    Outcome::Failed(Failure {
        class: FailureClass::ResponseTimeout,
        after,
        detail: String::new(),
    })
}

fn refused() -> Outcome {
    Outcome::Failed(Failure {
        class: FailureClass::ConnectRefused,
        after: Duration::ZERO,
        detail: String::new(),
    })
}

/// The default settings, but re-probes 250 ms apart (round numbers in the
/// arithmetic below).
fn defaults() -> PacingSettings {
    PacingSettings {
        fast_interval: 250 * MS,
        ..PacingSettings::from_config(&Config::default())
    }
}

/// A pacing that has seen `n` successes of `latency`, one per round.
fn warmed(latency: Duration, n: usize) -> Pacing {
    let mut p = Pacing::new(defaults());
    for _ in 0..n {
        assert_eq!(p.record(&ok(latency), latency, 1), None);
    }
    p
}

#[test]
fn full_budgets_until_the_latency_is_known_then_the_floor_for_a_near_origin() {
    let mut p = Pacing::new(defaults());
    assert_eq!(p.budget(), None);
    p.record(&ok(5 * MS), 5 * MS, 1);
    assert_eq!(p.budget(), None);
    p.record(&ok(5 * MS), 5 * MS, 1);
    assert_eq!(p.budget(), Some(150 * MS));
    // Off: fixed budgets whatever was seen.
    let mut off = Pacing::new(PacingSettings {
        adaptive: false,
        ..defaults()
    });
    for _ in 0..10 {
        off.record(&ok(5 * MS), 5 * MS, 1);
    }
    assert_eq!(off.budget(), None);
}

#[test]
fn a_cut_probe_is_confirmed_start_to_start_and_a_down_origin_gets_full_budgets() {
    let mut p = warmed(5 * MS, 5);
    let budget = p.budget().unwrap();
    // Cut at 150 ms: the re-probe starts 100 ms later, 250 ms after the
    // first started.
    assert_eq!(p.record(&timeout(budget), budget, 1), Some(100 * MS));
    assert_eq!(p.record(&timeout(budget), budget, 2), Some(100 * MS));
    assert_eq!(p.record(&timeout(budget), budget, 3), None);
    assert!(!p.is_up());
    assert_eq!(p.budget(), None, "down: the full budgets");
    // Back after rise (2) successes, at a new latency: learnt afresh.
    assert_eq!(p.record(&ok(400 * MS), 400 * MS, 1), Some(Duration::ZERO));
    assert_eq!(p.record(&ok(400 * MS), 400 * MS, 2), None);
    assert!(p.is_up());
    // Learnt from the rise successes that brought it back.
    let b = p.budget().unwrap();
    assert!(b >= 800 * MS && b <= 2000 * MS, "{b:?}");
}

#[test]
fn an_origin_near_the_ceiling_keeps_the_fixed_budgets() {
    // 1.8 s: 2 x srtt is past response_timeout (2 s), so the fixed budgets
    // (1 s to connect, then 2 s) apply, never a tighter 2 s for the whole.
    let p = warmed(1800 * MS, 5);
    assert_eq!(p.budget(), None);
    let q = warmed(900 * MS, 5);
    assert_eq!(q.budget(), Some(1800 * MS));
}

#[test]
fn a_lone_outlier_is_never_a_step_even_with_fall_1() {
    let mut p = Pacing::new(PacingSettings {
        fall: 1,
        rise: 1,
        ..defaults()
    });
    for _ in 0..5 {
        p.record(&ok(10 * MS), 10 * MS, 1);
    }
    // rise = fall = 1: no re-probes in a round, and one sample is no step.
    assert_eq!(p.record(&ok(100 * MS), 100 * MS, 1), None);
    assert_eq!(
        p.smoothed(),
        Some(10 * MS),
        "a lone outlier restarted the estimate"
    );
    // Two in a row (over two rounds) are.
    p.record(&ok(100 * MS), 100 * MS, 1);
    assert_eq!(p.smoothed(), Some(100 * MS));
}

#[test]
fn a_refused_connection_is_confirmed_after_fast_interval() {
    let mut p = warmed(5 * MS, 5);
    assert_eq!(p.record(&refused(), MS, 1), Some(249 * MS));
}

#[test]
fn a_latency_step_is_confirmed_in_the_same_round_and_the_budget_follows() {
    let mut p = warmed(10 * MS, 8);
    assert_eq!(p.budget(), Some(150 * MS));
    // 10x slower: a step, confirmed by fall - 1 = 2 re-probes.
    assert_eq!(p.record(&ok(100 * MS), 100 * MS, 1), Some(150 * MS));
    assert_eq!(p.record(&ok(100 * MS), 100 * MS, 2), Some(150 * MS));
    assert_eq!(p.record(&ok(100 * MS), 100 * MS, 3), None);
    // Restarted from 100 ms: 3 x 100 ms of room.
    assert_eq!(p.budget(), Some(300 * MS));
    assert_eq!(p.smoothed(), Some(100 * MS));
    // A lone outlier is confirmed once and forgotten.
    let mut q = warmed(10 * MS, 8);
    assert_eq!(q.record(&ok(100 * MS), 100 * MS, 1), Some(150 * MS));
    assert_eq!(q.record(&ok(10 * MS), 10 * MS, 2), Some(240 * MS));
    assert_eq!(q.smoothed(), Some(10 * MS));
}

/// One origin of a simulated world: its answer time for the `n`th probe.
struct Sim {
    id: &'static str,
    answer: Box<dyn FnMut(&mut StdRng) -> Duration>,
}

/// Drives the real pacing and the real ranking on paused time: rounds every
/// `interval`, each origin probed as the round does (budget, confirmations,
/// start-to-start spacing), a probe over its budget cut at the budget. Calls
/// `check` with each round's ranking and samples.
async fn run_world(
    config: &Config,
    origins: &mut [Sim],
    rounds: usize,
    mut check: impl FnMut(usize, &RankingDocument, &[Sample]),
) {
    let t0: UnixMillis = 1_780_000_000_000;
    let start = tokio::time::Instant::now();
    let now = || t0 + start.elapsed().as_millis() as u64;
    let settings = Settings::new(&config.prober, &config.ranking);
    let pool = PoolConfig {
        default_origin: None,
        origins: origins
            .iter()
            .map(|o| origin_router::config::OriginConfig::http(o.id, "127.0.0.1", 8080))
            .collect(),
        ..Default::default()
    };
    let mut pacing: Vec<Pacing> = origins
        .iter()
        .map(|_| Pacing::new(PacingSettings::from_config(config)))
        .collect();
    let mut rng = StdRng::seed_from_u64(13);
    let mut samples: Vec<Sample> = Vec::new();
    let mut previous: Option<RankingDocument> = None;
    for round in 0..rounds {
        let round_start = tokio::time::Instant::now();
        // Origins one after another: each origin's own timeline is what
        // matters, and on paused time it costs nothing.
        let mut this_round = Vec::new();
        for (i, origin) in origins.iter_mut().enumerate() {
            let mut probes = 0;
            let mut at = round_start;
            loop {
                tokio::time::sleep_until(at).await;
                probes += 1;
                let budget = pacing[i].budget();
                let answer = (origin.answer)(&mut rng);
                let limit = budget.unwrap_or(config.prober.response_timeout);
                let (outcome, took) = if answer > limit {
                    (timeout(limit), limit)
                } else {
                    (ok(answer), answer)
                };
                let sample_at = now();
                tokio::time::sleep(took).await;
                this_round.push(Sample {
                    origin: origin.id.into(),
                    pool: "web".into(),
                    worker: "w".into(),
                    at: sample_at,
                    outcome: outcome.clone(),
                });
                match pacing[i].record(&outcome, took, probes) {
                    Some(wait) => at = tokio::time::Instant::now() + wait,
                    None => break,
                }
            }
        }
        samples.extend(this_round.iter().cloned());
        let oldest = now().saturating_sub(settings.window.as_millis() as u64);
        samples.retain(|s| s.at >= oldest);
        let doc = ranking::rank(
            Target {
                pool_name: "web",
                pool: &pool,
                region: "eu-west-1",
                seq: round as u64 + 1,
            },
            previous.as_ref(),
            &samples,
            &settings,
            now(),
        );
        check(round, &doc, &this_round);
        previous = Some(doc);
        tokio::time::sleep_until(round_start + config.prober.interval).await;
    }
}

/// Uniform jitter of ±`spread` around `mean`.
fn jittered(mean: Duration, spread: f64, rng: &mut StdRng) -> Duration {
    mean.mul_f64(1.0 + rng.random_range(-spread..spread))
}

#[tokio::test(start_paused = true)]
async fn ten_minutes_of_normal_jitter_raise_no_false_alarm() {
    let config = Config::default();
    let mut origins = [
        // 5 ms ± 50 %, 1 % of answers 10x slower.
        Sim {
            id: "near",
            answer: Box::new(|rng| {
                let base = jittered(5 * MS, 0.5, rng);
                if rng.random_bool(0.01) {
                    base * 10
                } else {
                    base
                }
            }),
        },
        Sim {
            id: "second",
            answer: Box::new(|rng| jittered(20 * MS, 0.3, rng)),
        },
        // Another continent: 250 ms ± 30 %.
        Sim {
            id: "far",
            answer: Box::new(|rng| jittered(250 * MS, 0.3, rng)),
        },
    ];
    let rounds =
        (Duration::from_secs(600).as_millis() / config.prober.interval.as_millis()) as usize;
    let mut probes = 0;
    let mut slow_answers = 0;
    run_world(&config, &mut origins, rounds, |round, doc, this_round| {
        probes += this_round.len();
        slow_answers += this_round
            .iter()
            .filter(|s| s.origin == "near" && s.outcome.latency().is_some_and(|l| l > 20 * MS))
            .count();
        for s in this_round {
            assert!(s.outcome.is_ok(), "round {round}: a false failure: {s:?}");
        }
        assert_eq!(
            doc.top().unwrap().id,
            "near",
            "round {round}: {:?}",
            doc.origins
        );
        for o in &doc.origins {
            assert_eq!(o.state, OriginState::Healthy, "round {round}: {o:?}");
        }
    })
    .await;
    assert_eq!(rounds, 300);
    assert!(probes >= 900, "{probes} probes");
    // The 1 % of slow answers really happened (and moved nothing).
    assert!(slow_answers >= 1, "no slow answer was drawn");
}

#[tokio::test(start_paused = true)]
async fn a_hung_origin_fails_within_one_round_and_a_5x_step_moves_the_top_in_one() {
    let config = Config::default();
    let hung = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let mode = hung.clone();
    let mut origins = [
        Sim {
            id: "a",
            answer: Box::new(
                move |_| match mode.load(std::sync::atomic::Ordering::Relaxed) {
                    0 => 10 * MS,
                    1 => 50 * MS,                   // 5x slower
                    _ => Duration::from_secs(3600), // hung
                },
            ),
        },
        Sim {
            id: "b",
            answer: Box::new(|_| 30 * MS),
        },
    ];
    let mut step_top = None;
    let mut down_at = None;
    let flip = hung.clone();
    run_world(&config, &mut origins, 40, |round, doc, _| {
        match round {
            9 => flip.store(1, std::sync::atomic::Ordering::Relaxed),
            19 => flip.store(2, std::sync::atomic::Ordering::Relaxed),
            _ => {}
        }
        let top = doc.top().unwrap().id.as_str();
        if round < 10 {
            assert_eq!(top, "a", "round {round}");
        }
        if round >= 10 && top == "b" && step_top.is_none() {
            step_top = Some(round);
        }
        let a = doc.entry("a").unwrap();
        if round >= 20 && a.state == OriginState::Down && down_at.is_none() {
            down_at = Some(round);
        }
    })
    .await;
    // The step starts in round 10: b is on top in that very round's ranking.
    assert_eq!(step_top, Some(10));
    // The hang starts in round 20: down in that round's ranking.
    assert_eq!(down_at, Some(20));
}

/// The example: 8 ms to 160 ms (20x), the next best at 70 ms. Past
/// its 150 ms budget the origin is cut, so it goes down within the round;
/// at the full budgets it comes back up at 160 ms, and the 70 ms origin
/// keeps the top.
#[tokio::test(start_paused = true)]
async fn twenty_times_slower_goes_down_then_returns_at_its_new_latency() {
    let config = Config::default();
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mode = slow.clone();
    let mut origins = [
        Sim {
            id: "a",
            answer: Box::new(move |_| {
                if mode.load(std::sync::atomic::Ordering::Relaxed) {
                    160 * MS
                } else {
                    8 * MS
                }
            }),
        },
        Sim {
            id: "b",
            answer: Box::new(|_| 70 * MS),
        },
    ];
    let mut history = Vec::new();
    run_world(&config, &mut origins, 20, |round, doc, _| {
        if round == 9 {
            slow.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let a = doc.entry("a").unwrap();
        history.push((doc.top().unwrap().id.clone(), a.state, a.latency_ms));
    })
    .await;
    assert!(
        history[..10].iter().all(|(top, _, _)| top == "a"),
        "{history:?}"
    );
    // Round 10: cut three times at 150 ms, down, b on top.
    assert_eq!(history[10].0, "b", "{history:?}");
    assert_eq!(history[10].1, OriginState::Down, "{history:?}");
    // Back up within two more rounds, at its new latency, below b.
    let back = history[11..13]
        .iter()
        .find(|(_, state, _)| *state == OriginState::Healthy)
        .unwrap_or_else(|| panic!("never came back: {history:?}"));
    assert_eq!(back.0, "b");
    assert!(
        back.2.is_some_and(|l| (l - 160.0).abs() < 1.0),
        "{history:?}"
    );
    assert!(
        history[13..]
            .iter()
            .all(|(top, state, _)| top == "b" && *state == OriginState::Healthy),
        "{history:?}"
    );
}
