//! State-change events of the rankings a region's leader publishes: every
//! origin state change and every change of the top origin, as one
//! structured log line each (`event = "origin_state"` / `"top_origin"`,
//! schema version [`SCHEMA_VERSION`]).
//!
//! [`diff`] is pure (previous ranking, next ranking in; events out) so the
//! rules are tested without a worker. EventBridge delivery is not built yet.

use origin_router::document::RankingDocument;

/// Version of the event fields below.
pub const SCHEMA_VERSION: u32 = 1;

/// One change between two rankings of the same (pool, region).
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

/// Logs each event of `next` against `previous`.
pub fn log(previous: Option<&RankingDocument>, next: &RankingDocument) {
    for e in diff(previous, next) {
        match e {
            Event::OriginState { origin, from, to } => tracing::info!(
                event = "origin_state",
                schema = SCHEMA_VERSION,
                pool = %next.pool,
                region = %next.region,
                origin = %origin,
                from = from.unwrap_or("none"),
                to,
                "origin state changed"
            ),
            Event::TopOrigin { from, to } => tracing::info!(
                event = "top_origin",
                schema = SCHEMA_VERSION,
                pool = %next.pool,
                region = %next.region,
                from = from.as_deref().unwrap_or("none"),
                to = %to,
                "top origin changed"
            ),
        }
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
}
