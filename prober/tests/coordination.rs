//! Workers of one region against a real Redis and a real DynamoDB API
//! server (moto): one leader, quorum, fencing, outages.

mod common;

use std::time::Duration;

use common::*;
use origin_router::document::OriginState;
use origin_router::store::{RankingStore, WriteOutcome};
use origin_router::FailureClass;
use origin_router_tests::services::{free_port, MotoServer, RedisServer};
use prober::coord::{Coordinator, RedisCoordinator, Role};
use tokio::sync::watch;

type Worker = tokio::task::JoinHandle<Result<(), prober::worker::WorkerError>>;

/// Runs a worker as `prober run` does, from its config alone: the table
/// is reached at the moto server's endpoint (`store.dynamodb_endpoint`).
fn spawn_worker(
    mut config: origin_router::Config,
    moto: &MotoServer,
    stop: &watch::Receiver<bool>,
) -> Worker {
    aws_test_env();
    config.store.dynamodb_endpoint = Some(moto.endpoint());
    let mut stop = stop.clone();
    tokio::spawn(prober::run(config, async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

async fn healthz(port: u16) -> Option<serde_json::Value> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    serde_json::from_str(&body).ok()
}

/// A worker's clock, judged against Redis' with the default limit.
fn clock(worker: &str) -> std::sync::Arc<prober::coord::Clock> {
    std::sync::Arc::new(prober::coord::Clock::new(
        std::time::Duration::from_secs(2),
        REGION,
        worker,
    ))
}

/// Three workers; origin `a` answers in 30 ms, except for worker 3 (from
/// 127.0.0.4) `a` never answers in time. Exactly one worker leads, and the
/// published ranking carries all three workers' votes: `a` stays up
/// (one bad path cannot eject it) with one down vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_leader_and_a_ranking_from_all_samples() {
    let redis = RedisServer::start().await.unwrap();
    let moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let origins = origins([
        &[(4, 5_000), (2, 30), (3, 30)],
        &[(2, 40), (3, 40), (4, 40)],
        &[],
    ])
    .await;
    let (stop_tx, stop) = watch::channel(false);
    let mut ports = Vec::new();
    let mut workers = Vec::new();
    for (i, source) in [2u8, 3, 4].into_iter().enumerate() {
        let mut c = config(
            &origins,
            &format!("w{}", i + 1),
            Some(source),
            Some(redis.url()),
        );
        let port = free_port();
        c.prober.metrics_listen = Some(([127, 0, 0, 1], port).into());
        ports.push(port);
        workers.push(spawn_worker(c, &moto, &stop));
    }

    let doc = eventually(Duration::from_secs(20), || async {
        ranking(store.as_ref())
            .await
            .filter(|d| d.workers == 3 && d.entry("a").is_some_and(|a| a.down_votes == 1))
    })
    .await
    .expect("a ranking with three workers' votes");
    let a = doc.entry("a").unwrap();
    assert_eq!(a.voters, 3);
    assert_ne!(a.state, OriginState::Down, "{doc:?}");
    assert_eq!(a.last_failure, Some(FailureClass::ResponseTimeout));
    assert_eq!(
        doc.top().unwrap().id,
        "c",
        "c answers in 5 ms from everywhere"
    );

    let mut leaders = Vec::new();
    for port in &ports {
        let h = healthz(*port).await.expect("healthz answers");
        assert_eq!(h["status"], "ok");
        if h["leader"] == true {
            leaders.push(h["worker"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    assert_eq!(
        leader_worker(&redis.url()).await.as_deref(),
        Some(leaders[0].as_str())
    );

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports[2]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("origin_router_probe_phase_seconds_bucket"),
        "phase histograms"
    );
    assert!(
        metrics.contains(r#"origin_router_probe_failures_total{region="eu-west-1",pool="web",origin="a",class="response_timeout"}"#),
        "failures by class"
    );
    // What the leader wrote to the table, as the Prometheus rules read it
    // (deploy/prometheus/rules.yml): c's state and the ranking's time.
    let published = eventually(Duration::from_secs(5), || async {
        let m = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports[2]))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (m.contains(r#"origin_router_origin_state{region="eu-west-1",pool="web",origin="c",state="healthy"} 1"#)
            && m.contains(r#"origin_router_origin_state{region="eu-west-1",pool="web",origin="c",state="down"} 0"#)
            && m.contains(r#"origin_router_ranking_generated_timestamp_seconds{region="eu-west-1",pool="web"}"#))
        .then_some(())
    })
    .await;
    assert!(published.is_some(), "published-state gauges:\n{metrics}");

    // The leader also keeps the latest ranking in Redis for `prober
    // rankings --source redis`.
    let in_redis = prober::coord::redis_rankings(&redis.url(), Some(REGION))
        .await
        .unwrap();
    assert_eq!(in_redis.len(), 1);
    assert_eq!((in_redis[0].pool.as_str(), in_redis[0].workers), ("web", 3));

    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        leader_worker(&redis.url()).await,
        None,
        "the leader released its lease"
    );
}

/// A leader that lost its lease (paused past its TTL) cannot renew it, and
/// its late write is refused by the table: the newer ranking stays.
#[tokio::test]
async fn a_deposed_leader_cannot_overwrite_a_newer_ranking() {
    let redis = RedisServer::start().await.unwrap();
    let moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let ttl = Duration::from_millis(800);
    let a = RedisCoordinator::new(&redis.url(), REGION, "a", ttl, 8, clock("a")).unwrap();
    let b = RedisCoordinator::new(&redis.url(), REGION, "b", ttl, 8, clock("b")).unwrap();
    let now = origin_router::sample::unix_millis_now();

    let Role::Leader { seq: old_seq, .. } = a.lead(now).await.unwrap() else {
        panic!("a leads first")
    };
    assert!(matches!(b.lead(now).await.unwrap(), Role::Follower { leader: Some(l) } if l == "a"));
    tokio::time::sleep(Duration::from_millis(1_200)).await; // a is paused past its lease
    let Role::Leader { seq: new_seq, .. } = b.lead(now).await.unwrap() else {
        panic!("b takes over")
    };
    assert!(new_seq > old_seq);
    assert!(
        matches!(a.lead(now).await.unwrap(), Role::Follower { .. }),
        "only the holder renews"
    );

    let mut newer = sample_doc(new_seq);
    newer.origins[0].id = "b-choice".into();
    assert_eq!(store.write(&newer).await.unwrap(), WriteOutcome::Written);
    let late = sample_doc(old_seq);
    assert_eq!(store.write(&late).await.unwrap(), WriteOutcome::Stale);
    assert_eq!(ranking(store.as_ref()).await.unwrap().seq, new_seq);
    assert_eq!(
        ranking(store.as_ref()).await.unwrap().origins[0].id,
        "b-choice"
    );
}

/// Two processes started by mistake with one `worker_id`: the lease's
/// nonce keeps them apart, so exactly one leads.
#[tokio::test]
async fn a_duplicated_worker_id_cannot_make_two_leaders() {
    let redis = RedisServer::start().await.unwrap();
    let ttl = Duration::from_secs(5);
    let first = RedisCoordinator::new(&redis.url(), REGION, "twin", ttl, 8, clock("twin")).unwrap();
    let second =
        RedisCoordinator::new(&redis.url(), REGION, "twin", ttl, 8, clock("twin")).unwrap();
    let now = origin_router::sample::unix_millis_now();
    for _ in 0..3 {
        let roles = [
            first.lead(now).await.unwrap(),
            second.lead(now).await.unwrap(),
        ];
        let leaders = roles
            .iter()
            .filter(|r| matches!(r, Role::Leader { .. }))
            .count();
        assert_eq!(leaders, 1, "{roles:?}");
    }
    // The follower still learns who leads, by worker id.
    assert!(matches!(
        second.lead(now).await.unwrap(),
        Role::Follower { leader: Some(l) } if l == "twin"
    ));
}

/// `seq` comes from Redis' clock, not the caller's: a worker whose clock
/// runs an hour ahead gets a number near Redis' time, and a stored seq
/// that a runaway clock pushed far ahead is reset to Redis' time.
#[tokio::test]
async fn fencing_numbers_follow_redis_time_not_the_worker_clock() {
    let redis = RedisServer::start().await.unwrap();
    let ttl = Duration::from_secs(5);
    let a = RedisCoordinator::new(&redis.url(), REGION, "a", ttl, 8, clock("a")).unwrap();
    let real_now = origin_router::sample::unix_millis_now();
    let an_hour_ahead = real_now + 3_600_000;
    let Role::Leader { seq, .. } = a.lead(an_hour_ahead).await.unwrap() else {
        panic!("a leads")
    };
    let ceiling = origin_router::document::seq_ceiling(real_now);
    assert!(seq <= ceiling, "seq {seq} is above {ceiling}");
    assert!(seq >= real_now.saturating_sub(60_000) * 1000, "{seq}");

    let poisoned = (i64::MAX as u64).to_string();
    redis_set(&redis.url(), "origin-router:{eu-west-1}:seq", &poisoned).await;
    let Role::Leader { seq: after, .. } = a.lead(real_now).await.unwrap() else {
        panic!("a still leads")
    };
    assert!(
        after <= origin_router::document::seq_ceiling(origin_router::sample::unix_millis_now()),
        "{after}"
    );
}

fn sample_doc(seq: u64) -> origin_router::RankingDocument {
    let a = origin_router::RankedOrigin::measured("a", OriginState::Healthy, 1.0, 1);
    origin_router::RankingDocument::new(
        "web",
        REGION,
        seq,
        origin_router::sample::unix_millis_now(),
        vec![a],
    )
}

/// Redis and then the table go away and come back mid-run: workers never
/// stop, rankings keep coming (degraded mode while Redis is down), and the
/// table never sees an older ranking after a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_table_outages_are_survived() {
    let mut redis = RedisServer::start().await.unwrap();
    let mut moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let origins = origins([&[], &[], &[]]).await;
    let (stop_tx, stop) = watch::channel(false);
    let workers: Vec<Worker> = (1..=2)
        .map(|i| {
            spawn_worker(
                config(&origins, &format!("w{i}"), None, Some(redis.url())),
                &moto,
                &stop,
            )
        })
        .collect();

    // Watch seq in the table throughout: it must never go backwards.
    let watcher = {
        let store = store.clone();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut last, mut reads, mut regressions) = (0u64, 0u32, Vec::new());
            while !*rx.borrow() {
                if let Some(d) = ranking(store.as_ref()).await {
                    if d.seq < last {
                        regressions.push((last, d.seq));
                    }
                    last = d.seq;
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (reads, regressions, last)
        });
        (tx, task)
    };

    let first = eventually(Duration::from_secs(15), || async {
        ranking(store.as_ref()).await
    })
    .await
    .expect("first ranking");
    redis.stop();
    // Degraded mode: rankings keep being published without Redis.
    let during = eventually(Duration::from_secs(10), || async {
        ranking(store.as_ref())
            .await
            .filter(|d| d.seq > first.seq && d.generated_at > first.generated_at + 1_500)
    })
    .await
    .expect("rankings while Redis is down");
    redis.restart().await.unwrap();
    let leader = eventually(Duration::from_secs(10), || async {
        leader_worker(&redis.url()).await
    })
    .await;
    assert!(leader.is_some(), "coordination resumes without a restart");
    let after_redis = eventually(Duration::from_secs(10), || async {
        ranking(store.as_ref()).await.filter(|d| d.seq > during.seq)
    })
    .await
    .expect("rankings after Redis returns");
    let (tx, task) = watcher;
    tx.send(true).unwrap();
    let (reads, regressions, _) = task.await.unwrap();
    assert!(
        reads > 20 && regressions.is_empty(),
        "{reads} reads, regressions {regressions:?}"
    );

    // The table server dies (and comes back empty, as moto does).
    moto.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    moto.restart().await.unwrap();
    store.create_table().await.unwrap();
    let resumed = eventually(Duration::from_secs(15), || async {
        ranking(store.as_ref()).await
    })
    .await
    .expect("publishing resumes when the table returns");
    assert!(
        resumed.seq > after_redis.seq,
        "the newest ranking is published, not an old one"
    );
    assert!(
        workers.iter().all(|w| !w.is_finished()),
        "no worker stopped"
    );

    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap().unwrap();
    }
}

/// A leader whose rankings the store refuses (its table does not exist)
/// steps down after two rounds and stands aside, so a worker that can
/// publish takes over: the table gets a ranking within three intervals
/// (plus start-up slack) of the second worker joining, though the broken
/// worker took the lease first. Without stepping down it would renew the
/// lease for ever and the region would publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_the_store_refuses_steps_down_for_one_that_can_publish() {
    let redis = RedisServer::start().await.unwrap();
    let moto = MotoServer::start().await.unwrap();
    let store = dynamo(&moto).await;
    let origins = origins([&[], &[], &[]]).await;
    let (stop_tx, stop) = watch::channel(false);

    let mut broken = config(&origins, "broken", None, Some(redis.url()));
    broken.store.dynamodb_table = Some("no-such-table".into());
    let broken = spawn_worker(broken, &moto, &stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leader_worker(&redis.url()).await.as_deref() != Some("broken") {
        assert!(tokio::time::Instant::now() < deadline, "broken never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let joined = tokio::time::Instant::now();
    let good = spawn_worker(
        config(&origins, "good", None, Some(redis.url())),
        &moto,
        &stop,
    );
    let mut published = None;
    let deadline = joined + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if ranking(store.as_ref()).await.is_some() {
            published = Some(joined.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = published.expect("no ranking reached the table in 15 s");
    assert_eq!(leader_worker(&redis.url()).await.as_deref(), Some("good"));
    // Interval 1 s: the broken leader's rankings fail at its next rounds,
    // it steps down at the round after (1.5 intervals of failures), and
    // the good worker takes the lease at its next round. Honest slack for
    // a shared machine: 8 s rather than 3.
    assert!(
        published <= Duration::from_secs(8),
        "took {published:?} to publish after the good worker joined"
    );
    stop_tx.send(true).unwrap();
    for w in [broken, good] {
        w.await.unwrap().unwrap();
    }
}
