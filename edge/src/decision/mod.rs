//! The edge decision: which origin of a pool serves this request, as one
//! pure function, [`decide`], of a per-pool [`PoolView`] (the rankings
//! read and how long ago, the controls stored, the ejections in force, a
//! recent race winner), the request's steering key and `now`. No clock
//! reads, no I/O, no logging: the [`crate::router::Router`] gathers the
//! view, acts on the [`Verdict`] (a table read, the live race) and logs.
//! Its behaviour is written down as decision vectors
//! (`edge/tests/vectors/`, format in their README), which every
//! implementation of the decision must pass.
//!
//! In order (see ARCHITECTURE.md, "The edge decision"):
//! 1. only origins of the pool in the *bundled* config can be chosen; a
//!    ranking entry naming anything else is ignored;
//! 2. the operators' controls in force for this edge's region: an
//!    override sends the pool to its origin (`override`); drains take
//!    origins out of every step below, the race and the default included,
//!    unless every origin is drained (then the drains are ignored when
//!    `operations.fail_open`, else the request passes through);
//! 3. this container's ejections ([`crate::ejection`]) take origins out
//!    too, unless that leaves no origin the ranking holds usable (then the
//!    ejections are ignored for that decision: never the last origin);
//! 4. a ranking read within `cache_ttl` (`cache`), or within `max_stale`
//!    (`stale`, with a background refresh), or by this decision (`table`):
//!    the nearest fresh region's choice, steered ([`crate::steering`]);
//!    every origin down there: the default at once (`known_down`), never a
//!    race against what is known to be down. When every origin the drains
//!    leave is down and fail-open is on, a drained origin that is up is
//!    chosen rather than a down one;
//!    An override, or a closed pool, refreshes its controls in the
//!    background once they are older than `cache_ttl`, so a cleared
//!    override or an undrain is seen;
//! 5. nothing fresh: a race winner younger than `race_cache_ttl` (`race`;
//!    an ejected one too when ejections are ignored, as in 3);
//!    else [`Verdict::Unranked`]: the router reads the table (unless a
//!    read within `cache_ttl` found nothing fresh, or the last read
//!    failed) and decides again, or races the set live under the 0.9 s
//!    watchdog, which returns the set's default (`watchdog`).
//!
//! Drains, overrides, ejections and fail-open are folded once into the
//! sets of usable origins ([`usable::fold`]); the choice, steering
//! included, runs over those sets.

pub mod ranked;
pub mod timeouts;
pub mod usable;

use std::collections::BTreeMap;
use std::time::Duration;

use origin_router::config::{OperationsConfig, OriginConfig, PoolConfig};
use origin_router::control::{self, Control};
use origin_router::document::RankingDocument;
use origin_router::sample::UnixMillis;

pub use ranked::{choose, Choice, Freshness};
pub use timeouts::OriginTimeouts;
pub use usable::{FailOpen, Folded, OriginSet, Usable};

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Cache,
    Stale,
    Table,
    Race,
    /// The race found no winner (watchdog fired, or every attempt failed):
    /// the pool's default origin.
    Watchdog,
    KnownDown,
    /// An operator's override in force.
    Override,
    /// No pool for the request: it goes where CloudFront sends it.
    Passthrough,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Stale => "stale",
            Source::Table => "table",
            Source::Race => "race",
            Source::Watchdog => "watchdog",
            Source::KnownDown => "known_down",
            Source::Override => "override",
            Source::Passthrough => "passthrough",
        }
    }

    /// The source named `text` (as [`Source::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub const ALL: [Source; 8] = [
        Source::Cache,
        Source::Stale,
        Source::Table,
        Source::Race,
        Source::Watchdog,
        Source::KnownDown,
        Source::Override,
        Source::Passthrough,
    ];
}

