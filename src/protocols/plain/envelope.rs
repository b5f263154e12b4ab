//! The seed's HTTP envelope: `{"status_code", "message", "trace_id", "data"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde_json::{Value, json};

use crate::http::ApiError;

/// 16 hex characters, as in the seed's example.
pub fn trace_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    hex::encode(bytes)
}

/// A refusal in the seed's shape, logged with its trace id.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub trace_id: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        let refusal = Refusal {
            status,
            message: message.into(),
            trace_id: trace_id(),
        };
        tracing::info!(
            trace_id = %refusal.trace_id,
            status = refusal.status.as_u16(),
            reason = %refusal.message,
            "plain API request refused"
        );
        refusal
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::new(e.status, e.message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "status_code": self.status.as_u16(),
            "message": self.message,
            "trace_id": self.trace_id,
            "data": null,
        });
        (self.status, Json(body)).into_response()
    }
}

/// A success in the same envelope.
pub fn ok(status: StatusCode, data: Value) -> Response {
    let body = json!({
        "status_code": status.as_u16(),
        "message": "OK",
        "trace_id": trace_id(),
        "data": data,
    });
    (status, Json(body)).into_response()
}
