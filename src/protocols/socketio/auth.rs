//! Who a Socket.IO client is, decided once, on connect (seed 003: "the connection
//! authenticates once on connect").
//!
//! A client presents a merchant API key (`apiKey`, merchant-level) or a client token
//! (`token`, minted by the merchant's backend, user-level), in the handshake query as the
//! seed's snippet does or in the Socket.IO `auth` payload, which keeps it out of URLs and
//! proxy logs. Either names the app and the merchant; both land in the merchant's room.
//! Every refusal is a message the client reads in `connect_error`; none names the
//! credential itself.

use std::sync::Arc;

use serde::Deserialize;

use crate::core::App;
use crate::http::HttpState;
use crate::tokens::{self, Subject, TokenStore};

/// The credential fields of the `auth` payload (`io(url, {auth: {apiKey}})`). No `Debug`:
/// it holds secrets.
#[derive(Default, Deserialize)]
pub(crate) struct AuthPayload {
    #[serde(rename = "apiKey", default)]
    api_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// What a client presented.
#[derive(PartialEq, Eq)]
pub(crate) enum Presented {
    ApiKey(String),
    Token(String),
}

impl Presented {
    /// The secret itself (for a hashed failure count; never for a log).
    pub(super) fn secret(&self) -> &str {
        match self {
            Presented::ApiKey(secret) | Presented::Token(secret) => secret,
        }
    }
}

impl std::fmt::Debug for Presented {
    // Both are bearer secrets: never in logs, not even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::ApiKey(_) => f.write_str("ApiKey(..)"),
            Presented::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// How an open socket's credential is looked up again (revocation made elsewhere).
#[derive(Clone)]
pub(super) enum Recheck {
    ApiKey {
        key_id: String,
    },
    Token {
        token: String,
        /// The token's expiry as seen on connect: a token missing after it expired, not
        /// revoked (Redis drops keys at their TTL).
        expires_at: Option<i64>,
        /// The API key that minted the token, which must stay live too.
        minted_with: Option<String>,
    },
}

impl std::fmt::Debug for Recheck {
    // The token is a bearer secret: never in logs, not even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recheck::ApiKey { key_id } => write!(f, "ApiKey({key_id})"),
            Recheck::Token { .. } => f.write_str("Token(..)"),
        }
    }
}

/// A client that proved who it is.
#[derive(Debug)]
pub(super) struct Identity {
    pub app: Arc<App>,
    pub merchant_id: String,
    /// The merchant's user a client token was minted for, if any.
    pub user_id: Option<String>,
    /// What the connection remembers of its credential: the key id, or the token's hash
    /// prefix ([`tokens::credential_id`]).
    pub credential_id: String,
    pub recheck: Recheck,
}

/// Why a connection is refused; the text is the `connect_error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error(
        "Missing credentials: pass apiKey (a merchant API key) or token (a client token) in the query or the auth payload"
    )]
    Missing,
    #[error("Pass either apiKey or token, not both")]
    Both,
    #[error("Invalid API key: unknown or revoked")]
    BadApiKey,
    #[error("Invalid client token: unknown, expired or revoked")]
    BadToken,
    #[error("The credential's app is not served here")]
    UnknownApp,
    #[error("The client token names no app and several are served here")]
    NoApp,
    #[error("Socket.IO is disabled for this app")]
    Disabled,
    #[error("Authentication is unavailable, try again later")]
    StoreUnavailable,
    #[error("Too many failed attempts; retry in {0} s")]
    Throttled(u64),
    #[error("Connection refused: {0}")]
    Refused(String),
}

impl AuthError {
    /// A short label for metrics.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Both => "both",
            AuthError::BadApiKey => "bad_api_key",
            AuthError::BadToken => "bad_token",
            AuthError::UnknownApp => "unknown_app",
            AuthError::NoApp => "no_app",
            AuthError::Disabled => "disabled",
            AuthError::StoreUnavailable => "store_unavailable",
            AuthError::Throttled(_) => "throttled",
            AuthError::Refused(_) => "refused",
        }
    }
}

/// The credential in the query (the seed's form) or else in the auth payload.
pub(crate) fn presented(query: Option<&str>, auth: &AuthPayload) -> Result<Presented, AuthError> {
    let mut api_key = None;
    let mut token = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "apiKey" if !value.is_empty() => api_key = Some(value.into_owned()),
            "token" if !value.is_empty() => token = Some(value.into_owned()),
            _ => {}
        }
    }
    let api_key = api_key.or_else(|| auth.api_key.clone().filter(|k| !k.is_empty()));
    let token = token.or_else(|| auth.token.clone().filter(|t| !t.is_empty()));
    match (api_key, token) {
        (Some(_), Some(_)) => Err(AuthError::Both),
        (Some(key), None) => Ok(Presented::ApiKey(key)),
        (None, Some(token)) => Ok(Presented::Token(token)),
        (None, None) => Err(AuthError::Missing),
    }
}

