//! The demo's gray failure: the origin a region's edge uses goes gray (its
//! health path answers as fast as ever, its pages take 400 ms) while the
//! probers keep running. They time the health path, so their ranking keeps
//! it first; the region's edge container, timing its own misses, leaves it
//! (latency demotion, trigger `latency`). Each miss is run as CloudFront
//! runs it ([`crate::gray_bench::Container`]): origin-request, a real GET of
//! a page from the region's loopback address, origin-response.
//!
//! It runs beside the demo's main loop (in one region, so the live view
//! shows the edge leaving the origin the ranking still puts first) and
//! hands back its lines, printed once the loop is over; the origin stays
//! gray until the demo restores it then.

use std::sync::Arc;
use std::time::Duration;

use edge::ejection::Recorded;
use origin_router::sample::unix_millis_now;
use origin_router::store::RankingStore;
use origin_router_tests::loopback;
use tokio::time::Instant;

use crate::gray_bench::{Container, PAGE};
use crate::world::{Region, World};
use crate::SimError;

/// How long the gray origin's pages take.
pub const PAGES: Duration = Duration::from_millis(400);
/// Misses shown after the demotion.
const AFTER: u32 = 3;
/// The most misses the part runs, demoted or not.
const MAX_MISSES: u32 = 30;

/// Makes `origin` (gray-capable) go gray and runs misses in `container`
/// (of `region`) until it is demoted and a few more; the origin stays gray
/// (the caller restores it). Its lines, ready to print.
pub async fn run(
    container: Container,
    region: Region,
    world: Arc<World>,
    store: Arc<dyn RankingStore>,
    pool: &'static str,
    origin: &'static str,
) -> Result<Vec<String>, SimError> {
    let mut lines = vec![format!(
        "\nGray failure ({}, one edge container): {origin}'s pages now take {} ms, \
         its health path answers as fast as before; the probers keep running.",
        region.name,
        PAGES.as_millis()
    )];
    if !world.gray(origin, PAGES) {
        return Err(format!("{origin} cannot go gray").into());
    }
    let (started, gray_since) = (Instant::now(), unix_millis_now());
    let mut demoted = None;
    let mut after = 0;
    for miss in 1..=MAX_MISSES {
        let (d, status, observed) = container.miss(loopback(region.host)).await?;
        let latency = observed
            .timed
            .first()
            .map(|t| format!(" in {} ms", t.latency.as_millis()))
            .unwrap_or_default();
        let what = observed
            .recorded
            .iter()
            .find_map(|(_, o, r)| match r {
                Recorded::Ejected {
                    duration, trigger, ..
                } if o == origin => Some(format!(
                    " -> demoted for {}s (trigger {}), {:.1}s after it went gray",
                    duration.as_secs(),
                    trigger.as_str(),
                    started.elapsed().as_secs_f64()
                )),
                _ => None,
            })
            .unwrap_or_default();
        lines.push(format!(
            "  miss {miss}: GET {PAGE} decision origin={} source={} ejected={:?}; it answered {status}{latency}{what}",
            d.origin,
            d.source.as_str(),
            d.ejected
        ));
        if demoted.is_none() && !what.is_empty() {
            demoted = Some(miss);
        } else if demoted.is_some() {
            after += 1;
            if after >= AFTER {
                break;
            }
        }
    }
    let Some(demoted) = demoted else {
        lines.push(format!(
            "  {origin} was not demoted within {MAX_MISSES} misses"
        ));
        return Ok(lines);
    };
    // What the probers say meanwhile: the region's ranking, published
    // after the origin went gray.
    let rankings = store.read_pool(pool).await?;
    let doc = rankings
        .rankings
        .iter()
        .find(|d| d.region == region.name && d.generated_at > gray_since);
    lines.push(match doc {
        Some(doc) => format!(
            "  {}'s ranking, published {:.1}s after {origin} went gray: {}",
            region.name,
            (doc.generated_at - gray_since) as f64 / 1000.0,
            prober::worker::summary(doc)
        ),
        None => format!(
            "  no ranking of {} published since {origin} went gray",
            region.name
        ),
    });
    let first = doc.and_then(|d| d.top()).map(|o| o.id.as_str());
    lines.push(if first == Some(origin) {
        format!(
            "  The edge left {origin} after {demoted} misses; the probers, timing its health path, still rank it first."
        )
    } else {
        format!("  The edge left {origin} after {demoted} misses; the probers' ranking starts with {first:?}.")
    });
    Ok(lines)
}
