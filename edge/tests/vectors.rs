//! The decision vectors (`edge/tests/vectors/*.json`, format in the
//! README beside them): the written contract of the edge decision.
//!
//! - every vector holds for the pure decision ([`edge::decision::decide`])
//!   with the router's steps around it (a foreground read answered by the
//!   vector's `table`, a live race won by its `race`);
//! - every vector the real [`edge::router::Router`] can be put in the
//!   state of holds for it too, on paused time with a store answering
//!   what the vector says;
//! - the generated vectors (`generated.json`) are what the generator
//!   below writes, and their expectations come from an independent,
//!   deliberately plain model of the documented decision (`model`), not
//!   from the code under test. `ORIGIN_ROUTER_WRITE_VECTORS=1` rewrites
//!   the file after a deliberate change.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::racer::ScriptedRacer;
use edge::decision::{self, PoolView, Read, ReadNext, Source, Verdict};
use edge::settings::EdgeSettings;
use origin_router::config::{Config, RoutingConfig};
use origin_router::control::{Control, ControlKind, PoolControls};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::{ControlWrite, PoolRankings, RankingStore, StoreError, WriteOutcome};
use serde::{Deserialize, Serialize};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

/// One file: a config and the cases decided under it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    description: String,
    /// The bundled config, as TOML text.
    config: String,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The edge's region (`AWS_REGION`).
    region: String,
    /// Wall clock, Unix ms.
    now: u64,
    #[serde(default)]
    request: Request,
    /// What the container holds from its last good read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache: Option<Cached>,
    /// The container's last read failed.
    #[serde(default, skip_serializing_if = "is_false")]
    read_failed: bool,
    /// What a read of the table answers now; absent: the read fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<Stored>,
    /// Origins ejected in this container now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ejected: Vec<String>,
    /// The winner of a live race younger than `race_cache_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    race_winner: Option<String>,
    /// Who wins a live race, if one is run; absent: nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    race: Option<String>,
    expect: Expect,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distribution_id: Option<String>,
    /// The steering key (see the README: URI, viewer address, header or
    /// cookie, as the pool's `steering.key` says).
    #[serde(default)]
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    /// How long ago the read was.
    age_ms: u64,
    #[serde(flatten)]
    stored: Stored,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default)]
    rankings: Vec<Ranking>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    controls: Vec<StoredControl>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ranking {
    region: String,
    generated_at: u64,
    /// Best first.
    origins: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    state: OriginState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    /// The measured connect budget, ms (the connection timeout's source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connect_budget_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredControl {
    kind: ControlKind,
    /// Default: the request's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pool: Option<String>,
    region: String,
    origin: String,
    set_at: u64,
    until: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    source: String,
    /// Empty for a passthrough.
    origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ranking_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    band: Option<usize>,
    /// The origins a live race was run among, in config order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    race_among: Option<Vec<String>>,
    /// The decision asks for a background refresh of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh: Option<bool>,
    /// Where a ranking steered: the origin an origin group fails over to
    /// (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failover: Option<String>,
    /// The timeouts set on the chosen origin (absent fields: left as the
    /// distribution has them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection_attempts: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_timeout: Option<u64>,
}

impl From<decision::OriginTimeouts> for Timeouts {
    fn from(t: decision::OriginTimeouts) -> Self {
        Timeouts {
            connection_timeout: t.connection_timeout,
            connection_attempts: t.connection_attempts,
            read_timeout: t.read_timeout,
        }
    }
}

impl Case {
    /// The request's pool under `routing`.
    fn pool<'c>(&self, routing: &'c RoutingConfig) -> Option<&'c str> {
        edge::routing::pool_for(
            routing,
            self.request.host.as_deref(),
            self.request.distribution_id.as_deref(),
        )
    }
}

impl Expect {
    /// An expectation of `source` and `origin` that checks nothing else.
    fn only(source: &str, origin: String) -> Expect {
        Expect {
            source: source.into(),
            origin,
            ranking_region: None,
            band: None,
            race_among: None,
            refresh: None,
            failover: None,
            timeouts: None,
        }
    }

    fn passthrough() -> Expect {
        Expect::only("passthrough", String::new())
    }
}

