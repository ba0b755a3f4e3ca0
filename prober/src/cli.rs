//! The operator CLI: argument parsing and one function per command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use origin_router::config::Config;
use origin_router::document::RankingDocument;
use origin_router::ranking::{self, Settings, Target};
use origin_router::sample::unix_millis_now;
use origin_router::store::{self, ClientTuning, DynamoStore, EmbeddedStore, RankingStore};

use crate::coord::LocalSeq;
use crate::identity::Identity;
use crate::operate::{self, SetControl};
use crate::report;
use crate::round;
use crate::worker;
use origin_router::control::ControlKind;

/// Origin Router regional prober: times every origin from this region,
/// agrees with the region's other workers through Redis, and publishes
/// per-region rankings for the edge.
#[derive(Debug, Parser)]
#[command(name = "prober", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "ORIGIN_ROUTER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub use crate::report::{CliError, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The DynamoDB table if the config names one, else the embedded store.
    Auto,
    Dynamodb,
    Redis,
    Embedded,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker until SIGTERM or SIGINT.
    ///
    /// Without --config the configuration is read from the environment
    /// variable ORIGIN_ROUTER_CONFIG_TOML (how the ECS template passes it).
    /// ORIGIN_ROUTER_REDIS_URL, ORIGIN_ROUTER_DYNAMODB_TABLE,
    /// ORIGIN_ROUTER_EVENT_BUS and ORIGIN_ROUTER_KVS_ARN, when set, override
    /// store.redis_url, store.dynamodb_table, events.event_bus and
    /// store.kvs_arn.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Exit 0 if a worker's /healthz answers ok (for container health
    /// checks in images without a shell or curl).
    Healthcheck {
        /// The worker's health URL.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Probe every origin once; print the samples and the ranking.
    Once {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Validate a configuration and print it with every default filled in.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Show the published rankings, each region's with its age.
    Rankings {
        /// Configuration naming the store (default: the embedded store at
        /// its default path).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Where to read from.
        #[arg(long, value_enum, default_value = "auto")]
        source: Source,
    },
    /// Delete the stored ranking of one pool in one region, whatever its
    /// `seq`: the repair for an item a runaway clock or a hand-edit left
    /// behind. The region's leader publishes a fresh one within a round.
    ResetRanking {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        region: String,
    },
    /// Serve a live status page of every region's rankings: a region x
    /// origin matrix per pool and an hour of latency history, read from the
    /// configured store. Read-only; loopback by default.
    Dashboard {
        /// Configuration naming the store and pools (default: the embedded
        /// store at its default path).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to serve on. Anything but loopback shows every ranking
        /// to whoever can reach it.
        #[arg(long, default_value = "127.0.0.1:9465")]
        listen: std::net::SocketAddr,
        /// How often to read the store.
        #[arg(long, default_value = "1s", value_parser = parse_poll)]
        poll: std::time::Duration,
    },
    /// Take an origin out of service: it is never chosen (by a ranking,
    /// the edge or its race) until the drain expires or is undone.
    Drain {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        origin: String,
        #[command(flatten)]
        regions: crate::operate::Regions,
        /// How long, as the config writes durations (30m, 1h 30m, 7days);
        /// at most operations.max_drain (default 7 days).
        #[arg(long = "for", default_value = "1h", allow_hyphen_values = true)]
        duration: String,
        /// Why (shown by `status`): at most 1,024 bytes of UTF-8, no
        /// control characters or bidirectional overrides.
        #[arg(long)]
        reason: String,
        /// Who sets it (default: $USER): at most 512 bytes of UTF-8.
        #[arg(long)]
        by: Option<String>,
    },
    /// Undo `drain` of an origin.
    Undrain {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        origin: String,
        #[command(flatten)]
        regions: crate::operate::Regions,
    },
    /// Send every request of a pool to one origin, whatever the ranking
    /// says, until it expires; or `--clear` the pool's override.
    Override {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        /// The origin (not with --clear).
        #[arg(required_unless_present = "clear")]
        origin: Option<String>,
        #[command(flatten)]
        regions: crate::operate::Regions,
        /// How long, as the config writes durations (30m, 1h 30m, 2h);
        /// at most operations.max_override (default 24 hours).
        #[arg(
            long = "for",
            required_unless_present = "clear",
            allow_hyphen_values = true
        )]
        duration: Option<String>,
        /// Why (shown by `status`): at most 1,024 bytes of UTF-8, no
        /// control characters or bidirectional overrides.
        #[arg(long, required_unless_present = "clear")]
        reason: Option<String>,
        /// Who sets it (default: $USER): at most 512 bytes of UTF-8.
        #[arg(long)]
        by: Option<String>,
        /// Replace an override in force.
        #[arg(long)]
        replace: bool,
        /// Remove the pool's override instead.
        #[arg(long, conflicts_with_all = ["duration", "reason", "replace"])]
        clear: bool,
    },
    /// Per pool and region: the ranking (top, states, age) and the drains
    /// and overrides in force, who set them, why and until when.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Create the DynamoDB table for local use and tests (in AWS the deploy
    /// templates own it).
    InitTable {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Sets up `tracing` on stderr; `RUST_LOG` filters (default `default_level`).
///
/// Colour only when stderr is a terminal: a file, a pipe or a log
/// collector (journald, CloudWatch) would keep the escape codes as text
/// and every search for a message would have to step over them.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub async fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => load(&path)?,
                None => {
                    let text = std::env::var("ORIGIN_ROUTER_CONFIG_TOML").map_err(|_| {
                        "no --config given and ORIGIN_ROUTER_CONFIG_TOML is not set"
                    })?;
                    Config::from_toml(&text, "ORIGIN_ROUTER_CONFIG_TOML")?
                }
            };
            worker::run(with_env_overrides(config)?, shutdown_signal()).await?;
            Ok(())
        }
        Command::Healthcheck { url, timeout } => healthcheck(&url, timeout).await,
        Command::Once { config, format } => once(&load(&config)?, format).await,
        Command::CheckConfig { file } => {
            let config = load(&file)?;
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Rankings {
            config,
            pool,
            region,
            format,
            source,
        } => {
            let config = match config {
                Some(path) => load(&path)?,
                None => Config::default(),
            };
            rankings(&config, pool.as_deref(), region.as_deref(), format, source).await
        }
        Command::ResetRanking {
            config,
            pool,
            region,
        } => {
            let config = load(&config)?;
            for (what, name) in [("pool", &pool), ("region", &region)] {
                if !origin_router::config::is_name(name) {
                    return Err(format!("{what} `{name}` is not a valid name").into());
                }
            }
            let here = Identity::from_config(&config).region;
            let store = store::open(&config.store, &here, ClientTuning::default()).await;
            let deleted = store.delete(&pool, &region).await?;
            println!(
                "{} ranking of pool {pool} in region {region} ({})",
                if deleted {
                    "deleted the"
                } else {
                    "there was no"
                },
                store::describe(&config.store)
            );
            Ok(())
        }
        Command::Dashboard {
            config,
            listen,
            poll,
        } => {
            let config = match config {
                Some(path) => load(&path)?,
                None => Config::default(),
            };
            dashboard(&config, listen, poll).await
        }
        Command::Drain {
            config,
            pool,
            origin,
            regions,
            duration,
            reason,
            by,
        } => {
            let request = SetControl {
                kind: ControlKind::Drain,
                pool,
                origin,
                regions,
                duration,
                reason,
                by,
                replace: true,
            };
            operate::set(&load(&config)?, request).await
        }
        Command::Undrain {
            config,
            pool,
            origin,
            regions,
        } => {
            let config = load(&config)?;
            operate::clear(&config, ControlKind::Drain, &pool, Some(&origin), &regions).await
        }
        Command::Override {
            config,
            pool,
            origin,
            regions,
            duration,
            reason,
            by,
            replace,
            clear,
        } => {
            let config = load(&config)?;
            if clear {
                return operate::clear(&config, ControlKind::Override, &pool, None, &regions).await;
            }
            let request = SetControl {
                kind: ControlKind::Override,
                pool,
                origin: origin.unwrap_or_default(),
                regions,
                duration: duration.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
                by,
                replace,
            };
            operate::set(&config, request).await
        }
        Command::Status {
            config,
            pool,
            format,
        } => operate::status(&load(&config)?, pool.as_deref(), format).await,
        Command::InitTable { config } => {
            let config = load(&config)?;
            let region = Identity::from_config(&config).region;
            let store = DynamoStore::connect(&config.store, &region, ClientTuning::default())
                .await
                .ok_or("the config names no table (store.dynamodb_table)")?;
            let created = store.create_table().await?;
            println!(
                "table {} {}",
                store.table(),
                if created { "created" } else { "already exists" }
            );
            Ok(())
        }
    }
}

