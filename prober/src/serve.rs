//! One HTTP/1 serving loop for the prober's own small endpoints: the
//! worker's `/metrics` and `/healthz` ([`crate::metrics::serve`]) and the
//! status page ([`crate::dashboard`]). They were two hand-written loops
//! that drifted apart; one loop keeps the guards below in both.
//!
//! Not the exporter's own listener (`metrics-exporter-prometheus` with
//! `http-listener`): it serves only the metrics page, while the worker
//! answers `/healthz` from its own state on the same port (container and
//! load-balancer health checks read it), and the dashboard is no metrics
//! page at all.
//!
//! The guards, each against one way a side endpoint could hurt the worker
//! it lives in:
//! - **accept-error backoff**: an accept that fails for want of file
//!   descriptors (`EMFILE`, `ENFILE`) leaves the connection in the backlog,
//!   so the listener stays ready and an immediate retry fails again: a
//!   loop that retries at once spins a core until a descriptor frees. It
//!   waits instead, doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`],
//!   and logs once per run of errors, not once per error.
//! - **header-read timeout**: a client that connects and sends nothing, or
//!   half a request, would otherwise hold its connection (and a file
//!   descriptor) for ever; hyper closes a connection whose request head
//!   has not arrived in time, idle keep-alive connections included.
//! - **connection limit**: at most [`Limits::max_connections`] connections
//!   are served at once; further ones wait in the kernel's accept backlog,
//!   where they hold no descriptor of this process, so a flood cannot take
//!   the descriptors the probes and the store need.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The first wait after a failed accept.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between accepts that keep failing: short enough that
/// the endpoint answers again within a second of a descriptor freeing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What one endpoint allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// How long a connection may take to send a request head (and how
    /// long an idle keep-alive connection is kept).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    /// 64 connections, 10 s for a request head: a scraper or two and an
    /// operator's browser tabs (each holds one long poll) fit many times
    /// over, and 64 descriptors are a small part of any real limit.
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// A whole response, as both endpoints make them.
pub type Response = hyper::Response<Full<Bytes>>;

/// A response of `status` with `content_type` and `body`; an impossible
/// header (never, with the static ones used here) becomes a plain 500
/// rather than a panic.
pub fn respond(
    status: u16,
    content_type: &'static str,
    extra: &[(&'static str, &'static str)],
    body: String,
) -> Response {
    let mut builder = hyper::Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| {
            let mut fallback = hyper::Response::new(Full::new(Bytes::from_static(b"")));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}

/// The wait after a failed accept that follows a wait of `previous`
/// (`None`: the first failure of a run).
pub fn next_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => FIRST_BACKOFF,
        Some(d) => (d * 2).min(MAX_BACKOFF),
    }
}

/// Serves `handler` on `listener` within `limits` until the returned
/// future is dropped (its task aborted): every connection it serves is
/// then dropped with it.
pub async fn serve<H, F>(listener: TcpListener, limits: Limits, handler: H)
where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut backoff: Option<Duration> = None;
    let mut failures: u64 = 0;
    loop {
        // Finished connections are reaped here, so the set stays within
        // the limit plus those that ended since the last accept.
        while connections.try_join_next().is_some() {}
        if permits.available_permits() == 0 {
            tracing::debug!(
                ?addr,
                limit = limits.max_connections,
                "connection limit reached; new connections wait"
            );
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return; // never closed; nothing left to serve if it were
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                let wait = next_backoff(backoff);
                if backoff.is_none() {
                    tracing::warn!(?addr, error = %e, "accept failed; backing off until it works again");
                }
                failures += 1;
                backoff = Some(wait);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if backoff.take().is_some() {
            tracing::info!(?addr, failures, "accepting connections again");
            failures = 0;
        }
        let handler = handler.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(limits.header_read_timeout)
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_its_ceiling() {
        let mut waits = Vec::new();
        let mut previous = None;
        for _ in 0..10 {
            let next = next_backoff(previous);
            waits.push(next.as_millis());
            previous = Some(next);
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[test]
    fn a_response_carries_its_status_type_and_headers() {
        let r = respond(
            404,
            "text/plain",
            &[("cache-control", "no-store")],
            "x".into(),
        );
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_and_idle_ones_are_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(300),
        };
        let server = tokio::spawn(serve(listener, limits, |_req| async {
            respond(200, "text/plain", &[], "ok".into())
        }));
        // One idle connection takes the only place...
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // ...the second is answered only once the idle one is closed by
        // the header-read timeout.
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer))
            .await
            .expect("answered within the timeout")
            .unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() >= Duration::from_millis(150));
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "the idle connection was closed"
        );
        server.abort();
    }
}
