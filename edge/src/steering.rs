//! Steering: which of a ranking's usable origins takes this request.
//!
//! Pure: the pool, its usable ranked origins (best first, with scores) and
//! the request's key in, one origin out. No clock, no I/O, no randomness
//! beyond a fixed hash, so every edge container of every region sends a
//! key to the same origin while they see the same band.
//!
//! - `fastest`: the first usable origin (the behaviour before steering).
//! - `band`: the *candidates* are the usable origins in the best's state
//!   (healthy, or degraded when nothing is healthy: the ranking uses a
//!   degraded origin only after every healthy one, and so does the band)
//!   whose score is at most `best + band_absolute` **or** at most
//!   `best × (1 + band_relative)`, and beyond that edge, with a weight that
//!   fades (see *The taper* below). Among them the origin is chosen by
//!   weighted rendezvous (highest-random-weight) hashing: each candidate
//!   draws `s_i = -w_i / ln(u_i)`, with `u_i` in (0, 1) from [`key_hash`] of
//!   (key, origin id), and the largest `s_i` wins. `-ln(u_i)` is an Exp(1)
//!   variate, so origin `i` wins with probability `w_i / Σw` exactly, a key
//!   keeps its origin while the band is unchanged, and an origin leaving
//!   the band moves only the keys it had (every other draw is unchanged).
//! - `max_share` caps one origin's share by *water-filling* the weights
//!   before hashing: an origin whose weight share exceeds its cap gets
//!   exactly its cap as effective weight, and what it gives up is spread
//!   over the uncapped candidates in proportion to their weights (repeated
//!   until no candidate is above its cap). Guarantee: when the caps of the
//!   band's candidates sum to at least 1, every origin's expected share is
//!   at most its cap and the uncapped ones keep their weight ratios. When
//!   they sum to less than 1 (say one candidate with `max_share = 0.5`),
//!   no split can honour them and every request must still go somewhere:
//!   the band is then split in proportion to the caps. Capping makes the
//!   effective weights depend on who is in the band, so with caps a band
//!   change can move somewhat more keys than the leaving origin's own.
//!
//! The taper. Membership with a hard edge flaps: an origin whose smoothed
//! score wanders across the edge by a few percent enters and leaves the
//! band with each ranking, and each time its whole share of keys moves
//! (their caches at the other origins go cold, then its own). Hysteresis
//! would need each container to remember the last band, and containers
//! started at different times would then disagree about the same ranking.
//! A taper needs no memory: with the band's edge at `E = max(best +
//! band_absolute, best × (1 + band_relative))` and its width `W = E − best`,
//! a candidate scoring `s` in `(E, E + band_taper × W)` keeps the fraction
//! `f = 1 − (s − E) / (band_taper × W)` of its weight, and its cap (its
//! `max_share`, or 1 when it has none) is multiplied by `f` too, so its
//! share is at most `f` × its cap; one at or beyond the taper's end is out.
//! When the faded caps sum below 1 (they cannot all hold), each fading
//! member gets exactly its faded cap and the members within the edge share
//! the rest in proportion to their caps. Every share is then a continuous
//! function of the scores, and a fading origin's falls to zero at the
//! taper's end no faster than `f` does: a small move of a score moves few
//! keys, never a whole share at once. Without caps in play, lowering one
//! origin's weight lowers only its own draws, so a score moving within the
//! taper moves keys only onto or off that origin, about as many as its
//! share changed. Where a cap binds, the effective weights depend on
//! everyone's, so a few keys may also move between two steady origins (as
//! with any band change under caps, see above). The cap fades with the
//! weight so that a capped best makes no cliff: with `a` capped at 0.5 and
//! `b` fading, a cap of 1 left on `b` would give it half the band down to
//! the taper's last microsecond, then nothing. `band_taper = 0` is the
//! hard edge.
//!
//! A band with no candidates cannot happen when the best is usable with a
//! finite score and a positive weight, but a hostile table or a future
//! config could break that (a NaN or infinite score, no score at all): the
//! request then goes to the first usable origin, with a log line, never a
//! panic.

use origin_router::config::{OriginConfig, SteeringConfig, SteeringPolicy};
use origin_router::document::OriginState;

/// A usable ranked origin, as the decision hands it to steering.
#[derive(Debug, Clone, Copy)]
pub struct Ranked<'p> {
    pub origin: &'p OriginConfig,
    pub state: OriginState,
    /// The ranking's score (latency / weight, ms); lower is better.
    pub score: Option<f64>,
}

