//! The one configuration file shared by probers and the edge.
//!
//! A TOML file describes pools and their origins, how requests map to pools,
//! the prober, the ranking, the edge and the store. [`Config::load`] parses
//! it with unknown fields rejected, then validates every field and reports
//! each problem with the file, the field path and what is wrong, e.g.
//! `origin-router.toml: pools.web.origins[2].port: 70000 is not a valid port`.
//!
//! One module per section, each with its schema, its defaults (declared
//! once, on the field's `Default`) and its checks. This module is a leaf: it
//! knows no engine. Each engine builds its own settings from its own section
//! (`ranking::Settings::new`, `probe::ProbeSettings::from`), so a change to
//! one engine never touches the config. `examples/origin-router.toml` shows
//! every default with comments.

mod edge;
mod pool;
mod prober;
mod ranking;
mod routing;
mod store;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use edge::EdgeConfig;
pub use pool::{
    HealthMethod, HostHeaderPolicy, OriginConfig, PoolConfig, Protocol, StatusRange, MAX_ORIGINS,
};
pub use prober::ProberConfig;
pub use ranking::RankingConfig;
pub use routing::RoutingConfig;
pub use store::StoreConfig;
pub use validate::{is_host_name, is_name};

use validate::Validator;

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
}
