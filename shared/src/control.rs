//! Operator controls: drains and overrides.
//!
//! A *drain* takes one origin of a pool out of service in one region (an
//! operator's maintenance window); an *override* sends every request of a
//! pool in one region to one origin, whatever the ranking says (an
//! operator's incident response). Both are items in the store next to the
//! pool's rankings, so a reader of the pool gets them in the same read.
//!
//! Every control carries an expiry (`until`, Unix ms) and none may last
//! longer than [`MAX_DRAIN`] / [`MAX_OVERRIDE`]: a forgotten control ends by
//! itself. Every control also says who set it and why.
//!
//! Nothing read from the store is trusted: [`Control::from_json`] validates
//! every field, and [`active`] drops (with a reason the caller logs) what
//! has expired, expires absurdly far ahead, or names an origin the bundled
//! configuration does not know.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{is_name, Config};
use crate::sample::UnixMillis;

/// Longest a drain may last.
pub const MAX_DRAIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest an override may last.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(24 * 3600);
/// The region of a control that applies in every region
/// (`--all-regions`); never an AWS region name.
pub const ALL_REGIONS: &str = "all-regions";
/// Largest accepted control item, in bytes.
pub const MAX_CONTROL_BYTES: usize = 4096;
/// Longest `by` and `reason` text, in characters.
pub const MAX_TEXT: usize = 512;

/// What a control does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// The origin is never chosen (unless fail-open applies).
    Drain,
    /// The pool goes to this origin.
    Override,
}

/// One drain or override of (pool, region).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub kind: ControlKind,
    pub pool: String,
    pub region: String,
    pub origin: String,
    /// When it was set (Unix ms).
    pub set_at: UnixMillis,
    /// When it ends (Unix ms).
    pub until: UnixMillis,
    /// Who set it: `--by` or the caller's AWS identity.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// A control that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control item is not valid JSON: {0}")]
    Json(String),
    #[error("control item is larger than {MAX_CONTROL_BYTES} bytes")]
    TooLarge,
    #[error("{field} `{value}` is not a valid name (1-64 of A-Z a-z 0-9 _ . -)")]
    Name { field: &'static str, value: String },
    #[error("{0} must be 1 to {MAX_TEXT} characters without control characters")]
    Text(&'static str),
    #[error("until ({until}) is not after set_at ({set_at})")]
    NotAfter { set_at: u64, until: u64 },
    #[error("lasts {lasts_s} s, more than the {max_s} s maximum for a {kind:?}")]
    TooLong {
        kind: ControlKind,
        lasts_s: u64,
        max_s: u64,
    },
}

impl ControlKind {
    /// The longest a control of this kind may last.
    pub fn max(self) -> Duration {
        match self {
            ControlKind::Drain => MAX_DRAIN,
            ControlKind::Override => MAX_OVERRIDE,
        }
    }
}

impl Control {
    /// The item's key within its pool: `drain#REGION#ORIGIN` or
    /// `override#REGION` (one override per region). `#` is not a name
    /// character, so a key never collides with a region's ranking.
    pub fn key(&self) -> String {
        key(self.kind, &self.region, &self.origin)
    }

    /// Checks every field; what [`Control::from_json`] and every store
    /// write apply.
    pub fn validate(&self) -> Result<(), ControlError> {
        for (field, value) in [
            ("pool", &self.pool),
            ("region", &self.region),
            ("origin", &self.origin),
        ] {
            if !is_name(value) {
                return Err(ControlError::Name {
                    field,
                    value: value.chars().take(64).collect(),
                });
            }
        }
        for (field, value) in [("by", &self.by), ("reason", &self.reason)] {
            let n = value.chars().count();
            if n == 0 || n > MAX_TEXT || value.chars().any(char::is_control) {
                return Err(ControlError::Text(field));
            }
        }
        if self.until <= self.set_at {
            return Err(ControlError::NotAfter {
                set_at: self.set_at,
                until: self.until,
            });
        }
        let lasts = self.until - self.set_at;
        let max = self.kind.max().as_millis() as u64;
        if lasts > max {
            return Err(ControlError::TooLong {
                kind: self.kind,
                lasts_s: lasts / 1000,
                max_s: max / 1000,
            });
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("controls serialize")
    }

    /// Decodes and validates one stored control.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ControlError> {
        if bytes.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge);
        }
        let control: Control =
            serde_json::from_slice(bytes).map_err(|e| ControlError::Json(e.to_string()))?;
        control.validate()?;
        Ok(control)
    }

    /// In force at `now`.
    pub fn in_force(&self, now: UnixMillis) -> bool {
        self.set_at <= now.saturating_add(crate::document::MAX_CLOCK_SKEW_MS) && now < self.until
    }
}

