//! A store's own clock (`RankingStore::clock`): DynamoDB's `Date` header
//! against moto and against a hand-written server whose clock is off or
//! whose answers are odd; the embedded store's kernel clock against this
//! process's, with and without libfaketime.

use std::time::Duration;

use origin_router::sample::unix_millis_now;
use origin_router::store::{DynamoStore, EmbeddedStore, MemoryStore, RankingStore, StoreError};
use origin_router_tests::services::MotoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_memory_store_has_no_clock_of_its_own() {
    assert_eq!(MemoryStore::new().clock().await.unwrap(), None);
}

/// moto answers with a `Date` header from this machine's clock: the offset
/// is about zero, to the second.
#[tokio::test]
async fn dynamodb_clock_against_moto_is_about_zero() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let store = moto.rankings_table("eu-west-1");
    store.create_table().await.expect("create table");
    for _ in 0..3 {
        let before = unix_millis_now();
        let clock = store.clock().await.unwrap().expect("DynamoDB has a clock");
        let after = unix_millis_now();
        assert_eq!(clock.resolution, Duration::from_secs(1));
        assert!(
            clock.offset_ms().abs() <= 1_500,
            "offset {} ms: {clock:?}",
            clock.offset_ms()
        );
        assert!(clock.uncertainty() >= Duration::from_millis(500));
        assert!(clock.rtt < Duration::from_secs(2), "{clock:?}");
        assert!(
            (before..=after).contains(&clock.local_ms),
            "{before} {clock:?} {after}"
        );
    }
    // The reading is an empty Query: it leaves nothing in the table.
    assert!(store.list_pools().await.unwrap().is_empty());
}

/// A missing table is the Query's error, never a reading.
#[tokio::test]
async fn dynamodb_clock_without_a_table_is_an_error() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let err = moto
        .rankings_table("eu-west-1")
        .clock()
        .await
        .expect_err("no table");
    assert!(err.to_string().contains("ResourceNotFound"), "{err}");
}

/// A DynamoDB stand-in that answers every request with an empty Query
/// result and `date` as its `Date` header (none if `None`), or never
/// answers if `silent`.
async fn fake_dynamodb(date: Option<String>, silent: bool) -> DynamoStore {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let date = date.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body its Content-Length announces.
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                if silent {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let body = r#"{"Count":0,"Items":[],"ScannedCount":0}"#;
                let date = date.map(|d| format!("Date: {d}\r\n")).unwrap_or_default();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\n{date}Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build(),
    );
    DynamoStore::new(client, "rankings", Duration::from_secs(86_400))
}

/// An HTTP date `offset_s` seconds from now.
fn http_date_in(offset_s: i64) -> String {
    use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
    let now = i64::try_from(unix_millis_now() / 1000).unwrap();
    DateTime::from_secs(now + offset_s)
        .fmt(DateTimeFormat::HttpDate)
        .unwrap()
}

/// A table whose clock is an hour ahead: this process is behind, the
/// offset positive; an hour behind, negative.
#[tokio::test]
async fn dynamodb_clock_an_hour_off_is_measured_with_its_sign() {
    for hours in [1, -1] {
        let store = fake_dynamodb(Some(http_date_in(hours * 3_600)), false).await;
        let clock = store.clock().await.unwrap().unwrap();
        let expected = hours * 3_600_000;
        assert!(
            (clock.offset_ms() - expected).abs() <= 1_500,
            "{hours} h: offset {} ms",
            clock.offset_ms()
        );
        assert_eq!(clock.resolution, Duration::from_secs(1));
    }
}

/// No `Date`, or one that is not an HTTP date: an error naming the header.
#[tokio::test]
async fn dynamodb_clock_with_a_missing_or_bad_date_is_an_error_naming_it() {
    for (date, expected) in [
        (None, "no `Date` header"),
        (Some("tomorrow".to_string()), "`Date` header \"tomorrow\""),
        (
            Some("Sunday, 06-Nov-94 08:49:37 GMT".to_string()),
            "is not an HTTP date",
        ),
    ] {
        let store = fake_dynamodb(date, false).await;
        let err = store.clock().await.expect_err("no reading");
        assert!(
            matches!(err, StoreError::Dynamo { .. }) && err.to_string().contains(expected),
            "{err}"
        );
    }
}

