//! The client's address, as far as it can be trusted.
//!
//! Behind a reverse proxy or load balancer every request comes from the proxy, so
//! per-address limits (failed authentications) would count all clients as one. The
//! proxy says who the client was in `X-Forwarded-For` or `Forwarded` (RFC 7239), but a
//! client can write those headers too. So they are read only when the TCP peer is one of
//! the configured `trusted_proxies`, and only the one header the operator names (the one
//! their proxy appends to; any other may be the client's own). The list is walked from
//! the right, past every hop that is itself a trusted proxy: the first address that is not
//! is the client. A hop that is not an address (`unknown`, an obfuscated `_id`) stops the
//! walk at the last proxy that vouched for it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// Which header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// Finds a request's client address; built from `trusted_proxies` and
/// `trusted_proxy_header`.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

/// A `trusted_proxies` entry: a network (`10.0.0.0/8`) or one address (`10.1.2.3`).
pub fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    if entry.contains('/') {
        entry
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| format!("`{entry}` is not a network such as 10.0.0.0/8 or fd00::/8"))
    } else {
        entry
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{entry}` is not an IP address or a network"))
    }
}

impl ClientAddr {
    pub fn new(trusted: Vec<IpNet>, header: ForwardedHeader) -> Self {
        ClientAddr { trusted, header }
    }

    /// From `trusted_proxies` and `trusted_proxy_header` (validated with the config).
    pub fn from_config(config: &crate::config::Config) -> Self {
        let trusted = config
            .trusted_proxies
            .iter()
            .filter_map(|entry| parse_proxy(entry).ok())
            .collect();
        ClientAddr::new(trusted, config.trusted_proxy_header)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`'s own, unless `peer` is a trusted proxy that says
    /// who it forwarded for.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        // Several header lines form one list, in order.
        let hops: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let address = match self.header {
                ForwardedHeader::XForwardedFor => parse_node(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_node),
            };
            let Some(address) = address else {
                break;
            };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

/// An address as proxies write one: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, optionally quoted.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    // `[2001:db8::1]` without a port.
    let bracketed = node.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name, value.parse().unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn resolver(header: ForwardedHeader) -> ClientAddr {
        let trusted = ["10.0.0.0/8", "192.0.2.10", "fd00::/8"]
            .iter()
            .map(|e| parse_proxy(e).unwrap())
            .collect();
        ClientAddr::new(trusted, header)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let xff = resolver(ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.7"]);
        assert_eq!(xff.client_ip(peer("10.1.1.1"), &h), ip("203.0.113.7"));
        assert_eq!(
            xff.client_ip(peer("198.51.100.1"), &h),
            ip("198.51.100.1"),
            "spoofed"
        );
        assert_eq!(
            ClientAddr::default().client_ip(peer("10.1.1.1"), &h),
            ip("10.1.1.1"),
            "no trusted proxies: headers are ignored"
        );
        assert_eq!(
            xff.client_ip(peer("10.1.1.1"), &HeaderMap::new()),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn the_walk_goes_right_to_left_past_trusted_hops_only() {
        let xff = resolver(ForwardedHeader::XForwardedFor);
        // The client wrote a fake first entry; the proxies appended the real hops.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.7", "10.2.2.2"]);
        assert_eq!(xff.client_ip(peer("10.1.1.1"), &h), ip("203.0.113.7"));
        // All hops trusted: the leftmost is the client.
        let h = headers("x-forwarded-for", &["10.9.9.9, 192.0.2.10"]);
        assert_eq!(xff.client_ip(peer("10.1.1.1"), &h), ip("10.9.9.9"));
        // Garbage stops the walk at the last proxy that vouched for it.
        let h = headers("x-forwarded-for", &["203.0.113.7, nonsense, 10.2.2.2"]);
        assert_eq!(xff.client_ip(peer("10.1.1.1"), &h), ip("10.2.2.2"));
        // Ports and IPv6 forms.
        let h = headers("x-forwarded-for", &["[2001:db8::7]:4711"]);
        assert_eq!(xff.client_ip(peer("fd00::1"), &h), ip("2001:db8::7"));
        let h = headers("x-forwarded-for", &["203.0.113.7:5555"]);
        assert_eq!(
            xff.client_ip(peer("::ffff:10.1.1.1"), &h),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let fwd = resolver(ForwardedHeader::Forwarded);
        let mut h = headers(
            "forwarded",
            &[r#"for="[2001:db8::7]:4711";proto=https, For=10.3.3.3;by=10.1.1.1"#],
        );
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        assert_eq!(fwd.client_ip(peer("10.1.1.1"), &h), ip("2001:db8::7"));
        let h = headers("forwarded", &["for=unknown, for=10.3.3.3"]);
        assert_eq!(fwd.client_ip(peer("10.1.1.1"), &h), ip("10.3.3.3"));
        let xff = resolver(ForwardedHeader::XForwardedFor);
        let h = headers("forwarded", &["for=203.0.113.7"]);
        assert_eq!(xff.client_ip(peer("10.1.1.1"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn proxy_entries_are_networks_or_addresses() {
        assert_eq!(parse_proxy("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_proxy("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_proxy("::1").unwrap().to_string(), "::1/128");
        assert!(parse_proxy("10.0.0.0/33").is_err());
        assert!(parse_proxy("proxy.local").is_err());
    }
}
