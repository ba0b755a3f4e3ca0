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
    /// ARN of a CloudFront KeyValueStore
    /// (`arn:aws:cloudfront::ACCOUNT:key-value-store/ID`). When set, each
    /// region's leader also writes a compact ranking per pool to it, for
    /// the CloudFront Function edge. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvs_arn: Option<String>,
    /// Endpoint of a KeyValueStore API other than AWS's (a local test
    /// server), e.g. `http://127.0.0.1:9000`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvs_endpoint: Option<String>,
    /// Regions whose probers publish to the KeyValueStore: the generated
    /// CloudFront Function reads only these, nearest first. Required to
    /// generate the function; default: empty.
    pub kvs_regions: Vec<String>,
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
            kvs_arn: None,
            kvs_endpoint: None,
            kvs_regions: Vec::new(),
            item_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Whether `arn` has the shape of a KeyValueStore ARN: partition `aws`
/// (or another partition name), service `cloudfront`, no region, a
/// 12-digit account and `key-value-store/ID`.
pub fn is_kvs_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let id_ok = |id: &str| {
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    scheme == "arn"
        && !partition.is_empty()
        && service == "cloudfront"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("key-value-store/").is_some_and(id_ok)
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
        if let Some(arn) = &self.kvs_arn {
            if !is_kvs_arn(arn) {
                v.fail(
                    "store.kvs_arn",
                    format!("`{arn}` is not a KeyValueStore ARN (arn:aws:cloudfront::ACCOUNT:key-value-store/ID)"),
                );
            }
        }
        if let Some(url) = &self.kvs_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                v.fail(
                    "store.kvs_endpoint",
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
            if self.kvs_arn.is_none() {
                v.fail("store.kvs_endpoint", "needs store.kvs_arn");
            }
        }
        for (i, r) in self.kvs_regions.iter().enumerate() {
            v.name(&format!("store.kvs_regions[{i}]"), r);
            if self.kvs_regions[..i].contains(r) {
                v.fail(
                    format!("store.kvs_regions[{i}]"),
                    format!("`{r}` is listed twice"),
                );
            }
        }
        v.duration(
            "store.item_ttl",
            self.item_ttl,
            Duration::from_secs(60),
            ITEM_TTL_MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvs_arns() {
        assert!(is_kvs_arn(
            "arn:aws:cloudfront::123456789012:key-value-store/a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
        ));
        for bad in [
            "",
            "arn:aws:cloudfront::123456789012:key-value-store/",
            "arn:aws:cloudfront:us-east-1:123456789012:key-value-store/abc",
            "arn:aws:s3::123456789012:key-value-store/abc",
            "arn:aws:cloudfront::12345:key-value-store/abc",
            "arn:aws:cloudfront::123456789012:function/abc",
            "arn:aws:cloudfront::123456789012:key-value-store/a/b",
        ] {
            assert!(!is_kvs_arn(bad), "{bad}");
        }
        let mut v = Validator::default();
        StoreConfig {
            kvs_arn: Some("nope".into()),
            kvs_regions: vec!["us-east-1".into(), "us-east-1".into()],
            ..StoreConfig::default()
        }
        .validate(&mut v);
        let p: Vec<String> = v
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert!(
            p.iter()
                .any(|p| p.starts_with("store.kvs_arn: `nope` is not")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p == "store.kvs_regions[1]: `us-east-1` is listed twice"),
            "{p:?}"
        );
    }
}
