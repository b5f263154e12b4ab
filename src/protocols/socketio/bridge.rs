//! One task per Socket.IO socket that carries the core's output to it.
//!
//! socketioxide owns the WebSocket, Engine.IO heartbeats and Socket.IO framing; the core
//! owns subscriptions and fan-out. The bridge is the seam: it drains the connection's
//! outbox and emits each publication as `socket.emit(event, data)`, so a Socket.IO client
//! sees exactly what a Pusher subscriber of the same channel sees, under the same event
//! name. It also looks the credential up again now and then, and carries the core's
//! close requests to the socket: revocation and termination as a Socket.IO DISCONNECT
//! (final for the client), a slow consumer by closing its transport (the client
//! reconnects, as after a network failure).

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::Notify;

use super::auth::{self, Recheck, Verdict};
use super::transport::TransportSwitch;
use crate::core::outbox::Drain;
use crate::core::{Disconnect, Outbound, Publication, Session};
use crate::http::HttpState;
use crate::protocols::SOCKETIO_SLOT;
use crate::tokens::{self, BackgroundCheck};

/// Event names socket.io-client keeps for itself; a publication named so would be
/// mistaken for a lifecycle event, so it is not emitted.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// How long to wait between tries when socketioxide's own send buffer is full.
const FULL_BUFFER_BACKOFF: Duration = Duration::from_millis(5);

/// The event's data as the client's handler receives it: the published JSON as is (the
/// seed's `{"trade": {...}}`), or a JSON string when the publisher sent text that is not
/// JSON (the Pusher HTTP API allows any string). Parsed once per publication.
fn event_data(publication: &Publication) -> Arc<RawValue> {
    publication.encoded(SOCKETIO_SLOT, |p| {
        let raw = match p.data_as_json() {
            Some(json) => json.to_owned(),
            None => serde_json::value::to_raw_value(&*p.data)
                .unwrap_or_else(|_| RawValue::NULL.to_owned()),
        };
        Arc::from(raw)
    })
}

/// Why the bridge stopped.
#[derive(Debug)]
enum End {
    /// The client went away (or socketioxide closed the socket).
    Gone,
    /// The core asked for a close.
    Closed(Disconnect),
    /// The credential was revoked outside the HTTP API.
    Revoked,
    /// The client token expired (with `disconnect_on_token_expiry`).
    Expired,
}

/// Runs until the socket is gone or the core closes it; dropping `session` then undoes
/// every subscription.
pub(super) async fn run(
    socket: SocketRef,
    session: Session,
    state: HttpState,
    recheck: Recheck,
    switch: TransportSwitch,
    gone: Arc<Notify>,
) {
    let conn = session.connection().clone();
    let app = conn.app.clone();
    let mut background =
        BackgroundCheck::every(Duration::from_secs(app.socketio.credential_recheck_secs));
    // Seed 003 authenticates once, on connect: an expired client token keeps its socket
    // unless the app asks for disconnection at expiry (plus grace).
    let grace = Duration::from_secs(app.socketio.token_expiry_grace_secs);
    let expiry_of = |expires_at| {
        app.socketio
            .disconnect_on_token_expiry
            .then(|| tokens::expiry_deadline(expires_at, grace))
            .flatten()
    };
    let mut deadline = expiry_of(recheck.expires_at());
    let expiry = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
    tokio::pin!(expiry);
    let check = {
        let (state, app) = (state.clone(), app.clone());
        move || {
            let (state, app, recheck) = (state.clone(), app.clone(), recheck.clone());
            async move { auth::recheck(&state, &app, &recheck).await }
        }
    };
    let patience = session.core().settings.pong_timeout;
    let mut batch = Vec::new();
    let end = loop {
        tokio::select! {
            () = gone.notified() => break End::Gone,
            drained = conn.outbox.drain(&mut batch) => {
                let outcome = emit_all(&socket, &mut batch, &gone, patience).await;
                if let Some(end) = outcome {
                    break end;
                }
                if let Drain::Close(reason) = drained {
                    break End::Closed(reason);
                }
            }
            () = &mut expiry, if deadline.is_some() => break End::Expired,
            // The lookup runs on its own task: a store that hangs never stops this loop
            // from emitting. No verdict in time keeps the socket; the next check decides.
            verdict = background.next(&check) => {
                // socketioxide can lose a disconnect that lands between its CONNECT
                // reply and our on_disconnect handler; never hold a dead socket's slot
                // past one recheck.
                if !socket.connected() {
                    break End::Gone;
                }
                match verdict.unwrap_or(Verdict::Unknown) {
                    Verdict::Revoked => break End::Revoked,
                    // The token's writer may have moved its expiry.
                    Verdict::Live { expires_at } => {
                        deadline = expiry_of(expires_at);
                        if let Some(at) = deadline {
                            expiry.as_mut().reset(at);
                        }
                    }
                    Verdict::Unknown => {}
                }
            }
        }
    };
    tracing::debug!(socket_id = %conn.id, sid = %socket.id, ?end, "socket.io bridge ended");
    match end {
        End::Gone => {}
        // The node's shutdown closes every Engine.IO transport at once (see `Gateway`),
        // which clients take as "transport close" and reconnect elsewhere.
        End::Closed(Disconnect::Shutdown) => {}
        // Nothing the client did calls for a final DISCONNECT (which could not be queued
        // behind a full buffer anyway): it loses its transport, as in a network failure,
        // and socket.io-client reconnects by itself.
        End::Closed(Disconnect::SlowConsumer) => {
            session.core().record_slow_consumer();
            switch.close();
        }
        // Final: reconnecting with the same credential would be refused.
        End::Closed(_) | End::Revoked | End::Expired => disconnect(socket, &gone).await,
    }
    drop(session);
}

