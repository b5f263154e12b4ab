//! The node's HTTP surface: one axum router carrying every adapter's routes plus the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`).

pub mod app_auth;
pub mod authorization;
pub mod caller;
pub mod client_addr;
pub mod error;
pub(crate) mod json_body;
mod ops;

use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

use crate::core::Core;
use crate::protocols;

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    pub core: Arc<Core>,
    /// Tracks WebSocket tasks so shutdown can wait for them to close.
    pub tracker: TaskTracker,
    pub prometheus: PrometheusHandle,
    /// Merchant accounts: the API key store and each app's JWT verifier.
    pub merchants: crate::merchants::Merchants,
    /// Access tokens (plain JSON protocol) and client tokens (Socket.IO), every call
    /// bounded in time; its health is part of `/readyz`.
    pub tokens: Arc<crate::tokens::BoundedTokens>,
    /// Who a request's client is behind trusted proxies (per-address limits).
    pub client_addr: Arc<client_addr::ClientAddr>,
    /// The Socket.IO server, set when the router is built (for shutdown).
    pub socketio: protocols::socketio::Gateway,
    /// Signed callbacks: the outbox, its dispatcher and the endpoint index.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Payment requests: their store, timers and URLs.
    pub payloads: Arc<crate::payloads::Payloads>,
    /// Idempotency keys of the publishing routes (memory, or Redis with `redis_url`).
    pub idempotency: Arc<crate::idempotency::Idempotency>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(protocols::pusher::routes())
        .merge(protocols::plain::routes())
        .merge(protocols::socketio::routes(&state))
        .merge(crate::webhooks::api::routes())
        .merge(crate::payloads::api::routes())
        .merge(protocols::payload::routes())
        .merge(ops::routes())
        .fallback(|| async { ApiError::not_found("No such route") })
        .with_state(state)
}