/// The steered choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steered<'p> {
    pub origin: &'p OriginConfig,
    /// How many origins the band held, fading ones past its edge included
    /// (1 under `fastest`, and when a band could not be formed).
    pub band: usize,
}

/// Chooses among `usable` (best first; every entry usable and of `pool`).
/// `None` only when `usable` is empty.
pub fn steer<'p>(
    steering: &SteeringConfig,
    usable: &[Ranked<'p>],
    key: &str,
) -> Option<Steered<'p>> {
    let first = usable.first()?;
    let fastest = Steered {
        origin: first.origin,
        band: 1,
    };
    if steering.policy == SteeringPolicy::Fastest {
        return Some(fastest);
    }
    let band = band(steering, usable);
    if band.is_empty() {
        tracing::warn!(
            best = %first.origin.id,
            score = ?first.score,
            "no origin qualifies for the band (no finite score or no positive weight): using the first usable"
        );
        return Some(fastest);
    }
    let weights = capped_weights(&band);
    let kh = KeyHash::new(key);
    let mut best: Option<(f64, &'p OriginConfig)> = None;
    for (m, w) in band.iter().zip(&weights) {
        let c = &m.ranked;
        let draw = rendezvous_draw(kh.with_origin(&c.origin.id), *w);
        // Ties (practically impossible) go to the better-ranked origin.
        if best.is_none_or(|(b, _)| draw > b) {
            best = Some((draw, c.origin));
        }
    }
    match best {
        Some((_, origin)) => Some(Steered {
            origin,
            band: band.len(),
        }),
        None => Some(fastest),
    }
}

/// One candidate of the band, with the part of its weight it keeps: 1
/// within the band, less in the taper beyond its edge.
#[derive(Debug, Clone, Copy)]
pub struct Member<'p> {
    pub ranked: Ranked<'p>,
    /// In (0, 1].
    pub factor: f64,
}

/// The band's members of `usable`, in rank order: the candidates within
/// its edge, and those fading past it (they count in [`Steered::band`]).
pub fn band<'p>(steering: &SteeringConfig, usable: &[Ranked<'p>]) -> Vec<Member<'p>> {
    let Some(first) = usable.first() else {
        return Vec::new();
    };
    let Some(best) = first.score.filter(|s| s.is_finite() && *s >= 0.0) else {
        return Vec::new();
    };
    let edge = (best + steering.band_absolute.as_secs_f64() * 1000.0)
        .max(best * (1.0 + steering.band_relative));
    // A hostile best (1e307) can overflow the width: no taper then.
    let taper = Some((edge - best) * steering.band_taper)
        .filter(|t| t.is_finite())
        .unwrap_or(0.0);
    let factor = |s: f64| -> f64 {
        if s <= edge {
            1.0
        } else if taper > 0.0 && s < edge + taper {
            1.0 - (s - edge) / taper
        } else {
            0.0
        }
    };
    let mut seen: Vec<&str> = Vec::with_capacity(usable.len());
    let mut band = Vec::with_capacity(usable.len());
    for r in usable {
        // An origin listed twice (a table the store did not check) counts
        // once, at its first place, whether or not that place qualifies.
        if seen.contains(&r.origin.id.as_str()) {
            continue;
        }
        seen.push(&r.origin.id);
        if r.state != first.state || !(r.origin.weight.is_finite() && r.origin.weight > 0.0) {
            continue;
        }
        let Some(s) = r.score.filter(|s| s.is_finite()) else {
            continue;
        };
        let factor = factor(s);
        if factor > 0.0 {
            band.push(Member { ranked: *r, factor });
        }
    }
    band
}

