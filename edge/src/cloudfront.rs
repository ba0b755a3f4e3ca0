//! CloudFront origin-request event types (aws_lambda_events has none).
//!
//! Every struct keeps fields it does not model in `extra`, so a request
//! passes through the handler with nothing lost: the response is the
//! request as CloudFront sent it, with only the origin (and where the
//! origin's policy says so, the Host header) rewritten.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The event: CloudFront sends exactly one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "Records")]
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub cf: Cf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cf {
    pub config: CfConfig,
    pub request: Request,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CfConfig {
    #[serde(default)]
    pub distribution_domain_name: String,
    #[serde(default)]
    pub distribution_id: String,
    pub event_type: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The request; the handler's answer is this object, modified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Lower-case header name to its values (CloudFront's shape).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<Header>>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub querystring: String,
    pub uri: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: String,
}

/// The origin CloudFront would use: custom (HTTP server) or S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomOrigin>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomOrigin {
    #[serde(default)]
    pub custom_headers: Value,
    pub domain_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<u32>,
    #[serde(default)]
    pub path: String,
    pub port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_protocols: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Request {
    /// The first value of a header (names are lower case in events).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(|h| h.value.as_str())
    }

    /// Replaces a header with one value.
    pub fn set_header(&mut self, name: &str, canonical: &str, value: &str) {
        self.headers.insert(
            name.to_string(),
            vec![Header {
                key: Some(canonical.to_string()),
                value: value.to_string(),
            }],
        );
    }
}

/// Why an event was rejected; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is not valid JSON for a CloudFront origin-request event: {path}: {message}")]
    Shape { path: String, message: String },
    #[error("event has {0} records; CloudFront sends exactly one")]
    RecordCount(usize),
    #[error("Records[0].cf.config.eventType is `{0}`; this handler serves origin-request events")]
    EventType(String),
}

/// Parses an event, naming the offending field on failure.
pub fn parse(value: Value) -> Result<Event, EventError> {
    check(serde_path_to_error::deserialize(value).map_err(shape_error)?)
}

/// Parses event JSON text straight into the typed event (no intermediate
/// JSON value): the path every invocation takes.
pub fn parse_str(text: &str) -> Result<Event, EventError> {
    let mut de = serde_json::Deserializer::from_str(text);
    check(serde_path_to_error::deserialize(&mut de).map_err(shape_error)?)
}

fn shape_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> EventError {
    EventError::Shape {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    }
}

fn check(event: Event) -> Result<Event, EventError> {
    if event.records.len() != 1 {
        return Err(EventError::RecordCount(event.records.len()));
    }
    let kind = &event.records[0].cf.config.event_type;
    if kind != "origin-request" {
        return Err(EventError::EventType(kind.chars().take(40).collect()));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

    #[test]
    fn fixture_round_trips_without_loss() {
        let original: Value = serde_json::from_str(FIXTURE).unwrap();
        let event = parse(original.clone()).unwrap();
        let again: Value = serde_json::to_value(&event).unwrap();
        assert_eq!(again, original, "serializing loses nothing");
        assert_eq!(parse(again).unwrap(), event);
        let request = &event.records[0].cf.request;
        assert_eq!(request.header("host"), Some("example.org"));
        assert_eq!(
            request
                .origin
                .as_ref()
                .unwrap()
                .custom
                .as_ref()
                .unwrap()
                .port,
            443
        );
    }

    #[test]
    fn text_and_value_parsing_agree() {
        let from_text = parse_str(FIXTURE).unwrap();
        assert_eq!(
            from_text,
            parse(serde_json::from_str(FIXTURE).unwrap()).unwrap()
        );
        let bad = FIXTURE.replace("\"port\": 443", "\"port\": \"443\"");
        let e = parse_str(&bad).unwrap_err().to_string();
        assert!(
            e.contains("Records[0].cf.request.origin.custom.port"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        v["Records"][0]["cf"]["request"]["origin"]["custom"]["port"] = "443".into();
        let e = parse(v).unwrap_err().to_string();
        assert!(
            e.contains("Records[0].cf.request.origin.custom.port"),
            "{e}"
        );
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        v["Records"][0]["cf"]["config"]["eventType"] = "viewer-request".into();
        assert!(parse(v).unwrap_err().to_string().contains("viewer-request"));
        let e = parse(serde_json::json!({"Records": []}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 records"), "{e}");
        let e = parse(serde_json::json!({"records": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Records"), "{e}");
    }
}
