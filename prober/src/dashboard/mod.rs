//! `prober dashboard`: a live status page over the configured store.
//!
//! A poller reads every pool's rankings from the store every `poll`,
//! keeps an hour of history ([`history`]) and renders one JSON snapshot
//! ([`view`]); the HTTP server ([`server`]) hands out that snapshot and
//! the page, which long-polls it (a request for a snapshot newer than the
//! one it has waits for the next one). Page requests never reach the store, so any
//! number of open pages cost one store read per poll. Nothing is written
//! anywhere: every endpoint is a GET of something already in memory.

pub mod controls;
pub mod history;
pub mod server;
pub mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use origin_router::config::Config;
use origin_router::sample::unix_millis_now;
use origin_router::store::{PoolRankings, RankingStore};

use history::History;

/// Longest one store read may take before the poll gives up and keeps the
/// last good rankings (a store that accepts and never answers).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pools read per poll at most; a store listing more shows the first ones
/// by name and says so.
pub const MAX_POOLS: usize = 64;

/// What a dashboard shows and how often it reads.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub poll: Duration,
    /// A ranking older than this shows as stale.
    pub max_age: Duration,
    /// `store::describe` of the store.
    pub store_label: String,
    /// Pools to read even before they have a ranking, with their origins
    /// in configured order.
    pub pools: BTreeMap<String, Vec<String>>,
}

impl Options {
    /// The pools, staleness and store of `config`.
    pub fn from_config(config: &Config, listen: SocketAddr, poll: Duration) -> Options {
        Options {
            listen,
            poll,
            max_age: config.edge.ranking_max_age,
            store_label: origin_router::store::describe(&config.store),
            pools: config
                .pools
                .iter()
                .map(|(name, pool)| {
                    (
                        name.clone(),
                        pool.origins.iter().map(|o| o.id.clone()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// A running dashboard; dropping it stops the server and the poller.
pub struct Dashboard {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Dashboard {
    /// Binds `options.listen` and starts polling `store`.
    pub async fn start(
        store: Arc<dyn RankingStore>,
        options: Options,
    ) -> std::io::Result<Dashboard> {
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let (snapshot, latest) = tokio::sync::watch::channel(server::Snapshot::default());
        let mut poller = Poller {
            store,
            options,
            history: History::default(),
            last: BTreeMap::new(),
            read_at: None,
            snapshot,
        };
        // The first snapshot before the first page can ask for it.
        poller.poll().await;
        let poll = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poller.options.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                poller.poll().await;
            }
        });
        let serve = tokio::spawn(server::serve(listener, latest));
        tracing::info!(%addr, "dashboard listening");
        Ok(Dashboard {
            addr,
            tasks: vec![poll, serve],
        })
    }

    /// Where the page is.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Poller {
    store: Arc<dyn RankingStore>,
    options: Options,
    history: History,
    /// Each pool's last good read: a failed read never blanks the page.
    last: BTreeMap<String, PoolRankings>,
    read_at: Option<u64>,
    snapshot: tokio::sync::watch::Sender<server::Snapshot>,
}

impl Poller {
    async fn poll(&mut self) {
        let error = match tokio::time::timeout(READ_TIMEOUT, self.read()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("the store did not answer within {READ_TIMEOUT:?}")),
        };
        if let Some(e) = &error {
            tracing::warn!(error = %e, "dashboard store read failed; showing the last good rankings");
        }
        let now = unix_millis_now();
        self.history.prune(now);
        let controls = controls::in_force(self.last.values(), now);
        let mut value = view::snapshot(
            &view::Inputs {
                store: &self.options.store_label,
                pools: &self.last,
                origin_order: &self.options.pools,
                history: &self.history,
                controls: &controls,
                max_age_ms: self.options.max_age.as_millis() as u64,
                read_at: self.read_at,
                error: error.as_deref(),
                poll_ms: self.options.poll.as_millis() as u64,
            },
            now,
        );
        let version = self.snapshot.borrow().version + 1;
        value["version"] = version.into();
        self.snapshot.send_replace(server::Snapshot {
            version,
            json: Arc::new(value.to_string()),
        });
    }

    /// Reads every pool; a pool that fails keeps its last good read.
    async fn read(&mut self) -> Result<(), String> {
        let mut names: Vec<String> = self.options.pools.keys().cloned().collect();
        let listed = self.store.list_pools().await;
        let mut problems = Vec::new();
        match listed {
            Ok(listed) => names.extend(listed),
            Err(e) => problems.push(format!("listing pools: {e}")),
        }
        names.sort();
        names.dedup();
        if names.len() > MAX_POOLS {
            problems.push(format!(
                "{} pools; showing the first {MAX_POOLS} by name",
                names.len()
            ));
            names.truncate(MAX_POOLS);
        }
        for name in names {
            match self.store.read_pool(&name).await {
                Ok(read) => {
                    let now = unix_millis_now();
                    for doc in &read.rankings {
                        self.history.observe(doc, now);
                    }
                    self.last.insert(name, read);
                }
                Err(e) => problems.push(format!("pool {name}: {e}")),
            }
        }
        if problems.is_empty() {
            self.read_at = Some(unix_millis_now());
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
