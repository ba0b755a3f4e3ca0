//! `edge` (packaged as `bootstrap`): the Origin Router CloudFront
//! origin-request handler. Config from `ORIGIN_ROUTER_CONFIG` or
//! `origin-router.toml` beside the executable; region from `AWS_REGION`.

fn main() -> std::process::ExitCode {
    edge::default_lambda_env();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // `edge --check-config FILE` validates a config (used when packaging).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check_only = args.first().map(String::as_str) == Some("--check-config");
    let path = match (check_only, args.get(1)) {
        (true, Some(file)) => std::path::PathBuf::from(file),
        _ => edge::config_path(),
    };
    let config = match origin_router::Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if check_only {
        println!("{}: ok ({} pools)", path.display(), config.pools.len());
        return std::process::ExitCode::SUCCESS;
    }
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "local".to_string());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(edge::run(config, region)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
