//! Shared parts of the edge's tests.
#![allow(dead_code)]

pub mod node;
pub mod racer;

use std::sync::Arc;

use edge::handler::Edge;
use edge::race::Racer;
use edge::settings::EdgeSettings;
use origin_router::config::Config;
use origin_router::store::DynamoStore;
use origin_router::store::RankingStore;
use origin_router_tests::services::MotoServer;

/// The handler's parts for `config` in `region`, over `store`, racing
/// with `racer`: what `edge::run` builds.
pub fn edge(
    config: &Config,
    region: &str,
    store: Arc<dyn RankingStore>,
    racer: Arc<dyn Racer>,
) -> Edge {
    EdgeSettings::new(config, region).edge(store, racer)
}

/// The rankings table `rankings` on `moto`, created, in `region`.
pub async fn moto_table(moto: &MotoServer, region: &str) -> DynamoStore {
    let table = moto.rankings_table(region);
    table.create_table().await.unwrap();
    table
}
