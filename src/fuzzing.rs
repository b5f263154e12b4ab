//! The parsers of untrusted input, as the fuzz targets in `fuzz/` call them.
//!
//! Not an API for anything else (hidden from the docs, no stability promise to users).
//! It exists so the targets reach every parser through one small surface instead of
//! adapter internals: the parsers themselves stay where they are and are only made
//! visible to the crate, and because this module is part of the library, renaming or
//! reshaping a parser breaks `cargo build` and clippy here, where everyone sees it, rather
//! than only the fuzz build. Each function is a thin call of the code the server runs;
//! none re-implements a rule.
//!
//! To fuzz a new parser (webhook bodies, payment requests, ...): make it reachable from
//! here with a function of plain types, then add a target (see `fuzz/README.md`).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::{AppConfig, Secret};
use crate::core::{App, Publication};
use crate::protocols::{plain, pusher, socketio};

pub use crate::core::channel::{ChannelKind, classify as classify_channel};
pub use crate::core::{MAX_EVENT_NAME_LEN, SocketId};
pub use crate::merchants::channels::{
    KINDS as MERCHANT_CHANNEL_KINDS, owner as merchant_channel_owner,
    private_channel as merchant_private_channel,
};
pub use crate::merchants::jwt::{JwtAlgorithm, JwtConfig, JwtError, JwtVerifier};
pub use crate::merchants::store::valid_merchant_id;
pub use crate::protocols::pusher::auth::{
    AuthError as ChannelAuthError, check_presence, check_private, check_signin, sign,
    sign_presence, sign_private,
};
pub use crate::protocols::pusher::frames::{
    ClientFrame, SigninData, SubscribeData, UnsubscribeData, parse_data as parse_frame_data,
    presence_member, signin_user_id,
};
pub use crate::protocols::pusher::request_auth::{
    MAX_CLOCK_SKEW_SECS, RequestAuthError, sign_query, verify as verify_request,
};
pub use crate::protocols::pusher::wire_format::WireFormat;
pub use crate::tokens::valid_user_id;
pub use crate::webhooks::endpoint::{
    EventFilter, MAX_DESCRIPTION_LEN, MAX_FILTER_LEN, MAX_FILTERS, MAX_URL_LEN,
};
pub use crate::webhooks::guard::non_public as non_public_address;
pub use crate::webhooks::manage::{EndpointPatch, NewEndpoint, parse_new_endpoint, parse_patch};

/// An app configured as the development node's, with this key and secret.
pub fn app(key: &str, secret: &str) -> App {
    let mut config = AppConfig::development();
    config.key = key.to_string();
    config.secret = Secret::new(secret);
    App::from_config(&config)
}

/// A refusal of the HTTP APIs: status and message.
pub type Refusal = (u16, String);

fn refusal(e: crate::http::ApiError) -> Refusal {
    (e.status.as_u16(), e.message)
}

// ---- Pusher protocol frames ---------------------------------------------------------

/// A client's WebSocket message (`binary`: a binary frame) on a connection of `format`.
pub fn pusher_client_frame(
    format: WireFormat,
    binary: bool,
    bytes: &[u8],
) -> Result<ClientFrame, String> {
    format.decode(binary, bytes)
}

/// A WebSocket message as the server writes it: whether it is binary, and its bytes.
fn message_bytes(message: axum::extract::ws::Message) -> (bool, Vec<u8>) {
    use axum::extract::ws::Message;
    match message {
        Message::Text(text) => (false, text.as_bytes().to_vec()),
        Message::Binary(bytes) => (true, bytes.to_vec()),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => (true, Vec::new()),
    }
}

/// A control frame (JSON text, as `frames.rs` builds them) as `format` writes it.
pub fn pusher_control_message(format: WireFormat, json: &str) -> (bool, Vec<u8>) {
    message_bytes(format.message(json.into()))
}

