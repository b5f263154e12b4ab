//! `POST /v1/websocket/auth`: the auth endpoint merchant backends call (seed 000).
//!
//! The backend sends `Authorization: Bearer <JWT>` and `X-API-KEY: <key>` with
//! `{"socket_id", "channel_name"}` (JSON, or the form body pusher-js sends by default).
//! Both credentials must be valid and name the same merchant, and the channel must be
//! one of that merchant's; the answer is the Pusher subscription signature, so the
//! merchant never holds the app secret. Public channels (the seed's `test-channel`)
//! need no signature to subscribe; signing them grants nothing, and the seed's own
//! example expects an answer, so they are signed too.
//!
//! Failed attempts (401, 403) made with an API key count against that key and against
//! the client's address (within the key's app, or within "no app" for an unknown key);
//! past `auth_failures_per_minute` the next attempts get 429 with `Retry-After`, before
//! the key is looked up when the key or the address's unknown-key count is spent. A
//! request without an API key is refused at no cost and counts against no one
//! (`crate::merchants::failures`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth;
use crate::core::SocketId;
use crate::core::channel::{self, ChannelKind};
use crate::http::{ApiError, HttpState, authorization};
use crate::merchants::channels;
use crate::merchants::failures::Subject;

#[derive(Deserialize)]
pub(crate) struct AuthRequest {
    pub(crate) socket_id: String,
    pub(crate) channel_name: String,
}

/// Which address count a failure goes to, besides the key's own.
#[derive(Clone)]
enum Counted {
    /// Not a failed attempt at a credential (missing key, bad body, store down).
    No,
    /// The key names no app: guessing, or a revoked key.
    UnknownKey,
    /// A real key of this app, with a bad JWT or for another merchant's channel.
    InApp(Arc<str>),
}

/// Why a request was refused: the status, a metric/log label, the client's message, and
/// what it counts against.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    counted: Counted,
    retry_after: Option<Duration>,
}

fn refuse(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
        counted: Counted::No,
        retry_after: None,
    }
}

impl Refusal {
    fn counted(mut self, counted: Counted) -> Self {
        self.counted = counted;
        self
    }
}

fn throttled(wait: Duration) -> Refusal {
    let seconds = wait.as_secs().max(1);
    Refusal {
        retry_after: Some(Duration::from_secs(seconds)),
        ..refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("Too many failed attempts; retry in {seconds} s"),
        )
    }
}

