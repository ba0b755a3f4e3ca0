//! The demo's failover through the CloudFront Function edge: beside the
//! demo's main loop, once a second until the failed origin is restored, the
//! live rankings in the demo's store are encoded as the regions' leaders
//! would write them to the KeyValueStore ([`origin_router::compact::encode`],
//! with the pool's stored controls), the generated function
//! ([`edge::function::generate`], loopback IP origins allowed) runs under
//! Node on them once per region (the edge location in that region), and
//! the Rust decision ([`edge::decision::decide`], every read `Now`) decides
//! over the same values, decoded. It hands back its lines: when each
//! region's function moved off the failed origin, and whether the two
//! agreed on every decision.
//!
//! Needs `node`; without it the part says so and the demo goes on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge::decision::{decide, PoolView, Read, Settings, Verdict};
use edge::function::{generate, Options};
use origin_router::compact;
use origin_router::config::Config;
use origin_router::sample::unix_millis_now;
use origin_router::store::RankingStore;
use serde_json::Value;
use tokio::time::Instant;

use crate::function_bench::{case, NodeFunction};
use crate::world::REGIONS;
use crate::SimError;

/// How often the function decides.
const EVERY: Duration = Duration::from_secs(1);
/// What the viewer asks for.
const URI: &str = "/";

/// One region's decisions, as sampled.
#[derive(Debug, Default)]
struct Track {
    /// The function's choice at the last sample before the failure.
    before: Option<String>,
    /// After the failure: the first sample whose function choice was not
    /// the failed origin, and that choice.
    function_away: Option<(Duration, String)>,
    /// The same for the Rust decision over the same values.
    rust_away: Option<Duration>,
}

/// Runs until `start + restore_at` (the demo restores `failed` then);
/// `failed` fails at `start + fail_at`. `base` is the demo's config, whose
/// pool `pool` the function routes; `store` the demo's.
pub async fn run(
    base: Config,
    store: Arc<dyn RankingStore>,
    pool: &'static str,
    failed: &'static str,
    start: Instant,
    fail_at: Duration,
    restore_at: Duration,
) -> Result<Vec<String>, SimError> {
    let node = Path::new("node");
    if std::process::Command::new(node)
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(vec![
            "\nCloudFront Function: skipped (no `node` to run it under).".into(),
        ]);
    }
    let mut config = base;
    config.pools.retain(|name, _| name == pool);
    config.routing.default_pool = Some(pool.into());
    config.store.kvs_regions = REGIONS.iter().map(|r| r.name.to_string()).collect();
    let code = generate(
        &config,
        Options {
            allow_ip_origins: true,
        },
    )?;
    let function = Arc::new(NodeFunction::new(&code, node, true)?);
    let pool_config = config.pools[pool].clone();
    let mut tracks: Vec<Track> = REGIONS.iter().map(|_| Track::default()).collect();
    let (mut decisions, mut agreed) = (0u64, 0u64);
    let mut disagreements: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    // Bounded: one sample a second until the restore.
    for _ in 0..=restore_at.as_secs() + 1 {
        tick.tick().await;
        let t = start.elapsed();
        if t >= restore_at {
            break;
        }
        let read = store.read_pool(pool).await?;
        let now = unix_millis_now();
        let mut kvs = serde_json::Map::new();
        for doc in &read.rankings {
            if REGIONS.iter().any(|r| r.name == doc.region) {
                let value = compact::encode(&pool_config, doc, &read.controls.controls, now)?;
                kvs.insert(compact::key(pool, &doc.region), value.value.into());
            }
        }
        // The Rust decision's view: the same values, decoded.
        let mut rankings = Vec::new();
        let mut controls = Vec::new();
        let mut newest = 0;
        for (key, value) in &kvs {
            let region = key.rsplit('/').next().unwrap_or_default();
            let (doc, c) =
                compact::decode(pool, &pool_config, region, value.as_str().unwrap_or(""))?;
            // Like the function, the controls of the newest value.
            if doc.generated_at >= newest {
                newest = doc.generated_at;
                controls = c;
            }
            rankings.push(doc);
        }
        let kvs = Value::Object(kvs);
        let cases: Vec<Value> = REGIONS
            .iter()
            .map(|r| case(&kvs, r.name, now, URI))
            .collect();
        let f = function.clone();
        let results = tokio::task::spawn_blocking(move || f.run(&cases)).await??;
        for ((region, track), result) in REGIONS.iter().zip(&mut tracks).zip(&results) {
            let decision = &result["decision"];
            let by_function = decision["origin"]
                .as_u64()
                .and_then(|i| pool_config.origins.get(i as usize))
                .map_or_else(
                    || format!("({})", decision["source"].as_str().unwrap_or("error")),
                    |o| o.id.clone(),
                );
            let settings = Settings {
                region: region.name.to_string(),
                proximity: config.edge.proximity.clone(),
                ranking_max_age: config.edge.ranking_max_age,
                cache_ttl: config.edge.cache_ttl,
                max_stale: config.edge.max_stale,
                operations: config.operations.clone(),
            };
            let view = PoolView {
                rankings: &rankings,
                read: Read::Now,
                read_failed: false,
                controls: &controls,
                ejected: &[],
                race_winner: None,
            };
            let outcome = decide(pool, Some(&pool_config), &view, &settings, URI, now);
            let by_rust = match outcome.verdict {
                Verdict::Chosen { origin, .. } => origin.id.clone(),
                // The function takes the set's default where Rust races.
                Verdict::Unranked { default, .. } => default.id.clone(),
                Verdict::Passthrough { .. } => "(passthrough)".into(),
            };
            decisions += 1;
            if by_function == by_rust {
                agreed += 1;
            } else if disagreements.len() < 5 {
                disagreements.push(format!(
                    "t={:.1}s {}: function {by_function}, Rust {by_rust}",
                    t.as_secs_f64(),
                    region.name
                ));
            }
            if t < fail_at {
                track.before = Some(by_function);
            } else {
                if track.function_away.is_none() && by_function != failed {
                    track.function_away = Some((t - fail_at, by_function));
                }
                if track.rust_away.is_none() && by_rust != failed {
                    track.rust_away = Some(t - fail_at);
                }
            }
        }
    }
    let mut lines = vec![format!(
        "\nCloudFront Function (the generated function, {} bytes, under Node; every second, \
         the live rankings encoded into KeyValueStore values, one decision per region, \
         so times are to the second):",
        code.len()
    )];
    for (region, track) in REGIONS.iter().zip(&tracks) {
        let line = match (&track.before, &track.function_away) {
            (None, _) => "no decision before the failure".to_string(),
            (Some(before), _) if before != failed => {
                format!("chose {before}, not {failed}, before the failure")
            }
            (Some(_), None) => format!("still chose {failed} when it was restored"),
            (Some(_), Some((after, to))) => format!(
                "moved off {failed} to {to} {:.1}s after the failure (the Rust decision over the same values: {})",
                after.as_secs_f64(),
                track
                    .rust_away
                    .map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
            ),
        };
        lines.push(format!("  {:<15} {line}", region.name));
    }
    lines.push(format!(
        "  the function and the Rust decision agreed in {agreed} of {decisions} decisions{}",
        if disagreements.is_empty() {
            String::new()
        } else {
            format!(": {}", disagreements.join("; "))
        }
    ));
    Ok(lines)
}
