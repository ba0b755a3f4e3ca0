//! `edge` (packaged as `bootstrap`): the Origin Router CloudFront
//! origin-request handler. Config from `--config`, `ORIGIN_ROUTER_CONFIG` or
//! `origin-router.toml` beside the executable; region from `AWS_REGION`.
//!
//! As a Lambda function it refuses to start without `store.dynamodb_table`:
//! the embedded store (the default, for local use) would be an empty folder
//! in the function's container, and every request would be raced live.

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the CloudFront Function (viewer-request, cloudfront-js-2.0)
    /// generated from the config: the edge without Lambda, reading the
    /// rankings the probers write to the KeyValueStore (`store.kvs_arn`,
    /// `store.kvs_regions`).
    CloudfrontFunction {
        /// The bundled config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Accept IP-address origins (local runs under Node only:
        /// CloudFront sends requests to DNS names alone).
        #[arg(long)]
        allow_ip_origins: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::CloudfrontFunction {
        config,
        allow_ip_origins,
    }) = &args.command
    {
        return cloudfront_function(config, *allow_ip_origins);
    }
    edge::default_lambda_env();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // JSON lines for CloudWatch: never colour, whatever stderr is.
    tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
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
    if let (None, Some((name, value))) = (&config.store.dynamodb_table, lambda_marker()) {
        eprintln!(
            "error: {}: store.dynamodb_table: {} (this process runs as a Lambda function: {name}={value})",
            path.display(),
            origin_router::config::TABLE_REQUIRED,
        );
        return ExitCode::FAILURE;
    }
    // lambda_runtime panics without it; say what is missing instead.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none_or(|v| v.is_empty()) {
        eprintln!(
            "error: AWS_LAMBDA_RUNTIME_API is not set: the edge serves events from a Lambda \
             Runtime API (Lambda sets it; so does the Lambda@Edge bridge, edge/bridge/index.js). \
             To check a config, run `edge --check-config FILE`"
        );
        return ExitCode::FAILURE;
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

/// The variable that says this process runs as a Lambda function, and its
/// value; `None` when it runs anywhere else (local use, tests).
///
/// AWS Lambda Developer Guide, "Defined runtime environment variables"
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>):
/// Lambda sets `AWS_EXECUTION_ENV`, "the runtime identifier, prefixed by
/// `AWS_Lambda_`", e.g. `AWS_Lambda_nodejs24.x` for the Lambda@Edge
/// function, whose bridge passes its environment to this binary; but "this
/// environment variable is not defined for OS-only runtimes (the `provided`
/// runtime family)", so as a `provided.al2023` function only
/// `LAMBDA_TASK_ROOT` ("the path to your Lambda function code"), set in
/// every runtime, says so. Neither is set outside Lambda (the local
/// Runtime API of the tests sets only `AWS_LAMBDA_RUNTIME_API`).
fn cloudfront_function(path: &std::path::Path, allow_ip_origins: bool) -> ExitCode {
    let config = match origin_router::Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match edge::function::generate(&config, edge::function::Options { allow_ip_origins }) {
        Ok(code) => {
            print!("{code}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn lambda_marker() -> Option<(&'static str, String)> {
    ["AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT"]
        .into_iter()
        .find_map(|name| {
            let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
            Some((name, value.to_string_lossy().chars().take(100).collect()))
        })
}
