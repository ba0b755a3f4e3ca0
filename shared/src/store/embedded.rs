//! The embedded store: one JSON file per (pool, region) under a directory,
//! `ROOT/POOL/REGION.json`, shared by a prober and edge processes on the
//! same machine.
//!
//! Writers take an exclusive lock on `ROOT/.lock` (so the seq check and the
//! replace are one step across processes), write a temporary file in the same
//! directory, fsync it and rename it over the old one. Rename is atomic, so a
//! reader opens either the old document or the new one, never a torn one;
//! readers take no lock and never wait for a writer.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{PoolRankings, RankingStore, StoreError, WriteOutcome};
use crate::config::is_name;
use crate::document::RankingDocument;

/// Rankings as files under a directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EmbeddedStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EmbeddedStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pool_dir(&self, pool: &str) -> Result<PathBuf, StoreError> {
        if !is_name(pool) {
            return Err(StoreError::InvalidName(pool.chars().take(64).collect()));
        }
        Ok(self.root.join(pool))
    }

    fn read_pool_blocking(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        let dir = self.pool_dir(pool)?;
        let mut out = PoolRankings::default();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(io_error(&dir, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(region) = name.strip_suffix(".json").filter(|r| is_name(r)) else {
                continue; // temporary files and strangers
            };
            match read_doc(&entry.path()) {
                Ok(doc) if doc.pool == pool && doc.region == region => out.rankings.push(doc),
                Ok(doc) => out.skipped.push((
                    region.to_string(),
                    format!("file holds pool `{}` region `{}`", doc.pool, doc.region),
                )),
                Err(reason) => out.skipped.push((region.to_string(), reason)),
            }
        }
        out.rankings.sort_by(|a, b| a.region.cmp(&b.region));
        Ok(out)
    }

    fn write_blocking(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        doc.validate()?;
        let dir = self.pool_dir(&doc.pool)?;
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let lock_path = self.root.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        lock.lock().map_err(|e| io_error(&lock_path, e))?;

        let path = dir.join(format!("{}.json", doc.region));
        if let Ok(stored) = read_doc(&path) {
            if stored.seq >= doc.seq {
                return Ok(WriteOutcome::Stale);
            }
        }
        let tmp = dir.join(format!(
            ".{}.json.{}.{}.tmp",
            doc.region,
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(doc.to_json().as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path, e));
        }
        Ok(WriteOutcome::Written)
        // `lock` is released when the file handle drops.
    }

    fn list_pools_blocking(&self) -> Result<Vec<String>, StoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io_error(&self.root, source)),
        };
        let mut pools = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_name(&name) && entry.path().is_dir() {
                pools.push(name);
            }
        }
        pools.sort();
        Ok(pools)
    }
}

fn read_doc(path: &Path) -> Result<RankingDocument, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    RankingDocument::from_json(&bytes).map_err(|e| e.to_string())
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io {
            path: String::new(),
            source: std::io::Error::other(e.to_string()),
        })?
}

#[async_trait]
impl RankingStore for EmbeddedStore {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        let (store, pool) = (self.clone(), pool.to_string());
        blocking(move || store.read_pool_blocking(&pool)).await
    }

    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        let (store, doc) = (self.clone(), doc.clone());
        blocking(move || store.write_blocking(&doc)).await
    }

    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        let store = self.clone();
        blocking(move || store.list_pools_blocking()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::tests::sample_doc;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[tokio::test]
    async fn embedded_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::check(&EmbeddedStore::new(dir.path())).await;
    }

    #[tokio::test]
    async fn bad_files_are_skipped_with_a_reason_and_good_ones_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        store.write(&sample_doc()).await.unwrap();
        fs::write(
            dir.path().join("web/us-east-1.json"),
            b"{\"schema_version\": 1, \"pool\": ",
        )
        .unwrap();
        fs::write(
            dir.path().join("web/ap-south-1.json"),
            sample_doc().to_json(),
        )
        .unwrap();
        let read = store.read_pool("web").await.unwrap();
        assert_eq!(read.rankings.len(), 1);
        assert_eq!(read.skipped.len(), 2, "{:?}", read.skipped);
        assert!(read
            .skipped
            .iter()
            .any(|(r, why)| r == "ap-south-1" && why.contains("region `eu-west-1`")));
        assert!(matches!(
            store.read_pool("../etc").await,
            Err(StoreError::InvalidName(_))
        ));
    }

    /// One writer replaces the document as fast as it can while readers read
    /// it in a loop: every read decodes, and seq never goes backwards.
    #[test]
    fn readers_never_see_a_torn_document() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        let mut doc = sample_doc();
        store.write_blocking(&doc).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut reads, mut last_seq) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let read = store.read_pool_blocking("web").unwrap();
                        assert!(read.skipped.is_empty(), "{:?}", read.skipped);
                        let seq = read.rankings[0].seq;
                        assert!(seq >= last_seq);
                        last_seq = seq;
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for i in 0..300 {
            doc.seq += 1;
            doc.origins.rotate_left(1);
            doc.workers = i % 7 + 1;
            assert_eq!(store.write_blocking(&doc).unwrap(), WriteOutcome::Written);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("web"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
    }
}
