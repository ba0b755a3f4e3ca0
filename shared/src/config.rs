//! The one configuration file shared by probers and the edge.
//!
//! A TOML file describes pools and their origins, how requests map to pools,
//! the prober, the ranking, the edge and the store. [`Config::load`] parses
//! it with unknown fields rejected, then validates every field and reports
//! each problem with the file, the field path and what is wrong, e.g.
//! `origin-router.toml: pools.web.origins[2].port: 70000 is not a valid port`.
//!
//! Every default is listed on the field it belongs to, and
//! `examples/origin-router.toml` shows them all with comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Named pools of interchangeable origins. At least one is required.
    pub pools: BTreeMap<String, PoolConfig>,
    /// How an incoming request is mapped to a pool.
    pub routing: RoutingConfig,
    /// The regional prober worker.
    pub prober: ProberConfig,
    /// How samples become a ranking.
    pub ranking: RankingConfig,
    /// The edge handler.
    pub edge: EdgeConfig,
    /// Where rankings and coordination state live.
    pub store: StoreConfig,
    /// Static name-to-address overrides used by probes and races before the
    /// system resolver, like curl's `--resolve`. Default: empty.
    pub resolve: BTreeMap<String, IpAddr>,
}

/// A named set of origins that serve the same content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The origin chosen when nothing better is known (watchdog, all down).
    /// Default: the first origin listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_origin: Option<String>,
    /// The origins, in the order used for ties. At least one.
    pub origins: Vec<OriginConfig>,
}

impl PoolConfig {
    /// The default origin's id (valid after [`Config::validate`]).
    pub fn default_origin_id(&self) -> &str {
        self.default_origin
            .as_deref()
            .or_else(|| self.origins.first().map(|o| o.id.as_str()))
            .unwrap_or("")
    }

    /// Looks an origin up by id.
    pub fn origin(&self, id: &str) -> Option<&OriginConfig> {
        self.origins.iter().find(|o| o.id == id)
    }
}

/// One endpoint that can serve a pool's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Unique within its pool; `[A-Za-z0-9_.-]`, 1 to 64 characters.
    pub id: String,
    /// DNS name or IP address the edge sends requests to and probers probe.
    pub host: String,
    /// TCP port. Default: 443 for https, 80 for http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// `http` or `https`. Default: `https`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Path probed for health. Default: `/`.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// `HEAD` or `GET`. Default: `HEAD`.
    #[serde(default)]
    pub method: HealthMethod,
    /// Status codes that count as healthy, `"200-399"` or `"200"`.
    /// Default: `200-399`.
    #[serde(default)]
    pub accept_status: StatusRange,
    /// If set, a healthy answer's body must contain this text (needs `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The Host header sent to this origin: `"origin"` (its own host name),
    /// `"viewer"` (keep the viewer's; probes send the origin's host), or
    /// `{ fixed = "name" }`. Default: `"origin"`.
    #[serde(default)]
    pub host_header: HostHeaderPolicy,
    /// Preference weight: the ranking score is latency divided by weight, so
    /// 2.0 makes an origin look twice as fast. Default: 1.0; range (0, 1000].
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// TLS server name (SNI and certificate check). Default: `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Extra PEM CA certificates trusted for this origin (private CAs,
    /// test origins). Default: only the bundled web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_health_path() -> String {
    "/".to_string()
}

fn default_weight() -> f64 {
    1.0
}

impl OriginConfig {
    /// A plain-HTTP origin with every other field at its default; handy in
    /// tests and tools.
    pub fn http(id: &str, host: &str, port: u16) -> Self {
        OriginConfig {
            id: id.to_string(),
            host: host.to_string(),
            port: Some(port.into()),
            protocol: Protocol::Http,
            health_path: default_health_path(),
            method: HealthMethod::Head,
            accept_status: StatusRange::default(),
            body_contains: None,
            host_header: HostHeaderPolicy::Origin,
            weight: 1.0,
            tls_server_name: None,
            ca_file: None,
        }
    }

