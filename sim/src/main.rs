//! `sim`: the Origin Router demo and benchmarks (see the crate docs).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sim::observe::ProbeFailures;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Origin Router on this machine: a demo of the whole system and the
/// benchmarks behind BENCHMARKS.md. No network, AWS or Redis needed.
#[derive(Debug, Parser)]
#[command(name = "sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system on this machine: local origins, one prober per
    /// simulated region, edge decisions per region; fails the fastest origin
    /// midway and shows the failover.
    Demo(sim::demo::DemoArgs),
    /// Measure probes per second, timing error and memory against local
    /// origins.
    Bench(sim::bench::BenchArgs),
    /// Measure the failover timeline: origin death, first failed probe,
    /// state change, ranking published, every edge switched.
    BenchFailover(sim::failover::FailoverArgs),
    /// Measure passive ejection: after how many misses and how long one
    /// edge container stops choosing an origin that answers 5xx.
    BenchEject(sim::eject_bench::EjectArgs),
    /// Measure latency demotion: after how many misses and how long each
    /// region's edge container leaves an origin gone gray (health fast,
    /// pages slow), and comes back once its pages are fast again.
    BenchGray(sim::gray_bench::GrayArgs),
    /// Measure the CloudFront Function edge: its generated size for pools
    /// of 1, 8 and 64 origins, and its time per call under Node (needs
    /// `node`).
    BenchFunction(sim::function_bench::FunctionArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The runs print their own view, so logs show only errors (RUST_LOG
    // changes that); the failover bench also reads the workers' failed
    // probes from their log events.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let failures = ProbeFailures::of("fast");
    let watch = failures
        .clone()
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target().starts_with("prober")
        }));
    // Colour only on a terminal: escape codes in a file or a pipe are noise
    // to whatever reads it.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    tracing_subscriber::registry().with(logs).with(watch).init();
    let result = match cli.command {
        Command::Demo(args) => sim::demo::run(args).await,
        Command::Bench(args) => sim::bench::run(args).await,
        Command::BenchFailover(args) => sim::failover::run(args, failures).await,
        Command::BenchEject(args) => sim::eject_bench::run(args).await,
        Command::BenchGray(args) => sim::gray_bench::run(args).await,
        Command::BenchFunction(args) => sim::function_bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
