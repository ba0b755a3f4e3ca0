//! Probe rounds against local origins: never two probes of one origin in
//! flight, and a slow origin does not hold the next round back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::Config;
use origin_router::probe::{resolve, ProbeEngine, ProbeSettings};
use origin_router_tests::{loopback, Mode, TestOrigin};
use prober::pacing::PacingSettings;
use prober::round::{self, RoundSettings, Rounds};

async fn rounds_over(origins: &[&TestOrigin]) -> Rounds {
    let mut config = Config::default();
    config.pools.insert(
        "web".into(),
        common::pool(origins.iter().copied(), &["o0", "o1"]),
    );
    let settings = ProbeSettings {
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_secs(3),
        total_timeout: None,
        source_address: None,
        max_body: 1024,
    };
    let engine = Arc::new(
        ProbeEngine::new(
            settings,
            resolve::with_overrides(&config.resolve),
            config.origins(),
        )
        .unwrap(),
    );
    let settings = RoundSettings {
        concurrency: 16,
        jitter: Duration::ZERO,
        pacing: PacingSettings {
            adaptive: false,
            floor: Duration::from_millis(150),
            ceiling: Duration::from_secs(2),
            fast_interval: Duration::from_millis(50),
            rise: 1,
            fall: 1,
            step_factor: 0.0,
        },
    };
    Rounds::new(engine, round::targets(&config), settings, "test", "w")
}

#[tokio::test]
async fn a_slow_origin_is_skipped_not_doubled_and_does_not_delay_the_others() {
    let slow = TestOrigin::start(
        SocketAddr::new(loopback(41), 0),
        Mode::Delay(Duration::from_millis(1_200)),
    )
    .await
    .unwrap();
    let fast = TestOrigin::start(SocketAddr::new(loopback(42), 0), Mode::Ok)
        .await
        .unwrap();
    let rounds = rounds_over(&[&slow, &fast]).await;
    // Rounds start every 300 ms, as the scheduler would start them.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let r = rounds.clone();
        handles.push(tokio::spawn(async move { r.run().await }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut skipped = 0;
    let mut fast_samples = 0;
    for h in handles {
        let report = h.await.unwrap();
        skipped += report.skipped_in_flight;
        fast_samples += report.samples.iter().filter(|s| s.origin == "o1").count();
    }
    // The slow origin's first probe spans the next three round starts.
    assert_eq!(skipped, 3, "rounds skip an origin still in flight");
    assert_eq!(
        slow.requests(),
        1,
        "never two probes of one origin in flight"
    );
    assert_eq!(fast_samples, 4, "every round probed the fast origin");
    assert_eq!(fast.requests(), 4);
}

#[tokio::test]
async fn a_flapping_origin_is_seen_up_and_down() {
    let flap = TestOrigin::start(
        SocketAddr::new(loopback(43), 0),
        Mode::Flap {
            up: Duration::from_millis(400),
            down: Duration::from_millis(400),
        },
    )
    .await
    .unwrap();
    let rounds = rounds_over(&[&flap]).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let report = rounds.run().await;
        statuses.extend(report.samples.iter().map(|s| s.outcome.is_ok()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        statuses.iter().any(|ok| *ok) && statuses.iter().any(|ok| !*ok),
        "{statuses:?}"
    );
}