/// A publication's event frame as `format` writes it; channel, event and data come from
/// whoever published (HTTP API, client events).
pub fn pusher_event_message(
    format: WireFormat,
    channel: &str,
    event: &str,
    data: &str,
) -> (bool, Vec<u8>) {
    let publication = Publication::new("1".into(), channel.into(), event.into(), data.into());
    message_bytes(format.publication(&publication, true))
}

/// `pusher:error` with a message that may quote client input.
pub fn pusher_error_frame(code: Option<u16>, message: &str) -> String {
    pusher::frames::error(code, message)
}

/// `pusher:subscription_error` for a channel name the client sent.
pub fn pusher_subscription_error_frame(channel: &str, error: &str) -> String {
    pusher::frames::subscription_error(channel, "AuthError", error, 401)
}

/// `pusher:signin_success`, which echoes the client's `user_data`.
pub fn pusher_signin_success_frame(user_data: &str) -> String {
    pusher::frames::signin_success(user_data)
}

// ---- Pusher HTTP API ----------------------------------------------------------------

/// One event of `POST /apps/{id}/events` or `batch_events`, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEvent {
    pub name: String,
    pub data: String,
    pub channels: Vec<String>,
    /// The excluded socket, as the server shows it.
    pub exclude: Option<String>,
    /// The `info` attributes asked for.
    pub info: usize,
}

impl ApiEvent {
    fn from(event: pusher::ValidEvent) -> ApiEvent {
        ApiEvent {
            name: event.name,
            data: event.data,
            channels: event.channels,
            exclude: event.exclude.map(|id| id.to_string()),
            info: event.info.len(),
        }
    }
}

/// The body of `POST /apps/{id}/events`.
pub fn pusher_trigger_body(app: &App, body: &[u8]) -> Result<ApiEvent, Refusal> {
    pusher::parse_trigger(app, body)
        .map(ApiEvent::from)
        .map_err(refusal)
}

/// The body of `POST /apps/{id}/batch_events`.
pub fn pusher_batch_body(app: &App, body: &[u8]) -> Result<Vec<ApiEvent>, Refusal> {
    pusher::parse_batch(app, body)
        .map(|events| events.into_iter().map(ApiEvent::from).collect())
        .map_err(refusal)
}

/// The `info` query parameter of the channel routes: how many distinct attributes.
pub fn pusher_info_param(info: Option<&str>, allow_cache: bool) -> Result<usize, Refusal> {
    pusher::parse_info(info, allow_cache)
        .map(|attributes| attributes.len())
        .map_err(refusal)
}

/// An `Authorization` header's HTTP Basic `key:secret`, if it is one. A value that is
/// not a valid header value never reaches the server, so it is `Ok(None)` here.
pub fn basic_credentials(authorization: &[u8]) -> Result<Option<(String, String)>, Refusal> {
    let Ok(value) = HeaderValue::from_bytes(authorization) else {
        return Ok(None);
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    crate::http::app_auth::basic_credentials(&headers).map_err(refusal)
}

/// The body of `POST /v1/websocket/auth`: `(socket_id, channel_name)`, as a form when
/// `content_type` says so, else as JSON.
pub fn merchant_auth_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(String, String), String> {
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    pusher::parse_merchant_auth_body(&headers, body)
        .map(|request| (request.socket_id, request.channel_name))
}

// ---- Plain JSON protocol ------------------------------------------------------------

/// A plain-protocol client message: `(event, channel)`.
pub fn plain_client_message(bytes: &[u8]) -> Result<(String, Option<String>), String> {
    serde_json::from_slice::<plain::ClientMessage>(bytes)
        .map(|m| (m.event, m.channel))
        .map_err(|e| e.to_string())
}

/// The core channel of a logical channel: global, or `user_id`'s own.
pub fn plain_core_channel(global: bool, channel: &str, user_id: &str) -> String {
    let scope = if global {
        plain::Scope::Global
    } else {
        plain::Scope::User
    };
    plain::core_channel(scope, channel, user_id)
}

/// The logical channel clients see for a core channel.
pub fn plain_logical_channel(core_channel: &str) -> &str {
    plain::logical_channel(core_channel)
}

/// The plain protocol's event frame for a publication (data spliced in as JSON when it
/// is JSON).
pub fn plain_event_frame(core_channel: &str, event: &str, data: &str) -> String {
    let publication = Publication::new("1".into(), core_channel.into(), event.into(), data.into());
    plain::event_frame(&publication).as_str().to_string()
}

// ---- Socket.IO ----------------------------------------------------------------------

/// The credential a Socket.IO client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(String),
    Token(String),
}

