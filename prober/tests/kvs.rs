//! The KeyValueStore publisher against the local KeyValueStore
//! (`origin_router_tests::kvs::KvsServer`, loopback only): what a leader
//! writes, when, with two regions in one store, with a store that hangs or
//! fails, and through the shipped binary in a new user's configuration.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{aws_test_env, eventually, prober, Proc, REGION};
use origin_router::compact;
use origin_router::config::{Config, OriginConfig, PoolConfig};
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::store::EmbeddedStore;
use origin_router_tests::kvs::{Fault, KvsServer, Operation, SIGV4A};
use origin_router_tests::{Mode, TestOrigin};
use prober::kvs::{KvsPublisher, SdkKvs, Settings};
use tokio::sync::watch;

const HEARTBEAT: Duration = Duration::from_secs(3);

/// A pool of `ids` on hosts that are never contacted (the publisher only
/// encodes against the config).
fn paper_pool(ids: &[&str]) -> PoolConfig {
    PoolConfig {
        origins: ids
            .iter()
            .map(|id| OriginConfig::http(id, &format!("{id}.example.net"), 80))
            .collect(),
        ..Default::default()
    }
}

/// A publisher of `region` on `server`, through the prober's own client
/// construction (`store.kvs_endpoint`).
async fn publisher(
    server: &KvsServer,
    region: &str,
    pools: &BTreeMap<String, PoolConfig>,
) -> KvsPublisher {
    aws_test_env();
    let api = SdkKvs::connect(
        server.arn(),
        Some(&server.endpoint()),
        Duration::from_secs(5),
    )
    .await;
    KvsPublisher::spawn(
        Arc::new(api),
        Settings {
            region: region.into(),
            heartbeat: HEARTBEAT,
            pools: Arc::new(pools.clone()),
        },
    )
}

/// A ranking of `pool` in `region` with `order` (all healthy, scores 10,
/// 20, ... ms, connect budgets 400 ms), generated `seq` seconds after a
/// fixed date.
fn ranking(pool: &str, region: &str, seq: u64, order: &[&str]) -> RankingDocument {
    let origins = order
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut o = RankedOrigin::measured(id, OriginState::Healthy, 10.0 * (i + 1) as f64, 3);
            o.connect_budget_ms = Some(400.0);
            o
        })
        .collect();
    RankingDocument::new(pool, region, seq, 1_780_000_000_000 + seq * 1000, origins)
}

fn decoded(
    server: &KvsServer,
    pool_name: &str,
    pool: &PoolConfig,
    region: &str,
) -> Option<RankingDocument> {
    let value = server
        .snapshot()
        .get(&compact::key(pool_name, region))?
        .clone();
    Some(
        compact::decode(pool_name, pool, region, &value)
            .expect("the value decodes")
            .0,
    )
}

fn order_and_states(doc: &RankingDocument) -> Vec<(String, OriginState)> {
    doc.origins
        .iter()
        .map(|o| (o.id.clone(), o.state))
        .collect()
}

fn successful_updates(server: &KvsServer) -> usize {
    server
        .requests_of(Operation::UpdateKeys)
        .iter()
        .filter(|r| r.status == Some(200))
        .count()
}

/// Every request the server saw was signed with SigV4A (region set `*`)
/// with the test credentials, and none was refused.
fn assert_all_sigv4a(server: &KvsServer) {
    let requests = server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.algorithm.as_deref(), Some(SIGV4A), "{r:?}");
        assert_eq!(r.region_set.as_deref(), Some("*"), "{r:?}");
        assert_eq!(r.access_key_id.as_deref(), Some("testing"), "{r:?}");
        assert!(
            matches!(
                r.operation,
                Operation::DescribeKeyValueStore | Operation::UpdateKeys
            ),
            "{r:?}"
        );
        if r.operation == Operation::UpdateKeys {
            assert!(r.if_match.is_some(), "{r:?}");
        }
    }
}