    /// The effective port (valid after [`Config::validate`]).
    pub fn port(&self) -> u16 {
        match self.port {
            Some(p) => u16::try_from(p).unwrap_or(0),
            None => self.protocol.default_port(),
        }
    }

    /// The TLS server name.
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }

    /// The Host header a probe sends.
    pub fn probe_host_header(&self) -> String {
        match &self.host_header {
            HostHeaderPolicy::Fixed(fixed) => fixed.clone(),
            _ => self.host_with_port(),
        }
    }

    /// `host` or `host:port` when the port is not the protocol's default.
    pub fn host_with_port(&self) -> String {
        if self.port() == self.protocol.default_port() {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port())
        } else {
            format!("{}:{}", self.host, self.port())
        }
    }
}

/// Transport protocol of an origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    #[default]
    Https,
}

impl Protocol {
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// Method of a health probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthMethod {
    #[default]
    Head,
    Get,
}

impl HealthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthMethod::Head => "HEAD",
            HealthMethod::Get => "GET",
        }
    }
}

/// How the Host header is set for an origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostHeaderPolicy {
    /// The origin's own host name.
    #[default]
    Origin,
    /// Whatever the viewer sent (virtual-hosted origins that serve the
    /// public name).
    Viewer,
    /// A fixed name.
    Fixed(String),
}

/// An inclusive range of accepted HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange {
            low: 200,
            high: 399,
        }
    }
}

impl StatusRange {
    pub fn contains(&self, code: u16) -> bool {
        (self.low..=self.high).contains(&code)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(code),
                _ => Err(format!(
                    "`{s}` is not a status range (expected e.g. \"200-399\" or \"204\", codes 100 to 599)"
                )),
            }
        };
        let (low, high) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let code = parse(s)?;
                (code, code)
            }
        };
        if low > high {
            return Err(format!(
                "`{s}` is not a status range: {low} is above {high}"
            ));
        }
        Ok(StatusRange { low, high })
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How requests map to pools: by Host header first, then by CloudFront
/// distribution id, then the default pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Pool for requests that match nothing else. Default: none (such
    /// requests pass through unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<String>,
    /// Viewer Host header (lower case, no port) to pool. Default: empty.
    pub hosts: BTreeMap<String, String>,
    /// CloudFront distribution id to pool. Default: empty.
    pub distributions: BTreeMap<String, String>,
}

