//! The Origin Router regional prober.
//!
//! - [`run`]: the long-running worker, from a config and a shutdown signal;
//! - [`identity`]: who and where a worker is;
//! - [`round`]: one probe round over every origin;
//! - [`coord`]: coordination of a region's workers (Redis, or solo), and
//!   who publishes what while Redis is down;
//! - [`publish`]: background publishing with backoff, newest wins;
//! - [`kvs`]: compact rankings to a CloudFront KeyValueStore, on their own
//!   task (`store.kvs_arn`);
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`;
//! - [`serve`]: the one HTTP serving loop of `/metrics` and the dashboard;
//! - [`cli`] and [`report`]: the operator commands and their output;
//! - [`dashboard`]: the live status page (`prober dashboard`).
//!
//! The demo and the benchmarks live in the `sim` crate: nothing of them
//! ships in this binary.

pub mod cli;
pub mod coord;
pub mod dashboard;
pub mod events;
pub mod identity;
pub mod kvs;
pub mod metrics;
pub mod operate;
pub mod pacing;
pub mod publish;
pub mod report;
pub mod round;
pub mod serve;
pub mod worker;

pub use worker::{run, WorkerError};