/// The credential of a Socket.IO CONNECT: from the handshake query or the CONNECT's auth
/// payload (`auth`, the JSON text after `40`; `None` when the packet has none). A payload
/// that is not the expected object counts as no payload, as socketioxide's `TryData`
/// leaves it to the connect middleware.
pub fn socketio_credential(query: Option<&str>, auth: Option<&str>) -> Result<Credential, String> {
    let payload: socketio::auth::AuthPayload = auth
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    match socketio::auth::presented(query, &payload) {
        Ok(socketio::auth::Presented::ApiKey(key)) => Ok(Credential::ApiKey(key)),
        Ok(socketio::auth::Presented::Token(token)) => Ok(Credential::Token(token)),
        Err(e) => Err(e.to_string()),
    }
}

// ---- Merchant JWTs ------------------------------------------------------------------

/// The `alg` a token's header claims, read without trusting it (for error messages).
pub fn jwt_unverified_alg(token: &str) -> Option<String> {
    crate::merchants::jwt::unverified_alg(token)
}

/// The usable keys of a JWKS document.
pub fn jwks_key_count(bytes: &[u8]) -> Result<usize, String> {
    crate::merchants::parse_jwks(bytes).map(|keys| keys.len())
}

// ---- Webhook endpoint bodies --------------------------------------------------------

/// An endpoint URL as `POST` and `PATCH /v1/webhooks/endpoints` check it, with
/// `allow_private_targets` as given: the URL stored, or the refusal.
pub fn webhook_url(raw: &str, allow_private: bool) -> Result<String, String> {
    let config = crate::webhooks::config::WebhooksConfig {
        allow_private_targets: allow_private,
        ..Default::default()
    };
    crate::webhooks::manage::checked_url(raw, &config).map_err(|e| e.to_string())
}

/// An `events` list as the endpoint routes check it (`None`: every event).
pub fn webhook_filter(events: Option<Vec<String>>) -> Result<EventFilter, String> {
    crate::webhooks::manage::checked_filter(events).map_err(|e| e.to_string())
}

/// A `description` as the endpoint routes check it.
pub fn webhook_description(text: Option<String>) -> Result<Option<String>, String> {
    crate::webhooks::manage::checked_description(text).map_err(|e| e.to_string())
}

/// The stored form of a filter and the filter read back from it.
pub fn webhook_filter_stored(filter: &EventFilter) -> EventFilter {
    EventFilter::from_column(filter.to_column())
}

// ---- Payment requests ---------------------------------------------------------------

pub use crate::payloads::PayloadsConfig;
pub use crate::payloads::model::{
    BodyError, MAX_IDENTIFIER_CHARS, MAX_INSTRUCTION_CHARS, MAX_RETURN_URL_CHARS, MAX_TOKEN_CHARS,
    NewPayload, Payload, Resolution, parse_create as payload_create,
    parse_opened as payload_opened, parse_resolution as payload_resolution,
    parse_uuid as payload_uuid,
};

/// The payload a create request becomes (fresh uuids, created at `now_ms`).
pub fn payload_of(new: NewPayload, now_ms: i64) -> Payload {
    crate::payloads::store::new_row("1", new, now_ms)
}

// ---- Publishing and token routes ----------------------------------------------------

pub use crate::idempotency::parse_key as idempotency_key;

/// What a publishing route (`POST /v1/events`, `POST /api/v1/events`) makes of a body,
/// before the publish path's own checks ([`route_publication_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePublication {
    /// The core channel.
    pub channel: String,
    /// The channel as the route's answer names it.
    pub answer_channel: String,
    pub event: String,
    pub data: String,
    /// Marked for one user of the channel's owner.
    pub for_user: Option<String>,
    /// Marked for everyone on the channel (`merchant_wide`).
    pub everyone: bool,
    /// The body's `idempotency_key`, unchecked (the header's wins).
    pub idempotency_key: Option<String>,
}

