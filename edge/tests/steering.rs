//! Properties of `band` steering (edge::steering, through
//! edge::decision::choose where the ranking matters).
//!
//! Shares are compared in absolute percentage points: "within ±3 %" means
//! an origin whose weight share is 25 % gets between 22 % and 28 % of the
//! keys. Over 100,000 keys the binomial standard deviation is at most
//! 0.16 points, so 3 points is honest slack, not a tuned threshold.

use std::sync::Arc;
use std::time::Duration;

use common::racer::ScriptedRacer;
use edge::decision::{choose, Choice, Freshness, OriginSet, Source};
use edge::handler::handle;
use edge::handler::Edge;
use edge::steering::{steer, water_fill, Ranked};
use origin_router::config::Config;
use origin_router::config::{
    OriginConfig, PoolConfig, SteeringConfig, SteeringKey, SteeringPolicy,
};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::MemoryStore;
use proptest::prelude::*;
use serde_json::Value;

mod common;

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
            band_taper: 0.5,
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
            let o = steer(&pool.steering, usable, &key(i)).unwrap().origin;
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
        let choice = choose(&pool, OriginSet::all(&pool), std::slice::from_ref(&doc), fresh(), NOW, &key);
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
        let chosen = steer(&pool.steering, &first, &key).unwrap();
        prop_assert_eq!(chosen.band, weights.len());
        let mut other: Vec<Ranked<'_>> = first
            .iter()
            .zip(&scores)
            .map(|(r, s)| Ranked { score: Some(*s), ..*r })
            .collect();
        other.rotate_left(rotate % weights.len());
        other.sort_by(|a, b| a.score.partial_cmp(&b.score).unwrap());
        let again = steer(&pool.steering, &other, &key).unwrap();
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
            // 50 ms best: the band ends at 60 ms (absolute), 60 ms
            // (relative), its taper at 65 ms.
            after_usable[leaving].score = Some(65.0);
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

    /// An origin whose score wanders across the band's edge (best 50 ms:
    /// edge 60 ms, the taper to 65 ms) keeps the share its faded weight
    /// gives it, at most its fading factor (±3 points), and a move from one score to another moves
    /// only keys onto or off it, about as many as its share changed: a
    /// score crossing the edge by a little moves a little, not its whole
    /// share.
    #[test]
    fn a_score_wandering_across_the_edge_moves_keys_in_proportion(
        weights in proptest::collection::vec(0.2f64..5.0, 3..6),
        drifting in 0usize..6,
        from in 58.0f64..67.0,
        to in 58.0f64..67.0,
    ) {
        let pool = pool(&weights, &[]);
        let d = 1 + drifting % (weights.len() - 1);
        let at = |score: f64| {
            let mut usable = all_at(&pool, 50.0);
            usable[d].score = Some(score);
            usable.sort_by(|a, b| a.score.partial_cmp(&b.score).unwrap());
            assign(&pool, &usable)
        };
        // Its faded weight's share, at most the faded factor itself (its
        // implicit cap of 1 fades too), worked out here independently of
        // the code.
        let share = |score: f64| {
            let factor = ((65.0 - score) / 5.0).clamp(0.0, 1.0);
            let rest: f64 = weights.iter().enumerate().filter(|(i, _)| *i != d).map(|(_, w)| w).sum();
            (weights[d] * factor / (rest + weights[d] * factor)).min(factor)
        };
        let (before, after) = (at(from), at(to));
        for (score, assigned) in [(from, &before), (to, &after)] {
            let got = shares(assigned, weights.len())[d];
            prop_assert!((got - share(score)).abs() <= TOLERANCE, "at {score}: {got} vs {}", share(score));
        }
        let mut moved = 0usize;
        for (b, a) in before.iter().zip(&after) {
            if a != b {
                prop_assert!(*a == d || *b == d, "a key moved between two steady origins");
                moved += 1;
            }
        }
        let expected = (share(from) - share(to)).abs();
        prop_assert!(
            (moved as f64 / KEYS as f64 - expected).abs() <= TOLERANCE,
            "{from} -> {to}: moved {moved}, expected {expected}"
        );
    }

    /// With caps in play too (the others capped at random, a heavy origin
    /// fading), a score walking across the edge and through the taper in
    /// 0.25 ms steps never moves more than 15 % of the keys in one step,
    /// where a hard edge would move the fading origin's whole share (at
    /// least a third of the keys here) at once; and past the taper it has
    /// none.
    #[test]
    fn with_caps_a_score_crossing_the_edge_never_moves_keys_by_the_share(
        others in proptest::collection::vec((0.2f64..3.0, proptest::option::of(0.05f64..1.0)), 1..4),
    ) {
        let mut weights: Vec<f64> = others.iter().map(|(w, _)| *w).collect();
        let mut caps: Vec<Option<f64>> = others.iter().map(|(_, c)| *c).collect();
        weights.push(5.0);
        caps.push(None);
        let pool = pool(&weights, &caps);
        let d = weights.len() - 1;
        let keys = KEYS / 5;
        let at = |score: f64| -> Vec<usize> {
            let mut usable = all_at(&pool, 50.0);
            usable[d].score = Some(score);
            (0..keys)
                .map(|i| {
                    let o = steer(&pool.steering, &usable, &key(i)).unwrap().origin;
                    pool.origins.iter().position(|p| p.id == o.id).unwrap()
                })
                .collect()
        };
        let mut previous = at(59.0);
        prop_assert!(previous.iter().filter(|o| **o == d).count() * 3 >= keys, "a heavy origin in the band");
        for step in 1..=28 {
            let score = 59.0 + 0.25 * step as f64;
            let now = at(score);
            let moved = previous.iter().zip(&now).filter(|(a, b)| a != b).count();
            prop_assert!(moved * 100 <= keys * 15, "{moved} of {keys} keys moved at {score} ms");
            // Never more than its fading factor (it has no cap of its own).
            let factor = ((65.0 - score) / 5.0).clamp(0.0, 1.0);
            let share = now.iter().filter(|o| **o == d).count() as f64 / keys as f64;
            prop_assert!(share <= factor + TOLERANCE, "{share} at {score} ms (factor {factor})");
            previous = now;
        }
        prop_assert!(previous.iter().all(|o| *o != d), "past the taper it has no keys");
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
        assert_eq!(
            steer(&pool.steering, &usable, &key(i)).unwrap().origin.id,
            "o0"
        );
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

/// Rankings fresh for 30 s, seen from `eu-west-1` with the built-in
/// geography.
fn fresh() -> Freshness<'static> {
    static NO_PROXIMITY: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    Freshness {
        region: "eu-west-1",
        proximity: &NO_PROXIMITY,
        max_age: Duration::from_secs(30),
    }
}

