//! The dashboard's HTTP server: the page, its script and style (compiled
//! into the binary; nothing from the internet), and the JSON snapshot.
//!
//! Read-only: only GET and HEAD are answered. Every response forbids
//! framing and sniffing; the page's Content-Security-Policy allows only
//! this server's own script, style and JSON, so even a string from the
//! store that got past the page's escaping could not run as script.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// The page may load only its own script, style and data.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

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

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, snapshot: Arc<RwLock<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = {
                    let current = snapshot.read().unwrap_or_else(|e| e.into_inner());
                    route(req.method(), req.uri().path(), &current)
                };
                let response = hyper::Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .header("content-security-policy", CSP)
                    .header("x-content-type-options", "nosniff")
                    .header("x-frame-options", "DENY")
                    .header("referrer-policy", "no-referrer")
                    .header("cache-control", "no-store")
                    .body(Full::new(Bytes::from(body)));
                async move { response }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
