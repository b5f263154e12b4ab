//! The backend's HTTP API for the plain protocol. Every route but the opt-in test route
//! requires the app credentials (HTTP Basic `app_key:app_secret` or a Pusher request
//! signature): the seed left `connections` and `test` open; here they are not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::channels::{self, Scope};
use super::envelope::{Refusal, ok};
use super::{FORCE_LOGOUT_CHANNEL, FORCE_LOGOUT_EVENT, PROTOCOL};
use crate::core::{Disconnect, NewPublication, WhichConnections};
use crate::http::HttpState;
use crate::http::app_auth::Call;
use crate::idempotency;
use crate::tokens::{self, TokenStore};

/// Longest token lifetime the API mints (30 days).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], shape: &str) -> Result<T, Refusal> {
    crate::http::json_body::object(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("Expected a JSON object {shape}: {e}"),
        )
    })
}

fn store_unavailable(e: tokens::TokenError) -> Refusal {
    match e {
        tokens::TokenError::BadUserId(_) | tokens::TokenError::BadMerchantId(_) => {
            Refusal::new(StatusCode::BAD_REQUEST, e.to_string())
        }
        tokens::TokenError::Unavailable(_) => {
            tracing::error!("{e}");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "Token store unavailable")
        }
    }
}

fn broker_unavailable(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    #[serde(default)]
    user_id: Option<Value>,
    channel: String,
    event: String,
    #[serde(default)]
    data: Value,
    /// Publish at most once within the idempotency window (or the `Idempotency-Key`
    /// header).
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A `POST /api/v1/events` body as checked before it is published.
pub(crate) struct CheckedEvent {
    /// The logical channel, as the request named it (and the answer shows it).
    pub channel: String,
    pub publication: NewPublication,
    /// The body's `idempotency_key`, unchecked (the header's wins).
    pub idempotency_key: Option<String>,
}

/// Reads a `POST /api/v1/events` body of `app`: a known channel, global without a user or
/// per user with one, an event name not reserved by Pusher.
pub(crate) fn parse_event(app: &crate::core::App, body: &[u8]) -> Result<CheckedEvent, Refusal> {
    let request: EventRequest = parse(body, "{user_id?, channel, event, data, idempotency_key?}")?;
    let user_id = match &request.user_id {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            tokens::id_text(value)
                .filter(|id| tokens::valid_user_id(id))
                .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "Invalid `user_id`"))?,
        ),
    };
    let core_channel = match (channels::scope(app, &request.channel), &user_id) {
        (None, _) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("Unknown channel `{}`", request.channel),
            ));
        }
        (Some(Scope::Global), None) => channels::core_channel(Scope::Global, &request.channel, ""),
        (Some(Scope::Global), Some(_)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "A global channel reaches every user: omit `user_id`",
            ));
        }
        (Some(Scope::User), Some(user)) => {
            channels::core_channel(Scope::User, &request.channel, user)
        }
        (Some(Scope::User), None) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "A user channel needs the `user_id` it is for",
            ));
        }
    };
    if request.event.starts_with("pusher:") || request.event.starts_with("pusher_internal:") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Event names starting with `pusher` are reserved",
        ));
    }
    let data = match request.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(CheckedEvent {
        channel: request.channel,
        publication: NewPublication {
            channel: core_channel,
            event: request.event,
            data,
            ..Default::default()
        },
        idempotency_key: request.idempotency_key,
    })
}

