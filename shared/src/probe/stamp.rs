//! Kernel receive timestamps for the first-byte phase.
//!
//! A first-byte time read from the clock when the probe's task wakes up also
//! counts how long the runtime took to get to that task: on a prober running
//! thousands of probes a second on two cores, that wait is most of the
//! timing error, and it would make a busy prober rank origins by its own
//! load. Linux stamps each packet as it arrives (`SO_TIMESTAMPNS`) and hands
//! the stamp to `recvmsg`. A probe reads its socket through [`Stamped`], which
//! keeps the stamp of the latest read and the clock time of the request's
//! write, so the phase runs from the request leaving to the answer arriving,
//! with the prober's own scheduling taken out (the same technique `ping`
//! uses). Where the kernel gives no stamp (other systems, or the option is
//! refused) the phase falls back to the wake-up clock.
//!
//! Both ends are `CLOCK_REALTIME` (the only clock socket stamps use); a
//! result is used only when it is positive and no longer than the wake-up
//! measurement, so a clock step can never produce a nonsense time.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the stream saw, shared with the probe that handed the stream to
/// hyper (which owns it from then on).
#[derive(Debug, Default)]
pub struct Stamps {
    /// Set by [`Stamps::arm`]: the next write is the request.
    armed: AtomicBool,
    /// Wall clock, ns since the epoch, of the request's first write.
    request_ns: AtomicU64,
    /// Kernel arrival stamp, ns since the epoch, of the latest read with data.
    arrival_ns: AtomicU64,
}

impl Stamps {
    /// Marks the start of the exchange: the next write is the request, and
    /// anything read before (a TLS handshake) no longer counts.
    pub fn arm(&self) {
        self.request_ns.store(0, Ordering::Relaxed);
        self.arrival_ns.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    /// From the request's write to the arrival of the latest data read, if
    /// the kernel stamped it and the result is plausible against `woken`,
    /// the same interval measured by the wake-up clock.
    pub fn first_byte(&self, woken: Duration) -> Option<Duration> {
        let sent = self.request_ns.load(Ordering::Relaxed);
        let arrived = self.arrival_ns.load(Ordering::Relaxed);
        if sent == 0 || arrived <= sent {
            return None;
        }
        let kernel = Duration::from_nanos(arrived - sent);
        (kernel <= woken).then_some(kernel)
    }

    fn wrote(&self, at_ns: u64) {
        if self.armed.swap(false, Ordering::Relaxed) {
            self.request_ns.store(at_ns, Ordering::Relaxed);
        }
    }

    fn arrived(&self, at_ns: u64) {
        self.arrival_ns.store(at_ns, Ordering::Relaxed);
    }
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A TCP stream whose reads carry the kernel's arrival stamps.
pub struct Stamped {
    inner: TcpStream,
    stamps: Arc<Stamps>,
    /// Whether the kernel accepted `SO_TIMESTAMPNS` on this socket.
    kernel: bool,
}

impl Stamped {
    /// Wraps `stream`, asking the kernel to stamp its arriving data.
    pub fn new(stream: TcpStream) -> Self {
        let kernel = sys::enable(&stream);
        Stamped {
            inner: stream,
            stamps: Arc::default(),
            kernel,
        }
    }

    pub fn stamps(&self) -> Arc<Stamps> {
        self.stamps.clone()
    }
}

impl AsyncRead for Stamped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.kernel {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                this.stamps.arrived(wall_clock_ns());
            }
            return polled;
        }
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this.inner.try_io(tokio::io::Interest::READABLE, || {
                sys::recv(&this.inner, unfilled)
            }) {
                Ok((n, stamp)) => {
                    buf.advance(n);
                    if n > 0 {
                        this.stamps.arrived(stamp.unwrap_or_else(wall_clock_ns));
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Stamped {
    /// Runs one write on the inner stream, noting its start time when it
    /// wrote something.
    fn timed_write(
        &mut self,
        write: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let at = wall_clock_ns();
        let polled = write(Pin::new(&mut self.inner));
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.stamps.wrote(at);
        }
        polled
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().timed_write(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .timed_write(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(target_os = "linux")]
mod sys {
    //! `SO_TIMESTAMPNS` and `recvmsg` through `nix`: neither tokio nor
    //! socket2 exposes socket timestamps or control messages.

    use std::io::{self, IoSliceMut};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use nix::sys::time::TimeSpec;
    use tokio::net::TcpStream;

    pub fn enable(stream: &TcpStream) -> bool {
        setsockopt(stream, sockopt::ReceiveTimestampns, &true).is_ok()
    }

    /// Room for one timestamp control message (`CMSG_SPACE` of a
    /// `timespec` is 32 bytes on 64-bit Linux), on the stack.
    const CONTROL_BYTES: usize = 64;

    /// One `recvmsg`: bytes read and the kernel's arrival stamp (ns since
    /// the epoch) of the data, if it sent one.
    pub fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut control = [0u8; CONTROL_BYTES];
        debug_assert!(nix::cmsg_space!(TimeSpec).len() <= CONTROL_BYTES);
        // A connected stream: no source address is asked for.
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let mut stamp = None;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                if ts.tv_sec() > 0 {
                    stamp = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                }
            }
        }
        Ok((msg.bytes, stamp))
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    use tokio::net::TcpStream;

    pub fn enable(_: &TcpStream) -> bool {
        false
    }

    pub fn recv(_: &TcpStream, _: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn first_byte_runs_from_the_request_to_the_answer_s_arrival() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"pong").await.unwrap();
        });
        let mut stream = Stamped::new(TcpStream::connect(addr).await.unwrap());
        let stamps = stream.stamps();
        stamps.arm();
        let start = std::time::Instant::now();
        stream.write_all(b"ping").await.unwrap();
        // Arrive first, be read later: the stamp must not count the wait.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut b = [0u8; 4];
        stream.read_exact(&mut b).await.unwrap();
        let woken = start.elapsed();
        server.await.unwrap();
        assert_eq!(&b, b"pong");
        assert!(woken >= Duration::from_millis(60));
        let first_byte = stamps.first_byte(woken).expect("a plausible stamp");
        assert!(first_byte >= Duration::from_millis(20), "{first_byte:?}");
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            assert!(stream.kernel, "the kernel refused SO_TIMESTAMPNS");
            assert!(first_byte < Duration::from_millis(50), "{first_byte:?}");
        }
    }

    #[test]
    fn implausible_stamps_are_refused() {
        let s = Stamps::default();
        assert_eq!(s.first_byte(Duration::from_millis(5)), None);
        s.arm();
        s.wrote(1_000_000);
        s.arrived(500_000);
        assert_eq!(
            s.first_byte(Duration::from_millis(5)),
            None,
            "before the write"
        );
        s.arrived(9_000_000);
        assert_eq!(
            s.first_byte(Duration::from_millis(5)),
            None,
            "longer than woken"
        );
        assert_eq!(
            s.first_byte(Duration::from_millis(9)),
            Some(Duration::from_millis(8))
        );
        s.wrote(2_000_000);
        assert_eq!(
            s.first_byte(Duration::from_millis(9)),
            Some(Duration::from_millis(8)),
            "only the first write after arm is the request"
        );
    }
}
