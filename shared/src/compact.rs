//! The compact ranking: one (pool, region) ranking and the pool's controls
//! in force, as a region's leader writes them to the CloudFront
//! KeyValueStore and the generated CloudFront Function reads them.
//!
//! A KeyValueStore value holds at most 1 KB (CloudFront Developer Guide,
//! "Working with KeyValueStore", quotas), and a pool may hold 64 origins.
//! A ranking document in JSON takes about 150 bytes per origin, so the
//! value is a line of text instead, and origins are named by their index in
//! the pool's configured order (one character), not by id. Both sides are
//! generated from the same bundled config; the pool's *fingerprint* (a hash
//! of its origin ids in order) travels with every value, and a reader whose
//! config does not have the same fingerprint ignores the value, so a
//! renamed or reordered pool can never send traffic to the wrong origin.
//!
//! ```text
//! value    = "or1" ";" fingerprint ";" seq ";" generated_at ";" origins ";" controls
//! origins  = [ entry *( "," entry ) ]          best first, as the ranking orders them
//! entry    = index state [ score ] [ ":" connect ]
//! controls = [ control *( "," control ) ]
//! control  = kind index set_at "@" until "@" region
//! ```
//!
//! - `fingerprint`: 8 lower-case hex digits, [`fingerprint`];
//! - `seq`, `generated_at` (Unix ms), `set_at`, `until` (Unix ms), `score`
//!   (µs, the ranking's score in ms × 1000, rounded) and `connect` (the
//!   connect budget in ms, rounded up): base 36, lower case;
//! - `index`: one character of [`INDEX_ALPHABET`], the origin's place in
//!   the pool's config;
//! - `state`: `h` healthy, `g` degraded, `d` down, `x` drained;
//! - `kind`: `d` drain, `o` override; `region` as the control names it
//!   (a region, or `all-regions`).
//!
//! Scores travel in whole microseconds: the ranking engine rounds scores to
//! that already, so a prober's ranking survives the trip exactly. The edge
//! chooses from the decoded value ([`decode`]) exactly as the function
//! does, which is how the two are compared (`edge/tests/function.rs`).

use std::fmt::Write as _;

use thiserror::Error;

use crate::config::PoolConfig;
use crate::control::{Control, ControlKind};
use crate::document::{OriginState, RankedOrigin, RankingDocument, SCHEMA_VERSION};
use crate::sample::UnixMillis;

/// Most base-36 digits of a number the reader takes (`generated_at`,
/// `score`, `connect`, `set_at`, `until`): 36^10 - 1 is below 2^53, so the
/// function's `parseInt` reads every one exactly, and the Rust reader
/// refuses a longer one as the function does.
pub const MAX_DIGITS: usize = 10;
/// The value's format tag and version.
pub const TAG: &str = "or1";
/// Largest KeyValueStore value, bytes (CloudFront Developer Guide, quotas
/// on KeyValueStore: "Maximum size of a value: 1 KB").
pub const MAX_VALUE_BYTES: usize = 1024;
/// Largest KeyValueStore key, characters (same page: 512).
pub const MAX_KEY_CHARS: usize = 512;
/// An origin's index as one character: index `i` is the `i`-th character.
/// 64 characters for [`crate::config::MAX_ORIGINS`] origins.
pub const INDEX_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const _: () = assert!(INDEX_ALPHABET.len() >= crate::config::MAX_ORIGINS);

/// Why a value was not read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompactError {
    #[error("value is {0} bytes, larger than the {MAX_VALUE_BYTES}-byte KeyValueStore limit")]
    TooLarge(usize),
    #[error("value does not start with `{TAG};`: not an Origin Router ranking of this version")]
    Tag,
    #[error("value was written for another configuration of the pool (fingerprint {found}, this config's is {expected})")]
    Fingerprint { found: String, expected: String },
    #[error("value's {field} `{text}` is malformed")]
    Malformed { field: &'static str, text: String },
    #[error("value names origin index {0}, which the pool does not have")]
    UnknownIndex(String),
}

/// The KeyValueStore key of (pool, region): `pool/region`. Both are names
/// (`[A-Za-z0-9_.-]`, at most 64 characters), so the key is unambiguous
/// and well within [`MAX_KEY_CHARS`].
pub fn key(pool: &str, region: &str) -> String {
    format!("{pool}/{region}")
}

