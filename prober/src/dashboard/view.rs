//! The JSON model the page renders (`GET /api/state`): a pure function of
//! what was last read from the store, the history and `now`.

use std::collections::{BTreeMap, VecDeque};

use origin_router::document::RankingDocument;
use origin_router::sample::UnixMillis;
use origin_router::store::PoolRankings;
use serde_json::{json, Value};

use super::controls::{Control, Controls};
use super::history::{top_of, Change, History, Point};

/// Everything the snapshot is made of.
pub struct Inputs<'a> {
    /// Where the rankings come from (`store::describe`).
    pub store: &'a str,
    /// Each pool's last good read.
    pub pools: &'a BTreeMap<String, PoolRankings>,
    /// The configured order of each pool's origins (the matrix's columns).
    pub origin_order: &'a BTreeMap<String, Vec<String>>,
    pub history: &'a History,
    pub controls: &'a Controls,
    /// A ranking older than this is stale (the edge's `ranking_max_age`).
    pub max_age_ms: u64,
    /// When the store last answered, and the last read's error if it failed.
    pub read_at: Option<UnixMillis>,
    pub error: Option<&'a str>,
    pub poll_ms: u64,
}

/// The snapshot at `now`.
pub fn snapshot(inputs: &Inputs<'_>, now: UnixMillis) -> Value {
    let mut names: Vec<&str> = inputs.pools.keys().map(String::as_str).collect();
    names.extend(inputs.history.pools());
    names.sort_unstable();
    names.dedup();
    let empty = PoolRankings::default();
    let pools: Vec<Value> = names
        .into_iter()
        .map(|name| pool(inputs, name, inputs.pools.get(name).unwrap_or(&empty), now))
        .collect();
    let skipped: Vec<Value> = inputs
        .pools
        .iter()
        .flat_map(|(pool, read)| {
            read.skipped
                .iter()
                .map(move |(what, why)| json!({"pool": pool, "entry": what, "reason": why}))
        })
        .collect();
    json!({
        "now_ms": now,
        "store": inputs.store,
        "read_at_ms": inputs.read_at,
        "error": inputs.error,
        "poll_ms": inputs.poll_ms,
        "max_age_ms": inputs.max_age_ms,
        "window_ms": super::history::WINDOW_MS,
        "controls": controls(inputs.controls),
        "pools": pools,
        "skipped": skipped,
    })
}

fn pool(inputs: &Inputs<'_>, name: &str, read: &PoolRankings, now: UnixMillis) -> Value {
    // Columns: the configured order, then any other origin seen, by name.
    let mut origins: Vec<String> = inputs.origin_order.get(name).cloned().unwrap_or_default();
    let mut extra: Vec<&str> = read
        .rankings
        .iter()
        .flat_map(|d| d.origins.iter().map(|o| o.id.as_str()))
        .chain(inputs.history.series_of(name).map(|(_, o, _)| o))
        .filter(|o| !origins.iter().any(|c| c == o))
        .collect();
    extra.sort_unstable();
    extra.dedup();
    origins.extend(extra.into_iter().map(str::to_string));

    let rankings: Vec<Value> = read
        .rankings
        .iter()
        .map(|d| ranking(d, inputs.max_age_ms, now))
        .collect();
    let series: Vec<Value> = inputs
        .history
        .series_of(name)
        .map(|(region, origin, points)| {
            let points: Vec<Value> = plotted(points)
                .map(|p| json!([p.at, p.latency_ms, p.state.as_str()]))
                .collect();
            json!({"region": region, "origin": origin, "points": points})
        })
        .collect();
    let markers: Vec<Value> = inputs
        .history
        .markers_of(name)
        .map(|m| match &m.change {
            Change::State {
                origin,
                from,
                to,
                reason,
            } => json!({
                "at": m.at, "region": m.region, "kind": "state", "origin": origin,
                "from": from.as_str(), "to": to.as_str(), "reason": reason,
            }),
            Change::Top { from, to } => json!({
                "at": m.at, "region": m.region, "kind": "top", "from": from, "to": to,
            }),
        })
        .collect();
    json!({
        "name": name,
        "origins": origins,
        "rankings": rankings,
        "series": series,
        "markers": markers,
    })
}

/// Points sent per series at most: the plot is at most 800 units wide, and
/// an hour at one ranking a second (3,600 points) for every series would
/// make each snapshot megabytes, fetched every poll.
pub const MAX_PLOTTED: usize = 300;

