//! Shared parts of the edge's binary tests.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use origin_router::store::DynamoStore;
use origin_router_tests::services::MotoServer;

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
