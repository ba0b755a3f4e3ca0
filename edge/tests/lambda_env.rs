//! The `edge` binary knows when it runs as a Lambda function (Lambda's own
//! environment variables) and then refuses to start without a DynamoDB
//! table: the embedded store, the default for local use, would be an empty
//! folder in the function's container and every request would be raced
//! live. Outside Lambda the embedded store stays the default.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use origin_router_tests::runtime_api::RuntimeApi;
use origin_router_tests::services::free_port;

const EDGE: &str = env!("CARGO_BIN_EXE_edge");

/// The variables Lambda sets that say "this is a Lambda function": every
/// test clears both, then sets the one it means.
const MARKERS: [&str; 2] = ["AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT"];

/// A config with one DNS-named pool, its embedded store in `dir`, plus
/// `store` lines.
fn config(dir: &Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("origin-router.toml");
    std::fs::write(
        &path,
        format!(
            "[pools.web]\norigins = [{{ id = \"a\", host = \"a.example.net\" }}]\n\
             [store]\nembedded_path = \"{}\"\n{store}",
            dir.join("store").display()
        ),
    )
    .unwrap();
    path
}

/// A running `edge`, its stderr read to the end by a thread. Killed on
/// drop, so no test leaves one behind.
struct Edge {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Edge {
    /// Starts the binary with `--config config`, `env` added to a cleared
    /// Lambda environment, and `AWS_LAMBDA_RUNTIME_API` if `api` is given.
    fn start(config: &Path, env: &[(&str, &str)], api: Option<&RuntimeApi>) -> Edge {
        let mut cmd = Command::new(EDGE);
        cmd.arg("--config")
            .arg(config)
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env("AWS_REGION", "eu-west-1")
            // The SDK must never look for credentials or metadata beyond
            // these (only the table case gets as far as the SDK).
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in MARKERS {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        if let Some(api) = api {
            cmd.env("AWS_LAMBDA_RUNTIME_API", api.endpoint());
        }
        let mut child = cmd.spawn().expect("the edge binary starts");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Edge {
            child,
            stderr: Some(stderr),
        }
    }

    /// Its exit status if it exits within `within`.
    async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it (if it still runs) and returns everything it wrote to
    /// stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().unwrap().join().unwrap()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// As a Lambda function without a table, the edge exits at once with an
/// error naming `store.dynamodb_table` and the variable that gave Lambda
/// away, before it asks the Runtime API for a single event: as a Node.js
/// function (the Lambda@Edge bridge, whose environment the binary
/// inherits) and as an OS-only (`provided.al2023`) function, where Lambda
/// sets no `AWS_EXECUTION_ENV`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_lambda_function_without_a_table_it_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    for (name, value) in [
        ("AWS_EXECUTION_ENV", "AWS_Lambda_nodejs24.x"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
    ] {
        let api = RuntimeApi::start().await.unwrap();
        let started = Instant::now();
        let mut edge = Edge::start(&config, &[(name, value)], Some(&api));
        let status = edge.exit_within(Duration::from_secs(10)).await;
        let took = started.elapsed();
        let stderr = edge.stop();
        let status = status.unwrap_or_else(|| panic!("{name}: still running:\n{stderr}"));
        assert_eq!(status.code(), Some(1), "{name}: {status}:\n{stderr}");
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        assert!(
            stderr.contains("store.dynamodb_table: is required"),
            "{name}:\n{stderr}"
        );
        assert!(stderr.contains(&format!("{name}={value}")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !api.wait_ready(Duration::ZERO).await,
            "{name}: it asked for an event"
        );
    }
}

/// The same Lambda environment with a table configured: no refusal; the
/// edge starts and asks for its first event (its table reads fail, on a
/// closed port, and it serves all the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_lambda_function_with_a_table_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "dynamodb_table = \"rankings\"\ndynamodb_endpoint = \"http://127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    let api = RuntimeApi::start().await.unwrap();
    let mut edge = Edge::start(
        &config,
        &[("AWS_EXECUTION_ENV", "AWS_Lambda_nodejs24.x")],
        Some(&api),
    );
    let ready = api.wait_ready(Duration::from_secs(20)).await;
    let exited = edge.exit_within(Duration::ZERO).await;
    let stderr = edge.stop();
    assert!(!stderr.contains("store.dynamodb_table"), "{stderr}");
    assert!(ready && exited.is_none(), "{exited:?}:\n{stderr}");
}

/// Outside Lambda the embedded store stays the default: no table, and the
/// edge starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_lambda_the_embedded_store_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let api = RuntimeApi::start().await.unwrap();
    let mut edge = Edge::start(&config, &[], Some(&api));
    let ready = api.wait_ready(Duration::from_secs(20)).await;
    let exited = edge.exit_within(Duration::ZERO).await;
    let stderr = edge.stop();
    assert!(ready && exited.is_none(), "{exited:?}:\n{stderr}");
    assert!(!stderr.contains("store.dynamodb_table"), "{stderr}");
}

/// Without a Runtime API to serve, the edge says so and exits, instead of
/// the runtime library's panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_runtime_api_it_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut edge = Edge::start(&config, &[], None);
    let status = edge.exit_within(Duration::from_secs(10)).await;
    let stderr = edge.stop();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
