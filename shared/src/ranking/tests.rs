use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::OriginConfig;
use crate::sample::{Failure, Outcome, PhaseTimings};

const T0: UnixMillis = 1_780_000_000_000;
const ROUND_MS: u64 = 2000;

fn pool(ids: &[&str]) -> PoolConfig {
    PoolConfig {
        default_origin: None,
        origins: ids
            .iter()
            .map(|id| OriginConfig::http(id, "127.0.0.1", 80))
            .collect(),
        ..Default::default()
    }
}

fn ok(origin: &str, worker: &str, at: UnixMillis, ms: f64) -> Sample {
    Sample {
        origin: origin.into(),
        pool: "web".into(),
        worker: worker.into(),
        at,
        outcome: Outcome::Ok(PhaseTimings {
            dns: Duration::ZERO,
            connect: Duration::ZERO,
            tls: Duration::ZERO,
            first_byte: Duration::from_secs_f64(ms / 1000.0),
            total: Duration::from_secs_f64(ms / 1000.0),
        }),
    }
}

fn failed(origin: &str, worker: &str, at: UnixMillis, class: FailureClass) -> Sample {
    Sample {
        origin: origin.into(),
        pool: "web".into(),
        worker: worker.into(),
        at,
        outcome: Outcome::Failed(Failure {
            class,
            after: Duration::from_millis(1),
            detail: String::new(),
        }),
    }
}

/// Runs the engine round by round, as a leader would, feeding each round's
/// samples and the previous ranking. Returns every round's ranking.
fn simulate(
    pool: &PoolConfig,
    settings: &Settings,
    rounds: usize,
    mut round_samples: impl FnMut(usize, UnixMillis) -> Vec<Sample>,
) -> Vec<RankingDocument> {
    let mut samples = Vec::new();
    let mut docs: Vec<RankingDocument> = Vec::new();
    for r in 0..rounds {
        let now = T0 + r as u64 * ROUND_MS;
        samples.extend(round_samples(r, now));
        let target = Target {
            pool_name: "web",
            pool,
            region: "eu-west-1",
            seq: r as u64 + 1,
        };
        let doc = rank(target, docs.last(), &samples, settings, now + 500);
        doc.validate()
            .expect("engine output is always a valid document");
        docs.push(doc);
    }
    docs
}

fn top(doc: &RankingDocument) -> &str {
    &doc.top().unwrap().id
}

#[test]
fn latency_decays_so_a_recovered_origin_is_seen_to_recover() {
    // The decay alone (step following off); with it on, the 10x faster
    // level replaces the estimate after `rise` samples.
    let s = Settings {
        step_factor: 0.0,
        ..Settings::default()
    };
    // 10 slow samples (100 ms), then fast ones (10 ms).
    let mut samples: Vec<Sample> = (0..10)
        .map(|i| ok("a", "w", T0 + i * ROUND_MS, 100.0))
        .collect();
    let slow = worker_view(&samples.iter().collect::<Vec<_>>(), &s, T0 + 9 * ROUND_MS).unwrap();
    assert_eq!(slow.latency_ms.unwrap().round(), 100.0);
    for i in 10..20 {
        samples.push(ok("a", "w", T0 + i * ROUND_MS, 10.0));
    }
    let now = T0 + 19 * ROUND_MS;
    let after = worker_view(&samples.iter().collect::<Vec<_>>(), &s, now).unwrap();
    // Exact: weights 2^(-age/10s), ages 0..38 s in 2 s steps.
    let w = |k: u64| (-((k * ROUND_MS) as f64) / 10_000.0).exp2();
    let fast: f64 = (0..10).map(w).sum();
    let slow_w: f64 = (10..20).map(w).sum();
    let expected = (fast * 10.0 + slow_w * 100.0) / (fast + slow_w);
    assert!((after.latency_ms.unwrap() - expected).abs() < 1e-6);
    assert!(after.latency_ms.unwrap() < 40.0, "{after:?}");
    let stepped = worker_view(
        &samples.iter().collect::<Vec<_>>(),
        &Settings::default(),
        now,
    )
    .unwrap();
    assert!(
        (stepped.latency_ms.unwrap() - 10.0).abs() < 1e-9,
        "{stepped:?}"
    );
}

#[test]
fn samples_outside_the_window_are_ignored_and_stale_workers_do_not_vote() {
    let s = Settings::default();
    let old = ok("a", "w", T0, 5.0);
    assert!(worker_view(&[&old], &s, T0 + 61_000).is_none());
    // In the window but past vote expiry: the worker has stopped.
    assert!(worker_view(&[&old], &s, T0 + 10_000).is_none());
    assert!(worker_view(&[&old], &s, T0 + 8_000).is_some());
}