/// The pool's fingerprint: 32-bit FNV-1a over its origin ids in config
/// order, each followed by a newline, as 8 hex digits.
pub fn fingerprint(pool: &PoolConfig) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for o in &pool.origins {
        for b in o.id.bytes().chain(std::iter::once(b'\n')) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

/// An encoded value, and how many of the ranking's last (least preferred)
/// origins had to be left out to fit [`MAX_VALUE_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub value: String,
    pub dropped_origins: usize,
}

/// Encodes `doc` (a ranking of `pool`) with the pool's `controls` that
/// have not ended at `now` and name an origin of the pool. Ranking entries
/// naming no origin of the pool are left out. When the value would exceed
/// [`MAX_VALUE_BYTES`], the least preferred origins are left out until it
/// fits (the caller logs it; realistic pools of 64 origins fit whole, see
/// the tests); when even no origin does not fit, the controls are too many
/// and the error says so.
pub fn encode(
    pool: &PoolConfig,
    doc: &RankingDocument,
    controls: &[Control],
    now: UnixMillis,
) -> Result<Encoded, CompactError> {
    let index = |id: &str| pool.origins.iter().position(|o| o.id == id);
    let mut entries: Vec<String> = Vec::with_capacity(doc.origins.len());
    let mut seen = [false; crate::config::MAX_ORIGINS];
    for e in &doc.origins {
        let Some(i) = index(&e.id).filter(|i| *i < INDEX_ALPHABET.len()) else {
            continue;
        };
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let mut s = String::with_capacity(16);
        s.push(INDEX_ALPHABET[i] as char);
        s.push(state_char(e.state));
        if let Some(score) = e.score.filter(|s| s.is_finite() && *s >= 0.0) {
            s.push_str(&base36((score * 1000.0).round() as u64));
        }
        if let Some(c) = e.connect_budget_ms.filter(|c| c.is_finite() && *c >= 0.0) {
            s.push(':');
            s.push_str(&base36(c.ceil() as u64));
        }
        entries.push(s);
    }
    let mut control_text = String::new();
    for c in controls {
        let Some(i) = index(&c.origin).filter(|i| *i < INDEX_ALPHABET.len()) else {
            continue;
        };
        // Ended, or times beyond what a reader takes (never in force: an
        // until or set_at past the year 100,000).
        if now >= c.until
            || base36(c.until).len() > MAX_DIGITS
            || base36(c.set_at).len() > MAX_DIGITS
        {
            continue;
        }
        if !control_text.is_empty() {
            control_text.push(',');
        }
        let kind = match c.kind {
            ControlKind::Drain => 'd',
            ControlKind::Override => 'o',
        };
        let _ = write!(
            control_text,
            "{kind}{}{}@{}@{}",
            INDEX_ALPHABET[i] as char,
            base36(c.set_at),
            base36(c.until),
            c.region
        );
    }
    let head = format!(
        "{TAG};{};{};{};",
        fingerprint(pool),
        base36(doc.seq),
        base36(doc.generated_at)
    );
    let total = entries.len();
    let mut kept = total;
    loop {
        let value = format!("{head}{};{control_text}", entries[..kept].join(","));
        if value.len() <= MAX_VALUE_BYTES {
            return Ok(Encoded {
                value,
                dropped_origins: total - kept,
            });
        }
        if kept == 0 {
            return Err(CompactError::TooLarge(value.len()));
        }
        kept -= 1;
    }
}

