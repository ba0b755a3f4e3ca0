//! What the dashboard remembers between store reads: one hour of each
//! origin's latency and state per (pool, region), and markers where a
//! state or a region's top origin changed. Nothing of it is stored; a
//! restarted dashboard starts with an empty hour.
//!
//! Every collection is bounded whatever the store holds: points by age
//! and count per series, series by count, markers by age and count per
//! pool, so a hostile store (thousands of regions, a ranking per
//! millisecond) costs at most a fixed amount of memory.

use std::collections::{BTreeMap, VecDeque};

use origin_router::document::{OriginState, RankingDocument};
use origin_router::sample::UnixMillis;

/// How far back the dashboard remembers.
pub const WINDOW_MS: u64 = 3_600_000;
/// Points kept per series: an hour at one new ranking per second.
pub const MAX_POINTS: usize = 3_600;
/// Series kept at most; rankings of further (pool, region, origin) are
/// not plotted (the matrix still shows them). With the view's thinning
/// (`view::MAX_PLOTTED` a series) a snapshot carries at most about 300,000
/// points, whatever a hostile store holds.
pub const MAX_SERIES: usize = 1_000;
/// Markers kept per pool.
pub const MAX_MARKERS: usize = 1_000;

/// One origin's place in one ranking, as the plot draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When the dashboard first read the ranking (its own clock, so a
    /// writer's clock that runs ahead cannot push points off the plot).
    pub at: UnixMillis,
    pub latency_ms: Option<f64>,
    pub state: OriginState,
}

/// Something that changed, drawn as a vertical line.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An origin's state in one region.
    State {
        origin: String,
        from: OriginState,
        to: OriginState,
        /// The class of the origin's last failure, when it went down or
        /// degraded and the ranking names one.
        reason: Option<&'static str>,
    },
    /// The origin a region's edge uses first.
    Top {
        from: Option<String>,
        to: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at: UnixMillis,
    pub region: String,
    pub change: Change,
}

/// (pool, region, origin).
pub type SeriesKey = (String, String, String);

/// The hour the dashboard has seen.
#[derive(Debug, Default)]
pub struct History {
    series: BTreeMap<SeriesKey, VecDeque<Point>>,
    /// Per (pool, region): the last ranking's seq and top origin, and when
    /// it was read.
    last: BTreeMap<(String, String), (u64, Option<String>, UnixMillis)>,
    states: BTreeMap<SeriesKey, OriginState>,
    markers: BTreeMap<String, VecDeque<Marker>>,
}

/// The origin an edge sends traffic to first: the best one neither held
/// down nor drained.
pub fn top_of(doc: &RankingDocument) -> Option<&str> {
    doc.origins
        .iter()
        .find(|o| o.state.is_usable())
        .map(|o| o.id.as_str())
}

