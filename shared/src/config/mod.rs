//! The one configuration file shared by probers and the edge.
//!
//! A TOML file describes pools and their origins, how requests map to pools,
//! the prober, the ranking, the edge and the store. [`Config::load`] parses
//! it with unknown fields rejected, then validates every field and reports
//! each problem with the file, the field path and what is wrong, e.g.
//! `origin-router.toml: pools.web.origins[2].port: 70000 is not a valid port`.
//!
//! Every duration has a documented range (on its field and in
//! `examples/origin-router.toml`), so no value that passes can overflow
//! the arithmetic of the engines (`Instant + race_watchdog`,
//! `interval * 3`). Two fields that contradict each other are reported
//! with both names, e.g. `edge.race_watchdog: 500ms is below
//! edge.race_attempt_timeout (800ms)`; contradictions between sections are
//! checked by [`Config::validate`] itself.
//!
//! [`Config::validate`] accepts every configuration the probers and local
//! tools can run, loopback IP origins included. [`Config::check_for_cloudfront`]
//! adds the rules that only matter for the edge package (a DynamoDB table
//! to read rankings from; an origin's host must be a DNS name).
//!
//! One module per section, each with its schema, its defaults (declared
//! once, on the field's `Default`) and its checks. This module is a leaf: it
//! knows no engine. Each engine builds its own settings from its own section
//! (`ranking::Settings::new`, `probe::ProbeSettings::from`), so a change to
//! one engine never touches the config. `examples/origin-router.toml` shows
//! every default with comments.

mod cloudfront;
mod edge;
mod events;
mod operations;
mod pool;
mod prober;
mod ranking;
mod routing;
mod steering;
mod store;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use cloudfront::{
    CloudFrontOriginConfig, CONNECTION_ATTEMPTS_RANGE, CONNECTION_TIMEOUT_RANGE,
    FAILOVER_STATUS_ALLOWED, READ_TIMEOUT_RANGE,
};
pub use edge::EdgeConfig;
pub use events::EventsConfig;
pub use operations::OperationsConfig;
pub use pool::{
    is_cloudfront_port, HealthMethod, HostHeaderPolicy, OriginConfig, PoolConfig, Protocol,
    StatusRange, MAX_CA_FILE, MAX_HEALTH_PATH, MAX_LATENCY_MS, MAX_ORIGINS, MAX_SCORE_MS,
    MAX_WEIGHT, MIN_WEIGHT,
};
pub use prober::ProberConfig;
pub(crate) use prober::READERS_SKEW;
pub use ranking::RankingConfig;
pub use routing::RoutingConfig;
pub use steering::{
    LatencyMode, OutlierConfig, SteeringConfig, SteeringKey, SteeringPolicy, MAX_BAND_ABSOLUTE,
    MAX_BAND_RELATIVE, MAX_CONSECUTIVE_5XX,
};
pub use store::StoreConfig;
pub use validate::{is_host_name, is_name};

use pool::CLOUDFRONT_PORTS;
use validate::{fmt_duration, Validator};

/// Why the edge package needs `store.dynamodb_table` (the problem
/// [`Config::check_for_cloudfront`] reports without it).
pub const TABLE_REQUIRED: &str =
    "is required for the edge in AWS: without a table it reads an empty \
     local embedded store and races every request live";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Named pools of interchangeable origins. At least one is required.
    pub pools: BTreeMap<String, PoolConfig>,
    /// How an incoming request is mapped to a pool.
    pub routing: RoutingConfig,
    /// The regional prober worker.
    pub prober: ProberConfig,
    /// How samples become a ranking.
    pub ranking: RankingConfig,
    /// The edge handler.
    pub edge: EdgeConfig,
    /// Where rankings and coordination state live.
    pub store: StoreConfig,
    /// Limits on operator drains and overrides.
    pub operations: OperationsConfig,
    /// Where state-change events go besides the log.
    pub events: EventsConfig,
    /// Static name-to-address overrides used by probes and races before the
    /// system resolver, like curl's `--resolve`. Default: empty.
    pub resolve: BTreeMap<String, IpAddr>,
}

