//! One key value store as the KeyValueStore data plane keeps it: sorted
//! pairs, an ETag that changes on every write, and the documented limits,
//! checked before anything changes so every write is all or nothing.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Longest key, in bytes. The quota says 512 characters
/// (<https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/kvs-with-functions-create-s3-kvp.html>);
/// bytes are counted, the same for ASCII and never more lenient than the
/// service. (The API model allows 1024, but the service quota is lower.)
pub const MAX_KEY_BYTES: usize = 512;
/// Longest value: 1 KB (same page as [`MAX_KEY_BYTES`]).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Largest store, keys and values summed: 5 MB
/// (<https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/cloudfront-limits.html>,
/// "Quotas on key value stores").
pub const MAX_STORE_BYTES: u64 = 5 * 1024 * 1024;
/// Most keys (puts and deletes together) in one UpdateKeys request, and
/// the largest UpdateKeys body: "a default quota of 50 keys or a 3 MB
/// payload, whichever is reached first"
/// (<https://pub.dev/documentation/pulumi_aws/latest/cloudfront/KeyvaluestoreKeysExclusive/maxBatchSize.html>,
/// the Terraform/Pulumi resource's summary of the CloudFront quotas page).
pub const MAX_UPDATE_KEYS: usize = 50;
/// See [`MAX_UPDATE_KEYS`].
pub const MAX_UPDATE_BYTES: usize = 3 * 1024 * 1024;
/// ListKeys: "The default is 10 and maximum allowed page is 50" (the
/// SDK's `ListKeysFluentBuilder::max_results` documentation).
pub const DEFAULT_PAGE: usize = 10;
/// See [`DEFAULT_PAGE`].
pub const MAX_PAGE: usize = 50;

/// Why the service refused a request: each is one of the SDK's modeled
/// error shapes, named by [`KvsError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvsError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    UnknownOperation(String),
}

impl KvsError {
    /// The HTTP status the service answers with.
    pub fn status(&self) -> u16 {
        match self {
            KvsError::Validation(_) => 400,
            KvsError::AccessDenied(_) => 403,
            KvsError::NotFound(_) | KvsError::UnknownOperation(_) => 404,
            KvsError::Conflict(_) => 409,
            KvsError::Internal(_) => 500,
        }
    }

    /// The error code the SDK matches on (`x-amzn-ErrorType`).
    pub fn code(&self) -> &'static str {
        match self {
            KvsError::Validation(_) => "ValidationException",
            KvsError::AccessDenied(_) => "AccessDeniedException",
            KvsError::NotFound(_) => "ResourceNotFoundException",
            KvsError::UnknownOperation(_) => "UnknownOperationException",
            KvsError::Conflict(_) => "ConflictException",
            KvsError::Internal(_) => "InternalServerException",
        }
    }
}

/// Counts after a write, as every mutation answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub item_count: usize,
    pub total_size_in_bytes: u64,
}

/// One store.
#[derive(Debug)]
pub struct Store {
    pub(crate) arn: String,
    items: BTreeMap<String, String>,
    size: u64,
    /// Bumped by every write; the ETag is derived from it.
    version: u64,
    /// Makes ETags differ between stores and servers, so a test cannot
    /// pass by carrying one store's ETag to another.
    salt: u32,
    pub(crate) created: SystemTime,
    pub(crate) last_modified: SystemTime,
}

impl Store {
    pub fn new(arn: String, salt: u32) -> Store {
        let now = SystemTime::now();
        Store {
            arn,
            items: BTreeMap::new(),
            size: 0,
            version: 1,
            salt,
            created: now,
            last_modified: now,
        }
    }

    /// The current version identifier, opaque as the service's.
    pub fn etag(&self) -> String {
        format!("KV{:08X}{:06X}", self.salt, self.version)
    }

    pub fn totals(&self) -> Totals {
        Totals {
            item_count: self.items.len(),
            total_size_in_bytes: self.size,
        }
    }

    pub fn items(&self) -> &BTreeMap<String, String> {
        &self.items
    }

