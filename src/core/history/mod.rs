//! Channel history: where each publication stands in its channel's stream, and what a
//! client that went away missed.
//!
//! The design is Centrifugo's: every channel of an app with history on is a stream; each
//! publication kept in it gets the next **offset** (1, 2, 3, …) and the stream has an
//! **epoch**, a short random text that changes whenever the stream's history is lost (the
//! node restarted, the Redis keys were evicted or flushed). A [`StreamPosition`] is the
//! pair, shown on every wire as the opaque `"<offset>.<epoch>"`. A client that remembers
//! the position of the last event it saw asks for what followed it: either the stream
//! still holds every event after that offset in that epoch, and it gets them in order
//! ([`Recovered::Publications`]), or it cannot be vouched for ([`Recovered::Gone`]: other
//! epoch, or older than what is retained) and the client is told so explicitly, never
//! given a silent gap.
//!
//! Each app keeps the last `size` events of a channel for `ttl_secs` (`[apps.history]`,
//! 100 and 120 s by default). [`History`] is the seam; [`EmbeddedHistory`] keeps streams in
//! the node's memory (a restart changes every epoch); with `redis_url` a Redis
//! implementation keeps them where every node sees them.
//!
//! The publish path ([`Core::publish`](super::Core::publish)) is the only writer:
//! id → journal → [`History::append`] (the position) → broker. What [`History::append`]
//! returns holds the stream's order until the broker has delivered, so on one node
//! subscribers see a channel's events in offset order; a client that remembers the last
//! position it saw has seen everything before it.

mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use memory::EmbeddedHistory;

use super::{App, Publication};

/// Longest epoch accepted in a position a client sends.
pub const MAX_EPOCH_LEN: usize = 32;

/// Where a publication stands in its channel's stream: `"<offset>.<epoch>"` on the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// 1 for a stream's first publication; 0 is "before the first" (a stream with nothing
    /// published yet).
    pub offset: u64,
    /// Changes whenever the stream's history is lost.
    pub epoch: Arc<str>,
}

impl StreamPosition {
    pub fn new(offset: u64, epoch: Arc<str>) -> Self {
        StreamPosition { offset, epoch }
    }

    /// Reads `"<offset>.<epoch>"` as [`Display`](fmt::Display) writes it: a decimal
    /// offset, a dot, 1 to [`MAX_EPOCH_LEN`] ASCII letters or digits.
    pub fn parse(text: &str) -> Option<Self> {
        let (offset, epoch) = text.split_once('.')?;
        if offset.is_empty()
            || offset.len() > 20
            || !offset.bytes().all(|b| b.is_ascii_digit())
            || (offset.len() > 1 && offset.starts_with('0'))
        {
            return None;
        }
        if !is_epoch(epoch) {
            return None;
        }
        Some(StreamPosition {
            offset: offset.parse().ok()?,
            epoch: Arc::from(epoch),
        })
    }

    /// A fresh random epoch (12 base62 characters, ~71 bits).
    pub fn new_epoch() -> Arc<str> {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let epoch: String = (0..12)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Arc::from(epoch)
    }
}

/// Whether `text` is a valid epoch: 1 to [`MAX_EPOCH_LEN`] ASCII letters or digits.
pub fn is_epoch(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_EPOCH_LEN
        && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.offset, self.epoch)
    }
}

impl fmt::Debug for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for StreamPosition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Held by the publish path from [`History::append`] until the broker has delivered the
/// publication, so that publications of one stream reach subscribers in offset order.
/// An implementation whose order comes from elsewhere (one Redis script appending and
/// publishing) holds nothing.
pub type OrderGuard = Box<dyn Send + Sync>;

/// What [`History::append`] gave a publication.
pub struct Appended {
    pub position: StreamPosition,
    /// Keep until the broker has delivered the publication.
    pub order: Option<OrderGuard>,
}

/// What a stream holds after a position.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// Every publication after the position, oldest first, at most the limit asked; `top`
    /// is the stream's latest position (when `publications` ends before it, more
    /// followed the limit).
    Publications {
        publications: Vec<Arc<Publication>>,
        top: StreamPosition,
    },
    /// The position cannot be vouched for: another epoch (history was lost), an offset
    /// older than what is retained, or one beyond the stream's end. `top` is the stream's
    /// current position, from which the client can start again.
    Gone { top: Option<StreamPosition> },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// The history store cannot be reached (Redis down): a publish must fail rather than
    /// be delivered without a position, a recovery must be retried.
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// Where channel streams live. One per node, held by the [`Core`](super::Core).
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Gives `publication` the next position of its channel's stream and keeps it, or
    /// `None` when `app` keeps no history (or the publication is not kept: relayed client
    /// events). Called by the publish path only, with the journal's write done; the
    /// caller sets the position on the publication and keeps [`Appended::order`] until
    /// the broker has delivered it.
    async fn append(
        &self,
        app: &App,
        publication: &Publication,
    ) -> Result<Option<Appended>, HistoryError>;

    /// What `channel`'s stream holds after `from` (from its oldest retained publication
    /// when `from` is `None`), at most `limit` publications. Each returned publication
    /// carries its position.
    async fn since(
        &self,
        app: &App,
        channel: &str,
        from: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovered, HistoryError>;

    /// The stream's latest position (offset 0 and a new epoch for a stream that holds
    /// nothing yet, which is created then: a client told this position can resume from
    /// it), or `None` when `app` keeps no history.
    async fn latest(
        &self,
        app: &App,
        channel: &str,
    ) -> Result<Option<StreamPosition>, HistoryError>;

    /// Housekeeping the node runs every second (expiry, memory budget, gauges).
    fn sweep(&self) {}

    /// Memory counted against `history_max_bytes` (the embedded history's; `None` for
    /// history kept elsewhere).
    fn counted_bytes(&self) -> Option<usize> {
        None
    }

    /// Short name for logs (`"embedded"`, `"redis"`).
    fn name(&self) -> &'static str;
}

/// Whether `app` keeps `publication` in history: history on for the app, and not a
/// relayed client event (peer-to-peer messages are never kept, as they are never a
/// cache channel's last event).
pub fn keeps(app: &App, publication: &Publication) -> bool {
    app.history.enabled() && !publication.relay_only
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_junk_is_refused() {
        let epoch = StreamPosition::new_epoch();
        assert_eq!(epoch.len(), 12);
        assert!(is_epoch(&epoch));
        let position = StreamPosition::new(42, epoch.clone());
        let text = position.to_string();
        assert_eq!(text, format!("42.{epoch}"));
        assert_eq!(StreamPosition::parse(&text), Some(position));
        assert_eq!(
            StreamPosition::parse("0.abc"),
            Some(StreamPosition::new(0, "abc".into()))
        );
        assert_eq!(
            StreamPosition::parse("18446744073709551615.Z").map(|p| p.offset),
            Some(u64::MAX)
        );
        for bad in [
            "",
            ".",
            "1.",
            ".abc",
            "abc",
            "-1.abc",
            "+1.abc",
            "01.abc",
            "1.a-c",
            "1.a.c",
            "1.ab c",
            "18446744073709551616.abc",
            "1.é",
            &format!("1.{}", "a".repeat(MAX_EPOCH_LEN + 1)),
        ] {
            assert_eq!(StreamPosition::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn epochs_differ() {
        let a = StreamPosition::new_epoch();
        let b = StreamPosition::new_epoch();
        assert_ne!(a, b);
    }
}
