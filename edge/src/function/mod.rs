//! The CloudFront Function edge: JavaScript generated from the bundled
//! config that makes the edge decision at every edge location, without
//! Lambda.
//!
//! A CloudFront Function (runtime `cloudfront-js-2.0`, viewer-request)
//! can set the request's origin (`cf.updateRequestOrigin`,
//! `cf.createRequestOriginGroup`) and read a CloudFront KeyValueStore
//! (`cf.kvs().get`), where each region's prober leader writes the compact
//! ranking of every pool ([`origin_router::compact`]). The function holds
//! no state between requests, so it is the Rust decision
//! ([`crate::decision::decide`]) with every read fresh, no ejections and
//! no live race:
//!
//! - it reads every publishing region's value of the pool (nearest first,
//!   from `cf.edgeLocation.region` over the same geography as the Rust
//!   edge, precomputed here) and takes the controls from the newest (a
//!   value dated beyond the clock skew ahead counts as the oldest, so a
//!   prober whose clock runs ahead cannot overrule fresh values' controls);
//! - it chooses with the same rules (`table` where a ranking decided,
//!   `known_down`, `override`, `passthrough`); where the Rust edge would
//!   race live it takes the set's default (`default`);
//! - where a second usable origin exists it makes a two-origin origin
//!   group that fails over on the pool's `cloudfront.failover_status` codes
//!   and on connection failure, which replaces the race; the primary's
//!   connection timeout comes from its measured connect budget
//!   ([`crate::decision::timeouts`]).
//!
//! The runtime's code is `runtime.js`; this module puts the config in it
//! and checks the result against CloudFront's limits: 10 KB of code and the
//! runtime's JavaScript subset (CloudFront Developer Guide, "Quotas on
//! CloudFront Functions" and "JavaScript runtime 2.0 features").
//! `edge/tests/function.rs` runs it under Node against every decision
//! vector.

use std::collections::BTreeSet;

use origin_router::config::{
    Config, HostHeaderPolicy, PoolConfig, Protocol, SteeringKey, SteeringPolicy,
};
use origin_router::control::ControlKind;
use serde_json::{json, Value};
use thiserror::Error;

/// CloudFront's limit on a function's code, bytes ("Maximum size of a
/// function: 10 KB", not adjustable).
pub const MAX_CODE_BYTES: usize = 10 * 1024;

/// The runtime, with `__ORIGIN_ROUTER_CONFIG__` where the config goes.
pub const RUNTIME: &str = include_str!("runtime.min.js");

const CONFIG_SLOT: &str = "__ORIGIN_ROUTER_CONFIG__";

/// Constructs `cloudfront-js-2.0` lacks or forbids, or that this generator
/// never emits and a change could bring in by mistake: BigInt, spread and
/// rest, destructuring, classes, Map and Set, `Array.from`,
/// `Object.fromEntries`, optional chaining and nullish coalescing, `eval`
/// and `Function`, timers, modules other than `cloudfront`, async closures.
pub const FORBIDDEN: &[&str] = &[
    "BigInt",
    "...",
    "class ",
    "new Map",
    "new Set",
    "Array.from",
    "Object.fromEntries",
    "?.",
    "??",
    "eval(",
    "Function(",
    "setTimeout",
    "setInterval",
    "require(",
    "import(",
    "export ",
    "var {",
    "let {",
    "const {",
    "var [",
    "let [",
    "const [",
    "async (",
    "async function (",
    ".flat(",
    "=>",
];