    pub fn get(&self, key: &str) -> Result<&str, KvsError> {
        self.items
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| not_found(key))
    }

    /// One page of pairs in key order, after the key `after` (from the
    /// previous page's token), and the token of the next page if any.
    pub fn page(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<(&String, &String)>, Option<String>) {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.to_string()),
            None => Bound::Unbounded,
        };
        let mut rest = self.items.range((start, Bound::Unbounded));
        let page: Vec<_> = rest.by_ref().take(max).collect();
        let next = match (rest.next(), page.last()) {
            (Some(_), Some((last, _))) => Some((*last).clone()),
            _ => None,
        };
        (page, next)
    }

    /// Checks everything but the ETag: `If-Match` is given, keys and
    /// values are within limits, no key is written twice, every deleted
    /// key exists, and the store stays within its quota, whose size after
    /// the write this returns.
    pub fn validate(
        &self,
        if_match: Option<&str>,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<u64, KvsError> {
        if if_match.is_none() {
            return Err(KvsError::Validation(
                "If-Match is required: the store's current ETag".into(),
            ));
        }
        for (key, value) in puts {
            check_key(key)?;
            check_value(key, value)?;
        }
        for key in deletes {
            check_key(key)?;
        }
        let mut seen = std::collections::HashSet::new();
        for key in puts.iter().map(|(k, _)| k).chain(deletes) {
            // Stricter than documented, on purpose: the order of two
            // writes to one key in one request is not defined.
            if !seen.insert(key.as_str()) {
                return Err(KvsError::Validation(format!(
                    "Key {key:?} appears more than once in one request"
                )));
            }
        }
        // A delete of a missing key is refused, as DeleteKey refuses it:
        // the stricter reading, so code that passes here passes there.
        if let Some(missing) = deletes.iter().find(|k| !self.items.contains_key(*k)) {
            return Err(not_found(missing));
        }
        let mut size = self.size;
        for key in deletes {
            size -= entry_size(key, &self.items[key]);
        }
        for (key, value) in puts {
            if let Some(old) = self.items.get(key) {
                size -= entry_size(key, old);
            }
            size += entry_size(key, value);
        }
        if size > MAX_STORE_BYTES {
            return Err(KvsError::Validation(format!(
                "The store would hold {size} bytes, over its quota of {MAX_STORE_BYTES}"
            )));
        }
        Ok(size)
    }

    /// Applies `puts` and `deletes` together if they pass
    /// [`Store::validate`] and `if_match` is the current ETag; otherwise
    /// changes nothing.
    ///
    /// `lose_race` answers a conflict after validation as if another
    /// writer had just won: the ETag moves on (the contents stay), so a
    /// retry with the old ETag conflicts again, as it would on the service.
    pub fn update(
        &mut self,
        if_match: Option<&str>,
        puts: &[(String, String)],
        deletes: &[String],
        lose_race: bool,
    ) -> Result<Totals, KvsError> {
        let size = self.validate(if_match, puts, deletes)?;
        let if_match = if_match.unwrap_or_default();
        if lose_race {
            self.touch();
            return Err(stale(if_match));
        }
        if if_match != self.etag() {
            return Err(stale(if_match));
        }
        for key in deletes {
            self.items.remove(key);
        }
        for (key, value) in puts {
            self.items.insert(key.clone(), value.clone());
        }
        self.size = size;
        self.touch();
        Ok(self.totals())
    }

    /// Writes without any check, as another writer (or the console) would:
    /// for seeding tests. The ETag changes.
    pub fn force(&mut self, puts: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in puts {
            if let Some(old) = self.items.insert(key.clone(), value.clone()) {
                self.size -= entry_size(&key, &old);
            }
            self.size += entry_size(&key, &value);
        }
        self.touch();
    }

    fn touch(&mut self) {
        self.version += 1;
        self.last_modified = SystemTime::now();
    }
}

fn entry_size(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64
}

fn check_key(key: &str) -> Result<(), KvsError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvsError::Validation(format!(
            "Key length {} is outside 1..={MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), KvsError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvsError::Validation(format!(
            "Value of key {key:?} is {} bytes, over {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn not_found(key: &str) -> KvsError {
    KvsError::NotFound(format!("Key {key:?} not found"))
}

fn stale(if_match: &str) -> KvsError {
    KvsError::Conflict(format!(
        "Pre-condition failed: ETag {if_match} is not the store's current version"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn a_write_moves_the_etag_and_counts_keys_and_values() {
        let mut store = Store::new("arn".into(), 7);
        let first = store.etag();
        let totals = store
            .update(
                Some(&first),
                &[pair("a", "xyz"), pair("bb", "")],
                &[],
                false,
            )
            .unwrap();
        assert_eq!(totals.item_count, 2);
        assert_eq!(totals.total_size_in_bytes, 6);
        assert_ne!(store.etag(), first);
        let err = store.update(Some(&first), &[], &["a".into()], false);
        assert!(matches!(err, Err(KvsError::Conflict(_))));
    }

    #[test]
    fn a_refused_write_changes_nothing() {
        let mut store = Store::new("arn".into(), 7);
        store.force([pair("a", "1")]);
        let etag = store.etag();
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        let err = store.update(Some(&etag), &[pair("b", "2"), pair("c", &long)], &[], false);
        assert!(matches!(err, Err(KvsError::Validation(_))));
        let err = store.update(Some(&etag), &[pair("b", "2")], &["missing".into()], false);
        assert!(matches!(err, Err(KvsError::NotFound(_))));
        assert_eq!(store.etag(), etag);
        assert_eq!(store.items().len(), 1);
    }

    #[test]
    fn pages_follow_key_order() {
        let mut store = Store::new("arn".into(), 7);
        store.force((0..5).map(|i| pair(&format!("k{i}"), "v")));
        let (page, next) = store.page(None, 2);
        assert_eq!(page.len(), 2);
        assert_eq!(next.as_deref(), Some("k1"));
        let (page, next) = store.page(Some("k3"), 2);
        assert_eq!(page.len(), 1);
        assert_eq!(next, None);
    }
}
