//! Who calls an API that serves both backends: a merchant's backend with its API key
//! (`X-API-Key: prk_…` or `Authorization: Bearer prk_…`), which then acts for its own
//! merchant only, or the app's backend with the app credentials (HTTP Basic or a Pusher
//! request signature, see `app_auth.rs`). Client tokens and webhook endpoints use it.

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::core::App;
use crate::http::app_auth::Call;
use crate::http::{ApiError, HttpState};

/// Who is asking.
pub enum Caller {
    Merchant {
        app: Arc<App>,
        merchant_id: String,
        key_id: String,
    },
    App(Arc<App>),
}

impl Caller {
    pub fn app(&self) -> &Arc<App> {
        match self {
            Caller::Merchant { app, .. } | Caller::App(app) => app,
        }
    }

    /// Identifies the caller of `call`: an API key when one is presented, else the app
    /// credentials.
    pub async fn of(state: &HttpState, call: &Call) -> Result<Caller, ApiError> {
        let Some(key) = api_key(&call.headers) else {
            return Ok(Caller::App(call.app(state, None)?));
        };
        let found = state
            .merchants
            .store
            .find_key(key)
            .await
            .map_err(|e| {
                tracing::error!("merchant store: {e}");
                ApiError::unavailable("merchant store unavailable")
            })?
            .ok_or_else(|| ApiError::unauthorized("The API key is unknown or revoked"))?;
        let app = state
            .core
            .apps
            .by_id(&found.app_id)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("The API key's app is not served here"))?;
        Ok(Caller::Merchant {
            app,
            merchant_id: found.merchant_id,
            key_id: found.key_id,
        })
    }
}

/// A merchant API key from `X-API-Key` or `Authorization: Bearer`, if one is presented.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    super::authorization::credentials(headers, "Bearer")
}