/// The key of a control (see [`Control::key`]).
pub fn key(kind: ControlKind, region: &str, origin: &str) -> String {
    match kind {
        ControlKind::Drain => format!("drain#{region}#{origin}"),
        ControlKind::Override => format!("override#{region}"),
    }
}

/// Controls of one pool as read from a store, plus what could not be
/// decoded: (key, reason). Callers log the skipped ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolControls {
    pub controls: Vec<Control>,
    pub skipped: Vec<(String, String)>,
}

/// The controls of `pool` in `region` (or in [`ALL_REGIONS`]) that are in force at `now` and name
/// an origin of the bundled configuration; every other one is returned
/// apart with the reason it is ignored (for a log line). An expired control
/// is ignored silently: that is its normal end.
pub fn active<'a>(
    controls: &'a [Control],
    config: &Config,
    pool: &str,
    region: &str,
    now: UnixMillis,
) -> (Vec<&'a Control>, Vec<(&'a Control, String)>) {
    let mut good = Vec::new();
    let mut ignored = Vec::new();
    let Some(pool_config) = config.pools.get(pool) else {
        return (good, ignored);
    };
    for c in controls
        .iter()
        .filter(|c| c.pool == pool && (c.region == region || c.region == ALL_REGIONS))
    {
        if now >= c.until {
            continue;
        }
        if c.validate().is_err() || !c.in_force(now) {
            ignored.push((c, "set in the future or lasts beyond the maximum".into()));
        } else if !pool_config.origins.iter().any(|o| o.id == c.origin) {
            ignored.push((
                c,
                format!(
                    "origin `{}` is not in pool `{pool}` of the config",
                    c.origin
                ),
            ));
        } else {
            good.push(c);
        }
    }
    (good, ignored)
}

/// The drained origins among `active` controls.
pub fn drained<'a>(active: &[&'a Control]) -> Vec<&'a str> {
    active
        .iter()
        .filter(|c| c.kind == ControlKind::Drain)
        .map(|c| c.origin.as_str())
        .collect()
}

/// The override among `active` controls, if any (the latest set wins).
pub fn override_of<'a>(active: &[&'a Control]) -> Option<&'a Control> {
    active
        .iter()
        .filter(|c| c.kind == ControlKind::Override)
        .max_by_key(|c| c.set_at)
        .copied()
}

/// Parses an operator's duration (`30m`, `2h`, `1d`) and checks it against
/// the kind's maximum; the error names the value and the limit.
pub fn parse_duration(text: &str, kind: ControlKind) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("duration `{text}` is negative"));
    }
    let d = humantime_like(trimmed).ok_or_else(|| {
        format!("duration `{text}` is not a duration (examples: 90s, 30m, 2h, 1d)")
    })?;
    if d.is_zero() {
        return Err(format!("duration `{text}` is zero"));
    }
    if d > kind.max() {
        return Err(format!(
            "duration `{text}` is longer than the {}s maximum for a {}",
            kind.max().as_secs(),
            match kind {
                ControlKind::Drain => "drain",
                ControlKind::Override => "override",
            }
        ));
    }
    Ok(d)
}

