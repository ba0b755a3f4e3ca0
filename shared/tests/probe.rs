//! The probe engine against real local servers: every failure class, the
//! phase timings, and their accuracy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::{HealthMethod, OriginConfig, Protocol};
use origin_router::probe::{ProbeEngine, ProbeSettings, Resolver, StaticResolver};
use origin_router::{FailureClass, Outcome, PhaseTimings};
use origin_router_tests::{loopback, Mode, TestOrigin};

fn settings() -> ProbeSettings {
    ProbeSettings {
        connect_timeout: Duration::from_millis(400),
        response_timeout: Duration::from_millis(600),
        total_timeout: None,
        source_address: None,
        max_body: 64 * 1024,
    }
}

fn engine_for(origins: &[&OriginConfig], settings: ProbeSettings) -> ProbeEngine {
    let resolver: Arc<dyn Resolver> = Arc::new(StaticResolver::new([("origin.test", loopback(1))]));
    ProbeEngine::new(settings, resolver, origins.iter().copied()).unwrap()
}

async fn probe(origin: &OriginConfig) -> Outcome {
    engine_for(&[origin], settings()).probe(origin).await
}

fn http_origin(addr: SocketAddr) -> OriginConfig {
    OriginConfig::http("o", &addr.ip().to_string(), addr.port())
}

fn class(outcome: &Outcome) -> FailureClass {
    match outcome {
        Outcome::Failed(f) => f.class,
        Outcome::Ok(t) => panic!("expected a failure, got {t:?}"),
    }
}

fn timings(outcome: &Outcome) -> PhaseTimings {
    match outcome {
        Outcome::Ok(t) => *t,
        Outcome::Failed(f) => panic!("expected success, got {f:?}"),
    }
}

async fn origin(mode: Mode) -> TestOrigin {
    TestOrigin::start("127.0.0.1:0".parse().unwrap(), mode)
        .await
        .unwrap()
}

#[tokio::test]
async fn healthy_http_origin_reports_every_phase() {
    let o = origin(Mode::Ok).await;
    let mut cfg = http_origin(o.addr());
    cfg.host = "origin.test".into();
    let t = timings(&probe(&cfg).await);
    assert!(t.dns + t.connect + t.tls + t.first_byte <= t.total);
    assert_eq!(t.tls, Duration::ZERO);
    assert!(t.connect > Duration::ZERO);
    assert_eq!(o.requests(), 1);
}

#[tokio::test]
async fn closed_port_is_connect_refused() {
    let port = origin_router_tests::services::free_port();
    let outcome = probe(&OriginConfig::http("o", "127.0.0.1", port)).await;
    assert_eq!(class(&outcome), FailureClass::ConnectRefused);
}

#[tokio::test]
async fn full_accept_backlog_is_connect_timeout() {
    let o = origin(Mode::BacklogFull).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcome = probe(&http_origin(o.addr())).await;
    assert_eq!(class(&outcome), FailureClass::ConnectTimeout);
    let Outcome::Failed(f) = outcome else {
        unreachable!()
    };
    assert!(
        f.after >= Duration::from_millis(400) && f.after < Duration::from_millis(1500),
        "{f:?}"
    );
    // Switching back restores service on the same address.
    o.set_mode(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(probe(&http_origin(o.addr())).await.is_ok());
}

#[tokio::test]
async fn accepted_but_unanswered_is_response_timeout() {
    let o = origin(Mode::Hang).await;
    let outcome = probe(&http_origin(o.addr())).await;
    assert_eq!(class(&outcome), FailureClass::ResponseTimeout);
    let Outcome::Failed(f) = outcome else {
        unreachable!()
    };
    assert!(
        f.after >= Duration::from_millis(600) && f.after < Duration::from_millis(1500),
        "{f:?}"
    );
}

#[tokio::test]
async fn error_status_is_http_status_with_code() {
    let o = origin(Mode::Status(503)).await;
    assert_eq!(
        class(&probe(&http_origin(o.addr())).await),
        FailureClass::HttpStatus(503)
    );
    let mut cfg = http_origin(o.addr());
    cfg.accept_status = "200-599".parse().unwrap();
    assert!(
        probe(&cfg).await.is_ok(),
        "a widened accepted range accepts 503"
    );
}

#[tokio::test]
async fn reset_and_close_are_reset() {
    let o = origin(Mode::Reset).await;
    assert_eq!(
        class(&probe(&http_origin(o.addr())).await),
        FailureClass::Reset
    );
    o.set_mode(Mode::Close);
    assert_eq!(
        class(&probe(&http_origin(o.addr())).await),
        FailureClass::Reset
    );
}

#[tokio::test]
async fn unresolvable_name_is_dns_without_network() {
    let outcome = probe(&OriginConfig::http("o", "no-such-origin.invalid", 80)).await;
    assert_eq!(class(&outcome), FailureClass::Dns);
}

#[tokio::test]
async fn body_check_and_stalled_body() {
    let o = origin(Mode::Ok).await;
    let mut cfg = http_origin(o.addr());
    cfg.method = HealthMethod::Get;
    cfg.body_contains = Some("ok".into());
    assert!(probe(&cfg).await.is_ok());
    cfg.body_contains = Some("healthy".into());
    assert_eq!(class(&probe(&cfg).await), FailureClass::BodyMismatch);
    o.set_mode(Mode::SlowBody(Duration::from_secs(5)));
    cfg.body_contains = None;
    assert_eq!(class(&probe(&cfg).await), FailureClass::ResponseTimeout);
}

fn tls_origin(o: &TestOrigin, dir: &std::path::Path) -> OriginConfig {
    OriginConfig {
        protocol: Protocol::Https,
        host: "origin.test".into(),
        port: Some(o.port()),
        ca_file: Some(o.write_ca(dir).unwrap()),
        ..OriginConfig::http("o", "origin.test", o.port())
    }
}

#[tokio::test]
async fn tls_origin_times_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let o = TestOrigin::start_tls("127.0.0.1:0".parse().unwrap(), Mode::Ok, &["origin.test"])
        .await
        .unwrap();
    let t = timings(&probe(&tls_origin(&o, dir.path())).await);
    assert!(t.tls > Duration::ZERO, "{t:?}");
}

