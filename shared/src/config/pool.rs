//! Pools and their origins: what can be chosen, and how each is probed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cloudfront::CloudFrontOriginConfig;
use super::steering::{OutlierConfig, SteeringConfig};
use super::validate::{is_host_name, Validator};

/// Most origins one pool may hold (and one ranking document may rank).
pub const MAX_ORIGINS: usize = 64;

/// Largest score a ranking document accepts, ms. The ranking document
/// validates with this constant and [`MAX_LATENCY_MS`], so the weight range
/// below and the document's limits cannot drift apart.
pub const MAX_SCORE_MS: f64 = 1e9;
/// Largest latency a ranking document accepts, ms (an hour: anything above
/// is not a measurement).
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;
/// Smallest origin weight. A score is latency / weight, so any latency a
/// document accepts keeps its score within [`MAX_SCORE_MS`] for every
/// weight in [`MIN_WEIGHT`, `MAX_WEIGHT`] (checked at compile time below).
pub const MIN_WEIGHT: f64 = 0.01;
/// Largest origin weight.
pub const MAX_WEIGHT: f64 = 1000.0;
const _: () = assert!(MAX_LATENCY_MS / MIN_WEIGHT <= MAX_SCORE_MS);

/// [`is_cloudfront_port`]'s rule, as messages state it.
pub(crate) const CLOUDFRONT_PORTS: &str =
    "custom origins: HTTP 80, 443 or 1024-65535; HTTPS 443 or 1024-65535";

/// Longest `health_path`, bytes.
pub const MAX_HEALTH_PATH: usize = 1024;
/// Largest `ca_file`, bytes (1 MiB).
pub const MAX_CA_FILE: u64 = 1024 * 1024;

/// CloudFront's rule for custom origin ports (CloudFront Developer Guide,
/// "Values that you specify when you create or update a distribution",
/// origin settings, HTTP port and HTTPS port): HTTP 80, 443 or
/// 1024-65535; HTTPS 443 or 1024-65535.
pub fn is_cloudfront_port(protocol: Protocol, port: u16) -> bool {
    port >= 1024 || port == 443 || (protocol == Protocol::Http && port == 80)
}

/// A named set of origins that serve the same content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The origin chosen when nothing better is known (watchdog, all down).
    /// Default: the first origin listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_origin: Option<String>,
    /// The origins, in the order used for ties. At least one.
    pub origins: Vec<OriginConfig>,
    /// How the edge spreads requests over the origins: `fastest` (default)
    /// or a latency `band`.
    #[serde(default)]
    pub steering: SteeringConfig,
    /// When the edge stops choosing an origin that answers 5xx.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// How CloudFront reaches the chosen origin: connection timeout floor,
    /// read timeout, origin-group failover codes.
    #[serde(default)]
    pub cloudfront: CloudFrontOriginConfig,
}

