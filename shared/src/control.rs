//! Operator controls: drains and overrides.
//!
//! A *drain* takes one origin of a pool out of service in one region (an
//! operator's maintenance window); an *override* sends every request of a
//! pool in one region to one origin, whatever the ranking says (an
//! operator's incident response). Both are items in the store next to the
//! pool's rankings, so a reader of the pool gets them in the same read.
//!
//! Every control carries an expiry (`until`, Unix ms) and none may last
//! longer than the config's `operations.max_drain` / `max_override` (at
//! most [`MAX_DRAIN`] / [`MAX_OVERRIDE`], whatever the config): a forgotten
//! control ends by itself. Every control also says who set it and why.
//!
//! Nothing read from the store is trusted: [`Control::from_json`] validates
//! every field, and [`active`] drops (with a reason the caller logs) what
//! has expired, expires absurdly far ahead, or names an origin the bundled
//! configuration does not know.

pub mod input;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{is_name, Config, OperationsConfig, PoolConfig};
use crate::sample::UnixMillis;

/// Longest a drain may ever last (`operations.max_drain` is at most this).
pub const MAX_DRAIN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest an override may ever last (`operations.max_override` is at most
/// this).
pub const MAX_OVERRIDE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The region of a control that applies in every region
/// (`--all-regions`); never an AWS region name.
pub const ALL_REGIONS: &str = "all-regions";
/// Largest control item, in bytes: the one limit of every writer
/// ([`Control::validate`]) and every reader ([`Control::from_json`], the
/// embedded store's file read). The item is the control's JSON
/// ([`Control::to_json`]) in both stores: the whole file of the embedded
/// store, the `control` attribute of the DynamoDB item (whose other
/// attributes are its key and two numbers).
pub const MAX_CONTROL_BYTES: usize = 4096;
/// Longest `by`, in bytes of UTF-8 (an AWS assumed-role ARN is at most
/// about 200).
pub const MAX_BY_BYTES: usize = 512;
/// Longest `reason`, in bytes of UTF-8.
pub const MAX_REASON_BYTES: usize = 1024;
/// The most the JSON of a control takes besides its `by` and `reason`
/// text: keys and punctuation, `override`, three names of 64 bytes, two
/// 20-digit times (`worst_case_control_fits` in the tests spells it out).
const MAX_FIXED_JSON_BYTES: usize = 330;
// Text of the longest accepted length that JSON escapes entirely (`"` and
// `\` are written as two bytes; control characters, which JSON writes as
// six, are refused) still fits: a control `validate` accepts is never too
// large for a reader.
const _: () =
    assert!(MAX_FIXED_JSON_BYTES + 2 * (MAX_BY_BYTES + MAX_REASON_BYTES) <= MAX_CONTROL_BYTES);

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
    #[error("control item is {} bytes, larger than the {MAX_CONTROL_BYTES}-byte limit", thousands(*.0))]
    TooLarge(usize),
    #[error("{field} `{value}` is not a valid name (1-64 of A-Z a-z 0-9 _ . -)")]
    Name { field: &'static str, value: String },
    #[error("{field} is empty: a control says who set it and why")]
    EmptyText { field: &'static str },
    #[error(
        "{field} is {} bytes ({} characters); a control's {field} may take at most {} bytes of UTF-8",
        thousands(*bytes), thousands(*chars), thousands(*max)
    )]
    TextTooLong {
        field: &'static str,
        bytes: usize,
        chars: usize,
        max: usize,
    },
    #[error(
        "{field} holds {} ({}) at character {at}; control characters and bidirectional \
         overrides are not allowed (they hide or reorder text in logs and `prober status`)",
        code_point(*ch), char_kind(*ch)
    )]
    TextChar {
        field: &'static str,
        ch: char,
        /// 1-based position in characters.
        at: usize,
    },
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
    /// The longest a control of this kind may ever last.
    pub fn max(self) -> Duration {
        match self {
            ControlKind::Drain => MAX_DRAIN,
            ControlKind::Override => MAX_OVERRIDE,
        }
    }

    /// The longest the configuration lets a control of this kind last.
    pub fn configured_max(self, config: &Config) -> Duration {
        self.max_under(&config.operations)
    }

    /// The longest `operations` lets a control of this kind last.
    pub fn max_under(self, operations: &OperationsConfig) -> Duration {
        match self {
            ControlKind::Drain => operations.max_drain,
            ControlKind::Override => operations.max_override,
        }
        .min(self.max())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::Drain => "drain",
            ControlKind::Override => "override",
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
        check_text("by", &self.by)?;
        check_text("reason", &self.reason)?;
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
        // Implied by the text limits (see MAX_FIXED_JSON_BYTES); checked
        // all the same, so no writer can store what readers refuse.
        let bytes = self.to_json().len();
        if bytes > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge(bytes));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("controls serialize")
    }

    /// Decodes and validates one stored control.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ControlError> {
        if bytes.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge(bytes.len()));
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

