//! The Socket.IO v4 gateway (seed 003): `socket.io-client` connects unchanged to
//! `ws://HOST/socket.io/?EIO=4&transport=websocket` with a merchant API key or a client
//! token and receives the merchant's events as `socket.on(name, data)`.
//!
//! socketioxide speaks Engine.IO and Socket.IO; this module only decides who may connect
//! and what they receive:
//! - `auth.rs`: the credential, checked once in a connect middleware, so a refusal is a
//!   `connect_error` with a message and no room is joined;
//! - `bridge.rs`: per socket, the core's publications → `socket.emit(event, data)`;
//! - `client_tokens.rs`: the merchant backend's routes to mint and revoke client tokens.
//!
//! **The merchant's room is a core channel.** A client of merchant M subscribes, through
//! a core session like any other protocol's socket, to `private-{kind}.{M}` for each of
//! the app's `[apps.socketio] channel_kinds` (default `merchant`). Whatever is published
//! there (the Pusher HTTP API, `POST /v1/events` with `kind`, any node) reaches M's
//! Pusher subscribers of that channel and M's Socket.IO clients alike, under its event
//! name. socketioxide's own rooms and adapter are unused: fan-out, limits, termination,
//! revocation and multi-node delivery are the core's, the same for every protocol.
//!
//! Only the WebSocket transport is served (the seed has no long-polling fallback); a
//! polling request gets a 400 that says so before reaching socketioxide.
//!
//! The WebSocket handshake is ours (`upgrade.rs`), so each socket's transport carries a
//! switch (`transport.rs`): a socket closed for being slow loses its transport, which
//! socket.io-client reconnects after, rather than getting a DISCONNECT, which is final.

pub(crate) mod auth;
mod bridge;
mod client_tokens;
pub(crate) use client_tokens::{parse_client_token_request, parse_client_token_revoke};
mod transport;
mod upgrade;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use parking_lot::Mutex;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};
use tokio::sync::Notify;

use self::auth::{AuthError, AuthPayload, Recheck};
use self::transport::TransportSwitch;
use crate::config::ClientTokenScope;
use crate::core::Session;
use crate::http::HttpState;
use crate::merchants::channels;
use crate::merchants::failures::Subject;

/// The name the core and the metrics know this adapter by.
pub const PROTOCOL: &str = "socketio";

/// The path socket.io-client uses unless told otherwise.
const PATH: &str = "/socket.io/";
/// The largest message a Socket.IO client may send (in one frame or several). Clients
/// send a CONNECT with their credential, and pongs; without this bound engineioxide reads
/// messages of up to 64 MiB (in frames of 16 MiB) from anyone who opens the transport,
/// before any credential, and holds an unfinished one for as long as the client likes.
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// The node's Socket.IO server, kept so shutdown can close every Engine.IO transport.
#[derive(Clone, Default)]
pub struct Gateway(Arc<OnceLock<SocketIo>>);

impl Gateway {
    /// Closes every Socket.IO transport; clients see "transport close" and reconnect
    /// (to another node, behind a load balancer).
    pub async fn close_all(&self) {
        if let Some(io) = self.0.get() {
            io.close().await;
        }
    }
}

/// A socket that passed the connect middleware, waiting for its connect handler.
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<(Session, Recheck, TransportSwitch)>>>);

pub(crate) fn routes(state: &HttpState) -> Router<HttpState> {
    let (service, io) = SocketIo::builder()
        .req_path(PATH.trim_end_matches('/'))
        .transports([TransportType::Websocket])
        // The read buffer lives as long as the socket; clients send little (CONNECT,
        // pongs), so 1 KiB instead of 4 saves 3 KiB per idle socket (BENCHMARKS.md).
        .ws_read_buffer_size(1024)
        .ws_max_message_size(MAX_CLIENT_MESSAGE)
        .ws_max_frame_size(MAX_CLIENT_MESSAGE)
        .max_payload(MAX_CLIENT_MESSAGE as u64)
        .with_state(state.clone())
        .build_svc();
    io.ns("/", on_connect.with(authenticate));
    if state.socketio.0.set(io).is_err() {
        tracing::warn!("the Socket.IO router was built twice; shutdown closes the first one");
    }
    let handshake = get(move |request: Request| upgrade::upgrade(service.clone(), request));
    Router::new()
        .route(PATH, handshake)
        .merge(client_tokens::routes())
}

