//! The probe engine: one call times one origin phase by phase.
//!
//! reqwest (used elsewhere in the project) cannot report per-phase timings:
//! its connector times DNS, TCP and TLS as one block and its connect timeout
//! covers all three. So a probe performs each step itself, each under its
//! budget, on a fresh connection:
//!
//! 1. resolve the host ([`Resolver`]), under the connect budget;
//! 2. `TcpStream` connect, from an optional source address, under what is
//!    left of the connect budget;
//! 3. the TLS handshake (tokio-rustls, SNI), under the response budget;
//! 4. an HTTP/1.1 request with hyper; the response head is the first byte,
//!    timed by the kernel's arrival stamp where it gives one ([`stamp`]);
//! 5. for `GET`, the body (bounded), checked for the expected text.
//!
//! Every failure lands in exactly one [`FailureClass`]. The connect budget
//! runs from the start until the TCP handshake completes; the response budget
//! runs from there until the answer is complete. A probe never panics and
//! never outlives `connect_timeout + response_timeout` (or `total_timeout`).

pub mod budget;
pub mod resolve;
pub mod stamp;
mod tls;

use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

use crate::config::{HealthMethod, OriginConfig, ProberConfig, Protocol};
use crate::sample::{Failure, FailureClass, Outcome, PhaseTimings};
pub use resolve::{Resolver, StaticResolver, SystemResolver};
pub use tls::TlsError;

/// Budgets and options of a probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSettings {
    /// DNS plus TCP handshake.
    pub connect_timeout: Duration,
    /// From the TCP connection to the complete answer (TLS included).
    pub response_timeout: Duration,
    /// Optional bound on the whole attempt (the live race's 0.8 s).
    pub total_timeout: Option<Duration>,
    /// Local address to connect from.
    pub source_address: Option<IpAddr>,
    /// Most body bytes read for a `GET` probe.
    pub max_body: usize,
}

/// Most body bytes read for a `GET` probe.
const MAX_BODY: usize = 64 * 1024;

impl From<&ProberConfig> for ProbeSettings {
    /// The prober's budgets: connect and response apart, no total bound.
    fn from(prober: &ProberConfig) -> Self {
        ProbeSettings {
            connect_timeout: prober.connect_timeout,
            response_timeout: prober.response_timeout,
            total_timeout: None,
            source_address: prober.source_address,
            max_body: MAX_BODY,
        }
    }
}

impl ProbeSettings {
    /// One live-race attempt: everything within `attempt`; a timeout before
    /// the TCP handshake is a connect timeout, after it a response timeout.
    pub fn race_attempt(attempt: Duration) -> Self {
        ProbeSettings {
            connect_timeout: attempt,
            response_timeout: attempt,
            total_timeout: Some(attempt),
            source_address: None,
            max_body: MAX_BODY,
        }
    }
}

/// Probes origins. Cheap to share (`Arc`); holds the TLS configurations so
/// certificate stores are parsed once, not per probe.
pub struct ProbeEngine {
    settings: ProbeSettings,
    resolver: Arc<dyn Resolver>,
    default_tls: tokio_rustls::TlsConnector,
    extra_tls: HashMap<PathBuf, tokio_rustls::TlsConnector>,
}

