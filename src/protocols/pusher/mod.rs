//! The Pusher Channels adapter: protocol 7 over WebSocket (`/app/{key}`) and the Pusher
//! HTTP API (`/apps/{app_id}/...`), so pusher-js and the Pusher server libraries work
//! unchanged.

pub mod auth;
pub mod frames;
mod http_api;
pub(crate) use http_api::{ValidEvent, parse_batch, parse_info, parse_trigger, publish_error};
mod merchant_api;
pub(crate) use merchant_api::parse_merchant_event;
mod merchant_auth;
pub(crate) use merchant_auth::parse_body as parse_merchant_auth_body;
pub mod request_auth;
pub mod socket;
pub mod wire_format;

use axum::Router;
use axum::routing::get;

use crate::http::HttpState;

/// Close codes and `pusher:error` codes, as Pusher defines them.
pub mod codes {
    pub const APP_NOT_FOUND: u16 = 4001;
    pub const APP_DISABLED: u16 = 4003;
    pub const OVER_QUOTA: u16 = 4004;
    pub const BAD_VERSION_FORMAT: u16 = 4006;
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// Refused for lack of authority: closes with it are final (pusher-js will not retry).
    pub const UNAUTHORIZED: u16 = 4009;
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect now": graceful shutdown, slow consumer.
    pub const RECONNECT: u16 = 4200;
    pub const PONG_TIMEOUT: u16 = 4201;
    /// Pusher's "any other error" range; used in `pusher:error` for malformed messages.
    pub const MALFORMED: u16 = 4300;
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
    /// RFC 6455: a message too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/app/{key}", get(socket::upgrade))
        .merge(http_api::routes())
        .merge(merchant_api::routes())
        .route(
            "/v1/websocket/auth",
            axum::routing::post(merchant_auth::authorize),
        )
}
