//! One plain JSON socket: `GET /api/v1/ws?token=...`.
//!
//! Everything that can refuse the connection happens before the upgrade, so a refusal is
//! an HTTP status with the seed's JSON body rather than a socket that opens and closes.
//! After the upgrade one task owns the socket, as in the Pusher adapter: it drains the
//! outbox, reads client messages, sends WebSocket pings on a timer and drops a socket that
//! stops answering, and looks its token up again now and then so a token revoked behind
//! payrelay's back still closes the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::channels::{self, Scope};
use super::envelope::Refusal;
use super::{PLAIN_SLOT, PROTOCOL, codes};
use crate::core::outbox::{Drain, Outbound, Recovery, Subscribed};
use crate::core::rate::TokenBucket;
use crate::core::{
    App, Disconnect, Publication, Session, StreamPosition, Subscription, WhichConnections,
};
use crate::http::{HttpState, authorization};
use crate::protocols::websocket;
use crate::tokens::{self, TokenStore};

/// The subprotocol a browser offers with its token (`new WebSocket(url, ["bearer", token])`).
const BEARER_PROTOCOL: &str = "bearer";
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 8 * 1024;

/// Where the client put its token.
fn presented_token(query: &HashMap<String, String>, headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(token) = query.get("token").filter(|t| !t.is_empty()) {
        return Some((token.clone(), false));
    }
    if let Some(token) = authorization::credentials(headers, "Bearer") {
        return Some((token.to_string(), false));
    }
    // `Sec-WebSocket-Protocol: bearer, <token>`: the token follows the `bearer` entry.
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let at = offered.iter().position(|p| *p == BEARER_PROTOCOL)?;
    offered
        .get(at + 1)
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_string(), true))
}

/// `https://app.example.com` exactly, or `https://*.example.com` for any subdomain.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        // No Origin: not a browser, so there is no cross-site request to stop.
        return true;
    };
    if allowed.is_empty() {
        return true;
    }
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('/').to_ascii_lowercase();
        match pattern.split_once("://*.") {
            Some((scheme, domain)) => origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| {
                    host.strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
                }),
            None => origin == pattern,
        }
    })
}

pub(super) async fn upgrade(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&state, &query, remote, &headers).await {
        Ok(admitted) => {
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    return Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("Not a WebSocket upgrade: {e}"),
                    )
                    .into_response();
                }
            };
            let ws = if admitted.via_subprotocol {
                ws.protocols([BEARER_PROTOCOL])
            } else {
                ws
            };
            let in_flight = state.tracker.token();
            let tokens = state.tokens.clone();
            // Up to twice the app's limit is read and refused with 1009; anything larger
            // is refused from its header, unread (`websocket::oversized`).
            let transport_limit = websocket::transport_limit(
                admitted.session.connection().app.limits.max_message_size,
            );
            ws.read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_message_size(transport_limit)
                .max_frame_size(transport_limit)
                .on_upgrade(move |socket| async move {
                    let _in_flight = in_flight;
                    serve(socket, admitted, tokens).await;
                })
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// A connection that passed every check, ready to be upgraded.
struct Admitted {
    session: Session,
    token: String,
    user_id: Arc<str>,
    expires_at: Option<i64>,
    via_subprotocol: bool,
    /// Positions to resume the channels subscribed on connect from.
    since: HashMap<String, StreamPosition>,
}

