//! Name resolution for probes and races, behind a trait so the DNS phase can
//! be timed on its own and tests can resolve names hermetically.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;

/// Resolves a host name to socket addresses.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo`, so `/etc/hosts` and the
/// system's DNS configuration apply). It does not cache, so every probe
/// times a real lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A fixed table of names, consulted before an optional fallback resolver.
/// With no fallback, unknown names fail like a name that does not exist,
/// which makes DNS failures testable without any network.
#[derive(Clone, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
    fallback: Option<Arc<dyn Resolver>>,
}

impl StaticResolver {
    /// A table with no fallback.
    pub fn new<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = (S, IpAddr)>,
        S: Into<String>,
    {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in entries {
            names
                .entry(name.into().to_ascii_lowercase())
                .or_default()
                .push(ip);
        }
        StaticResolver {
            names,
            fallback: None,
        }
    }

    /// Names not in the table go to `fallback`.
    pub fn with_fallback(mut self, fallback: Arc<dyn Resolver>) -> Self {
        self.fallback = Some(fallback);
        self
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Some(ips) = self.names.get(&host.to_ascii_lowercase()) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        match &self.fallback {
            Some(fallback) => fallback.resolve(host, port).await,
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: name does not resolve"),
            )),
        }
    }
}

/// The resolver a configuration's `[resolve]` table asks for: those names
/// first, then the system resolver.
pub fn with_overrides(names: &BTreeMap<String, IpAddr>) -> Arc<dyn Resolver> {
    if names.is_empty() {
        Arc::new(SystemResolver)
    } else {
        Arc::new(
            StaticResolver::new(names.iter().map(|(k, v)| (k.clone(), *v)))
                .with_fallback(Arc::new(SystemResolver)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_names_resolve_and_unknown_names_fail_without_network() {
        let r = StaticResolver::new([("Origin-A.test", "127.0.0.2".parse().unwrap())]);
        let addrs = r.resolve("origin-a.test", 8080).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.2:8080".parse().unwrap()]);
        let err = r.resolve("missing.invalid", 80).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn system_resolver_reads_the_hosts_file() {
        let addrs = SystemResolver.resolve("localhost", 80).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
