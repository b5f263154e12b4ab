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

/// The node accepts new connections: not shutting down, broker reachable, token store
/// answering (without it no socket can be admitted). The first failing condition names
/// the status; the broker and the token store each say why they are down. The node's id
/// tells which member of a cluster answered.
async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let core = &state.core;
    let broker = core.broker();
    let tokens = state.tokens.status();
    let status = if core.is_shutting_down() {
        "shutting_down"
    } else if !broker.is_ready() {
        "broker_unavailable"
    } else if tokens.problem.is_some() {
        "token_store_unavailable"
    } else {
        "ready"
    };
    let mut token_store = json!({"name": tokens.name, "ready": tokens.problem.is_none()});
    if let Some(problem) = &tokens.problem {
        token_store["error"] = json!(problem);
    }
    let mut broker_status = json!({"name": broker.name(), "ready": broker.is_ready()});
    if let Some(problem) = broker.problem() {
        broker_status["error"] = json!(problem);
    }
    let body = json!({
        "status": status,
        "node_id": &*core.settings.node_id,
        "broker": broker_status,
        "token_store": token_store,
        "connections": core.connection_count(),
    });
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
