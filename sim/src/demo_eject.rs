//! The demo's passive-ejection part: one edge container's origin starts
//! answering 503 while the ranking still calls it best (the probers are
//! stopped by then, so only the edge can notice). Each miss is run as
//! CloudFront runs it: the decision, a real GET to the chosen origin, and
//! its status fed back as an origin-response would be; after
//! `consecutive_5xx` 503s the container ejects the origin, and the
//! decision line names the ejection.

use std::time::Duration;

use edge::ejection::Recorded;
use edge::router::Router;
use origin_router::config::PoolConfig;
use origin_router::sample::unix_millis_now;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::world::{Failure, World};
use crate::SimError;

/// Runs the part on `router` (of `region`) for `pool`; prints each miss.
pub async fn show(
    router: &Router,
    region: &str,
    world: &World,
    pool: &str,
) -> Result<(), SimError> {
    let config = world.pool();
    let victim = router.decide(pool, unix_millis_now()).await.origin;
    let threshold = router.pools()[pool].outlier.consecutive_5xx;
    println!(
        "\nPassive ejection ({region}, one edge container): {victim} now answers 503; \
         the probers are stopped, the ranking still calls it best."
    );
    world.fail(&victim, Failure::Http5xx);
    for miss in 1..=threshold + 2 {
        let d = router.decide(pool, unix_millis_now()).await;
        let status = fetch(config, &d.origin).await.unwrap_or(0);
        let recorded = router.record_response(pool, &d.origin, status, Instant::now());
        let what = match recorded {
            Some(Recorded::Ejected { duration, .. }) => {
                format!("-> ejected for {}s", duration.as_secs())
            }
            Some(Recorded::Counted { consecutive_5xx }) => {
                format!("({consecutive_5xx} in a row)")
            }
            _ => String::new(),
        };
        println!(
            "  miss {miss}: decision origin={} source={} ejected={:?}; it answered {status} {what}",
            d.origin,
            d.source.as_str(),
            d.ejected
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.restore(&victim);
    Ok(())
}

/// One GET to `origin` of `pool` over plain HTTP; its status code.
async fn fetch(pool: &PoolConfig, origin: &str) -> Option<u16> {
    let o = pool.origin(origin)?;
    let addr = format!("{}:{}", o.host, o.port());
    let connect = tokio::net::TcpStream::connect(&addr);
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: demo.test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
