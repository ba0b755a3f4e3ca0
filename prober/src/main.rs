//! `prober`: the Origin Router regional worker and operator CLI.
//! See `prober --help`; the commands live in `cli.rs`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = prober::cli::Cli::parse();
    prober::cli::init_tracing(cli.log_format, "info");
    match prober::cli::execute(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
