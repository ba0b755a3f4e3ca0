//! A local HTTP(S) origin with switchable misbehaviour, for tests, the demo
//! and benchmarks. Loopback only: bind it to 127.0.0.x or `[::1]`.
//!
//! The HTTP/1.1 side is written by hand rather than with a server library
//! because the interesting modes (reset after the request, close without an
//! answer, stall mid-body, a full accept backlog) are about breaking the
//! protocol at exact points.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// What the origin does with each request.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// 200 after a fixed delay.
    Delay(Duration),
    /// 200 after a delay chosen by the client's source address, so that
    /// probers bound to 127.0.0.2, 127.0.0.3, ... see different distances.
    DelayBySource {
        delays: HashMap<IpAddr, Duration>,
        default: Duration,
    },
    /// 200 after a delay chosen by the request's path (the target up to
    /// any `?`), so that a health endpoint can be fast while the pages are
    /// slow: the gray failure only real traffic sees.
    DelayByPath {
        delays: HashMap<String, Duration>,
        default: Duration,
    },
    /// This status at once.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and resets the connection (RST).
    Reset,
    /// Reads the request and closes the connection without an answer.
    Close,
    /// Sends the head and part of the body, then stalls for this long.
    SlowBody(Duration),
    /// Alternates: `up` of 200s, then `down` of 503s, from when set.
    Flap { up: Duration, down: Duration },
    /// The listener stops accepting and its backlog is full: new
    /// connections get no SYN-ACK (a connect timeout).
    BacklogFull,
    /// The listener is closed: connections are refused.
    Stopped,
    /// A TLS origin presents a certificate from a CA nobody trusts (as
    /// after a botched certificate rotation); an HTTP origin answers 200.
    UntrustedCertificate,
}

/// A running test origin. Dropping it stops it.
pub struct TestOrigin {
    addr: SocketAddr,
    mode: watch::Sender<(Mode, Instant)>,
    stats: Arc<Stats>,
    tls: Option<TlsIdentity>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    by_source: Mutex<HashMap<IpAddr, u64>>,
}

/// A self-signed CA and a server certificate it issued.
#[derive(Clone)]
pub struct TlsIdentity {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The same names, from another CA: what [`Mode::UntrustedCertificate`]
    /// presents.
    impostor: tokio_rustls::TlsAcceptor,
}

impl TlsIdentity {
    /// A fresh CA and a certificate for `names` (DNS names or IPs).
    pub fn generate(names: &[&str]) -> TlsIdentity {
        let (ca_pem, acceptor) = Self::issue(names);
        let (_, impostor) = Self::issue(names);
        TlsIdentity {
            ca_pem,
            acceptor,
            impostor,
        }
    }

    fn issue(names: &[&str]) -> (String, tokio_rustls::TlsAcceptor) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("key generation");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Origin Router test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("key generation");
        let leaf_params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
            .expect("server config");
        (
            ca_cert.pem(),
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        )
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl TestOrigin {
    /// An HTTP origin on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr, mode: Mode) -> io::Result<TestOrigin> {
        Self::start_with(addr, mode, None).await
    }

    /// An HTTPS origin whose certificate names `names`, issued by its own CA
    /// (see [`TestOrigin::write_ca`]).
    pub async fn start_tls(addr: SocketAddr, mode: Mode, names: &[&str]) -> io::Result<TestOrigin> {
        Self::start_with(addr, mode, Some(TlsIdentity::generate(names))).await
    }

