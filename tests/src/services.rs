//! Real services for tests: a Redis server and a DynamoDB API server
//! (moto_server), each a child process on its own loopback port, killed when
//! dropped. Tests stop and restart them to simulate outages.
//!
//! The binaries are installed by `scripts/test.sh`; their paths can be
//! overridden with `ORIGIN_ROUTER_REDIS_SERVER` and
//! `ORIGIN_ROUTER_MOTO_SERVER`.

use origin_router::store::DynamoStore;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (where `scripts/test.sh` installs services).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate sits in the workspace")
        .to_path_buf()
}

/// The workspace's debug binary `name`, as `cargo build --workspace --bins`
/// leaves it: under `CARGO_TARGET_DIR` when that is set (relative to the
/// workspace, as cargo reads it), else under `target/`.
pub fn debug_binary(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    target.join("debug").join(name)
}

fn find_binary(env_var: &str, candidates: &[PathBuf], name: &str) -> io::Result<PathBuf> {
    if let Ok(path) = std::env::var(env_var) {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .iter()
        .cloned()
        .chain(path_dirs.into_iter().map(|d| d.join(name)))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{name} not found (set {env_var}, or run scripts/test.sh, which installs it)"
                ),
            )
        })
}

/// Peak resident set size of process `pid` in KiB (Linux `VmHWM`), for
/// the benchmarks.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time each thread of process `pid` has run so far, with the thread's
/// name, for the benchmarks: the scheduler's own count in ns
/// (`/proc/PID/task/*/schedstat`, first field), which is finer than the
/// clock ticks of `stat`. A thread that ends while it is read is left out;
/// `None` without such files (not Linux).
pub fn thread_cpu(pid: u32) -> Option<Vec<(String, Duration)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
        let (Some(stat), Some(name)) = (read("schedstat"), read("comm")) else {
            continue;
        };
        let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        threads.push((name.trim_end().to_string(), Duration::from_nanos(ns)));
    }
    Some(threads)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn wait_for_port(port: u16, within: Duration) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(100),
        )
        .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on port {port}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts a service binary with its output discarded.
fn spawn_quiet(binary: &std::path::Path, args: &[&str]) -> io::Result<Child> {
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A Redis server on 127.0.0.1, no persistence.
pub struct RedisServer {
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub async fn start() -> io::Result<RedisServer> {
        let binary = find_binary(
            "ORIGIN_ROUTER_REDIS_SERVER",
            &[PathBuf::from("/usr/bin/redis-server")],
            "redis-server",
        )?;
        let mut server = RedisServer {
            port: free_port(),
            binary,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let port = self.port.to_string();
        let child = spawn_quiet(
            &self.binary,
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10)).await?;
        let start = Instant::now();
        loop {
            if self.ping().unwrap_or(false) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "redis-server did not answer PING",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ping(&self) -> io::Result<bool> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one string key from the Redis at `url` (`None` if absent or
/// unreachable).
pub async fn redis_get(url: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?
}

/// Sets a Redis string key (tests that plant a bad value). Panics when
/// Redis does not answer: the test cannot go on.
pub async fn redis_set(url: &str, key: &str, value: &str) {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET works");
}

/// A DynamoDB API server (moto_server) on 127.0.0.1.
pub struct MotoServer {
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
}

impl MotoServer {
    /// Starts one on a free port and waits until it answers HTTP.
    pub async fn start() -> io::Result<MotoServer> {
        let binary = find_binary(
            "ORIGIN_ROUTER_MOTO_SERVER",
            &[workspace_root().join(".test-services/venv/bin/moto_server")],
            "moto_server",
        )?;
        let mut server = MotoServer {
            port: free_port(),
            binary,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL_DYNAMODB`.
    /// The rankings table `rankings` on this server, as `region` sees it,
    /// with test credentials (not created: see
    /// [`DynamoStore::create_table`]).
    pub fn rankings_table(&self, region: &str) -> DynamoStore {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(region.to_string()))
                .endpoint_url(self.endpoint())
                .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
                .build(),
        );
        DynamoStore::new(client, "rankings", Duration::from_secs(86_400))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage). Its data is lost.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let port = self.port.to_string();
        let child = spawn_quiet(&self.binary, &["-H", "127.0.0.1", "-p", &port])?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30)).await?;
        // Listening is not the same as serving: wait for a real answer.
        let start = Instant::now();
        loop {
            if self.http_ok("/moto-api/").unwrap_or(false) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "moto_server did not answer",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn http_ok(&self, path: &str) -> io::Result<bool> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
    }

    /// Environment for a child process (or the SDK) to reach this server
    /// with test credentials and no instance metadata look-ups.
    pub fn aws_env(&self, region: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL_DYNAMODB".into(), self.endpoint()),
            ("AWS_ENDPOINT_URL_STS".into(), self.endpoint()),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE".into(), self.endpoint()),
            ("AWS_REGION".into(), region.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