impl RoutingConfig {
    /// The pool for a request, if any.
    pub fn pool_for(&self, host: Option<&str>, distribution_id: Option<&str>) -> Option<&str> {
        if let Some(host) = host {
            let host = host.trim().to_ascii_lowercase();
            let bare = strip_port(&host);
            if let Some(pool) = self.hosts.get(bare) {
                return Some(pool);
            }
        }
        if let Some(pool) = distribution_id.and_then(|d| self.distributions.get(d)) {
            return Some(pool);
        }
        self.default_pool.as_deref()
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The regional prober worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProberConfig {
    /// AWS region this worker probes from. Default: `AWS_REGION`, else
    /// `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Unique worker id within the region. Default: host name plus pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Time between probe rounds. Default: 2s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A cron expression with seconds (`*/5 * * * * *`) used instead of
    /// `interval`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Budget for name resolution plus the TCP handshake. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Budget from the TCP connection to the complete answer, TLS handshake
    /// included. Default: 2s.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// After a probe whose result differs from the origin's previous one,
    /// the worker re-probes it this soon, up to `fall - 1` (or `rise - 1`)
    /// times in the same round, so a state change is confirmed in well under
    /// one interval (HAProxy's `fastinter`). Default: 250ms.
    #[serde(with = "humantime_serde")]
    pub fast_interval: Duration,
    /// Consecutive successes that bring a down origin back. Default: 2.
    pub rise: u32,
    /// Consecutive failures that take an origin down. Default: 3.
    pub fall: u32,
    /// Probes in flight at once, across all origins. Default: 256.
    pub concurrency: usize,
    /// Probes are spread over this much time at the start of each round so
    /// origins do not see bursts. Default: 200ms; must be below `interval`.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Local address probes connect from. Default: chosen by the OS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// Samples kept per worker and origin in Redis. Default: 32.
    pub sample_retention: usize,
    /// Leader lease lifetime; the leader renews it every round. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Address of the `/metrics` and `/healthz` endpoint. Default:
    /// `127.0.0.1:9464`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight probes. Default: 3s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            region: None,
            worker_id: None,
            interval: Duration::from_secs(2),
            schedule: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            fast_interval: Duration::from_millis(250),
            rise: 2,
            fall: 3,
            concurrency: 256,
            jitter: Duration::from_millis(200),
            source_address: None,
            sample_retention: 32,
            lease_ttl: Duration::from_secs(10),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// How samples become a ranking. See [`crate::ranking`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingConfig {
    /// Samples older than this are ignored. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A sample's weight in the smoothed latency halves every this much
    /// time, so an origin that recovers is seen to recover. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// The top origin changes only if the challenger's score is better by
    /// more than this fraction of the incumbent's... Default: 0.10.
    pub switch_margin_relative: f64,
    /// ...and by more than this much. Default: 5ms.
    #[serde(with = "humantime_serde")]
    pub switch_margin_absolute: Duration,
    /// An up origin whose success ratio is below this is `degraded` and
    /// ranked after healthy ones. Default: 0.9.
    pub degraded_below: f64,
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            window: Duration::from_secs(60),
            half_life: Duration::from_secs(10),
            switch_margin_relative: 0.10,
            switch_margin_absolute: Duration::from_millis(5),
            degraded_below: 0.9,
        }
    }
}

/// The edge handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// A ranking read from the table is used without I/O for this long.
    /// Default: 500ms. It is the edge's share of a failover: with the
    /// default prober settings an origin is marked down within one
    /// interval, plus up to 0.5 s of round start lag, plus two 250 ms
    /// re-probes of its death; every edge has switched within this TTL
    /// more (p99 2.7-3.0 s in `prober bench-failover`). Each container
    /// reads a pool at most twice a second while busy.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Past `cache_ttl` and up to this age a cached ranking is still used
    /// while a background refresh runs. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// A ranking whose `generated_at` is older than this is not fresh: its
    /// prober has stopped. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub ranking_max_age: Duration,
    /// Bound on one table Query. Default: 250ms.
    #[serde(with = "humantime_serde")]
    pub table_timeout: Duration,
    /// Per-origin budget of the live race. Default: 800ms.
    #[serde(with = "humantime_serde")]
    pub race_attempt_timeout: Duration,
    /// The live race gives up and returns the default origin after this.
    /// Default: 900ms.
    #[serde(with = "humantime_serde")]
    pub race_watchdog: Duration,
    /// How long a race winner is reused. Default: 5s.
    #[serde(with = "humantime_serde")]
    pub race_cache_ttl: Duration,
    /// Region to nearest-first list of regions, overriding the built-in
    /// geography. Default: empty.
    pub proximity: BTreeMap<String, Vec<String>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            cache_ttl: Duration::from_millis(500),
            max_stale: Duration::from_secs(60),
            ranking_max_age: Duration::from_secs(30),
            table_timeout: Duration::from_millis(250),
            race_attempt_timeout: Duration::from_millis(800),
            race_watchdog: Duration::from_millis(900),
            race_cache_ttl: Duration::from_secs(5),
            proximity: BTreeMap::new(),
        }
    }
}

