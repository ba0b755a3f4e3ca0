//! A local Lambda Runtime API (the documented `2018-06-01` protocol: `next`,
//! `response`, `error`, `init/error`), so tests and benchmarks drive the
//! real `edge` binary as Lambda would. Unlike Lambda it does not freeze the
//! process between invocations.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};

/// What the function answered: its response, or its error document.
pub type Answer = Result<serde_json::Value, serde_json::Value>;

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Bytes)>,
    waiters: VecDeque<oneshot::Sender<(String, Bytes)>>,
    pending: HashMap<String, oneshot::Sender<Answer>>,
    init_error: Option<String>,
}

/// A running Runtime API server.
pub struct RuntimeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Signalled whenever the function asks for its next event.
    ready: Arc<Notify>,
    counter: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let ready = Arc::new(Notify::new());
        let signal = ready.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, ready) = (shared.clone(), signal.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| route(state.clone(), ready.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi {
            addr,
            state,
            ready,
            counter: AtomicU64::new(0),
            task,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Why the function failed to start, if it said so.
    pub fn init_error(&self) -> Option<String> {
        self.lock().init_error.clone()
    }

    /// Invokes the function with `event`; `None` if it does not answer
    /// within `timeout`.
    pub async fn invoke(&self, event: &serde_json::Value, timeout: Duration) -> Option<Answer> {
        let id = format!("req-{}", self.counter.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        let body = Bytes::from(serde_json::to_vec(event).expect("events serialize"));
        {
            let mut state = self.lock();
            state.pending.insert(id.clone(), tx);
            let mut item = Some((id.clone(), body));
            while let Some(waiter) = state.waiters.pop_front() {
                match waiter.send(item.take().expect("item present")) {
                    Ok(()) => break,
                    Err(back) => item = Some(back),
                }
            }
            if let Some(item) = item {
                state.queue.push_back(item);
            }
        }
        let answer = tokio::time::timeout(timeout, rx).await.ok()?.ok();
        if answer.is_none() {
            self.lock().pending.remove(&id);
        }
        answer
    }

    /// Waits until the function asks for its next event, that is, until it
    /// is done with the last one, work after its response included; `false`
    /// if it does not within `within`.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.ready.notified();
                tokio::pin!(notified);
                // Registered before the check, so a request for the next
                // event in between still wakes this.
                notified.as_mut().enable();
                if self.lock().waiters.iter().any(|w| !w.is_closed()) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, idle).await.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn route(
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        // Take a queued event or register as a waiter under one lock, so an
        // event queued in between can never be missed.
        let next = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            match s.queue.pop_front() {
                Some(item) => Ok(item),
                None => {
                    let (tx, rx) = oneshot::channel();
                    s.waiters.push_back(tx);
                    ready.notify_waiters();
                    Err(rx)
                }
            }
        };
        let item = match next {
            Ok(item) => item,
            Err(rx) => match rx.await {
                Ok(item) => item,
                Err(_) => return Ok(status(503)),
            },
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + 30_000)
            .unwrap_or(0);
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", item.0)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:edge",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .body(Full::new(item.1))
            .expect("valid response");
        return Ok(response);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["2018-06-01", "runtime", "invocation", id, kind @ ("response" | "error")] => {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
            });
            let sender = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending
                .remove(*id);
            if let Some(sender) = sender {
                let _ = sender.send(if *kind == "response" {
                    Ok(value)
                } else {
                    Err(value)
                });
            }
            Ok(status(202))
        }
        ["2018-06-01", "runtime", "init", "error"] => {
            state.lock().unwrap_or_else(|p| p.into_inner()).init_error =
                Some(String::from_utf8_lossy(&body).into_owned());
            Ok(status(202))
        }
        _ => Ok(status(404)),
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// A Lambda function binary running against its own local Runtime API, its
/// stdout lines (where the edge writes its EMF decision lines) collected.
/// Killed on drop.
pub struct Function {
    pub api: RuntimeApi,
    lines: std::sync::mpsc::Receiver<String>,
    child: std::process::Child,
}

impl Function {
    /// Starts `binary` with `AWS_LAMBDA_RUNTIME_API` pointing at a new local
    /// Runtime API, plus `envs`.
    pub async fn start<I, K, V>(binary: &std::path::Path, envs: I) -> std::io::Result<Function>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::start_with(binary, envs, None).await
    }

    /// Like [`Function::start`], with stdout sent to `log` instead of
    /// collected: for benchmarks, where a reader thread in this process
    /// would take CPU from the function it measures.
    pub async fn start_logging_to<I, K, V>(
        binary: &std::path::Path,
        envs: I,
        log: std::process::Stdio,
    ) -> std::io::Result<Function>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::start_with(binary, envs, Some(log)).await
    }

    async fn start_with<I, K, V>(
        binary: &std::path::Path,
        envs: I,
        log: Option<std::process::Stdio>,
    ) -> std::io::Result<Function>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        let api = RuntimeApi::start().await?;
        let stdout = log.unwrap_or_else(std::process::Stdio::piped);
        let mut child = std::process::Command::new(binary)
            .envs(envs)
            .env("AWS_LAMBDA_RUNTIME_API", api.endpoint())
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .spawn()?;
        let (tx, lines) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Function { api, lines, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Invokes `event` (an origin-request) and returns the decision line
    /// the function logged for it; panics, naming what is missing, when
    /// the function does not answer or log one in time.
    pub async fn decision_for(&self, event: &serde_json::Value) -> serde_json::Value {
        let answer = self
            .api
            .invoke(event, Duration::from_secs(10))
            .await
            .expect("the edge answers");
        answer.expect("no invocation error");
        self.next_json_with("Source", Duration::from_secs(5))
            .expect("a decision line")
    }

    /// The next stdout line that is a JSON object with `key`, waiting up to
    /// `within`; other lines are skipped.
    pub fn next_json_with(&self, key: &str, within: Duration) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let line = self.lines.recv_timeout(left).ok()?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v.get(key).is_some() {
                    return Some(v);
                }
            }
        }
        None
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