impl PoolConfig {
    /// The default origin's id (valid after [`super::Config::validate`]).
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
    /// [`super::Config::validate`] accepts IP addresses (local tests and the
    /// offline demo use loopback origins); CloudFront accepts only a DNS
    /// name of at most 253 characters as a custom origin, which
    /// [`super::Config::check_for_cloudfront`] enforces for the edge
    /// package.
    pub host: String,
    /// TCP port. Default: 443 for https, 80 for http. Only ports CloudFront
    /// connects to a custom origin on are accepted: HTTP 80, 443 or
    /// 1024-65535; HTTPS 443 or 1024-65535.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_port"
    )]
    pub port: Option<u16>,
    /// `http` or `https`. Default: `https`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Path probed for health. Default: `/`. An HTTP request target
    /// (path and optional query) starting with `/`, at most 1024 bytes, with
    /// no whitespace, control characters or `#` fragment.
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
    /// 2.0 makes an origin look twice as fast. Default: 1.0; range
    /// [0.01, 1000], so no latency a ranking document accepts (up to an
    /// hour) gives a score above its limit (1e9 ms).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// TLS server name (SNI and certificate check). Default: `host`. A DNS
    /// host name or an IP address, as rustls accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Extra PEM CA certificates trusted for this origin (private CAs,
    /// test origins). Default: only the bundled web PKI roots. A readable
    /// file of at most 1 MiB holding at least one PEM certificate, every
    /// one of which parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The largest share of a band's requests this origin gets, in (0, 1];
    /// its weight's share is capped there and the rest spread over the
    /// others by weight. Default: no cap. Only `band` steering uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
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
            port: Some(port),
            protocol: Protocol::Http,
            health_path: default_health_path(),
            method: HealthMethod::Head,
            accept_status: StatusRange::default(),
            body_contains: None,
            host_header: HostHeaderPolicy::Origin,
            weight: 1.0,
            tls_server_name: None,
            ca_file: None,
            max_share: None,
        }
    }

    /// The effective port: the configured one, else the protocol's.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.protocol.default_port())
    }

    /// The TLS server name.
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }

    /// The Host header a viewer's request carries to this origin under its
    /// policy, `None` for `viewer` (the viewer's own is kept). The edge
    /// sets it and probes send it, so an origin is measured answering the
    /// requests it will get.
    pub fn host_header(&self) -> Option<String> {
        match &self.host_header {
            HostHeaderPolicy::Origin => Some(self.host_with_port()),
            HostHeaderPolicy::Fixed(fixed) => Some(fixed.clone()),
            HostHeaderPolicy::Viewer => None,
        }
    }

    /// The Host header a probe sends: [`Self::host_header`], or for the
    /// `viewer` policy (no viewer here) the origin's own.
    pub fn probe_host_header(&self) -> String {
        self.host_header().unwrap_or_else(|| self.host_with_port())
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

impl PoolConfig {
    pub(crate) fn validate(&self, v: &mut Validator, at: &str) {
        let pool = self;
        if pool.origins.is_empty() {
            v.fail(format!("{at}.origins"), "at least one origin is required");
        }
        if pool.origins.len() > MAX_ORIGINS {
            v.fail(
                format!("{at}.origins"),
                format!("at most {} origins per pool", MAX_ORIGINS),
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
            if let Some(problem) = health_path_problem(&o.health_path) {
                v.fail(
                    format!("{at}.health_path"),
                    format!("`{}` {problem}", clip(&o.health_path)),
                );
            }
            if let Some(port) = o.port {
                if !is_cloudfront_port(o.protocol, port) {
                    v.fail(
                        format!("{at}.port"),
                        format!("{port} is not a port CloudFront connects to ({CLOUDFRONT_PORTS})"),
                    );
                }
            }
            if o.body_contains.is_some() && o.method != HealthMethod::Get {
                v.fail(
                    format!("{at}.body_contains"),
                    "needs method = \"GET\" (HEAD has no body)",
                );
            }
            if !(o.weight.is_finite() && (MIN_WEIGHT..=MAX_WEIGHT).contains(&o.weight)) {
                v.fail(
                    format!("{at}.weight"),
                    format!(
                        "{} is not in [{MIN_WEIGHT}, {MAX_WEIGHT}] (score = latency / weight must stay within the ranking's {MAX_SCORE_MS} ms for latencies up to {MAX_LATENCY_MS} ms)",
                        o.weight
                    ),
                );
            }
            if o.protocol == Protocol::Http && (o.ca_file.is_some() || o.tls_server_name.is_some())
            {
                v.fail(
                    at.clone(),
                    "ca_file and tls_server_name need protocol = \"https\"",
                );
            }
            if let Some(name) = &o.tls_server_name {
                if !is_server_name(name) {
                    v.fail(
                        format!("{at}.tls_server_name"),
                        format!(
                            "`{}` is not a TLS server name (a DNS host name or an IP address)",
                            clip(name)
                        ),
                    );
                }
            }
            if let Some(path) = &o.ca_file {
                if let Err(problem) = check_ca_file(path) {
                    v.fail(
                        format!("{at}.ca_file"),
                        format!("{}: {problem}", path.display()),
                    );
                }
            }
            if let Some(share) = o.max_share {
                if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                    v.fail(
                        format!("{at}.max_share"),
                        format!("{share} is not in (0, 1] (a fraction of the band's requests)"),
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
        pool.steering.validate(v, &format!("{at}.steering"));
        pool.outlier.validate(v, &format!("{at}.outlier"));
        pool.cloudfront.validate(v, &format!("{at}.cloudfront"));
        if let Some(d) = &pool.default_origin {
            if pool.origin(d).is_none() {
                v.fail(
                    format!("{at}.default_origin"),
                    format!("`{d}` is not an origin of this pool"),
                );
            }
        }
    }
}

/// Why `path` is not a usable health-check request target, if it is not.
fn health_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must start with /".into());
    }
    if path.len() > MAX_HEALTH_PATH {
        return Some(format!("is {} bytes, above {MAX_HEALTH_PATH}", path.len()));
    }
    if path.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    if path.chars().any(char::is_whitespace) {
        return Some("contains whitespace".into());
    }
    if path.contains('#') {
        return Some("contains a # fragment, which is never sent to a server".into());
    }
    if let Err(e) = path.parse::<http::uri::PathAndQuery>() {
        return Some(format!("is not an HTTP request target: {e}"));
    }
    None
}

/// A TLS server name rustls accepts: a DNS host name or an IP address.
fn is_server_name(name: &str) -> bool {
    match rustls::pki_types::ServerName::try_from(name) {
        Ok(rustls::pki_types::ServerName::IpAddress(_)) => true,
        Ok(_) => is_host_name(name),
        Err(_) => false,
    }
}

/// Reads a CA file the way the probe engine will: every PEM certificate in
/// it must parse as a trust anchor, and there must be at least one.
fn check_ca_file(path: &Path) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking (a FIFO would hang the check) and read at
    // most one byte past the limit (/dev/zero reports a size of 0).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("cannot read: {e}"))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(format!(
            "is {} bytes, above the 1 MiB limit",
            std::fs::metadata(path).map_or(pem.len() as u64, |m| m.len())
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for (i, cert) in rustls_pemfile::certs(&mut pem.as_slice()).enumerate() {
        let cert = cert.map_err(|e| format!("is not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

/// At most 64 characters of `s` with control characters escaped, for
/// messages.
fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

/// Ports are read as any integer so that an out-of-range one is reported as
/// such (`70000 is not a valid port`) rather than as a type error.
fn deserialize_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let port = i64::deserialize(deserializer)?;
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(Some(p)),
        _ => Err(serde::de::Error::custom(format!(
            "{port} is not a valid port"
        ))),
    }
}
