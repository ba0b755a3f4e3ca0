//! The generated CloudFront Function attacked: hostile KeyValueStore
//! values, hostile viewer-request events, clocks, a missing or unknown
//! edge location, a store that throws, absurd configs for the generator.
//! Wherever the Rust decision can say what the function must do, it is
//! the reference: `edge::decision::decide` with every read fresh
//! (`Read::Now`), no ejections and no race winner, over what
//! `compact::decode` accepts of the same values, with the controls of the
//! newest value the function trusts (see `controls_of`). Node must be
//! installed (the test command has it).

mod common;

use edge::settings::EdgeSettings;
use origin_router::compact;
use origin_router::config::{Config, PoolConfig};
use serde_json::{json, Value};

use common::node::{assert_agree, named, read_back, run_node, rust_view, workdir, write_function};

const NOW: u64 = 1_780_000_000_000;

const BASE: &str = r#"
[routing]
default_pool = "web"
hosts = { "www.example.org" = "api", "kelvin.example.org" = "api" }
distributions = { "E2QWRUHAPOMQZL" = "api" }
[pools.web]
origins = [
  { id = "o0", host = "o0.example.net" },
  { id = "o1", host = "o1.example.net" },
  { id = "o2", host = "o2.example.net" },
]
[pools.api]
origins = [
  { id = "a0", host = "a0.example.net" },
  { id = "a1", host = "a1.example.net" },
]
[pools.api.steering]
policy = "band"
band_absolute = "5ms"
key = "cookie:sid"
"#;

fn base_config() -> Config {
    let mut c = Config::from_toml(BASE, "attack.toml").unwrap();
    c.store.kvs_regions = vec!["us-east-1".into(), "eu-west-1".into()];
    c
}

fn b36(n: u64) -> String {
    compact::base36(n)
}

/// A value of `pool`: `origins` and `controls` as written.
fn value(pool: &PoolConfig, at: u64, origins: &str, controls: &str) -> String {
    format!(
        "or1;{};1;{};{origins};{controls}",
        compact::fingerprint(pool),
        b36(at)
    )
}

fn plain_event(host: Option<&str>) -> Value {
    let mut headers = serde_json::Map::new();
    if let Some(h) = host {
        headers.insert("host".into(), json!({ "value": h }));
    }
    json!({
        "version": "1.0",
        "context": {"distributionId": "EOTHER", "eventType": "viewer-request"},
        "viewer": {"ip": "192.0.2.1"},
        "request": {"method": "GET", "uri": "/", "querystring": {}, "headers": headers, "cookies": {}},
    })
}

