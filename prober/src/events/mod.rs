//! State-change events of the region's leader: every origin state change
//! (healthy / degraded / down / drained), every change of the top origin,
//! and every override start and end.
//!
//! Each event is one structured log line, always (`event =
//! "origin_state"` / `"top_origin"` / `"override_started"` /
//! `"override_ended"`, `schema` = [`SCHEMA_VERSION`]), and, when
//! `events.event_bus` is configured, an Amazon EventBridge event put by
//! [`bridge`] in the background: source [`SOURCE`], the detail types and
//! detail fields documented on [`Event::detail_type`] and [`Event::detail`]
//! (and in the README). Delivery never blocks probing or publishing.
//!
//! [`diff`] and [`override_change`] are pure (before and after in, events
//! out) so the rules are tested without a worker.

pub mod bridge;

use origin_router::control::Control;
use origin_router::document::RankingDocument;
use origin_router::sample::UnixMillis;
use serde_json::{json, Value};

/// Version of the event fields below (`schema` in log lines, `version`
/// in EventBridge details). Fields are only ever added within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// The EventBridge `Source` of every event.
pub const SOURCE: &str = "origin-router";

/// One change of a pool in the leader's region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An origin's state changed (`from` is `None` for a new origin).
    OriginState {
        origin: String,
        from: Option<&'static str>,
        to: &'static str,
    },
    /// The first-ranked origin changed.
    TopOrigin { from: Option<String>, to: String },
    /// An override came into force in this region.
    OverrideStarted(Control),
    /// An override ended (expired or cleared) in this region.
    OverrideEnded(Control),
}

impl Event {
    /// The EventBridge `DetailType`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Event::OriginState { .. } => "Origin State Changed",
            Event::TopOrigin { .. } => "Top Origin Changed",
            Event::OverrideStarted(_) => "Override Started",
            Event::OverrideEnded(_) => "Override Ended",
        }
    }

    /// The log line's `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::OriginState { .. } => "origin_state",
            Event::TopOrigin { .. } => "top_origin",
            Event::OverrideStarted(_) => "override_started",
            Event::OverrideEnded(_) => "override_ended",
        }
    }

    /// The EventBridge `Detail` (schema [`SCHEMA_VERSION`]): always
    /// `version` (a string), `pool`, `region` and `at` (Unix ms); then
    /// - Origin State Changed: `origin`, `from` (null for a new origin),
    ///   `to` (healthy | degraded | down | drained);
    /// - Top Origin Changed: `from` (null at first), `to`;
    /// - Override Started / Ended: `origin`, `by`, `reason`, `set_at`,
    ///   `until` (Unix ms).
    pub fn detail(&self, pool: &str, region: &str, at: UnixMillis) -> Value {
        let mut v = json!({
            "version": SCHEMA_VERSION.to_string(),
            "pool": pool,
            "region": region,
            "at": at,
        });
        let extra = match self {
            Event::OriginState { origin, from, to } => {
                json!({"origin": origin, "from": from, "to": to})
            }
            Event::TopOrigin { from, to } => json!({"from": from, "to": to}),
            Event::OverrideStarted(c) | Event::OverrideEnded(c) => json!({
                "origin": c.origin, "by": c.by, "reason": c.reason,
                "set_at": c.set_at, "until": c.until,
            }),
        };
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    }
}

/// The events between `previous` (none at a worker's start: then no event,
/// since nothing is known to have changed) and `next`.
pub fn diff(previous: Option<&RankingDocument>, next: &RankingDocument) -> Vec<Event> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for o in &next.origins {
        let before = previous.origins.iter().find(|p| p.id == o.id);
        let from = before.map(|p| p.state.as_str());
        if from != Some(o.state.as_str()) {
            events.push(Event::OriginState {
                origin: o.id.clone(),
                from,
                to: o.state.as_str(),
            });
        }
    }
    let top = |d: &RankingDocument| d.origins.first().map(|o| o.id.clone());
    if let Some(to) = top(next) {
        if top(previous).as_ref() != Some(&to) {
            events.push(Event::TopOrigin {
                from: top(previous),
                to,
            });
        }
    }
    events
}

/// The events between the override in force before and the one in force
/// now (of one pool and region): a new or replaced override starts, a gone
/// or replaced one ends.
pub fn override_change(before: Option<&Control>, now: Option<&Control>) -> Vec<Event> {
    match (before, now) {
        (Some(b), Some(n)) if b == n => Vec::new(),
        (b, n) => b
            .map(|b| Event::OverrideEnded(b.clone()))
            .into_iter()
            .chain(n.map(|n| Event::OverrideStarted(n.clone())))
            .collect(),
    }
}

/// Where a leader's events go: its log, and EventBridge when configured.
#[derive(Clone)]
pub struct Events {
    region: String,
    bridge: Option<bridge::Bridge>,
}

