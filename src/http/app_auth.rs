//! Proving a request comes from the app's own backend, which holds the app secret.
//!
//! Two forms, both checked against the secret without ever logging it:
//! - Pusher request signing (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//!   `auth_signature` in the query): what the Pusher server libraries send. The Pusher
//!   HTTP API accepts only this, as Pusher does.
//! - HTTP Basic `app_key:app_secret`: for the simpler routes a backend calls with curl
//!   or any HTTP client (`/v1/events`, the merchant admin API). Use it over TLS only.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::core::App;
use crate::http::{ApiError, HttpState};
use crate::protocols::pusher::request_auth;

/// Which credential forms a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    SignatureOnly,
    SignatureOrBasic,
}

/// One request's view of the caller, for [`authenticate`].
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The app the request proves itself to be. `app_id` is the id in the route's path, if
/// it has one; without it the credentials' key names the app.
pub fn authenticate(
    state: &HttpState,
    app_id: Option<&str>,
    accepts: Accepts,
    request: &Request<'_>,
) -> Result<Arc<App>, ApiError> {
    let basic = match accepts {
        Accepts::SignatureOrBasic => basic_credentials(request.headers)?,
        Accepts::SignatureOnly => None,
    };
    let app = match (basic, app_id) {
        (Some((key, secret)), _) => {
            let app = state
                .core
                .apps
                .by_key(&key)
                .filter(|app| app.secret().as_bytes().ct_eq(secret.as_bytes()).into())
                .ok_or_else(|| ApiError::unauthorized("Invalid app key or secret"))?;
            if app_id.is_some_and(|id| id != &*app.id) {
                return Err(ApiError::unauthorized(
                    "The credentials belong to another app",
                ));
            }
            app.clone()
        }
        (None, Some(id)) => {
            let app = state
                .core
                .apps
                .by_id(id)
                .ok_or_else(|| ApiError::not_found(format!("Unknown app id `{id}`")))?;
            if !signature_attempted(request.uri) {
                return Err(missing_credentials(accepts));
            }
            verify_signature(app, request)?;
            app.clone()
        }
        (None, None) => {
            let key = form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "auth_key")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| missing_credentials(accepts))?;
            let app = state
                .core
                .apps
                .by_key(&key)
                .ok_or_else(|| ApiError::unauthorized("Unknown auth_key"))?;
            verify_signature(app, request)?;
            app.clone()
        }
    };
    if !app.enabled {
        return Err(ApiError::forbidden("The app is disabled"));
    }
    Ok(app)
}

/// Whether the query carries any part of a Pusher request signature. A request with none
/// brought no credentials, and is told what the route takes rather than which signature
/// parameter it lacks.
fn signature_attempted(uri: &Uri) -> bool {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, _)| k == "auth_key" || k == "auth_signature")
}

fn missing_credentials(accepts: Accepts) -> ApiError {
    ApiError::unauthorized(match accepts {
        Accepts::SignatureOnly => {
            "Missing credentials: this route takes a Pusher request signature (auth_key, \
             auth_timestamp, auth_version, body_md5 when there is a body, and auth_signature in \
             the query), as the Pusher server libraries send"
        }
        Accepts::SignatureOrBasic => {
            "Missing credentials: this route takes HTTP Basic app_key:app_secret, or a Pusher \
             request signature (auth_key, auth_timestamp, auth_version, body_md5 when there is \
             a body, and auth_signature in the query)"
        }
    })
}

fn verify_signature(app: &App, request: &Request<'_>) -> Result<(), ApiError> {
    request_auth::verify(
        app,
        request.method.as_str(),
        request.uri.path(),
        request.uri.query().unwrap_or(""),
        request.body,
        now_unix(),
    )
    .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// `Authorization: Basic base64(key:secret)`, if present. A Basic header that does not
/// decode is an error rather than "no credentials", so a typo is reported as such.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(encoded) = super::authorization::credentials(headers, "Basic") else {
        return Ok(None);
    };
    let malformed = || ApiError::unauthorized("Malformed Basic credentials");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (key, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((key.to_string(), secret.to_string())))
}

/// A request taken whole for [`authenticate`], so handlers of the simpler routes (HTTP
/// Basic or signature) read alike.
pub struct Call {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    /// The app these credentials prove the caller to be (HTTP Basic or signature).
    pub fn app(&self, state: &HttpState, app_id: Option<&str>) -> Result<Arc<App>, ApiError> {
        let request = Request {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: &self.body,
        };
        authenticate(state, app_id, Accepts::SignatureOrBasic, &request)
    }
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let OriginalUri(uri) = OriginalUri::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            method,
            uri,
            headers,
            body,
        })
    }
}
