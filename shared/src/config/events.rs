//! `[events]`: where the region's leader sends state-change events besides
//! its log (Amazon EventBridge). Without `event_bus`, log lines only.

use serde::{Deserialize, Serialize};

use super::validate::Validator;

/// Longest EventBridge bus name or ARN accepted.
const MAX_BUS: usize = 1600;

/// Delivery of state-change events to EventBridge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The event bus (name or ARN) the leader calls `PutEvents` on, with
    /// source `origin-router`. Default: none (structured log lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_bus: Option<String>,
    /// The bus's AWS region. Default: the region in the bus ARN, else the
    /// SDK's default region chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Another EventBridge endpoint (a local test server). Default: AWS's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl EventsConfig {
    /// The region of the bus: `region`, else the one in an ARN
    /// (`arn:aws:events:REGION:ACCOUNT:event-bus/NAME`).
    pub fn bus_region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            let bus = self.event_bus.as_deref()?;
            let region = bus.strip_prefix("arn:")?.split(':').nth(2)?;
            Some(region.to_string()).filter(|r| !r.is_empty())
        })
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if let Some(bus) = &self.event_bus {
            let name_ok = |s: &str| {
                (1..=256).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
            };
            let ok = if bus.starts_with("arn:") {
                bus.len() <= MAX_BUS
                    && bus.split(':').count() == 6
                    && bus
                        .rsplit_once("event-bus/")
                        .is_some_and(|(_, name)| name_ok(name))
            } else {
                name_ok(bus)
            };
            if !ok {
                let shown: String = bus.chars().take(80).collect();
                v.fail(
                    "events.event_bus",
                    format!("`{shown}` is not an EventBridge bus name (1-256 of A-Z a-z 0-9 _ . - /) or bus ARN"),
                );
            }
        }
        if let Some(region) = &self.region {
            if !super::is_name(region) {
                v.fail("events.region", format!("`{region}` is not a region name"));
            }
        }
        if let Some(url) = &self.endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                v.fail(
                    "events.endpoint",
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_names_and_arns() {
        let check = |bus: &str| {
            let mut v = Validator::default();
            EventsConfig {
                event_bus: Some(bus.into()),
                ..Default::default()
            }
            .validate(&mut v);
            v.problems
        };
        assert!(check("default").is_empty());
        assert!(check("arn:aws:events:eu-west-1:123456789012:event-bus/ops").is_empty());
        for bad in ["", "a b", "arn:aws:events:eu-west-1", "bus;rm -rf"] {
            let p = check(bad);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].path, "events.event_bus");
        }
        let arn = EventsConfig {
            event_bus: Some("arn:aws:events:eu-west-1:123456789012:event-bus/ops".into()),
            ..Default::default()
        };
        assert_eq!(arn.bus_region().as_deref(), Some("eu-west-1"));
        assert_eq!(EventsConfig::default().bus_region(), None);
    }
}
