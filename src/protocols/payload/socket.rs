//! One payload socket: `GET /sign/{uuid}`.
//!
//! Admission, before the upgrade: the uuid names a payload (one store read), the payload's
//! app admits a connection, the connection joins the payload's channel, and only then is
//! the payload read again: whatever changes after that read arrives as a publication, so
//! nothing falls between the snapshot and the stream. A message the snapshot already
//! covered may also arrive as a publication; each socket says each thing once.
//!
//! After the upgrade one task owns the socket: the snapshot's messages, then the
//! publications of the channel, the countdown, `{"ping":true}` answered with
//! `{"message":"Right back at you!"}` (xumm-sdk reconnects after 10 s without it),
//! WebSocket pings answered, and a server ping when the client is silent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use super::{PAYLOAD_SLOT, PROTOCOL, codes};
use crate::core::outbox::{Drain, Outbound};
use crate::core::{Disconnect, OpenError, Publication, Session};
use crate::db::now_ms;
use crate::http::HttpState;
use crate::payloads::model::{self, seconds_until};
use crate::payloads::{self, Change, Payload};
use crate::protocols::websocket;

/// Allocated for the socket's whole life; what clients send (`{"ping":true}`, a close)
/// fits, and anything larger arrives in more reads.
const READ_BUFFER: usize = 256;
const WRITE_BUFFER: usize = 4 * 1024;
/// Clients send `{"ping":true}`; nothing they send needs more.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// What xumm-sdk waits for after each `{"ping":true}`.
const PONG_MESSAGE: &str = r#"{"message":"Right back at you!"}"#;

pub(super) async fn upgrade(
    State(state): State<HttpState>,
    Path(uuid): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let body = json!({"message": format!("Not a WebSocket upgrade: {e}")});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let admission = admit(&state, &uuid, remote).await;
    let in_flight = state.tracker.token();
    let countdown = state.payloads.countdown();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _in_flight = in_flight;
            serve(socket, admission, countdown).await;
        })
}

/// What admission decided.
enum Admission {
    /// `{"message": …}`, then close with `code`.
    Refused { message: String, code: u16 },
    /// Connected to the payload's channel, with its state as of after joining it.
    Admitted {
        session: Session,
        payload: Box<Payload>,
    },
}

fn refused(message: impl Into<String>, code: u16) -> Admission {
    Admission::Refused {
        message: message.into(),
        code,
    }
}

async fn admit(state: &HttpState, raw_uuid: &str, remote: SocketAddr) -> Admission {
    let Some(uuid) = model::parse_uuid(raw_uuid) else {
        return refused("Invalid payload uuid", codes::NORMAL);
    };
    let store_down = |e: payloads::store::StoreError| {
        tracing::error!("{e}");
        refused(
            "Payload store unavailable, try again",
            codes::TRY_AGAIN_LATER,
        )
    };
    let payload = match state.payloads.lookup(&uuid).await {
        Ok(Some(payload)) => payload,
        Ok(None) => return refused(format!("Payload {uuid} does not exist"), codes::NORMAL),
        Err(e) => return store_down(e),
    };
    let Some(app) = state.core.apps.by_id(&payload.app_id).cloned() else {
        return refused(format!("Payload {uuid} does not exist"), codes::NORMAL);
    };
    let mut session = match state.core.open_session(&app, PROTOCOL, remote) {
        Ok(session) => session,
        Err(e) => {
            let code = match e {
                OpenError::AppDisabled => codes::POLICY,
                OpenError::ShuttingDown => codes::RESTARTING,
                OpenError::AppQuotaReached | OpenError::OverCapacity => codes::TRY_AGAIN_LATER,
            };
            return refused(e.to_string(), code);
        }
    };
    if let Err(e) = session.subscribe_internal(&payloads::channel_of(&uuid)) {
        return refused(e.to_string(), codes::TRY_AGAIN_LATER);
    }
    match state.payloads.lookup(&uuid).await {
        Ok(Some(payload)) => Admission::Admitted {
            session,
            payload: Box::new(payload),
        },
        Ok(None) => refused(format!("Payload {uuid} does not exist"), codes::NORMAL),
        Err(e) => store_down(e),
    }
}

/// How a socket ended, for the debug log.
#[derive(Debug)]
#[allow(dead_code)]
enum End {
    Refused,
    ClientClosed,
    SocketError,
    Kicked(Disconnect),
    PingTimeout,
    Oversized,
}

/// What this socket has said already, so each thing is said once.
#[derive(Default)]
struct Said {
    opened: bool,
    resolved: bool,
    expired: bool,
}