#[tokio::test]
async fn certificate_for_another_name_is_tls() {
    let dir = tempfile::tempdir().unwrap();
    let o = TestOrigin::start_tls("127.0.0.1:0".parse().unwrap(), Mode::Ok, &["other.test"])
        .await
        .unwrap();
    let outcome = probe(&tls_origin(&o, dir.path())).await;
    assert_eq!(class(&outcome), FailureClass::Tls);
    // And without the origin's CA, its self-signed chain is not trusted.
    let mut cfg = tls_origin(&o, dir.path());
    cfg.ca_file = None;
    cfg.tls_server_name = Some("other.test".into());
    assert_eq!(class(&probe(&cfg).await), FailureClass::Tls);
}

#[tokio::test]
async fn stalled_tls_handshake_is_response_timeout() {
    // A plain server that accepts and never speaks: the TLS client hello
    // gets no answer.
    let o = origin(Mode::Hang).await;
    let mut cfg = http_origin(o.addr());
    cfg.protocol = Protocol::Https;
    assert_eq!(class(&probe(&cfg).await), FailureClass::ResponseTimeout);
}

#[tokio::test]
async fn source_address_selects_the_region_delay() {
    let delays = [
        (loopback(2), Duration::from_millis(40)),
        (loopback(3), Duration::from_millis(120)),
    ];
    let o = TestOrigin::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::DelayBySource {
            delays: delays.into_iter().collect(),
            default: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    let cfg = http_origin(o.addr());
    for (source, delay) in delays {
        let s = ProbeSettings {
            source_address: Some(source),
            ..settings()
        };
        let t = timings(&engine_for(&[&cfg], s).probe(&cfg).await);
        assert!(
            t.first_byte >= delay && t.first_byte < delay + Duration::from_millis(100),
            "{source}: {t:?}"
        );
        assert_eq!(o.requests_from(source), 1);
    }
}

/// Timing accuracy: against an origin that answers after a known delay,
/// the measured first-byte time is never below the delay, its median at
/// most 5 ms above it, and no sample more than 200 ms above it (a loaded,
/// shared machine can stall any one probe's task by tens of milliseconds:
/// 25 ms was seen exceeded while three builds ran). Benchmarks report the
/// real error distribution.
#[tokio::test]
async fn first_byte_time_matches_the_origin_delay() {
    let delay = Duration::from_millis(50);
    let o = origin(Mode::Delay(delay)).await;
    let cfg = http_origin(o.addr());
    let engine = engine_for(&[&cfg], settings());
    let mut errors = Vec::new();
    for _ in 0..20 {
        let t = timings(&engine.probe(&cfg).await);
        assert!(t.first_byte >= delay, "{t:?}");
        errors.push(t.first_byte - delay);
    }
    errors.sort();
    assert!(
        errors[10] < Duration::from_millis(5),
        "median error {:?}",
        errors[10]
    );
    assert!(
        errors[19] < Duration::from_millis(200),
        "max error {:?}",
        errors[19]
    );
}

#[tokio::test]
async fn race_attempt_budget_caps_the_whole_probe() {
    let o = origin(Mode::Hang).await;
    let cfg = http_origin(o.addr());
    let engine = engine_for(
        &[&cfg],
        ProbeSettings::race_attempt(Duration::from_millis(300)),
    );
    let Outcome::Failed(f) = engine.probe(&cfg).await else {
        panic!("hang must fail")
    };
    assert_eq!(f.class, FailureClass::ResponseTimeout);
    assert!(f.after < Duration::from_millis(800), "{f:?}");
}
