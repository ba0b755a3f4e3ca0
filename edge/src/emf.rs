//! One structured line per decision, in CloudWatch Embedded Metric Format:
//! CloudWatch Logs turns `DecisionMicros` and `Decisions` (by pool and
//! source) into metrics with no API call from the function, and the same
//! line carries everything needed to explain the decision.

use origin_router::decision::Decision;
use serde_json::json;

/// The EMF namespace of the edge's metrics.
pub const NAMESPACE: &str = "OriginRouter/Edge";

/// The log line for one decision (a single JSON object, no newline).
pub fn decision_line(d: &Decision, region: &str, timestamp_ms: u64) -> String {
    let losers: Vec<serde_json::Value> = d
        .losers
        .iter()
        .map(|(origin, class)| json!({"origin": origin, "class": class.to_string()}))
        .collect();
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Pool", "Source"], ["Source"]],
                "Metrics": [
                    {"Name": "DecisionMicros", "Unit": "Microseconds"},
                    {"Name": "Decisions", "Unit": "Count"}
                ]
            }]
        },
        "message": "origin decision",
        "Pool": d.pool,
        "Source": d.source.as_str(),
        "Region": region,
        "Origin": d.origin,
        "RankingRegion": d.ranking_region,
        "RankingAgeMs": d.ranking_age_ms,
        "DecisionMicros": d.elapsed.as_micros() as u64,
        "Decisions": 1,
        "RaceLosers": losers,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::decision::Source;
    use origin_router::FailureClass;
    use std::time::Duration;

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
        // Every metric named in the directive is a top-level member.
        for m in v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            assert!(v.get(m["Name"].as_str().unwrap()).is_some());
        }
    }
}
