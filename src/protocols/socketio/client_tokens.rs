//! Client tokens: what a merchant's backend hands its front end so the browser never
//! holds the merchant's API key (seed 003: "with client token (user-level access)").
//!
//! - `POST /v1/client-tokens` `{merchant_id?, user_id?, ttl_secs?}` → 201
//!   `{token, merchant_id, user_id?, expires_at}`;
//! - `POST /v1/client-tokens/revoke` `{token}` → 200, and the token's sockets are
//!   disconnected at once, on every node.
//!
//! The caller is either the merchant's backend, with its API key (`X-API-Key: prk_…` or
//! `Authorization: Bearer prk_…`; `merchant_id` is then the key's and may be omitted), or
//! the app's backend with the app credentials (HTTP Basic or a Pusher signature;
//! `merchant_id` required). A token minted with an API key remembers the key's id and
//! stops working when the key is revoked. Tokens live in the token store (SQLite, or Redis when
//! `redis_url` is set, so every node verifies them).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::core::{Disconnect, WhichConnections};
use crate::http::app_auth::Call;
use crate::http::caller::Caller;
use crate::http::{ApiError, HttpState};
use crate::tokens::{self, Subject, TokenError, TokenStore};

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/client-tokens", post(mint))
        .route("/v1/client-tokens/revoke", post(revoke))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    crate::http::json_body::object(body)
        .map_err(|e| ApiError::bad_request(format!("Expected a JSON object {shape}: {e}")))
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::BadUserId(_) | TokenError::BadMerchantId(_) => {
            ApiError::bad_request(e.to_string())
        }
        TokenError::Unavailable(_) => {
            tracing::error!("{e}");
            ApiError::unavailable("token store unavailable")
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    merchant_id: Option<String>,
    /// A string or a number, as in the plain protocol's API.
    user_id: Option<serde_json::Value>,
    ttl_secs: Option<u64>,
}

/// A `POST /v1/client-tokens` body as checked: whose token, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientTokenRequest {
    pub merchant_id: String,
    pub user_id: Option<String>,
    pub ttl: Duration,
}

/// Reads a `POST /v1/client-tokens` body of `app`'s caller: a merchant's API key
/// (`key_merchant`, which mints for its own merchant only) or the app's credentials
/// (`None`, `merchant_id` required); valid ids; a lifetime within the app's limit.
pub(crate) fn parse_client_token_request(
    app: &crate::core::App,
    key_merchant: Option<&str>,
    body: &[u8],
) -> Result<ClientTokenRequest, ApiError> {
    let request: MintRequest = parse(body, "{merchant_id?, user_id?, ttl_secs?}")?;
    let merchant_id = match (key_merchant, request.merchant_id) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(ApiError::forbidden(
                "An API key mints tokens for its own merchant only",
            ));
        }
        (Some(own), _) => own.to_string(),
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(ApiError::bad_request(
                "`merchant_id` is required with the app credentials",
            ));
        }
    };
    let settings = &app.socketio;
    let ttl = request.ttl_secs.unwrap_or(settings.client_token_ttl_secs);
    if !(1..=settings.max_client_token_ttl_secs).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "`ttl_secs` must be 1 to {}",
            settings.max_client_token_ttl_secs
        )));
    }
    let user_id = match request.user_id {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            tokens::id_text(&value)
                .ok_or_else(|| ApiError::bad_request("`user_id` must be a string or a number"))?,
        ),
    };
    let checked = ClientTokenRequest {
        merchant_id,
        user_id,
        ttl: Duration::from_secs(ttl),
    };
    checked.subject(None).validate().map_err(token_error)?;
    Ok(checked)
}

impl ClientTokenRequest {
    /// The token's subject; `minted_with`: the id of the API key that asked.
    pub(crate) fn subject(&self, minted_with: Option<String>) -> Subject {
        Subject::Client {
            merchant_id: self.merchant_id.clone(),
            user_id: self.user_id.clone(),
            minted_with,
        }
    }
}

/// Reads a `POST /v1/client-tokens/revoke` body: the token.
pub(crate) fn parse_client_token_revoke(body: &[u8]) -> Result<String, ApiError> {
    parse::<RevokeRequest>(body, "{token}").map(|r| r.token)
}

async fn mint(State(state): State<HttpState>, call: Call) -> Result<Response, ApiError> {
    let caller = Caller::of(&state, &call).await?;
    let app = caller.app();
    let (key_merchant, minted_with) = match &caller {
        Caller::Merchant {
            merchant_id,
            key_id,
            ..
        } => (Some(merchant_id.as_str()), Some(key_id.clone())),
        Caller::App(_) => (None, None),
    };
    let request = parse_client_token_request(app, key_merchant, &call.body)?;
    let subject = request.subject(minted_with);
    let minted = state
        .tokens
        .mint(&app.id, &subject, request.ttl)
        .await
        .map_err(token_error)?;
    tracing::info!(app = %app.id, merchant = ?minted.merchant_id, user = ?minted.user_id, "client token minted");
    Ok((StatusCode::CREATED, Json(minted)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    token: String,
}

async fn revoke(State(state): State<HttpState>, call: Call) -> Result<Response, ApiError> {
    let caller = Caller::of(&state, &call).await?;
    let token = parse_client_token_revoke(&call.body)?;
    let app = caller.app().clone();
    let unknown = || ApiError::not_found("Unknown client token");
    let record = state
        .tokens
        .lookup(&token)
        .await
        .map_err(token_error)?
        .ok_or_else(unknown)?;
    let Subject::Client { merchant_id, .. } = &record.subject else {
        return Err(unknown());
    };
    // Another app's or another merchant's token is "unknown" to this caller.
    // A token whose app cannot be decided is nobody's to revoke.
    let same_app = record.app(&state.core.apps).is_some_and(|a| a.id == app.id);
    let allowed = match &caller {
        Caller::Merchant {
            merchant_id: own, ..
        } => own == merchant_id,
        Caller::App(_) => true,
    };
    if !same_app || !allowed {
        return Err(unknown());
    }
    state.tokens.revoke(&token).await.map_err(token_error)?;
    state
        .core
        .close_merchant_connections(
            &app,
            merchant_id,
            WhichConnections::Credential(Arc::from(tokens::credential_id(&token))),
            Disconnect::Revoked,
        )
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(app = %app.id, merchant = %merchant_id, "client token revoked");
    Ok(Json(json!({"merchant_id": merchant_id, "revoked": true})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/publish_bodies: serde reads a struct from a JSON array of its fields,
    /// so `["m1"]` minted a client token for merchant m1.
    #[test]
    fn bodies_are_json_objects_not_arrays_of_fields() {
        let app = crate::fuzzing::app("app-key", "app-secret");
        let minted = parse_client_token_request(&app, None, br#"{"merchant_id":"m1"}"#);
        assert_eq!(minted.unwrap().merchant_id, "m1");
        let refused = parse_client_token_request(&app, None, br#"["m1"]"#)
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused.message.contains("JSON object"),
            "{}",
            refused.message
        );
        assert!(parse_client_token_revoke(br#"{"token":"pct_x"}"#).is_ok());
        assert!(parse_client_token_revoke(br#"["pct_x"]"#).is_err());
    }
}
