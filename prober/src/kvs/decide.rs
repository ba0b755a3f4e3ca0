//! What to write: whether a pool's new ranking changes what the CloudFront
//! Function would do with it, or is due as a heartbeat.
//!
//! Every write to the KeyValueStore is an `UpdateKeys` call that every
//! region's leader contends for (one ETag per store), and every change is
//! propagated to every edge location; rewriting each pool every round
//! (every 2 s by default) would multiply both for nothing. So a value is
//! rewritten only when its *choice* changes:
//!
//! - the order of the origins or any origin's state;
//! - the controls carried (a drain or override set, ended or changed);
//! - an origin's connect timeout in whole seconds, as CloudFront takes it
//!   (`ceil(connect_budget_ms / 1000)`: `connectionTimeout` counts whole
//!   seconds, so a budget moving from 412 ms to 530 ms changes nothing);
//! - a usable origin's score by more than [`SCORE_CHANGE`] of the score last
//!   written (band weights follow scores, so a smaller move barely shifts
//!   traffic); compared with what was *written*, so a slow drift is
//!   written once it adds up;
//!
//! and, whatever the choice, once the value last written is
//! `heartbeat` old: the edge judges a value's freshness by its
//! `generated_at`, so a value never rewritten would look like a stopped
//! prober's.
//!
//! [`decide`] is a pure function of (last written, new, now); the writer
//! calls it with `now` the new ranking's `generated_at`, the clock readers
//! judge the value's age by.

use std::time::Duration;

use origin_router::control::{Control, ControlKind};
use origin_router::document::{OriginState, RankingDocument};
use origin_router::sample::UnixMillis;

/// A relative score change beyond this is a change of choice.
pub const SCORE_CHANGE: f64 = 0.10;

/// What a value says, as far as the function's choice goes, and when and
/// in which order it was ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub seq: u64,
    pub generated_at: UnixMillis,
    origins: Vec<Entry>,
    /// Sorted, so a store that returns controls in another order is no
    /// change.
    controls: Vec<ControlEntry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: String,
    state: OriginState,
    score: Option<f64>,
    /// The connect timeout CloudFront would be given, whole seconds.
    connect_s: Option<u64>,
}

/// (kind, origin, region, set_at, until): what the function reads of a
/// control.
type ControlEntry = (char, String, String, UnixMillis, UnixMillis);

/// Why a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Nothing written yet by this publisher.
    First,
    /// The order of the origins, or a state.
    Order,
    Controls,
    ConnectTimeout,
    Score,
    Heartbeat,
}

impl Why {
    /// The label of metrics and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::First => "first",
            Why::Order => "order",
            Why::Controls => "controls",
            Why::ConnectTimeout => "connect_timeout",
            Why::Score => "score",
            Why::Heartbeat => "heartbeat",
        }
    }
}

impl Choice {
    /// The choice `doc` and `controls` make.
    pub fn of(doc: &RankingDocument, controls: &[Control]) -> Choice {
        let origins = doc
            .origins
            .iter()
            .map(|o| Entry {
                id: o.id.clone(),
                state: o.state,
                score: o.score.filter(|s| s.is_finite()),
                connect_s: o
                    .connect_budget_ms
                    .filter(|c| c.is_finite() && *c >= 0.0)
                    .map(|c| (c / 1000.0).ceil() as u64),
            })
            .collect();
        let mut controls: Vec<ControlEntry> = controls
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    ControlKind::Drain => 'd',
                    ControlKind::Override => 'o',
                };
                (kind, c.origin.clone(), c.region.clone(), c.set_at, c.until)
            })
            .collect();
        controls.sort();
        controls.dedup();
        Choice {
            seq: doc.seq,
            generated_at: doc.generated_at,
            origins,
            controls,
        }
    }
}