/// `N` followed by `s`, `m`, `h` or `d` (one unit; no dependency needed).
fn humantime_like(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn drain(origin: &str, set_at: u64, until: u64) -> Control {
        Control {
            kind: ControlKind::Drain,
            pool: "web".into(),
            region: "eu-west-1".into(),
            origin: origin.into(),
            set_at,
            until,
            by: "alice".into(),
            reason: "maintenance".into(),
        }
    }

    #[test]
    fn a_control_round_trips_and_bad_ones_name_the_field() {
        let c = drain("a", 1_000, 61_000);
        assert_eq!(Control::from_json(c.to_json().as_bytes()).unwrap(), c);
        assert_eq!(c.key(), "drain#eu-west-1#a");

        let mut bad = c.clone();
        bad.origin = "../etc".into();
        let err = Control::from_json(bad.to_json().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("origin `../etc`"), "{err}");

        let mut bad = c.clone();
        bad.until = bad.set_at;
        assert!(matches!(bad.validate(), Err(ControlError::NotAfter { .. })));

        let mut bad = c.clone();
        bad.until = bad.set_at + MAX_DRAIN.as_millis() as u64 + 1;
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");

        let mut bad = c.clone();
        bad.reason = "a\nb".into();
        assert_eq!(bad.validate(), Err(ControlError::Text("reason")));

        assert!(matches!(
            Control::from_json(b"{\"kind\":\"drain\"}"),
            Err(ControlError::Json(_))
        ));
        assert_eq!(
            Control::from_json(&vec![b' '; MAX_CONTROL_BYTES + 1]),
            Err(ControlError::TooLarge)
        );
    }

    #[test]
    fn durations_are_checked_against_the_maximum() {
        let d = ControlKind::Drain;
        assert_eq!(parse_duration("30m", d).unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d", d).unwrap(), MAX_DRAIN);
        assert!(parse_duration("0s", d).unwrap_err().contains("is zero"));
        assert!(parse_duration("-5m", d).unwrap_err().contains("negative"));
        assert!(parse_duration("8d", d).unwrap_err().contains("maximum"));
        assert!(parse_duration("25h", ControlKind::Override)
            .unwrap_err()
            .contains("maximum"));
        assert!(parse_duration("soon", d)
            .unwrap_err()
            .contains("`soon` is not a duration"));
        assert!(parse_duration("99999999999999999999d", d).is_err());
    }

    #[test]
    fn only_controls_in_force_on_known_origins_are_active() {
        let config = Config::from_toml(
            r#"
            [pools.web]
            origins = [{ id = "a", host = "127.0.0.1" }, { id = "b", host = "127.0.0.2" }]
            "#,
            "test",
        )
        .unwrap();
        let now = 1_000_000;
        let controls = vec![
            drain("a", now - 10, now + 10),
            drain("b", now - 100, now - 1),               // expired
            drain("ghost", now - 10, now + 10),           // unknown origin
            drain("b", now + 3_600_000, now + 3_600_001), // set an hour ahead
            {
                let mut o = drain("b", now - 5, now + 5);
                o.kind = ControlKind::Override;
                o
            },
        ];
        let (good, ignored) = active(&controls, &config, "web", "eu-west-1", now);
        assert_eq!(drained(&good), ["a"]);
        assert_eq!(override_of(&good).unwrap().origin, "b");
        assert_eq!(ignored.len(), 2);
        assert!(ignored[0].1.contains("`ghost`"));
        let (good, _) = active(&controls, &config, "web", "us-east-1", now);
        assert!(good.is_empty());
        let mut everywhere = drain("b", now - 10, now + 10);
        everywhere.region = ALL_REGIONS.into();
        let everywhere = [everywhere];
        let (good, _) = active(&everywhere, &config, "web", "us-east-1", now);
        assert_eq!(drained(&good), ["b"]);
    }
}
