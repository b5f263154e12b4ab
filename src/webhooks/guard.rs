//! The SSRF guard: a merchant chooses the URL, so the node must never be made to call its
//! own network.
//!
//! The host is resolved once per connection, by the HTTP client's own resolver
//! ([`GuardedResolver`]), which refuses loopback, private, link-local, multicast and
//! unspecified addresses (and their IPv4-mapped forms) and hands the client only the
//! addresses it checked: there is no second lookup for a DNS-rebinding server to answer
//! differently. Hosts written as IP literals never reach a resolver, so [`check_ip`] is
//! applied to them before each attempt. Redirects are off, so no other host is reached
//! either. `allow_private_targets = true` turns the address check off (tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused, as the attempt log shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {host} resolves to {what} address {ip} (allow_private_targets is off)")]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub what: &'static str,
}

/// What kind of non-public address `ip` is, if it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            // ::ffff:127.0.0.1 and ::127.0.0.1 reach the IPv4 host.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            non_public_v6(v6)
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // 100.64.0.0/10 is carrier-grade NAT: private in practice.
        Some("a private")
    } else if ip.is_link_local() {
        Some("a link-local")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("a private")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("a link-local")
    } else if ip.is_multicast() {
        Some("a multicast or reserved")
    } else if let Some(v4) = ip.to_ipv4() {
        // The deprecated IPv4-compatible form (::a.b.c.d).
        non_public_v4(v4)
    } else {
        None
    }
}

/// Refuses `ip` for `host` unless private targets are allowed.
pub fn check_ip(host: &str, ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    match non_public(ip) {
        Some(what) if !allow_private => Err(Refused {
            host: host.to_string(),
            ip,
            what,
        }),
        _ => Ok(()),
    }
}

/// The webhook client's resolver: the system's lookup, then the address check.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            // Every address must pass: the client may try any of them.
            for addr in &found {
                check_ip(&host, addr.ip(), allow_private)?;
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// The guard's refusal inside a client error, if that is what failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(non_public(ip).is_some(), "{ip} must be refused");
            assert!(check_ip("h", ip, false).is_err());
            assert!(check_ip("h", ip, true).is_ok());
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(ip), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_points_inside() {
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().unwrap();
        let err = resolver.resolve(name).await.err().expect("refused");
        let refused = refusal_in(err.as_ref()).expect("a Refused error");
        assert_eq!(refused.host, "localhost");
        let allowed = GuardedResolver {
            allow_private: true,
        };
        let addrs: Vec<_> = allowed
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