/// Hostile KeyValueStore values of pool `web`, one case each (the us-east-1
/// value; eu-west-1 holds a plain valid one so that a refused value shows).
#[test]
fn hostile_values_are_read_as_the_rust_decoder_reads_them() {
    let dir = workdir();
    let config = base_config();
    let function = write_function(dir.path(), "values", &config);
    let web = config.pools["web"].clone();
    let fp = compact::fingerprint(&web);
    let mut api_like = web.clone();
    api_like.origins[0].id = "other".into();
    let two53 = 1u64 << 53;
    let hostile: Vec<(&str, String)> = vec![
        ("valid", value(&web, NOW, "Bh1:2s,Ah2", "")),
        ("oversized", value(&web, NOW, "Bh1", "") + &" ".repeat(1025)),
        ("oversized by one byte", {
            let v = value(&web, NOW, "Bh1", "");
            let pad = compact::MAX_VALUE_BYTES + 1 - v.len();
            v + &",".repeat(pad)
        }),
        (
            "truncated",
            value(&web, NOW, "Bh1,Ah2", "")[..20].to_string(),
        ),
        ("truncated at a control", {
            let v = value(
                &web,
                NOW,
                "Bh1",
                &format!("dB{}@{}@us-east-1", b36(NOW - 1), b36(NOW + 60_000)),
            );
            v[..v.len() - 8].to_string()
        }),
        ("wrong fingerprint", value(&api_like, NOW, "Bh1", "")),
        ("another version", format!("or2;{fp};1;{};Bh1;", b36(NOW))),
        ("duplicate index", value(&web, NOW, "Bh1,Bd2,Ah3", "")),
        (
            "generated_at beyond 2^53",
            format!("or1;{fp};1;{};Bh1;", b36(two53 + 1)),
        ),
        (
            "score beyond 2^53 µs",
            value(&web, NOW, &format!("Bh{},Ah2", b36(two53 + 3)), ""),
        ),
        (
            "score of 11 digits, leading zeros",
            value(&web, NOW, "Bh00000000001,Ah2", ""),
        ),
        (
            "connect of 11 digits, leading zeros",
            value(&web, NOW, "Bh1:00000000001,Ah2", ""),
        ),
        (
            "until beyond 2^53",
            value(
                &web,
                NOW,
                "Bh1,Ah2",
                &format!("dB{}@{}@us-east-1", b36(NOW - 1), b36(two53 + 1)),
            ),
        ),
        (
            "seq beyond u64",
            format!("or1;{fp};{};{};Bh1;", "z".repeat(14), b36(NOW)),
        ),
        (
            "drain with until <= set_at",
            value(
                &web,
                NOW,
                "Bh1,Ah2",
                &format!("dB{}@{}@us-east-1", b36(NOW + 5), b36(NOW + 5)),
            ),
        ),
        (
            "override with until < set_at",
            value(
                &web,
                NOW,
                "Bh1,Ah2",
                &format!("oC{}@{}@all-regions", b36(NOW + 5), b36(NOW - 5)),
            ),
        ),
        (
            "drain for region __proto__",
            value(
                &web,
                NOW,
                "Bh1,Ah2",
                &format!("dB{}@{}@__proto__", b36(NOW - 5), b36(NOW + 5_000)),
            ),
        ),
        (
            "override for region constructor",
            value(
                &web,
                NOW,
                "Bh1,Ah2",
                &format!("oC{}@{}@constructor", b36(NOW - 5), b36(NOW + 5_000)),
            ),
        ),
        ("empty origin list", value(&web, NOW, "", "")),
        (
            "empty origin list with an override",
            value(
                &web,
                NOW,
                "",
                &format!("oC{}@{}@all-regions", b36(NOW - 5), b36(NOW + 5_000)),
            ),
        ),
        ("index beyond the pool", value(&web, NOW, "Dh1", "")),
        ("a stray comma", value(&web, NOW, "Bh1,,Ah2,", ",")),
        ("a state in upper case", value(&web, NOW, "BH1", "")),
        ("a score in upper case", value(&web, NOW, "Bh1A", "")),
        ("a region starting with a dot", {
            value(
                &web,
                NOW,
                "Bh1",
                &format!("dB{}@{}@.x", b36(NOW - 5), b36(NOW + 5_000)),
            )
        }),
        ("a region of 65 characters", {
            value(
                &web,
                NOW,
                "Bh1",
                &format!("dB{}@{}@{}", b36(NOW - 5), b36(NOW + 5_000), "r".repeat(65)),
            )
        }),
        ("non-ASCII", value(&web, NOW, "Bh1", "") + "é"),
        (
            "dated an hour ahead",
            value(&web, NOW + 3_600_000, "Bh1", ""),
        ),
        (
            "dated an hour behind",
            value(&web, NOW - 3_600_000, "Bh1", ""),
        ),
    ];
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    let other = value(&web, NOW - 1_000, "Ch5,Ah6", "");
    for (name, v) in &hostile {
        for edge_region in ["us-east-1", "eu-west-1", "__proto__", "constructor"] {
            let mut kvs = serde_json::Map::new();
            kvs.insert("web/us-east-1".into(), json!(v));
            kvs.insert("web/eu-west-1".into(), json!(other));
            let (docs, controls) = read_back(&config, "web", edge_region, &kvs, NOW);
            let settings = EdgeSettings::new(&config, edge_region.to_string());
            wants.push((
                format!("{name} at {edge_region}"),
                rust_view(&settings, Some("web"), &docs, &controls, "", NOW),
            ));
            cases.push(json!({
                "fn": function, "kvs": kvs, "region": edge_region, "now": NOW,
                "event": plain_event(None),
            }));
        }
    }
    let results = run_node(dir.path(), &cases);
    assert_agree(
        wants
            .iter()
            .zip(&results)
            .map(|((name, rust), result)| (name.as_str(), rust, named(result, Some(&web)))),
    );
}

