//! The CloudFront handler. An origin-request event: request out, with its
//! origin rewritten to the chosen origin of the request's pool. An
//! origin-response event: the origin's answer is counted for passive
//! ejection ([`crate::ejection`]) and the response goes back exactly as it
//! came in, whatever the event holds.
//!
//! Plain async functions over the event and an [`Edge`] (the routing
//! settings and a [`Router`]), so tests call them directly with fixtures
//! and an in-memory store.

use std::sync::Arc;

use crate::decision::Source;
use crate::router::{Decision, Router};
use origin_router::config::{LatencyMode, OriginConfig, RoutingConfig};
use origin_router::sample::UnixMillis;
use serde_json::Value;

use crate::cloudfront::{self, EventError, EventType, RawJson, Request};
use crate::ejection::{self, Recorded};
use serde::Serialize;
use tokio::time::Instant;

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

/// What the handler works with: the request → pool map and the router.
/// Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    routing: Arc<RoutingConfig>,
    router: Router,
}

impl Edge {
    pub fn new(routing: RoutingConfig, router: Router) -> Edge {
        Edge {
            routing: Arc::new(routing),
            router,
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn routing(&self) -> &RoutingConfig {
        &self.routing
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
pub async fn handle(edge: &Edge, payload: Value, now: UnixMillis) -> Result<Handled, EdgeError> {
    let routed = route(edge, cloudfront::parse(payload)?, now).await;
    Ok(Handled {
        request: serde_json::to_value(&routed.request)?,
        decision: routed.decision,
    })
}

/// Handles one origin-request event given as JSON text: parsed once,
/// straight into the typed event, and answered with the typed request. An
/// origin-response event is an `EventType` error here: see [`invoke`].
pub async fn handle_raw(edge: &Edge, payload: &str, now: UnixMillis) -> Result<Routed, EdgeError> {
    let event = cloudfront::parse_str(payload)?;
    if EventType::of(&event.records[0].cf) != Some(EventType::OriginRequest) {
        return Err(EventError::EventType("origin-response".into()).into());
    }
    Ok(route(edge, event, now).await)
}

/// The answer to either event type.
#[derive(Debug)]
pub enum Answer {
    /// Origin-request: the rewritten request, and the decision.
    Request(Box<Routed>),
    /// Origin-response: the response unchanged, and what was recorded.
    Response(Observed),
}

impl Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Request(r) => r.request.serialize(serializer),
            Answer::Response(o) => o.response.serialize(serializer),
        }
    }
}

/// What an origin-response event did.
#[derive(Debug)]
pub struct Observed {
    /// The response as it came in.
    pub response: RawJson,
    /// The (pool, origin) the answer was counted against, with what it did
    /// there; empty when nothing was counted.
    pub recorded: Vec<(String, String, Recorded)>,
    /// The response's status, when it was a valid one.
    pub status: Option<u16>,
    /// The miss's latency, per (pool, origin) it was counted against,
    /// with that origin's ranked latency where a fresh ranking has it.
    pub timed: Vec<crate::traffic::Timed>,
    /// Why no latency was measured, where the pool measures and none was.
    pub dropped: Option<crate::traffic::Dropped>,
}

impl Observed {
    /// The ejections this answer caused, for their log lines.
    pub fn ejections(&self) -> impl Iterator<Item = crate::emf::Ejection<'_>> {
        self.recorded
            .iter()
            .filter_map(|(pool, origin, r)| match r {
                Recorded::Ejected {
                    duration,
                    times,
                    trigger,
                } => Some(crate::emf::Ejection {
                    pool,
                    origin,
                    status: self.status.unwrap_or_default(),
                    trigger: *trigger,
                    duration: *duration,
                    times: *times,
                }),
                _ => None,
            })
    }
}

/// Handles one event of either type given as JSON text (the Lambda path):
/// wall-clock `now` for the decision, tokio's clock for ejections.
pub async fn invoke(edge: &Edge, payload: &str, now: UnixMillis) -> Result<Answer, EdgeError> {
    let event = match cloudfront::parse_str(payload) {
        Ok(event) => event,
        Err(e) => {
            // An origin-response whose request part is malformed still
            // carries a response: it goes back unchanged, counted nowhere
            // (an error would make CloudFront answer the viewer 502).
            if let Some(response) = cloudfront::origin_response_only(payload) {
                tracing::warn!(error = %e, "malformed origin-response event: response returned unchanged, counted nowhere");
                return Ok(Answer::Response(Observed {
                    response,
                    recorded: Vec::new(),
                    status: None,
                    timed: Vec::new(),
                    dropped: None,
                }));
            }
            return Err(e.into());
        }
    };
    match EventType::of(&event.records[0].cf) {
        Some(EventType::OriginResponse) => {
            Ok(Answer::Response(observe(edge, event, now, Instant::now())))
        }
        _ => Ok(Answer::Request(Box::new(route(edge, event, now).await))),
    }
}

