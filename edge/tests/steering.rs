//! Properties of `band` steering (edge::steering, through
//! edge::decision::choose where the ranking matters).
//!
//! Shares are compared in absolute percentage points: "within ±3 %" means
//! an origin whose weight share is 25 % gets between 22 % and 28 % of the
//! keys. Over 100,000 keys the binomial standard deviation is at most
//! 0.16 points, so 3 points is honest slack, not a tuned threshold.

use std::time::Duration;

use edge::decision::{choose, Choice};
use edge::steering::{steer, water_fill, Ranked};
use origin_router::config::{
    OriginConfig, PoolConfig, SteeringConfig, SteeringKey, SteeringPolicy,
};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use proptest::prelude::*;

const KEYS: usize = 100_000;
const TOLERANCE: f64 = 0.03;
const NOW: u64 = 1_780_000_000_000;

fn pool(weights: &[f64], caps: &[Option<f64>]) -> PoolConfig {
    PoolConfig {
        origins: weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut o = OriginConfig::http(&format!("o{i}"), "127.0.0.1", 8080 + i as u16);
                o.weight = *w;
                o.max_share = caps.get(i).copied().flatten();
                o
            })
            .collect(),
        steering: SteeringConfig {
            policy: SteeringPolicy::Band,
            band_absolute: Duration::from_millis(10),
            band_relative: 0.2,
            key: SteeringKey::Uri,
        },
        ..PoolConfig::default()
    }
}

/// Every origin of `pool`, healthy, at score `score`.
fn all_at(pool: &PoolConfig, score: f64) -> Vec<Ranked<'_>> {
    pool.origins
        .iter()
        .map(|origin| Ranked {
            origin,
            state: OriginState::Healthy,
            score: Some(score),
        })
        .collect()
}

fn key(i: usize) -> String {
    format!("/assets/{i}.js?v=3")
}

/// The origin index each of `KEYS` keys goes to.
fn assign(pool: &PoolConfig, usable: &[Ranked<'_>]) -> Vec<usize> {
    (0..KEYS)
        .map(|i| {
            let o = steer(pool, usable, &key(i)).unwrap().origin;
            pool.origins.iter().position(|p| p.id == o.id).unwrap()
        })
        .collect()
}

fn shares(assigned: &[usize], n: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n];
    for a in assigned {
        counts[*a] += 1;
    }
    counts
        .iter()
        .map(|c| *c as f64 / assigned.len() as f64)
        .collect()
}

