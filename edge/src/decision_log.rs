//! The decision lines (and ejection lines), written after the response.
//!
//! The handler records its decision's line (or an origin-response's
//! ejection lines) in a [`DecisionLog`];
//! [`WriteAfterResponse`], a layer around the whole invocation, writes it
//! once the Runtime API has taken the response and before the function
//! asks for its next event.
//!
//! Why: a line on stdout is a pipe write that wakes Lambda's log agent, and
//! a Lambda@Edge function shares one vCPU with that agent, so a line written
//! before the answer made the viewer wait for the agent to run. Written
//! after the answer is posted, the line costs the viewer nothing. It is
//! still written within the invocation (before `/next`), so Lambda neither
//! freezes the process with the line unwritten nor files it under the next
//! request.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use crate::handler::Observed;
use crate::router::Decision;
use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::LambdaInvocation;

use crate::emf;

/// Decision lines waiting to be written, and where they go.
pub struct DecisionLog {
    inner: Mutex<Inner>,
}

struct Inner {
    pending: Vec<u8>,
    out: Box<dyn Write + Send>,
}

impl DecisionLog {
    /// Lines go to standard output, where Lambda's log agent reads them.
    pub fn stdout() -> DecisionLog {
        DecisionLog::to(Box::new(std::io::stdout()))
    }

    /// Lines go to `out`.
    pub fn to(out: Box<dyn Write + Send>) -> DecisionLog {
        DecisionLog {
            inner: Mutex::new(Inner {
                pending: Vec::with_capacity(1024),
                out,
            }),
        }
    }

    /// Adds the line for `decision`, to be written by the next [`flush`](Self::flush).
    pub fn record(&self, decision: &Decision, region: &str, timestamp_ms: u64) {
        emf::write_decision_line(&mut self.lock().pending, decision, region, timestamp_ms);
    }

    /// Adds one line per ejection an origin-response caused, one per
    /// timed miss, and one for a miss that could not be timed.
    pub fn record_ejections(&self, observed: &Observed, region: &str, timestamp_ms: u64) {
        let mut inner = None;
        for e in observed.ejections() {
            let inner = inner.get_or_insert_with(|| self.lock());
            emf::write_ejection_line(&mut inner.pending, &e, region, timestamp_ms);
        }
        for t in &observed.timed {
            let inner = inner.get_or_insert_with(|| self.lock());
            emf::write_latency_line(&mut inner.pending, t, region, timestamp_ms);
        }
        if let Some(why) = observed.dropped {
            let inner = inner.get_or_insert_with(|| self.lock());
            emf::write_dropped_line(&mut inner.pending, why, region, timestamp_ms);
        }
    }

    /// Writes the pending lines in one write. A failed write (stdout
    /// closed) drops them: there is nowhere else to put them, and the
    /// function goes on answering.
    pub fn flush(&self) {
        let mut inner = self.lock();
        let Inner { pending, out } = &mut *inner;
        if pending.is_empty() {
            return;
        }
        if let Err(e) = out.write_all(pending).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, bytes = pending.len(), "cannot write decision lines");
        }
        pending.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a partial line in
        // `pending`; the log goes on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Layer (around the whole invocation, response post included) that
/// flushes a [`DecisionLog`] when the invocation is over.
#[derive(Clone)]
pub struct WriteAfterResponse {
    log: Arc<DecisionLog>,
}

impl WriteAfterResponse {
    pub fn new(log: Arc<DecisionLog>) -> WriteAfterResponse {
        WriteAfterResponse { log }
    }
}

impl<S> Layer<S> for WriteAfterResponse {
    type Service = WriteAfterResponseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WriteAfterResponseService {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service [`WriteAfterResponse`] makes.
#[derive(Clone)]
pub struct WriteAfterResponseService<S> {
    inner: S,
    log: Arc<DecisionLog>,
}

impl<S> Service<LambdaInvocation> for WriteAfterResponseService<S>
where
    S: Service<LambdaInvocation, Response = ()>,
{
    type Response = ();
    type Error = S::Error;
    type Future = Flushing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        Flushing {
            inner: self.inner.call(invocation),
            log: self.log.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The invocation's future, then a flush of the decision log, whether
    /// the response was posted or not.
    pub struct Flushing<F> {
        #[pin]
        inner: F,
        log: Arc<DecisionLog>,
    }
}

impl<F: Future> Future for Flushing<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        this.log.flush();
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Source;
    use std::time::Duration;

    /// A writer that appends to a shared buffer, and an event list both
    /// it and the fake invocation append to, to check the order.
    #[derive(Clone, Default)]
    struct Shared {
        written: Arc<Mutex<Vec<u8>>>,
        events: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.events.lock().unwrap().push("line written");
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn decision(origin: &str) -> Decision {
        Decision {
            pool: "web".into(),
            origin: origin.into(),
            source: Source::Cache,
            ranking_region: Some("eu-west-1".into()),
            ranking_age_ms: Some(10),
            losers: Vec::new(),
            band: None,
            elapsed: Duration::from_micros(3),
            ejected: Vec::new(),
        }
    }

    /// Stands in for the handler plus the response post: records a line,
    /// then "posts" on its second poll.
    fn invocation(
        log: Arc<DecisionLog>,
        shared: Shared,
        fail: bool,
    ) -> impl FnMut(LambdaInvocation) -> futures::future::BoxFuture<'static, Result<(), &'static str>>
    {
        move |_| {
            let (log, shared) = (log.clone(), shared.clone());
            Box::pin(async move {
                log.record(&decision("eu"), "eu-west-1", 1);
                assert!(
                    shared.written.lock().unwrap().is_empty(),
                    "nothing written yet"
                );
                tokio::task::yield_now().await;
                shared.events.lock().unwrap().push("response posted");
                if fail {
                    Err("post failed")
                } else {
                    Ok(())
                }
            })
        }
    }

    fn lambda_invocation() -> LambdaInvocation {
        LambdaInvocation {
            parts: http::Response::new(()).into_parts().0,
            body: bytes::Bytes::from_static(b"{}"),
            context: lambda_runtime::Context::default(),
        }
    }

    #[tokio::test]
    async fn the_line_is_written_once_after_the_response_is_posted() {
        for fail in [false, true] {
            let shared = Shared::default();
            let log = Arc::new(DecisionLog::to(Box::new(shared.clone())));
            let inner =
                lambda_runtime::tower::service_fn(invocation(log.clone(), shared.clone(), fail));
            let mut service = WriteAfterResponse::new(log.clone()).layer(inner);
            let result = service.call(lambda_invocation()).await;
            assert_eq!(result.is_err(), fail);
            assert_eq!(
                *shared.events.lock().unwrap(),
                ["response posted", "line written"],
                "post failed: {fail}"
            );
            let text = String::from_utf8(shared.written.lock().unwrap().clone()).unwrap();
            assert_eq!(text.lines().count(), 1);
            let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
            assert_eq!(line["Origin"], "eu");
            // Flushed: a second flush writes nothing more.
            log.flush();
            assert_eq!(shared.events.lock().unwrap().len(), 2);
        }
    }

    #[test]
    fn a_failed_write_drops_the_lines_and_goes_on() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = DecisionLog::to(Box::new(Closed));
        log.record(&decision("eu"), "eu-west-1", 1);
        log.flush();
        assert!(log.lock().pending.is_empty());
        log.record(&decision("us"), "eu-west-1", 2);
        assert!(!log.lock().pending.is_empty());
    }
}
