//! One Pusher WebSocket connection: `GET /app/{key}?protocol=7&client=...&version=...`.
//!
//! A single task owns the socket and multiplexes three things: frames from the client,
//! the connection's outbox (publications and presence changes queued by the hub), and the
//! activity timer. Writing happens only in this task, so frames from the outbox and direct
//! replies (pong, errors) never interleave mid-frame, and a slow socket stalls only itself.
//!
//! Close codes follow what pusher-js does with them: 4000-4099 are final (unknown app 4001,
//! disabled 4003, quota 4004, bad protocol 4006/4007, terminated 4009), 4100-4199 back off
//! (over capacity 4100), 4200-4299 reconnect at once (shutdown or slow consumer 4200, no
//! pong 4201).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

use super::auth::{self, AuthError};
use super::codes;
use super::frames::{self, ClientFrame, SigninData, SubscribeData, UnsubscribeData};
use super::wire_format::{WireFormat, json_frame};
use crate::core::channel::{self, ChannelKind, SERVER_TO_USER_PREFIX};
use crate::core::outbox::{CacheState, Drain, Outbound, Recovery};
use crate::core::presence::Member;
use crate::core::rate::TokenBucket;
use crate::core::{
    App, Core, Disconnect, NewPublication, OpenError, Session, StreamPosition, Subscription,
};
use crate::http::{ApiError, HttpState};
use crate::protocols::websocket::{self, CLOSE_GRACE, close};

/// Read buffer per socket: client frames are small, and idle sockets are the common case.
/// Every socket keeps this much allocated for its whole life, so it is most of an idle
/// connection's cost (BENCHMARKS.md); larger frames still arrive, in more reads.
pub const READ_BUFFER: usize = 1024;
/// Bytes buffered before tungstenite writes to the socket; every batch is flushed anyway.
pub const WRITE_BUFFER: usize = 8 * 1024;
/// Outbox batch capacity kept between writes.
const RETAINED_BATCH: usize = 64;

pub(crate) async fn upgrade(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let format = match WireFormat::from_headers(&headers) {
        Ok(format) => format,
        Err(message) => {
            return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
        }
    };
    let app = state.core.apps.by_key(&key).cloned();
    // Frames up to twice the app's limit are read and answered with an error; anything
    // larger is refused from its header, unread (`on_unreadable`).
    let hard_limit = app.as_ref().map_or(64 * 1024, |a| {
        websocket::transport_limit(a.limits.max_message_size)
    });
    let in_flight = state.tracker.token();
    let core = state.core.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * hard_limit + 1024 * 1024)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            let _in_flight = in_flight;
            let handshake = Handshake {
                key,
                protocol: query.get("protocol").cloned(),
                remote,
                format,
            };
            serve(socket, core, app, handshake).await;
        })
}

/// Checks the `protocol` query parameter. A missing one is taken as 7: plain WebSocket
/// tools (the seed's `wscat -c wss://host/app/KEY`) connect without it.
fn check_protocol(protocol: Option<&str>) -> Result<(), (u16, &'static str)> {
    let Some(protocol) = protocol else {
        return Ok(());
    };
    match protocol.parse::<u32>() {
        Err(_) => Err((codes::BAD_VERSION_FORMAT, "Invalid version string format")),
        Ok(5..=7) => Ok(()),
        Ok(_) => Err((codes::UNSUPPORTED_PROTOCOL, "Unsupported protocol version")),
    }
}

/// What the upgrade request said, carried into the connection task.
struct Handshake {
    key: String,
    protocol: Option<String>,
    remote: SocketAddr,
    format: WireFormat,
}