impl History {
    /// Records `doc`, read at `now`. A ranking read again (same seq) adds
    /// nothing: a region whose prober stopped shows a gap, not a flat line.
    pub fn observe(&mut self, doc: &RankingDocument, now: UnixMillis) {
        let region_key = (doc.pool.clone(), doc.region.clone());
        let top = top_of(doc).map(str::to_string);
        match self.last.get(&region_key) {
            Some((seq, _, _)) if *seq == doc.seq => return,
            Some((_, previous, _)) if *previous != top => {
                let change = Change::Top {
                    from: previous.clone(),
                    to: top.clone(),
                };
                self.mark(&doc.pool, &doc.region, now, change);
            }
            _ => {}
        }
        self.last.insert(region_key, (doc.seq, top, now));
        for o in &doc.origins {
            let key = (doc.pool.clone(), doc.region.clone(), o.id.clone());
            if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
                continue;
            }
            let points = self.series.entry(key.clone()).or_default();
            if points.len() >= MAX_POINTS {
                points.pop_front();
            }
            points.push_back(Point {
                at: now,
                latency_ms: o.latency_ms.filter(|_| o.state != OriginState::Down),
                state: o.state,
            });
            if let Some(from) = self.states.insert(key, o.state) {
                if from != o.state {
                    let change = Change::State {
                        origin: o.id.clone(),
                        from,
                        to: o.state,
                        reason: o
                            .last_failure
                            .filter(|_| o.state != OriginState::Healthy)
                            .map(|f| f.name()),
                    };
                    self.mark(&doc.pool, &doc.region, now, change);
                }
            }
        }
    }

    fn mark(&mut self, pool: &str, region: &str, at: UnixMillis, change: Change) {
        let markers = self.markers.entry(pool.to_string()).or_default();
        if markers.len() >= MAX_MARKERS {
            markers.pop_front();
        }
        markers.push_back(Marker {
            at,
            region: region.to_string(),
            change,
        });
    }

    /// Forgets everything older than [`WINDOW_MS`] before `now`.
    pub fn prune(&mut self, now: UnixMillis) {
        let since = now.saturating_sub(WINDOW_MS);
        self.series.retain(|_, points| {
            while points.front().is_some_and(|p| p.at < since) {
                points.pop_front();
            }
            !points.is_empty()
        });
        let series = &self.series;
        self.states.retain(|key, _| series.contains_key(key));
        self.last.retain(|_, (_, _, at)| *at >= since);
        self.markers.retain(|_, markers| {
            while markers.front().is_some_and(|m| m.at < since) {
                markers.pop_front();
            }
            !markers.is_empty()
        });
    }

    /// The series of `pool`: (region, origin) and their points, oldest first.
    pub fn series_of<'a>(
        &'a self,
        pool: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a VecDeque<Point>)> + 'a {
        self.series
            .iter()
            .filter(move |((p, _, _), _)| p == pool)
            .map(|((_, r, o), points)| (r.as_str(), o.as_str(), points))
    }

    /// The markers of `pool`, oldest first.
    pub fn markers_of(&self, pool: &str) -> impl Iterator<Item = &Marker> {
        self.markers.get(pool).into_iter().flatten()
    }

    /// Pools with anything remembered.
    pub fn pools(&self) -> impl Iterator<Item = &str> {
        let mut pools: Vec<&str> = self.series.keys().map(|(p, _, _)| p.as_str()).collect();
        pools.dedup();
        pools.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::document::RankedOrigin;

    fn doc(seq: u64, origins: Vec<RankedOrigin>) -> RankingDocument {
        RankingDocument::new("web", "eu-west-1", seq, 1_700_000_000_000, origins)
    }

    #[test]
    fn state_and_top_changes_become_markers_and_repeats_add_nothing() {
        let mut h = History::default();
        let a = RankedOrigin::measured("a", OriginState::Healthy, 10.0, 1);
        let b = RankedOrigin::measured("b", OriginState::Healthy, 20.0, 1);
        h.observe(&doc(1, vec![a.clone(), b.clone()]), 1_000);
        h.observe(&doc(1, vec![a.clone(), b.clone()]), 2_000);
        assert_eq!(
            h.series_of("web").map(|(_, _, p)| p.len()).sum::<usize>(),
            2
        );
        assert_eq!(h.markers_of("web").count(), 0);

        let mut a_down = RankedOrigin::measured("a", OriginState::Down, 10.0, 1);
        a_down.last_failure = Some(origin_router::sample::FailureClass::ConnectRefused);
        h.observe(&doc(2, vec![b.clone(), a_down]), 3_000);
        let markers: Vec<_> = h.markers_of("web").cloned().collect();
        assert_eq!(markers.len(), 2, "{markers:?}");
        assert_eq!(
            markers[0].change,
            Change::Top {
                from: Some("a".into()),
                to: Some("b".into())
            }
        );
        assert!(matches!(
            &markers[1].change,
            Change::State { origin, from: OriginState::Healthy, to: OriginState::Down, reason: Some("connect_refused") } if origin == "a"
        ));
        // A down origin has no latency on the plot, whatever the ranking says.
        let a_points: Vec<_> = h
            .series_of("web")
            .find(|(_, o, _)| *o == "a")
            .unwrap()
            .2
            .iter()
            .map(|p| p.latency_ms)
            .collect();
        assert_eq!(a_points, [Some(10.0), None]);

        // Back up: the marker names no failure, though the ranking still
        // remembers the last one.
        let mut a_back = RankedOrigin::measured("a", OriginState::Healthy, 11.0, 1);
        a_back.last_failure = Some(origin_router::sample::FailureClass::ConnectRefused);
        h.observe(&doc(3, vec![a_back, b]), 4_000);
        let last = h.markers_of("web").last().unwrap().clone();
        assert!(
            matches!(
                &last.change,
                Change::State {
                    to: OriginState::Healthy,
                    reason: None,
                    ..
                }
            ),
            "{last:?}"
        );
    }

    #[test]
    fn the_hour_and_every_collection_stay_bounded() {
        let mut h = History::default();
        for seq in 0..(MAX_POINTS as u64 + 50) {
            let state = if seq % 2 == 0 {
                OriginState::Healthy
            } else {
                OriginState::Degraded
            };
            let o = RankedOrigin::measured("a", state, 5.0, 1);
            h.observe(&doc(seq + 1, vec![o]), seq * 10);
        }
        let (_, _, points) = h.series_of("web").next().unwrap();
        assert_eq!(points.len(), MAX_POINTS);
        assert_eq!(h.markers_of("web").count(), MAX_MARKERS);

        for region in 0..(MAX_SERIES + 10) {
            let mut d = doc(
                1,
                vec![RankedOrigin::measured("a", OriginState::Healthy, 1.0, 1)],
            );
            d.region = format!("r{region}");
            h.observe(&d, 5_000_000);
        }
        assert_eq!(h.series.len(), MAX_SERIES);

        h.prune(5_000_000 + WINDOW_MS + 1);
        assert_eq!(h.series.len(), 0);
        assert_eq!(h.markers_of("web").count(), 0);
        assert!(h.last.is_empty() && h.states.is_empty());
    }
}
