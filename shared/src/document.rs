//! The ranking document: what a region's leader publishes for one pool and
//! what edges read. Versioned, with its JSON codec (embedded store, CLI,
//! Redis) here; the DynamoDB item codec lives beside the DynamoDB store
//! (`store::dynamodb::codec`).
//!
//! Decoding never trusts its input: the schema version is checked first, then
//! types, then every value against sane bounds. A bad document is an error
//! value, never a panic.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::is_name;
pub use crate::config::{MAX_LATENCY_MS, MAX_ORIGINS, MAX_SCORE_MS};
use crate::sample::{FailureClass, UnixMillis};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest JSON document accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// 2020-01-01 and 2200-01-01: timestamps outside are corrupt.
const MIN_TIME: UnixMillis = 1_577_836_800_000;
const MAX_TIME: UnixMillis = 7_258_118_400_000;

/// A ranking whose `generated_at` runs further ahead of a reader's or a
/// writer's clock than this comes from a clock that has run away: an edge
/// treats it as stale (never as age 0), and no store accepts it.
pub use crate::sample::MAX_CLOCK_SKEW_MS;

/// Fencing numbers are milliseconds times this (see the prober's `coord`):
/// room for 1,000 rankings per millisecond, still time-ordered.
pub const SEQ_PER_MS: u64 = 1_000;

/// The largest `seq` a store accepts or keeps at wall-clock `now`: the
/// fencing number of a ranking made `MAX_CLOCK_SKEW_MS` from now. A stored
/// ranking above it was written by a runaway clock (or by hand) and may be
/// replaced by any sane writer, so one bad write cannot freeze a region.
pub fn seq_ceiling(now: UnixMillis) -> u64 {
    now.saturating_add(MAX_CLOCK_SKEW_MS)
        .saturating_mul(SEQ_PER_MS)
}

/// The ranking of one pool's origins as seen from one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingDocument {
    pub schema_version: u32,
    pub pool: String,
    pub region: String,
    /// Fencing number from the leader lease: a write with a lower or equal
    /// `seq` than the stored one is refused.
    pub seq: u64,
    /// When the leader computed this ranking (wall clock, ms).
    pub generated_at: UnixMillis,
    /// The probe interval the ranking was computed under, so readers can
    /// judge freshness.
    pub probe_interval_ms: u64,
    /// Workers whose samples went into this ranking.
    pub workers: u32,
    /// Origins in order of preference, best first.
    pub origins: Vec<RankedOrigin>,
}

/// One origin's place in a ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedOrigin {
    pub id: String,
    pub state: OriginState,
    /// Smoothed latency divided by weight; lower is better. Absent when the
    /// origin has no successful sample in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Smoothed latency until first byte, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// How long a TCP connection to this origin may take before it counts
    /// as lost, ms: the probe-budget rule (`max(srtt + 4 rttvar, 2 srtt)`,
    /// see `probe::budget`) over the connect phase of the recent successful
    /// probes, median across the workers holding it up. The CloudFront
    /// Function edge derives the origin's connection timeout from it.
    /// Absent until an origin has two successful probes since it was last
    /// up, and in documents written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_budget_ms: Option<f64>,
    /// Share of successful probes in the window (median across workers).
    pub success_ratio: f64,
    /// Class of the most recent failure in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureClass>,
    /// Workers that saw this origin in the window, and how many of them
    /// hold it down: the quorum behind `state`.
    pub voters: u32,
    pub down_votes: u32,
}

/// Health of an origin in a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginState {
    /// Up, and its success ratio is good.
    Healthy,
    /// Up, but failing some probes: used only after every healthy origin.
    Degraded,
    /// Held down by a quorum of workers.
    Down,
    /// Taken out by an operator (`prober drain`): measured and shown, never
    /// chosen. Ranked after every other state.
    Drained,
}

impl OriginState {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginState::Healthy => "healthy",
            OriginState::Degraded => "degraded",
            OriginState::Down => "down",
            OriginState::Drained => "drained",
        }
    }

    /// Whether an edge may send traffic here: neither down nor drained.
    pub fn is_usable(self) -> bool {
        matches!(self, OriginState::Healthy | OriginState::Degraded)
    }
}

