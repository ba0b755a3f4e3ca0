//! The two KeyValueStore calls the publisher makes, behind [`KvsApi`], and
//! their implementation on `aws-sdk-cloudfrontkeyvaluestore`.
//!
//! The client comes from aws-config's default chain, as the prober's other
//! AWS clients do. The data-plane API is signed with SigV4A (signing name
//! `cloudfront-keyvaluestore`, region set `*`), which the SDK's endpoint
//! rules choose and its `sigv4a` feature provides; nothing here signs.
//!
//! `store.kvs_endpoint` (a local test server) cannot be given to the SDK
//! as `endpoint_url`: the SDK's endpoint rules put the ARN's account id in
//! front of the override's host (`http://127.0.0.1:9000` becomes
//! `http://123456789012.127.0.0.1:9000`, which is no address). So
//! [`EndpointOverride`] runs the SDK's own rules (the ARN checks, the
//! SigV4A auth scheme) and replaces only the URL, the approach of
//! `origin_router_tests::kvs::client`; an endpoint without the rules' auth
//! scheme would be signed with plain SigV4, which the service refuses.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudfrontkeyvaluestore::config::endpoint::{
    DefaultResolver, EndpointFuture, Params, ResolveEndpoint,
};
use aws_sdk_cloudfrontkeyvaluestore::error::{DisplayErrorContext, SdkError};
use aws_sdk_cloudfrontkeyvaluestore::types::PutKeyRequestListItem;

/// Why a KeyValueStore call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvsError {
    /// `If-Match` named an ETag that is no longer the store's: another
    /// writer (another region's leader) wrote since it was read.
    #[error("{op}: ConflictException (the store's ETag moved on): {message}")]
    Conflict { op: &'static str, message: String },
    #[error("{op} did not answer within {} ms", after.as_millis())]
    Timeout { op: &'static str, after: Duration },
    #[error("{op}: {message}")]
    Failed { op: &'static str, message: String },
    /// Not attempted: the worker stood down (no longer publishes).
    #[error("not written: this worker no longer publishes the region's rankings")]
    StoodDown,
}

impl KvsError {
    /// The operation, for metric labels.
    pub fn op(&self) -> &'static str {
        match self {
            KvsError::Conflict { op, .. }
            | KvsError::Timeout { op, .. }
            | KvsError::Failed { op, .. } => op,
            KvsError::StoodDown => "UpdateKeys",
        }
    }
}

/// The store's ETag and the one write the publisher needs. Implemented on
/// the SDK ([`SdkKvs`]) and by test doubles.
#[async_trait]
pub trait KvsApi: Send + Sync + 'static {
    /// `DescribeKeyValueStore`: the store's current ETag.
    async fn etag(&self) -> Result<String, KvsError>;
    /// `UpdateKeys` with `If-Match: etag`, putting every (key, value) of
    /// `puts` at once (all or nothing); the store's new ETag.
    async fn update(&self, etag: &str, puts: &[(String, String)]) -> Result<String, KvsError>;
}

/// One store through the SDK.
pub struct SdkKvs {
    client: aws_sdk_cloudfrontkeyvaluestore::Client,
    arn: String,
}

impl SdkKvs {
    /// A client of the store `arn` from the default AWS configuration
    /// chain (credentials, retries), each call bounded by `call_timeout`
    /// as well as by the caller; requests go to `endpoint` when given (see
    /// [`EndpointOverride`]).
    pub async fn connect(arn: &str, endpoint: Option<&str>, call_timeout: Duration) -> SdkKvs {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(call_timeout)
                    .build(),
            )
            .load()
            .await;
        let mut config = aws_sdk_cloudfrontkeyvaluestore::config::Builder::from(&sdk);
        if let Some(url) = endpoint {
            config = config.endpoint_resolver(EndpointOverride::new(url));
        }
        SdkKvs {
            client: aws_sdk_cloudfrontkeyvaluestore::Client::from_conf(config.build()),
            arn: arn.to_string(),
        }
    }
}

/// An SDK error as one line; a service's ConflictException as
/// [`KvsError::Conflict`].
fn sdk_error<E, R>(op: &'static str, e: SdkError<E, R>, conflict: impl Fn(&E) -> bool) -> KvsError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let is_conflict = e.as_service_error().is_some_and(&conflict);
    let message = DisplayErrorContext(&e).to_string();
    if is_conflict {
        KvsError::Conflict { op, message }
    } else {
        KvsError::Failed { op, message }
    }
}

#[async_trait]
impl KvsApi for SdkKvs {
    async fn etag(&self) -> Result<String, KvsError> {
        let out = self
            .client
            .describe_key_value_store()
            .kvs_arn(&self.arn)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeKeyValueStore", e, |e| e.is_conflict_exception()))?;
        Ok(out.e_tag().to_string())
    }

    async fn update(&self, etag: &str, puts: &[(String, String)]) -> Result<String, KvsError> {
        let items = puts
            .iter()
            .map(|(k, v)| PutKeyRequestListItem::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KvsError::Failed {
                op: "UpdateKeys",
                message: e.to_string(),
            })?;
        let out = self
            .client
            .update_keys()
            .kvs_arn(&self.arn)
            .if_match(etag)
            .set_puts(Some(items))
            .send()
            .await
            .map_err(|e| sdk_error("UpdateKeys", e, |e| e.is_conflict_exception()))?;
        Ok(out.e_tag().to_string())
    }
}

/// The SDK's endpoint resolution with the URL replaced: everything else
/// the rules decide (ARN checks, the SigV4A auth scheme and its signing
/// name and region set) is kept.
#[derive(Debug)]
pub struct EndpointOverride {
    url: String,
    rules: DefaultResolver,
}

impl EndpointOverride {
    pub fn new(url: impl Into<String>) -> EndpointOverride {
        EndpointOverride {
            url: url.into(),
            rules: DefaultResolver::new(),
        }
    }
}

impl ResolveEndpoint for EndpointOverride {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        EndpointFuture::new(async move {
            let endpoint = ResolveEndpoint::resolve_endpoint(&self.rules, params).await?;
            Ok(endpoint.into_builder().url(self.url.clone()).build())
        })
    }
}
