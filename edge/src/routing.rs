//! Request → pool: by the viewer's Host header first (lower case, port
//! stripped), then by CloudFront distribution id, then the default pool.
//! A request that maps to no pool passes through unchanged.

use origin_router::config::RoutingConfig;

/// The pool for a request, if any.
pub fn pool_for<'c>(
    routing: &'c RoutingConfig,
    host: Option<&str>,
    distribution_id: Option<&str>,
) -> Option<&'c str> {
    if let Some(host) = host {
        let host = host.trim().to_ascii_lowercase();
        if let Some(pool) = routing.hosts.get(strip_port(&host)) {
            return Some(pool);
        }
    }
    if let Some(pool) = distribution_id.and_then(|d| routing.distributions.get(d)) {
        return Some(pool);
    }
    routing.default_pool.as_deref()
}

/// `example.org:443` → `example.org`; `[::1]:8080` → `::1`; a bare IPv6
/// address keeps its colons.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_prefers_host_then_distribution_then_default() {
        let mut r = RoutingConfig {
            default_pool: Some("fallback".into()),
            ..Default::default()
        };
        r.hosts.insert("example.org".into(), "web".into());
        r.distributions.insert("E123".into(), "api".into());
        assert_eq!(
            pool_for(&r, Some("Example.ORG:443"), Some("E123")),
            Some("web")
        );
        assert_eq!(pool_for(&r, Some("other.org"), Some("E123")), Some("api"));
        assert_eq!(pool_for(&r, None, None), Some("fallback"));
        r.default_pool = None;
        assert_eq!(pool_for(&r, Some("other.org"), None), None);
    }

    #[test]
    fn ports_are_stripped_from_names_and_bracketed_addresses() {
        assert_eq!(strip_port("example.org:8080"), "example.org");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("example.org"), "example.org");
    }
}
