//! The id every publication gets at the one publish path: `evt_` and a UUIDv7 in hex.
//!
//! Unique across the cluster without coordination (74 random bits beside the
//! millisecond timestamp) and sortable by time as text, so a receiver, the delivery log
//! and an operator reading rows all order events the same way. The same id is a
//! webhook's `webhook-id` (receivers de-duplicate by it) and will travel on every wire.

use std::fmt;

use uuid::Uuid;

/// Text before the hex digits, so an id is recognisable wherever it is pasted.
pub const EVENT_ID_PREFIX: &str = "evt_";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh id, later than every id this process made before (uuid keeps a counter
    /// within one millisecond).
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Reads `evt_<32 hex digits>` as [`Display`](fmt::Display) writes it.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(EVENT_ID_PREFIX)?;
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let uuid = Uuid::try_parse(hex).ok()?;
        (uuid.get_version_num() == 7).then_some(EventId(uuid))
    }

    /// When the id was made, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        let (secs, nanos) = self.0.get_timestamp().map_or((0, 0), |t| t.to_unix());
        secs * 1000 + u64::from(nanos) / 1_000_000
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{EVENT_ID_PREFIX}{}", self.0.simple())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_as_text() {
        let ids: Vec<String> = (0..1000).map(|_| EventId::new().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn text_round_trips_and_junk_is_refused() {
        let id = EventId::new();
        let text = id.to_string();
        assert!(text.starts_with("evt_") && text.len() == 36, "{text}");
        assert_eq!(EventId::parse(&text), Some(id));
        for bad in [
            "",
            "evt_",
            "evt_xyz",
            &text[4..],
            &text.to_uppercase(),
            "evt_00000000000000000000000000000000",
            &format!("{text}0"),
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_id_carries_its_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let at = EventId::new().unix_ms();
        assert!(at >= before && at < before + 5_000, "{at} vs {before}");
    }
}
