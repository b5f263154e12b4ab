//! Protocol adapters. Each turns its wire frames into core calls and core output into its
//! wire frames; adapters never call one another.
//!
//! Encoding slots: each wire format that caches publication encodings owns one slot of
//! [`Publication`](crate::core::Publication)'s cache. They are all listed here so no two
//! formats share one.

pub mod payload;
pub mod plain;
pub mod pusher;
pub mod socketio;
pub mod websocket;

use crate::core::EncodingSlot;

/// Pusher protocol, JSON in text frames.
pub const PUSHER_JSON_SLOT: EncodingSlot = EncodingSlot(0);
/// Pusher protocol, the same JSON bytes in binary frames (`application/octet-stream`).
pub const PUSHER_BINARY_SLOT: EncodingSlot = EncodingSlot(1);
/// Pusher protocol, MessagePack in binary frames (`application/msgpack`).
pub const PUSHER_MSGPACK_SLOT: EncodingSlot = EncodingSlot(2);
/// Plain JSON protocol (`{"event","channel","data"}` with `data` as JSON).
pub const PLAIN_JSON_SLOT: EncodingSlot = EncodingSlot(3);
/// Socket.IO: the publication's data as the JSON value `socket.emit` sends.
pub const SOCKETIO_SLOT: EncodingSlot = EncodingSlot(4);
/// Payload sockets: the publication's data (the message) as a text frame.
pub const PAYLOAD_SLOT: EncodingSlot = EncodingSlot(5);