async fn admit(
    state: &HttpState,
    query: &HashMap<String, String>,
    remote: SocketAddr,
    headers: &HeaderMap,
) -> Result<Admitted, Refusal> {
    let unauthorized = |message: &str| Refusal::new(StatusCode::UNAUTHORIZED, message);
    let Some((token, via_subprotocol)) = presented_token(query, headers) else {
        return Err(unauthorized("Missing access token"));
    };
    let record = match state.tokens.lookup(&token).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(unauthorized("Invalid or expired token")),
        Err(e) => {
            tracing::error!("{e}");
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Token store unavailable",
            ));
        }
    };
    if !record.is_live(tokens::now_unix()) {
        return Err(unauthorized("Invalid or expired token"));
    }
    // A merchant's client token (Socket.IO) is no access token.
    let Some(user_id) = record.access_user() else {
        return Err(unauthorized("Invalid or expired token"));
    };
    if !tokens::valid_user_id(user_id) {
        return Err(unauthorized("The token names an invalid user id"));
    }
    let user_id = Arc::from(user_id);
    let Some(app) = record.app(&state.core.apps) else {
        return Err(unauthorized(if record.app_id.is_none() {
            "The token names no app and several are served here"
        } else {
            "The token's app is not served here"
        }));
    };
    if !app.plain.websocket_enabled {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "WebSocket is disabled",
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&app.plain.allowed_origins, origin) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "Origin not allowed"));
    }
    let since = parse_since_query(&app, query)?;
    let session = state
        .core
        .open_session(&app, PROTOCOL, remote)
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Admitted {
        session,
        token,
        user_id,
        expires_at: record.expires_at,
        via_subprotocol,
        since,
    })
}

/// What a client sends: `{"event", "channel"?, "since"?}`.
#[derive(Deserialize)]
pub(crate) struct ClientMessage {
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) channel: Option<String>,
    /// With `subscribe`: the position of the last event the client saw on the channel.
    #[serde(default)]
    pub(crate) since: Option<String>,
}

/// The `since` query parameter of the upgrade: `<channel>:<position>` pairs separated by
/// commas, for the channels subscribed on connect (`global_channels`).
fn parse_since_query(
    app: &App,
    query: &HashMap<String, String>,
) -> Result<HashMap<String, StreamPosition>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, message);
    let mut since = HashMap::new();
    let Some(list) = query.get("since") else {
        return Ok(since);
    };
    for pair in list.split(',').filter(|p| !p.is_empty()) {
        let shown: String = pair.chars().take(80).collect();
        let Some((channel, position)) = pair.rsplit_once(':') else {
            return Err(bad(format!(
                "`since` takes <channel>:<position> pairs separated by commas, not `{shown}`"
            )));
        };
        let Some(position) = StreamPosition::parse(position) else {
            return Err(bad(format!("Invalid position in `since`: `{shown}`")));
        };
        if !app.plain.global_channels.iter().any(|c| c == channel) {
            return Err(bad(format!(
                "`since` names `{}`, which is not subscribed on connect; resume it with its subscribe message",
                channel.chars().take(64).collect::<String>()
            )));
        }
        since.insert(channel.to_string(), position);
    }
    Ok(since)
}

/// How a socket ended, for the debug log.
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    SocketError,
    Kicked(Disconnect),
    PingTimeout,
    Garbage,
    Oversized,
    TokenGone,
    TokenExpired,
}

struct PlainSocket {
    ws: WebSocket,
    session: Session,
    app: Arc<App>,
    user_id: Arc<str>,
    token: String,
    expires_at: Option<i64>,
    tokens: Arc<dyn TokenStore>,
    pong_timeout: Duration,
    invalid_messages: u32,
    subscribes: TokenBucket,
    batch: Vec<Outbound>,
    /// Positions from the upgrade's `since`, used by the subscriptions made on connect.
    since: HashMap<String, StreamPosition>,
}

async fn serve(ws: WebSocket, admitted: Admitted, tokens: Arc<dyn TokenStore>) {
    let Admitted {
        session,
        token,
        user_id,
        expires_at,
        since,
        ..
    } = admitted;
    let conn = session.connection().clone();
    let app = conn.app.clone();
    conn.set_credential(Arc::from(tokens::credential_id(&token)));
    let mut socket = PlainSocket {
        ws,
        pong_timeout: session.core().settings.pong_timeout,
        session,
        app,
        user_id,
        token,
        expires_at,
        tokens,
        invalid_messages: 0,
        subscribes: conn.app.limits.subscribe_budget(),
        batch: Vec::new(),
        since,
    };
    let end = socket.run().await;
    tracing::debug!(socket_id = %conn.id, user = %socket.user_id, ?end, "plain socket closed");
}