/// `POST /api/v1/events` `{user_id?, channel, event, data, idempotency_key?}`.
pub(super) async fn publish(
    State(state): State<HttpState>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let body = &call.body;
    let CheckedEvent {
        channel,
        publication,
        idempotency_key,
    } = parse_event(&app, body)?;
    let bad_key = |e: String| Refusal::new(StatusCode::BAD_REQUEST, e);
    let key = match idempotency::header_key(&call.headers).map_err(bad_key)? {
        Some(key) => Some(key),
        None => idempotency_key
            .as_deref()
            .map(idempotency::parse_key)
            .transpose()
            .map_err(bad_key)?,
    }
    .map(|key| idempotency::scoped(&app.id, "api-v1-events", &key));
    let fingerprint = idempotency::fingerprint(&[body]);
    let envelope = |status: StatusCode, message: &str, trace_id: &str, data: Value| {
        idempotency::StoredAnswer {
            status: status.as_u16(),
            body: json!({
                "status_code": status.as_u16(),
                "message": message,
                "trace_id": trace_id,
                "data": data,
            })
            .to_string(),
        }
    };
    Ok(
        idempotency::run(&state.idempotency, key, &fingerprint, || async {
            match state.core.publish(&app, publication).await {
                Ok(id) => (
                    envelope(
                        StatusCode::OK,
                        "OK",
                        &super::envelope::trace_id(),
                        json!({"channel": channel, "id": id}),
                    ),
                    true,
                ),
                Err(e) => {
                    let api = crate::protocols::pusher::publish_error(e);
                    let refusal = Refusal::new(api.status, api.message);
                    let answer = envelope(
                        refusal.status,
                        &refusal.message,
                        &refusal.trace_id,
                        Value::Null,
                    );
                    (answer, false)
                }
            }
        })
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    user_id: Value,
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
}

fn default_ttl() -> u64 {
    24 * 3600
}

/// Reads a `POST /api/v1/tokens` body: the user (a string or a number, a valid user id)
/// and the lifetime in seconds (1 to 30 days).
pub(crate) fn parse_mint(body: &[u8]) -> Result<(tokens::Subject, Duration), Refusal> {
    let request: MintRequest = parse(body, "{user_id, ttl_secs?}")?;
    let user_id = tokens::id_text(&request.user_id)
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "Invalid `user_id`"))?;
    if !(1..=MAX_TTL_SECS).contains(&request.ttl_secs) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("`ttl_secs` must be 1 to {MAX_TTL_SECS}"),
        ));
    }
    let subject = tokens::Subject::User(user_id);
    subject.validate().map_err(store_unavailable)?;
    Ok((subject, Duration::from_secs(request.ttl_secs)))
}

/// Reads a `POST /api/v1/tokens/revoke` body: the token.
pub(crate) fn parse_revoke(body: &[u8]) -> Result<String, Refusal> {
    parse::<RevokeRequest>(body, "{token}").map(|r| r.token)
}

/// `POST /api/v1/tokens` `{user_id, ttl_secs?}`: mints an access token (shown once).
pub(super) async fn mint_token(
    State(state): State<HttpState>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let (subject, ttl) = parse_mint(&call.body)?;
    let minted = state
        .tokens
        .mint(&app.id, &subject, ttl)
        .await
        .map_err(store_unavailable)?;
    Ok(ok(
        StatusCode::CREATED,
        serde_json::to_value(minted).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    token: String,
}

/// `POST /api/v1/tokens/revoke` `{token}`: revokes it and closes its sockets at once.
pub(super) async fn revoke_token(
    State(state): State<HttpState>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let token = parse_revoke(&call.body)?;
    let record = state
        .tokens
        .lookup(&token)
        .await
        .map_err(store_unavailable)?
        // A token whose app cannot be decided is nobody's to revoke.
        .filter(|r| r.app(&state.core.apps).is_some_and(|a| a.id == app.id))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "Unknown token"))?;
    state
        .tokens
        .revoke(&token)
        .await
        .map_err(store_unavailable)?;
    let credential = Arc::from(tokens::credential_id(&token));
    state
        .core
        .close_user_connections(
            &app,
            record.connection_user(),
            WhichConnections::Credential(credential),
            Disconnect::Revoked,
        )
        .await
        .map_err(broker_unavailable)?;
    Ok(ok(
        StatusCode::OK,
        json!({"user_id": record.connection_user(), "revoked": true}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    revoke_tokens: bool,
}

/// `POST /api/v1/users/{user_id}/force-logout` `{revoke_tokens?}`: tells the user on
/// `mobile.force.logout`, then closes every plain socket of theirs (4403).
pub(super) async fn force_logout(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let body = &call.body;
    if !tokens::valid_user_id(&user_id) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "Invalid user id"));
    }
    let request: LogoutRequest = if body.is_empty() {
        LogoutRequest::default()
    } else {
        parse(body, "{revoke_tokens?}")?
    };
    let numeric = user_id.parse::<u64>().map(Value::from);
    let data = json!({
        "mobile_user_id": numeric.unwrap_or_else(|_| Value::String(user_id.clone())),
        "is_force_logout": true,
    });
    let channel = channels::core_channel(Scope::User, FORCE_LOGOUT_CHANNEL, &user_id);
    let publication = NewPublication {
        channel,
        event: FORCE_LOGOUT_EVENT.into(),
        data: data.to_string(),
        ..Default::default()
    };
    state
        .core
        .publish(&app, publication)
        .await
        .map_err(broker_unavailable)?;
    let revoked = if request.revoke_tokens {
        state
            .tokens
            .revoke_user(&app.id, &user_id)
            .await
            .map_err(store_unavailable)?
            .len()
    } else {
        0
    };
    // Queued frames are written before the close, so the event above arrives first.
    state
        .core
        .close_user_connections(
            &app,
            &user_id,
            WhichConnections::Protocol(PROTOCOL),
            Disconnect::Terminated,
        )
        .await
        .map_err(broker_unavailable)?;
    tracing::info!(app = %app.id, user = %user_id, revoked, "forced logout");
    Ok(ok(
        StatusCode::OK,
        json!({"user_id": user_id, "tokens_revoked": revoked}),
    ))
}