    async fn start_with(
        addr: SocketAddr,
        mode: Mode,
        tls: Option<TlsIdentity>,
    ) -> io::Result<TestOrigin> {
        // Bind once to learn the port, so a restart reuses the same address.
        let first = listen(addr, 1024)?;
        let addr = first.local_addr()?;
        let (tx, rx) = watch::channel((mode, Instant::now()));
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(supervise(addr, Some(first), rx, stats.clone(), tls.clone()));
        Ok(TestOrigin {
            addr,
            mode: tx,
            stats,
            tls,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches behaviour; takes effect for new requests at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace((mode, Instant::now()));
    }

    pub fn mode(&self) -> Mode {
        self.mode.borrow().0.clone()
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// Requests read so far from one source address.
    pub fn requests_from(&self, source: IpAddr) -> u64 {
        let by_source = self
            .stats
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        by_source.get(&source).copied().unwrap_or(0)
    }

    /// The CA certificate (PEM) of a TLS origin.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem())
    }

    /// Writes the CA certificate of a TLS origin to `dir`; returns its path.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        let pem = self
            .ca_pem()
            .ok_or_else(|| io::Error::other("not a TLS origin"))?;
        let path = dir.join(format!("ca-{}.pem", self.addr.port()));
        std::fs::write(&path, pem)?;
        Ok(path)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// Owns the listener and rebuilds it when the mode needs another kind:
/// none (stopped), a normal one, or a full backlog.
async fn supervise(
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    mut mode: watch::Receiver<(Mode, Instant)>,
    stats: Arc<Stats>,
    tls: Option<TlsIdentity>,
) {
    let mut fillers: Vec<TcpStream> = Vec::new();
    let mut current = Kind::Serving;
    loop {
        let wanted = Kind::of(&mode.borrow().0);
        if wanted != current {
            listener = None;
            fillers.clear();
            match wanted {
                Kind::Serving => listener = listen(addr, 1024).ok(),
                Kind::Full => {
                    if let Ok(l) = listen(addr, 0) {
                        fillers = fill_backlog(addr).await;
                        listener = Some(l);
                    }
                }
                Kind::Stopped => {}
            }
            current = wanted;
        }
        match (&listener, current) {
            (Some(l), Kind::Serving) => {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((stream, peer)) = accepted {
                            let _ = stream.set_nodelay(true);
                            let (mode, stats, tls) = (mode.clone(), stats.clone(), tls.clone());
                            tokio::spawn(async move {
                                match tls {
                                    None => serve(stream, peer, mode, stats).await,
                                    Some(tls) => {
                                        let acceptor = if matches!(mode.borrow().0, Mode::UntrustedCertificate) {
                                            &tls.impostor
                                        } else {
                                            &tls.acceptor
                                        };
                                        if let Ok(stream) = acceptor.accept(stream).await {
                                            serve(stream, peer, mode, stats).await;
                                        }
                                    }
                                }
                            });
                        }
                    }
                    changed = mode.changed() => if changed.is_err() { return },
                }
            }
            _ => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Serving,
    Full,
    Stopped,
}

impl Kind {
    fn of(mode: &Mode) -> Kind {
        match mode {
            Mode::BacklogFull => Kind::Full,
            Mode::Stopped => Kind::Stopped,
            _ => Kind::Serving,
        }
    }
}

/// Connects until a connection no longer completes: the accept queue of a
/// listener with backlog 0 then holds connections nobody accepts, and the
/// kernel drops further SYNs.
async fn fill_backlog(addr: SocketAddr) -> Vec<TcpStream> {
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    fillers
}

/// Serves requests on one connection until it closes or the mode says
/// otherwise.
async fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    mode: watch::Receiver<(Mode, Instant)>,
    stats: Arc<Stats>,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(request) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        *stats
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer.ip())
            .or_default() += 1;
        let (current, since) = mode.borrow().clone();
        let status = match current {
            Mode::Ok | Mode::UntrustedCertificate => 200,
            Mode::Delay(d) => {
                precise_sleep(d).await;
                200
            }
            Mode::DelayBySource { delays, default } => {
                precise_sleep(delays.get(&peer.ip()).copied().unwrap_or(default)).await;
                200
            }
            Mode::DelayByPath { delays, default } => {
                precise_sleep(delays.get(&request.path).copied().unwrap_or(default)).await;
                200
            }
            Mode::Status(code) => code,
            Mode::Hang => {
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 256];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Mode::Reset => {
                reset(stream);
                return;
            }
            Mode::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            Mode::SlowBody(stall) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\nok, and the rest";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.flush().await;
                tokio::time::sleep(stall).await;
                return;
            }
            Mode::Flap { up, down } => {
                let period = (up + down).as_nanos().max(1);
                if since.elapsed().as_nanos() % period < up.as_nanos() {
                    200
                } else {
                    503
                }
            }
            Mode::BacklogFull | Mode::Stopped => 503,
        };
        let body = if status < 400 {
            "ok\n"
        } else {
            "unavailable\n"
        };
        let response =
            format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            reason(status),
            body.len(),
            if request.close { "Connection: close\r\n" } else { "" },
            if request.head { "" } else { body },
        );
        if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if request.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Sleeps `d` to within tens of microseconds. tokio's timer rounds up to
/// whole milliseconds (a 5 ms sleep takes 5-6 ms), which would count as probe
/// timing error. So the last stretch waits on a Linux timerfd registered with
/// the runtime's own epoll: the task wakes when the kernel's high-resolution
/// timer fires, on the runtime's thread, with no hop through another thread.
/// Elsewhere the last stretch is a thread sleep on the blocking pool.
pub async fn precise_sleep(d: Duration) {
    let deadline = std::time::Instant::now() + d;
    let coarse = d.saturating_sub(Duration::from_millis(2));
    if !coarse.is_zero() {
        tokio::time::sleep(coarse).await;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    if rest.is_zero() {
        return;
    }
    #[cfg(target_os = "linux")]
    if timer::sleep(rest).await.is_ok() {
        return;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
}

#[cfg(target_os = "linux")]
mod timer {
    //! A one-shot timerfd through libc: tokio's timer has millisecond
    //! granularity and offers no timerfd of its own.

    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// Waits `d` (above zero) on a fresh timerfd.
    #[allow(unsafe_code)] // timerfd through libc; each block has its SAFETY note.
    pub async fn sleep(d: Duration) -> io::Result<()> {
        // SAFETY: a plain syscall with constant flags.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just created and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos().into(),
            },
        };
        // SAFETY: `fd` is open and `spec` is a valid itimerspec; the old value
        // is not asked for.
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns `fd`, so the descriptor stays open for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        let _ready = fd.readable().await?;
        Ok(())
    }
}

struct RequestHead {
    head: bool,
    close: bool,
    /// The request target's path (up to any `?`), as sent.
    path: String,
}

/// Reads one request head (the health requests carry no body). `buf` keeps
/// bytes of a pipelined next request.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<RequestHead> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let head = text.to_ascii_lowercase();
            buf.drain(..end + 4);
            let target = text.split(' ').nth(1).unwrap_or("");
            return Some(RequestHead {
                head: head.starts_with("head "),
                close: head.contains("\r\nconnection: close"),
                path: target.split('?').next().unwrap_or("").to_string(),
            });
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Drops the connection with SO_LINGER 0, which sends RST instead of FIN.
/// Only plain TCP streams can be reset; over TLS the stream is just dropped.
fn reset<S: 'static>(stream: S) {
    let any: &dyn std::any::Any = &stream as &dyn std::any::Any;
    if let Some(tcp) = any.downcast_ref::<TcpStream>() {
        let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    } else if let Some(tls) = any.downcast_ref::<tokio_rustls::server::TlsStream<TcpStream>>() {
        let _ = socket2::SockRef::from(tls.get_ref().0).set_linger(Some(Duration::ZERO));
    }
    drop(stream);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