impl PlainSocket {
    async fn run(&mut self) -> End {
        // Signing in puts the socket in the user index, which replacement and logout use.
        if let Err(e) = self.session.sign_in(&self.user_id) {
            tracing::warn!("plain socket sign-in failed: {e}");
            return End::SocketError;
        }
        let since = std::mem::take(&mut self.since);
        for channel in self.app.plain.global_channels.clone() {
            let core_channel = channels::core_channel(Scope::Global, &channel, &self.user_id);
            if let Err(e) = self
                .session
                .subscribe_resuming(&core_channel, None, since.get(&channel))
                .await
            {
                tracing::warn!(%channel, "auto-subscription failed: {e}");
            }
        }
        // Only now, with the new socket established, are older ones told to go.
        let newest = self.session.connection().id;
        let keep = self.app.plain.max_sockets_per_user;
        let core = self.session.core().clone();
        let which = WhichConnections::OlderThan {
            protocol: PROTOCOL,
            newest,
            keep,
        };
        if let Err(e) = core
            .close_user_connections(&self.app, &self.user_id, which, Disconnect::Replaced)
            .await
        {
            tracing::warn!("could not replace older sockets: {e}");
        }

        let conn = self.session.connection().clone();
        let ping_every = Duration::from_secs(self.app.plain.ping_interval_secs);
        let mut ping_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        // A client that was silent for a while must not get a burst of catch-up pings.
        ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck =
            tokens::BackgroundCheck::every(Duration::from_secs(self.app.plain.token_recheck_secs));
        let (store, token, expires_at) = (self.tokens.clone(), self.token.clone(), self.expires_at);
        let check = move || {
            let (store, token) = (store.clone(), token.clone());
            async move { tokens::standing(&*store, &token, expires_at).await }
        };
        // The socket lives as long as its token (plus the app's grace); a recheck moves
        // the deadline when the token's writer moved its expiry.
        let grace = Duration::from_secs(self.app.plain.token_expiry_grace_secs);
        let mut deadline = tokens::expiry_deadline(self.expires_at, grace);
        let expiry = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
        tokio::pin!(expiry);
        let mut last_seen = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            tokio::select! {
                drained = conn.outbox.drain(&mut self.batch) => match drained {
                    Drain::Frames => {
                        if let Err(end) = self.write_batch().await {
                            return end;
                        }
                    }
                    Drain::Close(reason) => {
                        if reason == Disconnect::SlowConsumer {
                            self.session.core().record_slow_consumer();
                        }
                        let (code, message) = close_for(reason);
                        self.close(code, message).await;
                        return End::Kicked(reason);
                    }
                },
                incoming = self.ws.next() => {
                    let message = match incoming {
                        None => return End::ClientClosed,
                        Some(Err(error)) => {
                            if websocket::oversized(&error).is_none() {
                                return End::SocketError;
                            }
                            let (code, reason) = (codes::MESSAGE_TOO_BIG, "Message too big");
                            websocket::close_unread(&mut self.ws, code, reason).await;
                            return End::Oversized;
                        }
                        Some(Ok(message)) => message,
                    };
                    last_seen = Instant::now();
                    ping_sent = None;
                    if let Some(end) = Box::pin(self.on_message(message)).await {
                        return end;
                    }
                }
                _ = ping_tick.tick() => {
                    if let Some(sent) = ping_sent
                        && last_seen < sent
                        && sent.elapsed() >= self.pong_timeout.min(ping_every)
                    {
                        self.close(codes::PING_TIMEOUT, "No pong received").await;
                        return End::PingTimeout;
                    }
                    if ping_sent.is_none() {
                        if self.send(Message::Ping(Default::default())).await.is_err() {
                            return End::SocketError;
                        }
                        ping_sent = Some(Instant::now());
                    }
                }
                // The lookup runs on its own task: a store that hangs never stops this
                // loop from draining the outbox.
                () = &mut expiry, if deadline.is_some() => {
                    self.close(codes::TOKEN_REVOKED, "Token expired").await;
                    return End::TokenExpired;
                }
                verdict = recheck.next(&check) => match verdict {
                    Some(Ok(tokens::Standing::Revoked)) => {
                        self.close(codes::TOKEN_REVOKED, "Token revoked").await;
                        return End::TokenGone;
                    }
                    Some(Ok(tokens::Standing::Current { expires_at })) => {
                        deadline = tokens::expiry_deadline(expires_at, grace);
                        if let Some(at) = deadline {
                            expiry.as_mut().reset(at);
                        }
                    }
                    // A store outage must not log everyone out: the next recheck decides.
                    Some(Err(e)) => tracing::debug!("token recheck skipped: {e}"),
                    None => tracing::debug!("token recheck skipped: no answer in time"),
                },
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.pong_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::SocketError),
        }
    }

    async fn reply(&mut self, frame: Value) -> Option<End> {
        self.send(Message::Text(frame.to_string().into()))
            .await
            .err()
    }

    async fn error(&mut self, channel: Option<&str>, code: &str, message: &str) -> Option<End> {
        let mut frame = json!({"event": "error", "data": {"code": code, "message": message}});
        if let Some(channel) = channel {
            frame["channel"] = json!(channel);
        }
        self.reply(frame).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        websocket::close(&mut self.ws, code, reason).await;
    }

    async fn write_batch(&mut self) -> Result<(), End> {
        let batch = std::mem::take(&mut self.batch);
        let write = async {
            for item in &batch {
                if let Some(frame) = encode(item) {
                    self.ws.feed(Message::Text(frame)).await?;
                }
                if let Some(frame) = resume_failed(item) {
                    self.ws.feed(Message::Text(frame)).await?;
                }
            }
            self.ws.flush().await
        };
        let result = match tokio::time::timeout(self.pong_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SocketError),
            Err(_) => {
                self.session.core().record_slow_consumer();
                Err(End::SocketError)
            }
        };
        self.batch = batch;
        self.batch.clear();
        self.batch.shrink_to(64);
        result
    }

    /// Handles one client message; `Some` ends the socket.
    async fn on_message(&mut self, message: Message) -> Option<End> {
        let bytes = match message {
            Message::Text(text) => axum::body::Bytes::from(text),
            Message::Binary(bytes) => bytes,
            Message::Ping(_) | Message::Pong(_) => {
                return tokio::time::timeout(self.pong_timeout, self.ws.flush())
                    .await
                    .ok()
                    .and_then(Result::err)
                    .map(|_| End::SocketError);
            }
            Message::Close(_) => {
                websocket::answer_close(&mut self.ws).await;
                return Some(End::ClientClosed);
            }
        };
        let limit = self.app.limits.max_message_size;
        if bytes.len() > limit {
            self.close(codes::MESSAGE_TOO_BIG, "Message too big").await;
            return Some(End::Oversized);
        }
        let parsed: ClientMessage = match serde_json::from_slice(&bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.invalid_messages += 1;
                if self.invalid_messages > self.app.plain.max_invalid_messages {
                    self.close(codes::TOO_MANY_BAD_MESSAGES, "Too many malformed messages")
                        .await;
                    return Some(End::Garbage);
                }
                let message =
                    format!("Malformed message: expected JSON {{\"event\", \"channel\"?}} ({e})");
                return self.error(None, "malformed", &message).await;
            }
        };
        match parsed.event.as_str() {
            "ping" => self.reply(json!({"event": "pong"})).await,
            "subscribe" | "unsubscribe" => {
                let Some(channel) = parsed.channel.filter(|c| !c.is_empty()) else {
                    return self
                        .error(None, "missing_channel", "`channel` is required")
                        .await;
                };
                let Some(scope) = channels::scope(&self.app, &channel) else {
                    let message = format!(
                        "Unknown channel `{}`",
                        channel.chars().take(64).collect::<String>()
                    );
                    return self
                        .error(Some(&channel), "unknown_channel", &message)
                        .await;
                };
                let core_channel = channels::core_channel(scope, &channel, &self.user_id);
                if parsed.event == "unsubscribe" {
                    self.session.unsubscribe(&core_channel);
                    return self
                        .reply(json!({"event": "unsubscribed", "channel": channel}))
                        .await;
                }
                let since = match parsed.since.as_deref() {
                    None => None,
                    Some(text) => match StreamPosition::parse(text) {
                        Some(position) => Some(position),
                        None => {
                            let message = "`since` must be a position as events carry it";
                            return self
                                .error(Some(&channel), "invalid_position", message)
                                .await;
                        }
                    },
                };
                if !self.subscribes.try_take() {
                    let message = format!(
                        "More than {} subscribe requests per second",
                        self.app.limits.subscriptions_per_second
                    );
                    return self.error(Some(&channel), "rate_limited", &message).await;
                }
                match self
                    .session
                    .subscribe_resuming(&core_channel, None, since.as_ref())
                    .await
                {
                    // The hub queues `subscribed` ahead of any event on the channel.
                    Ok(Subscription::Added) => None,
                    // Nothing changed and the hub queued nothing: say so directly.
                    Ok(Subscription::AlreadySubscribed) => {
                        self.reply(json!({"event": "subscribed", "channel": channel}))
                            .await
                    }
                    Err(e) => {
                        self.error(Some(&channel), "subscription_refused", &e.to_string())
                            .await
                    }
                }
            }
            other => {
                let message = format!(
                    "Unknown event `{}`",
                    other.chars().take(64).collect::<String>()
                );
                self.error(None, "unknown_event", &message).await
            }
        }
    }
}