async fn serve(mut ws: WebSocket, core: Arc<Core>, app: Option<Arc<App>>, handshake: Handshake) {
    let Handshake {
        key,
        protocol,
        remote,
        format,
    } = handshake;
    let Some(app) = app else {
        let message = format!("App key {key} does not exist");
        return refuse(&mut ws, format, codes::APP_NOT_FOUND, &message).await;
    };
    if let Err((code, message)) = check_protocol(protocol.as_deref()) {
        return refuse(&mut ws, format, code, message).await;
    }
    let session = match core.open_session(&app, "pusher", remote) {
        Ok(session) => session,
        Err(refusal) => {
            let code = match refusal {
                OpenError::AppDisabled => codes::APP_DISABLED,
                OpenError::AppQuotaReached => codes::OVER_QUOTA,
                OpenError::OverCapacity => codes::OVER_CAPACITY,
                OpenError::ShuttingDown => codes::RECONNECT,
            };
            return refuse(&mut ws, format, code, &refusal.to_string()).await;
        }
    };
    let socket_id = session.connection().id.to_string();
    tracing::debug!(%socket_id, app = %app.id, %remote, "pusher connection open");
    let subscribes = app.limits.subscribe_budget();
    let mut connection = PusherSocket {
        socket_id,
        activity_timeout: core.settings.activity_timeout,
        pong_timeout: core.settings.pong_timeout,
        ws,
        format,
        session,
        app,
        last_seen: Instant::now(),
        ping_sent_at: None,
        client_events: RateWindow::default(),
        subscribes,
        batch: Vec::new(),
        messages_in: metrics::counter!("payrelay_messages_in_total", "protocol" => "pusher"),
    };
    let end = connection.run().await;
    tracing::debug!(socket_id = %connection.socket_id, ?end, "pusher connection closed");
}

/// Sends the refusal as the first frame (pusher-js acts on a handshake `pusher:error`),
/// then closes with the same code.
async fn refuse(ws: &mut WebSocket, format: WireFormat, code: u16, message: &str) {
    let notice = format.message(frames::error(Some(code), message).into());
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(notice)).await;
    close(ws, code, message).await;
}

/// Client events one connection sent in the current one-second window. Lives and dies
/// with the connection task, so nothing leaks after a disconnect.
#[derive(Default)]
struct RateWindow {
    window_start: Option<Instant>,
    count: u32,
}

impl RateWindow {
    fn allow(&mut self, per_second: u32) -> bool {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count <= per_second
    }
}

/// How a connection ended, for the debug log (fields are read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    ClientClosed,
    SocketError,
    Kicked(Disconnect),
    PongTimeout,
    Oversized,
    WriteStalled,
}

struct PusherSocket {
    ws: WebSocket,
    format: WireFormat,
    session: Session,
    app: Arc<App>,
    socket_id: String,
    activity_timeout: Duration,
    pong_timeout: Duration,
    last_seen: Instant,
    ping_sent_at: Option<Instant>,
    client_events: RateWindow,
    subscribes: TokenBucket,
    batch: Vec<Outbound>,
    messages_in: metrics::Counter,
}

/// Result of handling one client frame.
enum Flow {
    Continue,
    Stop(End),
}

