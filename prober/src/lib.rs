//! The Origin Router regional prober.
//!
//! - [`worker`]: `run(config, shutdown)`, the long-running worker;
//! - [`round`]: one probe round over every origin;
//! - [`coord`]: coordination of a region's workers (Redis, or solo);
//! - [`publish`]: background publishing with backoff, newest wins;
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`;
//! - [`cli`] and [`report`]: the operator commands and their output;
//! - [`demo`]: the whole system on one machine, offline;
//! - [`bench`]: probe throughput and timing error on this machine;
//! - [`failover`]: the failover timeline, measured.

pub mod bench;
pub mod cli;
pub mod coord;
pub mod demo;
pub mod failover;
pub mod metrics;
pub mod publish;
pub mod report;
pub mod round;
pub mod worker;