impl ProbeEngine {
    /// An engine for `origins`; loads each origin's extra CA file once.
    pub fn new<'a>(
        settings: ProbeSettings,
        resolver: Arc<dyn Resolver>,
        origins: impl IntoIterator<Item = &'a OriginConfig>,
    ) -> Result<Self, TlsError> {
        let mut extra_tls = HashMap::new();
        for origin in origins {
            if let Some(path) = &origin.ca_file {
                if !extra_tls.contains_key(path) {
                    extra_tls.insert(path.clone(), tls::connector(Some(path))?);
                }
            }
        }
        Ok(ProbeEngine {
            settings,
            resolver,
            default_tls: tls::connector(None)?,
            extra_tls,
        })
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    /// Probes one origin on a fresh connection.
    pub async fn probe(&self, origin: &OriginConfig) -> Outcome {
        self.probe_within(origin, None).await
    }

    /// Probes one origin, the whole attempt cut at `budget` if given (an
    /// adaptive budget, [`budget`]): a cut before the TCP handshake is a
    /// connect timeout, after it a response timeout, as with the fixed
    /// budgets, whichever ends first.
    pub async fn probe_within(&self, origin: &OriginConfig, budget: Option<Duration>) -> Outcome {
        let start = Instant::now();
        match self.run(origin, start, budget).await {
            Ok(timings) => Outcome::Ok(timings),
            Err((class, detail)) => Outcome::Failed(Failure {
                class,
                after: start.elapsed(),
                detail,
            }),
        }
    }

    async fn run(
        &self,
        origin: &OriginConfig,
        start: Instant,
        budget: Option<Duration>,
    ) -> Result<PhaseTimings, Fail> {
        let s = &self.settings;
        let total = match (s.total_timeout, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let cap = |deadline: Instant| match total {
            Some(total) => deadline.min(start + total),
            None => deadline,
        };
        let connect_deadline = cap(start + s.connect_timeout);
        let port = origin.port();

        // 1. DNS
        let addrs = match origin.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match timeout_at(connect_deadline, self.resolver.resolve(&origin.host, port))
                .await
            {
                Err(_) => return Err((FailureClass::Dns, "name resolution timed out".into())),
                Ok(Err(e)) => return Err((FailureClass::Dns, e.to_string())),
                Ok(Ok(addrs)) => addrs,
            },
        };
        let addr = pick_address(&addrs, s.source_address).ok_or_else(|| {
            (
                FailureClass::Dns,
                format!("{}: no usable address", origin.host),
            )
        })?;
        let dns_done = Instant::now();

        // 2. TCP
        let tcp = match timeout_at(connect_deadline, connect(addr, s.source_address)).await {
            Err(_) => {
                return Err((
                    FailureClass::ConnectTimeout,
                    format!("no TCP connection to {addr} in time"),
                ))
            }
            Ok(Err(e)) => return Err(classify_connect_error(&e, addr)),
            Ok(Ok(tcp)) => stamp::Stamped::new(tcp),
        };
        let connected = Instant::now();
        let stamps = tcp.stamps();
        let response_deadline = cap(connected + s.response_timeout);

        // 3. TLS, 4-5. HTTP
        let (tls_done, answer) = match origin.protocol {
            Protocol::Http => {
                let answer = exchange(
                    tcp,
                    &stamps,
                    origin,
                    connected,
                    response_deadline,
                    s.max_body,
                )
                .await?;
                (connected, answer)
            }
            Protocol::Https => {
                let connector = match &origin.ca_file {
                    Some(path) => self.extra_tls.get(path).unwrap_or(&self.default_tls),
                    None => &self.default_tls,
                };
                let name =
                    rustls::pki_types::ServerName::try_from(origin.server_name().to_string())
                        .map_err(|e| (FailureClass::Tls, format!("bad server name: {e}")))?;
                let stream = match timeout_at(response_deadline, connector.connect(name, tcp)).await
                {
                    Err(_) => {
                        return Err((
                            FailureClass::ResponseTimeout,
                            "TLS handshake did not complete in time".into(),
                        ))
                    }
                    Ok(Err(e)) => return Err(classify_tls_error(&e)),
                    Ok(Ok(stream)) => stream,
                };
                let tls_done = Instant::now();
                let answer = exchange(
                    stream,
                    &stamps,
                    origin,
                    tls_done,
                    response_deadline,
                    s.max_body,
                )
                .await?;
                (tls_done, answer)
            }
        };
        Ok(PhaseTimings {
            dns: dns_done - start,
            connect: connected - dns_done,
            tls: tls_done - connected,
            first_byte: answer.first_byte,
            total: answer.done_at - start,
        })
    }
}

type Fail = (FailureClass, String);

/// Prefers an address of the source address's family.
fn pick_address(addrs: &[SocketAddr], source: Option<IpAddr>) -> Option<SocketAddr> {
    match source {
        Some(src) => addrs.iter().find(|a| a.is_ipv4() == src.is_ipv4()).copied(),
        None => addrs.first().copied(),
    }
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn classify_connect_error(e: &io::Error, addr: SocketAddr) -> Fail {
    let class = match e.kind() {
        io::ErrorKind::TimedOut => FailureClass::ConnectTimeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => FailureClass::Reset,
        // Refused, host or network unreachable, address not available: the
        // network answered that this origin cannot be reached.
        _ => FailureClass::ConnectRefused,
    };
    (class, format!("connect to {addr}: {e}"))
}

fn classify_tls_error(e: &io::Error) -> Fail {
    let is_rustls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    let class = if is_rustls {
        FailureClass::Tls
    } else {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => FailureClass::Reset,
            _ => FailureClass::Tls,
        }
    };
    (class, format!("TLS handshake: {e}"))
}