impl Events {
    /// Log lines only.
    pub fn log_only(region: impl Into<String>) -> Self {
        Events {
            region: region.into(),
            bridge: None,
        }
    }

    /// Log lines, and EventBridge through `bridge`.
    pub fn with_bridge(region: impl Into<String>, bridge: bridge::Bridge) -> Self {
        Events {
            region: region.into(),
            bridge: Some(bridge),
        }
    }

    /// Logs each event of `pool` and hands it to EventBridge; never waits.
    pub fn emit(&self, pool: &str, events: Vec<Event>, at: UnixMillis) {
        for e in events {
            log(&e, pool, &self.region);
            if let Some(bridge) = &self.bridge {
                bridge.put(e.detail_type(), e.detail(pool, &self.region, at));
            }
        }
    }
}

fn log(e: &Event, pool: &str, region: &str) {
    let event = e.name();
    match e {
        Event::OriginState { origin, from, to } => tracing::info!(
            event,
            schema = SCHEMA_VERSION,
            pool,
            region,
            origin = %origin,
            from = from.unwrap_or("none"),
            to,
            "origin state changed"
        ),
        Event::TopOrigin { from, to } => tracing::info!(
            event,
            schema = SCHEMA_VERSION,
            pool,
            region,
            from = from.as_deref().unwrap_or("none"),
            to = %to,
            "top origin changed"
        ),
        Event::OverrideStarted(c) | Event::OverrideEnded(c) => tracing::info!(
            event,
            schema = SCHEMA_VERSION,
            pool,
            region,
            origin = %c.origin,
            by = %c.by,
            reason = %c.reason,
            until = c.until,
            "{}",
            if matches!(e, Event::OverrideStarted(_)) { "override started" } else { "override ended" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::document::{OriginState, RankedOrigin};

    fn doc(origins: &[(&str, OriginState)]) -> RankingDocument {
        RankingDocument::new(
            "web",
            "eu-west-1",
            1,
            1,
            origins
                .iter()
                .map(|(id, s)| RankedOrigin::measured(id, *s, 1.0, 1))
                .collect(),
        )
    }

    #[test]
    fn state_and_top_changes_are_events_and_nothing_else_is() {
        use OriginState::*;
        let a = doc(&[("a", Healthy), ("b", Healthy)]);
        assert!(diff(None, &a).is_empty());
        assert!(diff(Some(&a), &a).is_empty());
        let b = doc(&[("b", Healthy), ("a", Down)]);
        assert_eq!(
            diff(Some(&a), &b),
            [
                Event::OriginState {
                    origin: "a".into(),
                    from: Some("healthy"),
                    to: "down"
                },
                Event::TopOrigin {
                    from: Some("a".into()),
                    to: "b".into()
                },
            ]
        );
        let c = doc(&[("b", Healthy), ("a", Down), ("n", Degraded)]);
        assert_eq!(
            diff(Some(&b), &c),
            [Event::OriginState {
                origin: "n".into(),
                from: None,
                to: "degraded"
            }]
        );
    }

    #[test]
    fn overrides_start_and_end() {
        let o = origin_router::control::Control {
            kind: origin_router::control::ControlKind::Override,
            pool: "web".into(),
            region: "all-regions".into(),
            origin: "a".into(),
            set_at: 1,
            until: 2,
            by: "ops".into(),
            reason: "incident".into(),
        };
        assert!(override_change(None, None).is_empty());
        assert!(override_change(Some(&o), Some(&o)).is_empty());
        assert_eq!(
            override_change(None, Some(&o)),
            [Event::OverrideStarted(o.clone())]
        );
        assert_eq!(
            override_change(Some(&o), None),
            [Event::OverrideEnded(o.clone())]
        );
        let mut p = o.clone();
        p.origin = "b".into();
        assert_eq!(
            override_change(Some(&o), Some(&p)),
            [
                Event::OverrideEnded(o.clone()),
                Event::OverrideStarted(p.clone())
            ]
        );
        let d = Event::OverrideStarted(p).detail("web", "eu-west-1", 7);
        assert_eq!(d["version"], "1");
        assert_eq!(
            (d["pool"].as_str(), d["region"].as_str(), d["at"].as_u64()),
            (Some("web"), Some("eu-west-1"), Some(7))
        );
        assert_eq!(
            (d["origin"].as_str(), d["by"].as_str(), d["until"].as_u64()),
            (Some("b"), Some("ops"), Some(2))
        );
        let d = Event::OriginState {
            origin: "a".into(),
            from: None,
            to: "drained",
        }
        .detail("web", "r", 1);
        assert!(d["from"].is_null());
        assert_eq!(d["to"], "drained");
    }
}