/// A prober whose clock runs an hour ahead (or a value left behind by one)
/// must not impose its controls over what fresh values carry: a drain in
/// force in every fresh value stays in force.
#[test]
fn a_value_dated_an_hour_ahead_does_not_lift_a_drain() {
    let dir = workdir();
    let config = base_config();
    let function = write_function(dir.path(), "ahead", &config);
    let web = &config.pools["web"];
    let drain = format!("dA{}@{}@all-regions", b36(NOW - 60_000), b36(NOW + 600_000));
    let mut kvs = serde_json::Map::new();
    kvs.insert(
        "web/us-east-1".into(),
        json!(value(web, NOW, "Ah1,Bh2", &drain)),
    );
    kvs.insert(
        "web/eu-west-1".into(),
        json!(value(web, NOW + 3_600_000, "Ah1,Bh2", "")),
    );
    let case = json!({
        "fn": function, "kvs": kvs, "region": "eu-west-1", "now": NOW,
        "event": plain_event(None),
    });
    let got = named(&run_node(dir.path(), &[case])[0], Some(web));
    assert_eq!(got["origin"], "o1", "the drained o0 was chosen: {got}");
}

/// Hostile viewer-request events against the Rust routing and key rules.
#[test]
fn hostile_events_route_and_steer_as_the_rust_edge() {
    let dir = workdir();
    let config = base_config();
    let function = write_function(dir.path(), "events", &config);
    // Two usable origins within the band: the key decides.
    let mut kvs = serde_json::Map::new();
    for r in ["us-east-1", "eu-west-1"] {
        let pool = if r == "us-east-1" { "web" } else { "api" };
        let p = &config.pools[pool];
        let origins = if pool == "web" {
            "Ch1,Bh2,Ah3"
        } else {
            "Ah1,Bh2"
        };
        kvs.insert(
            compact::key(pool, r),
            json!(value(p, NOW - 1_000, origins, "")),
        );
    }
    let with = |host: Value, more: &dyn Fn(&mut Value)| {
        let mut e = plain_event(None);
        if !host.is_null() {
            e["request"]["headers"]["host"] = host;
        }
        more(&mut e);
        e
    };
    let none = |_: &mut Value| {};
    let kelvin = "\u{212a}elvin.example.org";
    // (name, event, the Host the Rust edge sees, the distribution id, the key)
    type Case<'a> = (&'a str, Value, Option<&'a str>, Option<&'a str>, &'a str);
    let cases_in: Vec<Case<'_>> = vec![
        (
            "no host",
            with(Value::Null, &none),
            None,
            Some("EOTHER"),
            "",
        ),
        (
            "upper case with port",
            with(json!({"value": " WWW.Example.ORG:443 "}), &none),
            Some(" WWW.Example.ORG:443 "),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "empty port",
            with(json!({"value": "www.example.org:"}), &none),
            Some("www.example.org:"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "letters for a port",
            with(json!({"value": "www.example.org:http"}), &none),
            Some("www.example.org:http"),
            Some("EOTHER"),
            "",
        ),
        (
            "two ports",
            with(json!({"value": "www.example.org:1:2"}), &none),
            Some("www.example.org:1:2"),
            Some("EOTHER"),
            "",
        ),
        (
            "brackets around a name",
            with(json!({"value": "[www.example.org]:8080"}), &none),
            Some("[www.example.org]:8080"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "an unclosed bracket",
            with(json!({"value": "[www.example.org"}), &none),
            Some("[www.example.org"),
            Some("EOTHER"),
            "",
        ),
        (
            "the Kelvin sign",
            with(json!({"value": kelvin}), &none),
            Some(kelvin),
            Some("EOTHER"),
            "",
        ),
        (
            "a trailing NEL (U+0085)",
            with(json!({"value": "www.example.org\u{85}"}), &none),
            Some("www.example.org\u{85}"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "a leading BOM (U+FEFF)",
            with(json!({"value": "\u{feff}www.example.org"}), &none),
            Some("\u{feff}www.example.org"),
            Some("EOTHER"),
            "",
        ),
        (
            "host __proto__",
            with(json!({"value": "__proto__"}), &none),
            Some("__proto__"),
            Some("EOTHER"),
            "",
        ),
        (
            "host constructor, distribution toString",
            with(json!({"value": "constructor"}), &|e| {
                e["context"]["distributionId"] = json!("toString")
            }),
            Some("constructor"),
            Some("toString"),
            "",
        ),
        (
            "distribution __proto__",
            with(Value::Null, &|e| {
                e["context"]["distributionId"] = json!("__proto__")
            }),
            None,
            Some("__proto__"),
            "",
        ),
        (
            "the distribution mapped",
            with(Value::Null, &|e| {
                e["context"]["distributionId"] = json!("E2QWRUHAPOMQZL")
            }),
            None,
            Some("E2QWRUHAPOMQZL"),
            "192.0.2.1",
        ),
        (
            "a host that is a number",
            with(json!({"value": 42}), &none),
            None,
            Some("EOTHER"),
            "",
        ),
        (
            "a host that is a string, not an object",
            with(json!("www.example.org"), &none),
            None,
            Some("EOTHER"),
            "",
        ),
        (
            "no headers object",
            with(Value::Null, &|e| {
                e["request"].as_object_mut().unwrap().remove("headers");
            }),
            None,
            Some("EOTHER"),
            "",
        ),
        (
            "no cookies object, no viewer",
            with(json!({"value": "www.example.org"}), &|e| {
                e["request"].as_object_mut().unwrap().remove("cookies");
                e.as_object_mut().unwrap().remove("viewer");
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "/",
        ),
        (
            "a cookie named __proto__ only",
            with(json!({"value": "www.example.org"}), &|e| {
                e["request"]["cookies"] = json!({"__proto__": {"value": "x"}});
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "the cookie, quoted",
            with(json!({"value": "www.example.org"}), &|e| {
                e["request"]["cookies"] = json!({"sid": {"value": " \"u-17\" "}});
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "u-17",
        ),
        (
            "the cookie, a number",
            with(json!({"value": "www.example.org"}), &|e| {
                e["request"]["cookies"] = json!({"sid": {"value": 17}});
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "the cookie, null",
            with(json!({"value": "www.example.org"}), &|e| {
                e["request"]["cookies"] = json!({"sid": null});
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "192.0.2.1",
        ),
        (
            "a viewer without ip",
            with(json!({"value": "www.example.org"}), &|e| {
                e["viewer"] = json!({});
                e["request"]["uri"] = json!("/p");
            }),
            Some("www.example.org"),
            Some("EOTHER"),
            "/p",
        ),
    ];
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    for (name, event, host, dist, key) in &cases_in {
        let settings = EdgeSettings::new(&config, "us-east-1".to_string());
        let pool_name = edge::routing::pool_for(&settings.routing, *host, *dist);
        let (docs, controls) = pool_name
            .map(|p| read_back(&config, p, "us-east-1", &kvs, NOW))
            .unwrap_or_default();
        let rust = rust_view(&settings, pool_name, &docs, &controls, key, NOW);
        wants.push((
            name.to_string(),
            rust,
            pool_name.map(|p| config.pools[p].clone()),
        ));
        cases.push(json!({
            "fn": function, "kvs": kvs, "region": "us-east-1", "now": NOW, "event": event,
        }));
    }
    let results = run_node(dir.path(), &cases);
    assert_agree(
        wants
            .iter()
            .zip(&results)
            .map(|((name, rust, pool), result)| {
                (name.as_str(), rust, named(result, pool.as_ref()))
            }),
    );
}

/// Clocks, the edge location, a store that throws.
#[test]
fn clocks_edge_locations_and_a_failing_store() {
    let dir = workdir();
    let config = base_config();
    let function = write_function(dir.path(), "clocks", &config);
    let web = &config.pools["web"];
    let drain = format!("dA{}@{}@us-east-1", b36(NOW - 60_000), b36(NOW + 600_000));
    let mut kvs = serde_json::Map::new();
    kvs.insert(
        "web/us-east-1".into(),
        json!(value(web, NOW - 500, "Ah1,Bh2,Ch3", &drain)),
    );
    kvs.insert(
        "web/eu-west-1".into(),
        json!(value(web, NOW - 900, "Ch1,Ah2", "")),
    );
    let hour = 3_600_000;
    // (name, edge location, edge region for the Rust side, now, throws)
    let variants: Vec<(&str, Value, &str, u64, bool)> = vec![
        (
            "now",
            json!({"region": "us-east-1"}),
            "us-east-1",
            NOW,
            false,
        ),
        (
            "now an hour ahead",
            json!({"region": "us-east-1"}),
            "us-east-1",
            NOW + hour,
            false,
        ),
        (
            "now an hour behind",
            json!({"region": "us-east-1"}),
            "us-east-1",
            NOW - hour,
            false,
        ),
        ("no edge location", Value::Null, "", NOW, false),
        (
            "an edge location without region",
            json!({"name": "TST"}),
            "",
            NOW,
            false,
        ),
        (
            "an unknown region",
            json!({"region": "xx-nowhere-9"}),
            "xx-nowhere-9",
            NOW,
            false,
        ),
        (
            "region __proto__",
            json!({"region": "__proto__"}),
            "__proto__",
            NOW,
            false,
        ),
        (
            "region toString",
            json!({"region": "toString"}),
            "toString",
            NOW,
            false,
        ),
        (
            "every get throws",
            json!({"region": "us-east-1"}),
            "us-east-1",
            NOW,
            true,
        ),
    ];
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    for (name, loc, region, now, throws) in &variants {
        let empty = serde_json::Map::new();
        let read = if *throws { &empty } else { &kvs };
        let (docs, controls) = read_back(&config, "web", region, read, *now);
        let settings = EdgeSettings::new(&config, region.to_string());
        wants.push((
            name.to_string(),
            rust_view(&settings, Some("web"), &docs, &controls, "", *now),
        ));
        cases.push(json!({
            "fn": function, "kvs": kvs, "edgeLocation": loc, "now": now,
            "kvsThrows": throws, "event": plain_event(None),
        }));
    }
    let results = run_node(dir.path(), &cases);
    assert_agree(
        wants
            .iter()
            .zip(&results)
            .map(|((name, rust), result)| (name.as_str(), rust, named(result, Some(web)))),
    );
}

fn config_of(text: &str, regions: &[&str]) -> Config {
    let mut c = Config::from_toml(text, "attack.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.store.kvs_regions = regions.iter().map(|r| r.to_string()).collect();
    c
}

/// A pool may be named `null`: a request that maps to no pool must pass
/// through, not throw (a throw is an error page for every such request).
#[test]
fn a_pool_named_null_does_not_break_unmapped_requests() {
    let dir = workdir();
    let config = config_of(
        "[routing]\nhosts = { \"www.example.org\" = \"null\" }\n[pools.null]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n",
        &["us-east-1"],
    );
    let function = write_function(dir.path(), "null", &config);
    let case = json!({
        "fn": function, "kvs": {}, "region": "us-east-1", "now": NOW,
        "event": plain_event(Some("other.example.org")),
    });
    let got = named(&run_node(dir.path(), &[case])[0], None);
    assert_eq!(got, json!({"source": "passthrough"}));
}

/// `__proto__` is a valid host name and a valid name; in a JavaScript
/// object literal it is not a key but the prototype. The generator must
/// either route it as the Rust edge does or refuse the config by name.
#[test]
fn proto_names_are_routed_or_refused() {
    let dir = workdir();
    let config = config_of(
        "[routing]\ndefault_pool = \"web\"\nhosts = { \"__proto__\" = \"api\" }\n[pools.web]\norigins = [{ id = \"w\", host = \"w.example.net\" }]\n[pools.api]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n",
        &["us-east-1"],
    );
    match edge::function::generate(&config, edge::function::Options::default()) {
        Err(e) => assert!(e.to_string().contains("__proto__"), "{e}"),
        Ok(_) => {
            let function = write_function(dir.path(), "proto", &config);
            let case = json!({
                "fn": function, "kvs": {}, "region": "us-east-1", "now": NOW,
                "event": plain_event(Some("__proto__")),
            });
            let result = &run_node(dir.path(), &[case])[0];
            assert_eq!(
                result["calls"][0]["args"]["domainName"], "a.example.net",
                "Host __proto__ went elsewhere than pool api: {result}"
            );
        }
    }
    for (what, text, regions) in [
        (
            "pool",
            "[routing]\ndefault_pool = \"__proto__\"\n[pools.__proto__]\norigins = [{ id = \"w\", host = \"w.example.net\" }]\n",
            vec!["us-east-1"],
        ),
        (
            "region",
            "[pools.web]\norigins = [{ id = \"w\", host = \"w.example.net\" }]\n",
            vec!["us-east-1", "__proto__"],
        ),
    ] {
        let config = config_of(text, &regions);
        if let Err(e) = edge::function::generate(&config, edge::function::Options::default()) {
            assert!(e.to_string().contains("__proto__"), "{what}: {e}");
        }
    }
}

/// Without an origin group (`cloudfront.origin_group = false`) there is
/// no failover: the chosen origin keeps CloudFront's three connection
/// attempts, not the single attempt meant for a group's primary.
#[test]
fn without_an_origin_group_the_origin_keeps_three_attempts() {
    let dir = workdir();
    let config = config_of(
        "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }, { id = \"b\", host = \"b.example.net\" }]\n[pools.web.cloudfront]\norigin_group = false\n[routing]\ndefault_pool = \"web\"\n",
        &["us-east-1"],
    );
    let function = write_function(dir.path(), "nogroup", &config);
    let web = &config.pools["web"];
    let mut kvs = serde_json::Map::new();
    kvs.insert(
        "web/us-east-1".into(),
        json!(value(web, NOW, "Ah1:c8,Bh2:c8", "")),
    );
    let case = json!({
        "fn": function, "kvs": kvs, "region": "us-east-1", "now": NOW,
        "event": plain_event(None),
    });
    let result = &run_node(dir.path(), &[case])[0];
    let calls = result["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{result}");
    assert_eq!(calls[0]["call"], "updateRequestOrigin", "{result}");
    assert_eq!(calls[0]["args"]["connectionAttempts"], 3, "{result}");
}

/// Absurd configs: every refusal is a [`edge::function::FunctionError`]
/// naming the cause (never a panic), and everything accepted fits
/// CloudFront's 10,240 bytes.
#[test]
fn absurd_configs_are_refused_by_name_or_fit() {
    let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
    let origins = |n: usize, id_len: usize| {
        (0..n)
            .map(|i| {
                let id = format!("{i:02}{}", long('x', id_len.saturating_sub(2)));
                format!("  {{ id = \"{id}\", host = \"h{i}.example.net\" }},\n")
            })
            .collect::<String>()
    };
    let geo: Vec<&str> = origin_router::geo::REGIONS.iter().map(|r| r.0).collect();
    let many_regions: Vec<String> = (0..70).map(|i| format!("r{i:02}")).collect();
    let many: Vec<&str> = many_regions.iter().map(String::as_str).collect();
    let mut configs: Vec<(String, String, Vec<&str>)> = vec![
        (
            "64 origins, ids of 64".into(),
            format!("[pools.web]\norigins = [\n{}]\n", origins(64, 64)),
            vec!["us-east-1"],
        ),
        (
            "64 origins, short ids, 20 regions".into(),
            format!("[pools.web]\norigins = [\n{}]\n", origins(64, 2)),
            geo.iter().take(20).copied().collect(),
        ),
        (
            "every region the geography knows".into(),
            "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n".into(),
            geo.clone(),
        ),
        (
            "70 publishing regions".into(),
            "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n".into(),
            many.clone(),
        ),
        (
            "band steering, extreme".into(),
            format!(
                "[pools.web]\norigins = [\n{}]\n[pools.web.steering]\npolicy = \"band\"\nband_absolute = \"1h\"\nband_relative = 1000000.0\nband_taper = 1000000.0\nkey = \"header:{}\"\n",
                origins(8, 8),
                long('h', 200)
            ),
            vec!["us-east-1"],
        ),
    ];
    let mut pools = String::new();
    for p in 0..60 {
        pools.push_str(&format!(
            "[pools.p{p:02}]\norigins = [{{ id = \"a\", host = \"a{p}.example.net\" }}, {{ id = \"b\", host = \"b{p}.example.net\" }}]\n"
        ));
    }
    configs.push(("60 pools".into(), pools, vec!["us-east-1", "eu-west-1"]));
    let mut failures = Vec::new();
    for (name, text, regions) in &configs {
        let Ok(mut config) = Config::from_toml(text, "absurd.toml") else {
            eprintln!("{name}: the config itself is refused");
            continue;
        };
        config.store.kvs_regions = regions.iter().map(|r| r.to_string()).collect();
        let generated = std::panic::catch_unwind(|| {
            edge::function::generate(&config, edge::function::Options::default())
                .map(|c| c.len())
                .map_err(|e| e.to_string())
        });
        match generated {
            Err(_) => failures.push(format!("{name}: the generator panicked")),
            Ok(Ok(bytes)) if bytes > edge::function::MAX_CODE_BYTES => {
                failures.push(format!("{name}: {bytes} bytes accepted"))
            }
            Ok(Ok(bytes)) => eprintln!("{name}: {bytes} bytes"),
            Ok(Err(e)) => eprintln!("{name}: refused: {e}"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Band steering at the edges of what the config accepts: the function's
/// choice (band, origin, failover) is the Rust decision's for every key.
#[test]
fn band_steering_at_its_extremes_matches_the_rust_decision() {
    let dir = workdir();
    let extremes = [
        ("10s", 10.0, 10.0, "weight = 1000.0"),
        ("0s", 0.0, 0.0, "weight = 0.01"),
        ("10s", 0.0, 10.0, "weight = 0.01, max_share = 0.01"),
        ("0s", 10.0, 0.0, "weight = 1000.0, max_share = 1.0"),
        ("1ms", 0.001, 10.0, "max_share = 0.05"),
    ];
    let mut cases = Vec::new();
    let mut wants = Vec::new();
    for (n, (abs, rel, taper, extra)) in extremes.iter().enumerate() {
        let mut text =
            String::from("[routing]\ndefault_pool = \"web\"\n[pools.web]\norigins = [\n");
        for i in 0..8 {
            let extra = if i % 2 == 0 {
                format!(", {extra}")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "  {{ id = \"o{i}\", host = \"o{i}.example.net\"{extra} }},\n"
            ));
        }
        text.push_str(&format!(
            "]\n[pools.web.steering]\npolicy = \"band\"\nband_absolute = \"{abs}\"\nband_relative = {rel:?}\nband_taper = {taper:?}\nkey = \"uri\"\n"
        ));
        let config = config_of(&text, &["us-east-1"]);
        let function = write_function(dir.path(), &format!("band-{n}"), &config);
        let web = &config.pools["web"];
        // Scores from 0 to an hour: 0, 0.001, 1, 10, 100, 1000, 60000, 3600000 ms.
        let scores = ["0", "1", "rs", "7ps", "255s", "lfls", "zpkw0", "1ec2w00"];
        let origins: Vec<String> = (0..8)
            .map(|i| {
                let state = if i == 5 { 'g' } else { 'h' };
                format!("{}{state}{}", compact::INDEX_ALPHABET[i] as char, scores[i])
            })
            .collect();
        let mut kvs = serde_json::Map::new();
        kvs.insert(
            "web/us-east-1".into(),
            json!(value(web, NOW, &origins.join(","), "")),
        );
        let settings = EdgeSettings::new(&config, "us-east-1".to_string());
        let (docs, controls) = read_back(&config, "web", "us-east-1", &kvs, NOW);
        for k in 0..60 {
            let key = format!("/k{k}");
            wants.push((
                format!("{text}\nkey {key}"),
                rust_view(&settings, Some("web"), &docs, &controls, &key, NOW),
                web.clone(),
            ));
            let mut event = plain_event(None);
            event["request"]["uri"] = json!(key);
            cases.push(json!({
                "fn": function, "kvs": kvs, "region": "us-east-1", "now": NOW, "event": event,
            }));
        }
    }
    let results = run_node(dir.path(), &cases);
    assert_agree(
        wants
            .iter()
            .zip(&results)
            .map(|((name, rust, pool), result)| (name.as_str(), rust, named(result, Some(pool)))),
    );
}