/// A poll interval between 200 ms and 1 h.
fn parse_poll(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let range = std::time::Duration::from_millis(200)..=std::time::Duration::from_secs(3600);
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(format!("{text} is outside 200ms..=1h"))
    }
}

/// Serves the status page until SIGTERM or SIGINT; prints its URL first.
async fn dashboard(
    config: &Config,
    listen: std::net::SocketAddr,
    poll: std::time::Duration,
) -> Result<(), CliError> {
    let here = Identity::from_config(config).region;
    let store = store::open(&config.store, &here, ClientTuning::default()).await;
    let options = crate::dashboard::Options::from_config(config, listen, poll);
    let running = crate::dashboard::Dashboard::start(store, options)
        .await
        .map_err(|e| format!("dashboard on {listen}: {e}"))?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the dashboard is reachable beyond this machine; it shows every ranking to anyone who can connect");
    }
    println!(
        "dashboard: {} ({})",
        running.url(),
        store::describe(&config.store)
    );
    shutdown_signal().await;
    Ok(())
}

/// Loads and validates a config; schedules are checked with the scheduler.
pub fn load(path: &Path) -> Result<Config, CliError> {
    let config = Config::load(path)?;
    if let Some(expr) = &config.prober.schedule {
        worker::check_schedule(expr)
            .map_err(|e| format!("{}: prober.schedule: {e}", path.display()))?;
    }
    Ok(config)
}