/// Emits every queued publication in order. Returns why to stop, if the socket is gone
/// or cannot keep up.
async fn emit_all(
    socket: &SocketRef,
    batch: &mut Vec<Outbound>,
    gone: &Notify,
    patience: Duration,
) -> Option<End> {
    for item in batch.drain(..) {
        // Subscriptions are made on connect and presence does not exist here: only
        // publications reach a Socket.IO client.
        let Outbound::Publication(publication) = item else {
            continue;
        };
        if RESERVED_EVENTS.contains(&&*publication.event) {
            tracing::debug!(event = %publication.event, "reserved Socket.IO event name not emitted");
            continue;
        }
        let data = event_data(&publication);
        let started = tokio::time::Instant::now();
        loop {
            match socket.emit(&*publication.event, &*data) {
                Ok(()) => break,
                // socketioxide's per-socket buffer is full: its writer is behind. Wait a
                // little (the core's outbox keeps queueing meanwhile, within its bound).
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    if started.elapsed() >= patience {
                        return Some(End::Closed(Disconnect::SlowConsumer));
                    }
                    tokio::select! {
                        () = gone.notified() => return Some(End::Gone),
                        () = tokio::time::sleep(FULL_BUFFER_BACKOFF) => {}
                    }
                }
                Err(SendError::Socket(SocketError::Closed)) => return Some(End::Gone),
                Err(e) => {
                    tracing::warn!(event = %publication.event, "cannot emit to a socket.io client: {e}");
                    break;
                }
            }
        }
    }
    None
}

/// Sends the Socket.IO DISCONNECT (the client sees `io server disconnect` and does not
/// reconnect by itself). If the send buffer is full the packet cannot be queued yet;
/// try until it can or the socket is gone (Engine.IO's heartbeat ends a stuck client).
async fn disconnect(socket: SocketRef, gone: &Notify) {
    loop {
        match socket.clone().disconnect() {
            Err(SocketError::InternalChannelFull) => {
                tokio::select! {
                    () = gone.notified() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(data: &str) -> Publication {
        Publication::new("1".into(), "c".into(), "trade".into(), data.into())
    }

    #[test]
    fn json_data_is_passed_as_is_and_text_becomes_a_string() {
        let p = publication(r#"{"trade":{"id":"t1","status":"completed"}}"#);
        assert_eq!(
            event_data(&p).get(),
            r#"{"trade":{"id":"t1","status":"completed"}}"#
        );
        assert_eq!(
            event_data(&publication("plain text")).get(),
            r#""plain text""#
        );
        assert_eq!(event_data(&publication("")).get(), r#""""#);
    }

    /// As in the plain protocol: JSON whose numbers no common parser can hold (here
    /// `1e400`) would make socket.io-client's JSON.parse see Infinity and serde-based
    /// clients refuse the packet; it travels as the text it was published as.
    #[test]
    fn out_of_range_numbers_travel_as_text() {
        let p = publication(r#"{"amount":1e400}"#);
        assert_eq!(event_data(&p).get(), r#""{\"amount\":1e400}""#);
    }
}
