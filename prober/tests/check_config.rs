//! `prober check-config` through the real binary: each bad configuration of
//! issue 12 exits non-zero naming its field(s) on stderr, without a panic;
//! a good one exits 0 and prints the effective config.

mod common;

use std::path::Path;
use std::process::Output;

const POOL: &str = "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n";

/// A pool whose one origin carries `fields` too.
fn origin_with(fields: &str) -> String {
    format!("[pools.web]\norigins = [{{ id = \"a\", host = \"a.example.net\", {fields} }}]\n")
}

fn with_pool(extra: &str) -> String {
    format!("{POOL}{extra}\n")
}

fn check_config(dir: &Path, name: &str, text: &str) -> Output {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    common::prober(&[])
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn a_good_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_config(dir.path(), "good", POOL);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("race_watchdog = \"900ms\""), "{stdout}");
}

#[test]
fn the_issues_bad_configs_fail_naming_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "race_attempt_timeout",
            with_pool("[edge]\nrace_attempt_timeout = \"500000000000years\""),
            vec!["edge.race_attempt_timeout: 500000000000years is not within [1ms, 25s]"],
        ),
        (
            "interval",
            with_pool("[prober]\ninterval = \"100000000000years\""),
            vec!["prober.interval: 100000000000years is not within [1s, 5m]"],
        ),
        (
            "weight",
            origin_with("weight = 1e-12"),
            vec!["pools.web.origins[0].weight"],
        ),
        (
            "tls_server_name",
            origin_with("tls_server_name = \"bad name!\""),
            vec!["pools.web.origins[0].tls_server_name"],
        ),
        (
            "health_path",
            origin_with("health_path = \"/health\\u0001\""),
            vec!["pools.web.origins[0].health_path", "control character"],
        ),
        (
            "ca_file",
            origin_with(&format!("ca_file = '{}'", not_pem.display())),
            vec![
                "pools.web.origins[0].ca_file",
                "not-a-ca.pem",
                "holds no PEM certificate",
            ],
        ),
        (
            "hosts",
            with_pool("[routing]\nhosts = { \"WWW.example.com\" = \"web\" }"),
            vec!["routing.hosts.\"WWW.example.com\": is not lower case"],
        ),
        (
            "race_watchdog",
            with_pool("[edge]\nrace_watchdog = \"500ms\""),
            vec!["edge.race_watchdog: 500ms is below edge.race_attempt_timeout (800ms)"],
        ),
        (
            "table_timeout",
            with_pool("[edge]\ntable_timeout = \"10m\""),
            vec!["edge.table_timeout: 10m is not within [1ms, 5s]"],
        ),
        (
            "cache_ttl",
            with_pool("[edge]\ncache_ttl = \"1m\""),
            vec!["edge.cache_ttl: 1m is above edge.ranking_max_age (30s)"],
        ),
        (
            "window",
            with_pool("[ranking]\nwindow = \"3s\""),
            vec!["ranking.window: 3s is below 2 × prober.interval (2s)"],
        ),
        (
            "port",
            origin_with("port = 8"),
            vec!["pools.web.origins[0].port: 8 is not a port CloudFront connects to"],
        ),
    ];
    for (name, text, expected) in cases {
        let out = check_config(dir.path(), name, &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted:\n{text}");
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        for want in expected {
            assert!(
                stderr.contains(want),
                "{name}: missing `{want}` in:\n{stderr}"
            );
        }
    }
}

/// The adaptive budgets' contradictions: each exits non-zero naming the
/// fields involved.
#[test]
fn contradictory_budget_settings_fail_naming_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "floor_above_response_timeout",
            with_pool("[prober]\nbudget_floor = \"3s\"\nresponse_timeout = \"2s\""),
            vec!["prober.budget_floor: 3s is above prober.response_timeout (2s)"],
        ),
        (
            "floor_zero",
            with_pool("[prober]\nbudget_floor = \"0s\""),
            vec!["prober.budget_floor: 0s is not within [1ms, 1m]"],
        ),
        (
            "confirmations_longer_than_a_round",
            with_pool("[prober]\ninterval = \"1s\"\nfast_interval = \"600ms\"\nfall = 3"),
            vec!["prober.fast_interval", "is not below prober.interval (1s)"],
        ),
        (
            "step_factor_too_small",
            with_pool("[ranking]\nstep_factor = 1.1"),
            vec!["ranking.step_factor: 1.1 is neither 0 (off) nor in [1.5, 100]"],
        ),
        (
            "step_factor_nan",
            with_pool("[ranking]\nstep_factor = nan"),
            vec!["ranking.step_factor: NaN"],
        ),
        (
            "adaptive_not_a_bool",
            with_pool("[prober]\nadaptive_budget = \"yes\""),
            vec!["adaptive_budget"],
        ),
    ];
    for (name, text, wanted) in cases {
        let out = check_config(dir.path(), name, &text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{name}: `{w}` not in {stderr}");
        }
    }
    // Step following off, fixed budgets: a valid configuration.
    let off = with_pool("[prober]\nadaptive_budget = false\n[ranking]\nstep_factor = 0");
    let out = check_config(dir.path(), "off", &off);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
