//! A publication: one event on one channel, as it travels through the core.
//!
//! It is created once by [`Core::publish`](super::Core::publish) and shared (`Arc`) by every
//! subscriber's queue. Each wire format encodes it at most once, on first use, into a
//! cached frame of the adapter's own type (a WebSocket text frame, say) that every
//! connection of that format then clones and writes as is: fanning out to 10 000 sockets
//! costs one encoding (and one UTF-8 check) per format, not 10 000.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use super::history::StreamPosition;
use super::{EventId, SocketId};

/// How many distinct wire encodings one publication can cache.
pub const ENCODING_SLOTS: usize = 6;

/// A wire format's place in the per-publication cache. Each adapter owns its constants;
/// `protocols/mod.rs` lists them all so no two collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSlot(pub usize);

/// Whom among a channel's subscribers a publication is for, as its publisher marked it.
///
/// Only a connection narrowed to one user ([`Connection::narrow_to_user`], a Socket.IO
/// client token scoped to its user) looks at the mark: it receives what is marked for its
/// user or for everyone, and nothing unmarked, so an event about another user's payment
/// never reaches it by default. Every other subscriber (a merchant's API key, a Pusher
/// subscriber) receives every publication of its channels, whatever the mark.
///
/// [`Connection::narrow_to_user`]: super::Connection::narrow_to_user
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Audience {
    /// Not marked: for the channel owner's own (unnarrowed) subscribers.
    #[default]
    Unmarked,
    /// For one user of the channel's owner.
    User(Box<str>),
    /// For everyone on the channel, narrowed subscribers included.
    Everyone,
}

impl Audience {
    /// Whether a connection narrowed to `user` receives a publication marked so.
    pub fn reaches(&self, user: &str) -> bool {
        match self {
            Audience::Unmarked => false,
            Audience::User(for_user) => &**for_user == user,
            Audience::Everyone => true,
        }
    }
}

#[derive(Debug)]
pub struct Publication {
    /// Cluster-unique, sortable by time; a webhook's `webhook-id`.
    pub id: EventId,
    pub app_id: Arc<str>,
    pub channel: Arc<str>,
    pub event: Box<str>,
    /// The event's data exactly as published (Pusher carries it as a string).
    pub data: Box<str>,
    /// Connection that must not receive it (Pusher `socket_id` exclusion, client events).
    pub exclude: Option<SocketId>,
    /// Sender's user id, for client events on presence channels.
    pub user_id: Option<Box<str>>,
    /// Never cached for later subscribers (see `NewPublication::relay_only`).
    pub relay_only: bool,
    /// Sent by a client connection (a Pusher client event), not by a backend: it never
    /// becomes a merchant's callback.
    pub from_client: bool,
    /// An app-level event (see `NewPublication::app_event`).
    pub app_event: bool,
    /// Whom among the channel's subscribers it is for, as its publisher marked it.
    pub audience: Audience,
    /// When the core accepted it; publish-to-fan-out latency is measured from here.
    pub accepted_at: Instant,
    pub published_at: SystemTime,
    /// Where it stands in its channel's stream, once the history gave it one (never for
    /// an app without history, nor for relayed client events). Set once, by the publish
    /// path before the broker sees it, or by a broker that received it from another node.
    position: OnceLock<StreamPosition>,
    encodings: [OnceLock<Box<dyn Any + Send + Sync>>; ENCODING_SLOTS],
}

impl Publication {
    /// A publication stamped with a fresh [`EventId`].
    pub fn new(app_id: Arc<str>, channel: Arc<str>, event: Box<str>, data: Box<str>) -> Self {
        Self::with_id(EventId::new(), app_id, channel, event, data)
    }

    /// A publication with a given id: one read back from history, or received from
    /// another node.
    pub fn with_id(
        id: EventId,
        app_id: Arc<str>,
        channel: Arc<str>,
        event: Box<str>,
        data: Box<str>,
    ) -> Self {
        Publication {
            id,
            app_id,
            channel,
            event,
            data,
            exclude: None,
            user_id: None,
            relay_only: false,
            from_client: false,
            app_event: false,
            audience: Audience::Unmarked,
            accepted_at: Instant::now(),
            published_at: SystemTime::now(),
            position: OnceLock::new(),
            encodings: Default::default(),
        }
    }

    /// A copy to keep in history: the same id, event and marks, none of its encodings
    /// (a replay encodes it once per format, then shares the frames as a live one does).
    pub fn detached_copy(&self) -> Publication {
        Publication {
            id: self.id,
            app_id: self.app_id.clone(),
            channel: self.channel.clone(),
            event: self.event.clone(),
            data: self.data.clone(),
            exclude: self.exclude,
            user_id: self.user_id.clone(),
            relay_only: self.relay_only,
            from_client: self.from_client,
            app_event: self.app_event,
            audience: self.audience.clone(),
            accepted_at: self.accepted_at,
            published_at: self.published_at,
            position: OnceLock::new(),
            encodings: Default::default(),
        }
    }

    /// Where it stands in its channel's stream (see [`StreamPosition`]).
    pub fn position(&self) -> Option<&StreamPosition> {
        self.position.get()
    }

    /// Gives it its position; only the first call counts (returns whether it did). Set
    /// it before the publication is encoded: an encoding made before keeps no position.
    pub fn set_position(&self, position: StreamPosition) -> bool {
        self.position.set(position).is_ok()
    }

    /// The data as JSON to write into a frame as is, if it is JSON that common parsers
    /// read back: valid syntax (what `RawValue` checks) with every number within `f64`
    /// range. `1e400` is valid JSON, but serde_json and Go's encoding/json refuse the
    /// whole frame over it and JavaScript reads Infinity, so such data is not JSON here
    /// and travels as the text it was published as.
    pub fn data_as_json(&self) -> Option<&serde_json::value::RawValue> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.data).ok()?;
        serde_json::from_str::<serde_json::Value>(raw.get()).ok()?;
        Some(raw)
    }

    /// This publication in one wire format, encoded on first request and shared
    /// afterwards. `T` should be cheap to clone (it is cloned per subscriber).
    pub fn encoded<T>(&self, slot: EncodingSlot, encode: impl Fn(&Publication) -> T) -> T
    where
        T: Clone + Send + Sync + 'static,
    {
        let cached = self.encodings[slot.0].get_or_init(|| Box::new(encode(self)));
        match cached.downcast_ref::<T>() {
            Some(frame) => frame.clone(),
            // Two formats sharing a slot is a bug in `protocols/mod.rs`; stay correct.
            None => {
                debug_assert!(false, "encoding slot {} holds another type", slot.0);
                encode(self)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_format_is_encoded_once() {
        let p = Publication::new("app".into(), "ch".into(), "e".into(), "d".into());
        let calls = AtomicUsize::new(0);
        let encode = |_: &Publication| {
            calls.fetch_add(1, Ordering::SeqCst);
            bytes::Bytes::from_static(b"frame")
        };
        let a = p.encoded(EncodingSlot(0), encode);
        let b = p.encoded(EncodingSlot(0), encode);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same buffer is shared");
        p.encoded(EncodingSlot(1), encode);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
