//! Origin Router simulation: the offline demo and the benchmarks, run on
//! this machine against the real prober worker and the real edge decision.
//! Nothing here ships: the `prober` and `edge` binaries do not link it.
//!
//! - [`world`]: the one model of the simulated world (regions on loopback
//!   addresses, origins with per-region delays, failure injection);
//! - [`observe`]: watching real workers through their log events;
//! - [`demo`]: the whole system, offline, with a failover to watch;
//! - [`band`]: the demo's latency-band pool and where its misses go;
//! - [`demo_gray`]: the demo's gray failure, left by one region's edge;
//! - [`demo_function`]: the demo's failover through the CloudFront
//!   Function, under Node, beside the Rust decision;
//! - [`mod@bench`]: probe throughput, timing error and memory;
//! - [`failover`]: the failover timeline, measured;
//! - [`function_bench`]: the CloudFront Function edge's size and its time
//!   per call under Node;
//! - [`eject_bench`]: how fast passive ejection takes a 5xx origin out;
//! - [`gray`]: an origin that can go gray (health fast, pages slow);
//! - [`gray_bench`]: how fast latency demotion takes a gray origin out of
//!   each region's edge, and lets it back;
//! - the `echo-handler` binary: the Runtime API benchmark's baseline.
//!
//! Percentiles come from one helper, `origin_router_tests::stats`.

pub mod band;
pub mod bench;
pub mod demo;
pub mod demo_eject;
pub mod demo_function;
pub mod demo_gray;
pub mod eject_bench;
pub mod failover;
pub mod function_bench;
pub mod gray;
pub mod gray_bench;
pub mod observe;
pub mod world;

/// Errors of a simulation run, printed as `error: ...`.
pub type SimError = Box<dyn std::error::Error + Send + Sync>;
