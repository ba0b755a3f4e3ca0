//! The dashboard's HTTP server: the page, its script and style (compiled
//! into the binary; nothing from the internet), and the JSON snapshot.
//!
//! Read-only: only GET and HEAD are answered. On a loopback address only
//! requests naming a loopback host are answered, so a web page elsewhere
//! that rebinds its own name to 127.0.0.1 cannot read the rankings through
//! the operator's browser. Every response forbids framing and sniffing; the page's Content-Security-Policy allows only
//! this server's own script, style and JSON, so even a string from the
//! store that got past the page's escaping could not run as script.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// Longest a request for a newer snapshot waits before it is answered with
/// the current one.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// The latest JSON snapshot and its number (1, 2, ... per poll).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub json: Arc<String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            version: 0,
            json: Arc::new("{}".into()),
        }
    }
}

/// `after=N` of a query string: the snapshot the page already has.
pub fn after(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
}

/// The page may load only its own script, style and data.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Status, content type and body for `method path`.
pub fn route(method: &hyper::Method, path: &str, snapshot: &str) -> (u16, &'static str, String) {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return (
            405,
            "text/plain; charset=utf-8",
            "read-only: only GET\n".into(),
        );
    }
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", INDEX.into()),
        "/app.js" => (200, "text/javascript; charset=utf-8", SCRIPT.into()),
        "/app.css" => (200, "text/css; charset=utf-8", STYLE.into()),
        "/api/state" => (200, "application/json", snapshot.to_string()),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    }
}

/// Headers on every response: no framing, no sniffing, no referrer, no
/// caching of a page that changes every poll.
const HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Serves until the task is aborted, with the guards of [`crate::serve`]
/// (accept backoff, header-read timeout, connection limit).
pub async fn serve(listener: TcpListener, latest: tokio::sync::watch::Receiver<Snapshot>) {
    let loopback_only = listener
        .local_addr()
        .is_ok_and(|addr| addr.ip().is_loopback());
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let mut latest = latest.clone();
        async move {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let (status, content_type, body) = if loopback_only && !is_loopback_host(host) {
                (
                    421,
                    "text/plain; charset=utf-8",
                    "this dashboard answers only on localhost or a loopback address\n".into(),
                )
            } else {
                // A page that has snapshot N waits for N+1 (or the
                // long-poll limit); anything else is answered now.
                if let Some(have) = after(req.uri().query()) {
                    if req.uri().path() == "/api/state" && latest.borrow().version <= have {
                        let _ =
                            tokio::time::timeout(LONG_POLL, latest.wait_for(|s| s.version > have))
                                .await;
                    }
                }
                let current = latest.borrow().json.clone();
                route(req.method(), req.uri().path(), &current)
            };
            crate::serve::respond(status, content_type, &HEADERS, body)
        }
    };
    crate::serve::serve(listener, crate::serve::Limits::default(), handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_a_page_has_comes_from_its_query() {
        assert_eq!(after(Some("after=12")), Some(12));
        assert_eq!(after(Some("x=1&after=7")), Some(7));
        assert_eq!(after(Some("after=-1")), None);
        assert_eq!(after(Some("after=")), None);
        assert_eq!(after(None), None);
    }

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        for ok in [
            "localhost",
            "LOCALHOST:9465",
            "127.0.0.1:9465",
            "127.3.4.5",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9465",
            "10.0.0.1",
            "localhost.evil.example",
            "[::2]:1",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_reads_are_answered() {
        for m in [
            hyper::Method::POST,
            hyper::Method::PUT,
            hyper::Method::DELETE,
        ] {
            assert_eq!(route(&m, "/api/state", "{}").0, 405);
        }
        assert_eq!(
            route(&hyper::Method::GET, "/api/state", "{\"a\":1}").2,
            "{\"a\":1}"
        );
        assert_eq!(route(&hyper::Method::GET, "/../etc/passwd", "").0, 404);
        // The page loads nothing it does not serve itself.
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("eval("));
    }
}
