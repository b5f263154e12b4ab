//! The app backend's merchant routes, authenticated with the app's own credentials
//! (Pusher request signing, or HTTP Basic `app_key:app_secret`; see `app_auth.rs`):
//!
//! - the admin API for merchant API keys: create (the key is in this one answer and
//!   nowhere else), list (never the key itself), revoke. Changes apply at once: every
//!   auth request looks the key up in the store, and a revocation closes the Socket.IO
//!   sockets opened with the key.
//!   `POST /apps/{app_id}/merchants/{merchant_id}/keys`,
//!   `GET /apps/{app_id}/merchants/{merchant_id}/keys`, `GET /apps/{app_id}/keys`,
//!   `DELETE /apps/{app_id}/keys/{key_id}`;
//! - `POST /v1/events` `{merchant_id, kind, event, data}`: the simple way for a backend to
//!   publish to a merchant. It lands on `private-{kind}.{merchant_id}`, the very channel
//!   the Pusher HTTP API would publish to, through the same core publish path, and
//!   answers `{channel, id}` with the event's id. `user_id` or `merchant_wide: true`
//!   marks whom among the merchant's clients it is for (a Socket.IO client token scoped
//!   to its user receives only those; see `core::Audience`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::{App, Audience, Disconnect, NewPublication, WhichConnections};
use crate::http::app_auth::Call;
use crate::http::{ApiError, HttpState};
use crate::idempotency;
use crate::merchants::{StoreError, channels};

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/apps/{app_id}/merchants/{merchant_id}/keys",
            post(create_key).get(list_merchant_keys),
        )
        .route("/apps/{app_id}/keys", get(list_keys))
        .route("/apps/{app_id}/keys/{key_id}", delete(revoke_key))
        .route("/v1/events", post(publish_event))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::BadMerchantId(_) => ApiError::bad_request(e.to_string()),
        StoreError::Database(_) => {
            tracing::error!("{e}");
            ApiError::unavailable("merchant store unavailable")
        }
    }
}

