//! Drains and overrides in force, for the page's own section: those the
//! store's read of each pool brought (`PoolRankings::controls`), in force
//! now, as `prober drain` / `prober override` set them.

use origin_router::control::ALL_REGIONS;
use origin_router::sample::UnixMillis;
use origin_router::store::PoolRankings;

/// One drain or override, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// `drain` or `override`.
    pub kind: String,
    pub pool: String,
    /// `None`: every region.
    pub region: Option<String>,
    pub origin: String,
    /// Who set it and why, as the operator wrote it.
    pub reason: String,
    /// When it ends by itself (`None`: until removed).
    pub until: Option<UnixMillis>,
}

/// The drains and overrides in force.
#[derive(Debug, Clone, PartialEq)]
pub enum Controls {
    /// Those in force now (maybe none).
    InForce(Vec<Control>),
}

/// The drains and overrides in force at `now` among those the pools' last
/// good reads brought (the store reads them with the rankings).
pub fn in_force<'a>(
    reads: impl IntoIterator<Item = &'a PoolRankings>,
    now: UnixMillis,
) -> Controls {
    let items = reads
        .into_iter()
        .flat_map(|read| read.controls.controls.iter())
        .filter(|c| c.in_force(now))
        .map(|c| Control {
            kind: c.kind.as_str().to_string(),
            pool: c.pool.clone(),
            region: (c.region != ALL_REGIONS).then(|| c.region.clone()),
            origin: c.origin.clone(),
            reason: format!("{} (by {})", c.reason, c.by),
            until: Some(c.until),
        })
        .collect();
    Controls::InForce(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::control::{Control as Item, ControlKind};
    use origin_router::store::EmbeddedStore;
    use origin_router::store::RankingStore;

    fn item(kind: ControlKind, region: &str, until: UnixMillis) -> Item {
        Item {
            kind,
            pool: "web".into(),
            region: region.into(),
            origin: "a".into(),
            set_at: 1_000,
            until,
            by: "ops".into(),
            reason: "<b>maintenance</b>".into(),
        }
    }

    #[tokio::test]
    async fn drains_and_overrides_in_force_are_listed_and_expired_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::new(dir.path());
        store
            .put_control(&item(ControlKind::Drain, ALL_REGIONS, 90_000), true)
            .await
            .unwrap();
        store
            .put_control(&item(ControlKind::Override, "eu-west-1", 50_000), true)
            .await
            .unwrap();
        let read = store.read_pool("web").await.unwrap();
        let Controls::InForce(list) = in_force([&read], 40_000);
        assert_eq!(list.len(), 2, "{list:?}");
        let drain = list.iter().find(|c| c.kind == "drain").unwrap();
        assert_eq!(drain.region, None);
        assert_eq!(drain.reason, "<b>maintenance</b> (by ops)");
        let over = list.iter().find(|c| c.kind == "override").unwrap();
        assert_eq!(over.region.as_deref(), Some("eu-west-1"));
        // Past the override's end, only the drain is left.
        let Controls::InForce(list) = in_force([&read], 60_000);
        assert_eq!(list.len(), 1);
    }
}