/// `GET /api/v1/ws/connected-users`: user ids with a plain socket on this node.
pub(super) async fn connected_users(
    State(state): State<HttpState>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let mut users: Vec<String> = state
        .core
        .connections()
        .iter()
        .filter(|c| c.app.id == app.id && c.protocol == PROTOCOL)
        .filter_map(|c| c.user_id().map(|u| u.to_string()))
        .collect();
    users.sort();
    users.dedup();
    Ok(ok(
        StatusCode::OK,
        json!({"count": users.len(), "user_ids": users}),
    ))
}

/// `GET /api/v1/ws/connections`: every socket of the app on this node, any protocol.
pub(super) async fn connections(
    State(state): State<HttpState>,
    call: Call,
) -> Result<Response, Refusal> {
    let app = call.app(&state, None)?;
    let list: Vec<Value> = state
        .core
        .connections()
        .iter()
        .filter(|c| c.app.id == app.id)
        .map(|c| {
            let since = c
                .connected_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let names = c.channels();
            let subscriptions: Vec<&str> =
                names.iter().map(|n| channels::logical_channel(n)).collect();
            json!({
                "socket_id": c.id.to_string(),
                "user_id": c.user_id().map(|u| u.to_string()),
                "merchant_id": c.merchant_id().map(|m| m.to_string()),
                "protocol": c.protocol,
                "remote_addr": c.remote.to_string(),
                "connected_since": since,
                "subscriptions": subscriptions,
                "queue_depth": c.outbox.len(),
            })
        })
        .collect();
    Ok(ok(
        StatusCode::OK,
        json!({"count": list.len(), "connections": list}),
    ))
}

/// `GET /api/v1/ws/test?user_id=[&app_id=]`: the seed's unauthenticated test route, only
/// for apps with `enable_test_route = true` (404 otherwise). Sends the user a test
/// notification. When several apps enable it the caller names the app: the route must
/// never pick a tenant by chance.
pub(super) async fn test_route(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let no_route = || Refusal::new(StatusCode::NOT_FOUND, "No such route");
    let app = match query.get("app_id") {
        Some(id) => state
            .core
            .apps
            .by_id(id)
            .filter(|a| a.plain.enable_test_route)
            .cloned()
            .ok_or_else(no_route)?,
        None => {
            let mut enabled = state.core.apps.iter().filter(|a| a.plain.enable_test_route);
            match (enabled.next(), enabled.next()) {
                (Some(app), None) => app.clone(),
                (None, _) => return Err(no_route()),
                (Some(_), Some(_)) => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "Several apps enable the test route: name one with `app_id`",
                    ));
                }
            }
        }
    };
    let user_id = query
        .get("user_id")
        .filter(|u| tokens::valid_user_id(u))
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "`user_id` is required"))?;
    let channel = "notification.events";
    if channels::scope(&app, channel) != Some(Scope::User) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "No test channel configured",
        ));
    }
    let publication = NewPublication {
        channel: channels::core_channel(Scope::User, channel, user_id),
        event: "TEST_EVENT".into(),
        data: json!({"message": "payrelay test event", "timestamp": tokens::now_unix()})
            .to_string(),
        ..Default::default()
    };
    state
        .core
        .publish(&app, publication)
        .await
        .map_err(broker_unavailable)?;
    Ok(ok(StatusCode::OK, json!({"user_id": user_id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/publish_bodies: serde reads a struct from a JSON array of its fields,
    /// so `["settings", "maintenance"]` was an event, `[42]` a token request.
    #[test]
    fn bodies_are_json_objects_not_arrays_of_fields() {
        let app = crate::fuzzing::app("app-key", "app-secret");
        let event = br#"{"channel":"settings","event":"maintenance","data":{}}"#;
        assert!(parse_event(&app, event).is_ok());
        let refused = parse_event(&app, br#"[null, "settings", "maintenance", {}]"#)
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused.message.contains("JSON object"),
            "{}",
            refused.message
        );
        assert!(parse_mint(br#"{"user_id":42}"#).is_ok());
        assert!(parse_mint(br#"[42]"#).is_err());
        assert!(parse_mint(br#"[42, 60]"#).is_err());
        assert!(parse_revoke(br#"{"token":"prt_x"}"#).is_ok());
        assert!(parse_revoke(br#"["prt_x"]"#).is_err());
    }
}
