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
    /// Origins in the band a `band` pool chose among.
    #[serde(skip_serializing_if = "Option::is_none")]
    band: Option<usize>,
    decision_micros: u64,
    decisions: u32,
    race_losers: Vec<Loser<'a>>,
    /// Origins of the pool ejected in this container (passive ejection).
    ejected: &'a [String],
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
        band: d.band,
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
        ejected: &d.ejected,
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
            band: None,
            elapsed: Duration::from_micros(900_123),
            ejected: vec!["ap".into()],
        };
        let v: serde_json::Value =
            serde_json::from_str(&decision_line(&d, "eu-west-1", 1_780_000_000_000)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(v["Source"], "watchdog");
        assert_eq!(v["DecisionMicros"], 900_123);
        assert_eq!(v["RaceLosers"][0]["class"], "connect_timeout");
        assert_eq!(v["RaceLosers"][1]["class"], "response_timeout");
        assert_eq!(v["Ejected"], serde_json::json!(["ap"]));
        assert_eq!(v["message"], "origin decision");
        assert_eq!(v["Timestamp"], serde_json::Value::Null, "only under _aws");
        assert_eq!(v["_aws"]["Timestamp"], 1_780_000_000_000u64);
        assert_eq!(v["RankingRegion"], serde_json::Value::Null);
        assert_eq!(v.get("Band"), None, "no band, no member");
        let d = Decision {
            ranking_region: Some("eu-west-1".into()),
            ranking_age_ms: Some(1500),
            losers: Vec::new(),
            source: Source::Cache,
            band: Some(3),
            ..d
        };
        let v: serde_json::Value =
            serde_json::from_str(&decision_line(&d, "eu-west-1", 1)).unwrap();
        assert_eq!(v["RankingRegion"], "eu-west-1");
        assert_eq!(v["RankingAgeMs"], 1500);
        assert_eq!(v["Band"], 3);
        assert_eq!(v["RaceLosers"], serde_json::json!([]));
        // Every metric named in the directive is a top-level member.
        for m in v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            assert!(v.get(m["Name"].as_str().unwrap()).is_some());
        }
    }

    /// The CloudWatch dashboard in deploy/edge.yaml reads only what these
    /// lines emit: its body is JSON once the template substitutes the
    /// regions, and every SEARCH names this namespace, one of the metrics
    /// and exactly one of the dimension sets of the directive.
    #[test]
    fn the_cloudwatch_dashboard_reads_the_metrics_these_lines_emit() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/edge.yaml");
        let template = std::fs::read_to_string(path).unwrap();
        let start = template
            .find("{\"widgets\"")
            .expect("edge.yaml has a dashboard body");
        let end = template[start..].find("\n        - R1:").unwrap() + start;
        let body = template[start..end]
            .replace("${R1}", "us-east-1")
            .replace("${R2}", "eu-west-1")
            .replace("${R3}", "ap-southeast-1");
        assert!(!body.contains("${"), "unsubstituted: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();

        let tail = format!("{{{}", &AWS_METADATA_TAIL[1..]);
        let directive: serde_json::Value = serde_json::from_str(&tail).unwrap();
        let directive = &directive["CloudWatchMetrics"][0];
        let metrics: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        let dimension_sets: Vec<String> = directive["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                let names: Vec<&str> = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap())
                    .collect();
                names.join(",")
            })
            .collect();

        let mut searches = 0;
        for widget in body["widgets"].as_array().unwrap() {
            if widget["type"] != "metric" {
                continue;
            }
            for row in widget["properties"]["metrics"].as_array().unwrap() {
                let expr = row[0]["expression"].as_str().unwrap();
                let schema = expr
                    .split_once("{")
                    .and_then(|(_, rest)| rest.split_once('}'))
                    .map(|(inside, _)| inside)
                    .unwrap_or_else(|| panic!("no schema in {expr}"));
                let (namespace, dims) = schema.split_once(',').unwrap();
                assert_eq!(namespace, NAMESPACE, "{expr}");
                assert!(dimension_sets.iter().any(|d| d == dims), "{expr}");
                let name = expr
                    .split_once("MetricName=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("no MetricName in {expr}"));
                assert!(metrics.contains(&name), "{expr}");
                searches += 1;
            }
        }
        assert_eq!(searches, 9, "three widgets per region");
    }

    /// The CloudWatch alarms in deploy/edge-alarms.yaml read only what
    /// these lines emit: each alarm in this namespace names a metric of the
    /// directive with exactly one of its dimension sets (and a real
    /// source), or the metric its metric filter makes of a member of the
    /// line, with a filter that selects these lines.
    #[test]
    fn the_cloudwatch_alarms_read_the_metrics_these_lines_emit() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/edge-alarms.yaml");
        let template = std::fs::read_to_string(path).unwrap();
        let tail = format!("{{{}", &AWS_METADATA_TAIL[1..]);
        let directive: serde_json::Value = serde_json::from_str(&tail).unwrap();
        let directive = &directive["CloudWatchMetrics"][0];
        let metrics: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        let dimension_sets: Vec<Vec<&str>> = directive["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                set.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap())
                    .collect()
            })
            .collect();
        // A real decision line, for the members the filter reads.
        let d = Decision {
            pool: "web".into(),
            origin: "eu".into(),
            source: Source::Cache,
            ranking_region: Some("eu-west-1".into()),
            ranking_age_ms: Some(1500),
            losers: Vec::new(),
            elapsed: Duration::from_micros(10),
            band: None,
            ejected: Vec::new(),
        };
        let line: serde_json::Value =
            serde_json::from_str(&decision_line(&d, "eu-west-1", 1)).unwrap();

        // `Key: value` of a line, trimmed, list dashes dropped.
        let value = |line: &str, key: &str| -> Option<String> {
            let line = line.trim().trim_start_matches("- ");
            line.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        };
        // The property lines of each resource of a type (deeper than the
        // resource's own two-space indentation).
        let resources = |kind: &str| -> Vec<Vec<&str>> {
            template
                .split(&format!("Type: {kind}\n"))
                .skip(1)
                .map(|rest| {
                    rest.lines()
                        .take_while(|l| l.is_empty() || l.starts_with("    "))
                        .collect()
                })
                .collect()
        };
        let filtered: Vec<String> = resources("AWS::Logs::MetricFilter")
            .iter()
            .flat_map(|b| b.iter().filter_map(|l| value(l, "MetricName")))
            .collect();
        let mut alarms = 0;
        for block in resources("AWS::CloudWatch::Alarm") {
            let get = |key: &str| block.iter().find_map(|l| value(l, key));
            assert_eq!(get("Namespace").as_deref(), Some(NAMESPACE));
            let name = get("MetricName").expect("an alarm names its metric");
            let dims: Vec<String> = block.iter().filter_map(|l| value(l, "Name")).collect();
            let dim_values: Vec<String> = block.iter().filter_map(|l| value(l, "Value")).collect();
            if metrics.contains(&name.as_str()) {
                assert!(
                    dimension_sets.iter().any(|set| *set == dims),
                    "{name} with dimensions {dims:?}"
                );
                for v in &dim_values {
                    assert!(
                        Source::ALL.iter().any(|s| s.as_str() == v),
                        "{name}: no source {v}"
                    );
                }
            } else {
                // A metric-filter metric: a member of the line, no dimensions.
                assert!(dims.is_empty(), "{name}: {dims:?}");
                assert!(
                    filtered.contains(&name),
                    "{name}: no metric filter makes it"
                );
                assert!(
                    line.get(&name).is_some(),
                    "{name} is not a member of the line"
                );
                let pattern = format!("$.{name} >= 0");
                assert!(template.contains(&pattern), "{pattern}");
                assert!(template.contains(&format!("MetricValue: $.{name}")));
                assert!(template.contains(r#"$.message = "origin decision""#));
                assert_eq!(line["message"], "origin decision");
            }
            alarms += 1;
        }
        assert_eq!(alarms, 3, "watchdog, known_down and ranking age");
    }
}