fn state() -> impl Strategy<Value = OriginState> {
    prop_oneof![
        Just(OriginState::Healthy),
        Just(OriginState::Degraded),
        Just(OriginState::Down),
        Just(OriginState::Drained),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the ranking says and whatever the key, `choose` never
    /// steers to an origin the ranking holds down or drained, nor outside
    /// the pool, and chooses in the best usable state.
    #[test]
    fn a_down_or_drained_origin_is_never_chosen(
        entries in proptest::collection::vec((0usize..6, state(), 0.0f64..500.0), 1..8),
        weights in proptest::collection::vec(0.01f64..1000.0, 5),
        band_ms in 0u64..1000,
        band_relative in 0.0f64..10.0,
        key in ".{0,40}",
    ) {
        let mut pool = pool(&weights, &[]);
        pool.steering.band_absolute = Duration::from_millis(band_ms);
        pool.steering.band_relative = band_relative;
        // Ids o0..o4 are in the pool; o5 is not.
        let mut seen = std::collections::HashSet::new();
        let origins: Vec<RankedOrigin> = entries
            .iter()
            .filter(|(i, _, _)| seen.insert(*i))
            .map(|(i, s, ms)| RankedOrigin::measured(&format!("o{i}"), *s, *ms, 3))
            .collect();
        let doc = RankingDocument::new("web", "eu-west-1", 1, NOW, origins);
        let choice = choose(&pool, std::slice::from_ref(&doc), "eu-west-1", &Default::default(), Duration::from_secs(30), NOW, &key);
        let in_pool_usable: Vec<&RankedOrigin> = doc
            .origins
            .iter()
            .filter(|e| pool.origin(&e.id).is_some() && e.state.is_usable())
            .collect();
        match choice {
            Choice::Ranked { origin, band, .. } => {
                let e = doc.entry(&origin.id).unwrap();
                prop_assert!(e.state.is_usable(), "{e:?}");
                prop_assert!(pool.origin(&origin.id).is_some());
                prop_assert_eq!(e.state, in_pool_usable[0].state, "the best usable state");
                prop_assert!(band >= 1 && band <= in_pool_usable.len());
            }
            Choice::AllDown { .. } => prop_assert!(in_pool_usable.is_empty()),
            Choice::NoFreshRanking => prop_assert!(doc.origins.iter().all(|e| pool.origin(&e.id).is_none())),
        }
    }

    /// The same key gives the same origin while the band's members are the
    /// same, whatever their order and exact scores within it.
    #[test]
    fn a_key_keeps_its_origin_while_the_band_is_unchanged(
        weights in proptest::collection::vec(0.1f64..10.0, 2..6),
        scores in proptest::collection::vec(100.0f64..110.0, 6),
        rotate in 0usize..6,
        key in ".{0,64}",
    ) {
        let pool = pool(&weights, &[]);
        let first = all_at(&pool, 100.0);
        let chosen = steer(&pool, &first, &key).unwrap();
        prop_assert_eq!(chosen.band, weights.len());
        let mut other: Vec<Ranked<'_>> = first
            .iter()
            .zip(&scores)
            .map(|(r, s)| Ranked { score: Some(*s), ..*r })
            .collect();
        other.rotate_left(rotate % weights.len());
        other.sort_by(|a, b| a.score.partial_cmp(&b.score).unwrap());
        let again = steer(&pool, &other, &key).unwrap();
        prop_assert_eq!(again.band, weights.len());
        prop_assert_eq!(&chosen.origin.id, &again.origin.id);
    }
}

proptest! {
    // 100,000 keys per case: few cases, each a real check of the shares.
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Each origin's share of 100,000 keys is its weight share ±3 points.
    #[test]
    fn shares_follow_weights(weights in proptest::collection::vec(0.2f64..5.0, 2..6)) {
        let pool = pool(&weights, &[]);
        let got = shares(&assign(&pool, &all_at(&pool, 50.0)), weights.len());
        let total: f64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let want = w / total;
            prop_assert!((got[i] - want).abs() <= TOLERANCE, "o{i}: {} vs {want} ({got:?})", got[i]);
        }
    }

    /// When one origin leaves the band (its score rises out of it, or it
    /// goes down), only the keys it had move; they spread over the rest by
    /// weight. When it comes back, exactly those keys return.
    #[test]
    fn an_origin_leaving_the_band_moves_only_its_own_keys(
        weights in proptest::collection::vec(0.2f64..5.0, 3..6),
        leaving in 0usize..6,
        goes_down in any::<bool>(),
    ) {
        let pool = pool(&weights, &[]);
        let leaving = leaving % weights.len();
        let before_usable = all_at(&pool, 50.0);
        let before = assign(&pool, &before_usable);
        let mut after_usable = before_usable.clone();
        if goes_down {
            after_usable.remove(leaving);
        } else {
            // 50 ms best: the band ends at 60 ms (absolute), 60 ms (relative).
            after_usable[leaving].score = Some(61.0);
            after_usable.sort_by(|a, b| a.score.partial_cmp(&b.score).unwrap());
        }
        let after = assign(&pool, &after_usable);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            prop_assert_ne!(*a, leaving);
            if *b != leaving {
                prop_assert_eq!(a, b, "a key that was not on the leaving origin moved");
            } else {
                moved += 1;
            }
        }
        let had = before.iter().filter(|b| **b == leaving).count();
        prop_assert_eq!(moved, had);
        prop_assert_eq!(assign(&pool, &before_usable), before, "coming back restores every key");
        // The rest still follow their weights among themselves.
        let got = shares(&after, weights.len());
        let rest: f64 = weights.iter().enumerate().filter(|(i, _)| *i != leaving).map(|(_, w)| w).sum();
        for (i, w) in weights.iter().enumerate().filter(|(i, _)| *i != leaving) {
            prop_assert!((got[i] - w / rest).abs() <= TOLERANCE, "o{i}: {got:?}");
        }
    }

    /// `max_share` holds: each origin's share is its water-filled share
    /// ±3 points, never above its cap by more than that, when the caps of
    /// the band sum to at least 1.
    #[test]
    fn max_share_caps_hold(
        weights in proptest::collection::vec(0.2f64..5.0, 2..6),
        caps in proptest::collection::vec(proptest::option::of(0.05f64..1.0), 6),
    ) {
        let caps = &caps[..weights.len()];
        let cap_sum: f64 = caps.iter().map(|c| c.unwrap_or(1.0)).sum();
        prop_assume!(cap_sum >= 1.0);
        let pool = pool(&weights, caps);
        let got = shares(&assign(&pool, &all_at(&pool, 50.0)), weights.len());
        let want = water_fill(&weights, &caps.iter().map(|c| c.unwrap_or(1.0)).collect::<Vec<_>>());
        for i in 0..weights.len() {
            prop_assert!((got[i] - want[i]).abs() <= TOLERANCE, "o{i}: {got:?} vs {want:?}");
            if let Some(cap) = caps[i] {
                prop_assert!(got[i] <= cap + TOLERANCE, "o{i} above its cap {cap}: {got:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Water-filling: shares sum to 1, none above its cap, and the uncapped
    /// ones keep their weight ratios (each at least its plain weight share).
    #[test]
    fn water_filling_respects_caps_and_weight_ratios(
        weights in proptest::collection::vec(0.01f64..1000.0, 1..8),
        caps in proptest::collection::vec(0.01f64..=1.0, 8),
    ) {
        let caps = &caps[..weights.len()];
        let share = water_fill(&weights, caps);
        let sum: f64 = share.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-9, "{share:?}");
        let cap_sum: f64 = caps.iter().sum();
        let total: f64 = weights.iter().sum();
        if cap_sum >= 1.0 {
            for i in 0..weights.len() {
                prop_assert!(share[i] <= caps[i] + 1e-9, "{share:?} {caps:?}");
                if share[i] < caps[i] - 1e-9 {
                    prop_assert!(share[i] >= weights[i] / total - 1e-9, "{share:?}");
                    for j in 0..weights.len() {
                        if share[j] < caps[j] - 1e-9 {
                            let (ri, rj) = (share[i] / weights[i], share[j] / weights[j]);
                            prop_assert!((ri - rj).abs() <= 1e-9 * ri.max(rj), "{share:?}");
                        }
                    }
                }
            }
        } else {
            for i in 0..weights.len() {
                prop_assert!((share[i] - caps[i] / cap_sum).abs() < 1e-9);
            }
        }
    }
}

/// Under `fastest` the key changes nothing: the first usable, as before.
#[test]
fn fastest_ignores_the_key() {
    let mut pool = pool(&[1.0, 1.0, 1.0], &[]);
    pool.steering.policy = SteeringPolicy::Fastest;
    let usable = all_at(&pool, 5.0);
    for i in 0..1000 {
        assert_eq!(steer(&pool, &usable, &key(i)).unwrap().origin.id, "o0");
    }
}

/// Two near-equal origins, the default key: both get traffic, and a band
/// narrowed to nothing sends everything to the best.
#[test]
fn a_zero_band_is_fastest() {
    let pool = pool(&[1.0, 1.0], &[]);
    let mut usable = all_at(&pool, 5.0);
    usable[1].score = Some(5.5);
    let got = shares(&assign(&pool, &usable), 2);
    assert!(got[0] > 0.4 && got[1] > 0.4, "{got:?}");
    let mut narrowed = pool.clone();
    narrowed.steering.band_absolute = Duration::ZERO;
    narrowed.steering.band_relative = 0.0;
    let got = shares(&assign(&narrowed, &usable), 2);
    assert_eq!(got, [1.0, 0.0]);
}
