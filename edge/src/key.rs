//! The request's steering key: what a `band` pool hashes to pick an origin.
//!
//! - `uri`: the URI, plus `?` and the query string when there is one, as
//!   CloudFront sends them (not percent-decoded: `/a%20b` and `/a b` are
//!   different keys, as they are different cache keys). Each object stays
//!   on one origin, so the origins' own caches stay warm.
//! - `clientIp`: the viewer's address as CloudFront gives it.
//! - `header:NAME`: the first value of that header (CloudFront lower-cases
//!   header names in events; the config lower-cases NAME too).
//! - `cookie:NAME`: that cookie's value, from every `Cookie` header
//!   (CloudFront may pass several), name matched exactly (cookie names are
//!   case-sensitive), surrounding double quotes removed, nothing decoded.
//!
//! A missing or empty header or cookie falls back to the viewer address
//! (`clientIp`): a viewer without its session cookie yet (its first
//! request) still stays on one origin, which is the nearest thing to
//! session affinity without the cookie; hashing the URI instead would
//! spread one viewer's session over the band. An event without a client
//! address falls back to the URI. Every fallback is a valid key: the
//! decision never fails for want of one.
//!
//! Cost is linear in the header's length; CloudFront bounds the request's
//! headers (and so the key) to a few tens of KiB.

use std::borrow::Cow;

use origin_router::config::{SteeringConfig, SteeringKey, SteeringPolicy};

use crate::cloudfront::Request;

/// The key the pool's `steering` hashes for `request`; empty for a pool
/// that does not steer by key (`fastest`).
pub fn for_pool<'r>(steering: &SteeringConfig, request: &'r Request) -> Cow<'r, str> {
    match steering.policy {
        SteeringPolicy::Band => extract(&steering.key, request),
        SteeringPolicy::Fastest => Cow::Borrowed(""),
    }
}

/// The request's key of kind `key`, with the fallbacks above.
pub fn extract<'r>(key: &SteeringKey, request: &'r Request) -> Cow<'r, str> {
    match key {
        SteeringKey::Uri => uri(request),
        SteeringKey::ClientIp => client_ip(request),
        SteeringKey::Header(name) => match request.header(name).filter(|v| !v.is_empty()) {
            Some(value) => Cow::Borrowed(value),
            None => client_ip(request),
        },
        SteeringKey::Cookie(name) => match cookie(request, name) {
            Some(value) => Cow::Borrowed(value),
            None => client_ip(request),
        },
    }
}

fn uri(request: &Request) -> Cow<'_, str> {
    if request.querystring.is_empty() {
        Cow::Borrowed(&request.uri)
    } else {
        Cow::Owned(format!("{}?{}", request.uri, request.querystring))
    }
}

fn client_ip(request: &Request) -> Cow<'_, str> {
    if request.client_ip.is_empty() {
        uri(request)
    } else {
        Cow::Borrowed(&request.client_ip)
    }
}

