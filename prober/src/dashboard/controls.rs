//! Drains and overrides in force, for the page's own section: read from
//! the store with each pool (`RankingStore::controls`), those in force now,
//! as `prober drain` / `prober override` set them.

use origin_router::control::{ControlKind, ALL_REGIONS};
use origin_router::sample::UnixMillis;
use origin_router::store::{RankingStore, StoreError};

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

/// What the store says about drains and overrides.
#[derive(Debug, Clone, PartialEq)]
pub enum Controls {
    /// This build or store cannot hold them.
    Unsupported,
    /// Those in force now (maybe none).
    InForce(Vec<Control>),
}

/// The drains and overrides of `pools` in force at `now`. A store that
/// cannot hold them is `Unsupported`; a pool whose read fails is left out
/// (the rankings' own read reports store errors on the page).
pub async fn in_force<'a>(
    store: &dyn RankingStore,
    pools: impl IntoIterator<Item = &'a str>,
    now: UnixMillis,
) -> Controls {
    let mut items = Vec::new();
    for pool in pools {
        match store.controls(pool).await {
            Ok(read) => items.extend(read.controls.into_iter().filter(|c| c.in_force(now)).map(
                |c| Control {
                    kind: match c.kind {
                        ControlKind::Drain => "drain".to_string(),
                        ControlKind::Override => "override".to_string(),
                    },
                    pool: c.pool,
                    region: (c.region != ALL_REGIONS).then_some(c.region),
                    origin: c.origin,
                    reason: format!("{} (by {})", c.reason, c.by),
                    until: Some(c.until),
                },
            )),
            Err(StoreError::Unsupported(_)) => return Controls::Unsupported,
            Err(e) => {
                tracing::debug!(pool, error = %e, "dashboard could not read drains and overrides")
            }
        }
    }
    Controls::InForce(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::control::Control as Item;
    use origin_router::store::EmbeddedStore;

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
            .put_control(&item(ControlKind::Drain, ALL_REGIONS, 90_000))
            .await
            .unwrap();
        store
            .put_control(&item(ControlKind::Override, "eu-west-1", 50_000))
            .await
            .unwrap();
        let Controls::InForce(list) = in_force(&store, ["web"], 40_000).await else {
            panic!("the embedded store holds controls");
        };
        assert_eq!(list.len(), 2, "{list:?}");
        let drain = list.iter().find(|c| c.kind == "drain").unwrap();
        assert_eq!(drain.region, None);
        assert_eq!(drain.reason, "<b>maintenance</b> (by ops)");
        let over = list.iter().find(|c| c.kind == "override").unwrap();
        assert_eq!(over.region.as_deref(), Some("eu-west-1"));
        // Past the override's end, only the drain is left.
        let Controls::InForce(list) = in_force(&store, ["web"], 60_000).await else {
            panic!("the embedded store holds controls");
        };
        assert_eq!(list.len(), 1);
    }
}
