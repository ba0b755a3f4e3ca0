//! One structured line per decision, in CloudWatch Embedded Metric Format:
//! CloudWatch Logs turns `DecisionMicros` and `Decisions` (by pool and
//! source) into metrics with no API call from the function, and the same
//! line carries everything needed to explain the decision. One more line
//! per passive ejection makes `Ejections` (by pool and origin, and by the
//! edge's region, which is where Lambda@Edge writes its logs and so where
//! a per-region alarm can read it).

use std::time::Duration;

use crate::ejection::Trigger;
use crate::router::Decision;
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

/// The metric directive of the ejection lines.
const EJECTION_METADATA_TAIL: &str = concat!(
    r#","CloudWatchMetrics":[{"Namespace":"OriginRouter/Edge","#,
    r#""Dimensions":[["Pool","Origin"],["Region"]],"#,
    r#""Metrics":[{"Name":"Ejections","Unit":"Count"}]}]}"#
);

/// The metric directive of the latency lines: what one miss took, at high
/// resolution (1 s), beside the origin's ranked (probed) latency, by pool
/// and origin and by the edge's region: the gray failure shows as the one
/// far above the other.
const LATENCY_METADATA_TAIL: &str = concat!(
    r#","CloudWatchMetrics":[{"Namespace":"OriginRouter/Edge","#,
    r#""Dimensions":[["Pool","Origin"],["Region"]],"#,
    r#""Metrics":[{"Name":"OriginLatencyMs","Unit":"Milliseconds","StorageResolution":1},"#,
    r#"{"Name":"RankedLatencyMs","Unit":"Milliseconds","StorageResolution":1}]}]}"#
);

/// The metric directive of the lines for misses whose latency could not
/// be measured (a stamp missing, malformed, negative or absurd).
const DROPPED_METADATA_TAIL: &str = concat!(
    r#","CloudWatchMetrics":[{"Namespace":"OriginRouter/Edge","#,
    r#""Dimensions":[["Region"]],"#,
    r#""Metrics":[{"Name":"DroppedLatencies","Unit":"Count"}]}]}"#
);

pub const LATENCY_MESSAGE: &str = "origin latency";
pub const DROPPED_MESSAGE: &str = "latency not measured";

/// The `message` member of the decision lines and of the ejection lines.
pub const DECISION_MESSAGE: &str = "origin decision";
pub const EJECTION_MESSAGE: &str = "origin ejected";

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
    let members = Members {
        message: DECISION_MESSAGE,
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
    write_line(
        out,
        AWS_METADATA_TAIL,
        &members,
        DECISION_MESSAGE,
        timestamp_ms,
    );
}

/// One passive ejection, as its log line tells it.
#[derive(Debug, Clone, Copy)]
pub struct Ejection<'a> {
    pub pool: &'a str,
    pub origin: &'a str,
    /// The status of the answer that ejected it.
    pub status: u16,
    pub trigger: Trigger,
    pub duration: Duration,
    /// Its ejections in a row, this one included.
    pub times: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EjectionMembers<'a> {
    #[serde(rename = "message")]
    message: &'static str,
    pool: &'a str,
    origin: &'a str,
    region: &'a str,
    status: u16,
    trigger: &'static str,
    ejection_ms: u64,
    times_ejected: u32,
    ejections: u32,
}

/// Appends the log line for one ejection (metric `Ejections`) to `out`.
pub fn write_ejection_line(out: &mut Vec<u8>, e: &Ejection<'_>, region: &str, timestamp_ms: u64) {
    let members = EjectionMembers {
        message: EJECTION_MESSAGE,
        pool: e.pool,
        origin: e.origin,
        region,
        status: e.status,
        trigger: e.trigger.as_str(),
        ejection_ms: e.duration.as_millis().min(u64::MAX as u128) as u64,
        times_ejected: e.times,
        ejections: 1,
    };
    write_line(
        out,
        EJECTION_METADATA_TAIL,
        &members,
        EJECTION_MESSAGE,
        timestamp_ms,
    );
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LatencyMembers<'a> {
    #[serde(rename = "message")]
    message: &'static str,
    pool: &'a str,
    origin: &'a str,
    region: &'a str,
    origin_latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ranked_latency_ms: Option<f64>,
    slow: bool,
}