/// A worker's config over `origins` (id, origin): one pool `web`, rounds
/// every second, the embedded store in `dir`, the KeyValueStore at
/// `server`, a 3 s heartbeat.
fn worker_config(origins: &[(&str, &TestOrigin)], dir: &Path, server: &KvsServer) -> Config {
    let mut c = Config::default();
    c.pools.insert(
        "web".into(),
        PoolConfig {
            origins: origins
                .iter()
                .map(|(id, o)| OriginConfig::http(id, &o.addr().ip().to_string(), o.port()))
                .collect(),
            ..Default::default()
        },
    );
    c.prober.region = Some(REGION.into());
    c.prober.worker_id = Some("kvs-test".into());
    c.prober.interval = Duration::from_secs(1);
    c.prober.connect_timeout = Duration::from_millis(300);
    c.prober.response_timeout = Duration::from_millis(500);
    c.prober.jitter = Duration::from_millis(50);
    c.prober.fast_interval = Duration::from_millis(100);
    c.prober.lease_ttl = Duration::from_secs(3);
    c.prober.shutdown_grace = Duration::from_secs(1);
    c.prober.metrics_listen = None;
    c.prober.kvs_heartbeat = HEARTBEAT;
    c.store.embedded_path = dir.join("store");
    c.store.kvs_arn = Some(server.arn().into());
    c.store.kvs_endpoint = Some(server.endpoint());
    c.validate().expect("test config is valid")
}

