//! The edge's settings, built once from the config by [`edge::run`]
//! (linkerd's style: each layer gets a small parameter struct of its own,
//! and nothing below `run` holds the whole [`Config`]). The only module of
//! the edge that reads [`Config`].
//!
//! [`edge::run`]: crate::run

use std::sync::Arc;

use origin_router::config::{Config, RoutingConfig};
use origin_router::store::RankingStore;

use crate::decision;
use crate::handler::Edge;
use crate::race::{RaceSettings, Racer};
use crate::router::{Pools, Router, Timing};

/// Every layer's settings.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Request → pool (the handler's).
    pub routing: RoutingConfig,
    /// The bundled pools (the router's, the decision's and ejection's).
    pub pools: Arc<Pools>,
    /// The pure decision's.
    pub decision: decision::Settings,
    /// The router's budgets.
    pub timing: Timing,
    /// The live race's.
    pub race: RaceSettings,
    /// The traffic measurement's.
    pub traffic: crate::traffic::Settings,
}

impl EdgeSettings {
    /// The settings of an edge in `region` (`AWS_REGION`).
    pub fn new(config: &Config, region: impl Into<String>) -> EdgeSettings {
        let edge = &config.edge;
        EdgeSettings {
            routing: config.routing.clone(),
            pools: Arc::new(config.pools.clone()),
            decision: decision::Settings {
                region: region.into(),
                proximity: edge.proximity.clone(),
                ranking_max_age: edge.ranking_max_age,
                cache_ttl: edge.cache_ttl,
                max_stale: edge.max_stale,
                operations: config.operations.clone(),
            },
            timing: Timing {
                table_timeout: edge.table_timeout,
                race_watchdog: edge.race_watchdog,
                race_cache_ttl: edge.race_cache_ttl,
                cache_ttl: edge.cache_ttl,
            },
            race: RaceSettings {
                attempt_timeout: edge.race_attempt_timeout,
                resolve: config.resolve.clone(),
            },
            traffic: crate::traffic::Settings {
                margin_relative: config.ranking.switch_margin_relative,
                margin_absolute: config.ranking.switch_margin_absolute,
            },
        }
    }

    /// The router over `store`, racing with `racer`.
    pub fn router(&self, store: Arc<dyn RankingStore>, racer: Arc<dyn Racer>) -> Router {
        Router::new(
            self.pools.clone(),
            self.decision.clone(),
            self.traffic,
            self.timing,
            store,
            racer,
        )
    }

    /// The handler's parts: the routing and [`EdgeSettings::router`].
    pub fn edge(&self, store: Arc<dyn RankingStore>, racer: Arc<dyn Racer>) -> Edge {
        Edge::new(self.routing.clone(), self.router(store, racer))
    }
}