impl Ranking {
    fn document(&self, pool: &str) -> RankingDocument {
        let origins = self
            .origins
            .iter()
            .map(|e| {
                let mut o = RankedOrigin::measured(&e.id, e.state, e.score.unwrap_or(1.0), 1);
                o.score = e.score;
                o.latency_ms = e.score;
                o.connect_budget_ms = e.connect_budget_ms;
                o
            })
            .collect();
        let doc = RankingDocument::new(pool, &self.region, 1, self.generated_at, origins);
        doc.validate()
            .unwrap_or_else(|e| panic!("a vector's ranking is invalid: {e}"));
        doc
    }
}

impl Stored {
    fn documents(&self, pool: &str) -> Vec<RankingDocument> {
        self.rankings.iter().map(|r| r.document(pool)).collect()
    }

    fn controls(&self, pool: &str) -> Vec<Control> {
        self.controls
            .iter()
            .map(|c| Control {
                kind: c.kind,
                pool: c.pool.clone().unwrap_or_else(|| pool.to_string()),
                region: c.region.clone(),
                origin: c.origin.clone(),
                set_at: c.set_at,
                until: c.until,
                by: "vectors".into(),
                reason: "contract".into(),
            })
            .collect()
    }
}

fn load(path: &std::path::Path) -> Suite {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn suites() -> Vec<(String, Suite)> {
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                load(p),
            )
        })
        .collect()
}

fn config(suite: &Suite) -> Config {
    Config::from_toml(&suite.config, "vector.toml").unwrap()
}

/// The pure decision with the router's steps around it, as the README
/// describes them.
fn decide(config: &Config, case: &Case) -> Expect {
    let settings = EdgeSettings::new(config, case.region.clone());
    let Some(pool_name) = case.pool(&settings.routing) else {
        return Expect::passthrough();
    };
    let pool = settings.pools.get(pool_name);
    let (rankings, controls, read) = match &case.cache {
        Some(c) => (
            c.stored.documents(pool_name),
            c.stored.controls(pool_name),
            Read::Cached {
                age: Duration::from_millis(c.age_ms),
            },
        ),
        None => (Vec::new(), Vec::new(), Read::Never),
    };
    let view = PoolView {
        rankings: &rankings,
        read,
        read_failed: case.read_failed,
        controls: &controls,
        ejected: &case.ejected,
        race_winner: case.race_winner.as_deref(),
    };
    let key = case.request.key.as_str();
    let first = decision::decide(pool_name, pool, &view, &settings.decision, key, case.now);
    let refresh = match &first.verdict {
        Verdict::Chosen { read, .. }
        | Verdict::Unranked { read, .. }
        | Verdict::Passthrough { read } => *read == ReadNext::Background,
    };
    let (table_rankings, table_controls) = match &case.table {
        Some(t) => (t.documents(pool_name), t.controls(pool_name)),
        None => (Vec::new(), Vec::new()),
    };
    let verdict = match (first.verdict, &case.table) {
        (
            Verdict::Unranked {
                read: ReadNext::Foreground,
                ..
            },
            Some(_),
        ) => {
            let view = PoolView {
                rankings: &table_rankings,
                read: Read::Now,
                read_failed: false,
                controls: &table_controls,
                ejected: &case.ejected,
                race_winner: None,
            };
            decision::decide(pool_name, pool, &view, &settings.decision, key, case.now).verdict
        }
        (verdict, _) => verdict,
    };
    match verdict {
        Verdict::Passthrough { .. } => Expect {
            refresh: Some(refresh),
            ..Expect::passthrough()
        },
        Verdict::Chosen {
            origin,
            source,
            ranking,
            band,
            failover,
            timeouts,
            ..
        } => Expect {
            source: source.as_str().into(),
            origin: origin.id.clone(),
            ranking_region: ranking.map(|(r, _)| r),
            band,
            race_among: None,
            refresh: Some(refresh),
            failover: Some(failover.map(|o| o.id.clone()).unwrap_or_default()),
            timeouts: Some(timeouts.into()),
        },
        Verdict::Unranked { among, default, .. } => {
            let winner = case
                .race
                .as_deref()
                .filter(|w| among.iter().any(|o| o.id == *w));
            Expect {
                source: if winner.is_some() { "race" } else { "watchdog" }.into(),
                origin: winner.unwrap_or(&default.id).to_string(),
                ranking_region: None,
                band: None,
                race_among: Some(among.iter().map(|o| o.id.clone()).collect()),
                refresh: Some(refresh),
                failover: None,
                timeouts: None,
            }
        }
    }
}