/// Whether `new` is to be written, given the choice `last` written for the
/// same key (none yet: always), at `now` (the writer passes the new
/// ranking's `generated_at`), with a value due at least every `heartbeat`.
/// A ranking no newer than the one written (`seq` not above it: a round
/// that overtook another) is never written.
pub fn decide(
    last: Option<&Choice>,
    new: &Choice,
    now: UnixMillis,
    heartbeat: Duration,
) -> Option<Why> {
    let Some(last) = last else {
        return Some(Why::First);
    };
    if new.seq <= last.seq {
        return None;
    }
    let same_order = last.origins.len() == new.origins.len()
        && last
            .origins
            .iter()
            .zip(&new.origins)
            .all(|(a, b)| a.id == b.id && a.state == b.state);
    if !same_order {
        return Some(Why::Order);
    }
    if last.controls != new.controls {
        return Some(Why::Controls);
    }
    let pairs = || last.origins.iter().zip(&new.origins);
    if pairs().any(|(a, b)| a.connect_s != b.connect_s) {
        return Some(Why::ConnectTimeout);
    }
    if pairs()
        .filter(|(_, b)| b.state.is_usable())
        .any(|(a, b)| score_changed(a.score, b.score))
    {
        return Some(Why::Score);
    }
    let age = now.saturating_sub(last.generated_at);
    if u128::from(age) >= heartbeat.as_millis() {
        return Some(Why::Heartbeat);
    }
    None
}

