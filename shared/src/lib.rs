//! Origin Router core: what the regional prober and the edge handler share.
//!
//! Layout, leaves first:
//! - [`config`]: the one TOML configuration, one module per section,
//!   validated with field paths; it knows no engine;
//! - [`sample`]: probe results, per-phase timings and failure classes;
//! - [`geo`]: AWS region geography for nearest-region fallback;
//! - [`document`]: the published ranking and its JSON codec;
//! - [`control`]: operators' drains and overrides, stored next to rankings;
//! - [`probe`]: the probe engine (DNS, TCP, TLS, first byte timed apart);
//! - [`ranking`]: the pure ranking engine (rise/fall, decay, quorum,
//!   hysteresis);
//! - [`store`]: where rankings live (DynamoDB with its item codec, embedded
//!   files, memory), and the one way to open the configured one.
//!
//! What only the edge needs (request routing, the decision order, the live
//! race) lives in the `edge` crate; what only the prober needs
//! (scheduling, coordination, publishing) in `prober`.

pub mod compact;
pub mod config;
pub mod control;
pub mod document;
pub mod geo;
pub mod probe;
pub mod ranking;
pub mod sample;
pub mod store;

pub use config::Config;
pub use document::{OriginState, RankedOrigin, RankingDocument};
pub use sample::{FailureClass, Outcome, PhaseTimings, Sample};
