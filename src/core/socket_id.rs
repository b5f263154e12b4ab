//! Socket ids: the `"123.456"` strings Pusher clients and server libraries pass around.
//!
//! A socket id is a random 64-bit number shown as two decimal halves, so it matches the
//! `^\d+\.\d+$` that server libraries check, compares as an integer on the fan-out path
//! (for `socket_id` exclusion) and stays unique across nodes without coordination.
//!
//! Ids arriving from clients and backends are another matter: a Pusher client may hold an
//! id some other server handed out (Pusher's own, or the README's `957523923.7566984777`,
//! whose halves do not fit 32 bits), and an auth endpoint signs whatever `digits.digits` it
//! is given, as Pusher's server libraries do. [`SocketId::from_client`] accepts all of
//! those, within a length limit, and tells which of them could be one of ours.

use std::fmt;

/// Digits in one half of a socket id accepted from outside: a 64-bit number's worth, far
/// beyond any id a Pusher server hands out, and short enough to bound what is signed,
/// logged or echoed back.
pub const MAX_HALF_DIGITS: usize = 20;

/// Why a socket id from a client or an API call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected digits.digits, at most {MAX_HALF_DIGITS} digits on each side")]
pub struct InvalidSocketId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

impl SocketId {
    pub fn random() -> Self {
        SocketId(rand::random())
    }

    /// The id as one number, as it travels between nodes.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(id: u64) -> Self {
        SocketId(id)
    }

    /// Parses an id exactly as this server shows them (`"<u32>.<u32>"`, no leading
    /// zeros); anything else is not a socket id this server handed out.
    pub fn parse(s: &str) -> Option<Self> {
        let (hi, lo) = s.split_once('.')?;
        let half = |p: &str| -> Option<u32> {
            let canonical = p == "0" || !p.starts_with('0');
            let digits = !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit());
            if canonical && digits {
                p.parse().ok()
            } else {
                None
            }
        };
        let (hi, lo) = (half(hi)?, half(lo)?);
        Some(SocketId((u64::from(hi) << 32) | u64::from(lo)))
    }

    /// Checks a socket id a client or a backend sent: any `digits.digits` (each half at
    /// most [`MAX_HALF_DIGITS`]) is accepted. `Ok(Some)` when it is one this server could
    /// have handed out, `Ok(None)` when it is well-formed but names no socket here.
    pub fn from_client(s: &str) -> Result<Option<Self>, InvalidSocketId> {
        let (hi, lo) = s.split_once('.').ok_or(InvalidSocketId)?;
        let half_ok = |p: &str| {
            (1..=MAX_HALF_DIGITS).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
        };
        if !half_ok(hi) || !half_ok(lo) {
            return Err(InvalidSocketId);
        }
        Ok(Self::parse(s))
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
            "01.2",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn clients_may_send_any_digits_dot_digits() {
        let ours = SocketId::random();
        assert_eq!(SocketId::from_client(&ours.to_string()), Ok(Some(ours)));
        for foreign in [
            "957523923.7566984777",
            "4294967296.1",
            "01.2",
            "18446744073709551615.99999999999999999999",
        ] {
            assert_eq!(SocketId::from_client(foreign), Ok(None), "{foreign}");
        }
        let long = format!("1.{}", "1".repeat(MAX_HALF_DIGITS + 1));
        for bad in [
            "", "1", "1.", ".1", "1.2.3", "a.1", "+1.2", "1 .2", "١.٢", &long,
        ] {
            assert_eq!(SocketId::from_client(bad), Err(InvalidSocketId), "{bad}");
        }
    }
}