/// Where rankings and coordination state live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the embedded store, used when no table is configured.
    /// Default: `origin-router` in the system temp directory.
    pub embedded_path: PathBuf,
    /// DynamoDB table name. Default: none (embedded store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamodb_table: Option<String>,
    /// Regions that hold a replica of the table. Probers and edges use the
    /// replica nearest their own region; Lambda@Edge runs in regions that
    /// may have none. Default: empty (the replica in `AWS_REGION`).
    pub table_regions: Vec<String>,
    /// Redis URL for worker coordination within a region. Default: none
    /// (a single worker is its own leader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Items expire (DynamoDB TTL) this long after they were written.
    /// Default: 1day.
    #[serde(with = "humantime_serde")]
    pub item_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            embedded_path: std::env::temp_dir().join("origin-router"),
            dynamodb_table: None,
            table_regions: Vec::new(),
            redis_url: None,
            item_ttl: Duration::from_secs(86_400),
        }
    }
}

impl StoreConfig {
    /// The table replica region to use from `region`: the nearest listed
    /// one, or `None` (the SDK's configured region) if none are listed.
    pub fn replica_for(&self, region: &str) -> Option<String> {
        let proximity = BTreeMap::new();
        crate::geo::nearest_first(
            region,
            self.table_regions.iter().map(String::as_str),
            &proximity,
        )
        .first()
        .map(|r| r.to_string())
    }
}

/// One problem found in a configuration: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Parse { file: String, problem: Problem },
    #[error("{file}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join(&format!("\n{file}: ")))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_toml(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let parse_error = |path: String, message: String| ConfigError::Parse {
            file: file.to_string(),
            problem: Problem { path, message },
        };
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| parse_error(String::new(), e.to_string().trim().to_string()))?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                // toml appends "in `key`" context; the path already says it.
                let message = e.inner().to_string();
                let message = message
                    .split("\nin `")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                parse_error(e.path().to_string(), message)
            })?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            file: file.to_string(),
            problems,
        })
    }

    /// Renders the effective configuration (defaults filled in) as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every field; returns all problems found.
    pub fn validate(self) -> Result<Config, Vec<Problem>> {
        let mut v = Validator::default();
        if self.pools.is_empty() {
            v.fail("pools", "at least one pool is required");
        }
        for (name, pool) in &self.pools {
            let at = format!("pools.{name}");
            v.name(&at, name);
            validate_pool(&mut v, &at, pool);
        }
        let known_pool = |p: &String| self.pools.contains_key(p);
        if let Some(p) = &self.routing.default_pool {
            if !known_pool(p) {
                v.fail(
                    "routing.default_pool",
                    format!("`{p}` is not a configured pool"),
                );
            }
        }
        for (kind, map) in [
            ("hosts", &self.routing.hosts),
            ("distributions", &self.routing.distributions),
        ] {
            for (key, pool) in map {
                if !known_pool(pool) {
                    v.fail(
                        format!("routing.{kind}.\"{key}\""),
                        format!("`{pool}` is not a configured pool"),
                    );
                }
            }
        }
        validate_prober(&mut v, &self.prober);
        validate_ranking(&mut v, &self.ranking);
        validate_edge(&mut v, &self.edge);
        if let Some(table) = &self.store.dynamodb_table {
            let ok = (3..=255).contains(&table.len())
                && table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                v.fail(
                    "store.dynamodb_table",
                    format!("`{table}` is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"),
                );
            }
        }
        if let Some(url) = &self.store.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                v.fail(
                    "store.redis_url",
                    format!("`{url}` is not a Redis URL (redis://host:port or rediss://...)"),
                );
            }
        }
        for (i, r) in self.store.table_regions.iter().enumerate() {
            v.name(&format!("store.table_regions[{i}]"), r);
        }
        if self.store.item_ttl < Duration::from_secs(60) {
            v.fail("store.item_ttl", "must be at least 1m");
        }
        for name in self.resolve.keys() {
            if !is_host_name(name) {
                v.fail(format!("resolve.\"{name}\""), "is not a host name");
            }
        }
        v.finish(self)
    }

    /// The settings the ranking engine runs with.
    pub fn ranking_settings(&self) -> crate::ranking::Settings {
        crate::ranking::Settings {
            rise: self.prober.rise,
            fall: self.prober.fall,
            window: self.ranking.window,
            half_life: self.ranking.half_life,
            switch_margin_relative: self.ranking.switch_margin_relative,
            switch_margin_absolute: self.ranking.switch_margin_absolute,
            degraded_below: self.ranking.degraded_below,
            probe_interval: self.prober.interval,
            // Three missed rounds, plus the longest a probe may take.
            vote_expiry: self.prober.interval * 3
                + self.prober.connect_timeout
                + self.prober.response_timeout,
        }
    }
}