/// The first non-empty value of cookie `name` in the request's `Cookie`
/// headers. Pairs without `=` and empty names are skipped, as browsers do.
pub fn cookie<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .headers
        .get("cookie")?
        .iter()
        .flat_map(|h| h.value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::{parse_str, Header};

    const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

    fn request() -> Request {
        parse_str(FIXTURE).unwrap().records.remove(0).cf.request
    }

    fn with_cookies(values: &[&str]) -> Request {
        let mut r = request();
        r.headers.insert(
            "cookie".into(),
            values
                .iter()
                .map(|v| Header {
                    key: Some("Cookie".into()),
                    value: v.to_string(),
                })
                .collect(),
        );
        r
    }

    fn key(text: &str) -> SteeringKey {
        text.parse().unwrap()
    }

    #[test]
    fn uri_with_and_without_query_string() {
        let mut r = request();
        r.uri = "/a%20b/c.js".into();
        r.querystring = String::new();
        assert_eq!(extract(&key("uri"), &r), "/a%20b/c.js");
        r.querystring = "v=2&x=%FF".into();
        assert_eq!(extract(&key("uri"), &r), "/a%20b/c.js?v=2&x=%FF");
    }

    #[test]
    fn client_ip_header_and_fallbacks() {
        let mut r = request();
        r.client_ip = "2001:db8::1".into();
        assert_eq!(extract(&key("clientIp"), &r), "2001:db8::1");
        r.set_header("x-user", "X-User", "alice");
        assert_eq!(extract(&key("header:X-User"), &r), "alice");
        // Missing or empty header: the viewer address.
        assert_eq!(extract(&key("header:x-other"), &r), "2001:db8::1");
        r.set_header("x-user", "X-User", "");
        assert_eq!(extract(&key("header:x-user"), &r), "2001:db8::1");
        assert_eq!(extract(&key("cookie:sid"), &r), "2001:db8::1");
        // No viewer address either: the URI.
        r.client_ip = String::new();
        r.uri = "/p".into();
        r.querystring = String::new();
        assert_eq!(extract(&key("cookie:sid"), &r), "/p");
        assert_eq!(extract(&key("clientIp"), &r), "/p");
    }

    #[test]
    fn cookies_are_found_in_any_cookie_header() {
        let r = with_cookies(&["a=1; sid=abc; b=2", "sid=second"]);
        assert_eq!(cookie(&r, "sid"), Some("abc"));
        let r = with_cookies(&["a=1", "b=2;sid=\"quoted\" "]);
        assert_eq!(cookie(&r, "sid"), Some("quoted"));
        // Names are case-sensitive; a prefix is not the name.
        let r = with_cookies(&["SID=x; sidx=y; xsid=z"]);
        assert_eq!(cookie(&r, "sid"), None);
        // The first non-empty value counts.
        let r = with_cookies(&["sid=; sid=later"]);
        assert_eq!(cookie(&r, "sid"), None, "the first sid is empty");
        // A value may hold '='.
        let r = with_cookies(&["sid=a=b=c"]);
        assert_eq!(cookie(&r, "sid"), Some("a=b=c"));
    }

    #[test]
    fn malformed_cookie_headers_never_panic() {
        for hostile in [
            "",
            ";",
            ";;;;",
            "=",
            "==",
            "=sid",
            "sid",
            "sid;=;",
            " ; sid ; =v",
            "\"",
            "sid=\"",
            "sid=\"\"",
            "sid=%FF%FE%00",
            "sid=\u{0}\u{1f}",
            "sid=é€😀",
            "\u{feff}sid=bom",
        ] {
            let r = with_cookies(&[hostile]);
            let found = cookie(&r, "sid");
            let k = extract(&key("cookie:sid"), &r);
            assert!(!k.is_empty(), "{hostile:?}");
            if let Some(v) = found {
                assert_eq!(k, v, "{hostile:?}");
                assert!(!v.is_empty());
            }
        }
        let r = with_cookies(&["sid=%FF%FE%00"]);
        assert_eq!(cookie(&r, "sid"), Some("%FF%FE%00"), "never decoded");
        let r = with_cookies(&["sid=\""]);
        assert_eq!(cookie(&r, "sid"), Some("\""), "an unmatched quote stays");
        let r = with_cookies(&["sid=\"\""]);
        assert_eq!(cookie(&r, "sid"), None, "an empty quoted value is empty");
        let r = with_cookies(&["\u{feff}sid=bom"]);
        assert_eq!(cookie(&r, "sid"), None, "a BOM is part of the name");
    }

    #[test]
    fn a_huge_cookie_header_is_read_to_its_end() {
        let mut value = String::with_capacity(2 << 20);
        for i in 0..100_000 {
            value.push_str(&format!("c{i}=v{i}; "));
        }
        value.push_str("sid=last");
        let r = with_cookies(&[&value]);
        assert_eq!(cookie(&r, "sid"), Some("last"));
        assert_eq!(cookie(&r, "c99999"), Some("v99999"));
        // One huge cookie value is the key as it is.
        let big = format!("sid={}", "x".repeat(1 << 20));
        let r = with_cookies(&[&big]);
        assert_eq!(extract(&key("cookie:sid"), &r).len(), 1 << 20);
    }

    #[test]
    fn escapes_in_the_event_json_are_keys_like_any_text() {
        // JSON escapes decode to text before the key is taken; a lone
        // surrogate is not text, and the event is refused with its path.
        let escaped = FIXTURE.replace("\"uri\": \"/\"", "\"uri\": \"/\\u00e9\\ud83d\\ude00\"");
        let r = parse_str(&escaped).unwrap().records.remove(0).cf.request;
        assert_eq!(extract(&key("uri"), &r), "/é😀");
        let lone = FIXTURE.replace("\"uri\": \"/\"", "\"uri\": \"/\\ud800\"");
        let e = parse_str(&lone).unwrap_err().to_string();
        assert!(e.contains("Records[0].cf.request.uri"), "{e}");
    }
}