struct PayloadSocket {
    ws: WebSocket,
    session: Session,
    /// For the log (16 bytes, no allocation).
    uuid: uuid::Uuid,
    expires_at: i64,
    said: Said,
    write_timeout: Duration,
    batch: Vec<Outbound>,
}

async fn serve(mut ws: WebSocket, admission: Admission, countdown: Duration) {
    let (session, payload) = match admission {
        Admission::Refused { message, code } => {
            let frame = json!({ "message": message }).to_string();
            // Boxed, like every path an idle socket is not waiting in: the task's future
            // is as large as its largest waiting point, and every socket holds one.
            let sent = Box::pin(tokio::time::timeout(
                websocket::CLOSE_GRACE,
                ws.send(Message::Text(frame.into())),
            ))
            .await;
            if matches!(sent, Ok(Ok(()))) {
                Box::pin(websocket::close(&mut ws, code, &message)).await;
            }
            tracing::debug!(end = ?End::Refused, "payload socket refused: {message}");
            return;
        }
        Admission::Admitted { session, payload } => (session, payload),
    };
    let mut socket = PayloadSocket {
        ws,
        write_timeout: session.core().settings.pong_timeout,
        session,
        uuid: uuid::Uuid::parse_str(&payload.uuid).unwrap_or_default(),
        expires_at: payload.expires_at,
        said: Said::default(),
        batch: Vec::new(),
    };
    let end = socket.run(payload, countdown).await;
    tracing::debug!(payload = %socket.uuid, ?end, "payload socket closed");
}

