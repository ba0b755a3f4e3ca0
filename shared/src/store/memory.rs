//! An in-process store for tests and single-process tools.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{may_replace, ControlWrite, PoolRankings, RankingStore, StoreError, WriteOutcome};
use crate::control::{Control, PoolControls};
use crate::document::RankingDocument;
use crate::sample::unix_millis_now;

/// Rankings in a map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    docs: Mutex<BTreeMap<(String, String), RankingDocument>>,
    controls: Mutex<BTreeMap<(String, String), Control>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `doc` unconditionally (tests that need a given state).
    pub fn put(&self, doc: RankingDocument) {
        self.lock()
            .insert((doc.pool.clone(), doc.region.clone()), doc);
    }

    /// Removes every ranking.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), RankingDocument>> {
        // A panic elsewhere while holding the lock leaves a consistent map
        // (every operation is one insert or read), so poisoning is ignored.
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RankingStore for MemoryStore {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        Ok(PoolRankings {
            rankings: self
                .lock()
                .iter()
                .filter(|((p, _), _)| p == pool)
                .map(|(_, d)| d.clone())
                .collect(),
            skipped: Vec::new(),
            controls: PoolControls {
                controls: self
                    .controls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|((p, _), _)| p == pool)
                    .map(|(_, c)| c.clone())
                    .collect(),
                skipped: Vec::new(),
            },
        })
    }

    async fn write(&self, doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        let now = unix_millis_now();
        doc.validate()?;
        doc.check_clock(now)?;
        let mut docs = self.lock();
        let key = (doc.pool.clone(), doc.region.clone());
        if docs
            .get(&key)
            .is_some_and(|stored| !may_replace(stored, doc, now))
        {
            return Ok(WriteOutcome::Stale);
        }
        docs.insert(key, doc.clone());
        Ok(WriteOutcome::Written)
    }

    async fn delete(&self, pool: &str, region: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .remove(&(pool.to_string(), region.to_string()))
            .is_some())
    }

    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        let mut pools: Vec<String> = self.lock().keys().map(|(p, _)| p.clone()).collect();
        pools.dedup();
        Ok(pools)
    }

    async fn put_control(
        &self,
        control: &Control,
        replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        control
            .validate()
            .map_err(|e| StoreError::InvalidControl(e.to_string()))?;
        let mut controls = self.controls.lock().unwrap_or_else(|p| p.into_inner());
        let key = (control.pool.clone(), control.key());
        if !replace
            && controls
                .get(&key)
                .is_some_and(|stored| stored.until > control.set_at)
        {
            return Ok(ControlWrite::InForce);
        }
        controls.insert(key, control.clone());
        Ok(ControlWrite::Written)
    }

    async fn delete_control(&self, pool: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(pool.to_string(), key.to_string()))
            .is_some())
    }

    /// None: the map lives in this process and has no clock but this
    /// process's own, so there is nothing to compare with.
    async fn clock(&self) -> Result<Option<super::StoreClock>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_has_no_clock_of_its_own() {
        use super::RankingStore as _;
        assert_eq!(super::MemoryStore::new().clock().await.unwrap(), None);
    }

    #[tokio::test]
    async fn memory_store_contract() {
        super::super::contract::check(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_controls_contract() {
        super::super::contract::controls(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_repairs_a_poisoned_ranking() {
        let store = super::MemoryStore::new();
        super::super::contract::poisoned_ranking_is_repaired(&store, |d| store.put(d)).await;
    }
}