/// The decision's settings, built once from the config
/// ([`crate::settings`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The region this edge runs in (`AWS_REGION`).
    pub region: String,
    /// Region to nearest-first regions (`edge.proximity`).
    pub proximity: BTreeMap<String, Vec<String>>,
    /// `edge.ranking_max_age`.
    pub ranking_max_age: Duration,
    /// `edge.cache_ttl`.
    pub cache_ttl: Duration,
    /// `edge.max_stale`.
    pub max_stale: Duration,
    /// The limits stored controls are held to, and `fail_open`.
    pub operations: OperationsConfig,
}

impl Settings {
    pub fn freshness(&self) -> Freshness<'_> {
        Freshness {
            region: &self.region,
            proximity: &self.proximity,
            max_age: self.ranking_max_age,
        }
    }
}

/// How the view's rankings were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Nothing read yet.
    Never,
    /// Read `age` ago (by the router's clock).
    Cached { age: Duration },
    /// Read by this decision, just now.
    Now,
}

/// Everything the decision knows of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'v> {
    /// The rankings of every region, as last read.
    pub rankings: &'v [RankingDocument],
    pub read: Read,
    /// The last read failed or timed out (cleared by a good one).
    pub read_failed: bool,
    /// The pool's stored drains and overrides (any region, any state: the
    /// decision keeps those in force here and now).
    pub controls: &'v [Control],
    /// Origins ejected in this container now.
    pub ejected: &'v [String],
    /// The winner of a live race younger than `race_cache_ttl`.
    pub race_winner: Option<&'v str>,
}

/// Whether the router should read the pool's rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadNext {
    /// Nothing to read.
    No,
    /// Read in the background; the request does not wait.
    Background,
    /// Read now, within what is left of the deadline, then decide again.
    Foreground,
}

/// The decision's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<'p> {
    /// Send the request to `origin`.
    Chosen {
        origin: &'p OriginConfig,
        source: Source,
        /// The ranking's region and age, where one decided.
        ranking: Option<(String, u64)>,
        /// Origins of the band (`Some(1)` under `fastest`); `None` where no
        /// ranking steered.
        band: Option<usize>,
        /// Where a ranking steered: the best other usable origin of the
        /// set in that ranking, for an origin group's failover (the
        /// CloudFront Function edge builds one; the Lambda edge races
        /// instead).
        failover: Option<&'p OriginConfig>,
        /// The timeouts to set on `origin` ([`timeouts`]).
        timeouts: OriginTimeouts,
        read: ReadNext,
    },
    /// No ranking decides: read as `read` says (a foreground read is
    /// followed by a new decision), else race `among` live; without a
    /// winner by the watchdog, `default`.
    Unranked {
        among: Vec<&'p OriginConfig>,
        default: &'p OriginConfig,
        read: ReadNext,
    },
    /// The request goes where CloudFront sends it (unknown pool, or every
    /// origin drained without fail-open: then `read` keeps the controls
    /// current, so an undrain is seen).
    Passthrough { read: ReadNext },
}

/// A verdict with what fail-open did on the way (for a log line).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'p> {
    pub verdict: Verdict<'p>,
    pub fail_open: Option<FailOpen>,
}

