//! The per-payload socket (seed 001): `GET /sign/{uuid}`, one WebSocket URL per payment
//! request, as xumm-sdk's `payload.subscribe` opens it.
//!
//! Whoever holds a payload's uuid (a random UUIDv4) may follow it: the socket counts down
//! to the expiry (`{"expires_in_seconds":N}` at once and every `countdown_secs`), and
//! says when the payload was opened, resolved or expired, with bare JSON objects. The
//! messages come through the core like every publication, on the payload's internal
//! channel, so they reach this socket whichever node made the change. The payload itself
//! (its state when the socket connects) is the `payloads` room's.

mod socket;

use axum::Router;
use axum::routing::get;

use crate::core::EncodingSlot;
use crate::http::HttpState;

pub(crate) const PAYLOAD_SLOT: EncodingSlot = crate::protocols::PAYLOAD_SLOT;
/// The protocol name connections of this adapter carry (metrics, diagnostics).
pub const PROTOCOL: &str = "payload";

/// Close codes of this socket (documented in the README).
pub mod codes {
    /// The payload does not exist (or the uuid is malformed): the client should not
    /// reconnect (xumm-sdk reconnects only after a code above 1000).
    pub const NORMAL: u16 = 1000;
    /// RFC 6455 "policy violation": the app is disabled.
    pub const POLICY: u16 = 1008;
    /// The message limit of this socket was exceeded.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// RFC 6455 "service restart": the node is shutting down; reconnect.
    pub const RESTARTING: u16 = 1012;
    /// RFC 6455 "try again later": over capacity, the store did not answer, or the
    /// socket fell behind; reconnect.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No pong to the server's ping in time.
    pub const PING_TIMEOUT: u16 = 4408;
}

pub(crate) fn routes() -> Router<HttpState> {
    Router::new().route("/sign/{uuid}", get(socket::upgrade))
}