/// Counts an origin-response's status against the origin that answered
/// (the origin the request was sent to, mapped back to the config by host
/// name and port), times the miss where the request carries the edge's
/// stamp ([`crate::traffic`]; `now` is the wall clock), and returns the
/// response unchanged. An origin not in the config, or a status that is
/// not a three-digit code, is logged and counts nothing.
pub fn observe(edge: &Edge, event: cloudfront::Event, now: UnixMillis, at: Instant) -> Observed {
    let record = event
        .records
        .into_iter()
        .next()
        .expect("parse checked one record");
    let cf = record.cf;
    let response = cf.response.expect("parse checked the response");
    let mut recorded = Vec::new();
    let status_text = cloudfront::response_status(&response);
    let Some(status) = status_text.as_deref().and_then(ejection::parse_status) else {
        tracing::warn!(
            status = status_text
                .as_deref()
                .map(|s| s.chars().take(16).collect::<String>())
                .unwrap_or_default(),
            "origin-response without a valid status: counted nowhere, response unchanged"
        );
        return Observed {
            response,
            recorded,
            status: None,
            timed: Vec::new(),
            dropped: None,
        };
    };
    let Some(custom) = cf.request.origin.as_ref().and_then(|o| o.custom.as_ref()) else {
        tracing::info!(
            status,
            "origin-response from a non-custom origin: counted nowhere"
        );
        return Observed {
            response,
            recorded,
            status: Some(status),
            timed: Vec::new(),
            dropped: None,
        };
    };
    let distribution = cf.config.distribution_id.as_str();
    let routed = crate::routing::pool_for(
        &edge.routing,
        cf.request.header("host"),
        Some(distribution).filter(|d| !d.is_empty()),
    );
    // Every (pool, origin) with this host and port; the request's own pool
    // first, and only it when it has the origin.
    let mut pairs: Vec<(&str, &str)> = edge
        .router
        .pools()
        .iter()
        .flat_map(|(name, pool)| {
            pool.origins
                .iter()
                .filter(|o| {
                    o.host.eq_ignore_ascii_case(&custom.domain_name) && o.port() == custom.port
                })
                .map(move |o| (name.as_str(), o.id.as_str()))
        })
        .collect();
    if let Some(routed) = routed {
        if pairs.iter().any(|(p, _)| *p == routed) {
            pairs.retain(|(p, _)| *p == routed);
        }
    }
    if pairs.is_empty() {
        tracing::info!(
            domain = %custom.domain_name.chars().take(253).collect::<String>(),
            port = custom.port,
            status,
            "origin-response from an origin not in the config: counted nowhere"
        );
    }
    // The miss's latency, from the stamp the origin-request handler wrote
    // (only pools that measure send one).
    let measures = |pool: &str| {
        edge.router
            .pools()
            .get(pool)
            .is_some_and(|p| p.outlier.latency != LatencyMode::Off)
    };
    let mut timed = Vec::new();
    let mut dropped = None;
    if pairs.iter().any(|(p, _)| measures(p)) {
        match crate::traffic::measure(cf.request.header(crate::traffic::HEADER), now) {
            Ok(latency) => {
                for (pool, origin) in pairs.iter().filter(|(p, _)| measures(p)) {
                    if let Some((r, ranked_ms)) =
                        edge.router.record_latency(pool, origin, latency, now, at)
                    {
                        timed.push(crate::traffic::Timed {
                            pool: pool.to_string(),
                            origin: origin.to_string(),
                            latency,
                            ranked_ms,
                            slow: matches!(r, Recorded::Timed { slow: true })
                                || matches!(r, Recorded::Ejected { .. } | Recorded::Refused(_)),
                        });
                        if matches!(r, Recorded::Ejected { .. } | Recorded::Refused(_)) {
                            recorded.push((pool.to_string(), origin.to_string(), r));
                        }
                    }
                }
            }
            // A missing stamp is a request this edge did not route (a
            // passthrough): nothing to count. The others are counted.
            Err(crate::traffic::Dropped::Missing) => {}
            Err(why) => {
                tracing::debug!(reason = why.as_str(), "no latency measured for this miss");
                dropped = Some(why);
            }
        }
    }
    for (pool, origin) in pairs {
        if let Some(r) = edge.router.record_response(pool, origin, status, at) {
            recorded.push((pool.to_string(), origin.to_string(), r));
        }
    }
    Observed {
        response,
        recorded,
        status: Some(status),
        timed,
        dropped,
    }
}

/// Decides for a parsed event and rewrites its request.
pub async fn route(edge: &Edge, event: cloudfront::Event, now: UnixMillis) -> Routed {
    let record = event
        .records
        .into_iter()
        .next()
        .expect("parse checked one record");
    let mut request = record.cf.request;
    let distribution = record.cf.config.distribution_id;

    let router = &edge.router;
    let pool = crate::routing::pool_for(
        &edge.routing,
        request.header("host"),
        Some(distribution.as_str()).filter(|d| !d.is_empty()),
    )
    .map(str::to_string);
    let has_custom_origin = request.origin.as_ref().is_some_and(|o| o.custom.is_some());
    let decision = match pool {
        Some(pool) if has_custom_origin => {
            let key = match router.pools().get(&pool) {
                Some(p) => crate::key::for_pool(&p.steering, &request),
                None => std::borrow::Cow::Borrowed(""),
            };
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
            Decision::passthrough(other.as_deref().unwrap_or(""), std::time::Duration::ZERO)
        }
    };
    // A stamp the viewer sent never reaches the origin; the edge's own goes
    // on requests it routed to an origin of a pool that measures.
    let mut sent = None;
    if decision.source != Source::Passthrough {
        let pool = router.pools().get(&decision.pool);
        if let Some((pool, origin)) = pool.and_then(|p| Some((p, p.origin(&decision.origin)?))) {
            rewrite(&mut request, origin);
            // The only timeout a Lambda@Edge origin object takes
            // (`readTimeout`, 4-60 s); never derived from probes
            // (decision::timeouts).
            if let Some(read) = pool.cloudfront.read_timeout_secs() {
                if let Some(custom) = request.origin.as_mut().and_then(|o| o.custom.as_mut()) {
                    custom.read_timeout = u32::try_from(read).ok();
                }
            }
            if pool.outlier.latency != LatencyMode::Off {
                sent = Some(now.saturating_add(decision.elapsed.as_millis() as u64));
            }
        }
    }
    crate::traffic::stamp(&mut request, sent);
    Routed { request, decision }
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
