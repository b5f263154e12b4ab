//! The ceiling: what this machine can deliver when nothing but writing is done.
//!
//! A minimal server on the same stack as payrelay (tokio, axum, tungstenite, the same
//! socket buffer sizes) that accepts Pusher sockets, answers `pusher:subscribe` and
//! `pusher:ping`, and writes every event posted to `POST /apps/{id}/events` to every
//! socket as one pre-encoded frame through a `tokio::sync::broadcast`. It has no apps,
//! channels, auth, presence or per-connection queues: every socket receives every event
//! and requests are not signature-checked. The fan-out figures of payrelay are reported
//! as a fraction of this server's, run with the same sockets and the same generator, and it uses payrelay's socket buffer
//! sizes so that memory per connection compares like for like.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::core::{Publication, SocketId};
use crate::protocols::pusher::{frames, socket};

/// Frames a socket may fall behind before it is dropped, as payrelay's outbound queue.
const BACKLOG: usize = 1024;

#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// Listen address (loopback).
    #[arg(long, default_value = "127.0.0.1:6002")]
    pub bind: SocketAddr,
}

pub async fn run(args: CeilingArgs) -> anyhow::Result<()> {
    if !args.bind.ip().is_loopback() {
        anyhow::bail!("the ceiling server listens on loopback only");
    }
    let (frames, _) = broadcast::channel::<Utf8Bytes>(BACKLOG);
    let app = Router::new()
        .route("/app/{key}", get(upgrade))
        .route("/apps/{id}/events", post(publish))
        .with_state(frames);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(args.bind)?;
    let listener = socket.listen(4096)?;
    eprintln!("ceiling server on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
struct Event {
    name: String,
    channel: String,
    data: String,
}

async fn publish(
    State(frames): State<broadcast::Sender<Utf8Bytes>>,
    axum::Json(event): axum::Json<Event>,
) -> impl IntoResponse {
    let publication = Publication::new(
        "ceiling".into(),
        event.channel.into(),
        event.name.into(),
        event.data.into(),
    );
    let _ = frames.send(Utf8Bytes::from(frames::event(&publication, true)));
    "{}"
}

async fn upgrade(
    State(frames): State<broadcast::Sender<Utf8Bytes>>,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    let feed = frames.subscribe();
    ws.read_buffer_size(socket::READ_BUFFER)
        .write_buffer_size(socket::WRITE_BUFFER)
        .on_upgrade(move |socket| serve(socket, feed))
}

async fn serve(mut ws: WebSocket, mut feed: broadcast::Receiver<Utf8Bytes>) {
    let established = frames::connection_established(&SocketId::random().to_string(), 120);
    if ws.send(Message::Text(established.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = feed.recv() => {
                let Ok(frame) = frame else { return };
                if ws.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                // Write whatever else is already waiting, then flush once.
                while let Ok(frame) = feed.try_recv() {
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => {
                let Some(Ok(message)) = incoming else { return };
                let Message::Text(text) = message else { continue };
                let reply = if text.contains("\"pusher:subscribe\"") {
                    let channel = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["data"]["channel"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    frames::subscription_succeeded(&channel, None, None)
                } else if text.contains("\"pusher:ping\"") {
                    frames::pong()
                } else {
                    continue;
                };
                if ws.send(Message::Text(reply.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