/// Resolves a presented credential to the app and merchant it stands for.
pub(super) async fn identify(
    state: &HttpState,
    presented: Presented,
) -> Result<Identity, AuthError> {
    let identity = match presented {
        Presented::ApiKey(api_key) => {
            let found = state
                .merchants
                .store
                .find_key(&api_key)
                .await
                .map_err(|e| {
                    tracing::error!("merchant store: {e}");
                    AuthError::StoreUnavailable
                })?
                .ok_or(AuthError::BadApiKey)?;
            let app = state
                .core
                .apps
                .by_id(&found.app_id)
                .cloned()
                .ok_or(AuthError::UnknownApp)?;
            Identity {
                app,
                merchant_id: found.merchant_id,
                user_id: None,
                credential_id: found.key_id.clone(),
                recheck: Recheck::ApiKey {
                    key_id: found.key_id,
                },
            }
        }
        Presented::Token(token) => {
            let record = state
                .tokens
                .lookup(&token)
                .await
                .map_err(|e| {
                    tracing::error!("token store: {e}");
                    AuthError::StoreUnavailable
                })?
                .filter(|r| r.is_live(tokens::now_unix()))
                .ok_or(AuthError::BadToken)?;
            let app = record
                .app(&state.core.apps)
                .ok_or(if record.app_id.is_none() {
                    AuthError::NoApp
                } else {
                    AuthError::UnknownApp
                })?;
            // An access token of the plain protocol is no client token.
            let Subject::Client {
                merchant_id,
                user_id,
                minted_with,
            } = record.subject
            else {
                return Err(AuthError::BadToken);
            };
            if let Some(key_id) = &minted_with
                && !key_is_live(state, &app.id, key_id).await?
            {
                return Err(AuthError::BadToken);
            }
            Identity {
                app,
                merchant_id,
                user_id,
                credential_id: tokens::credential_id(&token),
                recheck: Recheck::Token {
                    token,
                    expires_at: record.expires_at,
                    minted_with,
                },
            }
        }
    };
    if !identity.app.enabled || !identity.app.socketio.enabled {
        return Err(AuthError::Disabled);
    }
    if !crate::merchants::store::valid_merchant_id(&identity.merchant_id) {
        // A token written by another backend may name anything.
        return Err(AuthError::BadToken);
    }
    Ok(identity)
}

async fn key_is_live(state: &HttpState, app_id: &str, key_id: &str) -> Result<bool, AuthError> {
    state
        .merchants
        .store
        .is_key_live(app_id, key_id)
        .await
        .map_err(|e| {
            tracing::error!("merchant store: {e}");
            AuthError::StoreUnavailable
        })
}

/// What a recheck of a socket's credential found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Revoked (a client token also with the key that minted it).
    Revoked,
    /// Still good; a client token's expiry as the store has it now.
    Live { expires_at: Option<i64> },
    /// The store did not answer: the socket stays, the next recheck decides.
    Unknown,
}

/// Looks the credential a socket was opened with up again.
pub(super) async fn recheck(state: &HttpState, app: &App, recheck: &Recheck) -> Verdict {
    let key_live = |key_id: &str| {
        let store = &state.merchants.store;
        let (app_id, key_id) = (app.id.clone(), key_id.to_string());
        async move { store.is_key_live(&app_id, &key_id).await }
    };
    let answer = match recheck {
        Recheck::ApiKey { key_id } => key_live(key_id)
            .await
            .map(|live| (live, None))
            .map_err(|e| e.to_string()),
        Recheck::Token {
            token,
            expires_at,
            minted_with,
        } => match tokens::standing(&*state.tokens, token, *expires_at).await {
            Ok(tokens::Standing::Revoked) => Ok((false, None)),
            Ok(tokens::Standing::Current { expires_at }) => match minted_with {
                Some(key_id) => key_live(key_id)
                    .await
                    .map(|live| (live, expires_at))
                    .map_err(|e| e.to_string()),
                None => Ok((true, expires_at)),
            },
            Err(e) => Err(e.to_string()),
        },
    };
    match answer {
        Ok((true, expires_at)) => Verdict::Live { expires_at },
        Ok((false, _)) => Verdict::Revoked,
        Err(e) => {
            tracing::debug!("credential recheck skipped: {e}");
            Verdict::Unknown
        }
    }
}

impl Recheck {
    /// A client token's expiry as seen on connect; `None` for an API key.
    pub(super) fn expires_at(&self) -> Option<i64> {
        match self {
            Recheck::ApiKey { .. } => None,
            Recheck::Token { expires_at, .. } => *expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(api_key: Option<&str>, token: Option<&str>) -> AuthPayload {
        AuthPayload {
            api_key: api_key.map(String::from),
            token: token.map(String::from),
        }
    }

    #[test]
    fn the_query_or_the_auth_payload_carries_one_credential() {
        let none = AuthPayload::default();
        assert_eq!(
            presented(Some("apiKey=prk_1&EIO=4&transport=websocket"), &none),
            Ok(Presented::ApiKey("prk_1".into()))
        );
        assert_eq!(
            presented(Some("EIO=4&token=pct_1"), &none),
            Ok(Presented::Token("pct_1".into()))
        );
        assert_eq!(
            presented(Some("EIO=4"), &payload(None, Some("pct_2"))),
            Ok(Presented::Token("pct_2".into()))
        );
        assert_eq!(
            presented(Some("EIO=4&apiKey="), &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            presented(Some("apiKey=prk_1"), &payload(None, Some("pct_2"))),
            Err(AuthError::Both)
        );
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let recheck = Recheck::Token {
            token: "pct_secret".into(),
            expires_at: None,
            minted_with: None,
        };
        assert!(!format!("{recheck:?}").contains("secret"));
        let presented = Presented::ApiKey("prk_secret".into());
        assert!(!format!("{presented:?}").contains("secret"));
    }
}