/// What [`exchange`] measured.
struct Answer {
    /// From the request to the response head: the kernel's arrival stamp
    /// where there is one, else when this task saw the head.
    first_byte: Duration,
    /// When the answer was complete.
    done_at: Instant,
}

/// Sends the health request and reads the answer. `started` is when the
/// stream was ready for the request.
async fn exchange<S>(
    stream: S,
    stamps: &stamp::Stamps,
    origin: &OriginConfig,
    started: Instant,
    deadline: Instant,
    max_body: usize,
) -> Result<Answer, Fail>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timed_out = || {
        (
            FailureClass::ResponseTimeout,
            "connected, but no complete answer in time".to_string(),
        )
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| classify_http_error(&e))?;
    // The connection is driven in this task rather than a spawned one: the
    // response head is seen in the same poll that reads it, with no wake-up
    // of another task in between (that hop is measurable timing error on a
    // busy machine).
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;

    let request = http::Request::builder()
        .method(origin.method.as_str())
        .uri(origin.health_path.as_str())
        .header(http::header::HOST, origin.probe_host_header())
        .header(
            http::header::USER_AGENT,
            concat!("origin-router-prober/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| (FailureClass::Reset, format!("cannot build request: {e}")))?;
    stamps.arm();
    let mut send = std::pin::pin!(timeout_at(deadline, sender.send_request(request)));
    let sent = loop {
        tokio::select! {
            biased;
            sent = &mut send => break sent,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = ended {
                    return Err(classify_http_error(&e));
                }
                // A clean end: the answer, if any, is already queued.
            }
        }
    };
    let response = match sent {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => return Err(classify_http_error(&e)),
        Ok(Ok(r)) => r,
    };
    let woken = started.elapsed();
    let first_byte = stamps.first_byte(woken).unwrap_or(woken);
    let status = response.status().as_u16();
    if !origin.accept_status.contains(status) {
        return Err((
            FailureClass::HttpStatus(status),
            format!("status {status} is outside {}", origin.accept_status),
        ));
    }
    if origin.method == HealthMethod::Head {
        return Ok(Answer {
            first_byte,
            done_at: Instant::now(),
        });
    }
    let mut body = response.into_body();
    let mut seen = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            frame = timeout_at(deadline, body.frame()) => frame,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = ended {
                    return Err(classify_http_error(&e));
                }
                continue;
            }
        };
        match frame {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(classify_http_error(&e)),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = max_body.saturating_sub(seen.len());
                    seen.extend_from_slice(&data[..data.len().min(room)]);
                    if seen.len() >= max_body {
                        break;
                    }
                }
            }
        }
    }
    let done_at = Instant::now();
    if let Some(expected) = &origin.body_contains {
        if !contains(&seen, expected.as_bytes()) {
            return Err((
                FailureClass::BodyMismatch,
                format!("body ({} bytes read) lacks `{expected}`", seen.len()),
            ));
        }
    }
    Ok(Answer {
        first_byte,
        done_at,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn classify_http_error(e: &hyper::Error) -> Fail {
    if e.is_timeout() {
        return (FailureClass::ResponseTimeout, e.to_string());
    }
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    // Closed early, reset, or an answer that is not HTTP: in every case the
    // connection ended without a valid answer.
    (FailureClass::Reset, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_choice_follows_the_source_family() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(
            pick_address(&[v6, v4], Some("127.0.0.2".parse().unwrap())),
            Some(v4)
        );
        assert_eq!(pick_address(&[v6, v4], None), Some(v6));
        assert_eq!(
            pick_address(&[v6], Some("127.0.0.2".parse().unwrap())),
            None
        );
    }

    #[test]
    fn body_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: down\n", b"ok"));
        assert!(contains(b"", b""));
    }
}