impl PayloadSocket {
    async fn run(&mut self, payload: Box<Payload>, countdown: Duration) -> End {
        if let Err(end) = Box::pin(self.greet(&payload)).await {
            return end;
        }
        // The snapshot is said; an idle socket keeps only what it needs from here on.
        drop(payload);
        let conn = self.session.connection().clone();
        let settings = &self.session.core().settings;
        let (ping_every, pong_wait) = (
            settings.activity_timeout,
            settings.pong_timeout.min(settings.activity_timeout),
        );
        // One timer for both the countdown and the ping check (each idle socket holds
        // thousands of siblings: one timer entry each is what they cost).
        let start = tokio::time::Instant::now();
        let mut next_countdown = start + countdown;
        let mut next_ping_check = start + ping_every;
        let timer = tokio::time::sleep_until(next_countdown.min(next_ping_check));
        tokio::pin!(timer);
        let mut last_seen = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            tokio::select! {
                drained = conn.outbox.drain(&mut self.batch) => match drained {
                    Drain::Frames => {
                        if let Err(end) = Box::pin(self.write_batch()).await {
                            return end;
                        }
                    }
                    Drain::Close(reason) => return Box::pin(self.kicked(reason)).await,
                },
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if now >= next_countdown {
                        if self.counting()
                            && let Err(end) = Box::pin(self.send_countdown()).await
                        {
                            return end;
                        }
                        while next_countdown <= now {
                            next_countdown += countdown;
                        }
                    }
                    if now >= next_ping_check {
                        next_ping_check = now + ping_every;
                        if let Some(sent) = ping_sent
                            && last_seen < sent
                            && sent.elapsed() >= pong_wait
                        {
                            Box::pin(websocket::close(&mut self.ws, codes::PING_TIMEOUT, "No pong received")).await;
                            return End::PingTimeout;
                        }
                        if ping_sent.is_none() && last_seen.elapsed() >= ping_every {
                            if Box::pin(self.send(Message::Ping(Default::default()))).await.is_err() {
                                return End::SocketError;
                            }
                            ping_sent = Some(Instant::now());
                        }
                    }
                    let next = if self.counting() {
                        next_countdown.min(next_ping_check)
                    } else {
                        next_ping_check
                    };
                    timer.as_mut().reset(next);
                }
                incoming = self.ws.next() => {
                    let message = match incoming {
                        None => return End::ClientClosed,
                        Some(Err(error)) => {
                            if websocket::oversized(&error).is_none() {
                                return End::SocketError;
                            }
                            Box::pin(websocket::close_unread(&mut self.ws, codes::MESSAGE_TOO_BIG, "Message too big")).await;
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
            }
        }
    }

    /// The node closes this socket (shutdown, a slow consumer): a code that says
    /// "reconnect".
    async fn kicked(&mut self, reason: Disconnect) -> End {
        if reason == Disconnect::SlowConsumer {
            self.session.core().record_slow_consumer();
        }
        let code = match reason {
            Disconnect::Shutdown => codes::RESTARTING,
            _ => codes::TRY_AGAIN_LATER,
        };
        websocket::close(&mut self.ws, code, "Reconnect").await;
        End::Kicked(reason)
    }

    /// The countdown runs until the payload is resolved or expired.
    fn counting(&self) -> bool {
        !(self.said.resolved || self.said.expired)
    }

    /// The first messages: the payload as it was when the socket joined its channel.
    async fn greet(&mut self, payload: &Payload) -> Result<(), End> {
        if payload.is_expired() {
            // Expired (or cancelled) before it was opened: that is all there is to say.
            self.said.expired = true;
            return self.send_text(r#"{"expired":true}"#.to_string()).await;
        }
        self.send_text(json!({ "message": format!("Welcome {}", payload.uuid) }).to_string())
            .await?;
        self.send_countdown().await?;
        if payload.is_opened() {
            self.said.opened = true;
            self.send_text(payload.socket_message(Change::Opened).to_string())
                .await?;
        }
        if payload.state == payloads::State::Resolved {
            self.said.resolved = true;
            self.send_text(payload.socket_message(Change::Resolved).to_string())
                .await?;
        }
        Ok(())
    }

    async fn send_countdown(&mut self) -> Result<(), End> {
        let seconds = seconds_until(self.expires_at, now_ms());
        self.send_text(format!(r#"{{"expires_in_seconds":{seconds}}}"#))
            .await
    }

    async fn send_text(&mut self, text: String) -> Result<(), End> {
        self.send(Message::Text(text.into())).await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::SocketError),
        }
    }

    /// Whether `change` is news to this socket (and from now on it is not).
    fn first_time(&mut self, change: Change) -> bool {
        let flag = match change {
            Change::Opened => &mut self.said.opened,
            Change::Resolved => &mut self.said.resolved,
            Change::Cancelled | Change::Expired => &mut self.said.expired,
        };
        !std::mem::replace(flag, true)
    }

    async fn write_batch(&mut self) -> Result<(), End> {
        let batch = std::mem::take(&mut self.batch);
        let mut frames = Vec::new();
        for item in &batch {
            // The callbacks of the channel (`payload.resolved`, …) are not for sockets;
            // nor is the `Subscribed` item of joining it.
            if let Outbound::Publication(publication) = item
                && let Some(change) = payloads::socket_change(&publication.event)
                && self.first_time(change)
            {
                frames.push(frame(publication));
            }
        }
        // A payload socket hears a few messages in its life: between them it holds no
        // buffer, here or in its outbox.
        drop(batch);
        self.session.connection().outbox.release_idle();
        if frames.is_empty() {
            return Ok(());
        }
        let write = async {
            for frame in frames {
                self.ws.feed(Message::Text(frame)).await?;
            }
            self.ws.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::SocketError),
            Err(_) => {
                self.session.core().record_slow_consumer();
                Err(End::SocketError)
            }
        }
    }

    /// Handles one client message; `Some` ends the socket.
    async fn on_message(&mut self, message: Message) -> Option<End> {
        let bytes = match message {
            Message::Text(text) => axum::body::Bytes::from(text),
            Message::Binary(bytes) => bytes,
            Message::Ping(_) | Message::Pong(_) => {
                // tungstenite queued the pong; it leaves with this flush.
                return tokio::time::timeout(self.write_timeout, self.ws.flush())
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
        // xumm-sdk's keepalive; anything else a client says is ignored.
        if is_ping(&bytes) {
            return self.send_text(PONG_MESSAGE.to_string()).await.err();
        }
        None
    }
}

/// Whether a client message is `{"ping":true}`.
fn is_ping(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Ping {
        #[serde(default)]
        ping: bool,
    }
    serde_json::from_slice::<Ping>(bytes).is_ok_and(|p| p.ping)
}

/// A socket message publication as its frame: the data is the message, encoded once for
/// every socket of the payload.
fn frame(publication: &Publication) -> Utf8Bytes {
    publication.encoded(PAYLOAD_SLOT, |p| Utf8Bytes::from(p.data.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle payload socket holds its task's future, as large as its largest
    /// waiting point: the rare paths (greeting, writes, client messages, closes) are
    /// boxed so the idle loop sets the size. 2 320 bytes in a debug build at the time of
    /// writing (release builds are smaller); a path inlined again that is larger than the
    /// headroom shows here.
    #[test]
    #[cfg(debug_assertions)]
    fn the_socket_task_stays_small() {
        fn output_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = output_size(serve);
        assert!(size <= 2_560, "the payload socket's future is {size} bytes");
    }

    #[test]
    fn pings_are_recognised() {
        assert!(is_ping(br#"{"ping":true}"#));
        assert!(is_ping(br#"{"ping":true,"extra":1}"#));
        assert!(!is_ping(br#"{"ping":false}"#));
        assert!(!is_ping(br#"{"pong":true}"#));
        assert!(!is_ping(b"ping"));
        assert!(!is_ping(b"[]"));
    }
}
