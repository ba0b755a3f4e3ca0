//! Watching real workers from outside, through what they already publish:
//! their log events. A worker runs each round in a `round` span that names
//! its region and logs every failed probe (`probe failed`, at debug level)
//! with the origin. [`ProbeFailures`] is a `tracing` layer that keeps the
//! (region, time) of each failed probe of one origin, so the failover bench
//! times "first failed probe" without any hook into the worker.

use std::fmt;
use std::sync::{Arc, Mutex};

use origin_router::sample::{unix_millis_now, UnixMillis};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Failed probes of one origin: (region, when the failure was logged).
#[derive(Clone, Default)]
pub struct ProbeFailures {
    origin: Arc<str>,
    seen: Arc<Mutex<Vec<(String, UnixMillis)>>>,
}

/// The region a `round` span names, kept in the span's extensions.
struct RoundRegion(String);

impl ProbeFailures {
    pub fn of(origin: &str) -> Self {
        ProbeFailures {
            origin: origin.into(),
            seen: Arc::default(),
        }
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The first failure logged in `region` at or after `since`.
    pub fn first(&self, region: &str, since: UnixMillis) -> Option<UnixMillis> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(r, at)| r == region && *at >= since)
            .map(|(_, at)| *at)
            .min()
    }
}

/// Collects the string and debug fields this layer reads.
#[derive(Default)]
struct Fields {
    message: String,
    origin: String,
    region: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "origin" => self.origin = value,
            "region" => self.region = value,
            _ => {}
        }
    }
}

impl<S> Layer<S> for ProbeFailures
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "round" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(RoundRegion(fields.region));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message != "probe failed" || fields.origin != *self.origin {
            return;
        }
        let region = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<RoundRegion>().map(|r| r.0.clone()))
        });
        if let Some(region) = region {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((region, unix_millis_now()));
        }
    }
}
