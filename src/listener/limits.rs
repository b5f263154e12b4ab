//! Caps on open TCP connections, node-wide and per client address, counted at accept.
//!
//! A connection costs a file descriptor, kernel buffers and a task from the moment it is
//! accepted, whatever it later turns out to be (an API call, a WebSocket, nothing at all),
//! so it is counted there and not when a protocol admits it. The [`ConnectionPermit`]
//! travels inside the socket's IO: an upgraded WebSocket keeps its place until the socket
//! itself closes, and no code path can forget to give it back.
//!
//! Addresses are grouped as a client's provider hands them out: an IPv4 address is one
//! client, an IPv6 client usually owns a whole /64, so the /64 is the unit there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_tcp_connections` are open on this node.
    NodeLimit,
    /// The client's address holds `max_tcp_connections_per_ip` already.
    AddressLimit,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NodeLimit => "node_limit",
            Refusal::AddressLimit => "address_limit",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NodeLimit => "Too many connections to this node; try again later",
            Refusal::AddressLimit => "Too many connections from your address; try again later",
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The node's count of open connections and its two caps.
pub struct ConnectionLimits {
    max_total: Option<usize>,
    max_per_address: Option<usize>,
    open: Mutex<Open>,
    gauge: metrics::Gauge,
}

impl ConnectionLimits {
    /// `None` means no limit.
    pub fn new(max_total: Option<usize>, max_per_address: Option<usize>) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_address,
            open: Mutex::default(),
            gauge: metrics::gauge!("payrelay_tcp_connections"),
        })
    }

    pub fn max_total(&self) -> Option<usize> {
        self.max_total
    }

    pub fn max_per_address(&self) -> Option<usize> {
        self.max_per_address
    }

    /// Counts a connection from `peer`, or says which cap it would break.
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let address = address_key(peer);
        let mut open = self.open.lock();
        if self.max_total.is_some_and(|max| open.total >= max) {
            return Err(Refusal::NodeLimit);
        }
        let from_address = open.by_address.get(&address).copied().unwrap_or(0);
        if self.max_per_address.is_some_and(|max| from_address >= max) {
            return Err(Refusal::AddressLimit);
        }
        open.total += 1;
        open.by_address.insert(address, from_address + 1);
        drop(open);
        self.gauge.increment(1.0);
        Ok(ConnectionPermit {
            limits: self.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }

    fn release(&self, address: IpAddr) {
        let mut open = self.open.lock();
        open.total = open.total.saturating_sub(1);
        // Addresses with nothing open leave the map, so it holds only live clients.
        if let Some(count) = open.by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&address);
            }
        }
        drop(open);
        self.gauge.decrement(1.0);
    }
}

/// One counted connection; dropping it gives the place back.
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.release(self.address);
    }
}

/// The unit a per-address cap counts: an IPv4 address (also when it arrives IPv4-mapped
/// on a dual-stack socket) or an IPv6 /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The node-wide cap when none is configured: the process's open-file limit minus a
/// reserve for what else the node opens (database, Redis, logs, the listener, refusals in
/// progress). Staying under the limit means `accept` never fails for want of a file.
/// `None` when the limit cannot be read (not Linux) or is unlimited.
pub fn cap_from_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    cap_for_file_limit(soft_open_files(&limits)?)
}

fn cap_for_file_limit(files: u64) -> Option<usize> {
    let reserve = (files / 4).min(256);
    usize::try_from(files - reserve).ok()
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_count_and_release() {
        let limits = ConnectionLimits::new(Some(3), Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.try_acquire(a).unwrap();
        let _second = limits.try_acquire(a).unwrap();
        assert_eq!(limits.try_acquire(a).err(), Some(Refusal::AddressLimit));
        let _third = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).err(), Some(Refusal::NodeLimit));
        drop(first);
        assert_eq!(limits.open(), 2);
        let _again = limits.try_acquire(a).unwrap();
        assert!(limits.open.lock().by_address.len() == 2);
    }

    #[test]
    fn the_default_cap_leaves_a_reserve_under_the_file_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 4096                 files\n";
        assert_eq!(soft_open_files(text), Some(1024));
        assert_eq!(cap_for_file_limit(1024), Some(768));
        assert_eq!(cap_for_file_limit(256), Some(192));
        assert_eq!(cap_for_file_limit(20_000), Some(19_744));
        assert_eq!(
            soft_open_files("Max open files unlimited unlimited files"),
            None
        );
    }
}