/// A table that never answers: the reading gives up after the store's
/// clock timeout.
#[tokio::test]
async fn dynamodb_clock_is_bounded_by_the_clock_timeout() {
    let store = fake_dynamodb(None, true)
        .await
        .with_clock_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = store.clock().await.expect_err("no answer");
    assert!(matches!(err, StoreError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Debian's libfaketime (package `faketime`, which scripts/test.sh
/// installs); `ORIGIN_ROUTER_LIBFAKETIME` names another.
fn libfaketime() -> std::path::PathBuf {
    std::env::var_os("ORIGIN_ROUTER_LIBFAKETIME")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1".into())
}

/// Set in the child process [`embedded_clock_in_a_child`] starts.
const CHILD: &str = "ORIGIN_ROUTER_STORE_CLOCK_CHILD";

/// Only in a child started by [`embedded_clock_in_a_child`] (elsewhere it
/// returns at once): measures the embedded store's clock and prints it,
/// with the other candidate clocks the module docs weigh, for the record.
#[tokio::test]
async fn embedded_clock_child_mode() {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt;
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = EmbeddedStore::new(dir.path())
        .clock()
        .await
        .unwrap()
        .expect("on Linux the embedded store has a clock");
    println!(
        "\nSTORE_CLOCK offset_ms={} uncertainty_ms={} resolution_ms={}",
        clock.offset_ms(),
        clock.uncertainty().as_millis(),
        clock.resolution.as_millis()
    );
    // The candidates not taken, each as (its reading - this process's).
    let now_ms = |t: i64, ns: i64| t * 1000 + ns / 1_000_000;
    let local = i64::try_from(unix_millis_now()).unwrap();
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|b| b.trim().parse().ok())
        .unwrap();
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    let boottime = btime * 1000 + now_ms(boot.tv_sec(), boot.tv_nsec()) + 500;
    let path = dir.path().join("touched");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"x").unwrap();
    let statx = file.metadata().unwrap();
    let fstat = nix::sys::stat::fstat(&file).unwrap();
    println!(
        "CANDIDATES btime+CLOCK_BOOTTIME={} ms, mtime via statx (std)={} ms, mtime via fstat (libc)={} ms",
        boottime - local,
        now_ms(statx.mtime(), statx.mtime_nsec()) - local,
        now_ms(fstat.st_mtime, fstat.st_mtime_nsec) - local,
    );
}

/// The embedded store's clock measured by this test binary re-run with
/// `env`: its offset and uncertainty (ms), and what it printed.
fn embedded_clock_in_a_child(env: &[(&str, &str)]) -> (i64, i64, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "embedded_clock_child_mode",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{env:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> i64 {
        let at = stdout
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{env:?}: no {name} in\n{stdout}"));
        stdout[at + name.len() + 1..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{env:?}: bad {name} in\n{stdout}"))
    };
    let report = stdout
        .lines()
        .filter(|l| l.contains("STORE_CLOCK") || l.contains("CANDIDATES"))
        .collect::<Vec<_>>()
        .join("\n");
    (field("offset_ms"), field("uncertainty_ms"), report)
}

/// A process one hour fast under libfaketime sees the kernel's clock an
/// hour behind its own (offset -3600 s), one hour slow an hour ahead,
/// whether or not libfaketime also fakes the monotonic clocks; without
/// libfaketime the offset is about zero.
#[test]
fn embedded_clock_sees_a_faked_process_clock() {
    let (offset, uncertainty, report) = embedded_clock_in_a_child(&[]);
    println!("no faketime:\n{report}");
    assert!(
        offset.abs() <= uncertainty + 20 && uncertainty < 1_500,
        "offset {offset} ms, uncertainty {uncertainty} ms"
    );

    let lib = libfaketime();
    if !lib.exists() {
        println!(
            "NOTE: skipping the libfaketime half: {} is missing (Debian package `faketime`; scripts/test.sh installs it)",
            lib.display()
        );
        return;
    }
    let lib = lib.to_str().expect("a UTF-8 library path");
    for (faketime, dont_fake_monotonic, expected) in [
        ("+3600", true, -3_600_000),
        ("-3600", true, 3_600_000),
        ("+3600", false, -3_600_000),
    ] {
        let mut env = vec![("LD_PRELOAD", lib), ("FAKETIME", faketime)];
        if dont_fake_monotonic {
            env.push(("DONT_FAKE_MONOTONIC", "1"));
        }
        let (offset, uncertainty, report) = embedded_clock_in_a_child(&env);
        println!("{env:?}:\n{report}");
        assert!(
            (offset - expected).abs() <= uncertainty + 20 && (offset - expected).abs() < 5_000,
            "{env:?}: offset {offset} ms, expected {expected} ms, uncertainty {uncertainty} ms"
        );
    }
}
