//! Where rankings and coordination state live.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Validator;

/// Largest `item_ttl`: `1year` (365.25 days, humantime's year).
const ITEM_TTL_MAX: Duration = Duration::from_secs(31_557_600);

/// Where rankings and coordination state live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the embedded store, used when no table is configured.
    /// It must belong to the user running the prober and edge and be
    /// writable by nobody else (the store refuses it otherwise). Default:
    /// `origin-router` in this user's state directory (`$XDG_STATE_HOME`,
    /// else `~/.local/state`), or `origin-router-UID` in the system temp
    /// directory when there is no home: never a name another local user
    /// could create first.
    pub embedded_path: PathBuf,
    /// DynamoDB table name. Default: none (embedded store). Required for
    /// the edge in AWS ([`super::Config::check_for_cloudfront`]; the edge
    /// binary refuses to start without it as a Lambda function): there the
    /// embedded store is an empty folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamodb_table: Option<String>,
    /// Endpoint of a DynamoDB API other than AWS's (a local server such as
    /// DynamoDB Local or moto), e.g. `http://127.0.0.1:8000`. Default: none
    /// (the standard AWS configuration, which also reads
    /// `AWS_ENDPOINT_URL_DYNAMODB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamodb_endpoint: Option<String>,
    /// Regions that hold a replica of the table. Probers and edges use the
    /// replica nearest their own region; Lambda@Edge runs in regions that
    /// may have none. Default: empty (the replica in `AWS_REGION`).
    pub table_regions: Vec<String>,
    /// Redis URL for worker coordination within a region. Default: none
    /// (a single worker is its own leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Items expire (DynamoDB TTL) this long after they were written.
    /// Default: 1day; range [1m, 1year] (a year as humantime counts it,
    /// 365.25 days).
    #[serde(with = "humantime_serde")]
    pub item_ttl: Duration,
}

fn default_embedded_path() -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return state.join("origin-router");
    }
    if let Some(home) = std::env::var_os("HOME").and_then(absolute) {
        return home.join(".local/state/origin-router");
    }
    std::env::temp_dir().join(format!("origin-router-{}", nix::unistd::geteuid().as_raw()))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            embedded_path: default_embedded_path(),
            dynamodb_table: None,
            dynamodb_endpoint: None,
            table_regions: Vec::new(),
            redis_url: None,
            item_ttl: Duration::from_secs(86_400),
        }
    }
}

impl StoreConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        if let Some(table) = &self.dynamodb_table {
            let ok = (3..=255).contains(&table.len())
                && table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                v.fail(
                    "store.dynamodb_table",
                    format!("`{table}` is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"),
                );
            }
        }
        if let Some(url) = &self.dynamodb_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                v.fail(
                    "store.dynamodb_endpoint",
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
            if self.dynamodb_table.is_none() {
                v.fail("store.dynamodb_endpoint", "needs store.dynamodb_table");
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                v.fail(
                    "store.redis_url",
                    format!("`{url}` is not a Redis URL (redis://host:port or rediss://...)"),
                );
            }
        }
        for (i, r) in self.table_regions.iter().enumerate() {
            v.name(&format!("store.table_regions[{i}]"), r);
        }
        v.duration(
            "store.item_ttl",
            self.item_ttl,
            Duration::from_secs(60),
            ITEM_TTL_MAX,
        );
    }
}