impl PusherSocket {
    async fn run(&mut self) -> End {
        let established =
            frames::connection_established(&self.socket_id, self.activity_timeout.as_secs());
        if let Err(end) = self.send(established).await {
            return end;
        }
        let conn = self.session.connection().clone();
        // One timer for the connection's life, moved rather than rebuilt on every frame.
        let timer = tokio::time::sleep(self.activity_timeout);
        tokio::pin!(timer);
        loop {
            let deadline = match self.ping_sent_at {
                Some(sent) => sent + self.pong_timeout,
                None => self.last_seen + self.activity_timeout,
            };
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                drained = conn.outbox.drain(&mut self.batch) => match drained {
                    Drain::Frames => {
                        if let Err(end) = self.write_batch().await {
                            return end;
                        }
                    }
                    Drain::Close(reason) => {
                        Box::pin(self.kick(reason)).await;
                        return End::Kicked(reason);
                    }
                },
                incoming = self.ws.next() => {
                    let message = match incoming {
                        None => return End::ClientClosed,
                        Some(Err(error)) => return Box::pin(self.on_unreadable(error)).await,
                        Some(Ok(message)) => message,
                    };
                    self.last_seen = Instant::now();
                    self.ping_sent_at = None;
                    // Boxed: client frames are rare next to idle time, and inlining this
                    // path's futures would grow every connection's task by kilobytes.
                    if let Flow::Stop(end) = Box::pin(self.on_message(message)).await {
                        return end;
                    }
                }
                () = &mut timer => {
                    if self.ping_sent_at.is_some() {
                        close(&mut self.ws, codes::PONG_TIMEOUT, "Pong reply not received").await;
                        return End::PongTimeout;
                    }
                    if self.last_seen.elapsed() >= self.activity_timeout {
                        if let Err(end) = self.send(frames::ping()).await {
                            return end;
                        }
                        self.ping_sent_at = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// Writes one direct reply. Like the outbox path, it gives a client that stopped
    /// reading one pong timeout: without the bound a full socket buffer would park this
    /// task forever, keeping the connection's subscriptions and presence alive.
    async fn send(&mut self, frame: String) -> Result<(), End> {
        let write = self.ws.send(self.format.message(frame.into()));
        Self::bounded(self.pong_timeout, write).await
    }

    /// Flushes what tungstenite queued on its own (pongs to client pings, close replies).
    async fn flush(&mut self) -> Result<(), End> {
        Self::bounded(self.pong_timeout, self.ws.flush()).await
    }

    async fn bounded(
        limit: Duration,
        write: impl Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), End> {
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SocketError),
            Err(_) => Err(End::WriteStalled),
        }
    }

    async fn reply(&mut self, frame: String) -> Flow {
        match self.send(frame).await {
            Ok(()) => Flow::Continue,
            Err(end) => Flow::Stop(end),
        }
    }

    async fn send_error(&mut self, code: u16, message: &str) -> Flow {
        self.reply(frames::error(Some(code), message)).await
    }

    /// Writes everything drained from the outbox and flushes once. A client that does not
    /// read for a whole pong timeout is dropped: it would otherwise hold its task forever.
    async fn write_batch(&mut self) -> Result<(), End> {
        let batch = std::mem::take(&mut self.batch);
        let fields = self.app.history.pusher_fields;
        let write = async {
            for item in &batch {
                // Publications are nearly every frame: written without the Vec that
                // the rarer items need.
                if let Outbound::Publication(publication) = item {
                    self.ws
                        .feed(self.format.publication(publication, fields))
                        .await?;
                    continue;
                }
                for frame in encode(item, fields) {
                    self.ws.feed(self.format.message(frame)).await?;
                }
            }
            self.ws.flush().await
        };
        let result = Self::bounded(self.pong_timeout, write).await;
        self.batch = batch;
        self.batch.clear();
        // A burst must not pin its batch's memory for the connection's life.
        if self.batch.capacity() > RETAINED_BATCH {
            self.batch.shrink_to(RETAINED_BATCH);
        }
        if matches!(result, Err(End::WriteStalled)) {
            self.session.core().record_slow_consumer();
        }
        result
    }

    async fn kick(&mut self, reason: Disconnect) {
        let (code, message) = match reason {
            Disconnect::Shutdown => (
                codes::RECONNECT,
                "Server is shutting down; reconnect shortly",
            ),
            Disconnect::SlowConsumer => {
                self.session.core().record_slow_consumer();
                (
                    codes::RECONNECT,
                    "Slow consumer: too many undelivered messages",
                )
            }
            Disconnect::Terminated => (codes::UNAUTHORIZED, "Connection terminated by the app"),
            Disconnect::Replaced => (codes::UNAUTHORIZED, "Replaced by a newer connection"),
            Disconnect::Revoked => (codes::UNAUTHORIZED, "Credentials revoked"),
        };
        let _ = self.send(frames::error(Some(code), message)).await;
        close(&mut self.ws, code, message).await;
    }

    /// Reading failed. A message too large for the transport is the client's mistake and
    /// gets the same answer as one over the limit: `pusher:error` 4300, then close 1009.
    async fn on_unreadable(&mut self, error: axum::Error) -> End {
        let Some(size) = websocket::oversized(&error) else {
            return End::SocketError;
        };
        let _ = self.send(self.too_big_error(size)).await;
        websocket::close_unread(&mut self.ws, codes::MESSAGE_TOO_BIG, "Message too big").await;
        End::Oversized
    }

    fn too_big_error(&self, size: usize) -> String {
        let limit = self.app.limits.max_message_size;
        let message = format!("Message of {size} bytes exceeds the limit of {limit} bytes");
        frames::error(Some(codes::MALFORMED), &message)
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let (binary, bytes) = match message {
            Message::Text(text) => (false, axum::body::Bytes::from(text)),
            Message::Binary(bytes) => (true, bytes),
            Message::Ping(_) => {
                // tungstenite queued the pong; make sure it leaves now.
                return match self.flush().await {
                    Ok(()) => Flow::Continue,
                    Err(end) => Flow::Stop(end),
                };
            }
            Message::Pong(_) => return Flow::Continue,
            Message::Close(_) => {
                websocket::answer_close(&mut self.ws).await;
                return Flow::Stop(End::ClientClosed);
            }
        };
        self.messages_in.increment(1);
        if bytes.len() > self.app.limits.max_message_size {
            let _ = self.send(self.too_big_error(bytes.len())).await;
            close(&mut self.ws, codes::MESSAGE_TOO_BIG, "Message too big").await;
            return Flow::Stop(End::Oversized);
        }
        let frame: ClientFrame = match self.format.decode(binary, &bytes) {
            Ok(frame) => frame,
            Err(message) => return self.send_error(codes::MALFORMED, &message).await,
        };
        match frame.event.as_str() {
            "pusher:ping" => self.reply(frames::pong()).await,
            "pusher:pong" => Flow::Continue,
            "pusher:subscribe" => self.on_subscribe(frame.data).await,
            "pusher:unsubscribe" => match frames::parse_data::<UnsubscribeData>(frame.data) {
                Ok(data) => {
                    self.session.unsubscribe(&data.channel);
                    Flow::Continue
                }
                Err(e) => {
                    self.send_error(
                        codes::MALFORMED,
                        &format!("Invalid pusher:unsubscribe: {e}"),
                    )
                    .await
                }
            },
            "pusher:signin" => self.on_signin(frame.data).await,
            event if event.starts_with("client-") => self.on_client_event(frame).await,
            event => {
                let message = format!("Unsupported event `{event}`");
                self.send_error(codes::MALFORMED, &message).await
            }
        }
    }

    async fn subscription_error(
        &mut self,
        channel: &str,
        kind: &str,
        error: &str,
        status: u16,
    ) -> Flow {
        self.reply(frames::subscription_error(channel, kind, error, status))
            .await
    }

    async fn on_subscribe(&mut self, data: Option<Value>) -> Flow {
        let data: SubscribeData = match frames::parse_data(data) {
            Ok(data) => data,
            Err(e) => {
                return self
                    .send_error(codes::MALFORMED, &format!("Invalid pusher:subscribe: {e}"))
                    .await;
            }
        };
        let channel = data.channel.as_str();
        // Every subscribe request counts, refused or repeated ones too: each costs the
        // server a reply, and a new one may cost a member list and announcements.
        if !self.subscribes.try_take() {
            let error = format!(
                "Subscription to {channel} refused: more than {} subscribe requests per second",
                self.app.limits.subscriptions_per_second
            );
            // 429, as an auth endpoint would answer: pusher-js hands it to the channel.
            return self
                .subscription_error(channel, "LimitReached", &error, 429)
                .await;
        }
        if self.session.is_subscribed(channel) {
            return self.existing_subscription(channel).await;
        }
        let info = match channel::classify(channel) {
            Ok(info) => info,
            Err(e) => {
                return self
                    .subscription_error(channel, "InvalidChannel", &e.to_string(), 400)
                    .await;
            }
        };
        let member = match self.authorize_subscription(info.kind, &data) {
            Ok(member) => member,
            Err((status, error)) => {
                return self
                    .subscription_error(channel, "AuthError", &error, status)
                    .await;
            }
        };
        let resume_from = match data.resume_from.as_deref() {
            None => None,
            Some(text) => match StreamPosition::parse(text) {
                Some(position) => Some(position),
                None => {
                    let error = format!(
                        "Subscription to {channel} refused: `resume_from` must be a position as events carry it"
                    );
                    return self
                        .subscription_error(channel, "InvalidPosition", &error, 400)
                        .await;
                }
            },
        };
        match self
            .session
            .subscribe_resuming(channel, member, resume_from.as_ref())
            .await
        {
            Ok(Subscription::Added) => Flow::Continue,
            Ok(Subscription::AlreadySubscribed) => self.existing_subscription(channel).await,
            Err(refusal) => {
                let error = refusal.to_string();
                self.subscription_error(channel, "LimitReached", &error, codes::OVER_CAPACITY)
                    .await
            }
        }
    }

    /// A subscribe to a channel this socket is already on gets what Pusher answers: a
    /// `pusher:error` without a code, and no second member list or cached event.
    async fn existing_subscription(&mut self, channel: &str) -> Flow {
        let message = format!("Existing subscription to channel {channel}");
        self.reply(frames::error(None, &message)).await
    }

    /// Decides whether this socket may join the channel, and as which presence member.
    fn authorize_subscription(
        &self,
        kind: ChannelKind,
        data: &SubscribeData,
    ) -> Result<Option<Member>, (u16, String)> {
        let channel = data.channel.as_str();
        let unauthorized = |e: AuthError| (401, format!("Subscription to {channel} refused: {e}"));
        match kind {
            ChannelKind::Public => Ok(None),
            ChannelKind::Private | ChannelKind::PrivateEncrypted => {
                auth::check_private(&self.app, &self.socket_id, channel, data.auth.as_deref())
                    .map_err(unauthorized)?;
                Ok(None)
            }
            ChannelKind::Presence => {
                let channel_data = data
                    .channel_data
                    .as_deref()
                    .ok_or((400, "Presence channels need `channel_data`".to_string()))?;
                auth::check_presence(
                    &self.app,
                    &self.socket_id,
                    channel,
                    channel_data,
                    data.auth.as_deref(),
                )
                .map_err(unauthorized)?;
                self.presence_member(channel_data).map(Some)
            }
            ChannelKind::ServerToUser => {
                let wanted = &channel[SERVER_TO_USER_PREFIX.len()..];
                match self.session.connection().user_id() {
                    Some(user) if &**user == wanted => Ok(None),
                    _ => Err((
                        403,
                        format!("{channel} is only for the socket signed in as that user"),
                    )),
                }
            }
        }
    }

    fn presence_member(&self, channel_data: &str) -> Result<Member, (u16, String)> {
        frames::presence_member(channel_data, self.app.limits.max_presence_member_size)
    }

    async fn on_signin(&mut self, data: Option<Value>) -> Flow {
        let data: SigninData = match frames::parse_data(data) {
            Ok(data) => data,
            Err(e) => {
                return self
                    .send_error(codes::MALFORMED, &format!("Invalid pusher:signin: {e}"))
                    .await;
            }
        };
        if let Err(e) = auth::check_signin(&self.app, &self.socket_id, &data.user_data, &data.auth)
        {
            return self
                .send_error(codes::UNAUTHORIZED, &format!("Sign-in refused: {e}"))
                .await;
        }
        let Some(user_id) = frames::signin_user_id(&data.user_data) else {
            let message =
                "Sign-in refused: user_data must be a JSON object with a non-empty string `id`";
            return self.send_error(codes::UNAUTHORIZED, message).await;
        };
        if let Err(e) = self.session.sign_in(&user_id) {
            return self
                .send_error(codes::UNAUTHORIZED, &format!("Sign-in refused: {e}"))
                .await;
        }
        self.reply(frames::signin_success(&data.user_data)).await
    }

    async fn on_client_event(&mut self, frame: ClientFrame) -> Flow {
        let limits = &self.app.limits;
        if !limits.enable_client_messages {
            return self
                .send_error(
                    codes::UNAUTHORIZED,
                    "Client events are not enabled for this app",
                )
                .await;
        }
        let Some(channel) = frame.channel else {
            return self
                .send_error(codes::MALFORMED, "Client event without a `channel`")
                .await;
        };
        let kind = channel::classify(&channel).map(|i| i.kind);
        if !matches!(kind, Ok(ChannelKind::Private | ChannelKind::Presence)) {
            let message = format!(
                "Client event rejected on {channel}: only private and presence channels (not encrypted ones) accept client events"
            );
            return self.send_error(codes::UNAUTHORIZED, &message).await;
        }
        if !self.session.is_subscribed(&channel) {
            let message = format!("Client event rejected: not subscribed to {channel}");
            return self.send_error(codes::UNAUTHORIZED, &message).await;
        }
        if !self.client_events.allow(limits.client_events_per_second) {
            let message = format!(
                "Client event rejected: more than {} client events per second",
                limits.client_events_per_second
            );
            return self
                .send_error(codes::CLIENT_EVENT_RATE_LIMIT, &message)
                .await;
        }
        let data = match frame.data {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let publication = NewPublication {
            user_id: self.session.presence_user(&channel).map(|u| u.to_string()),
            channel,
            event: frame.event,
            data,
            exclude: Some(self.session.connection().id),
            // Replaying a peer's message to later subscribers (or back to its sender)
            // would make it look like the server's.
            relay_only: true,
            ..Default::default()
        };
        match self.session.publish(publication).await {
            Ok(_) => Flow::Continue,
            Err(e) => {
                self.send_error(codes::MALFORMED, &format!("Client event rejected: {e}"))
                    .await
            }
        }
    }
}

/// The Pusher frames for one queued item; `fields`: the app's `pusher_fields`.
fn encode(item: &Outbound, fields: bool) -> Vec<Utf8Bytes> {
    match item {
        Outbound::Publication(publication) => vec![json_frame(publication, fields)],
        Outbound::Subscribed(subscribed) => {
            let position = subscribed.position.as_ref().filter(|_| fields);
            let mut out = vec![
                frames::subscription_succeeded(
                    &subscribed.channel,
                    subscribed.presence.as_ref(),
                    position,
                )
                .into(),
            ];
            match &subscribed.cache {
                // A resumed subscriber gets what it missed from history: the cached last
                // event would be a duplicate.
                _ if subscribed.recovery == Recovery::Recovered => {}
                CacheState::NotACacheChannel => {}
                CacheState::Hit(last) => out.push(json_frame(last, fields)),
                CacheState::Miss => out.push(frames::cache_miss(&subscribed.channel).into()),
            }
            if subscribed.recovery == Recovery::Failed {
                out.push(
                    frames::resume_failed(&subscribed.channel, subscribed.position.as_ref()).into(),
                );
            }
            out
        }
        Outbound::MemberAdded { channel, member } => {
            vec![frames::member_added(channel, member).into()]
        }
        Outbound::MemberRemoved { channel, user_id } => {
            vec![frames::member_removed(channel, user_id).into()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(check_protocol(None), Ok(()));
        assert_eq!(check_protocol(Some("7")), Ok(()));
        assert_eq!(check_protocol(Some("5")), Ok(()));
        assert_eq!(
            check_protocol(Some("3")).unwrap_err().0,
            codes::UNSUPPORTED_PROTOCOL
        );
        assert_eq!(
            check_protocol(Some("x")).unwrap_err().0,
            codes::BAD_VERSION_FORMAT
        );
    }

    #[test]
    fn rate_window_allows_the_configured_burst() {
        let mut window = RateWindow::default();
        assert!((0..10).all(|_| window.allow(10)));
        assert!(!window.allow(10));
    }
}