fn close_for(reason: Disconnect) -> (u16, &'static str) {
    match reason {
        Disconnect::Shutdown => (codes::RESTARTING, "Server restarting; reconnect shortly"),
        Disconnect::SlowConsumer => (codes::TRY_AGAIN_LATER, "Slow consumer; reconnect"),
        Disconnect::Terminated => (codes::LOGGED_OUT, "Logged out"),
        Disconnect::Replaced => (codes::REPLACED, "Replaced by a newer connection"),
        Disconnect::Revoked => (codes::TOKEN_REVOKED, "Token revoked"),
    }
}

/// A publication as this protocol writes it: `data` is the published JSON itself (not a
/// string holding it, unlike Pusher), or a string when what was published is not JSON.
pub(crate) fn event_frame(publication: &Publication) -> Utf8Bytes {
    publication.encoded(PLAIN_SLOT, |p| {
        let channel = channels::logical_channel(&p.channel);
        let data = p
            .data_as_json()
            .map(|raw| raw.get().to_string())
            .unwrap_or_else(|| Value::String(p.data.to_string()).to_string());
        let mut head = json!({"event": &*p.event, "channel": channel, "id": p.id});
        if let Some(position) = p.position() {
            head["position"] = json!(position);
        }
        let head = head.to_string();
        // `{"event":..,"channel":..,"id":..}` + `,"data":<data>}`: data spliced in unparsed.
        Utf8Bytes::from(format!("{},\"data\":{data}}}", &head[..head.len() - 1]))
    })
}

