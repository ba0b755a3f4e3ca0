//! Property tests: random and mutated events reach the handler, random and
//! mutated table items reach the decoder. Nothing panics; whatever is
//! accepted is valid.
//!
//! Every CI run tries 300 cases of each property. The long run, 1.2 million
//! generated events and ranking documents (BENCHMARKS.md):
//! `ORIGIN_ROUTER_FUZZ_CASES=200000 cargo test -p edge --test fuzz -- --test-threads=1`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::racer::ScriptedRacer;
use edge::handler::handle;
use edge::handler::Edge;
use origin_router::config::Config;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::codec;
use origin_router::store::MemoryStore;
use proptest::prelude::*;
use serde_json::Value;

mod common;

const FIXTURE: &str = include_str!("../../tests/fixtures/cloudfront/origin-request.json");

/// Cases per property: `ORIGIN_ROUTER_FUZZ_CASES`, else 300.
fn cases() -> u32 {
    std::env::var("ORIGIN_ROUTER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

fn router() -> Edge {
    let config = Config::from_toml(
        r#"
        [routing]
        default_pool = "web"
        [pools.web]
        origins = [{ id = "a", host = "a.example.net" }, { id = "b", host = "b.example.net" }]
        "#,
        "fuzz.toml",
    )
    .unwrap();
    common::edge(
        &config,
        "eu-west-1",
        Arc::new(MemoryStore::new()),
        ScriptedRacer::nobody(),
    )
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::from),
        Just(Value::from("origin-request")),
        Just(Value::from(u64::MAX)),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    ".{0,8}",
                    Just("Records".to_string()),
                    Just("cf".to_string()),
                    Just("request".to_string())
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (object keys and array indices) in a JSON value.
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = prefix.clone();
                p.push(k.clone());
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(i.to_string());
                out.push(p.clone());
                paths(child, p, out);
            }
        }
        _ => {}
    }
}

/// Replaces (or, with `None`, removes) the value at `path`.
fn mutate(v: &mut Value, path: &[String], with: Option<Value>) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut at = v;
    for key in parents {
        at = match at {
            Value::Object(m) => m.get_mut(key).expect("path exists"),
            Value::Array(a) => &mut a[key.parse::<usize>().expect("index")],
            _ => return,
        };
    }
    match (at, with) {
        (Value::Object(m), Some(w)) => {
            m.insert(last.clone(), w);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(w)) => a[last.parse::<usize>().expect("index")] = w,
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().expect("index"));
        }
        _ => {}
    }
}

fn decide(event: Value) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { handle(&router(), event, 1_780_000_000_000).await })
        .map(|h| h.request)
        .map_err(|e| e.to_string())
}

fn valid_item() -> HashMap<String, AttributeValue> {
    let a = RankedOrigin::measured("a", OriginState::Healthy, 3.5, 2);
    codec::to_item(
        &RankingDocument::new("web", "eu-west-1", 7, 1_780_000_000_000, vec![a]),
        1_780_086_400,
    )
}

fn attribute() -> impl Strategy<Value = AttributeValue> {
    let leaf = prop_oneof![
        ".{0,10}".prop_map(AttributeValue::S),
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            ".{0,6}"
        ]
        .prop_map(AttributeValue::N),
        any::<bool>().prop_map(AttributeValue::Bool),
        Just(AttributeValue::Null(true)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
            proptest::collection::hash_map(".{0,8}", inner, 0..4).prop_map(AttributeValue::M),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_json_never_panics_the_handler(event in json()) {
        let _ = decide(event);
    }

    #[test]
    fn mutated_events_never_panic_and_accepted_ones_stay_requests(
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(json()),
    ) {
        let mut event: Value = serde_json::from_str(FIXTURE).unwrap();
        let mut all = Vec::new();
        paths(&event, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        mutate(&mut event, &path, replacement);
        if let Ok(request) = decide(event) {
            prop_assert!(request.is_object());
            prop_assert!(request["uri"].is_string());
        }
    }

    #[test]
    fn random_items_never_panic_the_decoder(item in proptest::collection::hash_map(
        prop_oneof![".{0,10}", Just("schema_version".to_string()), Just("origins".to_string()), Just("seq".to_string())],
        attribute(),
        0..8,
    )) {
        if let Ok(doc) = codec::from_item(item) {
            prop_assert!(doc.validate().is_ok());
        }
    }

    #[test]
    fn mutated_items_never_panic_and_accepted_ones_are_valid(
        key in prop::sample::select(vec!["schema_version", "pool", "region", "seq", "generated_at", "probe_interval_ms", "workers", "origins", "expires_at"]),
        value in prop::option::of(attribute()),
    ) {
        let mut item = valid_item();
        match value {
            Some(v) => { item.insert(key.to_string(), v); }
            None => { item.remove(key); }
        }
        if let Ok(doc) = codec::from_item(item) {
            prop_assert!(doc.validate().is_ok());
        }
    }

    /// Ranking documents as the embedded store or Redis hold them, one
    /// field replaced or removed: decoding never panics, whatever decodes
    /// is valid, and a choice made from it never leaves the bundled pool.
    #[test]
    fn mutated_json_documents_never_panic_and_never_redirect(
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(json()),
        now_offset in -4_000_000i64..4_000_000,
    ) {
        let a = RankedOrigin::measured("a", OriginState::Healthy, 3.5, 2);
        let b = RankedOrigin::measured("b", OriginState::Down, 1.0, 2);
        let doc = RankingDocument::new("web", "eu-west-1", 7, 1_780_000_000_000, vec![b, a]);
        let mut value: Value = serde_json::from_str(&doc.to_json()).unwrap();
        let mut all = Vec::new();
        paths(&value, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        mutate(&mut value, &path, replacement);
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(doc) = RankingDocument::from_json(&bytes) {
            prop_assert!(doc.validate().is_ok());
            let edge = router();
            let pool = &edge.router().pools()["web"];
            let now = (1_780_000_000_000i64 + now_offset) as u64;
            let choice = edge::decision::choose(
                pool,
                edge::decision::OriginSet::all(pool),
                std::slice::from_ref(&doc),
                edge::decision::Freshness {
                    region: "eu-west-1",
                    proximity: &Default::default(),
                    max_age: Duration::from_secs(30),
                },
                now,
                "/",
            );
            match choice {
                // Ranked: an entry of the document, up, and of the pool.
                edge::decision::Choice::Ranked { origin, age_ms, .. } => {
                    let e = doc.entry(&origin.id);
                    prop_assert!(e.is_some_and(|e| e.state != OriginState::Down), "{doc:?}");
                    prop_assert!(age_ms <= 30_000);
                    prop_assert!(doc.generated_at <= now + origin_router::document::MAX_CLOCK_SKEW_MS);
                }
                // All down: every entry of the pool in it is down.
                edge::decision::Choice::AllDown { .. } => {
                    prop_assert!(doc
                        .origins
                        .iter()
                        .filter(|e| pool.origin(&e.id).is_some())
                        .all(|e| e.state == OriginState::Down));
                }
                edge::decision::Choice::NoFreshRanking => {}
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_json_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RankingDocument::from_json(&bytes);
    }
}
