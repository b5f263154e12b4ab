//! Socket ids: the `"123.456"` strings Pusher clients and server libraries pass around.
//!
//! A socket id is a random 64-bit number shown as two decimal halves, so it matches the
//! `^\d+\.\d+$` that server libraries check, compares as an integer on the fan-out path
//! (for `socket_id` exclusion) and stays unique across nodes without coordination.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    pub fn random() -> Self {
        SocketId(rand::random())
    }

    /// Parses `"<u32>.<u32>"`; anything else is not a socket id this server handed out.
    pub fn parse(s: &str) -> Option<Self> {
        let (hi, lo) = s.split_once('.')?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(hi) || !digits(lo) {
            return None;
        }
        let hi: u32 = hi.parse().ok()?;
        let lo: u32 = lo.parse().ok()?;
        Some(SocketId((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_pusher_pattern() {
        for _ in 0..100 {
            let id = SocketId::random();
            let shown = id.to_string();
            let (a, b) = shown.split_once('.').unwrap();
            assert!(a.bytes().all(|c| c.is_ascii_digit()) && !a.is_empty());
            assert!(b.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty());
            assert_eq!(SocketId::parse(&shown), Some(id));
        }
        assert_eq!(
            SocketId::parse("1234.1234").unwrap().to_string(),
            "1234.1234"
        );
    }

    #[test]
    fn rejects_what_is_not_a_socket_id() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "a.b",
            "-1.2",
            "1 .2",
            "99999999999.1",
            "4294967296.1",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
    }
}
