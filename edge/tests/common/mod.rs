//! Shared parts of the edge's tests.
#![allow(dead_code)]

pub mod racer;

use std::sync::Arc;
use std::time::Duration;

use edge::handler::Edge;
use edge::race::Racer;
use edge::settings::EdgeSettings;
use origin_router::config::Config;
use origin_router::store::RankingStore;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use origin_router::store::DynamoStore;
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
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(moto.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build(),
    );
    let table = DynamoStore::new(client, "rankings", Duration::from_secs(86_400));
    table.create_table().await.unwrap();
    table
}