/// A score appearing or going, or moving by more than [`SCORE_CHANGE`] of
/// the old one (from zero: any move).
fn score_changed(old: Option<f64>, new: Option<f64>) -> bool {
    match (old, new) {
        (None, None) => false,
        (Some(old), Some(new)) => (new - old).abs() > SCORE_CHANGE * old.abs(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin_router::document::RankedOrigin;

    const T0: UnixMillis = 1_780_000_000_000;
    const HEARTBEAT: Duration = Duration::from_secs(10);

    /// A ranking of seq `seq`, generated `secs` after T0, with origins
    /// (id, state, score ms, connect budget ms).
    fn doc(seq: u64, secs: u64, origins: &[(&str, OriginState, f64, f64)]) -> RankingDocument {
        let origins = origins
            .iter()
            .map(|(id, state, score, connect)| {
                let mut o = RankedOrigin::measured(id, *state, *score, 3);
                o.connect_budget_ms = Some(*connect);
                o
            })
            .collect();
        RankingDocument::new("web", "eu-west-1", seq, T0 + secs * 1000, origins)
    }

    use OriginState::{Degraded, Down, Healthy};

    fn base(seq: u64, secs: u64) -> RankingDocument {
        doc(
            seq,
            secs,
            &[
                ("a", Healthy, 20.0, 412.0),
                ("b", Degraded, 50.0, 900.0),
                ("c", Down, 300.0, 1000.0),
            ],
        )
    }

    fn drain(origin: &str, until: UnixMillis) -> Control {
        Control {
            kind: ControlKind::Drain,
            pool: "web".into(),
            region: "eu-west-1".into(),
            origin: origin.into(),
            set_at: T0,
            until,
            by: "ops".into(),
            reason: "maintenance".into(),
        }
    }

    /// `decide` for `new` after `last` was written, at `new`'s date.
    fn after(last: &RankingDocument, new: &RankingDocument) -> Option<Why> {
        after_with(last, &[], new, &[])
    }

    fn after_with(
        last: &RankingDocument,
        last_controls: &[Control],
        new: &RankingDocument,
        new_controls: &[Control],
    ) -> Option<Why> {
        let new_choice = Choice::of(new, new_controls);
        decide(
            Some(&Choice::of(last, last_controls)),
            &new_choice,
            new.generated_at,
            HEARTBEAT,
        )
    }

    #[test]
    fn the_first_ranking_is_written() {
        let c = Choice::of(&base(1, 0), &[]);
        assert_eq!(decide(None, &c, T0, HEARTBEAT), Some(Why::First));
    }

    #[test]
    fn an_unchanged_choice_waits_for_the_heartbeat() {
        let last = base(1, 0);
        assert_eq!(after(&last, &base(2, 2)), None);
        assert_eq!(after(&last, &base(5, 9)), None);
        assert_eq!(after(&last, &base(6, 10)), Some(Why::Heartbeat));
        assert_eq!(after(&last, &base(7, 12)), Some(Why::Heartbeat));
    }

    #[test]
    fn a_new_order_or_state_is_written_at_once() {
        let last = base(1, 0);
        let mut swapped = base(2, 1);
        swapped.origins.swap(0, 1);
        assert_eq!(after(&last, &swapped), Some(Why::Order));
        let mut down = base(2, 1);
        down.origins[1].state = Down;
        assert_eq!(after(&last, &down), Some(Why::Order));
        let mut fewer = base(2, 1);
        fewer.origins.pop();
        assert_eq!(after(&last, &fewer), Some(Why::Order));
    }

    #[test]
    fn controls_set_ended_or_moved_are_written_and_their_order_is_not() {
        let last = base(1, 0);
        let new = base(2, 1);
        let a = drain("a", T0 + 60_000);
        let b = drain("b", T0 + 60_000);
        assert_eq!(
            after_with(&last, &[], &new, std::slice::from_ref(&a)),
            Some(Why::Controls)
        );
        assert_eq!(
            after_with(&last, std::slice::from_ref(&a), &new, &[]),
            Some(Why::Controls)
        );
        let longer = drain("a", T0 + 120_000);
        assert_eq!(
            after_with(&last, std::slice::from_ref(&a), &new, &[longer]),
            Some(Why::Controls)
        );
        assert_eq!(
            after_with(&last, &[a.clone(), b.clone()], &new, &[b, a]),
            None
        );
    }

    #[test]
    fn connect_timeouts_count_in_whole_seconds_rounded_up() {
        let last = base(1, 0);
        // a: 412 ms -> 1 s either way; 1001 ms -> 2 s.
        let mut same = base(2, 1);
        same.origins[0].connect_budget_ms = Some(999.0);
        assert_eq!(after(&last, &same), None);
        let mut up = base(2, 1);
        up.origins[0].connect_budget_ms = Some(1001.0);
        assert_eq!(after(&last, &up), Some(Why::ConnectTimeout));
        // A down origin's timeout counts too: the function may still
        // send it a request when nothing else is left.
        let mut down = base(2, 1);
        down.origins[2].connect_budget_ms = Some(2500.0);
        assert_eq!(after(&last, &down), Some(Why::ConnectTimeout));
        let mut gone = base(2, 1);
        gone.origins[1].connect_budget_ms = None;
        assert_eq!(after(&last, &gone), Some(Why::ConnectTimeout));
    }

    #[test]
    fn a_usable_score_moving_more_than_ten_percent_is_written() {
        let last = base(1, 0);
        let with_score = |i: usize, s: f64| {
            let mut d = base(2, 1);
            d.origins[i].score = Some(s);
            d
        };
        assert_eq!(after(&last, &with_score(0, 21.9)), None);
        assert_eq!(after(&last, &with_score(0, 18.1)), None);
        assert_eq!(after(&last, &with_score(0, 22.1)), Some(Why::Score));
        assert_eq!(after(&last, &with_score(0, 17.9)), Some(Why::Score));
        // Degraded is usable.
        assert_eq!(after(&last, &with_score(1, 56.0)), Some(Why::Score));
        // A down origin's score is no choice.
        assert_eq!(after(&last, &with_score(2, 900.0)), None);
        let mut unscored = base(2, 1);
        unscored.origins[0].score = None;
        assert_eq!(after(&last, &unscored), Some(Why::Score));
    }

    #[test]
    fn a_slow_drift_is_written_once_it_adds_up() {
        // Compared with what was written, not with the previous round.
        let last = base(1, 0);
        let mut written = last.clone();
        let mut writes = Vec::new();
        for step in 1..=6u64 {
            let mut d = base(1 + step, step);
            d.origins[0].score = Some(20.0 * 1.04f64.powi(step as i32));
            let c = Choice::of(&d, &[]);
            if let Some(why) = decide(
                Some(&Choice::of(&written, &[])),
                &c,
                d.generated_at,
                HEARTBEAT,
            ) {
                writes.push((step, why));
                written = d;
            }
        }
        // 4 % a step: 8.2 % after two, 12.5 % after three.
        assert_eq!(writes, vec![(3, Why::Score), (6, Why::Score)]);
    }

    #[test]
    fn a_ranking_no_newer_than_the_one_written_is_not_written() {
        let last = base(5, 10);
        let mut older = base(4, 30);
        older.origins.swap(0, 1);
        assert_eq!(after(&last, &older), None);
        assert_eq!(after(&last, &base(5, 30)), None);
    }
}