/// Appends the line for one timed miss (metrics `OriginLatencyMs` and,
/// where a fresh ranking has the origin, `RankedLatencyMs`) to `out`.
pub fn write_latency_line(
    out: &mut Vec<u8>,
    t: &crate::traffic::Timed,
    region: &str,
    timestamp_ms: u64,
) {
    let members = LatencyMembers {
        message: LATENCY_MESSAGE,
        pool: &t.pool,
        origin: &t.origin,
        region,
        origin_latency_ms: t.latency.as_secs_f64() * 1000.0,
        ranked_latency_ms: t.ranked_ms.filter(|ms| ms.is_finite()),
        slow: t.slow,
    };
    write_line(
        out,
        LATENCY_METADATA_TAIL,
        &members,
        LATENCY_MESSAGE,
        timestamp_ms,
    );
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DroppedMembers<'a> {
    #[serde(rename = "message")]
    message: &'static str,
    region: &'a str,
    reason: &'static str,
    dropped_latencies: u32,
}

/// Appends the line for a miss whose latency was not measured (metric
/// `DroppedLatencies`) to `out`.
pub fn write_dropped_line(
    out: &mut Vec<u8>,
    why: crate::traffic::Dropped,
    region: &str,
    timestamp_ms: u64,
) {
    let members = DroppedMembers {
        message: DROPPED_MESSAGE,
        region,
        reason: why.as_str(),
        dropped_latencies: 1,
    };
    write_line(
        out,
        DROPPED_METADATA_TAIL,
        &members,
        DROPPED_MESSAGE,
        timestamp_ms,
    );
}