/// Runs a worker as `prober run` does until `stop` turns true.
fn spawn_worker(config: Config, stop: &watch::Receiver<bool>) {
    aws_test_env();
    let mut stop = stop.clone();
    tokio::spawn(prober::run(config, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
}

async fn two_origins() -> (TestOrigin, TestOrigin) {
    let a = TestOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Delay(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let b = TestOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Delay(Duration::from_millis(80)),
    )
    .await
    .unwrap();
    (a, b)
}

/// A leader (solo worker, embedded store) writes its ranking under
/// `web/eu-west-1`; the value decodes to the order and states of the
/// ranking in its store, with its `seq` and `generated_at` no newer than
/// the store's; every request is signed with SigV4A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_ranking_appears_under_pool_region_and_decodes_to_its_order() {
    let server = KvsServer::start().await.unwrap();
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(&[("b", &b), ("a", &a)], dir.path(), &server);
    let pool = config.pools["web"].clone();
    let (stop_tx, stop) = watch::channel(false);
    spawn_worker(config, &stop);
    let store = EmbeddedStore::new(dir.path().join("store"));
    let matched = eventually(Duration::from_secs(20), || async {
        let kvs = decoded(&server, "web", &pool, REGION)?;
        let stored = common::ranking(&store).await?;
        let both_up = stored
            .origins
            .iter()
            .all(|o| o.state == OriginState::Healthy);
        (both_up && order_and_states(&kvs) == order_and_states(&stored)).then_some((kvs, stored))
    })
    .await;
    let (kvs, stored) = matched.unwrap_or_else(|| {
        panic!(
            "no matching value; store holds {:?}, requests {:?}",
            server.snapshot(),
            server.requests()
        )
    });
    assert_eq!(
        order_and_states(&kvs),
        vec![
            ("a".to_string(), OriginState::Healthy),
            ("b".to_string(), OriginState::Healthy)
        ]
    );
    assert!(
        stored.generated_at.abs_diff(kvs.generated_at)
            <= (HEARTBEAT + Duration::from_secs(2)).as_millis() as u64,
        "the value is at most a heartbeat and a round behind: {kvs:?} {stored:?}"
    );
    assert_eq!(server.snapshot().len(), 1, "{:?}", server.snapshot());
    assert_all_sigv4a(&server);
    stop_tx.send_replace(true);
}

/// Rounds of one pool, one second apart in `generated_at`: an unchanged
/// choice is written only at the heartbeat (every 3 s of rankings), a
/// changed one in the round it changed, before the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_choice_is_written_within_a_round_and_an_unchanged_one_only_at_the_heartbeat() {
    let server = KvsServer::start().await.unwrap();
    let pools: BTreeMap<String, PoolConfig> =
        [("web".to_string(), paper_pool(&["a", "b", "c"]))].into();
    let kvs = publisher(&server, REGION, &pools).await;
    let mut writes = Vec::new();
    let mut write_ms = Vec::new();
    // One round: submits, and returns how long the write took to be
    // stored, or `None` if there was none within 300 ms (the first round
    // waits up to 3 s: it loads credentials and describes the store).
    let round = |seq: u64, order: &'static [&'static str]| {
        let before = successful_updates(&server);
        let submitted = Instant::now();
        kvs.submit(ranking("web", REGION, seq, order), Vec::new());
        let server = &server;
        let wait = if seq == 0 {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(300)
        };
        async move {
            loop {
                if successful_updates(server) > before {
                    return Some(submitted.elapsed());
                }
                if submitted.elapsed() > wait {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    const ABC: &[&str] = &["a", "b", "c"];
    const BAC: &[&str] = &["b", "a", "c"];
    for seq in 0..10u64 {
        if let Some(took) = round(seq, ABC).await {
            writes.push(seq);
            write_ms.push(took.as_secs_f64() * 1000.0);
        }
    }
    // Written first, then at every 3 s of rankings.
    assert_eq!(writes, vec![0, 3, 6, 9]);
    // The choice changes: written in this round; then quiet again.
    let took = round(10, BAC)
        .await
        .expect("a changed choice is written at once");
    write_ms.push(took.as_secs_f64() * 1000.0);
    assert!(round(11, BAC).await.is_none());
    assert!(round(12, BAC).await.is_none());
    let back = decoded(&server, "web", &pools["web"], REGION).unwrap();
    assert_eq!(back.seq, 10);
    assert_eq!(
        back.origins
            .iter()
            .map(|o| o.id.as_str())
            .collect::<Vec<_>>(),
        BAC
    );
    eprintln!("submit to stored (ms, first includes credentials and describe): {write_ms:.1?}");
    assert_all_sigv4a(&server);
}

/// Two regions' publishers write three pools each into one store at the
/// same time, while the server makes a dozen `UpdateKeys` lose to an
/// imaginary third writer: each loser re-reads the ETag and retries, and
/// both regions' latest rankings of every pool end up in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_writing_at_once_with_conflicts_lose_nothing() {
    let server = KvsServer::start().await.unwrap();
    let pools: BTreeMap<String, PoolConfig> = ["web", "api", "img"]
        .iter()
        .map(|p| (p.to_string(), paper_pool(&["a", "b", "c"])))
        .collect();
    let regions = ["eu-west-1", "us-east-1"];
    let east = publisher(&server, regions[0], &pools).await;
    let west = publisher(&server, regions[1], &pools).await;
    let publishers = [&east, &west];
    server.conflict_next_updates(12);
    const ORDERS: [&[&str]; 2] = [&["a", "b", "c"], &["c", "b", "a"]];
    let last = 6u64;
    for seq in 1..=last {
        for (region, p) in regions.iter().zip(publishers) {
            for pool in pools.keys() {
                // Every round changes the choice: every round is due.
                p.submit(
                    ranking(pool, region, seq, ORDERS[(seq % 2) as usize]),
                    Vec::new(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Later rounds carry the same choice: what a round left unwritten is
    // written at the next.
    let mut seq = last;
    let done = eventually(Duration::from_secs(20), || {
        seq += 1;
        for (region, p) in regions.iter().zip(publishers) {
            for pool in pools.keys() {
                p.submit(
                    ranking(pool, region, seq, ORDERS[(last % 2) as usize]),
                    Vec::new(),
                );
            }
        }
        let server = &server;
        let pools = &pools;
        async move {
            let all = regions.iter().all(|region| {
                pools.iter().all(|(name, pool)| {
                    decoded(server, name, pool, region).is_some_and(|d| {
                        d.seq >= last
                            && d.origins.iter().map(|o| o.id.as_str()).collect::<Vec<_>>()
                                == ORDERS[(last % 2) as usize]
                    })
                })
            });
            all.then_some(())
        }
    })
    .await;
    let conflicts = server
        .requests_of(Operation::UpdateKeys)
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    assert!(
        done.is_some(),
        "not every latest ranking arrived: {:?}",
        server.snapshot()
    );
    assert_eq!(server.snapshot().len(), 6, "{:?}", server.snapshot());
    assert_eq!(
        conflicts, 12,
        "every injected conflict was met and survived"
    );
    let describes = server.requests_of(Operation::DescribeKeyValueStore).len();
    assert!(describes > conflicts, "each conflict re-read the ETag");
    eprintln!(
        "UpdateKeys: {} answered 200, {conflicts} answered 409; {describes} DescribeKeyValueStore",
        successful_updates(&server)
    );
}

/// The (seq, generated_at) of each new ranking in `store` over `span`,
/// polled every 50 ms.
async fn rankings_over(store: &EmbeddedStore, span: Duration) -> Vec<(u64, u64)> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let end = Instant::now() + span;
    while Instant::now() < end {
        if let Some(doc) = common::ranking(store).await {
            if seen.last().is_none_or(|l| l.0 != doc.seq) {
                seen.push((doc.seq, doc.generated_at));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// The gaps between successive rankings' `generated_at`, ms.
fn gaps(seen: &[(u64, u64)]) -> Vec<u64> {
    seen.windows(2).map(|w| w[1].1 - w[0].1).collect()
}

/// A KeyValueStore that accepts requests and never answers, then one that
/// answers 500 to everything: the worker's rounds and its embedded-store
/// publish go on every second all the same (the ranking's `seq` and
/// `generated_at` advance once a round); when the store is healthy again,
/// the publisher writes the current ranking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_failing_kvs_never_delays_rounds_or_the_ranking_store_and_recovers() {
    let server = KvsServer::start().await.unwrap();
    let (a, b) = two_origins().await;
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(&[("a", &a), ("b", &b)], dir.path(), &server);
    let pool = config.pools["web"].clone();
    let (stop_tx, stop) = watch::channel(false);
    spawn_worker(config, &stop);
    let store = EmbeddedStore::new(dir.path().join("store"));
    let first = eventually(Duration::from_secs(20), || async {
        decoded(&server, "web", &pool, REGION)
    })
    .await
    .expect("a first value while the store is healthy");

    server.set_fault(Fault::Hang);
    let hung = rankings_over(&store, Duration::from_secs(7)).await;
    let hung_requests = server
        .requests()
        .iter()
        .filter(|r| r.status.is_none())
        .count();
    server.set_fault(Fault::InternalError);
    let failing = rankings_over(&store, Duration::from_secs(5)).await;
    let failed_requests = server
        .requests()
        .iter()
        .filter(|r| r.status == Some(500))
        .count();
    eprintln!("rounds while hung: gaps {:?} ms", gaps(&hung));
    eprintln!("rounds while failing: gaps {:?} ms", gaps(&failing));
    assert!(hung_requests >= 1, "the store was asked and hung");
    assert!(failed_requests >= 1, "the store was asked and failed");
    for (what, seen, span) in [("hung", &hung, 7), ("failing", &failing, 5)] {
        assert!(
            seen.len() >= span - 1,
            "{what}: {} rankings in {span} s at 1 s rounds: {seen:?}",
            seen.len()
        );
        assert!(
            gaps(seen).iter().all(|g| *g <= 1_600),
            "{what}: a round came late: {:?}",
            gaps(seen)
        );
    }
    assert!(first.seq <= hung[0].0);

    server.set_fault(Fault::None);
    let healed = Instant::now();
    let newest = failing.last().unwrap().0;
    let recovered = eventually(Duration::from_secs(15), || async {
        decoded(&server, "web", &pool, REGION).filter(|d| d.seq > newest)
    })
    .await;
    assert!(
        recovered.is_some(),
        "no value newer than seq {newest} after the store healed: {:?}",
        server.snapshot()
    );
    eprintln!(
        "a value newer than the faults {} ms after the store healed",
        healed.elapsed().as_millis()
    );
    stop_tx.send_replace(true);
}

/// A new user's config (one origin, the embedded store, no Redis) with
/// `store.kvs_arn` and `store.kvs_endpoint` of `server`.
async fn solo_with_kvs(
    dir: &Path,
    server: &KvsServer,
) -> (TestOrigin, std::path::PathBuf, std::net::SocketAddr) {
    let (origin, path, metrics) = common::solo_setup(dir, "").await;
    let mut text = std::fs::read_to_string(&path).unwrap();
    // `[store]` is the config's last table.
    text.push_str(&format!(
        "kvs_arn = \"{}\"\nkvs_endpoint = \"{}\"\n",
        server.arn(),
        server.endpoint()
    ));
    std::fs::write(&path, &text).unwrap();
    (origin, path, metrics)
}

/// The shipped binary running `path`, with the test credentials, its log
/// in `dir`.
fn run_binary(path: &Path, dir: &Path) -> Proc {
    Proc(
        prober(&common::aws_test_vars(REGION))
            .args(["run", "-c", &path.display().to_string()])
            .stdout(std::fs::File::create(dir.join("worker.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("worker.err")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The shipped `prober` binary in the configuration a new user starts
/// with (one origin, the embedded store, no Redis), plus `store.kvs_arn`
/// and `store.kvs_endpoint`: the value appears, decodes to the ranking,
/// and was signed with SigV4A by the AWS default credential chain (the
/// environment here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_binary_in_a_new_users_config_writes_the_value() {
    let server = KvsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_origin, path, _metrics) = solo_with_kvs(dir.path(), &server).await;
    let config = Config::load(&path).expect("the config is valid");
    let _worker = run_binary(&path, dir.path());
    let found = eventually(Duration::from_secs(30), || async {
        decoded(&server, "web", &config.pools["web"], REGION)
    })
    .await;
    let Some(value) = found else {
        panic!(
            "no value; requests {:?}\nworker log:\n{}",
            server.requests(),
            std::fs::read_to_string(dir.path().join("worker.err")).unwrap_or_default()
        );
    };
    assert_eq!(
        order_and_states(&value),
        vec![("only".to_string(), OriginState::Healthy)]
    );
    let store = EmbeddedStore::new(dir.path().join("store"));
    let stored = common::ranking(&store)
        .await
        .expect("the embedded publish too");
    assert!(value.seq <= stored.seq);
    assert_all_sigv4a(&server);
}

/// `ranking`'s value as another writer (the region's next leader) would
/// write it.
fn value_of(pool: &PoolConfig, doc: &RankingDocument) -> String {
    compact::encode(pool, doc, &[], doc.generated_at)
        .expect("encodes")
        .value
}

fn order(doc: &RankingDocument) -> Vec<&str> {
    doc.origins.iter().map(|o| o.id.as_str()).collect()
}

/// A leader deposed, while another worker led and wrote the key, then
/// leading again with the ranking it last wrote: it writes at once, not a
/// heartbeat later (its memory of what it wrote is a term old; the key
/// holds the other worker's value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_leading_again_rewrites_its_keys_at_once() {
    let server = KvsServer::start().await.unwrap();
    let pool = paper_pool(&["a", "b", "c"]);
    let pools: BTreeMap<String, PoolConfig> = [("web".to_string(), pool.clone())].into();
    let kvs = publisher(&server, REGION, &pools).await;
    kvs.submit(ranking("web", REGION, 1, &["a", "b", "c"]), vec![]);
    let first = eventually(Duration::from_secs(5), || async {
        decoded(&server, "web", &pool, REGION).filter(|d| d.seq == 1)
    })
    .await;
    assert!(first.is_some(), "{:?}", server.requests());
    // Deposed; the next leader writes its own ranking.
    kvs.stand_down();
    let successor = ranking("web", REGION, 2, &["b", "a", "c"]);
    server.seed([(compact::key("web", REGION), value_of(&pool, &successor))]);
    // Leading again, one second later: the same choice as its last write.
    kvs.submit(ranking("web", REGION, 3, &["a", "b", "c"]), vec![]);
    let back = eventually(Duration::from_secs(3), || async {
        decoded(&server, "web", &pool, REGION).filter(|d| d.seq == 3)
    })
    .await;
    let now = decoded(&server, "web", &pool, REGION).unwrap();
    assert!(
        back.is_some(),
        "the key still holds the deposed term's successor's value: {:?}",
        order(&now)
    );
    assert_eq!(order(&now), vec!["a", "b", "c"]);
}

/// A leader deposed while its write backs off after conflicts (another
/// region writing): once it stood down, its ranking never lands over the
/// new leader's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_pending_value_is_never_written_over_its_successors() {
    let server = KvsServer::start().await.unwrap();
    let pool = paper_pool(&["a", "b", "c"]);
    let pools: BTreeMap<String, PoolConfig> = [("web".to_string(), pool.clone())].into();
    let kvs = publisher(&server, REGION, &pools).await;
    kvs.submit(ranking("web", REGION, 1, &["a", "b", "c"]), vec![]);
    let first = eventually(Duration::from_secs(5), || async {
        decoded(&server, "web", &pool, REGION).filter(|d| d.seq == 1)
    })
    .await;
    assert!(first.is_some(), "{:?}", server.requests());
    // The next write conflicts seven times: it backs off between attempts.
    server.conflict_next_updates(7);
    server.clear_requests();
    kvs.submit(ranking("web", REGION, 2, &["b", "a", "c"]), vec![]);
    let conflicted = eventually(Duration::from_secs(5), || async {
        server
            .requests_of(Operation::UpdateKeys)
            .iter()
            .any(|r| r.status == Some(409))
            .then_some(())
    })
    .await;
    assert!(conflicted.is_some(), "{:?}", server.requests());
    // Deposed meanwhile; the successor writes.
    kvs.stand_down();
    let successor = ranking("web", REGION, 5, &["c", "b", "a"]);
    server.seed([(compact::key("web", REGION), value_of(&pool, &successor))]);
    // Longer than the seven backoffs (at most 5.15 s) and the calls.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let now = decoded(&server, "web", &pool, REGION).unwrap();
    assert_eq!(
        (now.seq, order(&now)),
        (5, vec!["c", "b", "a"]),
        "the deposed leader wrote over its successor; requests {:?}",
        server.requests()
    );
}

/// A new user's config with `kvs_arn` set, the endpoint a port that
/// refuses connections, on a machine with AWS credentials (`credentials`)
/// or with none, no region and no shared config: the worker starts, probes
/// and publishes to its ranking store every round, and its log says the
/// KeyValueStore writes fail.
async fn a_kvs_that_cannot_be_reached_never_stops_the_worker(credentials: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (_origin, path, _metrics) = common::solo_setup(dir.path(), "").await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refused.local_addr().unwrap().port();
    drop(refused);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "kvs_arn = \"arn:aws:cloudfront::123456789012:key-value-store/0f0e0d0c-0b0a-0908-0706-050403020100\"\nkvs_endpoint = \"http://127.0.0.1:{port}\"\n"
    ));
    std::fs::write(&path, &text).unwrap();
    let mut cmd = prober(&[]);
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(name);
    }
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
    // No shared config or credentials files either.
    cmd.env("HOME", dir.path());
    let _worker = Proc(
        cmd.args(["run", "-c", &path.display().to_string()])
            .stdout(std::fs::File::create(dir.path().join("worker.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("worker.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || {
        std::fs::read_to_string(dir.path().join("worker.err")).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
    };
    let store = EmbeddedStore::new(dir.path().join("store"));
    let first = eventually(Duration::from_secs(10), || async {
        common::ranking(&store).await
    })
    .await;
    let Some(first) = first else {
        panic!("no ranking published; log:\n{}", log());
    };
    // Rounds go on (every second in this config): newer rankings follow.
    let later = eventually(Duration::from_secs(6), || async {
        common::ranking(&store)
            .await
            .filter(|d| d.generated_at >= first.generated_at + 3_000)
    })
    .await;
    assert!(later.is_some(), "rounds stopped; log:\n{}", log());
    let said = eventually(Duration::from_secs(10), || async {
        log().contains("KeyValueStore write failed").then_some(())
    })
    .await;
    assert!(said.is_some(), "log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvs_arn_without_credentials_never_stops_the_worker() {
    a_kvs_that_cannot_be_reached_never_stops_the_worker(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kvs_endpoint_that_refuses_connections_never_stops_the_worker() {
    a_kvs_that_cannot_be_reached_never_stops_the_worker(true).await;
}

/// `origin_router_kvs_value_age_seconds{pool="web"}` in a scrape.
fn value_age(scrape: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| {
            l.starts_with("origin_router_kvs_value_age_seconds{") && l.contains("pool=\"web\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The shipped binary on a KeyValueStore that accepts and never answers:
/// the pool's value age grows round after round (what the alert watches),
/// and falls back to about a round once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_value_age_grows_while_the_store_hangs_and_resets_after_a_write() {
    let server = KvsServer::start().await.unwrap();
    server.set_fault(Fault::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (_origin, path, metrics) = solo_with_kvs(dir.path(), &server).await;
    let _worker = run_binary(&path, dir.path());
    let url = format!("http://{metrics}/metrics");
    let age = || {
        let url = url.clone();
        async move { value_age(&reqwest::get(&url).await.ok()?.text().await.ok()?) }
    };
    let grown = eventually(Duration::from_secs(20), || async {
        age().await.filter(|a| *a >= 5.0)
    })
    .await;
    assert!(grown.is_some(), "the age did not grow: {:?}", age().await);
    assert!(server.snapshot().is_empty());
    server.set_fault(Fault::None);
    // The hung call gives up after 5 s; the next round writes.
    let reset = eventually(Duration::from_secs(20), || async {
        age().await.filter(|a| *a < 3.0)
    })
    .await;
    assert!(
        reset.is_some(),
        "the age did not fall after the write: {:?}, store {:?}",
        age().await,
        server.snapshot()
    );
    assert_eq!(server.snapshot().len(), 1);
}

/// Closing the publisher (the worker shutting down) ends its writer even
/// while a call hangs, and dropping it afterwards is quiet; a submission
/// after closing writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_writer_even_mid_call() {
    let server = KvsServer::start().await.unwrap();
    let pools: BTreeMap<String, PoolConfig> =
        [("web".to_string(), paper_pool(&["a", "b", "c"]))].into();
    let kvs = publisher(&server, REGION, &pools).await;
    server.set_fault(Fault::Hang);
    kvs.submit(ranking("web", REGION, 1, &["a", "b", "c"]), vec![]);
    let hung = eventually(Duration::from_secs(5), || async {
        (!server.requests().is_empty()).then_some(())
    })
    .await;
    assert!(hung.is_some());
    kvs.close();
    let ended = eventually(Duration::from_secs(2), || async {
        kvs.is_closed().then_some(())
    })
    .await;
    assert!(ended.is_some(), "the writer still runs");
    server.set_fault(Fault::None);
    kvs.submit(ranking("web", REGION, 2, &["b", "a", "c"]), vec![]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.snapshot().is_empty());
    drop(kvs);
}
