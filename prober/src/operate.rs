//! The operator commands: `drain`, `undrain`, `override` and `status`.
//!
//! Each checks what the operator typed against the configuration first
//! (pool, origin, region, duration, reason and who), with the library's
//! [`input`] checks, so a typo is an error naming the bad value, never a
//! control on a pool no edge serves, in a region no edge runs in, or one
//! a reader would refuse.

use std::sync::Arc;

use origin_router::config::Config;
use origin_router::control::input::{self, Request};
use origin_router::control::{self, Control, ControlKind, ALL_REGIONS};
use origin_router::sample::unix_millis_now;
use origin_router::store::{self, ClientTuning, ControlWrite, RankingStore};

use crate::identity::Identity;
use crate::report;
use crate::report::{CliError, Format};

/// Where a control applies: the regions named, or every region.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Regions {
    /// A region the control applies in (repeatable): an AWS region
    /// Origin Router's geography knows, or one of store.table_regions.
    /// Default: every region.
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Every region (the default when no --region is given).
    #[arg(long, conflicts_with = "regions")]
    pub all_regions: bool,
}

impl Regions {
    /// The `--region` values; empty for every region.
    fn named(&self) -> &[String] {
        if self.all_regions {
            &[]
        } else {
            &self.regions
        }
    }
}

/// Who sets a control: `--by`; else, with a DynamoDB table, the caller's
/// AWS identity (STS `GetCallerIdentity`: the ARN the table's writes are
/// made as); else the login name.
async fn who(by: Option<String>, config: &Config) -> Result<String, CliError> {
    if let Some(by) = by {
        if by.trim().is_empty() {
            return Err("--by is empty: say who sets this".into());
        }
        return Ok(by);
    }
    if config.store.dynamodb_table.is_some() {
        match aws_identity(config).await {
            Ok(arn) => return Ok(arn),
            Err(e) => eprintln!("no AWS identity ({e}); using the login name"),
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            "say who sets this with --by (no AWS identity, no USER in the environment)".into()
        })
}

/// The ARN of the AWS credentials in use, within a few seconds.
async fn aws_identity(config: &Config) -> Result<String, String> {
    let here = Identity::from_config(config).region;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(std::time::Duration::from_secs(5))
            .build(),
    );
    if let Some(region) = store::replica_for(&config.store, &here) {
        loader = loader.region(aws_config::Region::new(region));
    }
    let sdk = loader.load().await;
    let out = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| aws_sdk_sts::error::DisplayErrorContext(e).to_string())?;
    out.arn
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "STS returned no ARN".to_string())
}

/// Checks that `pool` and `origin` are in the config.
fn check_target(config: &Config, pool: &str, origin: &str) -> Result<(), CliError> {
    input::check_target(config, pool, origin).map_err(|e| e.to_string().into())
}

async fn open(config: &Config) -> Arc<dyn RankingStore> {
    let here = Identity::from_config(config).region;
    store::open(&config.store, &here, ClientTuning::default()).await
}

/// Everything `drain` and `override` need to set a control.
pub struct SetControl {
    pub kind: ControlKind,
    pub pool: String,
    pub origin: String,
    pub regions: Regions,
    pub duration: String,
    pub reason: String,
    pub by: Option<String>,
    /// Override only: replace one in force.
    pub replace: bool,
}

pub async fn set(config: &Config, req: SetControl) -> Result<(), CliError> {
    let request = |by| Request {
        kind: req.kind,
        pool: &req.pool,
        origin: &req.origin,
        regions: req.regions.named(),
        duration: &req.duration,
        reason: &req.reason,
        by,
    };
    // Everything but who first (finding who may ask AWS), then all of it.
    input::controls(config, &request("-"), unix_millis_now()).map_err(|e| e.to_string())?;
    let by = who(req.by.clone(), config).await?;
    let now = unix_millis_now();
    let controls = input::controls(config, &request(&by), now).map_err(|e| e.to_string())?;
    let store = open(config).await;
    // Overrides of other scopes (a region's against every region's) are
    // other items: checked here. The same item is checked atomically by
    // the store's write below.
    let clash_message = |s: &Control| -> CliError {
        format!(
            "an override of pool `{}` to `{}` in {} is in force until {} (set by {}: {}); \
             add --replace to replace it or clear it with --clear",
            s.pool,
            s.origin,
            s.region,
            report::utc(s.until),
            s.by,
            s.reason
        )
        .into()
    };
    let exclusive = req.kind == ControlKind::Override && !req.replace;
    if exclusive {
        let stored = store.controls(&req.pool).await?;
        for c in &controls {
            let clash = stored.controls.iter().find(|s| {
                s.kind == ControlKind::Override
                    && s.in_force(now)
                    && (s.region == c.region || s.region == ALL_REGIONS || c.region == ALL_REGIONS)
            });
            if let Some(s) = clash {
                return Err(clash_message(s));
            }
        }
    }
    for c in &controls {
        // A drain set again is extended; an override replaces another
        // only with --replace.
        if store.put_control(c, !exclusive).await? == ControlWrite::InForce {
            let stored = store.controls(&c.pool).await?;
            return Err(match stored.controls.iter().find(|s| s.key() == c.key()) {
                Some(s) => clash_message(s),
                None => {
                    "another override was set at the same moment; run `prober status` and retry"
                        .into()
                }
            });
        }
        tracing::info!(
            kind = ?c.kind, pool = %c.pool, region = %c.region, origin = %c.origin,
            until = c.until, by = %c.by, reason = %c.reason, "control set"
        );
        println!(
            "{} {} of pool {} in {} until {} ({})",
            match c.kind {
                ControlKind::Drain => "drained",
                ControlKind::Override => "override to",
            },
            c.origin,
            c.pool,
            c.region,
            report::utc(c.until),
            store::describe(&config.store)
        );
    }
    Ok(())
}

