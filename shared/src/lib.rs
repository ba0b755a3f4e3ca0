//! Origin Router core: what the regional prober and the edge handler share.
//!
//! Layout:
//! - [`config`]: the one TOML configuration, validated with field paths;
//! - [`sample`]: probe results, per-phase timings and failure classes;
//! - [`probe`]: the probe engine (DNS, TCP, TLS, first byte timed apart);
//! - [`ranking`]: the pure ranking engine (rise/fall, decay, quorum,
//!   hysteresis);
//! - [`document`]: the published ranking and its JSON and DynamoDB codecs;
//! - [`store`]: where rankings live (DynamoDB, embedded files, memory);
//! - [`geo`]: AWS region geography for nearest-region fallback;
//! - [`race`]: the live race the edge falls back to.

pub mod config;
pub mod decision;
pub mod document;
pub mod geo;
pub mod probe;
pub mod race;
pub mod ranking;
pub mod sample;
pub mod store;

pub use config::Config;
pub use document::{OriginState, RankedOrigin, RankingDocument};
pub use sample::{FailureClass, Outcome, PhaseTimings, Sample};
