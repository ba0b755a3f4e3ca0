//! `deploy/prometheus/rules.yml` against the real `prober` binary: every
//! metric series an alert's expression names must be one a worker exports
//! (scraped from its /metrics on the embedded store, the configuration a
//! new user starts with), so renaming a metric breaks this test rather
//! than silently disarming an alert. The alerts' logic is tested by
//! `promtool test rules deploy/prometheus/rules.test.yml` (scripts/test.sh).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use origin_router::config::OriginConfig;
use origin_router_tests::{loopback, Mode, TestOrigin};

fn rules_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The PromQL of every `expr:` in a rules file: the rest of its line, or
/// the block of more-indented lines under `expr: |`. Comments and
/// annotations are not expressions (they may name metrics that exist only
/// after a failure).
fn expressions(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if !rest.starts_with('|') && !rest.starts_with('>') {
            out.push(rest.to_string());
            continue;
        }
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !next.trim().is_empty() && !deeper {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        out.push(block);
    }
    out
}

/// The value of the one sample whose line starts with `series` (name and
/// labels exactly as the exporter writes them).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn expressions_are_read_from_expr_keys_only() {
    let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          origin_router_a\n\n          and origin_router_b\n        for: 1m\n        annotations:\n          summary: origin_router_not_a_query\n      - alert: B\n        expr: origin_router_c > 1\n";
    let exprs = expressions(rules);
    assert_eq!(exprs.len(), 2, "{exprs:?}");
    let names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "origin_router_a".to_string(),
            "origin_router_b".to_string(),
            "origin_router_c".to_string()
        ])
    );
    let scrape = "origin_router_a{x=\"1\"} 1\norigin_router_c 2\n";
    assert_eq!(
        missing(&exprs, scrape),
        BTreeSet::from(["origin_router_b".to_string()])
    );
}

#[test]
fn the_rules_file_has_each_alert_of_the_issue() {
    let rules = rules_text();
    let exprs = expressions(&rules);
    assert_eq!(exprs.len(), 8, "{exprs:?}");
    for alert in [
        "OriginRouterOriginDown",
        "OriginRouterRankingStale",
        "OriginRouterRankingFromTheFuture",
        "OriginRouterClockOff",
        "OriginRouterLeaderNotPublishing",
        "OriginRouterKeyValueStoreStale",
        "OriginRouterLeaderFlapping",
        "OriginRouterProbeFailuresRising",
    ] {
        assert!(rules.contains(&format!("- alert: {alert}\n")), "no {alert}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerting_rules_use_is_exported_by_the_prober() {
    let queries = expressions(&rules_text());
    let up = TestOrigin::start((loopback(1), 0).into(), Mode::Ok)
        .await
        .unwrap();
    // A port nobody listens on: this origin is refused, and goes down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(std::slice::from_ref(&up), "rules", None, None);
    c.pools
        .get_mut("web")
        .unwrap()
        .origins
        .push(OriginConfig::http("gone", "127.0.0.1", closed_port));
    c.store.dynamodb_table = None;
    c.store.embedded_path = dir.path().join("store");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.prober.metrics_listen = Some(listen);
    // The KeyValueStore's series (OriginRouterKeyValueStoreStale) exist
    // only with a store: a local one.
    let kvs = origin_router_tests::kvs::KvsServer::start().await.unwrap();
    c.store.kvs_arn = Some(kvs.arn().to_string());
    c.store.kvs_endpoint = Some(kvs.endpoint());
    let region = c.prober.region.clone().unwrap();
    let path = write_config(&c, dir.path(), "rules");
    let _worker = Proc(
        prober(&common::aws_test_vars(&region))
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}/metrics");
    let down = format!(
        "origin_router_origin_state{{region=\"{region}\",pool=\"web\",origin=\"gone\",state=\"down\"}}"
    );
    // Some series appear only after the first round has ranked and
    // published; the refused origin needs a few rounds to be held down.
    let found = eventually(Duration::from_secs(30), || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        (missing(&queries, &body).is_empty() && sample(&body, &down) == Some(1.0)).then_some(body)
    })
    .await;
    let Some(body) = found else {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        panic!(
            "the rules use series the prober does not export ({:?}), or `gone` is not down\n/metrics:\n{body}",
            missing(&queries, &body)
        );
    };
    // The gauges say what was published: the live origin is healthy, and
    // the ranking was generated within the last minute by this clock.
    let healthy = format!(
        "origin_router_origin_state{{region=\"{region}\",pool=\"web\",origin=\"a\",state=\"healthy\"}}"
    );
    assert_eq!(sample(&body, &healthy), Some(1.0), "{body}");
    let generated = sample(
        &body,
        &format!(
            "origin_router_ranking_generated_timestamp_seconds{{region=\"{region}\",pool=\"web\"}}"
        ),
    )
    .expect("a ranking timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&generated),
        "generated {generated}, now {now}"
    );
}
