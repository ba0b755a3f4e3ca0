//! The embedded store: one JSON file per (pool, region) under a directory,
//! `ROOT/POOL/REGION.json`, shared by a prober and edge processes on the
//! same machine.
//!
//! Writers take an exclusive lock on `ROOT/POOL/.lock` (so the seq check
//! and the replace are one step across processes), write a temporary file
//! in the same directory, fsync it and rename it over the old one. Rename
//! is atomic, so a reader opens either the old document or the new one,
//! never a torn one; readers take no lock and never wait for a writer.
//!
//! Nothing in the directory is trusted, since anything that can write there
//! can steer traffic:
//! - the root must be a directory owned by this user that neither group
//!   nor others can write (it is created `0700`); anything else is refused
//!   with [`StoreError::Unsafe`], naming the problem;
//! - files are opened without following symlinks and without blocking
//!   (`O_NOFOLLOW | O_NONBLOCK`), must be regular files, and are read up to
//!   the document limit: a symlink, a FIFO, a device or an oversize file is
//!   skipped with a reason, never followed, waited on or read whole;
//! - locks are per pool and waited on for at most [`LOCK_WAIT`]: a stuck
//!   writer of one pool never holds back another pool, or a shutdown.
//!
//! # Its clock
//!
//! Every process sharing the store runs on one kernel, so the clock they
//! must agree on is the kernel's wall clock, and what
//! [`RankingStore::clock`] can check is a process whose *own view* of it
//! is off: one run under libfaketime (an `LD_PRELOAD` library that replaces
//! `clock_gettime`, `gettimeofday`, `time` and the `stat` family), or any
//! other per-process fake. It reads the kernel's clock from procfs:
//! `btime` of `/proc/stat` (boot, on the wall clock, whole seconds) plus
//! `/proc/uptime` (time since boot), two file reads no such library
//! touches; resolution 1.01 s, so the uncertainty is about half a second.
//!
//! What was checked, with Debian's libfaketime 0.9.10 and
//! `FAKETIME=+3600` (shared/tests/store_clock.rs asserts the first and
//! prints the others at every run):
//! - btime + uptime read the true time, with or without
//!   `DONT_FAKE_MONOTONIC=1`;
//! - btime + `clock_gettime(CLOCK_BOOTTIME)` reads the true time only with
//!   `DONT_FAKE_MONOTONIC=1`: without it libfaketime fakes CLOCK_BOOTTIME
//!   too and the sum is decades off, so it is not used;
//! - the mtime of a file just written is stamped by the kernel, but
//!   libfaketime shifts what `fstat`/`stat` return by its offset unless
//!   `NO_FAKE_STAT` is set; only `statx` (which std uses where the kernel
//!   and seccomp allow it) escapes, so it is not used either.
//!
//! What it cannot check: a wrong kernel clock (every process on the machine
//! shares it, and it agrees with itself; that is NTP's job, and the
//! prober's Redis or DynamoDB clock where there is one), or the clocks of
//! other machines, should the store's directory be shared over a network
//! filesystem (the store is meant for one machine). Time namespaces cannot
//! offset the wall clock (time_namespaces(7)), and procfs shows `btime`
//! and uptime in the namespace's terms, so they need no check. Off Linux
//! there is no procfs and the store reports no clock (`Ok(None)`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::fcntl::OFlag;

use super::{may_replace, ControlWrite, PoolRankings, RankingStore, StoreError, WriteOutcome};
use crate::config::is_name;
use crate::control::{Control, MAX_CONTROL_BYTES};
use crate::document::{RankingDocument, MAX_JSON_BYTES};
use crate::sample::unix_millis_now;

/// Longest a writer waits for another writer's lock on the same pool.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Rankings as files under a directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `open(2)` flags for every file of the store: never follow a link,
/// never block on a FIFO or device, never leak into a child process.
fn no_follow_no_block() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits()
}

