//! The README's first command, as a user runs it: `sim demo` brings up the
//! whole system offline, fails the fastest origin, and ends by itself with
//! each region having moved away and come back; its status page shows the
//! failover while it runs. One region's edge leaves an origin gone gray
//! while the probers still rank it first, and one ejects an origin
//! answering 503.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One GET over plain HTTP/1.0 on loopback; the body, if the answer is 200.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Whether the status page's JSON shows `region` off `origin`, with
/// `origin` down there.
fn shows_moved_off(state: &serde_json::Value, region: &str, origin: &str) -> bool {
    let Some(rankings) = state["pools"][0]["rankings"].as_array() else {
        return false;
    };
    rankings.iter().any(|r| {
        r["region"] == region
            && r["top"] != origin
            && r["origins"]
                .as_array()
                .is_some_and(|os| os.iter().any(|o| o["id"] == origin && o["state"] == "down"))
    })
}

#[test]
fn the_demo_runs_to_its_end_and_shows_the_failover() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["demo", "--seconds", "21", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sim runs");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The page's address comes first; then, while the demo runs, the page
    // must show the first region moving off the failed origin.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut addr = None;
    while addr.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        addr = line
            .split_once("Live status page: http://")
            .and_then(|(_, rest)| rest.split('/').next())
            .map(str::to_string);
    }
    let addr = addr.expect("the demo prints the status page's address");
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        if let Some(body) = get(&addr, "/api/state") {
            let state: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            seen = shows_moved_off(&state, "us-east-1", "virginia");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let page = get(&addr, "/").unwrap_or_default();
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        seen,
        "the status page never showed us-east-1 moving off virginia:\n{stdout}"
    );
    assert!(
        page.contains("<title>Origin Router status</title>"),
        "{page}"
    );
    // The first region was on the origin that failed, so it must report
    // both moves, with times.
    let summary = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("us-east-1") && l.contains("decisions:"))
        .unwrap_or_else(|| panic!("no summary line for us-east-1:\n{stdout}"));
    assert!(
        summary.contains("moved away after") && !summary.contains("never"),
        "{summary}"
    );
    // The band pool spread every region's misses over both its origins.
    for region in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        let band = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(region) && l.contains("band: "))
            .unwrap_or_else(|| panic!("no band line for {region}:\n{stdout}"));
        for origin in ["london", "frankfurt"] {
            let count: u64 = band
                .split_once(&format!("{origin} "))
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(count > 0, "{origin} got no misses: {band}");
        }
    }
    // The gray failure: eu-west-1's edge demotes ireland (pages slow,
    // health fast) on its own misses, within 20 of them, by latency; the
    // next miss goes elsewhere and names the demotion; the probers'
    // ranking, published while ireland was gray, still puts it first.
    let lines: Vec<&str> = stdout.lines().collect();
    let gray = lines
        .iter()
        .position(|l| l.starts_with("Gray failure (eu-west-1"))
        .unwrap_or_else(|| panic!("no gray failure in the demo:\n{stdout}"));
    let demoted = lines
        .iter()
        .position(|l| l.contains("-> demoted for 30s (trigger latency)"))
        .unwrap_or_else(|| panic!("no demotion in the demo:\n{stdout}"));
    assert!(gray < demoted && demoted - gray <= 20, "{stdout}");
    for miss in &lines[gray + 1..=demoted] {
        assert!(
            miss.contains("decision origin=ireland ") && miss.contains("answered 200 in"),
            "{miss}"
        );
    }
    let after = lines[demoted + 1];
    assert!(
        after.contains("ejected=[\"ireland\"]")
            && !after.contains("origin=ireland ")
            && after.contains("answered 200"),
        "{after}"
    );
    let ranking = lines
        .iter()
        .find(|l| l.contains("eu-west-1's ranking, published"))
        .unwrap_or_else(|| panic!("no ranking shown after the demotion:\n{stdout}"));
    assert!(
        ranking.contains("gray: ireland(healthy "),
        "the probers' ranking does not put ireland first: {ranking}"
    );
    // The live view showed the edge off ireland while the ranking led
    // with it.
    assert!(stdout.contains("left out here: ireland)"), "{stdout}");
    // The CloudFront Function, on the same rankings encoded for the
    // KeyValueStore, leaves the failed origin, and decides as the Rust
    // decision does every time (unless there is no Node to run it).
    if !stdout.contains("CloudFront Function: skipped") {
        let moved = stdout
            .lines()
            .position(|l| l.starts_with("CloudFront Function (the generated function"))
            .and_then(|i| stdout.lines().nth(i + 1))
            .unwrap_or_else(|| panic!("no CloudFront Function part:\n{stdout}"));
        assert!(
            moved.trim_start().starts_with("us-east-1")
                && moved.contains("moved off virginia to")
                && !moved.contains("never"),
            "{moved}"
        );
        let agreed = stdout
            .lines()
            .find(|l| l.contains("the function and the Rust decision agreed in"))
            .unwrap_or_else(|| panic!("no agreement line:\n{stdout}"));
        let counts: Vec<&str> = agreed
            .split_whitespace()
            .filter(|w| w.parse::<u64>().is_ok())
            .collect();
        assert!(
            counts.len() == 2 && counts[0] == counts[1] && !agreed.contains(':'),
            "{agreed}"
        );
    }
    // The edge ejects the origin answering 503 by itself, and the next
    // decision line names the ejection.
    let ejected = stdout
        .lines()
        .position(|l| l.contains("-> ejected for 30s"))
        .unwrap_or_else(|| panic!("no ejection in the demo:\n{stdout}"));
    let next = stdout.lines().nth(ejected + 1).unwrap_or_default();
    assert!(
        next.contains("ejected=[\"") && next.contains("answered 200"),
        "{next}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "demo",
        "bench",
        "bench-failover",
        "bench-eject",
        "bench-gray",
        "bench-function",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sim"))
            .args([sub, "--help"])
            .output()
            .expect("sim runs");
        assert!(out.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: sim"),
            "{sub}"
        );
    }
}