fn route_publication(
    answer_channel: String,
    new: crate::core::NewPublication,
    idempotency_key: Option<String>,
) -> RoutePublication {
    use crate::core::Audience;
    RoutePublication {
        channel: new.channel,
        answer_channel,
        event: new.event,
        data: new.data,
        for_user: match &new.audience {
            Audience::User(user) => Some(user.to_string()),
            _ => None,
        },
        everyone: matches!(new.audience, Audience::Everyone),
        idempotency_key,
    }
}

/// The body of `POST /v1/events` `{merchant_id, kind, event, data, user_id?, …}`.
pub fn merchant_event_body(body: &[u8]) -> Result<RoutePublication, Refusal> {
    pusher::parse_merchant_event(body)
        .map(|e| route_publication(e.channel, e.publication, e.idempotency_key))
        .map_err(refusal)
}

/// The body of `POST /api/v1/events` `{user_id?, channel, event, data, …}` for `app`.
pub fn plain_event_body(app: &App, body: &[u8]) -> Result<RoutePublication, Refusal> {
    plain::parse_event(app, body)
        .map(|e| route_publication(e.channel, e.publication, e.idempotency_key))
        .map_err(|r| (r.status.as_u16(), r.message))
}

/// What the publish path checks of a route's publication before stamping it (channel,
/// event name, data size), as the route answers a refusal.
pub fn route_publication_check(app: &App, publication: &RoutePublication) -> Result<(), Refusal> {
    let new = crate::core::NewPublication {
        channel: publication.channel.clone(),
        event: publication.event.clone(),
        data: publication.data.clone(),
        ..Default::default()
    };
    crate::core::check_publication(app, &new).map_err(|e| refusal(pusher::publish_error(e)))
}

/// The body of `POST /api/v1/tokens` `{user_id, ttl_secs?}`: the user and the lifetime in
/// seconds.
pub fn access_token_body(body: &[u8]) -> Result<(String, u64), Refusal> {
    plain::parse_mint(body)
        .map(|(subject, ttl)| {
            let user = subject.user_id().unwrap_or_default().to_string();
            (user, ttl.as_secs())
        })
        .map_err(|r| (r.status.as_u16(), r.message))
}

/// The body of `POST /api/v1/tokens/revoke` `{token}`.
pub fn access_token_revoke_body(body: &[u8]) -> Result<String, Refusal> {
    plain::parse_revoke(body).map_err(|r| (r.status.as_u16(), r.message))
}

/// The body of `POST /v1/client-tokens` `{merchant_id?, user_id?, ttl_secs?}` from
/// `app`'s backend (`key_merchant` `None`) or a merchant's API key: merchant, user,
/// lifetime in seconds.
pub fn client_token_body(
    app: &App,
    key_merchant: Option<&str>,
    body: &[u8],
) -> Result<(String, Option<String>, u64), Refusal> {
    socketio::parse_client_token_request(app, key_merchant, body)
        .map(|r| (r.merchant_id, r.user_id, r.ttl.as_secs()))
        .map_err(refusal)
}

/// The body of `POST /v1/client-tokens/revoke` `{token}`.
pub fn client_token_revoke_body(body: &[u8]) -> Result<String, Refusal> {
    socketio::parse_client_token_revoke(body).map_err(refusal)
}

/// Client-token lifetimes of an app: the default and the longest.
pub fn client_token_ttls(app: &App) -> (u64, u64) {
    (
        app.socketio.client_token_ttl_secs,
        app.socketio.max_client_token_ttl_secs,
    )
}

/// The plain protocol's logical channels of an app: global ones, per-user ones.
pub fn plain_channels(app: &App) -> (Vec<String>, Vec<String>) {
    (
        app.plain.global_channels.clone(),
        app.plain.user_channels.clone(),
    )
}