#[test]
fn one_workers_bad_path_does_not_eject_an_origin() {
    let p = pool(&["a", "b"]);
    let s = Settings::default();
    let docs = simulate(&p, &s, 10, |_, now| {
        let mut v = vec![
            ok("a", "w1", now, 10.0),
            ok("a", "w2", now, 11.0),
            failed("a", "w3", now, FailureClass::ConnectTimeout),
        ];
        v.extend(["w1", "w2", "w3"].map(|w| ok("b", w, now, 30.0)));
        v
    });
    let last = docs.last().unwrap();
    let a = last.entry("a").unwrap();
    assert_ne!(a.state, OriginState::Down);
    assert_eq!((a.voters, a.down_votes), (3, 1));
    assert_eq!(a.last_failure, Some(FailureClass::ConnectTimeout));
    assert_eq!(top(last), "a");
    assert_eq!(
        a.latency_ms,
        Some(10.5),
        "latency comes from the workers that hold it up"
    );
    assert_eq!(last.workers, 3);
}

#[test]
fn a_majority_of_workers_takes_an_origin_down_after_fall_rounds() {
    let p = pool(&["a", "b"]);
    let s = Settings::default();
    let docs = simulate(&p, &s, 8, |r, now| {
        let mut v: Vec<Sample> = ["w1", "w2", "w3"]
            .iter()
            .map(|w| ok("b", w, now, 30.0))
            .collect();
        for w in ["w1", "w2", "w3"] {
            v.push(if r < 3 {
                ok("a", w, now, 10.0)
            } else {
                failed("a", w, now, FailureClass::ConnectRefused)
            });
        }
        v
    });
    let states: Vec<OriginState> = docs.iter().map(|d| d.entry("a").unwrap().state).collect();
    // Failures start in round 3; fall = 3 so round 5 is the first down.
    assert_eq!(
        &states[..5]
            .iter()
            .filter(|s| **s == OriginState::Down)
            .count(),
        &0
    );
    assert_eq!(states[5], OriginState::Down);
    assert_eq!(top(&docs[5]), "b");
    assert_eq!(docs[5].origins[1].id, "a");
}

#[test]
fn a_recovered_origin_is_healthy_after_rise_and_a_flaky_one_is_degraded() {
    let p = pool(&["a", "b"]);
    let s = Settings::default();
    // a: up 5 rounds, down 5, back from round 10. b: fails every 4th probe.
    let docs = simulate(&p, &s, 16, |r, now| {
        let a = if (5..10).contains(&r) {
            failed("a", "w", now, FailureClass::ConnectRefused)
        } else {
            ok("a", "w", now, 10.0)
        };
        let b = if r % 4 == 3 {
            failed("b", "w", now, FailureClass::HttpStatus(503))
        } else {
            ok("b", "w", now, 30.0)
        };
        vec![a, b]
    });
    let state = |r: usize, id: &str| docs[r].entry(id).unwrap().state;
    assert_eq!(state(9, "a"), OriginState::Down);
    assert_eq!(
        state(10, "a"),
        OriginState::Down,
        "one success is not enough (rise 2)"
    );
    assert_eq!(state(11, "a"), OriginState::Healthy);
    assert_eq!(
        top(&docs[11]),
        "a",
        "clearly faster, so it takes the top back at once"
    );
    assert_eq!(state(15, "b"), OriginState::Degraded);
}

#[test]
fn ties_break_by_config_order() {
    let p = pool(&["x", "y", "z"]);
    let docs = simulate(&p, &Settings::default(), 1, |_, now| {
        ["z", "y", "x"]
            .iter()
            .map(|o| ok(o, "w", now, 10.0))
            .collect()
    });
    let order: Vec<&str> = docs[0].origins.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(order, ["x", "y", "z"]);
}

#[test]
fn weight_scales_the_score() {
    let mut p = pool(&["a", "b"]);
    p.origins[1].weight = 4.0;
    let docs = simulate(&p, &Settings::default(), 1, |_, now| {
        vec![ok("a", "w", now, 10.0), ok("b", "w", now, 20.0)]
    });
    assert_eq!(top(&docs[0]), "b");
    assert_eq!(docs[0].entry("b").unwrap().score, Some(5.0));
}

#[test]
fn origins_without_samples_are_down_and_other_pools_are_ignored() {
    let p = pool(&["a", "b"]);
    let mut other = ok("b", "w", T0, 1.0);
    other.pool = "api".into();
    let docs = simulate(&p, &Settings::default(), 1, |_, now| {
        vec![ok("a", "w", now, 10.0), other.clone()]
    });
    let b = docs[0].entry("b").unwrap();
    assert_eq!((b.state, b.voters), (OriginState::Down, 0));
}

