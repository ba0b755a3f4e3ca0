//! `deploy/grafana/origin-router.json` against the real `prober` binary:
//! every metric series the dashboard's queries name must be one a worker
//! exports (scraped from its /metrics on the embedded store, the
//! configuration a new user starts with), and every panel reads the
//! dashboard's data source variable.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use origin_router_tests::{loopback, Mode, TestOrigin};

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/origin-router.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard: panel targets and variables.
fn queries(dash: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            out.push(var["query"]["query"].as_str().unwrap().to_string());
        }
    }
    out
}

#[test]
fn the_name_check_holds_histograms_to_their_series_names() {
    let scrape = "# TYPE origin_router_publish_seconds histogram\n\
        origin_router_publish_seconds_bucket{le=\"0.1\"} 1\n\
        origin_router_publish_seconds_sum 0.01\n\
        origin_router_publish_seconds_count 1\n\
        origin_router_probes_total{result=\"ok\"} 3\n";
    let ok = ["rate(origin_router_publish_seconds_bucket[1m]) / origin_router_publish_seconds_count + origin_router_probes_total".to_string()];
    assert!(missing(&ok, scrape).is_empty());
    let wrong = [
        "rate(origin_router_publish_seconds[1m])".to_string(),
        "origin_router_probes_total_count".to_string(),
    ];
    assert_eq!(
        missing(&wrong, scrape),
        BTreeSet::from([
            "origin_router_probes_total_count".to_string(),
            "origin_router_publish_seconds".to_string()
        ])
    );
}

#[test]
fn every_panel_reads_the_data_source_variable_and_each_topic_has_a_panel() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"
        && v["name"] == "datasource"
        && v["query"] == "prometheus"));
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            used.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    for wanted in [
        "origin_router_probe_phase_seconds_bucket",
        "origin_router_probe_failures_total",
        "origin_router_probes_total",
        "origin_router_ranking_changes_total",
        "origin_router_publish_seconds_bucket",
        "origin_router_leader",
    ] {
        assert!(used.contains(wanted), "no panel reads {wanted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported_by_the_prober() {
    let queries = queries(&dashboard());
    assert!(queries.len() >= 8, "{queries:?}");
    let origin = TestOrigin::start((loopback(1), 0).into(), Mode::Ok)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(std::slice::from_ref(&origin), "grafana", None, None);
    c.store.dynamodb_table = None;
    c.store.embedded_path = dir.path().join("store");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.prober.metrics_listen = Some(listen);
    let path = write_config(&c, dir.path(), "grafana");
    let _worker = Proc(
        prober(&[])
            .args(["run", "--config"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}/metrics");
    // Some series appear only after the first round has ranked and
    // published: wait until nothing is missing, or show what is.
    let found = eventually(Duration::from_secs(20), || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        missing(&queries, &body).is_empty().then_some(())
    })
    .await;
    if found.is_none() {
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        panic!(
            "the dashboard queries series the prober does not export: {:?}\n/metrics:\n{body}",
            missing(&queries, &body)
        );
    }
}