/// Every `n`th point of `points` so that at most about [`MAX_PLOTTED`]
/// remain, keeping the last one and every point whose state differs from
/// the one before (a short outage never disappears from the plot).
fn plotted(points: &VecDeque<Point>) -> impl Iterator<Item = &Point> {
    let stride = points.len().div_ceil(MAX_PLOTTED).max(1);
    let last = points.len().saturating_sub(1);
    points.iter().enumerate().filter_map(move |(i, p)| {
        let changed = i > 0 && points[i - 1].state != p.state;
        (i % stride == 0 || i == last || changed).then_some(p)
    })
}

fn ranking(doc: &RankingDocument, max_age_ms: u64, now: UnixMillis) -> Value {
    let age = doc.age_ms(now);
    let origins: Vec<Value> = doc
        .origins
        .iter()
        .map(|o| {
            json!({
                "id": o.id,
                "state": o.state.as_str(),
                "latency_ms": o.latency_ms,
                "success_ratio": o.success_ratio,
                "last_failure": o.last_failure.map(|f| f.to_string()),
                "voters": o.voters,
                "down_votes": o.down_votes,
            })
        })
        .collect();
    json!({
        "region": doc.region,
        "seq": doc.seq,
        "generated_at": doc.generated_at,
        // null: from further ahead than the clock skew allowed.
        "age_ms": age,
        "stale": age.is_none_or(|a| a > max_age_ms),
        "workers": doc.workers,
        "top": top_of(doc),
        "origins": origins,
    })
}

fn controls(controls: &Controls) -> Value {
    match controls {
        Controls::InForce(items) => {
            let items: Vec<Value> = items.iter().map(control).collect();
            json!({"supported": true, "items": items})
        }
    }
}

fn control(c: &Control) -> Value {
    json!({
        "kind": c.kind, "pool": c.pool, "region": c.region, "origin": c.origin,
        "reason": c.reason, "until": c.until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::document::{OriginState, RankedOrigin};

    #[test]
    fn a_full_hour_is_thinned_for_the_plot_but_keeps_every_state_change() {
        let mut points: VecDeque<Point> = (0..3_600)
            .map(|i| Point {
                at: i,
                latency_ms: Some(5.0),
                state: OriginState::Healthy,
            })
            .collect();
        // A one-point outage at an index the stride would skip.
        points[1_001].state = OriginState::Down;
        let kept: Vec<&Point> = plotted(&points).collect();
        assert!(kept.len() <= MAX_PLOTTED + 3, "{}", kept.len());
        assert!(kept
            .iter()
            .any(|p| p.at == 1_001 && p.state == OriginState::Down));
        assert!(kept.iter().any(|p| p.at == 1_002), "the recovery is kept");
        assert_eq!(kept.last().unwrap().at, 3_599);
        let few: VecDeque<Point> = points.iter().take(10).cloned().collect();
        assert_eq!(plotted(&few).count(), 10);
    }

    #[test]
    fn stale_and_future_rankings_are_marked_stale_and_columns_follow_the_config() {
        let now = 1_700_000_100_000;
        let fresh = RankingDocument::new(
            "web",
            "eu-west-1",
            1,
            now - 1_000,
            vec![
                RankedOrigin::measured("b", OriginState::Down, 1.0, 1),
                RankedOrigin::measured("z", OriginState::Healthy, 9.0, 1),
            ],
        );
        let mut old = fresh.clone();
        old.region = "us-east-1".into();
        old.generated_at = now - 60_000;
        let mut future = fresh.clone();
        future.region = "ap-southeast-1".into();
        future.generated_at = now + 3_600_000;
        let mut pools = BTreeMap::new();
        pools.insert(
            "web".to_string(),
            PoolRankings {
                rankings: vec![fresh, old, future],
                skipped: vec![("x".into(), "bad".into())],
                ..Default::default()
            },
        );
        let order = BTreeMap::from([("web".to_string(), vec!["a".into(), "b".into()])]);
        let history = History::default();
        let v = snapshot(
            &Inputs {
                store: "test",
                pools: &pools,
                origin_order: &order,
                history: &history,
                controls: &Controls::InForce(Vec::new()),
                max_age_ms: 30_000,
                read_at: Some(now),
                error: None,
                poll_ms: 1000,
            },
            now,
        );
        let web = &v["pools"][0];
        assert_eq!(web["origins"], json!(["a", "b", "z"]));
        let stale: Vec<(&str, bool)> = web["rankings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["region"].as_str().unwrap(), r["stale"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            stale,
            [
                ("eu-west-1", false),
                ("us-east-1", true),
                ("ap-southeast-1", true)
            ]
        );
        // The top is the best origin not held down.
        assert_eq!(web["rankings"][0]["top"], "z");
        assert_eq!(v["skipped"][0]["reason"], "bad");
        assert_eq!(v["controls"]["supported"], true);
        assert_eq!(v["controls"]["items"], json!([]));
    }
}
