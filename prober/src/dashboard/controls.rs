//! Drains and overrides in force, for the page's own section.
//!
//! This build has neither: operators cannot drain an origin or pin a
//! region's choice yet. The page already renders whatever list
//! [`in_force`] returns, so when the store gains them only this function
//! changes: read them from `store` and map each to a [`Control`].

use origin_router::sample::UnixMillis;
use origin_router::store::RankingStore;

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

/// The drains and overrides in force at `now`.
pub async fn in_force(_store: &dyn RankingStore, _now: UnixMillis) -> Controls {
    Controls::Unsupported
}