/// Decides for pool `pool_name` (`None` when the config has no such pool)
/// as seen through `view` at wall-clock `now`, steering with `key`.
pub fn decide<'p>(
    pool_name: &str,
    pool: Option<&'p PoolConfig>,
    view: &PoolView<'_>,
    settings: &Settings,
    key: &str,
    now: UnixMillis,
) -> Outcome<'p> {
    let Some(pool) = pool else {
        return Outcome {
            verdict: Verdict::Passthrough { read: ReadNext::No },
            fail_open: None,
        };
    };
    // An override or a closed pool answers without a ranking, but its
    // controls must stay current (a cleared override, an undrain): they
    // are refreshed in the background like a stale ranking.
    let controls_read = if view.read_failed {
        ReadNext::Background
    } else {
        match view.read {
            Read::Now => ReadNext::No,
            Read::Cached { age } if age <= settings.cache_ttl => ReadNext::No,
            Read::Cached { .. } | Read::Never => ReadNext::Background,
        }
    };
    let (active, _) = control::active_in(
        view.controls,
        pool,
        &settings.operations,
        pool_name,
        &settings.region,
        now,
    );
    if let Some(origin) = control::override_of(&active).and_then(|o| pool.origin(&o.origin)) {
        return Outcome {
            verdict: Verdict::Chosen {
                origin,
                source: Source::Override,
                ranking: None,
                band: None,
                failover: None,
                timeouts: timeouts::for_origin(pool, None, false),
                read: controls_read,
            },
            fail_open: None,
        };
    }
    let drained = OriginSet::of(pool, control::drained(&active));
    let ejected = OriginSet::of(pool, view.ejected.iter().map(String::as_str));
    let (usable, mut fail_open) =
        match usable::fold(pool, drained, ejected, settings.operations.fail_open) {
            (Folded::Usable(usable), note) => (usable, note),
            (Folded::Closed, _) => {
                return Outcome {
                    verdict: Verdict::Passthrough {
                        read: controls_read,
                    },
                    fail_open: None,
                }
            }
        };

    // 4: a ranking read recently enough.
    let ranked_source = match view.read {
        Read::Now => Some((Source::Table, ReadNext::No)),
        Read::Cached { age } if age <= settings.cache_ttl => Some((Source::Cache, ReadNext::No)),
        Read::Cached { age } if age <= settings.max_stale => {
            Some((Source::Stale, ReadNext::Background))
        }
        _ => None,
    };
    let mut cache_is_current = false;
    if let Some((source, read)) = ranked_source {
        let fresh = settings.freshness();
        let pick = |set| choose(pool, set, view.rankings, fresh, now, key);
        let mut choice = pick(usable.preferred);
        if !matches!(choice, Choice::Ranked { .. }) && usable.preferred != usable.undrained {
            choice = pick(usable.undrained);
        }
        if matches!(choice, Choice::AllDown { .. }) {
            if let Some(all) = usable.last_resort {
                if let ranked @ Choice::Ranked { .. } = pick(all) {
                    choice = ranked;
                    fail_open = Some(FailOpen::DrainedUp);
                }
            }
        }
        let verdict = match choice {
            Choice::Ranked {
                origin,
                region,
                age_ms,
                band,
                failover,
                connect_budget_ms,
            } => Some(Verdict::Chosen {
                origin,
                source,
                ranking: Some((region, age_ms)),
                band: Some(band),
                failover,
                timeouts: timeouts::for_origin(pool, connect_budget_ms, failover.is_some()),
                read,
            }),
            Choice::AllDown {
                origin,
                region,
                age_ms,
            } => Some(Verdict::Chosen {
                origin,
                source: Source::KnownDown,
                ranking: Some((region, age_ms)),
                band: None,
                failover: None,
                timeouts: timeouts::for_origin(pool, None, false),
                read,
            }),
            Choice::NoFreshRanking => None,
        };
        if let Some(verdict) = verdict {
            return Outcome { verdict, fail_open };
        }
        // A read within cache_ttl found nothing fresh: reading again now
        // would find the same.
        cache_is_current = source != Source::Stale;
    }

    // 5: nothing fresh. The table is not asked in the foreground when a
    // current read found nothing, nor after a failed read (then only in
    // the background, which the router limits to one per cache_ttl).
    let read = if view.read_failed {
        ReadNext::Background
    } else if cache_is_current {
        ReadNext::No
    } else {
        ReadNext::Foreground
    };
    // A recent race winner answers before any read.
    if let Some(winner) = view
        .race_winner
        .and_then(|w| usable.preferred.origins(pool).find(|o| o.id == w))
    {
        return Outcome {
            verdict: Verdict::Chosen {
                origin: winner,
                source: Source::Race,
                ranking: None,
                band: None,
                failover: None,
                timeouts: timeouts::for_origin(pool, None, false),
                read: match read {
                    ReadNext::No => ReadNext::No,
                    _ => ReadNext::Background,
                },
            },
            fail_open,
        };
    }
    Outcome {
        verdict: Verdict::Unranked {
            among: usable.preferred.origins(pool).collect(),
            default: usable.preferred.default_origin(pool),
            read,
        },
        fail_open,
    }
}