/// Applies `ORIGIN_ROUTER_REDIS_URL`, `ORIGIN_ROUTER_DYNAMODB_TABLE`,
/// `ORIGIN_ROUTER_EVENT_BUS` and `ORIGIN_ROUTER_KVS_ARN` (set by the deploy
/// templates, which create the Redis, the bus and the KeyValueStore and
/// know the table name), then validates again.
pub fn with_env_overrides(mut config: Config) -> Result<Config, CliError> {
    if let Ok(url) = std::env::var("ORIGIN_ROUTER_REDIS_URL") {
        config.store.redis_url = Some(url).filter(|u| !u.is_empty());
    }
    // The AUTH token comes apart from the URL (the deploy template passes
    // it from Secrets Manager, never in plain text in the task definition).
    if let Ok(token) = std::env::var("ORIGIN_ROUTER_REDIS_AUTH") {
        if let Some(url) = &config.store.redis_url {
            config.store.redis_url = Some(with_auth(url, &token)?);
        }
    }
    if let Ok(table) = std::env::var("ORIGIN_ROUTER_DYNAMODB_TABLE") {
        config.store.dynamodb_table = Some(table).filter(|t| !t.is_empty());
    }
    // The bus the deploy template creates or names (`events.event_bus`).
    if let Ok(bus) = std::env::var("ORIGIN_ROUTER_EVENT_BUS") {
        config.events.event_bus = Some(bus).filter(|b| !b.is_empty());
    }
    // The KeyValueStore of the CloudFront Function edge (empty: none).
    if let Ok(arn) = std::env::var("ORIGIN_ROUTER_KVS_ARN") {
        config.store.kvs_arn = Some(arn).filter(|a| !a.is_empty());
    }
    config.validate().map_err(|problems| {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("environment override: {p}"))
            .collect();
        text.join("\n").into()
    })
}

/// `rediss://host:port/...` with `:TOKEN@` put in, the token
/// percent-encoded. A URL that already carries credentials is an error
/// rather than a guess.
pub fn with_auth(url: &str, token: &str) -> Result<String, CliError> {
    if token.is_empty() {
        return Ok(url.to_string());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("ORIGIN_ROUTER_REDIS_URL `{url}` has no scheme"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "ORIGIN_ROUTER_REDIS_AUTH is set but the Redis URL already has credentials".into(),
        );
    }
    let encoded: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Ok(format!("{scheme}://:{encoded}@{rest}"))
}

