//! `POST /v1/websocket/auth`: the auth endpoint merchant backends call (seed 000).
//!
//! The backend sends `Authorization: Bearer <JWT>` and `X-API-KEY: <key>` with
//! `{"socket_id", "channel_name"}` (JSON, or the form body pusher-js sends by default).
//! Both credentials must be valid and name the same merchant, and the channel must be
//! one of that merchant's; the answer is the Pusher subscription signature, so the
//! merchant never holds the app secret. Public channels (the seed's `test-channel`)
//! need no signature to subscribe; signing them grants nothing, and the seed's own
//! example expects an answer, so they are signed too.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth;
use crate::core::SocketId;
use crate::core::channel::{self, ChannelKind};
use crate::http::{ApiError, HttpState};
use crate::merchants::channels;

#[derive(Deserialize)]
struct AuthRequest {
    socket_id: String,
    channel_name: String,
}

fn refusal(status: StatusCode, reason: &'static str, message: String) -> Response {
    metrics::counter!("payrelay_merchant_auth_refused_total", "reason" => reason).increment(1);
    tracing::info!(reason, %status, "merchant auth refused");
    ApiError::new(status, message).into_response()
}

pub(super) async fn authorize(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let merchants = &state.merchants;

    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let (Some(token), Some(api_key)) = (bearer, api_key) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Both `Authorization: Bearer <JWT>` and `X-API-KEY` are required".into(),
        );
    };

    let request = match parse_body(&headers, &body) {
        Ok(request) => request,
        Err(message) => return refusal(StatusCode::BAD_REQUEST, "malformed_body", message),
    };
    if SocketId::parse(&request.socket_id).is_none() {
        return refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_socket_id",
            format!(
                "`{}` is not a socket id (expected digits.digits)",
                request.socket_id.chars().take(40).collect::<String>()
            ),
        );
    }

    let (app_id, key_merchant) = match merchants.store.find_key(api_key).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                "The API key is unknown or revoked".into(),
            );
        }
        Err(e) => {
            tracing::error!("merchant store: {e}");
            return ApiError::unavailable("merchant store unavailable").into_response();
        }
    };
    let Some(verifier) = merchants.verifier(&app_id) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "no_jwt_config",
            "This app does not accept merchant JWTs".into(),
        );
    };
    let jwt_merchant = match verifier.merchant(token) {
        Ok(merchant) => merchant,
        Err(e) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "bad_jwt",
                format!("JWT refused: {e}"),
            );
        }
    };
    if jwt_merchant != key_merchant {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "merchant_mismatch",
            "The JWT and the API key belong to different merchants".into(),
        );
    }
    let Some(app) = state.core.apps.by_id(&app_id).cloned() else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unknown_app",
            "The API key's app is not served here".into(),
        );
    };

    let channel_name = request.channel_name.as_str();
    let kind = match channel::classify(channel_name) {
        Ok(info) => info.kind,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_channel",
                format!("Invalid channel_name: {e}"),
            );
        }
    };
    let socket_id = request.socket_id.as_str();
    match kind {
        ChannelKind::Public => {
            Json(json!({"auth": auth::sign_private(&app, socket_id, channel_name)})).into_response()
        }
        _ if channels::owner(channel_name) != Some(jwt_merchant.as_str()) => refusal(
            StatusCode::FORBIDDEN,
            "not_your_channel",
            format!("{channel_name} is not a channel of merchant {jwt_merchant}"),
        ),
        ChannelKind::Presence => {
            let channel_data = json!({"user_id": jwt_merchant}).to_string();
            let signature = auth::sign_presence(&app, socket_id, channel_name, &channel_data);
            Json(json!({"auth": signature, "channel_data": channel_data})).into_response()
        }
        _ => {
            Json(json!({"auth": auth::sign_private(&app, socket_id, channel_name)})).into_response()
        }
    }
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<AuthRequest, String> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let fields: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| fields.get(name).cloned().ok_or(format!("missing `{name}`"));
        Ok(AuthRequest {
            socket_id: field("socket_id")?,
            channel_name: field("channel_name")?,
        })
    } else {
        serde_json::from_slice(body)
            .map_err(|e| format!("expected JSON {{\"socket_id\", \"channel_name\"}}: {e}"))
    }
}
