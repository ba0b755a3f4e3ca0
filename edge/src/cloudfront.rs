//! CloudFront origin-request and origin-response event types
//! (aws_lambda_events has none).
//!
//! One binary serves both triggers, told apart by
//! `Records[0].cf.config.eventType`. An origin-response event carries the
//! request as it went to the origin (with the origin the origin-request
//! handler chose) and the origin's `response`; the response is kept as its
//! raw JSON text, so the answer to an origin-response is byte for byte the
//! response that came in.
//!
//! Every object keeps the fields it does not model in `extra`, as their JSON
//! text, so a request passes through the handler with nothing lost: the
//! response is the request as CloudFront sent it, with only the origin (and
//! where the origin's policy says so, the Host header) rewritten.
//!
//! The objects that keep extras deserialize by hand rather than with
//! `#[serde(flatten)]`: flatten buffers the whole object into an
//! intermediate tree before reading it, which made parsing most of the warm
//! path's cost. Here unknown fields are captured as raw JSON text in one
//! pass, and known ones are read straight into their types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The fields of a JSON object that its type does not model, in order, as
/// their JSON text.
#[derive(Debug, Clone, Default)]
pub struct Extra(Vec<(String, Box<RawValue>)>);

impl Extra {
    /// The JSON text of an unmodelled field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.get())
    }
}

impl PartialEq for Extra {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.get() == y.get())
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A JSON value kept as its text, compared by its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<RawValue>);

impl RawJson {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A key, borrowed from the input where it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Declares an object type that keeps unknown fields: the struct, and a
/// one-pass `Deserialize` that reads known fields into their types (a
/// field marked `required` must be present, the others default) and keeps
/// the rest in `extra`. A field given twice is an error, as with derive.
macro_rules! object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident as $what:literal {
            $(
                $(#[$fmeta:meta])*
                $json:literal => pub $field:ident: $ty:ty = $presence:ident,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(rename = $json)]
                pub $field: $ty,
            )*
            #[serde(flatten)]
            pub extra: Extra,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $( let mut $field: Option<$ty> = None; )*
                        let mut extra = Vec::new();
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match key.as_ref() {
                                $(
                                    $json => {
                                        if $field.is_some() {
                                            return Err(de::Error::duplicate_field($json));
                                        }
                                        $field = Some(map.next_value()?);
                                    }
                                )*
                                _ => extra.push((key.into_owned(), map.next_value()?)),
                            }
                        }
                        Ok($name {
                            $( $field: object!(@take $field, $json, $presence), )*
                            extra: Extra(extra),
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
    (@take $field:ident, $json:literal, required) => {
        $field.ok_or_else(|| de::Error::missing_field($json))?
    };
    (@take $field:ident, $json:literal, default) => {
        $field.unwrap_or_default()
    };
}

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

object! {
    pub struct Cf as "the `cf` object of a CloudFront event" {
        "config" => pub config: CfConfig = required,
        "request" => pub request: Request = required,
        /// Origin-response events only: the origin's response, verbatim.
        #[serde(skip_serializing_if = "Option::is_none")]
        "response" => pub response: Option<RawJson> = default,
    }
}

object! {
    pub struct CfConfig as "a CloudFront event's `config` object" {
        "distributionDomainName" => pub distribution_domain_name: String = default,
        "distributionId" => pub distribution_id: String = default,
        "eventType" => pub event_type: String = required,
        "requestId" => pub request_id: String = default,
    }
}

object! {
    /// The request; the handler's answer is this object, modified.
    pub struct Request as "a CloudFront request object" {
        #[serde(skip_serializing_if = "String::is_empty")]
        "clientIp" => pub client_ip: String = default,
        /// Lower-case header name to its values (CloudFront's shape).
        "headers" => pub headers: BTreeMap<String, Vec<Header>> = default,
        "method" => pub method: String = required,
        #[serde(skip_serializing_if = "Option::is_none")]
        "origin" => pub origin: Option<Origin> = default,
        "querystring" => pub querystring: String = default,
        "uri" => pub uri: String = required,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: String,
}

object! {
    /// The origin CloudFront would use: custom (HTTP server) or S3.
    pub struct Origin as "a CloudFront origin object" {
        #[serde(skip_serializing_if = "Option::is_none")]
        "custom" => pub custom: Option<CustomOrigin> = default,
    }
}

object! {
    pub struct CustomOrigin as "a CloudFront custom origin object" {
        "customHeaders" => pub custom_headers: Value = default,
        "domainName" => pub domain_name: String = required,
        #[serde(skip_serializing_if = "Option::is_none")]
        "keepaliveTimeout" => pub keepalive_timeout: Option<u32> = default,
        "path" => pub path: String = default,
        "port" => pub port: u16 = required,
        "protocol" => pub protocol: String = required,
        #[serde(skip_serializing_if = "Option::is_none")]
        "readTimeout" => pub read_timeout: Option<u32> = default,
        #[serde(skip_serializing_if = "Option::is_none")]
        "sslProtocols" => pub ssl_protocols: Option<Vec<String>> = default,
    }
}

impl Request {
    /// The first value of a header (names are lower case in events).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(|h| h.value.as_str())
    }

    /// Removes every value of a header (names are lower case in events).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.remove(name);
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
    #[error("event is not valid JSON for a CloudFront origin-request or origin-response event: {path}: {message}")]
    Shape { path: String, message: String },
    #[error("event has {0} records; CloudFront sends exactly one")]
    RecordCount(usize),
    #[error("Records[0].cf.config.eventType is `{0}`; this handler serves origin-request and origin-response events")]
    EventType(String),
    #[error(
        "an origin-response event without Records[0].cf.response: there is no response to return"
    )]
    MissingResponse,
}