/// One GET of a worker's health endpoint with reqwest: its connect and
/// total timeouts are all a health check needs (no per-phase timing here).
async fn healthcheck(url: &str, timeout: std::time::Duration) -> Result<(), CliError> {
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()?;
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{body}");
        Ok(())
    } else {
        Err(format!("{url} answered {status}: {body}").into())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn once(config: &Config, format: Format) -> Result<(), CliError> {
    let id = Identity::from_config(config);
    let report = round::rounds_for(config, &id)?.run().await;
    let now = unix_millis_now();
    let seq = LocalSeq::default().next(now);
    let settings = Settings::new(&config.prober, &config.ranking);
    let docs: Vec<RankingDocument> = config
        .pools
        .iter()
        .map(|(name, pool)| {
            let target = Target {
                pool_name: name,
                pool,
                region: &id.region,
                seq,
            };
            ranking::rank(target, None, &report.samples, &settings, now)
        })
        .collect();
    match format {
        Format::Json => {
            let out = serde_json::json!({ "samples": report.samples, "rankings": docs });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            println!("samples from region {} (worker {}):", id.region, id.worker);
            print!("{}", report::samples_table(&report.samples));
            for doc in &docs {
                println!();
                print!("{}", report::ranking_table(doc, now));
            }
        }
    }
    Ok(())
}

async fn rankings(
    config: &Config,
    pool: Option<&str>,
    region: Option<&str>,
    format: Format,
    source: Source,
) -> Result<(), CliError> {
    let source = match source {
        Source::Auto if config.store.dynamodb_table.is_some() => Source::Dynamodb,
        Source::Auto => Source::Embedded,
        other => other,
    };
    let mut docs: Vec<RankingDocument> = Vec::new();
    let mut skipped = Vec::new();
    if source == Source::Redis {
        let url = config
            .store
            .redis_url
            .as_deref()
            .ok_or("the config names no Redis (store.redis_url)")?;
        docs = crate::coord::redis_rankings(url, region).await?;
    } else {
        let store: Arc<dyn RankingStore> = match source {
            Source::Dynamodb => {
                if config.store.dynamodb_table.is_none() {
                    return Err("the config names no table (store.dynamodb_table)".into());
                }
                let region = Identity::from_config(config).region;
                store::open(&config.store, &region, ClientTuning::default()).await
            }
            _ => Arc::new(EmbeddedStore::new(config.store.embedded_path.clone())),
        };
        let pools = match pool {
            Some(p) => vec![p.to_string()],
            None => store.list_pools().await?,
        };
        for p in pools {
            let read = store.read_pool(&p).await?;
            docs.extend(read.rankings);
            skipped.extend(
                read.skipped
                    .into_iter()
                    .map(|(r, why)| format!("{p}/{r}: {why}")),
            );
        }
    }
    docs.retain(|d| pool.is_none_or(|p| d.pool == p) && region.is_none_or(|r| d.region == r));
    docs.sort_by(|a, b| (&a.pool, &a.region).cmp(&(&b.pool, &b.region)));
    let now = unix_millis_now();
    match format {
        Format::Json => {
            let out: Vec<serde_json::Value> = docs
                .iter()
                .map(|d| {
                    let mut v = serde_json::to_value(d).expect("documents serialize");
                    // null: generated further ahead than the allowed skew.
                    v["age_ms"] = d.age_ms(now).into();
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            if docs.is_empty() {
                println!("no rankings found");
            }
            for d in &docs {
                print!("{}", report::ranking_table(d, now));
                println!();
            }
        }
    }
    for s in skipped {
        eprintln!("skipped unreadable ranking {s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_token_goes_into_the_url_encoded() {
        assert_eq!(
            with_auth("rediss://cache.example:6379", "s3cr3t").unwrap(),
            "rediss://:s3cr3t@cache.example:6379"
        );
        assert_eq!(
            with_auth("rediss://cache.example:6379/0", "a b@c").unwrap(),
            "rediss://:a%20b%40c@cache.example:6379/0"
        );
        assert_eq!(with_auth("redis://h:1", "").unwrap(), "redis://h:1");
        assert!(with_auth("rediss://user:pw@h:1", "t").is_err());
        assert!(with_auth("no-scheme", "t").is_err());
    }
}