fn settings_strategy() -> impl Strategy<Value = Settings> {
    (1u32..5, 2u32..6, 2u64..30, 0.0f64..0.3, 0u64..20).prop_map(
        |(rise, fall, half_life_s, rel, abs_ms)| Settings {
            rise,
            fall,
            half_life: Duration::from_secs(half_life_s),
            switch_margin_relative: rel,
            switch_margin_absolute: Duration::from_millis(abs_ms),
            ..Settings::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With fall >= 2, one failed probe in any run of successes never
    /// takes an origin down, wherever it falls and whatever the class.
    #[test]
    fn a_single_failure_never_ejects(settings in settings_strategy(), at in 0usize..30, workers in 1usize..4) {
        let p = pool(&["a", "b"]);
        let docs = simulate(&p, &settings, 30, |r, now| {
            let mut v = Vec::new();
            for w in 0..workers {
                let worker = format!("w{w}");
                v.push(if r == at && w == 0 {
                    failed("a", &worker, now, FailureClass::ResponseTimeout)
                } else {
                    ok("a", &worker, now, 20.0)
                });
                v.push(ok("b", &worker, now, 25.0));
            }
            v
        });
        for d in &docs {
            prop_assert_ne!(d.entry("a").unwrap().state, OriginState::Down);
        }
    }

    /// An origin that becomes clearly faster (a quarter of the incumbent's
    /// latency or less) reaches the top within a bound set by the half-life.
    #[test]
    fn a_clearly_faster_origin_reaches_the_top(settings in settings_strategy(), incumbent_ms in 20.0f64..500.0, switch_at in 0usize..20) {
        let p = pool(&["a", "b"]);
        let fast_ms = incumbent_ms / 4.0 - settings.switch_margin_absolute.as_secs_f64() * 1000.0;
        prop_assume!(fast_ms > 0.5);
        // Old slow samples must weigh under 10%: 2^(-t/h) <= 0.1 after
        // t = h * log2(10); plus two rounds of slack.
        let bound = (settings.half_life.as_secs_f64() * 10f64.log2() / (ROUND_MS as f64 / 1000.0)).ceil() as usize + 2;
        let rounds = switch_at + bound + 1;
        let docs = simulate(&p, &settings, rounds, |r, now| {
            let b_ms = if r < switch_at { incumbent_ms * 3.0 } else { fast_ms };
            vec![ok("a", "w", now, incumbent_ms), ok("b", "w", now, b_ms)]
        });
        let first_top_b = docs.iter().position(|d| top(d) == "b");
        prop_assert!(first_top_b.is_some_and(|i| i <= switch_at + bound), "b on top at {:?}, bound {}", first_top_b, switch_at + bound);
    }

    /// Two origins whose every sample lies in a band narrower than the
    /// absolute margin never swap top place.
    #[test]
    fn near_equal_origins_never_swap_top(
        settings in settings_strategy(),
        base in 5.0f64..300.0,
        noise in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 40),
    ) {
        prop_assume!(settings.switch_margin_absolute >= Duration::from_millis(2));
        let band = settings.switch_margin_absolute.as_secs_f64() * 1000.0 * 0.99;
        let p = pool(&["a", "b"]);
        let docs = simulate(&p, &settings, noise.len(), |r, now| {
            let (na, nb) = noise[r];
            vec![ok("a", "w", now, base + na * band), ok("b", "w", now, base + nb * band)]
        });
        let first = top(&docs[0]).to_string();
        for d in &docs {
            prop_assert_eq!(top(d), first.as_str());
        }
    }

    /// Whatever the samples, no down origin is ranked above a healthy one.
    #[test]
    fn down_is_never_above_healthy(
        settings in settings_strategy(),
        outcomes in proptest::collection::vec(proptest::collection::vec((any::<bool>(), 1.0f64..200.0), 4 * 3), 1..25),
    ) {
        let p = pool(&["a", "b", "c", "d"]);
        let ids = ["a", "b", "c", "d"];
        let docs = simulate(&p, &settings, outcomes.len(), |r, now| {
            let mut v = Vec::new();
            for (i, (up, ms)) in outcomes[r].iter().enumerate() {
                let (origin, worker) = (ids[i % 4], format!("w{}", i / 4));
                v.push(if *up { ok(origin, &worker, now, *ms) } else { failed(origin, &worker, now, FailureClass::Reset) });
            }
            v
        });
        for d in &docs {
            let first_down = d.origins.iter().position(|o| o.state == OriginState::Down);
            let last_healthy = d.origins.iter().rposition(|o| o.state == OriginState::Healthy);
            if let (Some(down), Some(healthy)) = (first_down, last_healthy) {
                prop_assert!(healthy < down, "{:?}", d.origins);
            }
        }
    }
}

fn timed_out(origin: &str, worker: &str, at: UnixMillis, after_ms: u64) -> Sample {
    Sample {
        origin: origin.into(),
        pool: "web".into(),
        worker: worker.into(),
        at,
        outcome: Outcome::Failed(Failure {
            class: FailureClass::ResponseTimeout,
            after: Duration::from_millis(after_ms),
            detail: String::new(),
        }),
    }
}

#[test]
fn a_lone_outlier_moves_nothing_and_a_confirmed_step_moves_everything() {
    let settings = Settings::default();
    let at = |i: u64| T0 + i * ROUND_MS;
    let mut samples: Vec<Sample> = (0..10).map(|i| ok("a", "w", at(i), 10.0)).collect();
    samples.push(ok("a", "w", at(10), 100.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    let near = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() < 1e-9);
    assert!(near(latency_estimate(&refs, &settings, at(10)), 10.0));
    samples.push(ok("a", "w", at(11), 10.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    assert!(near(latency_estimate(&refs, &settings, at(11)), 10.0));
    // fall (3) successive 5x slower samples: the estimate restarts there.
    samples.push(ok("a", "w", at(12), 50.0));
    samples.push(ok("a", "w", at(13), 50.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    assert!(
        near(latency_estimate(&refs, &settings, at(13)), 10.0),
        "two are not a step"
    );
    samples.push(ok("a", "w", at(14), 50.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    assert!(near(latency_estimate(&refs, &settings, at(14)), 50.0));
    // Off: the plain decayed mean, far from the new level.
    let off = Settings {
        step_factor: 0.0,
        ..settings
    };
    let plain = latency_estimate(&refs, &off, at(14)).unwrap();
    assert!(plain > 20.0 && plain < 45.0, "{plain}");
}

#[test]
fn a_bimodal_origin_is_ranked_by_both_its_modes() {
    // Every other answer 10x faster (a cache hit, say): no step, and the
    // fast answers are not thrown away as outliers.
    let settings = Settings {
        half_life: Duration::from_secs(3600),
        ..Settings::default()
    };
    let samples: Vec<Sample> = (0..20)
        .map(|i| {
            ok(
                "a",
                "w",
                T0 + i * 100,
                if i % 2 == 0 { 100.0 } else { 10.0 },
            )
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    let estimate = latency_estimate(&refs, &settings, T0 + 2000).unwrap();
    assert!((estimate - 55.0).abs() < 1.0, "{estimate}");
}

#[test]
fn timeouts_are_lower_bounds_on_the_latency() {
    let settings = Settings::default();
    let mut samples: Vec<Sample> = (0..5).map(|i| ok("a", "w", T0 + i * 100, 5.0)).collect();
    for i in 5..8 {
        samples.push(timed_out("a", "w", T0 + i * 100, 150));
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let estimate = latency_estimate(&refs, &settings, T0 + 800).unwrap();
    assert!((estimate - 150.0).abs() < 1e-9, "{estimate}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A sustained step (every probe 5x slower, one probe a round, no
    /// confirming re-probes) changes the top within 3 rounds.
    #[test]
    fn a_sustained_5x_step_changes_the_top_within_3_rounds(
        a_ms in 5.0f64..200.0,
        ratio in 1.3f64..3.0,
        step_at in 3usize..40,
    ) {
        let settings = Settings::default();
        let p = pool(&["a", "b"]);
        let b_ms = a_ms * ratio;
        let docs = simulate(&p, &settings, step_at + 3, |r, now| {
            let a = if r >= step_at { a_ms * 5.0 } else { a_ms };
            vec![ok("a", "w", now, a), ok("b", "w", now, b_ms)]
        });
        prop_assert_eq!(top(&docs[step_at - 1]), "a");
        prop_assert_eq!(top(&docs[step_at + 2]), "b");
    }

    /// Latencies with ±30 % random jitter around fixed means never change
    /// the top once the means are apart by more than what jitter plus the
    /// switch margin can bridge: from the first round when no sample of the
    /// slower origin can undercut the faster one by the margin, and after a
    /// five-round warm-up when the means are 1.5x apart or more (a
    /// decayed mean of many samples is far steadier than one sample).
    #[test]
    fn jitter_of_30_percent_never_changes_the_top(
        a_ms in 2.0f64..300.0,
        ratio in 1.5f64..6.0,
        jitter in proptest::collection::vec((-0.3f64..0.3, -0.3f64..0.3), 150),
    ) {
        let settings = Settings::default();
        let p = pool(&["a", "b"]);
        let b_ms = a_ms * ratio;
        let docs = simulate(&p, &settings, jitter.len(), |r, now| {
            let (ja, jb) = jitter[r];
            vec![ok("a", "w", now, a_ms * (1.0 + ja)), ok("b", "w", now, b_ms * (1.0 + jb))]
        });
        let never_bridged = 0.7 * b_ms > 1.3 * a_ms;
        let from = if never_bridged { 0 } else { 5 };
        for (r, d) in docs.iter().enumerate().skip(from) {
            prop_assert_eq!(top(d), "a", "round {}", r);
        }
    }
}

#[test]
fn a_timeout_is_never_evidence_of_speed_and_one_sample_is_never_a_step() {
    let settings = Settings {
        fall: 1,
        rise: 1,
        ..Settings::default()
    };
    let mut samples: Vec<Sample> = (0..5).map(|i| ok("a", "w", T0 + i * 100, 2600.0)).collect();
    // Two 1 s timeouts: below 2600 / 2.5, but they say "at least 1 s".
    samples.push(timed_out("a", "w", T0 + 500, 1000));
    samples.push(timed_out("a", "w", T0 + 600, 1000));
    let refs: Vec<&Sample> = samples.iter().collect();
    let e = latency_estimate(&refs, &settings, T0 + 700).unwrap();
    assert!(e >= 2599.0, "{e}");
    // fall = 1: one 10x sample is still not a step.
    let mut samples: Vec<Sample> = (0..5).map(|i| ok("a", "w", T0 + i * 100, 10.0)).collect();
    samples.push(ok("a", "w", T0 + 500, 100.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    let e = latency_estimate(&refs, &settings, T0 + 600).unwrap();
    assert!((e - 10.0).abs() < 1e-9, "{e}");
}

#[test]
fn a_recovered_origin_is_measured_afresh() {
    // 100 ms, then down (three timeouts), then back at 500 ms after rise
    // (2) successes: its latency is 500 ms, not a mix with the old level.
    let settings = Settings::default();
    let mut samples: Vec<Sample> = (0..10).map(|i| ok("a", "w", T0 + i * 100, 100.0)).collect();
    for i in 10..13 {
        samples.push(timed_out("a", "w", T0 + i * 100, 200));
    }
    samples.push(ok("a", "w", T0 + 1300, 500.0));
    samples.push(ok("a", "w", T0 + 1400, 500.0));
    let refs: Vec<&Sample> = samples.iter().collect();
    let view = worker_view(&refs, &settings, T0 + 1500).unwrap();
    assert!(view.up);
    assert!((view.latency_ms.unwrap() - 500.0).abs() < 1e-9, "{view:?}");
}

fn with_connect(mut s: Sample, connect_ms: f64) -> Sample {
    if let Outcome::Ok(t) = &mut s.outcome {
        t.connect = Duration::from_secs_f64(connect_ms / 1000.0);
    }
    s
}

#[test]
fn the_connect_budget_follows_the_probe_budget_rule_and_needs_two_successes() {
    let samples = [
        with_connect(ok("a", "w1", T0, 20.0), 10.0),
        with_connect(ok("a", "w1", T0 + 1000, 20.0), 10.0),
    ];
    let refs: Vec<&Sample> = samples.iter().collect();
    // srtt 10, rttvar 0.75 * 5 = 3.75: max(10 + 15, 20) = 25.
    assert_eq!(connect_budget(&refs), Some(25.0));
    assert_eq!(connect_budget(&refs[..1]), None);
    // Failures do not feed it (Karn's rule).
    let failure = failed("a", "w1", T0 + 2000, FailureClass::ConnectTimeout);
    let mut with_failure = refs.clone();
    with_failure.push(&failure);
    assert_eq!(connect_budget(&with_failure), Some(25.0));
}

#[test]
fn rankings_carry_the_median_connect_budget_of_the_workers_holding_an_origin_up() {
    let p = pool(&["a"]);
    let settings = Settings::default();
    let docs = simulate(&p, &settings, 4, |_, now| {
        vec![
            with_connect(ok("a", "w1", now, 30.0), 10.0),
            with_connect(ok("a", "w2", now, 30.0), 40.0),
            with_connect(ok("a", "w3", now, 30.0), 1000.0),
        ]
    });
    let last = &docs.last().unwrap().origins[0];
    // Steady connects: the budget is 2 srtt per worker; the median worker's.
    assert_eq!(last.connect_budget_ms, Some(80.0), "{last:?}");
}
