//! `edge` (packaged as `bootstrap`): the Origin Router CloudFront
//! origin-request handler. Config from `--config`, `ORIGIN_ROUTER_CONFIG` or
//! `origin-router.toml` beside the executable; region from `AWS_REGION`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Origin Router edge handler: serves CloudFront origin-request events from
/// the Lambda Runtime API, rewriting each request's origin to the fastest
/// healthy origin of its pool.
#[derive(Debug, Parser)]
#[command(name = "edge", version)]
struct Args {
    /// Validate this configuration for CloudFront and exit (used when
    /// packaging): the checks every config gets, plus CloudFront's own
    /// rules for custom origins (a DNS name, never an IP address).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Configuration file. Default: `ORIGIN_ROUTER_CONFIG`, else
    /// `origin-router.toml` beside the executable (Lambda@Edge has no
    /// environment variables, so the config is bundled in the zip).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    edge::default_lambda_env();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let check_only = args.check_config.is_some();
    let path = args
        .check_config
        .or(args.config)
        .unwrap_or_else(edge::config_path);
    let config = match origin_router::Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check_only {
        if let Err(problems) = config.check_for_cloudfront() {
            for p in problems {
                eprintln!("error: {}: {p}", path.display());
            }
            return ExitCode::FAILURE;
        }
        println!("{}: ok ({} pools)", path.display(), config.pools.len());
        return ExitCode::SUCCESS;
    }
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "local".to_string());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(edge::run(config, region)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
