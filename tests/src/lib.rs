//! Test parts for Origin Router, usable by every crate's tests, the demo and
//! the benchmarks:
//!
//! - [`kvs`]: a local CloudFront KeyValueStore data plane for the SDK,
//!   with SigV4A checks, a request log and switchable faults;
//! - [`origin`]: local HTTP(S) origins with switchable misbehaviour;
//! - [`runtime_api`]: a local Lambda Runtime API that drives the edge binary;
//! - [`services`]: real Redis and DynamoDB API (moto) servers started as
//!   child processes on loopback ports, stopped on drop;
//! - [`stats`]: the one percentile rule of every benchmark.
//!
//! The end-to-end tests of the whole system live in `tests/tests/`.

pub mod kvs;
pub mod origin;
pub mod runtime_api;
pub mod services;
pub mod stats;

pub use origin::{Mode, TestOrigin, TlsIdentity};

/// A loopback address standing in for region or host `n` (127.0.0.n).
pub fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}
