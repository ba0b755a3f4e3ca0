//! `prober`: the Origin Router regional worker and operator CLI.
//! See `prober --help`; the commands live in `cli.rs`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// How long the runtime waits, after a command returns, for blocking work
/// it cannot cancel (a store read stuck in the kernel): the worker's own
/// shutdown is already bounded by `shutdown_grace`, so this only caps what
/// a hostile store could add to it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = prober::cli::Cli::parse();
    prober::cli::init_tracing(cli.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(prober::cli::execute(cli));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
