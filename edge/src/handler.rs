//! The CloudFront origin-request handler: event in, request out, with its
//! origin rewritten to the chosen origin of the request's pool.
//!
//! A plain async function over the event and a [`Router`], so tests call it
//! directly with fixtures and an in-memory store.

use crate::decision::{Decision, Router, Source};
use origin_router::config::OriginConfig;
use origin_router::sample::UnixMillis;
use serde_json::Value;

use crate::cloudfront::{self, EventError, Request};

/// Why an invocation failed. Reported to Lambda with a named error type.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    MalformedEvent(#[from] EventError),
    #[error("cannot encode the response: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<EdgeError> for lambda_runtime::Diagnostic {
    fn from(e: EdgeError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: match e {
                EdgeError::MalformedEvent(_) => "MalformedEvent",
                EdgeError::Encode(_) => "EncodeError",
            }
            .to_string(),
            error_message: e.to_string(),
        }
    }
}

/// What the handler did, for the log line and tests.
#[derive(Debug)]
pub struct Handled {
    pub request: Value,
    pub decision: Decision,
}

/// The rewritten request and the decision behind it.
#[derive(Debug)]
pub struct Routed {
    pub request: Request,
    pub decision: Decision,
}

/// Handles one event (as a JSON value) at wall-clock `now`.
pub async fn handle(
    router: &Router,
    payload: Value,
    now: UnixMillis,
) -> Result<Handled, EdgeError> {
    let routed = route(router, cloudfront::parse(payload)?, now).await;
    Ok(Handled {
        request: serde_json::to_value(&routed.request)?,
        decision: routed.decision,
    })
}

/// Handles one event given as JSON text: parsed once, straight into the
/// typed event, and answered with the typed request (the Lambda path).
pub async fn handle_raw(
    router: &Router,
    payload: &str,
    now: UnixMillis,
) -> Result<Routed, EdgeError> {
    Ok(route(router, cloudfront::parse_str(payload)?, now).await)
}

/// Decides for a parsed event and rewrites its request.
pub async fn route(router: &Router, event: cloudfront::Event, now: UnixMillis) -> Routed {
    let record = event
        .records
        .into_iter()
        .next()
        .expect("parse checked one record");
    let mut request = record.cf.request;
    let distribution = record.cf.config.distribution_id;

    let pool = crate::routing::pool_for(
        &router.config().routing,
        request.header("host"),
        Some(distribution.as_str()).filter(|d| !d.is_empty()),
    )
    .map(str::to_string);
    let has_custom_origin = request.origin.as_ref().is_some_and(|o| o.custom.is_some());
    let decision = match pool {
        Some(pool) if has_custom_origin => {
            let key = crate::key::for_pool(router.config(), &pool, &request);
            router.decide_keyed(&pool, &key, now).await
        }
        other => {
            tracing::info!(
                pool = other.as_deref().unwrap_or(""),
                host = request.header("host").unwrap_or(""),
                distribution = %distribution,
                reason = if other.is_some() { "not a custom origin" } else { "no pool for this request" },
                "passing the request through unchanged"
            );
            passthrough(other.unwrap_or_default())
        }
    };
    if decision.source != Source::Passthrough {
        let origin = router
            .config()
            .pools
            .get(&decision.pool)
            .and_then(|p| p.origin(&decision.origin));
        if let Some(origin) = origin {
            rewrite(&mut request, origin);
        }
    }
    Routed { request, decision }
}

fn passthrough(pool: String) -> Decision {
    Decision {
        pool,
        origin: String::new(),
        source: Source::Passthrough,
        ranking_region: None,
        ranking_age_ms: None,
        losers: Vec::new(),
        band: None,
        elapsed: std::time::Duration::ZERO,
    }
}

/// Points the request at `origin`: domain name, port, protocol, and the
/// Host header as the origin's policy says.
pub fn rewrite(request: &mut Request, origin: &OriginConfig) {
    if let Some(custom) = request.origin.as_mut().and_then(|o| o.custom.as_mut()) {
        custom.domain_name = origin.host.clone();
        custom.port = origin.port();
        custom.protocol = origin.protocol.as_str().to_string();
    }
    // The same Host the probes send (`OriginConfig::host_header`).
    if let Some(host) = origin.host_header() {
        request.set_header("host", "Host", &host);
    }
}
