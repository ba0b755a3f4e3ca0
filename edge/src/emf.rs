//! One structured line per decision, in CloudWatch Embedded Metric Format:
//! CloudWatch Logs turns `DecisionMicros` and `Decisions` (by pool and
//! source) into metrics with no API call from the function, and the same
//! line carries everything needed to explain the decision.

use crate::decision::Decision;
use serde::Serialize;

/// The EMF namespace of the edge's metrics.
pub const NAMESPACE: &str = "OriginRouter/Edge";

/// The metric directive, the same on every line: written once, as text.
const AWS_METADATA_HEAD: &str = r#"{"_aws":{"Timestamp":"#;
const AWS_METADATA_TAIL: &str = concat!(
    r#","CloudWatchMetrics":[{"Namespace":"OriginRouter/Edge","#,
    r#""Dimensions":[["Pool","Source"],["Source"]],"#,
    r#""Metrics":[{"Name":"DecisionMicros","Unit":"Microseconds"},"#,
    r#"{"Name":"Decisions","Unit":"Count"}]}]}"#
);

/// The members of a line after `_aws`, borrowed from the decision: the line
/// is written on every invocation, so it is serialized straight from the
/// decision with no intermediate JSON tree.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Members<'a> {
    #[serde(rename = "message")]
    message: &'static str,
    pool: &'a str,
    source: &'static str,
    region: &'a str,
    origin: &'a str,
    ranking_region: Option<&'a str>,
    ranking_age_ms: Option<u64>,
    decision_micros: u64,
    decisions: u32,
    race_losers: Vec<Loser<'a>>,
}

#[derive(Serialize)]
struct Loser<'a> {
    origin: &'a str,
    class: String,
}

/// Appends the log line for one decision (one JSON object and a newline)
/// to `out`.
pub fn write_decision_line(out: &mut Vec<u8>, d: &Decision, region: &str, timestamp_ms: u64) {
    out.extend_from_slice(AWS_METADATA_HEAD.as_bytes());
    out.extend_from_slice(timestamp_ms.to_string().as_bytes());
    out.extend_from_slice(AWS_METADATA_TAIL.as_bytes());
    let members = Members {
        message: "origin decision",
        pool: &d.pool,
        source: d.source.as_str(),
        region,
        origin: &d.origin,
        ranking_region: d.ranking_region.as_deref(),
        ranking_age_ms: d.ranking_age_ms,
        decision_micros: d.elapsed.as_micros() as u64,
        decisions: 1,
        race_losers: d
            .losers
            .iter()
            .map(|(origin, class)| Loser {
                origin,
                class: class.to_string(),
            })
            .collect(),
    };
    let at = out.len();
    // Strings and numbers only: serializing cannot fail. Were it to, the
    // line still ends as valid JSON.
    match serde_json::to_writer(&mut *out, &members) {
        // Join the two objects: the members' opening brace becomes the
        // comma after `_aws`.
        Ok(()) => out[at] = b',',
        Err(_) => {
            out.truncate(at);
            out.extend_from_slice(br#","message":"origin decision"}"#);
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Source;
    use origin_router::FailureClass;
    use std::time::Duration;

    /// The line as text, without its newline.
    fn decision_line(d: &Decision, region: &str, timestamp_ms: u64) -> String {
        let mut out = Vec::new();
        write_decision_line(&mut out, d, region, timestamp_ms);
        assert_eq!(out.pop(), Some(b'\n'));
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    #[test]
    fn line_is_valid_emf_with_every_field() {
        let d = Decision {
            pool: "web".into(),
            origin: "eu".into(),
            source: Source::Watchdog,
            ranking_region: None,
            ranking_age_ms: None,
            losers: vec![
                ("us".into(), FailureClass::ConnectTimeout),
                ("ap".into(), FailureClass::ResponseTimeout),
            ],
            elapsed: Duration::from_micros(900_123),
        };
        let v: serde_json::Value =
            serde_json::from_str(&decision_line(&d, "eu-west-1", 1_780_000_000_000)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(v["Source"], "watchdog");
        assert_eq!(v["DecisionMicros"], 900_123);
        assert_eq!(v["RaceLosers"][0]["class"], "connect_timeout");
        assert_eq!(v["RaceLosers"][1]["class"], "response_timeout");
        assert_eq!(v["message"], "origin decision");
        assert_eq!(v["Timestamp"], serde_json::Value::Null, "only under _aws");
        assert_eq!(v["_aws"]["Timestamp"], 1_780_000_000_000u64);
        assert_eq!(v["RankingRegion"], serde_json::Value::Null);
        let d = Decision {
            ranking_region: Some("eu-west-1".into()),
            ranking_age_ms: Some(1500),
            losers: Vec::new(),
            source: Source::Cache,
            ..d
        };
        let v: serde_json::Value =
            serde_json::from_str(&decision_line(&d, "eu-west-1", 1)).unwrap();
        assert_eq!(v["RankingRegion"], "eu-west-1");
        assert_eq!(v["RankingAgeMs"], 1500);
        assert_eq!(v["RaceLosers"], serde_json::json!([]));
        // Every metric named in the directive is a top-level member.
        for m in v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            assert!(v.get(m["Name"].as_str().unwrap()).is_some());
        }
    }
}
