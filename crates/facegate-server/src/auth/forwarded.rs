//! Who the caller is, for the auth failure limit: the socket's address, or, for a request that
//! came through a trusted reverse proxy, the client address the proxy forwarded.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.5`, `::1`) or CIDR blocks (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("trusted_proxies: '{e}' is neither an address nor a CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address the limit counts a request against: `peer` itself unless `peer` is a trusted
    /// proxy, in which case the nearest untrusted hop of `X-Forwarded-For` (read right to left,
    /// since a proxy appends the address it saw and a client can forge only what is to the left
    /// of it), or of `Forwarded` when there is no `X-Forwarded-For`. IPv6 clients count by /64,
    /// the block one subscriber usually holds.
    pub fn client_key(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return limit_key(peer);
        }
        let hops = forwarded_for(headers);
        // Nearest first; stop at the first hop that is not one of ours.
        let client = hops.iter().rev().copied().find(|hop| !self.trusts(*hop)).or_else(|| hops.first().copied());
        limit_key(client.unwrap_or(peer))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so that a dual-stack socket matches IPv4 entries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv4 as is; IPv6 cut to its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The forwarded client chain, farthest first. `None` entries (unparseable, `unknown`,
/// obfuscated identifiers) end the chain there: what is left of them cannot be trusted.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let entries: Vec<Option<IpAddr>> = if !xff.is_empty() {
        xff.iter().flat_map(|v| v.split(',')).map(|e| parse_hop(e.trim())).collect()
    } else {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then(|| parse_hop(value.trim().trim_matches('"')))
                })
            })
            .collect()
    };
    // Keep only the part nearest to us that parses throughout.
    let trusted_tail = entries.iter().rev().take_while(|e| e.is_some()).count();
    entries[entries.len() - trusted_tail..].iter().flatten().copied().collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.rsplit_once(':').and_then(|(ip, port)| port.parse::<u16>().ok().and(ip.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).expect("parse");
        let forged = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(proxies.client_key(ip("203.0.113.9"), &forged), ip("203.0.113.9"), "untrusted peer");
        assert_eq!(proxies.client_key(ip("10.1.2.3"), &forged), ip("198.51.100.7"));
        assert_eq!(proxies.client_key(ip("::1"), &forged), ip("198.51.100.7"));
        assert_eq!(proxies.client_key(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"), "nothing forwarded");
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).expect("parse");
        // The client forged the first entry; our proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(proxies.client_key(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let split = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "198.51.100.8")]);
        assert_eq!(proxies.client_key(ip("10.0.0.1"), &split), ip("198.51.100.8"));
        let garbage_near = headers(&[("x-forwarded-for", "198.51.100.7, nonsense")]);
        assert_eq!(proxies.client_key(ip("10.0.0.1"), &garbage_near), ip("10.0.0.1"), "unparseable: the proxy itself");
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).expect("parse");
        let h = headers(&[("forwarded", r#"for=192.0.2.43;proto=https, for="[2001:db8:cafe::17]:4711""#)]);
        assert_eq!(proxies.client_key(ip("127.0.0.1"), &h), ip("2001:db8:cafe::"));
        let v4port = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(proxies.client_key(ip("127.0.0.1"), &v4port), ip("192.0.2.60"));
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }
}