/// `{"_aws":{"Timestamp":T` + `tail` + the members, joined into one
/// object, and a newline.
fn write_line(
    out: &mut Vec<u8>,
    tail: &str,
    members: &impl Serialize,
    message: &str,
    timestamp_ms: u64,
) {
    out.extend_from_slice(AWS_METADATA_HEAD.as_bytes());
    out.extend_from_slice(timestamp_ms.to_string().as_bytes());
    out.extend_from_slice(tail.as_bytes());
    let at = out.len();
    // Strings and numbers only: serializing cannot fail. Were it to, the
    // line still ends as valid JSON.
    match serde_json::to_writer(&mut *out, members) {
        // Join the two objects: the members' opening brace becomes the
        // comma after `_aws`.
        Ok(()) => out[at] = b',',
        Err(_) => {
            out.truncate(at);
            out.extend_from_slice(br#","message":""#);
            out.extend_from_slice(message.as_bytes());
            out.extend_from_slice(br#""}"#);
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

    /// Each directive the edge writes: (metric names, dimension sets).
    fn directives() -> Vec<(Vec<String>, Vec<Vec<String>>)> {
        [
            AWS_METADATA_TAIL,
            EJECTION_METADATA_TAIL,
            LATENCY_METADATA_TAIL,
            DROPPED_METADATA_TAIL,
        ]
        .iter()
        .map(|tail| {
            let tail = format!("{{{}", &tail[1..]);
            let directive: serde_json::Value = serde_json::from_str(&tail).unwrap();
            let directive = &directive["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], NAMESPACE);
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect()
            };
            let metrics = directive["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap().to_string())
                .collect();
            let dims = directive["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(strings)
                .collect();
            (metrics, dims)
        })
        .collect()
    }

    /// The dimension sets `metric` is emitted with (empty: not emitted).
    fn dimension_sets_of(metric: &str) -> Vec<Vec<String>> {
        directives()
            .into_iter()
            .filter(|(metrics, _)| metrics.iter().any(|m| m == metric))
            .flat_map(|(_, dims)| dims)
            .collect()
    }

    fn ejection_line(e: &Ejection<'_>, region: &str, timestamp_ms: u64) -> String {
        let mut out = Vec::new();
        write_ejection_line(&mut out, e, region, timestamp_ms);
        assert_eq!(out.pop(), Some(b'\n'));
        assert!(!out.contains(&b'\n'), "one line");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    #[test]
    fn an_ejection_line_is_valid_emf_with_its_metric_and_dimensions() {
        let e = Ejection {
            pool: "web",
            origin: "eu\"\n<x>",
            status: 503,
            trigger: Trigger::ErrorRatio,
            duration: Duration::from_secs(60),
            times: 2,
        };
        let v: serde_json::Value =
            serde_json::from_str(&ejection_line(&e, "eu-west-1", 1_780_000_000_000)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_780_000_000_000u64);
        assert_eq!(v["message"], EJECTION_MESSAGE);
        assert_eq!(v["Pool"], "web");
        assert_eq!(v["Origin"], "eu\"\n<x>", "escaped, one line");
        assert_eq!(v["Region"], "eu-west-1");
        assert_eq!(v["Status"], 503);
        assert_eq!(v["Trigger"], "error_ratio");
        assert_eq!(v["EjectionMs"], 60_000);
        assert_eq!(v["TimesEjected"], 2);
        assert_eq!(v["Ejections"], 1);
        // Every metric and every dimension the directive names is a
        // top-level member: CloudWatch drops a metric otherwise.
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        for m in directive["Metrics"].as_array().unwrap() {
            assert!(v[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for d in set.as_array().unwrap() {
                assert!(v[d.as_str().unwrap()].is_string(), "{d}");
            }
        }
        assert_eq!(
            dimension_sets_of("Ejections"),
            [vec!["Pool", "Origin"], vec!["Region"]]
        );
    }

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
                let name = expr
                    .split_once("MetricName=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("no MetricName in {expr}"));
                let sets = dimension_sets_of(name);
                assert!(!sets.is_empty(), "{name} is not emitted: {expr}");
                assert!(sets.iter().any(|d| d.join(",") == dims), "{expr}");
                searches += 1;
            }
        }
        assert_eq!(
            searches, 18,
            "five widgets per region, the latency one with two searches"
        );
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
        // A metric-math alarm reads several metrics: each `MetricStat` is
        // held to the lines like a plain alarm.
        let metrics: Vec<Vec<&str>> = resources("AWS::CloudWatch::Alarm")
            .into_iter()
            .flat_map(|block| {
                let stats: Vec<Vec<&str>> = block
                    .split(|l| l.trim() == "MetricStat:")
                    .skip(1)
                    .map(|chunk| chunk.to_vec())
                    .collect();
                if stats.is_empty() {
                    alarms += 1;
                    vec![block]
                } else {
                    alarms += 1;
                    stats
                }
            })
            .collect();
        for block in metrics {
            let get = |key: &str| block.iter().find_map(|l| value(l, key));
            assert_eq!(get("Namespace").as_deref(), Some(NAMESPACE));
            let name = get("MetricName").expect("an alarm names its metric");
            let dims: Vec<String> = block.iter().filter_map(|l| value(l, "Name")).collect();
            let dim_values: Vec<String> = block.iter().filter_map(|l| value(l, "Value")).collect();
            let sets = dimension_sets_of(&name);
            if !sets.is_empty() {
                assert!(sets.contains(&dims), "{name} with dimensions {dims:?}");
                for (dim, v) in dims.iter().zip(&dim_values) {
                    match dim.as_str() {
                        "Source" => assert!(
                            Source::ALL.iter().any(|s| s.as_str() == v),
                            "{name}: no source {v}"
                        ),
                        // The edge's region is where its logs land: the
                        // alarm's own region.
                        "Region" => assert_eq!(v, "!Ref AWS::Region", "{name}"),
                        other => panic!("{name}: an alarm on dimension {other}"),
                    }
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
        }
        assert_eq!(
            alarms, 5,
            "watchdog, known_down, ranking age, ejections and gray latency"
        );
    }
}