/// Parses an event, naming the offending field on failure.
pub fn parse(value: Value) -> Result<Event, EventError> {
    check(serde_path_to_error::deserialize(value).map_err(shape_error)?)
}

/// Parses event JSON text straight into the typed event (no intermediate
/// JSON value): the path every invocation takes. The field path of an
/// error is worked out only when there is an error, by parsing again with
/// the path tracked, so good events do not pay for the tracking.
pub fn parse_str(text: &str) -> Result<Event, EventError> {
    match serde_json::from_str(text) {
        Ok(event) => check(event),
        Err(_) => {
            let mut de = serde_json::Deserializer::from_str(text);
            check(serde_path_to_error::deserialize(&mut de).map_err(shape_error)?)
        }
    }
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
    let cf = &event.records[0].cf;
    match EventType::of(cf) {
        Some(EventType::OriginRequest) => Ok(event),
        Some(EventType::OriginResponse) if cf.response.is_none() => {
            Err(EventError::MissingResponse)
        }
        Some(EventType::OriginResponse) => Ok(event),
        None => Err(EventError::EventType(
            cf.config.event_type.chars().take(40).collect(),
        )),
    }
}

/// The two triggers this handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    OriginRequest,
    OriginResponse,
}

impl EventType {
    /// The type of a record, if it is one of the two.
    pub fn of(cf: &Cf) -> Option<EventType> {
        match cf.config.event_type.as_str() {
            "origin-request" => Some(EventType::OriginRequest),
            "origin-response" => Some(EventType::OriginResponse),
            _ => None,
        }
    }
}

/// The response of an origin-response event whose other parts need not
/// parse: `Records` holding one record with `cf.config.eventType`
/// "origin-response" and a `cf.response` object. Only for the fallback
/// when [`parse_str`] fails.
pub fn origin_response_only(text: &str) -> Option<RawJson> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "Records")]
        records: Vec<Record>,
    }
    #[derive(Deserialize)]
    struct Record {
        cf: Cf,
    }
    #[derive(Deserialize)]
    struct Cf {
        config: Config,
        response: Option<RawJson>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "eventType")]
        event_type: String,
    }
    let mut event: Event = serde_json::from_str(text).ok()?;
    if event.records.len() != 1 {
        return None;
    }
    let cf = event.records.pop()?.cf;
    let response = cf.response?;
    (cf.config.event_type == "origin-response" && response.get().trim_start().starts_with('{'))
        .then_some(response)
}

/// The `status` of an origin-response's response object, as CloudFront
/// sends it (a string such as "503"); `None` when it is missing or not a
/// string. The rest of the response is not read.
pub fn response_status(response: &RawJson) -> Option<String> {
    #[derive(Deserialize)]
    struct Status {
        status: Option<Value>,
    }
    match serde_json::from_str::<Status>(response.get())
        .ok()?
        .status?
    {
        Value::String(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");
    const RESPONSE_FIXTURE: &str =
        include_str!("../../tests/fixtures/cloudfront/origin-response.json");

    #[test]
    fn origin_response_fixture_round_trips_with_its_response_verbatim() {
        let event = parse_str(RESPONSE_FIXTURE).unwrap();
        let cf = &event.records[0].cf;
        assert_eq!(EventType::of(cf), Some(EventType::OriginResponse));
        let response = cf.response.as_ref().unwrap();
        assert_eq!(response_status(response).as_deref(), Some("200"));
        let original: Value = serde_json::from_str(RESPONSE_FIXTURE).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), original);
        let text_in = &original["Records"][0]["cf"]["response"];
        let text_out: Value = serde_json::from_str(response.get()).unwrap();
        assert_eq!(&text_out, text_in);
        // Without a response there is nothing to return: a named error.
        let mut v = original.clone();
        v["Records"][0]["cf"]
            .as_object_mut()
            .unwrap()
            .remove("response");
        assert!(matches!(parse(v), Err(EventError::MissingResponse)));
        // A status that is not a string is read as missing, not an error.
        for status in [
            serde_json::json!(503),
            Value::Null,
            serde_json::json!({"a": 1}),
        ] {
            let mut v = original.clone();
            v["Records"][0]["cf"]["response"]["status"] = status;
            let event = parse(v).unwrap();
            assert_eq!(
                response_status(event.records[0].cf.response.as_ref().unwrap()),
                None
            );
        }
    }

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
    fn unmodelled_fields_pass_through_verbatim() {
        let with_body = FIXTURE.replace(
            "\"clientIp\"",
            "\"body\": {\"action\": \"read-only\", \"data\": \"eyJ9\", \"inputTruncated\": false}, \"clientIp\"",
        );
        let with_more = with_body.replace(
            "\"domainName\"",
            "\"fut\\u0075re\": [1, 2.50, null], \"domainName\"",
        );
        let event = parse_str(&with_more).unwrap();
        let request = &event.records[0].cf.request;
        assert_eq!(
            request.extra.get("body"),
            Some("{\"action\": \"read-only\", \"data\": \"eyJ9\", \"inputTruncated\": false}")
        );
        let custom = request.origin.as_ref().unwrap().custom.as_ref().unwrap();
        assert_eq!(
            custom.extra.get("future"),
            Some("[1, 2.50, null]"),
            "escaped key, raw number text"
        );
        let out: Value = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(out, serde_json::from_str::<Value>(&with_more).unwrap());
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        let twice = FIXTURE.replace("\"uri\": \"/\"", "\"uri\": \"/\", \"uri\": \"/admin\"");
        let e = parse_str(&twice).unwrap_err().to_string();
        assert!(e.contains("duplicate field `uri`"), "{e}");
        let e = parse_str(&FIXTURE.replace("\"method\": \"GET\",", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `method`"), "{e}");
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