/// Effective weights of the band's members after the taper and
/// `max_share` water-filling (see the module docs); they sum to 1.
pub fn capped_weights(band: &[Member<'_>]) -> Vec<f64> {
    let weights: Vec<f64> = band
        .iter()
        .map(|m| m.ranked.origin.weight * m.factor)
        .collect();
    let caps: Vec<f64> = band
        .iter()
        .map(|m| {
            let cap = m
                .ranked
                .origin
                .max_share
                .filter(|c| c.is_finite() && *c > 0.0)
                .map_or(1.0, |c| c.min(1.0));
            // A fading origin's cap (1 when it has none) fades with it:
            // otherwise an origin nearly out of the band would take all a
            // capped best gives up, and its share would fall off a cliff
            // at the taper's end.
            cap * m.factor
        })
        .collect();
    if caps.iter().sum::<f64>() >= 1.0 {
        return water_fill(&weights, &caps);
    }
    // The caps cannot hold. Fading members get their faded caps; what is
    // left goes to the members within the edge in proportion to their
    // caps (the best is always one). Without fading members this is
    // `water_fill`'s own split in proportion to the caps.
    let fading: f64 = band
        .iter()
        .zip(&caps)
        .filter(|(m, _)| m.factor < 1.0)
        .map(|(_, c)| c)
        .sum();
    let within: f64 = band
        .iter()
        .zip(&caps)
        .filter(|(m, _)| m.factor >= 1.0)
        .map(|(_, c)| c)
        .sum();
    if within <= 0.0 {
        // No member within the edge (only when the best itself has no
        // usable weight, which validation refuses): by the caps alone.
        return water_fill(&weights, &caps);
    }
    band.iter()
        .zip(&caps)
        .map(|(m, c)| {
            if m.factor < 1.0 {
                *c
            } else {
                (1.0 - fading) * c / within
            }
        })
        .collect()
}

/// Shares proportional to `weights`, each at most its cap, summing to 1;
/// proportional to the caps when the caps sum below 1.
pub fn water_fill(weights: &[f64], caps: &[f64]) -> Vec<f64> {
    let cap_sum: f64 = caps.iter().sum();
    if cap_sum < 1.0 {
        return caps.iter().map(|c| c / cap_sum).collect();
    }
    let mut share = vec![0.0; weights.len()];
    let mut fixed = vec![false; weights.len()];
    let mut left = 1.0;
    // Each pass fixes at least one origin at its cap, or ends.
    for _ in 0..=weights.len() {
        let free: f64 = weights
            .iter()
            .zip(&fixed)
            .filter(|(_, f)| !**f)
            .map(|(w, _)| w)
            .sum();
        if free <= 0.0 {
            break;
        }
        let mut capped_any = false;
        for i in 0..weights.len() {
            if !fixed[i] && left * weights[i] / free > caps[i] {
                fixed[i] = true;
                share[i] = caps[i];
                left -= caps[i];
                capped_any = true;
            }
        }
        if !capped_any {
            for i in 0..weights.len() {
                if !fixed[i] {
                    share[i] = left * weights[i] / free;
                }
            }
            break;
        }
    }
    share
}

/// `-w / ln(u)` with `u` in (0, 1) from the hash's top 53 bits: the
/// weighted rendezvous draw.
fn rendezvous_draw(hash: u64, weight: f64) -> f64 {
    // (h + 0.5) / 2^53: never 0 or 1, so ln(u) is finite and negative.
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fixed hash of (key, origin id): 64-bit FNV-1a over the key's bytes,
/// one 0xFF byte (never part of UTF-8 text, so ("ab", "c") and ("a", "bc")
/// differ), the origin id's bytes, then MurmurHash3's 64-bit finalizer
/// (`fmix64`) so that every output bit depends on every input bit. Chosen
/// because it is fixed and documented: Rust's `DefaultHasher` is SipHash
/// with per-process random keys, so two containers would disagree.
pub fn key_hash(key: &str, origin_id: &str) -> u64 {
    KeyHash::new(key).with_origin(origin_id)
}

/// FNV-1a state after the key and separator, reused for every candidate.
struct KeyHash(u64);

impl KeyHash {
    fn new(key: &str) -> Self {
        KeyHash(fnv1a(fnv1a(FNV_OFFSET, key.as_bytes()), &[0xff]))
    }

    fn with_origin(&self, origin_id: &str) -> u64 {
        fmix64(fnv1a(self.0, origin_id.as_bytes()))
    }
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::config::PoolConfig;
    use origin_router::config::{SteeringConfig, SteeringKey};
    use std::time::Duration;

    fn origin(id: &str, weight: f64, max_share: Option<f64>) -> OriginConfig {
        let mut o = OriginConfig::http(id, "127.0.0.1", 8080);
        o.weight = weight;
        o.max_share = max_share;
        o
    }

    fn band_pool(origins: Vec<OriginConfig>) -> PoolConfig {
        PoolConfig {
            origins,
            steering: SteeringConfig {
                policy: SteeringPolicy::Band,
                band_absolute: Duration::from_millis(10),
                band_relative: 0.2,
                band_taper: 0.0,
                key: SteeringKey::Uri,
            },
            ..PoolConfig::default()
        }
    }

    fn ranked<'p>(pool: &'p PoolConfig, scores: &[(&str, Option<f64>)]) -> Vec<Ranked<'p>> {
        scores
            .iter()
            .map(|(id, s)| Ranked {
                origin: pool.origin(id).unwrap(),
                state: OriginState::Healthy,
                score: *s,
            })
            .collect()
    }

    #[test]
    fn the_hash_is_fixed_across_builds_and_processes() {
        // Pinned values (computed independently, in Python): a change here
        // re-routes every key of every band.
        assert_eq!(key_hash("", ""), fmix64(fnv1a(FNV_OFFSET, &[0xff])));
        assert_eq!(key_hash("/index.html", "eu"), 0x3dbf_5bc6_0cd8_30a7);
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }

    #[test]
    fn the_band_takes_either_margin_and_only_the_best_state() {
        let pool = band_pool(vec![
            origin("a", 1.0, None),
            origin("b", 1.0, None),
            origin("c", 1.0, None),
            origin("d", 1.0, None),
        ]);
        // best 100: absolute up to 110, relative up to 120.
        let usable = ranked(
            &pool,
            &[
                ("a", Some(100.0)),
                ("b", Some(119.0)),
                ("c", Some(121.0)),
                ("d", None),
            ],
        );
        let ids: Vec<_> = band(&pool.steering, &usable)
            .iter()
            .map(|m| m.ranked.origin.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        // best 1: relative up to 1.2, absolute up to 11.
        let usable = ranked(
            &pool,
            &[("a", Some(1.0)), ("b", Some(11.0)), ("c", Some(11.5))],
        );
        assert_eq!(band(&pool.steering, &usable).len(), 2);
        // A degraded origin never joins a healthy best's band.
        let mut usable = ranked(&pool, &[("a", Some(1.0)), ("b", Some(1.0))]);
        usable[1].state = OriginState::Degraded;
        assert_eq!(band(&pool.steering, &usable).len(), 1);
    }

    #[test]
    fn past_the_edge_the_weight_fades_over_the_taper() {
        let mut pool = band_pool(vec![
            origin("a", 1.0, None),
            origin("b", 2.0, Some(0.8)),
            origin("c", 1.0, None),
        ]);
        pool.steering.band_taper = 0.5;
        // best 50: the edge is 60 (both margins), the taper ends at 65.
        let factors = |pool: &PoolConfig, b: f64| -> Vec<(String, f64)> {
            let usable = ranked(
                pool,
                &[("a", Some(50.0)), ("b", Some(b)), ("c", Some(66.0))],
            );
            band(&pool.steering, &usable)
                .iter()
                .map(|m| (m.ranked.origin.id.clone(), m.factor))
                .collect()
        };
        assert_eq!(factors(&pool, 60.0), [("a".into(), 1.0), ("b".into(), 1.0)]);
        assert_eq!(factors(&pool, 62.5), [("a".into(), 1.0), ("b".into(), 0.5)]);
        assert_eq!(factors(&pool, 65.0), [("a".into(), 1.0)]);
        // The weight and the cap both fade: b (weight 2, cap 0.8) at half
        // has weight 1 and cap 0.4: the even split its weight gives it is
        // cut to 0.4 by its faded cap.
        let weights = |pool: &PoolConfig| {
            let usable = ranked(pool, &[("a", Some(50.0)), ("b", Some(62.5))]);
            capped_weights(&band(&pool.steering, &usable))
        };
        let close = |w: Vec<f64>, want: [f64; 2]| {
            assert!(
                (w[0] - want[0]).abs() < 1e-12 && (w[1] - want[1]).abs() < 1e-12,
                "{w:?} vs {want:?}"
            )
        };
        close(weights(&pool), [0.6, 0.4]);
        // Caps that cannot hold: a (cap 0.05) within the edge, b fading at
        // 0.5 (cap 0.8, faded 0.4): b gets its faded cap, a the rest.
        pool.origins[0].max_share = Some(0.05);
        close(weights(&pool), [0.6, 0.4]);
        // b uncapped: its faded cap is 0.5.
        pool.origins[1].max_share = None;
        close(weights(&pool), [0.5, 0.5]);
        pool.origins[0].max_share = None;
        // A hard edge: no taper.
        pool.steering.band_taper = 0.0;
        assert_eq!(factors(&pool, 60.1), [("a".into(), 1.0)]);
        // A zero-width band has no taper either, whatever band_taper says.
        pool.steering.band_taper = 10.0;
        pool.steering.band_absolute = Duration::ZERO;
        pool.steering.band_relative = 0.0;
        assert_eq!(factors(&pool, 50.0), [("a".into(), 1.0), ("b".into(), 1.0)]);
        assert_eq!(factors(&pool, 50.001), [("a".into(), 1.0)]);
    }

    #[test]
    fn a_duplicate_counts_at_its_first_place_and_a_huge_best_has_no_taper() {
        let mut pool = band_pool(vec![origin("a", 1.0, None), origin("b", 1.0, None)]);
        pool.steering.band_taper = 0.5;
        // b's first listing has no score: its second one does not let it in.
        let usable = ranked(&pool, &[("a", Some(50.0)), ("b", None), ("b", Some(50.0))]);
        assert_eq!(band(&pool.steering, &usable).len(), 1);
        // A width that overflows: members are those within the edge, at
        // full weight, and nothing past it.
        pool.steering.band_relative = 10.0;
        pool.steering.band_taper = 10.0;
        // Edge 1.1e308, width 1e308, taper 1e309 = inf: b at 1.5e308 is
        // past the edge and out (an infinite taper would keep it whole).
        let usable = ranked(&pool, &[("a", Some(1e307)), ("b", Some(1.5e308))]);
        let members = band(&pool.steering, &usable);
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].factor, 1.0);
    }

    #[test]
    fn hostile_scores_and_weights_fall_back_to_the_first_usable() {
        let mut pool = band_pool(vec![origin("a", 1.0, None), origin("b", 1.0, None)]);
        for best in [None, Some(f64::NAN), Some(f64::INFINITY), Some(-1.0)] {
            let usable = ranked(&pool, &[("a", best), ("b", Some(1.0))]);
            for key in ["", "/x", "/y", "/z"] {
                assert_eq!(
                    steer(&pool.steering, &usable, key),
                    Some(Steered {
                        origin: &pool.origins[0],
                        band: 1
                    }),
                    "{best:?}"
                );
            }
        }
        // A weight of 0 or NaN (refused by validation, but the type allows it).
        pool.origins[0].weight = 0.0;
        pool.origins[1].weight = f64::NAN;
        let usable = ranked(&pool, &[("a", Some(1.0)), ("b", Some(1.0))]);
        assert_eq!(steer(&pool.steering, &usable, "/k").unwrap().origin.id, "a");
        // NaN in a later entry only leaves it out of the band.
        let pool = band_pool(vec![origin("a", 1.0, None), origin("b", 1.0, None)]);
        let usable = ranked(&pool, &[("a", Some(1.0)), ("b", Some(f64::NAN))]);
        assert_eq!(steer(&pool.steering, &usable, "/k").unwrap().band, 1);
        // The best without a usable weight, the rest fading and capped:
        // finite weights that sum to 1, never a division by zero.
        let mut pool = band_pool(vec![origin("a", 0.0, None), origin("b", 1.0, Some(0.3))]);
        pool.steering.band_taper = 0.5;
        let usable = ranked(&pool, &[("a", Some(50.0)), ("b", Some(62.0))]);
        let w = capped_weights(&band(&pool.steering, &usable));
        assert!(
            w.iter().all(|w| w.is_finite()) && (w.iter().sum::<f64>() - 1.0).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(steer(&pool.steering, &usable, "/k").unwrap().origin.id, "b");
        assert_eq!(steer(&pool.steering, &[], "/k"), None);
    }

    #[test]
    fn fastest_is_the_first_usable_whatever_the_key() {
        let mut pool = band_pool(vec![origin("a", 1.0, None), origin("b", 1.0, None)]);
        pool.steering.policy = SteeringPolicy::Fastest;
        let usable = ranked(&pool, &[("b", Some(5.0)), ("a", Some(5.0))]);
        for key in ["", "/1", "/2", "/3", "/4"] {
            assert_eq!(steer(&pool.steering, &usable, key).unwrap().origin.id, "b");
        }
    }

    #[test]
    fn water_filling_caps_and_redistributes_by_weight() {
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
        };
        // No caps: plain weight shares.
        assert!(close(&water_fill(&[1.0, 3.0], &[1.0, 1.0]), &[0.25, 0.75]));
        // b capped at 0.5, the rest to a.
        assert!(close(&water_fill(&[1.0, 3.0], &[1.0, 0.5]), &[0.5, 0.5]));
        // c capped at 0.2; a and b split 0.8 by 1:3, then b (0.6) is under its 0.7.
        assert!(close(
            &water_fill(&[1.0, 3.0, 4.0], &[1.0, 0.7, 0.2]),
            &[0.2, 0.6, 0.2]
        ));
        // Capping one pushes another over its cap: a second pass.
        assert!(close(
            &water_fill(&[1.0, 1.0, 8.0], &[1.0, 0.3, 0.1]),
            &[0.6, 0.3, 0.1]
        ));
        // Caps that cannot hold: proportional to the caps.
        assert!(close(&water_fill(&[1.0, 1.0], &[0.3, 0.2]), &[0.6, 0.4]));
        assert!(close(&water_fill(&[5.0], &[0.5]), &[1.0]));
    }
}