/// Removes the drains of `origin` (kind Drain) or the overrides of `pool`
/// (kind Override) in `regions`.
pub async fn clear(
    config: &Config,
    kind: ControlKind,
    pool: &str,
    origin: Option<&str>,
    regions: &Regions,
) -> Result<(), CliError> {
    match origin {
        Some(o) => check_target(config, pool, o)?,
        None if !config.pools.contains_key(pool) => {
            return Err(format!("unknown pool `{pool}`").into())
        }
        None => {}
    }
    let store = open(config).await;
    let stored = store.controls(pool).await?;
    let everywhere = regions.all_regions || regions.regions.is_empty();
    // A region that is not known is a typo, unless a control was stored
    // under it before `--region` was checked: that one can be removed.
    for r in regions.named() {
        if !stored.controls.iter().any(|c| &c.region == r) {
            input::check_region(config, r).map_err(|e| e.to_string())?;
        }
    }
    let mut removed = 0;
    for c in stored.controls.iter().filter(|c| {
        c.kind == kind
            && origin.is_none_or(|o| c.origin == o)
            && (everywhere || regions.regions.contains(&c.region))
    }) {
        if store.delete_control(pool, &c.key()).await? {
            removed += 1;
            tracing::info!(kind = ?c.kind, pool = %c.pool, region = %c.region, origin = %c.origin, "control removed");
        }
    }
    println!("removed {removed} {kind:?} control(s) of pool {pool}");
    Ok(())
}

/// `prober status`: per pool, each region's ranking and the controls.
pub async fn status(config: &Config, pool: Option<&str>, format: Format) -> Result<(), CliError> {
    if let Some(p) = pool {
        if !config.pools.contains_key(p) {
            return Err(format!("unknown pool `{p}`").into());
        }
    }
    let store = open(config).await;
    let now = unix_millis_now();
    let pools: Vec<&String> = config
        .pools
        .keys()
        .filter(|p| pool.is_none_or(|w| w == p.as_str()))
        .collect();
    let mut out = serde_json::Map::new();
    for p in pools {
        let read = store.read_pool(p).await?;
        let controls = &read.controls;
        let in_force: Vec<&Control> = controls
            .controls
            .iter()
            .filter(|c| c.in_force(now))
            .collect();
        for (key, why) in control::unused(controls, config, p, now) {
            eprintln!("ignored control {p}/{key}: {why}");
        }
        let known = input::known_regions(config);
        for c in in_force
            .iter()
            .filter(|c| c.region != ALL_REGIONS && !known.contains(&c.region.as_str()))
        {
            eprintln!(
                "control {p}/{} names region `{}`, which Origin Router does not know \
                 (not in its geography nor store.table_regions): it applies only where \
                 AWS_REGION is `{}`",
                c.key(),
                c.region,
                c.region
            );
        }
        match format {
            Format::Json => {
                let rankings: Vec<serde_json::Value> = read
                    .rankings
                    .iter()
                    .map(|d| {
                        let mut v = serde_json::to_value(d).expect("documents serialize");
                        v["age_ms"] = d.age_ms(now).into();
                        v
                    })
                    .collect();
                out.insert(
                    p.clone(),
                    serde_json::json!({ "rankings": rankings, "controls": in_force }),
                );
            }
            Format::Table => {
                println!("pool {p}");
                if read.rankings.is_empty() {
                    println!("  no rankings published");
                }
                for d in &read.rankings {
                    print!("{}", report::ranking_table(d, now));
                }
                if in_force.is_empty() {
                    println!("  no drains or overrides in force");
                }
                for c in in_force {
                    println!(
                        "  {:<8} {:<16} region {:<14} until {} by {}: {}",
                        match c.kind {
                            ControlKind::Drain => "drained",
                            ControlKind::Override => "override",
                        },
                        c.origin,
                        c.region,
                        report::utc(c.until),
                        c.by,
                        c.reason
                    );
                }
                println!();
            }
        }
    }
    // This host's clock against the region's, and each worker's.
    let region = crate::identity::Identity::from_config(config).region;
    let (lines, clock) = crate::coord::clock::status(
        config.store.redis_url.as_deref(),
        &region,
        store.as_ref(),
        config.prober.max_clock_skew,
    )
    .await;
    match format {
        Format::Json => {
            // `#` is no name character: no pool is called `#clock`.
            out.insert("#clock".into(), clock);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => lines.iter().for_each(|l| println!("{l}")),
    }
    Ok(())
}