fn validate_pool(v: &mut Validator, at: &str, pool: &PoolConfig) {
    if pool.origins.is_empty() {
        v.fail(format!("{at}.origins"), "at least one origin is required");
    }
    if pool.origins.len() > crate::document::MAX_ORIGINS {
        v.fail(
            format!("{at}.origins"),
            format!("at most {} origins per pool", crate::document::MAX_ORIGINS),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, o) in pool.origins.iter().enumerate() {
        let at = format!("{at}.origins[{i}]");
        v.name(&format!("{at}.id"), &o.id);
        if !seen.insert(o.id.as_str()) {
            v.fail(
                format!("{at}.id"),
                format!("`{}` is used twice in this pool", o.id),
            );
        }
        if !is_host_name(&o.host) && o.host.parse::<IpAddr>().is_err() {
            v.fail(
                format!("{at}.host"),
                format!("`{}` is not a host name or IP address", o.host),
            );
        }
        if let Some(port) = o.port {
            if !(1..=65535).contains(&port) {
                v.fail(format!("{at}.port"), format!("{port} is not a valid port"));
            }
        }
        if !o.health_path.starts_with('/') || o.health_path.chars().any(char::is_whitespace) {
            v.fail(
                format!("{at}.health_path"),
                format!(
                    "`{}` must start with / and contain no spaces",
                    o.health_path
                ),
            );
        }
        if o.body_contains.is_some() && o.method != HealthMethod::Get {
            v.fail(
                format!("{at}.body_contains"),
                "needs method = \"GET\" (HEAD has no body)",
            );
        }
        if !(o.weight.is_finite() && o.weight > 0.0 && o.weight <= 1000.0) {
            v.fail(
                format!("{at}.weight"),
                format!("{} is not in (0, 1000]", o.weight),
            );
        }
        if o.protocol == Protocol::Http && (o.ca_file.is_some() || o.tls_server_name.is_some()) {
            v.fail(
                at.clone(),
                "ca_file and tls_server_name need protocol = \"https\"",
            );
        }
        if let Some(path) = &o.ca_file {
            if !path.is_file() {
                v.fail(
                    format!("{at}.ca_file"),
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
        if let HostHeaderPolicy::Fixed(fixed) = &o.host_header {
            if !is_host_name(fixed) {
                v.fail(
                    format!("{at}.host_header.fixed"),
                    format!("`{fixed}` is not a host name"),
                );
            }
        }
    }
    if let Some(d) = &pool.default_origin {
        if pool.origin(d).is_none() {
            v.fail(
                format!("{at}.default_origin"),
                format!("`{d}` is not an origin of this pool"),
            );
        }
    }
}

fn validate_prober(v: &mut Validator, p: &ProberConfig) {
    if let Some(region) = &p.region {
        v.name("prober.region", region);
    }
    if let Some(id) = &p.worker_id {
        v.name("prober.worker_id", id);
    }
    // Rounds are scheduled by tokio-cron-scheduler, whose repeated jobs
    // count whole seconds.
    if p.interval < Duration::from_secs(1) || p.interval.subsec_nanos() != 0 {
        v.fail(
            "prober.interval",
            "must be a whole number of seconds, at least 1s",
        );
    }
    if p.fast_interval.is_zero() || p.fast_interval >= p.interval {
        v.fail(
            "prober.fast_interval",
            "must be above 0 and below prober.interval",
        );
    }
    if let Some(cron) = &p.schedule {
        let fields = cron.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            v.fail(
                "prober.schedule",
                format!("`{cron}` is not a cron expression with seconds (6 fields, e.g. \"*/5 * * * * *\")"),
            );
        }
    }
    for (field, d) in [
        ("connect_timeout", p.connect_timeout),
        ("response_timeout", p.response_timeout),
    ] {
        if d.is_zero() || d > Duration::from_secs(60) {
            v.fail(format!("prober.{field}"), "must be above 0 and at most 60s");
        }
    }
    for (field, n) in [("rise", p.rise), ("fall", p.fall)] {
        if !(1..=100).contains(&n) {
            v.fail(format!("prober.{field}"), format!("{n} is not in 1..=100"));
        }
    }
    if !(1..=100_000).contains(&p.concurrency) {
        v.fail(
            "prober.concurrency",
            format!("{} is not in 1..=100000", p.concurrency),
        );
    }
    if p.jitter >= p.interval {
        v.fail("prober.jitter", "must be below prober.interval");
    }
    if !(1..=10_000).contains(&p.sample_retention) {
        v.fail("prober.sample_retention", "must be in 1..=10000");
    }
    if p.lease_ttl < Duration::from_secs(1) || p.lease_ttl <= p.interval {
        v.fail(
            "prober.lease_ttl",
            "must be at least 1s and above prober.interval",
        );
    }
}

fn validate_ranking(v: &mut Validator, r: &RankingConfig) {
    if r.window < Duration::from_secs(1) {
        v.fail("ranking.window", "must be at least 1s");
    }
    if r.half_life.is_zero() {
        v.fail("ranking.half_life", "must be above 0");
    }
    if !(r.switch_margin_relative.is_finite() && (0.0..1.0).contains(&r.switch_margin_relative)) {
        v.fail(
            "ranking.switch_margin_relative",
            format!("{} is not in [0, 1)", r.switch_margin_relative),
        );
    }
    if !(r.degraded_below.is_finite() && (0.0..=1.0).contains(&r.degraded_below)) {
        v.fail(
            "ranking.degraded_below",
            format!("{} is not in [0, 1]", r.degraded_below),
        );
    }
}

fn validate_edge(v: &mut Validator, e: &EdgeConfig) {
    if e.max_stale < e.cache_ttl {
        v.fail("edge.max_stale", "must be at least edge.cache_ttl");
    }
    for (field, d) in [
        ("table_timeout", e.table_timeout),
        ("race_attempt_timeout", e.race_attempt_timeout),
        ("race_watchdog", e.race_watchdog),
        ("ranking_max_age", e.ranking_max_age),
    ] {
        if d.is_zero() {
            v.fail(format!("edge.{field}"), "must be above 0");
        }
    }
    if e.race_watchdog > Duration::from_secs(25) {
        v.fail(
            "edge.race_watchdog",
            "must be at most 25s (origin-request functions time out at 30s)",
        );
    }
    for (region, order) in &e.proximity {
        v.name(&format!("edge.proximity.{region}"), region);
        for (i, r) in order.iter().enumerate() {
            v.name(&format!("edge.proximity.{region}[{i}]"), r);
        }
    }
}

/// Accumulates problems with their paths.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Names (pools, origin ids, regions, workers) become file names, Redis
    /// keys and metric labels, so they are kept to a safe alphabet.
    fn name(&mut self, path: &str, name: &str) {
        if !is_name(name) {
            self.fail(
                path,
                format!(
                    "`{name}` is not a valid name (1-64 of A-Z a-z 0-9 _ . -, not starting with .)"
                ),
            );
        }
    }

    fn finish(self, config: Config) -> Result<Config, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(self.problems)
        }
    }
}