impl EmbeddedStore {
    /// A store rooted at `root` (created `0700` on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EmbeddedStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks that the root is private; `Ok(false)` when it does not exist.
    fn check_root(&self) -> Result<bool, StoreError> {
        let meta = match fs::symlink_metadata(&self.root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&self.root, e)),
        };
        let unsafe_root = |why: String| StoreError::Unsafe {
            path: self.root.display().to_string(),
            why,
        };
        if !meta.is_dir() {
            return Err(unsafe_root(
                "is not a directory (a symlink or a file is never followed)".into(),
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(unsafe_root(format!(
                "is owned by uid {}, not by this user (uid {me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_root(format!(
                "is writable by group or others (mode {:o}); chmod 700 it",
                meta.mode() & 0o7777
            )));
        }
        Ok(true)
    }

    /// Creates the root `0700` if missing, then checks it.
    fn ensure_root(&self) -> Result<(), StoreError> {
        if !self.check_root()? {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| io_error(&self.root, e))?;
            self.check_root()?;
        }
        Ok(())
    }

    /// The pool's directory, created `0700` if missing (under a checked
    /// root). Losing the race to create it to another writer is fine; a
    /// link or a file in its place is not.
    fn ensure_pool_dir(&self, pool: &str) -> Result<PathBuf, StoreError> {
        let dir = self.pool_dir(pool)?;
        self.ensure_root()?;
        let not_a_dir = || StoreError::Unsafe {
            path: dir.display().to_string(),
            why: "is not a directory".into(),
        };
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(not_a_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                            return Err(not_a_dir());
                        }
                    }
                    Err(e) => return Err(io_error(&dir, e)),
                }
            }
            Err(e) => return Err(io_error(&dir, e)),
        }
        Ok(dir)
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
        if !self.check_root()? {
            return Ok(out);
        }
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                out.skipped.push((
                    pool.to_string(),
                    "the pool's entry is not a directory".into(),
                ));
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(io_error(&dir, source)),
        }
        let entries = fs::read_dir(&dir).map_err(|e| io_error(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Drains and overrides: `KEY.ctl`, read in the same pass.
            if let Some(key) = name.strip_suffix(".ctl").filter(|k| !k.starts_with('.')) {
                match read_control(&entry.path(), pool, key) {
                    Ok(c) => out.controls.controls.push(c),
                    Err(reason) => out.controls.skipped.push((key.to_string(), reason)),
                }
                continue;
            }
            let Some(region) = name.strip_suffix(".json").filter(|r| is_name(r)) else {
                continue; // temporary files, the lock and strangers
            };
            match read_doc(&entry.path()) {
                Ok(Some(doc)) if doc.pool == pool && doc.region == region => out.rankings.push(doc),
                Ok(Some(doc)) => out.skipped.push((
                    region.to_string(),
                    format!("file holds pool `{}` region `{}`", doc.pool, doc.region),
                )),
                Ok(None) => {}
                Err(reason) => out.skipped.push((region.to_string(), reason)),
            }
        }
        out.rankings.sort_by(|a, b| a.region.cmp(&b.region));
        out.controls.controls.sort_by_key(Control::key);
        Ok(out)
    }

    fn write_blocking(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        let now = unix_millis_now();
        doc.validate()?;
        doc.check_clock(now)?;
        let dir = self.ensure_pool_dir(&doc.pool)?;
        let _lock = lock_pool(&dir)?;
        let path = dir.join(format!("{}.json", doc.region));
        if let Ok(Some(stored)) = read_doc(&path) {
            if !may_replace(&stored, doc, now) {
                return Ok(WriteOutcome::Stale);
            }
        }
        replace_file(
            &dir,
            &format!("{}.json", doc.region),
            doc.to_json().as_bytes(),
        )?;
        Ok(WriteOutcome::Written)
    }

    fn delete_blocking(&self, pool: &str, region: &str) -> Result<bool, StoreError> {
        let dir = self.pool_dir(pool)?;
        if !is_name(region) {
            return Err(StoreError::InvalidName(region.chars().take(64).collect()));
        }
        if !self.check_root()? || !dir.is_dir() {
            return Ok(false);
        }
        let _lock = lock_pool(&dir)?;
        let path = dir.join(format!("{region}.json"));
        // remove_file unlinks whatever is there (a file, a link, a FIFO)
        // without opening or following it.
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    /// Stores a control as `ROOT/POOL/KEY.ctl` (KEY as [`Control::key`]);
    /// without `replace`, only if the file there holds no control in force
    /// at `control.set_at`, checked and written under the pool's lock.
    fn put_control_blocking(
        &self,
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        control
            .validate()
            .map_err(|e| StoreError::InvalidControl(e.to_string()))?;
        let dir = self.ensure_pool_dir(&control.pool)?;
        let _lock = lock_pool(&dir)?;
        let name = format!("{}.ctl", control.key());
        if !replace {
            // An unreadable file holds nothing in force: it is replaced.
            if let Ok(stored) = read_control(&dir.join(&name), &control.pool, &control.key()) {
                if stored.until > control.set_at {
                    return Ok(ControlWrite::InForce);
                }
            }
        }
        replace_file(&dir, &name, control.to_json().as_bytes())?;
        Ok(ControlWrite::Written)
    }

    fn delete_control_blocking(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
        let dir = self.pool_dir(pool)?;
        let key_ok = !key.is_empty()
            && key.len() <= 200
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-#".contains(&b))
            && !key.starts_with('.');
        if !key_ok {
            return Err(StoreError::InvalidName(key.chars().take(64).collect()));
        }
        if !self.check_root()? || !dir.is_dir() {
            return Ok(false);
        }
        let _lock = lock_pool(&dir)?;
        let path = dir.join(format!("{key}.ctl"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn list_pools_blocking(&self) -> Result<Vec<String>, StoreError> {
        if !self.check_root()? {
            return Ok(Vec::new());
        }
        let entries = fs::read_dir(&self.root).map_err(|e| io_error(&self.root, e))?;
        let mut pools = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_name(&name) && is_dir {
                pools.push(name);
            }
        }
        pools.sort();
        Ok(pools)
    }
}

/// Replaces `dir/name` with `bytes` atomically: a new `0600` file
/// (never following a link), synced, then renamed over the old one, so a
/// reader sees the old content or the new, never a torn one. The caller
/// holds the pool's lock.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(no_follow_no_block())
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&path, e));
    }
    Ok(())
}

