//! The Origin Router edge: a CloudFront origin-request and origin-response
//! handler on `lambda_runtime`, and everything only it needs.
//!
//! - [`cloudfront`]: the event types (with round-trip fidelity);
//! - [`routing`]: request → pool;
//! - [`decision`]: the decision, one pure function ([`decision::decide`])
//!   of a per-pool view and `now`, held to the decision vectors in
//!   `edge/tests/vectors/`;
//! - [`router`]: the I/O and bookkeeping around it: the per-pool cache,
//!   the table read, the race, ejection state;
//! - [`settings`]: each layer's settings, built once from the config;
//! - [`steering`]: which usable origin takes a request (`fastest`, or a
//!   latency band spread by weighted rendezvous hashing), pure;
//! - [`key`]: the request's steering key (URI, viewer, header, cookie);
//! - [`race`]: the live race, 0.8 s per attempt under a 0.9 s watchdog;
//! - [`ejection`]: passive ejection of origins answering 5xx, fed by
//!   origin-response events;
//! - [`handler`]: event in, request with its origin rewritten out, over an
//!   [`handler::Edge`] (the routing settings and the router);
//! - [`emf`]: one CloudWatch Embedded Metric Format line per decision,
//!   and one per ejection;
//! - [`decision_log`]: those lines, written after the response is posted;
//! - [`run`]: builds the settings, store, race and router once, then
//!   serves events.

pub mod cloudfront;
pub mod decision;
pub mod decision_log;
pub mod ejection;
pub mod emf;
pub mod function;
pub mod handler;
pub mod key;
pub mod race;
pub mod router;
pub mod routing;
pub mod settings;
pub mod steering;
pub mod traffic;

use std::path::PathBuf;
use std::sync::Arc;

use decision_log::{DecisionLog, WriteAfterResponse};
use lambda_runtime::{layers::TracingLayer, service_fn, LambdaEvent, Runtime};
use origin_router::config::Config;
use origin_router::sample::unix_millis_now;
use origin_router::store::{self, ClientTuning};
use race::ProbeRacer;
use serde_json::value::RawValue;
use settings::EdgeSettings;

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

/// Builds the router once, then serves events until the runtime stops.
pub async fn run(config: Config, region: String) -> Result<(), lambda_runtime::Error> {
    let settings = EdgeSettings::new(&config, region.clone());
    // A viewer waits on a table read: every SDK call is bounded by the
    // edge's table_timeout, with one retry at most.
    let tuning = ClientTuning {
        timeout: Some(settings.timing.table_timeout),
        max_attempts: Some(2),
    };
    let store = store::open(&config.store, &region, tuning).await;
    let racer = Arc::new(ProbeRacer::with_settings(&settings.race, config.origins())?);
    drop(config);
    let edge = settings.edge(store, racer);
    edge.router().warm_up().await;
    tracing::info!(region = %region, pools = settings.pools.len(), "edge ready");
    let region = Arc::new(region);
    let log = Arc::new(DecisionLog::stdout());
    let handler_log = log.clone();
    // The payload stays raw JSON text until the handler parses it, once,
    // straight into the typed event.
    let handler = service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let (edge, region, log) = (edge.clone(), region.clone(), handler_log.clone());
        async move {
            let handled = handler::invoke(&edge, event.payload.get(), unix_millis_now()).await;
            match &handled {
                Ok(handler::Answer::Request(h)) => {
                    log.record(&h.decision, &region, unix_millis_now())
                }
                Ok(handler::Answer::Response(observed)) => {
                    log.record_ejections(observed, &region, unix_millis_now())
                }
                Err(e) => {
                    tracing::warn!(request_id = %event.context.request_id, error = %e, "rejected an event")
                }
            }
            handled
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
