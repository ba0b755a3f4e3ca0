//! The Origin Router edge: a CloudFront origin-request handler on
//! `lambda_runtime`.
//!
//! - [`cloudfront`]: the event types (with round-trip fidelity);
//! - [`handler`]: event in, request with its origin rewritten out;
//! - [`emf`]: one CloudWatch Embedded Metric Format line per decision;
//! - [`decision_log`]: those lines, written after the response is posted;
//! - [`run`]: builds the store, race and router once, then serves events.
//!
//! The decision itself (cache, stale-while-revalidate, table, race,
//! known-down) is [`origin_router::decision::Router`], shared with the demo.

pub mod cloudfront;
pub mod decision_log;
pub mod emf;
pub mod handler;

use std::path::PathBuf;
use std::sync::Arc;

use decision_log::{DecisionLog, WriteAfterResponse};
use lambda_runtime::{layers::TracingLayer, service_fn, LambdaEvent, Runtime};
use origin_router::config::Config;
use origin_router::decision::{ProbeRacer, Router};
use origin_router::sample::unix_millis_now;
use origin_router::store::{DynamoStore, EmbeddedStore, RankingStore};
use serde_json::value::RawValue;

/// The config file: `ORIGIN_ROUTER_CONFIG`, else `origin-router.toml` beside
/// the executable (Lambda@Edge has no environment variables, so the config
/// is bundled in the zip next to `bootstrap`).
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ORIGIN_ROUTER_CONFIG") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("origin-router.toml")))
        .unwrap_or_else(|| PathBuf::from("origin-router.toml"))
}

/// The store the edge reads: the table (one Query per pool on the replica
/// nearest `AWS_REGION`, bounded by the SDK's timeouts as well as the
/// router's) or the embedded store.
pub async fn open_store(config: &Config, region: &str) -> Arc<dyn RankingStore> {
    match &config.store.dynamodb_table {
        Some(table) => {
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(config.edge.table_timeout)
                .operation_timeout(config.edge.table_timeout * 2)
                .build();
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(replica) = config.store.replica_for(region) {
                loader = loader.region(aws_config::Region::new(replica));
            }
            let sdk = loader
                .timeout_config(timeouts)
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
                .load()
                .await;
            Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                table.clone(),
                config.store.item_ttl,
            ))
        }
        None => Arc::new(EmbeddedStore::new(config.store.embedded_path.clone())),
    }
}

/// Builds the router once, then serves events until the runtime stops.
pub async fn run(config: Config, region: String) -> Result<(), lambda_runtime::Error> {
    let store = open_store(&config, &region).await;
    let racer = Arc::new(ProbeRacer::from_config(&config)?);
    let router = Router::new(Arc::new(config), region.clone(), store, racer);
    tracing::info!(region = %region, pools = router.config().pools.len(), "edge ready");
    let region = Arc::new(region);
    let log = Arc::new(DecisionLog::stdout());
    let handler_log = log.clone();
    // The payload stays raw JSON text until the handler parses it, once,
    // straight into the typed event.
    let handler = service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let (router, region, log) = (router.clone(), region.clone(), handler_log.clone());
        async move {
            let handled =
                handler::handle_raw(&router, event.payload.get(), unix_millis_now()).await;
            match &handled {
                Ok(h) => log.record(&h.decision, &region, unix_millis_now()),
                Err(e) => {
                    tracing::warn!(request_id = %event.context.request_id, error = %e, "rejected an event")
                }
            }
            handled.map(|h| h.request)
        }
    });
    // The tracing span, outermost, gives every log line of an invocation
    // its request id, a failed decision-line write included.
    Runtime::new(handler)
        .layer(WriteAfterResponse::new(log))
        .layer(TracingLayer::new())
        .run()
        .await
}

/// Fills the function metadata `lambda_runtime` insists on when the binary
/// runs outside a Lambda-provided runtime (behind the Lambda@Edge bridge, or
/// a local Runtime API). Call before any thread starts.
pub fn default_lambda_env() {
    for (name, value) in [
        ("AWS_LAMBDA_FUNCTION_NAME", "origin-router-edge"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}
