//! An origin that can go gray: its health path keeps answering in its usual
//! time while every other path, the pages real misses fetch, answers slowly.
//! The probers time the health path and see nothing; only the edge, timing
//! real misses, can tell ([`edge::traffic`]).
//!
//! Plain HTTP/1.1 on a loopback address, keep-alive or not, `GET` or `HEAD`;
//! each answer is `200 ok` after a delay chosen by the client's source
//! address (the region asking, as [`crate::world`] models it) and, once
//! gray, by the path. [`TestOrigin`](origin_router_tests::TestOrigin) times
//! every path alike, so the world starts one of these for an origin
//! declared [`OriginSpec::gray`](crate::world::OriginSpec::gray).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use origin_router_tests::origin::precise_sleep;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a connection may sit idle between requests before the origin
/// closes it: every connection task ends by itself.
const IDLE: Duration = Duration::from_secs(30);
/// The longest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// A running gray-capable origin. Dropping it stops accepting; open
/// connections end at their next idle timeout or when the client closes.
pub struct GrayOrigin {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    health_path: String,
    /// Answer time by source address, and for anyone else.
    delays: HashMap<IpAddr, Duration>,
    default: Duration,
    /// The pages' answer time while gray, in µs; 0: not gray.
    slow_pages_us: AtomicU64,
}

impl GrayOrigin {
    /// Listens on `addr` (port 0 picks one): `health_path` (up to any `?`)
    /// and, while not gray, every other path answer after `delays` for
    /// their source address, `default` for any other.
    pub async fn start(
        addr: SocketAddr,
        health_path: &str,
        delays: HashMap<IpAddr, Duration>,
        default: Duration,
    ) -> std::io::Result<GrayOrigin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            health_path: health_path.split('?').next().unwrap_or("/").to_string(),
            delays,
            default,
            slow_pages_us: AtomicU64::new(0),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, serving.clone()));
            }
        });
        Ok(GrayOrigin { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Gray: every path but the health path answers after `pages` (at
    /// least 1 µs), whoever asks, from the next request on.
    pub fn slow_pages(&self, pages: Duration) {
        let us = pages.as_micros().clamp(1, u64::MAX as u128) as u64;
        self.state.slow_pages_us.store(us, Ordering::Relaxed);
    }

    /// Back to normal: every path answers in its usual time.
    pub fn restore(&self) {
        self.state.slow_pages_us.store(0, Ordering::Relaxed);
    }
}

impl Drop for GrayOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the requests of one connection until the client closes it, asks
/// to, or leaves it idle for [`IDLE`].
async fn serve(mut stream: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut line = head.split(' ');
        let method = line.next().unwrap_or("");
        let path = line.next().unwrap_or("").split('?').next().unwrap_or("");
        let close = head.to_ascii_lowercase().contains("\r\nconnection: close");
        let slow = state.slow_pages_us.load(Ordering::Relaxed);
        let delay = if slow > 0 && path != state.health_path {
            Duration::from_micros(slow)
        } else {
            state
                .delays
                .get(&peer.ip())
                .copied()
                .unwrap_or(state.default)
        };
        precise_sleep(delay).await;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n{}\r\n{}",
            if close { "Connection: close\r\n" } else { "" },
            if method.eq_ignore_ascii_case("HEAD") {
                ""
            } else {
                "ok\n"
            },
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One GET of `path` over a fresh connection; the time to the status
    /// line.
    async fn time_get(addr: SocketAddr, path: &str) -> Duration {
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        started.elapsed()
    }

    #[tokio::test]
    async fn gray_slows_the_pages_and_never_the_health_path() {
        let origin = GrayOrigin::start(
            "127.0.0.1:0".parse().unwrap(),
            "/health?deep=1",
            HashMap::new(),
            Duration::from_millis(5),
        )
        .await
        .unwrap();
        let addr = origin.addr();
        assert!(time_get(addr, "/products/1").await < Duration::from_millis(150));
        origin.slow_pages(Duration::from_millis(300));
        assert!(time_get(addr, "/health").await < Duration::from_millis(150));
        assert!(time_get(addr, "/health?x=2").await < Duration::from_millis(150));
        assert!(time_get(addr, "/products/1").await >= Duration::from_millis(300));
        origin.restore();
        assert!(time_get(addr, "/products/1").await < Duration::from_millis(150));
    }
}
