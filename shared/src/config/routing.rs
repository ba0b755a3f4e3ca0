//! How requests map to pools. The lookup itself is the edge's
//! (`edge::routing`); this is the schema and its checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::Validator;
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
    /// Viewer Host header (lower case, no port) to pool. Default: empty.
    pub hosts: BTreeMap<String, String>,
    /// CloudFront distribution id to pool. Default: empty.
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