/// The `subscribed` answer: with the position the events that follow come after.
fn subscribed_frame(subscribed: &Subscribed) -> Utf8Bytes {
    let mut frame = json!({
        "event": "subscribed",
        "channel": channels::logical_channel(&subscribed.channel),
    });
    if let Some(position) = &subscribed.position {
        frame["position"] = json!(position);
    }
    Utf8Bytes::from(frame.to_string())
}

/// After `subscribed`, when the position the client resumed from cannot be vouched for.
fn resume_failed(item: &Outbound) -> Option<Utf8Bytes> {
    let Outbound::Subscribed(subscribed) = item else {
        return None;
    };
    if subscribed.recovery != Recovery::Failed {
        return None;
    }
    let mut frame = json!({
        "event": "resume_failed",
        "channel": channels::logical_channel(&subscribed.channel),
    });
    if let Some(position) = &subscribed.position {
        frame["position"] = json!(position);
    }
    Some(Utf8Bytes::from(frame.to_string()))
}

fn encode(item: &Outbound) -> Option<Utf8Bytes> {
    match item {
        Outbound::Publication(publication) => Some(event_frame(publication)),
        Outbound::Subscribed(subscribed) => Some(subscribed_frame(subscribed)),
        // Plain channels have no presence.
        Outbound::MemberAdded { .. } | Outbound::MemberRemoved { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_exact_and_subdomain_patterns() {
        let allowed = vec![
            "https://app.example.com".to_string(),
            "https://*.pay.example".to_string(),
        ];
        assert!(origin_allowed(&allowed, Some("https://app.example.com")));
        assert!(origin_allowed(&allowed, Some("https://shop.pay.example")));
        assert!(!origin_allowed(&allowed, Some("https://pay.example")));
        assert!(!origin_allowed(&allowed, Some("https://evilpay.example")));
        assert!(!origin_allowed(&allowed, Some("http://app.example.com")));
        assert!(!origin_allowed(
            &allowed,
            Some("https://app.example.com.evil.io")
        ));
        assert!(origin_allowed(&allowed, None), "no Origin: not a browser");
        assert!(origin_allowed(&[], Some("https://anything")));
    }

    #[test]
    fn tokens_from_query_header_or_subprotocol() {
        let mut query = HashMap::new();
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&query, &headers), None);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "bearer, prt_abc".parse().unwrap(),
        );
        assert_eq!(
            presented_token(&query, &headers),
            Some(("prt_abc".into(), true))
        );
        headers.insert(header::AUTHORIZATION, "Bearer prt_hdr".parse().unwrap());
        assert_eq!(
            presented_token(&query, &headers),
            Some(("prt_hdr".into(), false))
        );
        query.insert("token".into(), "prt_q".into());
        assert_eq!(
            presented_token(&query, &headers),
            Some(("prt_q".into(), false))
        );
    }

    #[test]
    fn event_frames_carry_data_as_json() {
        let p = Publication::new(
            "1".into(),
            "private-user-7.notification.events".into(),
            "NOTIFICATION_UPDATE".into(),
            r#"{"unread_count":3}"#.into(),
        );
        let frame: Value = serde_json::from_str(&event_frame(&p)).unwrap();
        assert_eq!(
            frame,
            json!({"event": "NOTIFICATION_UPDATE", "channel": "notification.events",
                   "id": p.id.to_string(), "data": {"unread_count": 3}})
        );
        let p = Publication::new(
            "1".into(),
            "private-all.settings".into(),
            "e".into(),
            "plain text".into(),
        );
        p.set_position(StreamPosition::new(7, "Ep0ch".into()));
        let frame: Value = serde_json::from_str(&event_frame(&p)).unwrap();
        assert_eq!(frame["data"], "plain text");
        assert_eq!(frame["position"], "7.Ep0ch");
    }

    /// Found by fuzz/plain_message: `1205e46666666` is valid JSON syntax, but a number
    /// out of f64 range; spliced in, it made the whole frame unreadable to serde_json
    /// (and Go's encoding/json). Such data travels as the string it was published as.
    #[test]
    fn numbers_no_parser_can_hold_travel_as_text() {
        for data in ["1205e46666666", r#"{"amount":1e400}"#, "[-1e309]"] {
            let p = Publication::new(
                "1".into(),
                "private-all.settings".into(),
                "e".into(),
                data.into(),
            );
            let frame: Value = serde_json::from_str(&event_frame(&p)).unwrap();
            assert_eq!(frame["data"], data, "{data}");
        }
    }
}