impl ControlError {
    /// The field at fault, for a message that names the CLI flag.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ControlError::Name { field, .. }
            | ControlError::EmptyText { field }
            | ControlError::TextTooLong { field, .. }
            | ControlError::TextChar { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Checks one of a control's texts (`by`, `reason`): not empty, at most
/// its byte limit ([`MAX_BY_BYTES`], [`MAX_REASON_BYTES`]), and no
/// character that [`is_forbidden_char`] names: what the CLI refuses and
/// what a reader ignores a stored control for.
pub fn check_text(field: &'static str, value: &str) -> Result<(), ControlError> {
    let max = if field == "by" {
        MAX_BY_BYTES
    } else {
        MAX_REASON_BYTES
    };
    if value.is_empty() {
        return Err(ControlError::EmptyText { field });
    }
    if let Some((i, ch)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| is_forbidden_char(*c))
    {
        return Err(ControlError::TextChar {
            field,
            ch,
            at: i + 1,
        });
    }
    if value.len() > max {
        return Err(ControlError::TextTooLong {
            field,
            bytes: value.len(),
            chars: value.chars().count(),
            max,
        });
    }
    Ok(())
}

/// A character no control's text may hold: control characters
/// ([`char::is_control`]: C0, DEL, C1), the bidirectional embeddings,
/// overrides, isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E,
/// U+200F, U+061C), and the line and paragraph separators (U+2028,
/// U+2029). Each can make a log line or `prober status` show text other
/// than what is stored. Joiners (U+200D, in emoji sequences) are allowed.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

fn char_kind(c: char) -> &'static str {
    match c {
        '\u{202D}' | '\u{202E}' => "a bidirectional override",
        '\u{202A}'..='\u{202C}' => "a bidirectional embedding",
        '\u{2066}'..='\u{2069}' => "a bidirectional isolate",
        '\u{200E}' | '\u{200F}' | '\u{061C}' => "a bidirectional mark",
        '\u{2028}' | '\u{2029}' => "a line separator",
        _ => "a control character",
    }
}

/// `n` with a comma every three digits (`4,224`), as messages write sizes.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
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
    match config.pools.get(pool) {
        Some(pool_config) => {
            active_in(controls, pool_config, &config.operations, pool, region, now)
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// [`active`] for a reader that holds only the pool's configuration and
/// the operations limits (the edge's decision, which never sees the whole
/// [`Config`]).
pub fn active_in<'a>(
    controls: &'a [Control],
    pool_config: &PoolConfig,
    operations: &OperationsConfig,
    pool: &str,
    region: &str,
    now: UnixMillis,
) -> (Vec<&'a Control>, Vec<(&'a Control, String)>) {
    let mut good = Vec::new();
    let mut ignored = Vec::new();
    for c in controls
        .iter()
        .filter(|c| c.pool == pool && (c.region == region || c.region == ALL_REGIONS))
    {
        if now >= c.until {
            continue;
        }
        let max = c.kind.max_under(operations).as_millis() as u64;
        if let Err(e) = c.validate() {
            ignored.push((c, e.to_string()));
        } else if !c.in_force(now) {
            ignored.push((c, "set in the future".into()));
        } else if c.until - c.set_at > max {
            ignored.push((
                c,
                format!(
                    "lasts {} s, beyond operations.max_{} ({} s)",
                    (c.until - c.set_at) / 1000,
                    c.kind.as_str(),
                    max / 1000
                ),
            ));
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

/// Every stored control of `pool` that is not used, whatever the region,
/// with why: the unreadable ones, and those [`active`] ignores (not the
/// expired ones: that is their normal end). For the reader's log lines.
pub fn unused(
    read: &PoolControls,
    config: &Config,
    pool: &str,
    now: UnixMillis,
) -> Vec<(String, String)> {
    match config.pools.get(pool) {
        Some(pool_config) => unused_in(read, pool_config, &config.operations, pool, now),
        None => read.skipped.clone(),
    }
}

/// [`unused`] for a reader that holds only the pool's configuration and
/// the operations limits.
pub fn unused_in(
    read: &PoolControls,
    pool_config: &PoolConfig,
    operations: &OperationsConfig,
    pool: &str,
    now: UnixMillis,
) -> Vec<(String, String)> {
    let mut out = read.skipped.clone();
    for c in &read.controls {
        let (_, ignored) = active_in(
            std::slice::from_ref(c),
            pool_config,
            operations,
            pool,
            &c.region,
            now,
        );
        out.extend(ignored.into_iter().map(|(c, why)| (c.key(), why)));
    }
    out
}

/// Marks the `drained` origins of a ranking `drained` and moves them after
/// every other origin (order otherwise kept), as the region's leader
/// publishes it: no reader ranks a drained origin first. When that would
/// leave no usable origin and `fail_open` is set, the drained origins that
/// are usable are left as they are (the pool's last usable origins) and
/// only the others are marked. Returns the origins marked.
pub fn mark_drained(
    doc: &mut crate::document::RankingDocument,
    drained: &[&str],
    fail_open: bool,
) -> Vec<String> {
    use crate::document::OriginState;
    let is_drained = |id: &str| drained.contains(&id);
    let usable_left = doc
        .origins
        .iter()
        .any(|o| o.state.is_usable() && !is_drained(&o.id));
    let keep_usable = fail_open && !usable_left;
    let mut marked = Vec::new();
    for o in doc.origins.iter_mut().filter(|o| is_drained(&o.id)) {
        if keep_usable && o.state.is_usable() {
            continue;
        }
        o.state = OriginState::Drained;
        marked.push(o.id.clone());
    }
    // Stable: the ranking's order within each group is kept.
    doc.origins.sort_by_key(|o| o.state == OriginState::Drained);
    marked
}

/// The drained origins among `active` controls.
pub fn drained<'a>(active: &[&'a Control]) -> Vec<&'a str> {
    active
        .iter()
        .filter(|c| c.kind == ControlKind::Drain)
        .map(|c| c.origin.as_str())
        .collect()
}

/// The override among `active` controls, if any: the latest set wins; of
/// two set in the same millisecond (one for the region and one for all
/// regions: one key holds one override), the region's own; then the
/// smaller origin id. Every reader (the edge, the prober, a CloudFront
/// Function held to the decision vectors) must pick the same one, so the
/// order is total and spelled out rather than left to an iterator's tie
/// rule.
pub fn override_of<'a>(active: &[&'a Control]) -> Option<&'a Control> {
    let rank = |c: &Control| {
        (
            c.set_at,
            c.region != ALL_REGIONS,
            std::cmp::Reverse(c.origin.clone()),
        )
    };
    active
        .iter()
        .filter(|c| c.kind == ControlKind::Override)
        .copied()
        .reduce(|best, c| if rank(c) > rank(best) { c } else { best })
}

