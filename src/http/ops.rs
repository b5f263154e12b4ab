//! Operational endpoints: liveness, readiness, Prometheus metrics.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::HttpState;

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up and serving HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The node accepts new connections: not shutting down, broker reachable.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let core = &state.core;
    let broker = core.broker();
    let body = json!({
        "status": if core.is_shutting_down() { "shutting_down" } else if broker.is_ready() { "ready" } else { "broker_unavailable" },
        "broker": broker.name(),
        "connections": core.connection_count(),
    });
    let ready = !core.is_shutting_down() && broker.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