/// Reads a value of `pool` (for `region`) back: the ranking as the
/// function sees it (ids from the config; success ratio, votes and latency
/// are not carried and read as neutral values) and the controls, for the
/// pool `pool_name`. Refuses a value of another fingerprint, version or
/// size, and any malformed part: a value is used whole or not at all.
pub fn decode(
    pool_name: &str,
    pool: &PoolConfig,
    region: &str,
    value: &str,
) -> Result<(RankingDocument, Vec<Control>), CompactError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(CompactError::TooLarge(value.len()));
    }
    let parts: Vec<&str> = value.split(';').collect();
    let [tag, fp, seq, at, origins, controls] = parts[..] else {
        return Err(CompactError::Tag);
    };
    if tag != TAG {
        return Err(CompactError::Tag);
    }
    let expected = fingerprint(pool);
    if fp != expected {
        return Err(CompactError::Fingerprint {
            found: fp.to_string(),
            expected,
        });
    }
    let digits = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    // At most MAX_DIGITS digits: what the function reads exactly.
    let number = |field: &'static str, text: &str| {
        u64::from_str_radix(text, 36)
            .ok()
            .filter(|_| digits(text) && text.len() <= MAX_DIGITS)
            .ok_or_else(|| CompactError::Malformed {
                field,
                text: clip(text),
            })
    };
    let origin_at = |c: u8| -> Result<&crate::config::OriginConfig, CompactError> {
        INDEX_ALPHABET
            .iter()
            .position(|a| *a == c)
            .and_then(|i| pool.origins.get(i))
            .ok_or_else(|| CompactError::UnknownIndex((c as char).to_string()))
    };
    let mut ranked = Vec::new();
    let mut seen = [false; INDEX_ALPHABET.len()];
    for entry in origins.split(',').filter(|e| !e.is_empty()) {
        let bytes = entry.as_bytes();
        let malformed = || CompactError::Malformed {
            field: "origin entry",
            text: clip(entry),
        };
        if bytes.len() < 2 {
            return Err(malformed());
        }
        let origin = origin_at(bytes[0])?;
        let i = INDEX_ALPHABET
            .iter()
            .position(|a| *a == bytes[0])
            .unwrap_or(0);
        if std::mem::replace(&mut seen[i], true) {
            return Err(CompactError::Malformed {
                field: "origin entry (index listed twice)",
                text: clip(entry),
            });
        }
        let state = match bytes[1] {
            b'h' => OriginState::Healthy,
            b'g' => OriginState::Degraded,
            b'd' => OriginState::Down,
            b'x' => OriginState::Drained,
            _ => return Err(malformed()),
        };
        let rest = &entry[2..];
        let (score, connect) = match rest.split_once(':') {
            Some((s, c)) => (s, Some(c)),
            None => (rest, None),
        };
        let score = if score.is_empty() {
            None
        } else {
            Some(number("score", score)? as f64 / 1000.0)
        };
        let connect = connect
            .map(|c| number("connect budget", c).map(|c| c as f64))
            .transpose()?;
        ranked.push(RankedOrigin {
            id: origin.id.clone(),
            state,
            score,
            latency_ms: score,
            connect_budget_ms: connect,
            success_ratio: if state.is_usable() { 1.0 } else { 0.0 },
            last_failure: None,
            voters: 1,
            down_votes: u32::from(state == OriginState::Down),
        });
    }
    let mut out = Vec::new();
    for c in controls.split(',').filter(|c| !c.is_empty()) {
        let malformed = || CompactError::Malformed {
            field: "control",
            text: clip(c),
        };
        let bytes = c.as_bytes();
        if bytes.len() < 3 || !c.is_char_boundary(2) {
            return Err(malformed());
        }
        let kind = match bytes[0] {
            b'd' => ControlKind::Drain,
            b'o' => ControlKind::Override,
            _ => return Err(malformed()),
        };
        let origin = origin_at(bytes[1])?;
        let mut fields = c[2..].splitn(3, '@');
        let (Some(set_at), Some(until), Some(region)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        if !crate::config::is_name(region) {
            return Err(malformed());
        }
        out.push(Control {
            kind,
            pool: pool_name.to_string(),
            region: region.to_string(),
            origin: origin.id.clone(),
            set_at: number("set_at", set_at)?,
            until: number("until", until)?,
            by: "keyvaluestore".to_string(),
            reason: "read from the KeyValueStore".to_string(),
        });
    }
    let doc = RankingDocument {
        schema_version: SCHEMA_VERSION,
        pool: pool_name.to_string(),
        region: region.to_string(),
        // Not read by the function, which takes any digits: a seq beyond
        // u64 reads as the largest.
        seq: if digits(seq) {
            u64::from_str_radix(seq, 36).unwrap_or(u64::MAX)
        } else {
            return Err(CompactError::Malformed {
                field: "seq",
                text: clip(seq),
            });
        },
        generated_at: number("generated_at", at)?,
        probe_interval_ms: 1,
        workers: 1,
        origins: ranked,
    };
    Ok((doc, out))
}

