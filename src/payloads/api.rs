//! The payload routes.
//!
//! For the app's backend, as npm `xumm-sdk` calls them (`sdk.setEndpoint(url)`):
//! `POST /api/v1/platform/payload`, `GET` and `DELETE /api/v1/platform/payload/{uuid}`.
//! For the signing side: `POST /v1/payloads/{uuid}/opened` and `/resolve`.
//!
//! All take the app's credentials: `x-api-key` / `x-api-secret` (the app key and secret,
//! as xumm-sdk sends them) or HTTP Basic `key:secret`. Refusals are xumm's error shape,
//! `{"error": {"reference", "code", "message"}}`, which xumm-sdk turns into an exception
//! (`returnErrors`) or a `null`; `reference` is in the log line of the refusal.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::PayloadError;
use super::model::{self, BodyError};
use crate::core::App;
use crate::db::now_ms;
use crate::http::HttpState;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/platform/payload", post(create))
        .route("/api/v1/platform/payload/{uuid}", get(fetch).delete(cancel))
        .route("/v1/payloads/{uuid}/opened", post(opened))
        .route("/v1/payloads/{uuid}/resolve", post(resolve))
}

/// A refusal in xumm's shape.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    reason: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            reason: None,
        }
    }

    fn not_found() -> Self {
        Refusal::new(StatusCode::NOT_FOUND, "No payload with this uuid")
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let reference = uuid::Uuid::new_v4().hyphenated().to_string();
        tracing::debug!(%reference, status = self.status.as_u16(), "payload API refusal: {}", self.message);
        let mut error = json!({
            "reference": reference,
            "code": self.status.as_u16(),
            "message": self.message,
        });
        if let Some(reason) = self.reason {
            error["reason"] = json!(reason);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        Refusal::new(status, e.message)
    }
}

impl From<PayloadError> for Refusal {
    fn from(e: PayloadError) -> Self {
        match e {
            PayloadError::NotFound => Refusal::not_found(),
            PayloadError::Conflict {
                reason, message, ..
            } => Refusal {
                status: StatusCode::CONFLICT,
                message: message.to_string(),
                reason: Some(reason),
            },
            PayloadError::Store(e) => unavailable(e),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    tracing::error!("{e}");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The payload store is unavailable",
    )
}

/// The app whose credentials the request carries.
fn app_of(state: &HttpState, headers: &HeaderMap) -> Result<Arc<App>, Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (key, secret) = match (header("x-api-key"), header("x-api-secret")) {
        (Some(key), Some(secret)) => (key.trim().to_string(), secret.trim().to_string()),
        _ => match crate::http::app_auth::basic_credentials(headers) {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "Missing credentials: send the app key and secret as x-api-key and \
                     x-api-secret, or as HTTP Basic key:secret",
                ));
            }
            Err(e) => return Err(Refusal::new(StatusCode::UNAUTHORIZED, e.message)),
        },
    };
    let app = state
        .core
        .apps
        .by_key(&key)
        .filter(|app| app.secret().as_bytes().ct_eq(secret.as_bytes()).into())
        .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "Invalid API key or secret"))?;
    if !app.enabled {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "The app is disabled"));
    }
    Ok(app.clone())
}

fn uuid_of(text: &str) -> Result<String, Refusal> {
    model::parse_uuid(text).ok_or_else(Refusal::not_found)
}

/// The body, read up to `limit` bytes (more is a 413).
async fn body_of(body: Body, limit: usize) -> Result<axum::body::Bytes, Refusal> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The body is over the limit of {limit} bytes"),
        )
    })
}

fn details(app: &App, payload: &super::Payload) -> Value {
    payload.details(&app.key, now_ms())
}

async fn create(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let app = app_of(&state, &headers)?;
        let payloads = &state.payloads;
        let body = body_of(body, payloads.config.max_body_bytes).await?;
        let new = model::parse_create(&body, &payloads.config)?;
        let payload = payloads.create(&app, new).await.map_err(unavailable)?;
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let urls = payloads.urls(&payload.uuid, host);
        Ok::<_, Refusal>(json!({
            "uuid": payload.uuid,
            "next": {"always": urls.next},
            "refs": {
                "qr_png": urls.qr_png,
                "websocket_status": urls.websocket_status,
            },
            "pushed": false,
        }))
    };
    match result.await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn fetch(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let payload = state.payloads.get(&app, &uuid).await?;
    Ok(axum::Json(details(&app, &payload)))
}

async fn cancel(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let outcome = state.payloads.cancel(&app, &uuid).await?;
    let details = details(&app, &outcome.payload);
    Ok(axum::Json(json!({
        "result": {"cancelled": outcome.cancelled, "reason": outcome.reason},
        "meta": details["meta"],
        "custom_meta": details["custom_meta"],
    })))
}

/// Bodies of the signing side's reports are small.
const REPORT_BODY_LIMIT: usize = 4096;

async fn opened(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let by_deeplink = model::parse_opened(&body_of(body, REPORT_BODY_LIMIT).await?)?;
    let payload = state.payloads.open(&app, &uuid, by_deeplink).await?;
    Ok(axum::Json(details(&app, &payload)))
}

async fn resolve(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let resolution = model::parse_resolution(&body_of(body, REPORT_BODY_LIMIT).await?)?;
    let payload = state.payloads.resolve(&app, &uuid, &resolution).await?;
    Ok(axum::Json(details(&app, &payload)))
}