/// Why no function was generated.
#[derive(Debug, Error)]
pub enum FunctionError {
    #[error("store.kvs_regions is empty: the function reads the rankings of these regions (the regions whose probers publish to the KeyValueStore), so it needs at least one")]
    NoRegions,
    #[error("the config has no pools: the function would route nothing")]
    NoPools,
    #[error("pools.{pool}.origins.{origin}: host `{host}` is an IP address; a CloudFront Function can send requests only to a DNS name")]
    IpOrigin {
        pool: String,
        origin: String,
        host: String,
    },
    #[error("store.kvs_regions lists {0} regions: the function names a region by one character, so it reads at most {max}", max = origin_router::compact::INDEX_ALPHABET.len())]
    TooManyRegions(usize),
    #[error("{at}: `__proto__` is a name the function cannot hold (in JavaScript it is an object's prototype, not a key): rename it")]
    ReservedName { at: String },
    #[error("the generated function is {bytes} bytes, above CloudFront's {MAX_CODE_BYTES}-byte limit: fewer pools, origins or store.kvs_regions, or shorter origin ids and host names")]
    TooLarge { bytes: usize },
    #[error("the generated code uses `{0}`, which the cloudfront-js-2.0 runtime lacks")]
    Construct(&'static str),
}

/// What the generator may be lenient about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Accept IP-address origins (the local demo and tests run the
    /// function under Node against loopback origins; CloudFront refuses
    /// them).
    pub allow_ip_origins: bool,
}

/// The function's JavaScript for `config`.
pub fn generate(config: &Config, options: Options) -> Result<String, FunctionError> {
    if config.pools.is_empty() {
        return Err(FunctionError::NoPools);
    }
    if config.store.kvs_regions.is_empty() {
        return Err(FunctionError::NoRegions);
    }
    if config.store.kvs_regions.len() > origin_router::compact::INDEX_ALPHABET.len() {
        return Err(FunctionError::TooManyRegions(
            config.store.kvs_regions.len(),
        ));
    }
    if let Some(at) = reserved_name(config) {
        return Err(FunctionError::ReservedName { at });
    }
    if let Some(c) = forbidden_in(RUNTIME) {
        return Err(FunctionError::Construct(c));
    }
    let mut pools = serde_json::Map::new();
    for (name, pool) in &config.pools {
        if !options.allow_ip_origins {
            if let Some(o) = pool
                .origins
                .iter()
                .find(|o| o.host.parse::<std::net::IpAddr>().is_ok())
            {
                return Err(FunctionError::IpOrigin {
                    pool: name.clone(),
                    origin: o.id.clone(),
                    host: o.host.clone(),
                });
            }
        }
        pools.insert(name.clone(), pool_json(pool));
    }
    let regions = &config.store.kvs_regions;
    let config_json = json!({
        "h": config.routing.hosts,
        "d": config.routing.distributions,
        "dp": config.routing.default_pool,
        "p": pools,
        "r": regions,
        "n": group_orders(nearest_orders(config)),
        "far": order_chars(regions, &far_order(regions)),
        "age": config.edge.ranking_max_age.as_millis() as u64,
        "skew": origin_router::document::MAX_CLOCK_SKEW_MS,
        "ops": [
            ControlKind::Drain.max_under(&config.operations).as_millis() as u64,
            ControlKind::Override.max_under(&config.operations).as_millis() as u64,
            config.operations.fail_open,
        ],
    });
    // CloudFront's examples put the import, as written here, on a line of
    // its own first; the minifier joins it to the code.
    let body = minify(RUNTIME);
    let body = body
        .strip_prefix("import cf from\"cloudfront\";")
        .unwrap_or(&body);
    let code = format!(
        "import cf from 'cloudfront';\n{}",
        body.replace(CONFIG_SLOT, &config_json.to_string())
    );
    if code.len() > MAX_CODE_BYTES {
        return Err(FunctionError::TooLarge { bytes: code.len() });
    }
    Ok(code)
}

/// Where the config names something `__proto__` that the function would
/// hold as an object's key (hosts, pools, regions): in a JavaScript object
/// literal, or assigned, that sets the prototype and the key is lost.
fn reserved_name(config: &Config) -> Option<String> {
    const PROTO: &str = "__proto__";
    let routing = &config.routing;
    if routing.hosts.contains_key(PROTO) {
        return Some("routing.hosts".into());
    }
    if config.pools.contains_key(PROTO) {
        return Some("pools".into());
    }
    if config.store.kvs_regions.iter().any(|r| r == PROTO) {
        return Some("store.kvs_regions".into());
    }
    config
        .edge
        .proximity
        .iter()
        .any(|(k, v)| k == PROTO || v.iter().any(|r| r == PROTO))
        .then(|| "edge.proximity".into())
}