/// Whether `got` meets `want`: every field `want` names is equal.
fn meets(got: &Expect, want: &Expect) -> bool {
    got.source == want.source
        && got.origin == want.origin
        && (want.ranking_region.is_none() || got.ranking_region == want.ranking_region)
        && (want.band.is_none() || got.band == want.band)
        && (want.race_among.is_none() || got.race_among == want.race_among)
        && (want.refresh.is_none() || got.refresh == want.refresh)
        && (want.failover.is_none() || got.failover == want.failover)
        && (want.timeouts.is_none() || got.timeouts == want.timeouts)
}

#[test]
fn every_vector_holds_for_the_decision() {
    let suites = suites();
    let mut total = 0;
    let mut sources = BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for (file, suite) in &suites {
        let config = config(suite);
        for case in &suite.cases {
            total += 1;
            *sources.entry(case.expect.source.clone()).or_default() += 1;
            let got = decide(&config, case);
            if !meets(&got, &case.expect) {
                failures.push(format!(
                    "{file} / {}:\n  want {:?}\n  got  {:?}",
                    case.name, case.expect, got
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total >= 200, "only {total} vectors");
    for source in Source::ALL {
        assert!(
            sources.contains_key(source.as_str()),
            "no vector expects `{}` ({sources:?})",
            source.as_str()
        );
    }
}

/// Every vector names its case uniquely within its file, parses back to
/// itself, and its expected source is a real one.
#[test]
fn vectors_are_well_formed() {
    for (file, suite) in suites() {
        let mut names = std::collections::BTreeSet::new();
        for case in &suite.cases {
            assert!(names.insert(&case.name), "{file}: `{}` twice", case.name);
            assert!(
                Source::parse(&case.expect.source).is_some(),
                "{file} / {}: unknown source {}",
                case.name,
                case.expect.source
            );
            let again: Case = serde_json::from_value(serde_json::to_value(case).unwrap()).unwrap();
            assert_eq!(again.expect, case.expect);
        }
    }
}

/// A store that answers what the vector's table holds, or fails.
#[derive(Default)]
struct VectorStore {
    answer: Mutex<Option<PoolRankings>>,
}

impl VectorStore {
    fn set(&self, pool: &str, stored: Option<&Stored>) {
        *self.answer.lock().unwrap() = stored.map(|s| PoolRankings {
            rankings: s.documents(pool),
            skipped: Vec::new(),
            controls: PoolControls {
                controls: s.controls(pool),
                skipped: Vec::new(),
            },
        });
    }
}

#[async_trait]
impl RankingStore for VectorStore {
    async fn read_pool(&self, _pool: &str) -> Result<PoolRankings, StoreError> {
        self.answer
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| StoreError::dynamo("Query", "the vector's table fails"))
    }
    async fn write(&self, _doc: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        Err(StoreError::dynamo("PutItem", "read-only"))
    }
    async fn delete(&self, _pool: &str, _region: &str) -> Result<bool, StoreError> {
        Err(StoreError::dynamo("DeleteItem", "read-only"))
    }
    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    async fn put_control(
        &self,
        _control: &Control,
        _replace: bool,
    ) -> Result<ControlWrite, StoreError> {
        Err(StoreError::dynamo("PutItem", "read-only"))
    }
    async fn delete_control(&self, _pool: &str, _key: &str) -> Result<bool, StoreError> {
        Err(StoreError::dynamo("DeleteItem", "read-only"))
    }
}

/// The real router put in the vector's state: the cache by a read
/// `age_ms` ago, the table answered by the store now, the ejections by
/// 5xx answers, the race by the scripted racer. `None` when the router
/// cannot be put in that state from outside (a cached race winner, a
/// failed read after a good one, ejections the limits refuse).
async fn through_router(config: &Config, case: &Case) -> Option<Expect> {
    if case.race_winner.is_some() || (case.read_failed && case.cache.is_some()) {
        return None;
    }
    let settings = EdgeSettings::new(config, case.region.clone());
    let pool_name = case.pool(&settings.routing).unwrap_or("").to_string();
    let store = Arc::new(VectorStore::default());
    let racer = ScriptedRacer::new(case.race.as_deref(), 0);
    let router = settings.router(store.clone(), racer.clone());
    if let Some(cached) = &case.cache {
        store.set(&pool_name, Some(&cached.stored));
        router.warm_up().await;
        tokio::time::advance(Duration::from_millis(cached.age_ms)).await;
    } else if case.read_failed {
        store.set(&pool_name, None);
        router.warm_up().await;
    }
    store.set(&pool_name, case.table.as_ref());
    if let Some(pool) = settings.pools.get(&pool_name) {
        let threshold = pool.outlier.consecutive_5xx;
        if !case.ejected.is_empty() && threshold == 0 {
            return None;
        }
        let at = tokio::time::Instant::now();
        for origin in &case.ejected {
            for _ in 0..threshold {
                router.record_response(&pool_name, origin, 503, at);
            }
        }
        let mut ejected = router.ejected(&pool_name, at);
        let mut want = case.ejected.clone();
        ejected.sort();
        want.sort();
        if ejected != want {
            return None;
        }
    }
    let d = router
        .decide_keyed(&pool_name, &case.request.key, case.now)
        .await;
    let raced = racer.given().into_iter().next();
    Some(Expect {
        source: d.source.as_str().into(),
        origin: d.origin,
        ranking_region: d.ranking_region,
        band: d.band,
        race_among: raced,
        refresh: None,
        failover: None,
        timeouts: None,
    })
}

#[tokio::test(start_paused = true)]
async fn every_vector_the_router_can_be_put_in_holds_for_the_router() {
    let mut ran = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for (file, suite) in suites() {
        let config = config(&suite);
        for case in &suite.cases {
            // An unknown pool never reaches the router: the handler passes
            // the request through before it asks.
            let routed = case.pool(&config.routing);
            if routed.is_none() {
                skipped += 1;
                continue;
            }
            let Some(got) = through_router(&config, case).await else {
                skipped += 1;
                continue;
            };
            ran += 1;
            // Whether a refresh was asked for is the pure decision's
            // output; the router's own limits decide whether it runs. The
            // failover and the timeouts are the pure decision's too: the
            // Lambda edge races instead of failing over, and sets only the
            // read timeout (edge/tests/handler.rs).
            let want = Expect {
                refresh: None,
                failover: None,
                timeouts: None,
                ..case.expect.clone()
            };
            if !meets(&got, &want) {
                failures.push(format!(
                    "{file} / {}:\n  want {:?}\n  got  {:?}",
                    case.name, case.expect, got
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ran >= 150,
        "the router ran only {ran} vectors ({skipped} skipped)"
    );
}

/// A plain model of the documented decision (the README beside the
/// vectors, and ARCHITECTURE.md), written apart from `edge::decision`:
/// lists of ids, no sets, no shared code but the geography's nearest-first
/// order, the request → pool map and the steering hash, which have tests
/// of their own. The generated vectors' expectations come from here.
mod model {
    use super::*;
    use origin_router::config::PoolConfig;
    use origin_router::control::ALL_REGIONS;

    const SKEW_MS: u64 = 10_000;

    enum Pick {
        Ranked {
            origin: String,
            region: String,
            band: usize,
        },
        AllDown {
            region: String,
        },
        Nothing,
    }

    fn default_of(pool: &PoolConfig, set: &[String]) -> String {
        let configured = pool.default_origin_id().to_string();
        if set.contains(&configured) {
            return configured;
        }
        pool.origins
            .iter()
            .find(|o| set.contains(&o.id))
            .map(|o| o.id.clone())
            .unwrap_or(configured)
    }

    fn pick(
        config: &Config,
        pool: &PoolConfig,
        case: &Case,
        rankings: &[Ranking],
        set: &[String],
    ) -> Pick {
        let regions = origin_router::geo::nearest_first(
            &case.region,
            rankings.iter().map(|r| r.region.as_str()),
            &config.edge.proximity,
        );
        let max_age = config.edge.ranking_max_age.as_millis() as u64;
        for region in regions {
            let Some(r) = rankings.iter().find(|r| r.region == region) else {
                continue;
            };
            if r.generated_at > case.now + SKEW_MS {
                continue; // from a runaway clock
            }
            if case.now.saturating_sub(r.generated_at) > max_age {
                continue;
            }
            let named: Vec<&Entry> = r.origins.iter().filter(|e| set.contains(&e.id)).collect();
            if named.is_empty() {
                continue;
            }
            let up: Vec<edge::steering::Ranked<'_>> = named
                .iter()
                .filter(|e| matches!(e.state, OriginState::Healthy | OriginState::Degraded))
                .map(|e| edge::steering::Ranked {
                    origin: pool.origin(&e.id).unwrap(),
                    state: e.state,
                    score: e.score,
                })
                .collect();
            return match edge::steering::steer(&pool.steering, &up, &case.request.key) {
                Some(s) => Pick::Ranked {
                    origin: s.origin.id.clone(),
                    region: r.region.clone(),
                    band: s.band,
                },
                None => Pick::AllDown {
                    region: r.region.clone(),
                },
            };
        }
        Pick::Nothing
    }

    /// The drains and overrides in force here and now.
    fn in_force<'c>(
        config: &Config,
        pool_name: &str,
        pool: &PoolConfig,
        case: &Case,
        controls: &'c [StoredControl],
    ) -> Vec<&'c StoredControl> {
        controls
            .iter()
            .filter(|c| c.pool.as_deref().unwrap_or(pool_name) == pool_name)
            .filter(|c| c.region == case.region || c.region == ALL_REGIONS)
            .filter(|c| c.set_at <= case.now + SKEW_MS && case.now < c.until)
            .filter(|c| {
                let max = match c.kind {
                    ControlKind::Drain => config.operations.max_drain,
                    ControlKind::Override => config.operations.max_override,
                };
                c.until > c.set_at && c.until - c.set_at <= max.as_millis() as u64
            })
            .filter(|c| pool.origin(&c.origin).is_some())
            .collect()
    }

    enum Step {
        Done(Expect),
        Race { among: Vec<String> },
    }

    /// One pass over what the container knows (`cache`, or the table just
    /// read when `just_read`).
    fn pass(
        config: &Config,
        pool_name: &str,
        pool: &PoolConfig,
        case: &Case,
        known: Option<(&Stored, Option<u64>)>,
        race_winner: Option<&str>,
        read_failed: bool,
    ) -> (Step, Option<&'static str>) {
        let done = |source: &str, origin: String, region: Option<String>, band, refresh| {
            Step::Done(Expect {
                source: source.into(),
                origin,
                ranking_region: region,
                band,
                race_among: None,
                refresh: Some(refresh),
                failover: None,
                timeouts: None,
            })
        };
        let no_controls = Vec::new();
        let controls = known.map_or(&no_controls, |(s, _)| &s.controls);
        let active = in_force(config, pool_name, pool, case, controls);
        // The latest set; on a tie the region's own over all regions',
        // then the smaller origin id.
        let mut overrides: Vec<&&StoredControl> = active
            .iter()
            .filter(|c| c.kind == ControlKind::Override)
            .collect();
        overrides.sort_by(|a, b| {
            b.set_at
                .cmp(&a.set_at)
                .then((b.region != ALL_REGIONS).cmp(&(a.region != ALL_REGIONS)))
                .then(a.origin.cmp(&b.origin))
        });
        // An override or a closed pool needs no ranking, but its controls
        // are refreshed in the background once older than cache_ttl.
        let controls_refresh = read_failed
            || match known {
                None => true,
                Some((_, None)) => false,
                Some((_, Some(age))) => age > config.edge.cache_ttl.as_millis() as u64,
            };
        if let Some(o) = overrides.first() {
            return (
                done("override", o.origin.clone(), None, None, controls_refresh),
                None,
            );
        }
        let all: Vec<String> = pool.origins.iter().map(|o| o.id.clone()).collect();
        let drained: Vec<&str> = active
            .iter()
            .filter(|c| c.kind == ControlKind::Drain)
            .map(|c| c.origin.as_str())
            .collect();
        let mut undrained: Vec<String> = all
            .iter()
            .filter(|id| !drained.contains(&id.as_str()))
            .cloned()
            .collect();
        if undrained.is_empty() {
            if !config.operations.fail_open {
                return (
                    Step::Done(Expect {
                        refresh: Some(controls_refresh),
                        ..Expect::passthrough()
                    }),
                    None,
                );
            }
            undrained = all.clone();
        }
        let mut preferred: Vec<String> = undrained
            .iter()
            .filter(|id| !case.ejected.contains(id))
            .cloned()
            .collect();
        if preferred.is_empty() {
            preferred = undrained.clone();
        }

        let mut current = false;
        if let Some((stored, age)) = known {
            let edge = &config.edge;
            let source = match age {
                None => Some(("table", false)),
                Some(a) if a <= edge.cache_ttl.as_millis() as u64 => Some(("cache", false)),
                Some(a) if a <= edge.max_stale.as_millis() as u64 => Some(("stale", true)),
                Some(_) => None,
            };
            if let Some((source, refresh)) = source {
                let mut choice = pick(config, pool, case, &stored.rankings, &preferred);
                if !matches!(choice, Pick::Ranked { .. }) && preferred != undrained {
                    choice = pick(config, pool, case, &stored.rankings, &undrained);
                }
                if matches!(choice, Pick::AllDown { .. })
                    && config.operations.fail_open
                    && undrained != all
                {
                    if let up @ Pick::Ranked { .. } =
                        pick(config, pool, case, &stored.rankings, &all)
                    {
                        choice = up;
                    }
                }
                match choice {
                    Pick::Ranked {
                        origin,
                        region,
                        band,
                    } => {
                        return (
                            done(source, origin, Some(region), Some(band), refresh),
                            None,
                        )
                    }
                    Pick::AllDown { region } => {
                        let origin = default_of(pool, &undrained);
                        return (
                            done("known_down", origin, Some(region), None, refresh),
                            None,
                        );
                    }
                    Pick::Nothing => current = source != "stale",
                }
            }
        }
        let read = if read_failed {
            Some("background")
        } else if current {
            None
        } else {
            Some("foreground")
        };
        if let Some(w) = race_winner.filter(|w| preferred.iter().any(|p| p == w)) {
            return (
                done("race", w.to_string(), None, None, read.is_some()),
                None,
            );
        }
        (Step::Race { among: preferred }, read)
    }

    pub fn decide(config: &Config, case: &Case) -> Expect {
        let Some(pool_name) = case.pool(&config.routing) else {
            return Expect::passthrough();
        };
        let pool = &config.pools[pool_name];
        let known = case.cache.as_ref().map(|c| (&c.stored, Some(c.age_ms)));
        let (step, read) = pass(
            config,
            pool_name,
            pool,
            case,
            known,
            case.race_winner.as_deref(),
            case.read_failed,
        );
        let refresh = read == Some("background");
        let step = match (step, read, &case.table) {
            (Step::Race { .. }, Some("foreground"), Some(table)) => {
                match pass(
                    config,
                    pool_name,
                    pool,
                    case,
                    Some((table, None)),
                    None,
                    false,
                )
                .0
                {
                    Step::Done(mut e) => {
                        if e.refresh.is_some() {
                            e.refresh = Some(false);
                        }
                        return e;
                    }
                    race => race,
                }
            }
            (step, _, _) => step,
        };
        match step {
            Step::Done(e) => e,
            Step::Race { among } => {
                let winner = case.race.clone().filter(|w| among.contains(w));
                Expect {
                    source: if winner.is_some() { "race" } else { "watchdog" }.into(),
                    origin: winner.unwrap_or_else(|| default_of(pool, &among)),
                    ranking_region: None,
                    band: None,
                    race_among: Some(among),
                    refresh: Some(refresh),
                    failover: None,
                    timeouts: None,
                }
            }
        }
    }
}

/// The generator of `generated-*.json`: seeded, so the files are
/// reproducible; each case draws its region, clock, cache, table,
/// controls, ejections and race from a small world where every rule of
/// the decision matters.
mod generate {
    use super::*;

    pub const NOW: u64 = 1_780_000_000_000;
    const REGIONS: [&str; 5] = [
        "eu-west-1",
        "us-east-1",
        "ap-southeast-2",
        "eu-central-1",
        "sa-east-1",
    ];

    /// splitmix64: small, seeded, the same everywhere.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed)
        }
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn of<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    /// The generated suites: (file stem, description, config).
    pub fn worlds() -> Vec<(&'static str, &'static str, String)> {
        vec![
            (
                "fastest",
                "fastest steering over three origins, fail-open on",
                r#"
[routing]
default_pool = "web"
[pools.web]
default_origin = "b"
origins = [
  { id = "a", host = "a.example.net" },
  { id = "b", host = "b.example.net" },
  { id = "c", host = "c.example.net" },
]
[pools.web.outlier]
consecutive_5xx = 3
max_ejection_percent = 100
"#
                .to_string(),
            ),
            (
                "band",
                "a latency band over four weighted origins, one capped, keyed by URI",
                r#"
[routing]
default_pool = "web"
[pools.web]
origins = [
  { id = "a", host = "a.example.net", weight = 2.0 },
  { id = "b", host = "b.example.net", max_share = 0.5 },
  { id = "c", host = "c.example.net" },
  { id = "d", host = "d.example.net", weight = 0.5 },
]
[pools.web.steering]
policy = "band"
band_absolute = "20ms"
band_relative = 0.2
[pools.web.outlier]
consecutive_5xx = 2
max_ejection_percent = 100
"#
                .to_string(),
            ),
            (
                "closed",
                "fail-open off, two pools mapped by Host header and distribution",
                r#"
[routing]
hosts = { "api.example.org" = "api" }
distributions = { "E2QWRUHAPOMQZL" = "web" }
[pools.web]
origins = [
  { id = "a", host = "a.example.net" },
  { id = "b", host = "b.example.net" },
  { id = "c", host = "c.example.net" },
]
[pools.api]
origins = [
  { id = "a", host = "api-a.example.net" },
  { id = "b", host = "api-b.example.net" },
  { id = "c", host = "api-c.example.net" },
]
[operations]
fail_open = false
[pools.web.outlier]
consecutive_5xx = 1
max_ejection_percent = 100
[pools.api.outlier]
consecutive_5xx = 1
max_ejection_percent = 100
"#
                .to_string(),
            ),
            (
                "proximity",
                "a hard-edged band, short freshness and an operator's proximity list",
                r#"
[routing]
default_pool = "web"
[pools.web]
origins = [
  { id = "a", host = "a.example.net" },
  { id = "b", host = "b.example.net" },
  { id = "c", host = "c.example.net" },
]
[pools.web.steering]
policy = "band"
band_absolute = "10ms"
band_taper = 0.0
[pools.web.outlier]
consecutive_5xx = 2
max_ejection_percent = 100
[edge]
ranking_max_age = "10s"
cache_ttl = "2s"
max_stale = "20s"
proximity = { "eu-west-1" = ["sa-east-1", "us-east-1"] }
"#
                .to_string(),
            ),
        ]
    }

    fn ranking(rng: &mut Rng, ids: &[String], region: &str) -> Ranking {
        let age: i64 = *rng.of(&[
            0, 1_000, 5_000, 9_000, 15_000, 29_000, 31_000, 120_000, -5_000, -20_000,
        ]);
        let mut order: Vec<String> = ids.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        if rng.chance(15) {
            order.push("stranger".into());
        }
        let n = 1 + rng.below(order.len() as u64) as usize;
        let mut score = 5.0 + rng.below(40) as f64;
        let origins = order[..n]
            .iter()
            .map(|id| {
                let state = *rng.of(&[
                    OriginState::Healthy,
                    OriginState::Healthy,
                    OriginState::Healthy,
                    OriginState::Degraded,
                    OriginState::Down,
                    OriginState::Drained,
                ]);
                score += rng.below(25) as f64 + 0.5;
                Entry {
                    id: id.clone(),
                    state,
                    score: if rng.chance(5) { None } else { Some(score) },
                    connect_budget_ms: None,
                }
            })
            .collect();
        Ranking {
            region: region.to_string(),
            generated_at: (NOW as i64 - age) as u64,
            origins,
        }
    }

    fn stored(rng: &mut Rng, ids: &[String], pools: &[String]) -> Stored {
        let regions = 1 + rng.below(3) as usize;
        let mut rankings = Vec::new();
        for _ in 0..regions {
            let region = *rng.of(&REGIONS);
            if !rankings.iter().any(|r: &Ranking| r.region == region) {
                rankings.push(ranking(rng, ids, region));
            }
        }
        let mut controls = Vec::new();
        let n = *rng.of(&[0, 0, 0, 1, 1, 2, 3]);
        for _ in 0..n {
            let kind = if rng.chance(25) {
                ControlKind::Override
            } else {
                ControlKind::Drain
            };
            let region = if rng.chance(30) {
                origin_router::control::ALL_REGIONS.to_string()
            } else {
                rng.of(&REGIONS).to_string()
            };
            let set_at = NOW - *rng.of(&[1_000, 60_000, 3_600_000]);
            let until = *rng.of(&[NOW - 1, NOW + 1, NOW + 600_000, set_at + 40 * 86_400_000]);
            controls.push(StoredControl {
                kind,
                pool: rng.chance(10).then(|| rng.of(pools).clone()),
                region,
                origin: if rng.chance(5) {
                    "stranger".into()
                } else {
                    rng.of(ids).clone()
                },
                set_at,
                until: until.max(set_at + 1),
            });
        }
        Stored { rankings, controls }
    }

    pub fn case(rng: &mut Rng, config: &Config, index: usize) -> Case {
        let pools: Vec<String> = config.pools.keys().cloned().collect();
        let ids: Vec<String> = config.pools[&pools[0]]
            .origins
            .iter()
            .map(|o| o.id.clone())
            .collect();
        let request = if config.routing.default_pool.is_some() {
            Request {
                host: Some("www.example.org".into()),
                distribution_id: None,
                key: format!("/assets/{}.js", rng.below(1000)),
            }
        } else {
            let (host, distribution_id) = *rng.of(&[
                (Some("api.example.org"), None),
                (Some("API.example.org:443"), None),
                (Some("www.example.org"), Some("E2QWRUHAPOMQZL")),
                (None, Some("E2QWRUHAPOMQZL")),
                (Some("www.example.org"), None),
            ]);
            Request {
                host: host.map(String::from),
                distribution_id: distribution_id.map(String::from),
                key: format!("/p/{}", rng.below(1000)),
            }
        };
        let cache = rng.chance(75).then(|| Cached {
            age_ms: *rng.of(&[0, 100, 499, 500, 501, 1_999, 2_001, 10_000, 59_000, 60_001]),
            stored: stored(rng, &ids, &pools),
        });
        let read_failed = cache.is_none() && rng.chance(15);
        let table = rng.chance(60).then(|| stored(rng, &ids, &pools));
        let ejected: Vec<String> = ids.iter().filter(|_| rng.chance(20)).cloned().collect();
        let race_winner = rng.chance(15).then(|| rng.of(&ids).clone());
        let race = rng.chance(60).then(|| rng.of(&ids).clone());
        let mut case = Case {
            name: format!("generated {index}"),
            region: rng.of(&REGIONS).to_string(),
            now: NOW,
            request,
            cache,
            read_failed,
            table,
            ejected,
            race_winner,
            race,
            expect: Expect::only("", String::new()),
        };
        case.expect = model::decide(config, &case);
        case
    }

    pub fn suite(index: usize, description: &str, config: &str) -> Suite {
        let parsed = Config::from_toml(config, "vector.toml").unwrap();
        let mut rng = Rng::new(0x0419_0000 + index as u64);
        Suite {
            description: format!(
                "Generated (seeded; edge/tests/vectors.rs `generate`): {description}."
            ),
            config: config.trim_start().to_string(),
            cases: (0..CASES_PER_SUITE)
                .map(|i| case(&mut rng, &parsed, i))
                .collect(),
        }
    }

    pub const CASES_PER_SUITE: usize = 75;
}

/// The generated files are exactly what the generator writes (rewrite
/// them with `ORIGIN_ROUTER_WRITE_VECTORS=1` after a deliberate change).
#[test]
fn the_generated_vectors_are_the_generators() {
    let write = std::env::var_os("ORIGIN_ROUTER_WRITE_VECTORS").is_some();
    for (i, (stem, description, config)) in generate::worlds().into_iter().enumerate() {
        let suite = generate::suite(i, description, &config);
        let text = serde_json::to_string_pretty(&suite).unwrap() + "\n";
        let path = format!("{DIR}/generated-{stem}.json");
        if write {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{path}: {e} (write it with ORIGIN_ROUTER_WRITE_VECTORS=1)")
        });
        assert!(
            on_disk == text,
            "{path} is not what the generator writes (ORIGIN_ROUTER_WRITE_VECTORS=1 rewrites it)"
        );
    }
}

/// Beyond the stored vectors: the decision and the model agree on 4,000
/// more generated cases.
#[test]
fn the_decision_agrees_with_the_model_on_many_more_cases() {
    let mut failures = Vec::new();
    for (i, (_, _, config)) in generate::worlds().into_iter().enumerate() {
        let config = Config::from_toml(&config, "vector.toml").unwrap();
        let mut rng = generate::Rng::new(0xDEC1_5101 + i as u64);
        for n in 0..1_000 {
            let case = generate::case(&mut rng, &config, n);
            let got = decide(&config, &case);
            if !meets(&got, &case.expect) {
                failures.push(format!("world {i} case {n}: {case:?}\n  got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(3)].join("\n")
    );
}
