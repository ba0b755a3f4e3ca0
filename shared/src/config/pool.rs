//! Pools and their origins: what can be chosen, and how each is probed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::{is_host_name, Validator};

/// Most origins one pool may hold (and one ranking document may rank).
pub const MAX_ORIGINS: usize = 64;

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
    pub host: String,
    /// TCP port, 1 to 65535. Default: 443 for https, 80 for http.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_port"
    )]
    pub port: Option<u16>,
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
            if o.protocol == Protocol::Http && (o.ca_file.is_some() || o.tls_server_name.is_some())
            {
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