/// Pool, origin, region and worker names: 1-64 of `[A-Za-z0-9_.-]`, not
/// starting with a dot (they become file names and Redis keys).
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn is_host_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [pools.web]
        origins = [
            { id = "a", host = "a.example.net" },
            { id = "b", host = "127.0.0.1", port = 8080, protocol = "http" },
        ]
    "#;

    fn err(text: &str) -> String {
        Config::from_toml(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(MINIMAL, "test.toml").unwrap();
        let web = &c.pools["web"];
        assert_eq!(web.default_origin_id(), "a");
        assert_eq!(web.origins[0].port(), 443);
        assert_eq!(web.origins[0].method, HealthMethod::Head);
        assert_eq!(
            web.origins[0].accept_status,
            StatusRange {
                low: 200,
                high: 399
            }
        );
        assert_eq!(web.origins[1].port(), 8080);
        assert_eq!(c.edge.race_attempt_timeout, Duration::from_millis(800));
        assert_eq!(c.edge.race_watchdog, Duration::from_millis(900));
        assert_eq!((c.prober.rise, c.prober.fall), (2, 3));
    }

    #[test]
    fn bad_port_names_file_path_and_problem() {
        let text = r#"
            [pools.web]
            origins = [
                { id = "a", host = "a.example.net" },
                { id = "b", host = "b.example.net" },
                { id = "c", host = "c.example.net", port = 70000 },
            ]
        "#;
        assert_eq!(
            err(text),
            "test.toml: pools.web.origins[2].port: 70000 is not a valid port"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let text = format!("{MINIMAL}\n[prober]\nintervall = \"1s\"\n");
        let e = err(&text);
        assert!(
            e.starts_with(
                "test.toml: prober.intervall: unknown field `intervall`, expected one of"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let text = MINIMAL.replace("port = 8080", "port = 8080, colour = \"red\"");
        let e = err(&text);
        assert!(
            e.contains("pools.web.origins[1]") && e.contains("`colour`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_syntax_are_reported() {
        let e = err(&MINIMAL.replace("port = 8080", "port = \"8080\""));
        assert!(e.contains("pools.web.origins[1].port"), "{e}");
        let e = err("[pools.web\n");
        assert!(e.starts_with("test.toml: "), "{e}");
        let e = err(&format!("{MINIMAL}\n[edge]\ncache_ttl = \"soon\"\n"));
        assert!(e.contains("edge.cache_ttl"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = r#"
            [routing]
            default_pool = "nope"
            [pools.web]
            default_origin = "z"
            origins = [
                { id = "a", host = "bad host", weight = 0.0 },
                { id = "a", host = "x.test", method = "HEAD", body_contains = "ok" },
            ]
            [prober]
            rise = 0
            jitter = "5s"
        "#;
        let e = err(text);
        for expected in [
            "routing.default_pool: `nope` is not a configured pool",
            "pools.web.default_origin: `z` is not an origin of this pool",
            "pools.web.origins[0].host",
            "pools.web.origins[0].weight",
            "pools.web.origins[1].id: `a` is used twice",
            "prober.rise: 0 is not in 1..=100",
            "pools.web.origins[1].body_contains: needs method = \"GET\"",
            "prober.jitter",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }
        // accept_status is a parse error, reported before validation.
        let e = err(&MINIMAL.replace("port = 8080", "port = 8080, accept_status = \"500-200\""));
        assert!(
            e.contains("accept_status") && e.contains("500 is above 200"),
            "{e}"
        );
    }

    #[test]
    fn effective_config_renders_and_reparses() {
        let c = Config::from_toml(MINIMAL, "test.toml").unwrap();
        let again = Config::from_toml(&c.to_toml(), "rendered").unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn routing_prefers_host_then_distribution_then_default() {
        let mut r = RoutingConfig {
            default_pool: Some("fallback".into()),
            ..Default::default()
        };
        r.hosts.insert("example.org".into(), "web".into());
        r.distributions.insert("E123".into(), "api".into());
        assert_eq!(
            r.pool_for(Some("Example.ORG:443"), Some("E123")),
            Some("web")
        );
        assert_eq!(r.pool_for(Some("other.org"), Some("E123")), Some("api"));
        assert_eq!(r.pool_for(None, None), Some("fallback"));
        r.default_pool = None;
        assert_eq!(r.pool_for(Some("other.org"), None), None);
    }
}