/// Takes the pool's writer lock, waiting at most [`LOCK_WAIT`]; released
/// when the returned file drops.
fn lock_pool(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(no_follow_no_block())
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    let regular = lock.metadata().map_err(|e| io_error(&path, e))?.is_file();
    if !regular {
        return Err(StoreError::Unsafe {
            path: path.display().to_string(),
            why: "is not a regular file".into(),
        });
    }
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io_error(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("another writer held the lock for {LOCK_WAIT:?}"),
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
        }
    }
}

/// Reads and checks the control file `path` of `pool` stored under `key`,
/// with the same hardening as rankings (no-follow, size-limited).
fn read_control(path: &Path, pool: &str, key: &str) -> Result<Control, String> {
    let bytes = read_bytes(path, MAX_CONTROL_BYTES)?.ok_or("is a directory")?;
    let c = Control::from_json(&bytes).map_err(|e| e.to_string())?;
    if c.pool != pool || c.key() != key {
        return Err(format!("file holds pool `{}` key `{}`", c.pool, c.key()));
    }
    Ok(c)
}

/// Reads one ranking file: `Ok(None)` for something that is not a file of
/// ours to read (a directory), `Err` with the reason for anything hostile
/// or broken.
fn read_doc(path: &Path) -> Result<Option<RankingDocument>, String> {
    match read_bytes(path, MAX_JSON_BYTES)? {
        None => Ok(None),
        Some(bytes) => RankingDocument::from_json(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// Reads one file of the store up to `limit` bytes, with the hardening of
/// the module doc: `Ok(None)` for a directory, `Err` with the reason for a
/// link, a FIFO, a device or an oversize file.
fn read_bytes(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(no_follow_no_block())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err("is a symbolic link (never followed)".into())
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        return Err("is not a regular file (a FIFO, socket or device is never read)".into());
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > limit {
        return Err(format!("is larger than the {limit}-byte limit"));
    }
    Ok(Some(bytes))
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

    async fn delete(&self, pool: &str, region: &str) -> Result<bool, StoreError> {
        let (store, pool, region) = (self.clone(), pool.to_string(), region.to_string());
        blocking(move || store.delete_blocking(&pool, &region)).await
    }

    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        let store = self.clone();
        blocking(move || store.list_pools_blocking()).await
    }

    async fn put_control(
        &self,
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        let (store, control) = (self.clone(), control.clone());
        blocking(move || store.put_control_blocking(&control, replace)).await
    }

    async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
        let (store, pool, key) = (self.clone(), pool.to_string(), key.to_string());
        blocking(move || store.delete_control_blocking(&pool, &key)).await
    }

    /// The kernel's wall clock against this process's (see "Its clock" in
    /// the module docs). Two procfs reads: in memory, never blocking, so
    /// they run here rather than on the blocking pool, whose queue would
    /// only widen the round trip.
    async fn clock(&self) -> Result<Option<super::StoreClock>, StoreError> {
        #[cfg(target_os = "linux")]
        {
            super::kernel_clock::read().map(Some)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(None)
        }
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
    async fn embedded_store_controls_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::EmbeddedStore::new(dir.path().join("store"));
        super::super::contract::controls(&store).await;
        // A hostile control file is skipped with a reason; rankings of the
        // pool still read and never see the control files.
        let pool = dir.path().join("store/web");
        std::fs::write(pool.join("drain#eu-west-1#x.ctl"), "{not json").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", pool.join("drain#eu-west-1#y.ctl")).unwrap();
        let read = store.controls("web").await.unwrap();
        assert_eq!(read.skipped.len(), 2, "{:?}", read.skipped);
        assert!(read
            .skipped
            .iter()
            .any(|(k, why)| k == "drain#eu-west-1#y" && why.contains("symbolic link")));
        assert!(store.read_pool("web").await.unwrap().skipped.is_empty());
    }

    #[tokio::test]
    async fn embedded_store_repairs_a_poisoned_ranking() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        let web = dir.path().join("web");
        super::super::contract::poisoned_ranking_is_repaired(&store, |d| {
            fs::create_dir_all(&web).unwrap();
            fs::write(web.join("eu-west-1.json"), d.to_json()).unwrap();
        })
        .await;
    }

    /// A symlink (to a huge or endless file), a FIFO nobody writes, an
    /// oversize file and a directory in place of a ranking: each is
    /// skipped with its reason, at once, and the good ranking is still
    /// read. Writes over them replace the entry rather than follow it.
    #[tokio::test]
    async fn hostile_files_are_skipped_at_once_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        store.write(&sample_doc()).await.unwrap();
        let web = dir.path().join("web");
        std::os::unix::fs::symlink("/dev/zero", web.join("us-east-1.json")).unwrap();
        nix::unistd::mkfifo(
            &web.join("ap-south-1.json"),
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        fs::write(web.join("us-west-2.json"), vec![b' '; 100 * 1024 * 1024]).unwrap();
        fs::create_dir(web.join("sa-east-1.json")).unwrap();

        let started = Instant::now();
        let read = store.read_pool("web").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(read.rankings, vec![sample_doc()]);
        let why = |region: &str| {
            read.skipped
                .iter()
                .find(|(r, _)| r == region)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| panic!("{region} not skipped: {:?}", read.skipped))
        };
        assert!(why("us-east-1").contains("symbolic link"));
        assert!(why("ap-south-1").contains("not a regular file"));
        assert!(why("us-west-2").contains("larger than"));
        assert_eq!(read.skipped.len(), 3, "{:?}", read.skipped);

        // A write replaces the link itself; /dev/zero is untouched.
        let mut doc = sample_doc();
        doc.region = "us-east-1".into();
        doc.seq = 1;
        assert_eq!(store.write(&doc).await.unwrap(), WriteOutcome::Written);
        assert!(fs::symlink_metadata(web.join("us-east-1.json"))
            .unwrap()
            .is_file());
        // So does one over the FIFO, without waiting on it.
        doc.region = "ap-south-1".into();
        assert_eq!(store.write(&doc).await.unwrap(), WriteOutcome::Written);
    }

    /// The root must be this user's and private: a directory others can
    /// write, or a symlink to one, is refused with a clear error; a new
    /// root is created 0700.
    #[tokio::test]
    async fn a_store_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = EmbeddedStore::new(&open)
            .write(&sample_doc())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let err = EmbeddedStore::new(&open)
            .read_pool("web")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unsafe { .. }), "{err}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = EmbeddedStore::new(&link)
            .write(&sample_doc())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        let fresh = dir.path().join("a/b");
        EmbeddedStore::new(&fresh)
            .write(&sample_doc())
            .await
            .unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    /// A writer that holds one pool's lock (stuck, or hostile) holds back
    /// neither another pool nor, past LOCK_WAIT, its own pool's writers.
    #[tokio::test]
    async fn a_held_lock_holds_back_only_its_pool_and_only_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        store.write(&sample_doc()).await.unwrap();
        let held = File::open(dir.path().join("web/.lock")).unwrap();
        held.lock().unwrap();

        let mut api = sample_doc();
        api.pool = "api".into();
        let started = Instant::now();
        assert_eq!(store.write(&api).await.unwrap(), WriteOutcome::Written);
        assert!(started.elapsed() < Duration::from_secs(1));

        let mut newer = sample_doc();
        newer.seq += 1;
        let started = Instant::now();
        let err = store.write(&newer).await.unwrap_err();
        let waited = started.elapsed();
        assert!(err.to_string().contains("held the lock"), "{err}");
        assert!(waited >= LOCK_WAIT && waited < LOCK_WAIT * 3, "{waited:?}");
        // Reads never wait for the lock.
        assert_eq!(store.read_pool("web").await.unwrap().rankings.len(), 1);
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
    fn writers_racing_to_create_a_pool_directory_all_succeed() {
        // Many stores (as many processes would) write the first ranking of
        // one pool at once: none fails because another made the directory.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let store = EmbeddedStore::new(&root);
                    let mut doc = sample_doc();
                    doc.region = format!("region-{i}");
                    store.write_blocking(&doc)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().is_ok());
        }
    }

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
            .filter(|e| e.file_name() != ".lock")
            .collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
    }
}