/// One problem found in a configuration: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Parse { file: String, problem: Problem },
    #[error("{file}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join(&format!("\n{file}: ")))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_toml(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let parse_error = |path: String, message: String| ConfigError::Parse {
            file: file.to_string(),
            problem: Problem { path, message },
        };
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| parse_error(String::new(), e.to_string().trim().to_string()))?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                // toml appends "in `key`" context; the path already says it.
                let message = e.inner().to_string();
                let message = message
                    .split("\nin `")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                parse_error(e.path().to_string(), message)
            })?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            file: file.to_string(),
            problems,
        })
    }

    /// Every origin of every pool, pool by pool.
    pub fn origins(&self) -> impl Iterator<Item = &OriginConfig> {
        self.pools.values().flat_map(|p| p.origins.iter())
    }

    /// Renders the effective configuration (defaults filled in) as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every field; returns all problems found.
    ///
    /// Origins may be IP addresses here (local tests, the offline demo);
    /// what CloudFront alone refuses is [`Config::check_for_cloudfront`]'s.
    pub fn validate(self) -> Result<Config, Vec<Problem>> {
        let mut v = Validator::default();
        if self.pools.is_empty() {
            v.fail("pools", "at least one pool is required");
        }
        for (name, pool) in &self.pools {
            let at = format!("pools.{name}");
            v.name(&at, name);
            pool.validate(&mut v, &at);
        }
        self.routing.validate(&mut v, &self.pools);
        self.prober.validate(&mut v);
        self.ranking.validate(&mut v);
        self.edge.validate(&mut v);
        self.store.validate(&mut v);
        self.operations.validate(&mut v);
        self.events.validate(&mut v);
        self.prober.validate_kvs_heartbeat(
            &mut v,
            self.store.kvs_arn.as_deref(),
            self.edge.ranking_max_age,
        );
        self.validate_across_sections(&mut v);
        for name in self.resolve.keys() {
            if !is_host_name(name) {
                v.fail(format!("resolve.\"{name}\""), "is not a host name");
            }
        }
        if v.problems.is_empty() {
            Ok(self)
        } else {
            Err(v.problems)
        }
    }

    /// Contradictions between sections, checked only when `prober.interval`
    /// is in its range (else that is the one message). The multiple is
    /// saturating all the same: no value may panic here.
    fn validate_across_sections(&self, v: &mut Validator) {
        let interval = self.prober.interval;
        if !(prober::INTERVAL_MIN..=prober::INTERVAL_MAX).contains(&interval) {
            return;
        }
        let two_rounds = interval.saturating_mul(2);
        for (path, d) in [
            ("ranking.window", self.ranking.window),
            ("edge.ranking_max_age", self.edge.ranking_max_age),
        ] {
            if d < two_rounds {
                v.fail(
                    path,
                    format!(
                        "{} is below 2 × prober.interval ({}): it must span two probe rounds",
                        fmt_duration(d),
                        fmt_duration(interval)
                    ),
                );
            }
        }
    }

    /// The rules of the edge package that [`Config::validate`] leaves out
    /// because local tests and the offline demo break them on purpose:
    ///
    /// - `store.dynamodb_table` is set. Without it the edge opens the
    ///   embedded store, which in a Lambda container is an empty local
    ///   folder: every request would be raced live, the very cost this
    ///   project removes, and nothing would say why.
    /// - Every origin's host is a DNS name (CloudFront does not accept an
    ///   IP address as an origin domain name) of at most 253 characters.
    ///
    /// Meant for a validated config, before it is bundled into the edge
    /// package (`edge --check-config`, run by `deploy/package-edge.sh`).
    /// The port rule (HTTP 80, 443 or 1024-65535; HTTPS 443 or
    /// 1024-65535) is [`Config::validate`]'s and is checked here again, for
    /// configs built in code.
    pub fn check_for_cloudfront(&self) -> Result<(), Vec<Problem>> {
        let mut v = Validator::default();
        if self.store.dynamodb_table.is_none() {
            v.fail("store.dynamodb_table", TABLE_REQUIRED);
        }
        for (name, pool) in &self.pools {
            for (i, o) in pool.origins.iter().enumerate() {
                let at = format!("pools.{name}.origins[{i}].host");
                if o.host.parse::<IpAddr>().is_ok() {
                    v.fail(
                        at,
                        format!(
                            "`{}` is an IP address; CloudFront custom origins need a DNS domain name",
                            o.host
                        ),
                    );
                } else if !is_host_name(&o.host) {
                    v.fail(
                        at,
                        format!(
                            "`{}` is not a DNS domain name of at most 253 characters, as CloudFront custom origins need",
                            o.host
                        ),
                    );
                }
                if let Some(port) = o.port {
                    if !is_cloudfront_port(o.protocol, port) {
                        v.fail(
                            format!("pools.{name}.origins[{i}].port"),
                            format!(
                                "{port} is not a port CloudFront connects to ({CLOUDFRONT_PORTS})"
                            ),
                        );
                    }
                }
            }
        }
        if v.problems.is_empty() {
            Ok(())
        } else {
            Err(v.problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = r#"
        [pools.web]
        origins = [
            { id = "a", host = "a.example.net" },
            { id = "b", host = "127.0.0.1", port = 8080, protocol = "http" },
        ]
    "#;

    fn err(text: &str) -> String {
        Config::from_toml(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(MINIMAL, "test.toml").unwrap();
        let web = &c.pools["web"];
        assert_eq!(web.default_origin_id(), "a");
        assert_eq!(web.origins[0].port(), 443);
        assert_eq!(web.origins[0].method, HealthMethod::Head);
        assert_eq!(
            web.origins[0].accept_status,
            StatusRange {
                low: 200,
                high: 399
            }
        );
        assert_eq!(web.origins[1].port(), 8080);
        assert_eq!(c.edge.race_attempt_timeout, Duration::from_millis(800));
        assert_eq!(c.edge.race_watchdog, Duration::from_millis(900));
        assert_eq!((c.prober.rise, c.prober.fall), (2, 3));
    }

    #[test]
    fn bad_port_names_file_path_and_problem() {
        let text = r#"
            [pools.web]
            origins = [
                { id = "a", host = "a.example.net" },
                { id = "b", host = "b.example.net" },
                { id = "c", host = "c.example.net", port = 70000 },
            ]
        "#;
        assert_eq!(
            err(text),
            "test.toml: pools.web.origins[2].port: 70000 is not a valid port"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let text = format!("{MINIMAL}\n[prober]\nintervall = \"1s\"\n");
        let e = err(&text);
        assert!(
            e.starts_with(
                "test.toml: prober.intervall: unknown field `intervall`, expected one of"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let text = MINIMAL.replace("port = 8080", "port = 8080, colour = \"red\"");
        let e = err(&text);
        assert!(
            e.contains("pools.web.origins[1]") && e.contains("`colour`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_syntax_are_reported() {
        let e = err(&MINIMAL.replace("port = 8080", "port = \"8080\""));
        assert!(e.contains("pools.web.origins[1].port"), "{e}");
        let e = err("[pools.web\n");
        assert!(e.starts_with("test.toml: "), "{e}");
        let e = err(&format!("{MINIMAL}\n[edge]\ncache_ttl = \"soon\"\n"));
        assert!(e.contains("edge.cache_ttl"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = r#"
            [routing]
            default_pool = "nope"
            [pools.web]
            default_origin = "z"
            origins = [
                { id = "a", host = "bad host", weight = 0.0 },
                { id = "a", host = "x.test", method = "HEAD", body_contains = "ok" },
            ]
            [prober]
            rise = 0
            jitter = "5s"
        "#;
        let e = err(text);
        for expected in [
            "routing.default_pool: `nope` is not a configured pool",
            "pools.web.default_origin: `z` is not an origin of this pool",
            "pools.web.origins[0].host",
            "pools.web.origins[0].weight",
            "pools.web.origins[1].id: `a` is used twice",
            "prober.rise: 0 is not in 1..=100",
            "pools.web.origins[1].body_contains: needs method = \"GET\"",
            "prober.jitter",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }
        // accept_status is a parse error, reported before validation.
        let e = err(&MINIMAL.replace("port = 8080", "port = 8080, accept_status = \"500-200\""));
        assert!(
            e.contains("accept_status") && e.contains("500 is above 200"),
            "{e}"
        );
    }

    #[test]
    fn effective_config_renders_and_reparses() {
        let c = Config::from_toml(MINIMAL, "test.toml").unwrap();
        let again = Config::from_toml(&c.to_toml(), "rendered").unwrap();
        assert_eq!(c, again);
    }

    /// A valid pool whose only origin is a DNS name (CloudFront-ready).
    const DNS_POOL: &str = "[pools.web]\norigins = [{ id = \"a\", host = \"a.example.net\" }]\n";

    /// A pool whose one origin carries `fields` too.
    fn origin_with(fields: &str) -> String {
        format!("[pools.web]\norigins = [{{ id = \"a\", host = \"a.example.net\", {fields} }}]\n")
    }

    fn section(extra: &str) -> String {
        format!("{DNS_POOL}{extra}\n")
    }

    /// `text` must fail, with every one of `expected` in the error.
    fn assert_refused(text: &str, expected: &[&str]) {
        let e = match Config::from_toml(text, "test.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        for want in expected {
            assert!(e.contains(want), "missing `{want}` in:\n{e}\nfor:\n{text}");
        }
    }

    #[test]
    fn every_default_passes() {
        let c = Config::from_toml(DNS_POOL, "test.toml").unwrap();
        assert_eq!(c.prober, ProberConfig::default());
        assert_eq!(c.ranking, RankingConfig::default());
        assert_eq!(c.edge, EdgeConfig::default());
        assert_eq!(c.store, StoreConfig::default());
        // The defaults run locally (the embedded store); the edge package
        // needs the one thing no default can give, a table.
        assert_eq!(c.check_for_cloudfront(), Err(vec![table_required()]));
        with_table(&c).check_for_cloudfront().unwrap();
        let mut c = Config::default();
        c.pools.insert(
            "web".into(),
            PoolConfig {
                default_origin: None,
                origins: vec![OriginConfig::http("a", "a.example.net", 8080)],
                ..Default::default()
            },
        );
        let c = c.validate().unwrap();
        with_table(&c).check_for_cloudfront().unwrap();
        // Rendered with every default, it reads back the same.
        assert_eq!(Config::from_toml(&c.to_toml(), "rendered").unwrap(), c);
    }

    #[test]
    fn the_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/origin-router.toml"
        ));
        let c = Config::load(path).unwrap();
        // It runs locally as it is; bundled for the edge, it needs its
        // table set (the line is there, commented).
        assert_eq!(c.check_for_cloudfront(), Err(vec![table_required()]));
        with_table(&c).check_for_cloudfront().unwrap();
    }

    fn table_required() -> Problem {
        Problem {
            path: "store.dynamodb_table".into(),
            message: TABLE_REQUIRED.into(),
        }
    }

    fn with_table(c: &Config) -> Config {
        let mut c = c.clone();
        c.store.dynamodb_table = Some("origin-router-rankings".into());
        c
    }

    /// Without a table the edge would open the embedded store, an empty
    /// folder in a Lambda container, and race every request: packaging
    /// refuses it, naming the field, beside any other problem.
    #[test]
    fn cloudfront_needs_a_table() {
        let c = Config::from_toml(DNS_POOL, "test.toml").unwrap();
        let problems = c.check_for_cloudfront().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(
            text.starts_with("store.dynamodb_table: is required for the edge in AWS"),
            "{text}"
        );
        let c = Config::from_toml(MINIMAL, "test.toml").unwrap();
        let problems: Vec<String> = c
            .check_for_cloudfront()
            .unwrap_err()
            .iter()
            .map(|p| p.path.clone())
            .collect();
        assert_eq!(
            problems,
            ["store.dynamodb_table", "pools.web.origins[1].host"]
        );
        let c = Config::from_toml(
            &format!("{DNS_POOL}[store]\ndynamodb_table = \"rankings\"\n"),
            "test.toml",
        )
        .unwrap();
        c.check_for_cloudfront().unwrap();
    }

    #[test]
    fn bad_configs_are_refused_naming_their_fields() {
        let cases: &[(String, &[&str])] = &[
            // The issue's cases.
            (
                section("[edge]\nrace_attempt_timeout = \"500000000000years\""),
                &["edge.race_attempt_timeout: 500000000000years is not within [1ms, 25s]"],
            ),
            (
                section("[prober]\ninterval = \"100000000000years\""),
                &["prober.interval: 100000000000years is not within [1s, 5m]"],
            ),
            (origin_with("weight = 1e-12"), &["pools.web.origins[0].weight: 0.000000000001 is not in [0.01, 1000]"]),
            (origin_with("weight = 0.001"), &["pools.web.origins[0].weight"]),
            (origin_with("weight = 1001.0"), &["pools.web.origins[0].weight"]),
            (origin_with("weight = nan"), &["pools.web.origins[0].weight"]),
            (
                origin_with("tls_server_name = \"bad name!\""),
                &["pools.web.origins[0].tls_server_name: `bad name!` is not a TLS server name"],
            ),
            (origin_with("tls_server_name = \"\""), &["pools.web.origins[0].tls_server_name"]),
            (origin_with("tls_server_name = \"-a.example.net\""), &["pools.web.origins[0].tls_server_name"]),
            (origin_with("tls_server_name = \"a..example.net\""), &["pools.web.origins[0].tls_server_name"]),
            (
                origin_with("health_path = \"/health\\u0007\""),
                &["pools.web.origins[0].health_path: `/health\\u{7}` contains a control character"],
            ),
            (origin_with("health_path = \"/a\\nb\""), &["pools.web.origins[0].health_path", "control character"]),
            (origin_with("health_path = \"/a b\""), &["pools.web.origins[0].health_path", "whitespace"]),
            (origin_with("health_path = \"/a#b\""), &["pools.web.origins[0].health_path", "# fragment"]),
            (origin_with("health_path = \"health\""), &["pools.web.origins[0].health_path", "must start with /"]),
            (origin_with("health_path = \"/a<b\""), &["pools.web.origins[0].health_path", "HTTP request target"]),
            (
                origin_with(&format!("health_path = \"/{}\"", "a".repeat(1024))),
                &["pools.web.origins[0].health_path", "1025 bytes, above 1024"],
            ),
            (
                section("[routing]\nhosts = { \"WWW.example.com\" = \"web\" }"),
                &["routing.hosts.\"WWW.example.com\": is not lower case"],
            ),
            (
                section("[routing]\nhosts = { \"www.example.com:8080\" = \"web\" }"),
                &["routing.hosts.\"www.example.com:8080\": has a port"],
            ),
            (
                section("[routing]\nhosts = { \"www example\" = \"web\" }"),
                &["routing.hosts.\"www example\": is not a host name"],
            ),
            (
                section("[routing]\ndistributions = { \"e2qwruhapomqzl\" = \"web\" }"),
                &["routing.distributions.\"e2qwruhapomqzl\": is not a CloudFront distribution id"],
            ),
            (
                section("[edge]\nrace_watchdog = \"500ms\""),
                &["edge.race_watchdog: 500ms is below edge.race_attempt_timeout (800ms)"],
            ),
            (
                section("[edge]\ntable_timeout = \"10m\""),
                &["edge.table_timeout: 10m is not within [1ms, 5s]"],
            ),
            (
                section("[edge]\ntable_timeout = \"900ms\""),
                &["edge.table_timeout: 900ms is not below edge.race_watchdog (900ms)"],
            ),
            (
                section("[edge]\ncache_ttl = \"1m\""),
                &["edge.cache_ttl: 1m is above edge.ranking_max_age (30s)"],
            ),
            (
                section("[edge]\nmax_stale = \"100ms\""),
                &["edge.max_stale: 100ms is below edge.cache_ttl (500ms)"],
            ),
            (
                section("[ranking]\nwindow = \"3s\""),
                &["ranking.window: 3s is below 2 × prober.interval (2s)"],
            ),
            (
                section("[edge]\nranking_max_age = \"5s\"\ncache_ttl = \"1s\"\n[prober]\ninterval = \"3s\""),
                &["edge.ranking_max_age: 5s is below 2 × prober.interval (3s)"],
            ),
            (
                section("[ranking]\nhalf_life = \"2m\""),
                &["ranking.half_life: 2m is above ranking.window (1m)"],
            ),
            (
                section("[prober]\nkvs_heartbeat = \"500ms\""),
                &["prober.kvs_heartbeat: 500ms is not within [1s, 5m]"],
            ),
            (
                section("[prober]\nkvs_heartbeat = \"15s\"\n[store]\nkvs_arn = \"arn:aws:cloudfront::123456789012:key-value-store/abc\""),
                &["prober.kvs_heartbeat: 15s is not below half of edge.ranking_max_age (30s)"],
            ),
            (
                section("[prober]\ninterval = \"1500ms\""),
                &["prober.interval: 1s 500ms is not a whole number of seconds"],
            ),
            (
                section("[prober]\nlease_ttl = \"2s\""),
                &["prober.lease_ttl: 2s is not above prober.interval (2s)"],
            ),
            (
                section("[prober]\nfast_interval = \"2s\""),
                &["prober.fast_interval: 2s is not below prober.interval (2s)"],
            ),
            (section("[prober]\nlease_ttl = \"11m\""), &["prober.lease_ttl: 11m is not within [1s, 10m]"]),
            (section("[prober]\nshutdown_grace = \"6m\""), &["prober.shutdown_grace"]),
            (section("[prober]\nconnect_timeout = \"61s\""), &["prober.connect_timeout"]),
            (section("[prober]\nresponse_timeout = \"0s\""), &["prober.response_timeout"]),
            (section("[store]\nitem_ttl = \"2years\""), &["store.item_ttl: 2years is not within [1m, 1year]"]),
            // CloudFront's port rule.
            (
                origin_with("port = 8"),
                &["pools.web.origins[0].port: 8 is not a port CloudFront connects to (custom origins: HTTP 80, 443 or 1024-65535; HTTPS 443 or 1024-65535)"],
            ),
            (origin_with("port = 80"), &["pools.web.origins[0].port: 80 is not a port CloudFront"]),
            (origin_with("port = 1023, protocol = \"http\""), &["pools.web.origins[0].port: 1023"]),
        ];
        for (text, expected) in cases {
            assert_refused(text, expected);
        }
        // The edges of the ranges pass.
        for ok in [
            origin_with("weight = 0.01"),
            origin_with("weight = 1000.0"),
            origin_with("port = 80, protocol = \"http\""),
            origin_with("port = 443, protocol = \"http\""),
            origin_with("port = 1024"),
            origin_with("tls_server_name = \"origin.example.com\""),
            origin_with("tls_server_name = \"192.0.2.1\""),
            origin_with("tls_server_name = \"2001:db8::1\""),
            origin_with("health_path = \"/health?probe=1&x=%20\""),
            section("[routing]\nhosts = { \"www.example.com\" = \"web\" }\ndistributions = { \"E2QWRUHAPOMQZL\" = \"web\" }"),
            section("[edge]\nrace_watchdog = \"800ms\"\ntable_timeout = \"799ms\""),
            section("[edge]\ncache_ttl = \"30s\""),
            // The heartbeat is judged against the readers only when the
            // KeyValueStore is written.
            section("[prober]\nkvs_heartbeat = \"15s\""),
            section("[prober]\nkvs_heartbeat = \"14s\"\n[store]\nkvs_arn = \"arn:aws:cloudfront::123456789012:key-value-store/abc\""),
            section("[ranking]\nwindow = \"4s\"\nhalf_life = \"4s\""),
        ] {
            if let Err(e) = Config::from_toml(&ok, "test.toml") {
                panic!("refused: {e}\n{ok}");
            }
        }
    }

    #[test]
    fn a_huge_value_in_any_duration_is_an_error_never_a_panic() {
        let fields = [
            ("prober", "interval"),
            ("prober", "connect_timeout"),
            ("prober", "response_timeout"),
            ("prober", "fast_interval"),
            ("prober", "jitter"),
            ("prober", "lease_ttl"),
            ("prober", "shutdown_grace"),
            ("prober", "kvs_heartbeat"),
            ("ranking", "window"),
            ("ranking", "half_life"),
            ("ranking", "switch_margin_absolute"),
            ("edge", "cache_ttl"),
            ("edge", "max_stale"),
            ("edge", "ranking_max_age"),
            ("edge", "table_timeout"),
            ("edge", "race_attempt_timeout"),
            ("edge", "race_watchdog"),
            ("edge", "race_cache_ttl"),
            ("store", "item_ttl"),
        ];
        for huge in ["500000000000years", "584942417355years"] {
            for (sec, key) in fields {
                let text = section(&format!("[{sec}]\n{key} = \"{huge}\""));
                match Config::from_toml(&text, "test.toml") {
                    Ok(_) => panic!("accepted {sec}.{key} = {huge}"),
                    Err(e) => {
                        let e = e.to_string();
                        // One wrong value, one message, naming its field.
                        assert!(
                            e.starts_with(&format!("test.toml: {sec}.{key}: "))
                                && !e.contains('\n'),
                            "{e}"
                        );
                    }
                }
            }
        }
        // Every duration at its most at once: still valid, and what the
        // engines compute from it does not overflow.
        let text = section(
            "[prober]\ninterval = \"5m\"\nconnect_timeout = \"60s\"\nresponse_timeout = \"60s\"\nfast_interval = \"1m\"\njitter = \"1m\"\nlease_ttl = \"10m\"\nshutdown_grace = \"5m\"\n\
             [ranking]\nwindow = \"1day\"\nhalf_life = \"1h\"\nswitch_margin_absolute = \"10s\"\n\
             [edge]\ncache_ttl = \"5m\"\nmax_stale = \"1h\"\nranking_max_age = \"1h\"\ntable_timeout = \"5s\"\nrace_attempt_timeout = \"25s\"\nrace_watchdog = \"25s\"\nrace_cache_ttl = \"5m\"\n\
             [store]\nitem_ttl = \"1year\"",
        );
        let c = Config::from_toml(&text, "test.toml").unwrap();
        assert_eq!(c.prober.max_silence(), Duration::from_secs(17 * 60));
        let _ = std::time::Instant::now() + c.edge.race_watchdog + c.edge.table_timeout * 4;
        // max_silence never panics, validated or not.
        let p = ProberConfig {
            interval: Duration::MAX,
            ..ProberConfig::default()
        };
        assert_eq!(p.max_silence(), Duration::MAX);
    }

    #[test]
    fn the_weight_range_keeps_every_score_within_the_document() {
        // The compile-time check in pool.rs, over the extremes a validated
        // config and a valid document allow.
        for weight in [MIN_WEIGHT, 1.0, MAX_WEIGHT] {
            for latency_ms in [0.0, 1.0, MAX_LATENCY_MS] {
                let score = latency_ms / weight;
                assert!(
                    (0.0..=MAX_SCORE_MS).contains(&score),
                    "{latency_ms} / {weight}"
                );
            }
        }
    }

    #[test]
    fn ca_files_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            path
        };
        let with_ca = |path: &Path| origin_with(&format!("ca_file = '{}'", path.display()));
        let good = write(
            "good.pem",
            origin_router_tests::TlsIdentity::generate(&["a.example.net"])
                .ca_pem()
                .as_bytes(),
        );
        Config::from_toml(&with_ca(&good), "test.toml").unwrap();
        let cases = [
            (
                write("text.pem", b"this is not a certificate\n"),
                "holds no PEM certificate",
            ),
            (write("empty.pem", b""), "holds no PEM certificate"),
            (
                write(
                    "key.pem",
                    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
                "holds no PEM certificate",
            ),
            (
                write(
                    "garbage.pem",
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "certificate 1 does not parse",
            ),
            (
                write("big.pem", "#".repeat(MAX_CA_FILE as usize + 1).as_bytes()),
                "is 1048577 bytes, above the 1 MiB limit",
            ),
            (dir.path().join("missing.pem"), "cannot read"),
            (
                std::path::PathBuf::from("/dev/zero"),
                "is not a regular file",
            ),
            (
                {
                    let fifo = dir.path().join("fifo.pem");
                    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
                    fifo
                },
                "is not a regular file",
            ),
        ];
        for (path, problem) in cases {
            let expected = format!(
                "pools.web.origins[0].ca_file: {}: {problem}",
                path.display()
            );
            assert_refused(&with_ca(&path), &[&expected]);
        }
    }

    #[test]
    fn cloudfront_refuses_ip_origins_that_validate_accepts() {
        let c = with_table(&Config::from_toml(MINIMAL, "test.toml").unwrap());
        let problems = c.check_for_cloudfront().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            "pools.web.origins[1].host: `127.0.0.1` is an IP address; CloudFront custom origins need a DNS domain name"
        );
        let mut c = with_table(&Config::from_toml(DNS_POOL, "test.toml").unwrap());
        c.check_for_cloudfront().unwrap();
        // A config built in code, never validated: the port rule too.
        c.pools.get_mut("web").unwrap().origins[0].port = Some(8);
        c.pools.get_mut("web").unwrap().origins[0].host = "::1".into();
        let problems: Vec<String> = c
            .check_for_cloudfront()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems[0].starts_with("pools.web.origins[0].host: `::1` is an IP address"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("pools.web.origins[0].port: 8 is not a port CloudFront"),
            "{problems:?}"
        );
    }
}
