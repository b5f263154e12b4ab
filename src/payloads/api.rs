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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
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
use crate::merchants::failures::Subject;

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
    /// Seconds, for `Retry-After`.
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }

    /// Too many failed attempts: 429, retry after `wait`.
    fn throttled(wait: Duration) -> Self {
        let seconds = wait.as_secs().max(1);
        Refusal {
            retry_after: Some(seconds),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed attempts; retry in {seconds} s"),
            )
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
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
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
                retry_after: None,
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

/// The app whose credentials the request carries, under the failed-attempt limits of
/// the other credentialed routes (`auth_failures_per_minute`, `merchants::failures`): a
/// wrong key or secret counts against the pair presented and against the client's
/// address within the key's app (within no app for an unknown key); a request without
/// credentials counts against no one. Past the limit: 429 with `Retry-After`.
fn app_of(state: &HttpState, remote: SocketAddr, headers: &HeaderMap) -> Result<Arc<App>, Refusal> {
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
    let failures = &state.merchants.failures;
    let client = state.client_addr.client_ip(remote, headers);
    // The pair, not the key alone: app keys are public (pusher-js holds them), so a count
    // on the key would let anyone lock the app's backend out.
    let credential = Subject::credential(&format!("{key}:{secret}"));
    let unknown_key = Subject::address(None, client);
    if let Some(wait) = failures.blocked(&[credential.clone(), unknown_key.clone()]) {
        return Err(Refusal::throttled(wait));
    }
    let invalid = || Refusal::new(StatusCode::UNAUTHORIZED, "Invalid API key or secret");
    let Some(app) = state.core.apps.by_key(&key) else {
        failures.record_failure(&[credential, unknown_key]);
        tracing::info!(%client, "payload API: unknown app key");
        return Err(invalid());
    };
    let in_app = Subject::address(Some(&app.id), client);
    if let Some(wait) = failures.blocked(std::slice::from_ref(&in_app)) {
        return Err(Refusal::throttled(wait));
    }
    if !bool::from(app.secret().as_bytes().ct_eq(secret.as_bytes())) {
        failures.record_failure(&[credential, in_app]);
        tracing::info!(%client, app = %app.id, "payload API: wrong app secret");
        return Err(invalid());
    }
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

async fn create(
    State(state): State<HttpState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let app = app_of(&state, remote, &headers)?;
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
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, remote, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let payload = state.payloads.get(&app, &uuid).await?;
    Ok(axum::Json(details(&app, &payload)))
}

async fn cancel(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, remote, &headers)?;
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
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, remote, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let by_deeplink = model::parse_opened(&body_of(body, REPORT_BODY_LIMIT).await?)?;
    let payload = state.payloads.open(&app, &uuid, by_deeplink).await?;
    Ok(axum::Json(details(&app, &payload)))
}

async fn resolve(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, Refusal> {
    let app = app_of(&state, remote, &headers)?;
    let uuid = uuid_of(&uuid)?;
    let resolution = model::parse_resolution(&body_of(body, REPORT_BODY_LIMIT).await?)?;
    let payload = state.payloads.resolve(&app, &uuid, &resolution).await?;
    Ok(axum::Json(details(&app, &payload)))
}