/// Why a document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("unknown schema version {0} (this build reads {SCHEMA_VERSION})")]
    UnknownSchema(u64),
    #[error("missing or non-numeric schema_version")]
    NoSchema,
    #[error("document is {0} bytes, above the {MAX_JSON_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed document: {0}")]
    Malformed(String),
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> DocumentError {
    DocumentError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

impl RankedOrigin {
    /// An origin in `state` measured at `ms` (score = latency) by `voters`
    /// workers, all agreeing. For tests, tools and examples.
    pub fn measured(id: &str, state: OriginState, ms: f64, voters: u32) -> Self {
        RankedOrigin {
            id: id.to_string(),
            state,
            score: Some(ms),
            latency_ms: Some(ms),
            connect_budget_ms: None,
            success_ratio: if state == OriginState::Down { 0.0 } else { 1.0 },
            last_failure: None,
            voters,
            down_votes: if state == OriginState::Down {
                voters
            } else {
                0
            },
        }
    }
}

impl RankingDocument {
    /// A document of this schema version (2 s interval, one worker). For
    /// tests, tools and examples; the ranking engine builds the real ones.
    pub fn new(
        pool: &str,
        region: &str,
        seq: u64,
        generated_at: UnixMillis,
        origins: Vec<RankedOrigin>,
    ) -> Self {
        RankingDocument {
            schema_version: SCHEMA_VERSION,
            pool: pool.to_string(),
            region: region.to_string(),
            seq,
            generated_at,
            probe_interval_ms: 2000,
            workers: 1,
            origins,
        }
    }

    /// Age of the ranking at `now`: zero when it is up to
    /// [`MAX_CLOCK_SKEW_MS`] ahead of `now`, `None` when it claims to come
    /// from further in the future (a runaway clock: never fresh).
    pub fn age_ms(&self, now: UnixMillis) -> Option<u64> {
        if self.generated_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return None;
        }
        Some(now.saturating_sub(self.generated_at))
    }

    /// Checks the ranking against the writer's clock: `generated_at` at
    /// most [`MAX_CLOCK_SKEW_MS`] ahead of `now`, `seq` at most
    /// [`seq_ceiling`]. A store refuses a ranking that fails this.
    pub fn check_clock(&self, now: UnixMillis) -> Result<(), DocumentError> {
        if self.age_ms(now).is_none() {
            return Err(invalid(
                "generated_at",
                format!(
                    "{} is {} ms ahead of this clock (more than the {MAX_CLOCK_SKEW_MS} ms skew allowed)",
                    self.generated_at,
                    self.generated_at - now
                ),
            ));
        }
        if self.seq > seq_ceiling(now) {
            return Err(invalid(
                "seq",
                format!(
                    "{} is above {}, the fencing number of a ranking made {MAX_CLOCK_SKEW_MS} ms from now",
                    self.seq,
                    seq_ceiling(now)
                ),
            ));
        }
        Ok(())
    }

    /// The best-ranked origin.
    pub fn top(&self) -> Option<&RankedOrigin> {
        self.origins.first()
    }

    pub fn entry(&self, id: &str) -> Option<&RankedOrigin> {
        self.origins.iter().find(|o| o.id == id)
    }

    /// Checks every value against its bounds.
    pub fn validate(&self) -> Result<(), DocumentError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(DocumentError::UnknownSchema(self.schema_version.into()));
        }
        for (field, value) in [("pool", &self.pool), ("region", &self.region)] {
            if !is_name(value) {
                return Err(invalid(
                    field,
                    format!("`{}` is not a valid name", clip(value)),
                ));
            }
        }
        if !(MIN_TIME..=MAX_TIME).contains(&self.generated_at) {
            return Err(invalid(
                "generated_at",
                format!("{} is not a plausible time", self.generated_at),
            ));
        }
        if !(1..=86_400_000).contains(&self.probe_interval_ms) {
            return Err(invalid(
                "probe_interval_ms",
                format!("{} is out of range", self.probe_interval_ms),
            ));
        }
        if self.seq > i64::MAX as u64 {
            return Err(invalid("seq", "out of range"));
        }
        if self.workers > 10_000 {
            return Err(invalid(
                "workers",
                format!("{} is out of range", self.workers),
            ));
        }
        if self.origins.len() > MAX_ORIGINS {
            return Err(invalid(
                "origins",
                format!("{} entries, above {MAX_ORIGINS}", self.origins.len()),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, o) in self.origins.iter().enumerate() {
            let at = |f: &str| format!("origins[{i}].{f}");
            if !is_name(&o.id) {
                return Err(invalid(
                    at("id"),
                    format!("`{}` is not a valid name", clip(&o.id)),
                ));
            }
            if !ids.insert(o.id.as_str()) {
                return Err(invalid(at("id"), format!("`{}` appears twice", o.id)));
            }
            for (f, v, max) in [
                ("score", o.score, MAX_SCORE_MS),
                ("latency_ms", o.latency_ms, MAX_LATENCY_MS),
                ("connect_budget_ms", o.connect_budget_ms, MAX_LATENCY_MS),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && (0.0..=max).contains(&v)) {
                        return Err(invalid(at(f), format!("{v} is not in [0, {max}]")));
                    }
                }
            }
            if !(o.success_ratio.is_finite() && (0.0..=1.0).contains(&o.success_ratio)) {
                return Err(invalid(
                    at("success_ratio"),
                    format!("{} is not in [0, 1]", o.success_ratio),
                ));
            }
            if o.voters > 10_000 || o.down_votes > o.voters {
                return Err(invalid(at("down_votes"), "more down votes than voters"));
            }
        }
        Ok(())
    }

    /// Encodes as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ranking document always serializes")
    }

    /// Decodes and validates JSON.
    pub fn from_json(bytes: &[u8]) -> Result<RankingDocument, DocumentError> {
        if bytes.len() > MAX_JSON_BYTES {
            return Err(DocumentError::TooLarge(bytes.len()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        check_schema(value.get("schema_version").and_then(|v| v.as_u64()))?;
        let doc: RankingDocument =
            serde_json::from_value(value).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        doc.validate()?;
        Ok(doc)
    }
}

/// Checks the schema version before anything else is decoded, so a newer
/// writer's document is reported as such rather than as malformed.
pub(crate) fn check_schema(version: Option<u64>) -> Result<(), DocumentError> {
    match version {
        None => Err(DocumentError::NoSchema),
        Some(v) if v != u64::from(SCHEMA_VERSION) => Err(DocumentError::UnknownSchema(v)),
        Some(_) => Ok(()),
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_doc() -> RankingDocument {
        RankingDocument {
            schema_version: SCHEMA_VERSION,
            pool: "web".into(),
            region: "eu-west-1".into(),
            seq: 42,
            generated_at: 1_780_000_000_000,
            probe_interval_ms: 2000,
            workers: 3,
            origins: vec![
                RankedOrigin {
                    id: "fra".into(),
                    state: OriginState::Healthy,
                    score: Some(12.5),
                    latency_ms: Some(12.5),
                    connect_budget_ms: None,
                    success_ratio: 1.0,
                    last_failure: None,
                    voters: 3,
                    down_votes: 0,
                },
                RankedOrigin {
                    id: "iad".into(),
                    state: OriginState::Down,
                    score: None,
                    latency_ms: None,
                    connect_budget_ms: None,
                    success_ratio: 0.25,
                    last_failure: Some(FailureClass::ConnectTimeout),
                    voters: 3,
                    down_votes: 3,
                },
            ],
        }
    }

    #[test]
    fn json_round_trip() {
        let doc = sample_doc();
        assert_eq!(
            RankingDocument::from_json(doc.to_json().as_bytes()).unwrap(),
            doc
        );
    }

    #[test]
    fn unknown_schema_is_rejected_first() {
        let json = sample_doc()
            .to_json()
            .replace("\"schema_version\":1", "\"schema_version\":2");
        let err = RankingDocument::from_json(json.as_bytes()).unwrap_err();
        assert!(matches!(err, DocumentError::UnknownSchema(2)), "{err}");
        let json = sample_doc().to_json().replace("\"schema_version\":1,", "");
        assert!(matches!(
            RankingDocument::from_json(json.as_bytes()),
            Err(DocumentError::NoSchema)
        ));
    }

    #[test]
    fn wrong_types_are_errors() {
        let json = sample_doc()
            .to_json()
            .replace("\"workers\":3", "\"workers\":\"3\"");
        assert!(matches!(
            RankingDocument::from_json(json.as_bytes()),
            Err(DocumentError::Malformed(_))
        ));
        assert!(RankingDocument::from_json(b"[1,2").is_err());
    }

    #[test]
    fn absurd_values_are_errors() {
        type Mutation = Box<dyn Fn(&mut RankingDocument)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "origins[0].latency_ms",
                Box::new(|d| d.origins[0].latency_ms = Some(-1.0)),
            ),
            (
                "origins[0].score",
                Box::new(|d| d.origins[0].score = Some(f64::NAN)),
            ),
            (
                "origins[0].success_ratio",
                Box::new(|d| d.origins[0].success_ratio = 1.5),
            ),
            (
                "origins[1].id",
                Box::new(|d| d.origins[1].id = "fra".into()),
            ),
            (
                "origins[0].id",
                Box::new(|d| d.origins[0].id = "../etc".into()),
            ),
            ("generated_at", Box::new(|d| d.generated_at = 5)),
            ("region", Box::new(|d| d.region = String::new())),
            (
                "origins[0].down_votes",
                Box::new(|d| d.origins[0].down_votes = 9),
            ),
        ];
        for (field, mutate) in cases {
            let mut doc = sample_doc();
            mutate(&mut doc);
            let err = doc.validate().unwrap_err();
            assert!(err.to_string().starts_with(field), "{field}: {err}");
        }
        let mut doc = sample_doc();
        doc.origins = (0..=MAX_ORIGINS)
            .map(|i| RankedOrigin {
                id: format!("o{i}"),
                ..doc.origins[0].clone()
            })
            .collect();
        assert!(doc.validate().is_err());
        let huge = vec![b' '; MAX_JSON_BYTES + 1];
        assert!(matches!(
            RankingDocument::from_json(&huge),
            Err(DocumentError::TooLarge(_))
        ));
    }
}
