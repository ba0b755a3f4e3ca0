//! How requests map to pools. The lookup itself is the edge's
//! (`edge::routing`); this is the schema and its checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{is_host_name, Validator};
use super::PoolConfig;

/// How requests map to pools: by Host header first, then by CloudFront
/// distribution id, then the default pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Pool for requests that match nothing else. Default: none (such
    /// requests pass through unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<String>,
    /// Viewer Host header to pool. Default: empty. Keys are host names in
    /// lower case without a port: the edge lower-cases the viewer's Host and
    /// strips its port before the lookup, so any other key never matches.
    pub hosts: BTreeMap<String, String>,
    /// CloudFront distribution id (`E2QWRUHAPOMQZL`: 1-32 of A-Z 0-9) to
    /// pool. Default: empty.
    pub distributions: BTreeMap<String, String>,
}

impl RoutingConfig {
    pub(crate) fn validate(&self, v: &mut Validator, pools: &BTreeMap<String, PoolConfig>) {
        let known_pool = |p: &String| pools.contains_key(p);
        if let Some(p) = &self.default_pool {
            if !known_pool(p) {
                v.fail(
                    "routing.default_pool",
                    format!("`{p}` is not a configured pool"),
                );
            }
        }
        for key in self.hosts.keys() {
            let at = format!("routing.hosts.\"{key}\"");
            let problem = if key.bytes().any(|b| b.is_ascii_uppercase()) {
                Some("is not lower case: the viewer's Host is lower-cased before the lookup, so this key never matches")
            } else if key.contains(':') {
                Some("has a port: the viewer's port is stripped before the lookup, so this key never matches")
            } else if !is_host_name(key) {
                Some("is not a host name")
            } else {
                None
            };
            if let Some(problem) = problem {
                v.fail(at, problem);
            }
        }
        for key in self.distributions.keys() {
            let ok = (1..=32).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !ok {
                v.fail(
                    format!("routing.distributions.\"{key}\""),
                    "is not a CloudFront distribution id (1-32 of A-Z 0-9, e.g. E2QWRUHAPOMQZL)",
                );
            }
        }
        for (kind, map) in [
            ("hosts", &self.hosts),
            ("distributions", &self.distributions),
        ] {
            for (key, pool) in map {
                if !known_pool(pool) {
                    v.fail(
                        format!("routing.{kind}.\"{key}\""),
                        format!("`{pool}` is not a configured pool"),
                    );
                }
            }
        }
    }
}