/// The connect middleware: a refusal here is the client's `connect_error`.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<AuthPayload>,
    State(state): State<HttpState>,
) -> Result<(), AuthError> {
    let remote = remote_addr(&socket);
    let client = state
        .client_addr
        .client_ip(remote, &socket.req_parts().headers);
    let result = match auth::presented(socket.req_parts().uri.query(), &auth.unwrap_or_default()) {
        // No credential: refused for free, counted against no one.
        Err(e) => Err(e),
        Ok(presented) => admit_counted(&socket, presented, client, &state).await,
    };
    if let Err(e) = &result {
        tracing::info!(%client, "socket.io connection refused: {e}");
        metrics::counter!("payrelay_socketio_refusals_total", "reason" => e.reason()).increment(1);
    }
    result
}

/// Admits a client that presented a credential, under the failed-attempt limits of the
/// Pusher auth endpoint: socket.io-client may send CONNECT again and again on one
/// transport, so a bad API key or token counts against itself and against the client's
/// address, and guessing costs neither the store nor the log more than
/// `auth_failures_per_minute`.
async fn admit_counted(
    socket: &SocketRef,
    presented: auth::Presented,
    client: std::net::IpAddr,
    state: &HttpState,
) -> Result<(), AuthError> {
    let failures = &state.merchants.failures;
    let subjects = [
        Subject::credential(presented.secret()),
        Subject::address(None, client),
    ];
    if let Some(wait) = failures.blocked(&subjects) {
        return Err(AuthError::Throttled(wait.as_secs().max(1)));
    }
    let result = admit(socket, presented, state).await;
    if let Err(AuthError::BadApiKey | AuthError::BadToken) = &result {
        failures.record_failure(&subjects);
    }
    result
}

async fn admit(
    socket: &SocketRef,
    presented: auth::Presented,
    state: &HttpState,
) -> Result<(), AuthError> {
    // Every socket came through `upgrade`, which put the switch of its transport here.
    let Some(switch) = socket
        .req_parts()
        .extensions
        .get::<TransportSwitch>()
        .cloned()
    else {
        return Err(AuthError::Refused("no switchable transport".into()));
    };
    let identity = auth::identify(state, presented).await?;
    let mut session = state
        .core
        .open_session(&identity.app, PROTOCOL, remote_addr(socket))
        .map_err(|e| AuthError::Refused(e.to_string()))?;
    let conn = session.connection().clone();
    conn.set_credential(Arc::from(identity.credential_id.as_str()));
    // A client token minted for one of the merchant's users sees, if the app says so, only
    // that user's events and the merchant-wide ones (narrowed before any subscription).
    if identity.app.socketio.client_token_scope == ClientTokenScope::User
        && let Some(user) = &identity.user_id
    {
        conn.narrow_to_user(Arc::from(user.as_str()));
    }
    // Signed in as the merchant (not as a user: user "42" is not merchant "42"), so
    // revoking its key or token finds the socket by (merchant, credential) on every node.
    session
        .sign_in_merchant(&identity.merchant_id)
        .map_err(|e| AuthError::Refused(e.to_string()))?;
    for kind in &identity.app.socketio.channel_kinds {
        let channel = channels::private_channel(kind, &identity.merchant_id)
            .ok_or_else(|| AuthError::Refused(format!("no `{kind}` channel")))?;
        session
            .subscribe(&channel, None)
            .map_err(|e| AuthError::Refused(e.to_string()))?;
    }
    tracing::debug!(
        socket_id = %conn.id,
        sid = %socket.id,
        app = %identity.app.id,
        merchant = %identity.merchant_id,
        user = identity.user_id.as_deref().unwrap_or("-"),
        "socket.io client admitted"
    );
    socket.extensions.insert(Admitted(Arc::new(Mutex::new(Some((
        session,
        identity.recheck,
        switch,
    ))))));
    Ok(())
}

/// The socket is connected (its CONNECT answered): start carrying events to it.
async fn on_connect(socket: SocketRef, State(state): State<HttpState>) {
    let Some((session, recheck, switch)) = socket
        .extensions
        .remove::<Admitted>()
        .and_then(|admitted| admitted.0.lock().take())
    else {
        tracing::error!(sid = %socket.id, "socket.io socket connected without admission");
        let _ = socket.disconnect();
        return;
    };
    let gone = Arc::new(Notify::new());
    socket.on_disconnect({
        let gone = gone.clone();
        async move || gone.notify_one()
    });
    // A client that left between the middleware and here never fires on_disconnect.
    if !socket.connected() {
        return;
    }
    let in_flight = state.tracker.token();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        bridge::run(socket, session, state, recheck, switch, gone).await;
    });
}

fn remote_addr(socket: &SocketRef) -> SocketAddr {
    socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}