pub(super) async fn authorize(
    State(state): State<HttpState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = state.client_addr.client_ip(remote, &headers);
    let api_key = header_value(&headers, "x-api-key");
    match check(&state, client, &headers, api_key, &body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(refusal) => {
            let Refusal {
                status,
                reason,
                message,
                counted,
                retry_after,
            } = refusal;
            metrics::counter!("payrelay_merchant_auth_refused_total", "reason" => reason)
                .increment(1);
            tracing::info!(reason, %status, %client, "merchant auth refused");
            let address = match &counted {
                Counted::No => None,
                Counted::UnknownKey => Some(Subject::address(None, client)),
                Counted::InApp(app) => Some(Subject::address(Some(app), client)),
            };
            if let (Some(address), Some(key)) = (address, api_key) {
                state
                    .merchants
                    .failures
                    .record_failure(&[Subject::credential(key), address]);
            }
            let mut response = ApiError::new(status, message).into_response();
            if let Some(wait) = retry_after
                && let Ok(value) = HeaderValue::from_str(&wait.as_secs().to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Checks both credentials and the channel; the answer is the body of a 200.
async fn check(
    state: &HttpState,
    client: IpAddr,
    headers: &HeaderMap,
    api_key: Option<&str>,
    body: &[u8],
) -> Result<Value, Refusal> {
    let merchants = &state.merchants;
    let failures = &merchants.failures;
    let missing = || {
        refuse(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Both `Authorization: Bearer <JWT>` and `X-API-KEY` are required",
        )
    };
    // No key, no attempt at anything: refused for free, counted against no one.
    let api_key = api_key.ok_or_else(missing)?;
    let before_lookup = [Subject::credential(api_key), Subject::address(None, client)];
    if let Some(wait) = failures.blocked(&before_lookup) {
        return Err(throttled(wait));
    }
    let bearer = authorization::credentials(headers, "Bearer");

    let request = parse_body(headers, body)
        .map_err(|message| refuse(StatusCode::BAD_REQUEST, "malformed_body", message))?;
    // Signed as given: the client may hold an id of another Pusher-compatible server.
    if let Err(e) = SocketId::from_client(&request.socket_id) {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_socket_id",
            format!(
                "`{}` is not a socket id ({e})",
                request.socket_id.chars().take(45).collect::<String>()
            ),
        ));
    }

    let (app_id, key_merchant) = match merchants.store.find_key(api_key).await {
        Ok(Some(found)) => (found.app_id, found.merchant_id),
        Ok(None) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                "The API key is unknown or revoked",
            )
            .counted(Counted::UnknownKey));
        }
        Err(e) => {
            tracing::error!("merchant store: {e}");
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "merchant store unavailable",
            ));
        }
    };
    // Now that the key names its app, that app's count for this address applies too.
    let scope: Arc<str> = Arc::from(app_id.as_str());
    if let Some(wait) = failures.blocked(&[Subject::address(Some(&scope), client)]) {
        return Err(throttled(wait));
    }
    let in_app = Counted::InApp(scope);
    let token = bearer.ok_or_else(|| missing().counted(in_app.clone()))?;
    let verifier = merchants.verifier(&app_id).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "no_jwt_config",
            "This app does not accept merchant JWTs",
        )
    })?;
    let jwt_merchant = verifier.merchant(token).map_err(|e| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "bad_jwt",
            format!("JWT refused: {e}"),
        )
        .counted(in_app.clone())
    })?;
    if jwt_merchant != key_merchant {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "merchant_mismatch",
            "The JWT and the API key belong to different merchants",
        )
        .counted(in_app));
    }
    let app = state.core.apps.by_id(&app_id).cloned().ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "unknown_app",
            "The API key's app is not served here",
        )
    })?;

    let channel_name = request.channel_name.as_str();
    let kind = channel::classify(channel_name)
        .map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_channel",
                format!("Invalid channel_name: {e}"),
            )
        })?
        .kind;
    let socket_id = request.socket_id.as_str();
    match kind {
        ChannelKind::Public => {
            Ok(json!({"auth": auth::sign_private(&app, socket_id, channel_name)}))
        }
        _ if channels::owner(channel_name) != Some(jwt_merchant.as_str()) => Err(refuse(
            StatusCode::FORBIDDEN,
            "not_your_channel",
            format!("{channel_name} is not a channel of merchant {jwt_merchant}"),
        )
        .counted(Counted::InApp(app.id.clone()))),
        ChannelKind::Presence => {
            let channel_data = json!({"user_id": jwt_merchant}).to_string();
            let signature = auth::sign_presence(&app, socket_id, channel_name, &channel_data);
            Ok(json!({"auth": signature, "channel_data": channel_data}))
        }
        // pusher-js refuses an encrypted channel's answer without the secret it decrypts
        // with, so a signature alone would only subscribe to undecryptable events.
        ChannelKind::PrivateEncrypted => match auth::shared_secret(&app, channel_name) {
            Some(shared_secret) => Ok(json!({
                "auth": auth::sign_private(&app, socket_id, channel_name),
                "shared_secret": shared_secret,
            })),
            None => Err(refuse(
                StatusCode::BAD_REQUEST,
                "encryption_not_configured",
                "Encrypted channels need the app's encryption_master_key_base64, which is not set",
            )),
        },
        _ => Ok(json!({"auth": auth::sign_private(&app, socket_id, channel_name)})),
    }
}

pub(crate) fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<AuthRequest, String> {
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
        crate::http::json_body::object(body)
            .map_err(|e| format!("expected JSON {{\"socket_id\", \"channel_name\"}}: {e}"))
    }
}
