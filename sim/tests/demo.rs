//! The README's first command, as a user runs it: `sim demo` brings up the
//! whole system offline, fails the fastest origin, and ends by itself with
//! each region having moved away and come back.

use std::process::Command;

#[test]
fn the_demo_runs_to_its_end_and_shows_the_failover() {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["demo", "--seconds", "21", "--plain"])
        .output()
        .expect("sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
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
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["demo", "bench", "bench-failover"] {
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