async fn create_key(
    State(state): State<HttpState>,
    Path((app_id, merchant_id)): Path<(String, String)>,
    call: Call,
) -> Result<Response, ApiError> {
    let app = call.app(&state, Some(&app_id))?;
    let key = state
        .merchants
        .store
        .create_key(&app.id, &merchant_id)
        .await
        .map_err(store_error)?;
    tracing::info!(app = %app.id, merchant = %key.merchant_id, key_id = %key.key_id, "API key created");
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn list_merchant_keys(
    State(state): State<HttpState>,
    Path((app_id, merchant_id)): Path<(String, String)>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let app = call.app(&state, Some(&app_id))?;
    list(&state, &app, Some(&merchant_id)).await
}

async fn list_keys(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let app = call.app(&state, Some(&app_id))?;
    list(&state, &app, None).await
}

async fn list(
    state: &HttpState,
    app: &App,
    merchant_id: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let keys = state
        .merchants
        .store
        .list_keys(&app.id, merchant_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke_key(
    State(state): State<HttpState>,
    Path((app_id, key_id)): Path<(String, String)>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let app = call.app(&state, Some(&app_id))?;
    match state
        .merchants
        .store
        .revoke_key(&app.id, &key_id)
        .await
        .map_err(store_error)?
    {
        Some(merchant_id) => {
            tracing::info!(app = %app.id, merchant = %merchant_id, %key_id, "API key revoked");
            // Sockets opened with the key (Socket.IO) go at once, on every node; they sign
            // in as their merchant (never as a user) and remember the key's id as their
            // credential.
            if let Err(e) = state
                .core
                .close_merchant_connections(
                    &app,
                    &merchant_id,
                    WhichConnections::Credential(Arc::from(key_id.as_str())),
                    Disconnect::Revoked,
                )
                .await
            {
                tracing::warn!(app = %app.id, %key_id, "revoked, but its sockets stay until their recheck: {e}");
            }
            Ok(Json(
                json!({"key_id": key_id, "merchant_id": merchant_id, "revoked": true}),
            ))
        }
        None => Err(ApiError::not_found(format!(
            "No live key `{key_id}` in app {}",
            app.id
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantEvent {
    merchant_id: String,
    kind: String,
    event: String,
    data: Value,
    /// The merchant's user the event is for (a string or a number): a Socket.IO client
    /// token scoped to that user receives it (`client_token_scope = "user"`).
    #[serde(default)]
    user_id: Option<Value>,
    /// Publish at most once within the idempotency window (or the `Idempotency-Key`
    /// header).
    #[serde(default)]
    idempotency_key: Option<String>,
    /// The event is for every client of the merchant, user-scoped client tokens included.
    #[serde(default)]
    merchant_wide: bool,
}

impl MerchantEvent {
    /// Whom among the merchant's clients the event is for. Merchant-level credentials
    /// (API keys, unscoped client tokens, Pusher subscribers) receive it whatever this says.
    fn audience(&self) -> Result<Audience, ApiError> {
        let user = match &self.user_id {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                crate::tokens::id_text(value)
                    .filter(|id| crate::tokens::valid_user_id(id))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "`user_id` must be 1-64 letters, digits, `_`, `-`, `@`, `=` or `,` (a string or a number)",
                        )
                    })?,
            ),
        };
        match (user, self.merchant_wide) {
            (Some(_), true) => Err(ApiError::bad_request(
                "An event is for one user (`user_id`) or merchant-wide (`merchant_wide`), not both",
            )),
            (Some(user), false) => Ok(Audience::User(user.into_boxed_str())),
            (None, true) => Ok(Audience::Everyone),
            (None, false) => Ok(Audience::Unmarked),
        }
    }
}

/// A `POST /v1/events` body as checked before it is published.
pub(crate) struct CheckedMerchantEvent {
    /// The merchant's channel (`private-{kind}.{merchant_id}`).
    pub channel: String,
    pub publication: NewPublication,
    /// The body's `idempotency_key`, unchecked (the header's wins).
    pub idempotency_key: Option<String>,
}

/// Reads a `POST /v1/events` body: a merchant channel of a known kind, an event name not
/// reserved by Pusher, and whom it is for.
pub(crate) fn parse_merchant_event(body: &[u8]) -> Result<CheckedMerchantEvent, ApiError> {
    let request: MerchantEvent = crate::http::json_body::object(body).map_err(|e| {
        ApiError::bad_request(format!(
            "Expected a JSON object {{merchant_id, kind, event, data, user_id?, merchant_wide?}}: {e}"
        ))
    })?;
    let channel =
        channels::private_channel(&request.kind, &request.merchant_id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`kind` must be one of {} and `merchant_id` 1-64 letters, digits, `_` or `-`",
                channels::KINDS.join(", ")
            ))
        })?;
    if request.event.starts_with("pusher:") || request.event.starts_with("pusher_internal:") {
        return Err(ApiError::bad_request(
            "Event names starting with `pusher` are reserved",
        ));
    }
    let audience = request.audience()?;
    let data = match request.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(CheckedMerchantEvent {
        publication: NewPublication {
            channel: channel.clone(),
            event: request.event,
            data,
            audience,
            ..Default::default()
        },
        channel,
        idempotency_key: request.idempotency_key,
    })
}

async fn publish_event(State(state): State<HttpState>, call: Call) -> Result<Response, ApiError> {
    let app = call.app(&state, None)?;
    let CheckedMerchantEvent {
        channel,
        publication,
        idempotency_key,
    } = parse_merchant_event(&call.body)?;
    let key = match idempotency::header_key(&call.headers).map_err(ApiError::bad_request)? {
        Some(key) => Some(key),
        None => idempotency_key
            .as_deref()
            .map(idempotency::parse_key)
            .transpose()
            .map_err(ApiError::bad_request)?,
    }
    .map(|key| idempotency::scoped(&app.id, "v1-events", &key));
    let fingerprint = idempotency::fingerprint(&[&call.body]);
    Ok(
        idempotency::run(&state.idempotency, key, &fingerprint, || async {
            match state.core.publish(&app, publication).await {
                // The id is the callback's `webhook-id`: a backend can match the two.
                Ok(id) => (
                    idempotency::StoredAnswer {
                        status: 200,
                        body: json!({ "channel": channel, "id": id }).to_string(),
                    },
                    true,
                ),
                Err(e) => {
                    let e = super::http_api::publish_error(e);
                    (
                        idempotency::StoredAnswer {
                            status: e.status.as_u16(),
                            body: json!({ "error": e.message }).to_string(),
                        },
                        false,
                    )
                }
            }
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/publish_bodies: serde reads a struct from a JSON array of its fields,
    /// so `["m1", "payments", "trade", {}]` was published.
    #[test]
    fn event_bodies_are_json_objects_not_arrays_of_fields() {
        let event = br#"{"merchant_id":"m1","kind":"payments","event":"trade","data":{}}"#;
        assert_eq!(
            parse_merchant_event(event).ok().unwrap().channel,
            "private-payments.m1"
        );
        let refused = parse_merchant_event(br#"["m1", "payments", "trade", {}]"#)
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused.message.contains("JSON object"),
            "{}",
            refused.message
        );
    }
}
