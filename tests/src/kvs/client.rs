//! Pointing the real `aws-sdk-cloudfrontkeyvaluestore` client at a
//! [`KvsServer`].
//!
//! `endpoint_url` alone does not work for this service. The SDK's endpoint
//! rules (`config/endpoint.rs` in the SDK, rule "Custom sdk endpoint
//! override") keep the override's scheme, authority and path but put the
//! ARN's account id in front of the host: `endpoint_url("http://127.0.0.1:PORT")`
//! becomes `http://123456789012.127.0.0.1:PORT`, a host name DNS does not
//! know (the request fails with a dispatch failure before any byte is
//! sent), and `http://localhost:PORT` becomes `123456789012.localhost`,
//! which the usual resolver configuration (`hosts: files dns`) does not
//! know either. The test `endpoint_url_alone_does_not_reach_loopback`
//! (`tests/tests/kvs_server.rs`) keeps this finding honest. The way the
//! SDK supports is `Config::Builder::endpoint_resolver` ("To fully override
//! the endpoint resolver", its `endpoint_url` documentation says), and
//! [`LoopbackEndpoint`] is one that keeps everything the SDK's own rules
//! decide (the ARN checks, and the `sigv4a` auth scheme with signing name
//! `cloudfront-keyvaluestore` and region set `*`) and replaces only the
//! URL. An endpoint without that auth scheme would be signed with SigV4,
//! the first of the SDK's modeled schemes, which the service refuses.

use aws_sdk_cloudfrontkeyvaluestore::config::{BehaviorVersion, Builder, Credentials, Region};

use super::KvsServer;

/// The access key id [`sdk_config`] signs with.
pub const TEST_ACCESS_KEY_ID: &str = "AKIAKVSLOCALTEST0001";

/// The SDK's endpoint resolution with the URL replaced by a local one: the
/// prober's own (`store.kvs_endpoint`), so the tests point the SDK at the
/// local server exactly as the prober does.
pub use prober::kvs::EndpointOverride as LoopbackEndpoint;

/// A client configuration for `server`: static test credentials, region
/// us-east-1, plain HTTP to loopback, the SDK's default retries and
/// timeouts. Returned as a builder so tests can change those.
pub fn sdk_config(server: &KvsServer) -> Builder {
    aws_sdk_cloudfrontkeyvaluestore::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY_ID,
            "local-kvs-test-secret-key",
            None,
            None,
            "origin-router-tests",
        ))
        .endpoint_resolver(LoopbackEndpoint::new(server.endpoint()))
}

/// A client for `server`, configured by [`sdk_config`].
pub async fn sdk_client(server: &KvsServer) -> aws_sdk_cloudfrontkeyvaluestore::Client {
    aws_sdk_cloudfrontkeyvaluestore::Client::from_conf(sdk_config(server).build())
}