/// Parses an operator's duration in exactly the configuration's grammar
/// (humantime's, as `operations.max_drain = "7days"` is read: `90s`,
/// `30m`, `1h 30m`, `7days`, `1d`) and checks it against `max` (the
/// configured maximum of the kind); the error names the value and the
/// limit.
pub fn parse_duration(text: &str, kind: ControlKind, max: Duration) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("duration `{text}` is negative"));
    }
    let d = humantime_serde::re::humantime::parse_duration(text).map_err(|e| {
        format!(
            "duration `{text}` is not a duration ({e}); write it as the config does: \
             90s, 30m, 1h 30m, 7days"
        )
    })?;
    if d.is_zero() {
        return Err(format!("duration `{text}` is zero"));
    }
    if d > max {
        return Err(format!(
            "duration `{text}` is longer than the {} maximum for a {} (operations.max_{})",
            humantime_serde::re::humantime::format_duration(max),
            kind.as_str(),
            kind.as_str()
        ));
    }
    Ok(d)
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
        assert_eq!(
            bad.validate(),
            Err(ControlError::TextChar {
                field: "reason",
                ch: '\n',
                at: 2
            })
        );

        assert!(matches!(
            Control::from_json(b"{\"kind\":\"drain\"}"),
            Err(ControlError::Json(_))
        ));
        assert_eq!(
            Control::from_json(&vec![b' '; MAX_CONTROL_BYTES + 1]),
            Err(ControlError::TooLarge(MAX_CONTROL_BYTES + 1))
        );
    }

    /// The largest control `validate` accepts, with every character of its
    /// texts one JSON escapes, longest names, the longer kind and 20-digit
    /// times, fits the one limit: no accepted control is refused by a
    /// reader. One byte more of text is refused by `validate` itself.
    #[test]
    fn worst_case_control_fits() {
        let name = "n".repeat(64);
        let set_at = u64::MAX - MAX_OVERRIDE.as_millis() as u64;
        let worst = Control {
            kind: ControlKind::Override,
            pool: name.clone(),
            region: name.clone(),
            origin: name.clone(),
            set_at,
            until: u64::MAX,
            by: "\"".repeat(MAX_BY_BYTES),
            reason: "\\".repeat(MAX_REASON_BYTES),
        };
        worst.validate().unwrap();
        let json = worst.to_json();
        let text = 2 * (MAX_BY_BYTES + MAX_REASON_BYTES);
        assert!(json.len() - text <= MAX_FIXED_JSON_BYTES, "{}", json.len());
        assert!(json.len() <= MAX_CONTROL_BYTES, "{}", json.len());
        assert_eq!(Control::from_json(json.as_bytes()).unwrap(), worst);

        let mut over = worst.clone();
        over.reason.push('x');
        assert_eq!(
            over.validate().unwrap_err().to_string(),
            "reason is 1,025 bytes (1,025 characters); a control's reason may take at most \
             1,024 bytes of UTF-8"
        );
        let mut over = worst.clone();
        over.by.push('x');
        assert!(matches!(
            over.validate(),
            Err(ControlError::TextTooLong {
                field: "by",
                bytes: 513,
                ..
            })
        ));
        assert_eq!(thousands(4224), "4,224");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    /// A control written by hand past the CLI (the audit's 512 emoji, a
    /// right-to-left override) is ignored by readers with the reason.
    #[test]
    fn hand_written_controls_the_cli_refuses_are_ignored_with_the_reason() {
        let mut c = drain("a", 1_000, 61_000);
        c.reason = "😀".repeat(512);
        c.by = "😀".repeat(512);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.len() > MAX_CONTROL_BYTES);
        let err = Control::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "control item is {} bytes, larger than the 4096-byte limit",
                thousands(json.len())
            )
        );
        // Under the limit, it is still refused for its text.
        c.by = "ops".into();
        let err = Control::from_json(c.to_json().as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("reason is 2,048 bytes"),
            "{err}"
        );
        let mut c = drain("a", 1_000, 61_000);
        c.reason = "fix \u{202E}gnp.exe".into();
        let err = Control::from_json(c.to_json().as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reason holds U+202E (a bidirectional override) at character 5"),
            "{err}"
        );
        let config = web_a_b();
        let stored = [c];
        let (good, ignored) = active(&stored, &config, "web", "eu-west-1", 2_000);
        assert!(good.is_empty());
        assert!(ignored[0].1.contains("U+202E"), "{}", ignored[0].1);
    }

    #[test]
    fn durations_are_checked_against_the_maximum() {
        let config = Config::default();
        let d = ControlKind::Drain;
        let max = d.configured_max(&config);
        assert_eq!(max, Duration::from_secs(7 * 86_400));
        let parse = |text: &str, kind: ControlKind| {
            parse_duration(text, kind, kind.configured_max(&config))
        };
        assert_eq!(parse("30m", d).unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("7d", d).unwrap(), max);
        assert!(parse("0s", d).unwrap_err().contains("is zero"));
        assert!(parse("-5m", d).unwrap_err().contains("negative"));
        assert!(parse("8d", d)
            .unwrap_err()
            .contains("maximum for a drain (operations.max_drain)"));
        assert!(parse("25h", ControlKind::Override)
            .unwrap_err()
            .contains("operations.max_override"));
        assert!(parse("soon", d)
            .unwrap_err()
            .contains("`soon` is not a duration"));
        // The config's grammar: `7days`, `1h 30m`, `1week`.
        assert_eq!(parse("7days", d).unwrap(), max);
        assert_eq!(parse("1week", d).unwrap(), max);
        assert_eq!(parse("1h 30m", d).unwrap(), Duration::from_secs(5_400));
        assert!(parse("8days", d)
            .unwrap_err()
            .contains("the 7days maximum for a drain"));
        assert!(parse("99999999999999999999d", d).is_err());
        // A configured maximum above the hard cap is held to the cap.
        let mut wide = Config::default();
        wide.operations.max_drain = Duration::from_secs(365 * 86_400);
        assert_eq!(d.configured_max(&wide), MAX_DRAIN);
    }

    /// Pool `web` with origins `a` and `b`.
    fn web_a_b() -> Config {
        Config::from_toml(
            r#"
            [pools.web]
            origins = [{ id = "a", host = "127.0.0.1" }, { id = "b", host = "127.0.0.2" }]
            "#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn a_control_longer_than_the_configured_maximum_is_ignored() {
        let mut config = web_a_b();
        config.operations.max_drain = Duration::from_secs(3600);
        let now = 1_000_000;
        let controls = vec![
            drain("a", now - 10, now + 3_000_000),
            drain("b", now - 10, now + 4_000_000),
        ];
        let (good, ignored) = active(&controls, &config, "web", "eu-west-1", now);
        assert_eq!(drained(&good), ["a"]);
        assert_eq!(ignored.len(), 1);
        assert!(
            ignored[0].1.contains("operations.max_drain"),
            "{:?}",
            ignored[0].1
        );
    }

    #[test]
    fn only_controls_in_force_on_known_origins_are_active() {
        let config = web_a_b();
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

    #[test]
    fn drained_origins_are_marked_and_ranked_last_unless_they_are_all_that_is_left() {
        use crate::document::{OriginState::*, RankedOrigin, RankingDocument};
        let doc = |states: &[(&str, crate::document::OriginState)]| {
            RankingDocument::new(
                "web",
                "eu-west-1",
                1,
                1_700_000_000_000,
                states
                    .iter()
                    .map(|(id, s)| RankedOrigin::measured(id, *s, 1.0, 1))
                    .collect(),
            )
        };
        let order = |d: &RankingDocument| -> Vec<(String, &str)> {
            d.origins
                .iter()
                .map(|o| (o.id.clone(), o.state.as_str()))
                .collect()
        };
        let mut d = doc(&[("a", Healthy), ("b", Healthy), ("c", Down)]);
        assert_eq!(mark_drained(&mut d, &["a"], true), ["a"]);
        assert_eq!(
            order(&d),
            [
                ("b".into(), "healthy"),
                ("c".into(), "down"),
                ("a".into(), "drained")
            ]
        );
        // a and b drained, c down: fail open leaves them usable...
        let mut d = doc(&[("a", Healthy), ("b", Degraded), ("c", Down)]);
        assert!(mark_drained(&mut d, &["a", "b"], true).is_empty());
        assert_eq!(order(&d)[0], ("a".into(), "healthy"));
        // ...and without fail-open they are drained all the same.
        let mut d = doc(&[("a", Healthy), ("b", Degraded), ("c", Down)]);
        assert_eq!(mark_drained(&mut d, &["a", "b"], false), ["a", "b"]);
        assert!(d.origins.iter().all(|o| !o.state.is_usable()));
        // A drained origin that is down is marked drained even failing open.
        let mut d = doc(&[("a", Healthy), ("c", Down)]);
        assert_eq!(mark_drained(&mut d, &["a", "c"], true), ["c"]);
        assert_eq!(
            order(&d),
            [("a".into(), "healthy"), ("c".into(), "drained")]
        );
        d.validate().unwrap();
    }
}
