//! The plain JSON channel protocol (seed 002): `GET /api/v1/ws` with an access token,
//! `{"event","channel","data"}` messages, one socket per user, forced logout, and the
//! backend API around it (`/api/v1/events`, tokens, diagnostics).
//!
//! Every HTTP answer of this adapter, refusals before the upgrade included, uses the
//! seed's envelope `{"status_code", "message", "trace_id", "data"}`; the trace id is in
//! the log line of the same request, so a client's report can be found in the logs.

mod api;
pub(crate) use api::{parse_event, parse_mint, parse_revoke};
mod channels;
mod envelope;
mod socket;
pub(crate) use channels::{Scope, core_channel, logical_channel};
pub(crate) use socket::{ClientMessage, event_frame};

use axum::Router;
use axum::routing::{get, post};

use crate::core::EncodingSlot;
use crate::http::HttpState;

pub(crate) const PLAIN_SLOT: EncodingSlot = crate::protocols::PLAIN_JSON_SLOT;
/// The protocol name connections of this adapter carry (metrics, diagnostics, selectors).
pub const PROTOCOL: &str = "plain";

/// Close codes of this protocol (documented in the README).
pub mod codes {
    /// RFC 6455 "service restart": the node is shutting down; reconnect.
    pub const RESTARTING: u16 = 1012;
    /// RFC 6455 "try again later": the socket fell too far behind.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const TOO_MANY_BAD_MESSAGES: u16 = 4400;
    pub const TOKEN_REVOKED: u16 = 4401;
    pub const LOGGED_OUT: u16 = 4403;
    pub const PING_TIMEOUT: u16 = 4408;
    pub const REPLACED: u16 = 4409;
}

/// The event a forced logout publishes on `mobile.force.logout` (seed 002).
pub const FORCE_LOGOUT_EVENT: &str = "MOBILE_USER_FORCE_LOGOUT_EVENT";
pub const FORCE_LOGOUT_CHANNEL: &str = "mobile.force.logout";

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/ws", get(socket::upgrade))
        .route("/api/v1/events", post(api::publish))
        .route("/api/v1/tokens", post(api::mint_token))
        .route("/api/v1/tokens/revoke", post(api::revoke_token))
        .route(
            "/api/v1/users/{user_id}/force-logout",
            post(api::force_logout),
        )
        .route("/api/v1/ws/connected-users", get(api::connected_users))
        .route("/api/v1/ws/connections", get(api::connections))
        .route("/api/v1/ws/test", get(api::test_route))
}