const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

fn band_config(key: &str) -> Config {
    Config::from_toml(
        &format!(
            r#"
            [routing]
            default_pool = "web"
            [pools.web]
            origins = [
                {{ id = "a", host = "origin-a.example.net" }},
                {{ id = "b", host = "origin-b.example.net" }},
                {{ id = "c", host = "origin-c.example.net" }},
            ]
            [pools.web.steering]
            policy = "band"
            band_absolute = "5ms"
            band_relative = 0.1
            key = "{key}"
            "#
        ),
        "steering.toml",
    )
    .unwrap()
}

fn event(uri: &str, cookie: Option<&str>) -> Value {
    let mut e: Value = serde_json::from_str(FIXTURE).unwrap();
    let request = &mut e["Records"][0]["cf"]["request"];
    request["uri"] = uri.into();
    if let Some(c) = cookie {
        request["headers"]["cookie"] = serde_json::json!([{"key": "Cookie", "value": c}]);
    }
    e
}

/// The origin (id and rewritten domain) `handle` sends the event to.
async fn routed(router: &Edge, event: Value) -> (String, Source, Option<usize>) {
    let h = handle(router, event, NOW).await.unwrap();
    let domain = h.request["origin"]["custom"]["domainName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(domain, format!("origin-{}.example.net", h.decision.origin));
    (h.decision.origin, h.decision.source, h.decision.band)
}

fn put(store: &MemoryStore, seq: u64, entries: &[(&str, OriginState, f64)]) {
    store.put(RankingDocument::new(
        "web",
        "eu-west-1",
        seq,
        NOW,
        entries
            .iter()
            .map(|(id, s, ms)| RankedOrigin::measured(id, *s, *ms, 2))
            .collect(),
    ));
}

/// Through `handle`: a band of two near-equal origins (c is outside it)
/// spreads URIs over both, each URI always to the same one; when b goes
/// down, b's URIs move to a and a's stay.
#[tokio::test(start_paused = true)]
async fn the_handler_spreads_a_band_by_uri_and_each_uri_stays() {
    let store = Arc::new(MemoryStore::new());
    // Band: best 20 ms, up to 25 ms (absolute) or 22 ms (relative); the
    // taper beyond it ends at 27.5 ms.
    put(
        &store,
        1,
        &[
            ("a", OriginState::Healthy, 20.0),
            ("b", OriginState::Healthy, 24.0),
            ("c", OriginState::Healthy, 28.0),
        ],
    );
    let router = common::edge(
        &band_config("uri"),
        "eu-west-1",
        store.clone(),
        ScriptedRacer::new(Some("a"), 0),
    );
    let mut first = std::collections::BTreeMap::new();
    for i in 0..200 {
        let uri = format!("/img/{i}.png");
        let (origin, source, band) = routed(&router, event(&uri, None)).await;
        assert!(
            matches!(source, Source::Table | Source::Cache),
            "{source:?}"
        );
        assert_eq!(band, Some(2));
        assert_ne!(origin, "c", "outside the band");
        let (again, _, _) = routed(&router, event(&uri, None)).await;
        assert_eq!(again, origin, "{uri} moved");
        first.insert(uri, origin);
    }
    let on_a = first.values().filter(|o| *o == "a").count();
    assert!((60..=140).contains(&on_a), "a has {on_a} of 200");

    // b goes down: its URIs move to a, a's stay. Past the cache TTL the
    // stale ranking answers once and a background refresh brings the new one.
    put(
        &store,
        2,
        &[
            ("a", OriginState::Healthy, 20.0),
            ("c", OriginState::Healthy, 28.0),
            ("b", OriginState::Down, 24.0),
        ],
    );
    tokio::time::advance(router.router().settings().cache_ttl + Duration::from_millis(1)).await;
    routed(&router, event("/warm", None)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    for (uri, before) in &first {
        let (now, _, band) = routed(&router, event(uri, None)).await;
        assert_eq!(now, "a", "{uri} (was on {before})");
        assert_eq!(band, Some(1));
    }
}

/// Session affinity by cookie: a session stays on its origin whatever the
/// URI; two sessions can land on different origins; no cookie falls back
/// to the viewer address; a race winner is not steered.
#[tokio::test(start_paused = true)]
async fn the_handler_keeps_a_cookie_session_on_one_origin() {
    let store = Arc::new(MemoryStore::new());
    put(
        &store,
        1,
        &[
            ("b", OriginState::Healthy, 20.0),
            ("a", OriginState::Healthy, 20.5),
            ("c", OriginState::Healthy, 20.9),
        ],
    );
    let router = common::edge(
        &band_config("cookie:sid"),
        "eu-west-1",
        store,
        ScriptedRacer::new(Some("a"), 0),
    );
    let mut seen = std::collections::BTreeSet::new();
    for s in 0..30 {
        let cookie = format!("theme=dark; sid=session-{s}");
        let (origin, _, band) = routed(&router, event("/", Some(&cookie))).await;
        assert_eq!(band, Some(3));
        for page in ["/a", "/b?x=1", "/c/d"] {
            let (o, _, _) = routed(&router, event(page, Some(&cookie))).await;
            assert_eq!(o, origin, "session-{s} moved on {page}");
        }
        seen.insert(origin);
    }
    assert_eq!(seen.len(), 3, "30 sessions over a band of three: {seen:?}");
    // Without the cookie: the viewer address (the fixture's), for any URI.
    let (no_cookie, _, _) = routed(&router, event("/x", Some("theme=dark"))).await;
    for page in ["/y", "/z"] {
        assert_eq!(routed(&router, event(page, None)).await.0, no_cookie);
    }

    // No ranking at all: the race winner serves every key, unsteered.
    let router = common::edge(
        &band_config("cookie:sid"),
        "eu-west-1",
        Arc::new(MemoryStore::new()),
        ScriptedRacer::new(Some("a"), 0),
    );
    for s in 0..10 {
        let cookie = format!("sid=session-{s}");
        let (origin, source, band) = routed(&router, event("/", Some(&cookie))).await;
        assert_eq!((origin.as_str(), source, band), ("a", Source::Race, None));
    }
}

/// The README's band example and the example config's steering block,
/// uncommented with `policy = "band"`, load and steer as they say.
#[test]
fn the_documented_band_configs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = &readme[readme.find("### Steering").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let snippet = &section[start..start + section[start..].find("```").unwrap()];
    let c = Config::from_toml(snippet, "README.md").unwrap();
    let web = &c.pools["web"];
    assert_eq!(web.steering.policy, SteeringPolicy::Band);
    assert_eq!(web.origins[0].max_share, Some(0.6));

    let example = std::fs::read_to_string(format!("{root}/examples/origin-router.toml")).unwrap();
    let mut uncommented = String::new();
    let mut in_steering = false;
    for line in example.lines() {
        if line.starts_with("# [pools.web.steering]") {
            in_steering = true;
        } else if line.starts_with("# Passive ejection") || !line.starts_with(['#', ' ']) {
            in_steering = false;
        }
        let line = match (in_steering, line.strip_prefix("# ")) {
            (true, Some(rest)) => rest.replace("\"fastest\"", "\"band\""),
            _ => line.to_string(),
        };
        uncommented.push_str(&line);
        uncommented.push('\n');
    }

    assert!(
        uncommented.contains("\n[pools.web.steering]\npolicy = \"band\""),
        "{uncommented}"
    );
    assert!(
        uncommented.contains("\n# [pools.web.outlier]"),
        "only steering"
    );
    let c = Config::from_toml(&uncommented, "example").unwrap();
    assert_eq!(c.pools["web"].steering.policy, SteeringPolicy::Band);
    assert_eq!(c.pools["web"].steering.key, SteeringKey::Uri);

    // The example's outlier block, uncommented, is the defaults it claims.
    let mut uncommented = String::new();
    let mut in_outlier = false;
    for line in example.lines() {
        if line.starts_with("# [pools.web.outlier]") {
            in_outlier = true;
        } else if !line.starts_with(['#', ' ']) {
            in_outlier = false;
        }
        let line = match (in_outlier, line.strip_prefix("# ")) {
            (true, Some(rest)) => rest.to_string(),
            _ => line.to_string(),
        };
        uncommented.push_str(&line);
        uncommented.push('\n');
    }
    assert!(
        uncommented.contains("\n[pools.web.outlier] ")
            && uncommented.contains("\nconsecutive_5xx = 5 ")
            && uncommented.contains("\nerror_ratio = 0.0 "),
        "{uncommented}"
    );
    let c = Config::from_toml(&uncommented, "example").unwrap();
    assert_eq!(
        c.pools["web"].outlier,
        origin_router::config::OutlierConfig::default()
    );
}

/// A hostile table seen through `choose`: the best with a NaN score, an
/// origin listed twice, an unknown origin with the best score. The choice
/// is always an origin of the pool, the band never counts one twice, and a
/// band that cannot be formed is the first usable.
#[test]
fn hostile_rankings_steer_within_the_pool_without_panicking() {
    let pool = pool(&[1.0, 1.0, 1.0], &[]);
    let choose_for = |origins: Vec<RankedOrigin>, key: &str| {
        let doc = RankingDocument::new("web", "eu-west-1", 1, NOW, origins);
        match choose(
            &pool,
            OriginSet::all(&pool),
            std::slice::from_ref(&doc),
            fresh(),
            NOW,
            key,
        ) {
            Choice::Ranked { origin, band, .. } => (origin.id.clone(), band),
            other => panic!("{other:?}"),
        }
    };
    let m = |id: &str, ms: f64| RankedOrigin::measured(id, OriginState::Healthy, ms, 2);
    let mut nan = m("o1", 5.0);
    nan.score = Some(f64::NAN);
    for i in 0..50 {
        assert_eq!(
            choose_for(vec![nan.clone(), m("o0", 5.0)], &key(i)),
            ("o1".into(), 1)
        );
    }
    // o0 twice: once in the band.
    let mut on_o0 = 0;
    for i in 0..2000 {
        let (id, band) = choose_for(vec![m("o0", 5.0), m("o2", 5.0), m("o0", 5.0)], &key(i));
        assert_eq!(band, 2);
        on_o0 += usize::from(id == "o0");
    }
    assert!((800..=1200).contains(&on_o0), "o0 took {on_o0} of 2000");
    // An unknown origin is not the best the band is measured from.
    for i in 0..50 {
        let (id, band) = choose_for(vec![m("evil", 0.001), m("o2", 50.0)], &key(i));
        assert_eq!((id.as_str(), band), ("o2", 1));
    }
}