/// The first of [`FORBIDDEN`] that `code` uses.
pub fn forbidden_in(code: &str) -> Option<&'static str> {
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    FORBIDDEN.iter().copied().find(|c| code.contains(c))
}

/// Drops comment lines, indentation and blank lines: the size limit
/// counts every byte.
fn minify(code: &str) -> String {
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pool as the runtime reads it: fingerprint, origins
/// `[id, host, endpoint, host_header, weight, max_share]` (the last
/// three only when not the default; host header `null` = the origin's
/// own, `1` = the viewer's, else the fixed name), default origin index,
/// steering (`null` = fastest, else `[band_absolute_ms, band_relative,
/// band_taper, key kind, key name]`) and CloudFront settings
/// `[connect_floor_s, read_timeout_s or 0, failover codes, groups]`.
fn pool_json(pool: &PoolConfig) -> Value {
    let origins: Vec<Value> = pool
        .origins
        .iter()
        .map(|o| {
            // 0: https on 443; 1: http on 80; N: https on N; -N: http on N.
            let port = i64::from(o.port());
            let endpoint = match o.protocol {
                Protocol::Https if port == 443 => 0,
                Protocol::Http if port == 80 => 1,
                Protocol::Https => port,
                Protocol::Http => -port,
            };
            let mut entry = vec![json!(o.id), json!(o.host), json!(endpoint)];
            let host_header = match &o.host_header {
                HostHeaderPolicy::Origin => Value::Null,
                HostHeaderPolicy::Viewer => json!(1),
                HostHeaderPolicy::Fixed(name) => json!(name),
            };
            let tail = [
                host_header,
                if o.weight == 1.0 {
                    Value::Null
                } else {
                    json!(o.weight)
                },
                o.max_share.map_or(Value::Null, |s| json!(s)),
            ];
            let keep = tail.iter().rposition(|v| !v.is_null()).map_or(0, |i| i + 1);
            entry.extend(tail.into_iter().take(keep));
            Value::Array(entry)
        })
        .collect();
    let default = pool
        .origins
        .iter()
        .position(|o| o.id == pool.default_origin_id())
        .unwrap_or(0);
    let steering = match pool.steering.policy {
        SteeringPolicy::Fastest => Value::Null,
        SteeringPolicy::Band => {
            let s = &pool.steering;
            let (kind, name) = match &s.key {
                SteeringKey::Uri => ("u", String::new()),
                SteeringKey::ClientIp => ("i", String::new()),
                SteeringKey::Header(n) => ("h", n.to_ascii_lowercase()),
                SteeringKey::Cookie(n) => ("c", n.clone()),
            };
            json!([
                s.band_absolute.as_secs_f64() * 1000.0,
                s.band_relative,
                s.band_taper,
                kind,
                name
            ])
        }
    };
    let cf = &pool.cloudfront;
    json!({
        "f": origin_router::compact::fingerprint(pool),
        "o": origins,
        "d": default,
        "s": steering,
        "cf": [cf.connect_floor_secs(), cf.read_timeout_secs().unwrap_or(0), cf.failover_status, cf.origin_group],
    })
}

/// For every region an edge location may name (the geography's, the
/// configured proximity lists', the publishing ones), the publishing
/// regions nearest first, as the Rust edge orders them
/// ([`origin_router::geo::nearest_first`]).
fn nearest_orders(config: &Config) -> serde_json::Map<String, Value> {
    let regions = &config.store.kvs_regions;
    let proximity = &config.edge.proximity;
    let mut from: BTreeSet<&str> = origin_router::geo::REGIONS.iter().map(|r| r.0).collect();
    from.extend(proximity.keys().map(String::as_str));
    from.extend(regions.iter().map(String::as_str));
    let far = order_chars(regions, &far_order(regions));
    from.into_iter()
        .filter_map(|r| {
            let order =
                origin_router::geo::nearest_first(r, regions.iter().map(String::as_str), proximity);
            let chars = order_chars(regions, &order);
            // An edge region whose order is the fallback's needs no entry.
            (chars != far).then(|| (r.to_string(), json!(chars)))
        })
        .collect()
}

/// Edge regions by their order (`{order: "region region ..."}`): most
/// regions share one of a few orders, and the size limit counts bytes.
fn group_orders(orders: serde_json::Map<String, Value>) -> Value {
    let mut grouped: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (region, order) in orders {
        grouped
            .entry(order.as_str().unwrap_or_default().to_string())
            .or_default()
            .push(region);
    }
    Value::Object(
        grouped
            .into_iter()
            .map(|(order, regions)| (order, json!(regions.join(" "))))
            .collect(),
    )
}

/// The order for an edge region nothing knows: by name.
fn far_order(regions: &[String]) -> Vec<&str> {
    let mut order: Vec<&str> = regions.iter().map(String::as_str).collect();
    order.sort_unstable();
    order
}

/// `order` as indexes into `regions`, one character each.
fn order_chars(regions: &[String], order: &[&str]) -> String {
    order
        .iter()
        .filter_map(|r| regions.iter().position(|x| x == r))
        .map(|i| origin_router::compact::INDEX_ALPHABET[i] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: usize, regions: &[&str]) -> Config {
        let mut text = String::from("[pools.web]\n");
        for i in 0..n {
            text.push_str(&format!(
                "[[pools.web.origins]]\nid = \"origin-{i:02}\"\nhost = \"o{i:02}.example.com\"\n"
            ));
        }
        let mut c = Config::from_toml(&text, "t.toml").unwrap();
        c.store.kvs_regions = regions.iter().map(|r| r.to_string()).collect();
        c
    }

    #[test]
    fn the_runtime_uses_nothing_the_runtime_lacks_and_the_check_can_fail() {
        assert_eq!(forbidden_in(RUNTIME), None);
        for bad in [
            "var x = 1n + BigInt(2);",
            "f(...args);",
            "const {a} = o;",
            "var m = new Map();",
            "x = a?.b;",
            "x = a ?? b;",
            "setTimeout(f, 1);",
        ] {
            assert!(forbidden_in(bad).is_some(), "{bad}");
        }
        assert_eq!(forbidden_in("// BigInt in a comment"), None);
    }

    #[test]
    fn a_large_config_fits_and_a_huge_one_is_refused_by_name() {
        let code = generate(
            &config(64, &["us-east-1", "eu-west-1", "ap-southeast-1"]),
            Options::default(),
        )
        .unwrap();
        eprintln!("64 origins: {} bytes", code.len());
        assert!(code.len() <= MAX_CODE_BYTES, "{} bytes", code.len());
        assert!(code.starts_with("import cf from 'cloudfront';\n"));
        let mut huge = config(64, &["us-east-1"]);
        for o in &mut huge.pools.get_mut("web").unwrap().origins {
            o.host = format!("{}.a-rather-long-origin-host-name.example.com", o.id);
        }
        let err = generate(&huge, Options::default()).unwrap_err();
        assert!(matches!(err, FunctionError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("above CloudFront's 10240-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn configs_the_function_cannot_serve_are_refused_with_the_reason() {
        assert!(matches!(
            generate(&config(2, &[]), Options::default()),
            Err(FunctionError::NoRegions)
        ));
        let mut ip = config(2, &["us-east-1"]);
        ip.pools.get_mut("web").unwrap().origins[1].host = "127.0.0.2".into();
        let err = generate(&ip, Options::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("pools.web.origins.origin-01: host `127.0.0.2` is an IP address"),
            "{err}"
        );
        assert!(generate(
            &ip,
            Options {
                allow_ip_origins: true
            }
        )
        .is_ok());
    }

    #[test]
    fn nearest_orders_are_the_rust_edges() {
        let c = config(2, &["us-east-1", "eu-west-1", "ap-southeast-1"]);
        let orders = nearest_orders(&c);
        // From eu-west-2: eu-west-1, then us-east-1, then ap-southeast-1.
        assert_eq!(orders.get("eu-west-2"), Some(&json!("BAC")), "{orders:?}");
        // An edge region whose order is the fallback's (by name) has no entry.
        assert_eq!(orders.get("ap-southeast-1"), None, "{orders:?}");
        assert_eq!(
            order_chars(&c.store.kvs_regions, &far_order(&c.store.kvs_regions)),
            "CBA"
        );
    }
}