fn state_char(state: OriginState) -> char {
    match state {
        OriginState::Healthy => 'h',
        OriginState::Degraded => 'g',
        OriginState::Down => 'd',
        OriginState::Drained => 'x',
    }
}

/// `n` in base 36, lower case (JavaScript's `Number.prototype.toString(36)`
/// and `parseInt(text, 36)` speak the same, exactly up to 2^53).
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OriginConfig, MAX_ORIGINS};
    use crate::control::ALL_REGIONS;

    const NOW: UnixMillis = 1_780_000_000_000;

    fn pool(n: usize) -> PoolConfig {
        PoolConfig {
            origins: (0..n)
                .map(|i| {
                    OriginConfig::http(
                        &format!("origin-{i:02}-eu-central"),
                        &format!("o{i}.example.com"),
                        443,
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    fn control(kind: ControlKind, origin: &str, region: &str) -> Control {
        Control {
            kind,
            pool: "web".into(),
            region: region.into(),
            origin: origin.into(),
            set_at: NOW - 60_000,
            until: NOW + 3_600_000,
            by: "ops".into(),
            reason: "maintenance".into(),
        }
    }

    /// A worst realistic ranking: every origin measured, scores up to a
    /// minute, connect budgets up to 10 s.
    fn worst_doc(pool: &PoolConfig) -> RankingDocument {
        let origins = pool
            .origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut e =
                    RankedOrigin::measured(&o.id, OriginState::Healthy, 59_999.999 - i as f64, 3);
                e.connect_budget_ms = Some(9_999.5);
                if i % 5 == 4 {
                    e.state = OriginState::Degraded;
                }
                e
            })
            .collect();
        RankingDocument::new("web", "ap-southeast-1", u64::MAX / 4, NOW, origins)
    }

    #[test]
    fn a_pool_of_64_origins_with_controls_fits_one_value_whole() {
        let p = pool(MAX_ORIGINS);
        let doc = worst_doc(&p);
        let controls = vec![
            control(ControlKind::Drain, &p.origins[63].id, "ap-southeast-1"),
            control(ControlKind::Drain, &p.origins[62].id, ALL_REGIONS),
            control(ControlKind::Override, &p.origins[1].id, "ap-northeast-1"),
            control(ControlKind::Drain, &p.origins[0].id, "eu-central-1"),
        ];
        let encoded = encode(&p, &doc, &controls, NOW).unwrap();
        assert_eq!(encoded.dropped_origins, 0);
        assert!(
            encoded.value.len() <= MAX_VALUE_BYTES,
            "{} bytes",
            encoded.value.len()
        );
        eprintln!("64 origins, 4 controls: {} bytes", encoded.value.len());
        let (back, back_controls) = decode("web", &p, "ap-southeast-1", &encoded.value).unwrap();
        assert_eq!(back.origins.len(), 64);
        for (a, b) in doc.origins.iter().zip(&back.origins) {
            assert_eq!((&a.id, a.state, a.score), (&b.id, b.state, b.score));
            assert_eq!(
                b.connect_budget_ms,
                Some(10_000.0),
                "rounded up to whole ms"
            );
        }
        assert_eq!((back.seq, back.generated_at), (doc.seq, doc.generated_at));
        assert_eq!(back_controls.len(), 4);
        for (a, b) in controls.iter().zip(&back_controls) {
            assert_eq!(
                (a.kind, &a.origin, &a.region, a.set_at, a.until),
                (b.kind, &b.origin, &b.region, b.set_at, b.until)
            );
        }
    }

    #[test]
    fn what_cannot_fit_drops_the_least_preferred_origins_never_a_control() {
        let p = pool(MAX_ORIGINS);
        let mut doc = worst_doc(&p);
        for e in &mut doc.origins {
            e.score = Some(crate::config::MAX_SCORE_MS);
            e.connect_budget_ms = Some(crate::config::MAX_LATENCY_MS);
        }
        let controls: Vec<Control> = (0..8)
            .map(|i| control(ControlKind::Drain, &p.origins[i].id, "ap-southeast-1"))
            .collect();
        let encoded = encode(&p, &doc, &controls, NOW).unwrap();
        assert!(encoded.dropped_origins > 0);
        assert!(encoded.value.len() <= MAX_VALUE_BYTES);
        let (back, back_controls) = decode("web", &p, "r", &encoded.value).unwrap();
        assert_eq!(back_controls.len(), 8);
        assert_eq!(back.origins[0].id, doc.origins[0].id, "the best is kept");
        // Hundreds of controls cannot fit at all: an error, not a value
        // missing drains.
        let many: Vec<Control> = (0..100)
            .map(|i| control(ControlKind::Drain, &p.origins[i % 64].id, "ap-southeast-1"))
            .collect();
        assert!(matches!(
            encode(&p, &doc, &many, NOW),
            Err(CompactError::TooLarge(_))
        ));
    }

    #[test]
    fn ended_foreign_and_unknown_are_left_out() {
        let p = pool(3);
        let mut doc = worst_doc(&p);
        doc.origins.push(RankedOrigin::measured(
            "elsewhere",
            OriginState::Healthy,
            1.0,
            1,
        ));
        let mut ended = control(ControlKind::Drain, &p.origins[0].id, ALL_REGIONS);
        ended.until = NOW;
        let unknown = control(ControlKind::Drain, "elsewhere", ALL_REGIONS);
        // Never in force, and more digits than the function reads: a value
        // carrying it would be refused whole.
        let mut forever = control(ControlKind::Drain, &p.origins[1].id, ALL_REGIONS);
        forever.until = u64::MAX;
        let e = encode(&p, &doc, &[ended, unknown, forever], NOW).unwrap();
        let (back, controls) = decode("web", &p, "r", &e.value).unwrap();
        assert_eq!(back.origins.len(), 3);
        assert!(controls.is_empty(), "{controls:?}");
    }

    #[test]
    fn another_configuration_or_a_hostile_value_is_refused() {
        let p = pool(3);
        let doc = worst_doc(&p);
        let value = encode(&p, &doc, &[], NOW).unwrap().value;
        let mut renamed = p.clone();
        renamed.origins[1].id = "other".into();
        assert!(matches!(
            decode("web", &renamed, "r", &value),
            Err(CompactError::Fingerprint { .. })
        ));
        let mut reordered = p.clone();
        reordered.origins.swap(0, 1);
        assert!(decode("web", &reordered, "r", &value).is_err());
        let fp = fingerprint(&p);
        for hostile in [
            String::new(),
            "or2;00000000;1;1;;".to_string(),
            format!("or1;{fp};1;1;Zh1;"),
            format!("or1;{fp};1;1;Aq1;"),
            format!("or1;{fp};-1;1;;"),
            format!("or1;{fp};1;1;Ah1.5;"),
            format!("or1;{fp};1;1;;dA1@2"),
            format!("or1;{fp};1;1;;dA1@2@bad region"),
            format!("or1;{fp};1;1;;dé1@2@r"),
            format!("or1;{fp};Z;1;;"),
            format!("or1;{fp};1;1;Ah1,Bd2,Ah3;"),
            format!("or1;{fp};1;00000000001;;"),
            format!("or1;{fp};1;1;Ah00000000001;"),
            format!("or1;{fp};1;1;;;extra"),
            "x".repeat(MAX_VALUE_BYTES + 1),
        ] {
            assert!(decode("web", &p, "r", &hostile).is_err(), "{hostile}");
        }
        // The function reads no seq: any digits do, beyond u64 the largest.
        let (doc, _) = decode("web", &p, "r", &format!("or1;{fp};{};1;;", "z".repeat(18))).unwrap();
        assert_eq!(doc.seq, u64::MAX);
    }

    #[test]
    fn base36_is_javascripts() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        // As `(1780000000000).toString(36)` gives it in Node.
        assert_eq!(base36(1_780_000_000_000), "mppy1i4g");
        assert_eq!(
            u64::from_str_radix(&base36(u64::MAX), 36).unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn the_fingerprint_is_fnv1a_of_the_ids() {
        // 32-bit FNV-1a of "a\n": 0x811c9dc5 ^ 'a', * prime, ^ '\n', * prime.
        let p = PoolConfig {
            origins: vec![OriginConfig::http("a", "h", 80)],
            ..Default::default()
        };
        let mut h: u32 = 0x811c_9dc5;
        for b in [b'a', b'\n'] {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        assert_eq!(fingerprint(&p), format!("{h:08x}"));
        assert_eq!(key("web", "us-east-1"), "web/us-east-1");
    }
}
