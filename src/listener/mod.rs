//! The node's listener: accepting TCP connections and holding them to limits before any
//! protocol sees them.
//!
//! Everything a client can do before it has proven anything (open connections, send
//! nothing, send headers a byte a minute, idle on keep-alive, never finish a body) is
//! bounded here, because no adapter can: they only see a request once its headers are in.
//!
//! - [`limits`]: caps on open connections, node-wide and per client address, counted at
//!   accept; a permit travels with the socket.
//! - [`refusal`]: what a connection over a cap is told (503, or a close).
//! - [`activity`] and [`connection`]: the header, keep-alive and request timeouts of one
//!   HTTP connection, and graceful shutdown.
//! - [`watched_io`]: the socket wrapper that reports reads and carries the permit.
//! - [`backoff`]: pausing `accept` when the process is out of files, instead of spinning.
//! - [`tls`]: rustls on the same port, with a certificate pair replaced without a restart.

pub mod activity;
pub mod backoff;
pub mod connection;
pub mod limits;
pub mod refusal;
pub mod tls;
pub mod watched_io;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use activity::{Activity, Timeouts};
use backoff::AcceptBackoff;
use connection::Shared;
use limits::ConnectionLimits;
use refusal::Refusals;
use watched_io::WatchedIo;

/// The listener's settings, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// `None`: no limit.
    pub max_tcp_connections: Option<usize>,
    /// `None`: no limit.
    pub max_tcp_connections_per_ip: Option<usize>,
    pub timeouts: Timeouts,
    /// `SO_SNDBUF` of accepted connections, in bytes; `None`: the kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// How long connections may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl ListenerSettings {
    pub fn from_config(config: &Config) -> Self {
        let limit = |n: usize| (n > 0).then_some(n);
        ListenerSettings {
            max_tcp_connections: match config.max_tcp_connections {
                None => limits::cap_from_file_limit(),
                Some(n) => limit(n),
            },
            max_tcp_connections_per_ip: limit(config.max_tcp_connections_per_ip),
            timeouts: Timeouts {
                handshake: Duration::from_secs(config.handshake_timeout_secs),
                header_read: Duration::from_secs(config.header_read_timeout_secs),
                keep_alive: Duration::from_secs(config.keep_alive_timeout_secs),
                request: Duration::from_secs(config.request_timeout_secs),
            },
            send_buffer: (config.tcp_send_buffer_kib > 0)
                .then(|| config.tcp_send_buffer_kib * 1024),
            shutdown_grace: Duration::from_secs(config.shutdown_timeout_secs),
        }
    }
}

/// Accepts connections (over TLS when `tls` is given) and serves `router` on them until
/// `stop` is cancelled; then stops accepting, asks every connection to finish, and returns
/// once they have (upgraded WebSockets are not waited for: they belong to their
/// protocols' tasks by then).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let limits = ConnectionLimits::new(
        settings.max_tcp_connections,
        settings.max_tcp_connections_per_ip,
    );
    tracing::info!(
        max_tcp_connections = ?limits.max_total(),
        max_tcp_connections_per_ip = ?limits.max_per_address(),
        tls = tls.is_some(),
        "connection limits"
    );
    let shared = Arc::new(Shared {
        router,
        timeouts: settings.timeouts,
        stopping: stop.clone(),
        shutdown_grace: settings.shutdown_grace,
    });
    let refusals = Refusals::new(tls.is_none());
    let tasks = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => {
                backoff.succeeded();
                // Frames are small and latency matters more than packet count.
                let _ = accepted.0.set_nodelay(true);
                // What a client that stops reading can park in the kernel.
                if let Some(bytes) = settings.send_buffer {
                    let _ = socket2::SockRef::from(&accepted.0).set_send_buffer_size(bytes);
                }
                accepted
            }
            Err(e) => {
                if let Some(pause) = backoff.failed(&e) {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        match limits.try_acquire(remote.ip()) {
            Ok(permit) => {
                let activity = Arc::new(Activity::default());
                let io = WatchedIo::new(tcp, activity.clone(), permit);
                let shared = shared.clone();
                match &tls {
                    None => tasks.spawn(connection::serve_http(io, remote, activity, shared)),
                    Some(tls) => tasks.spawn(connection::serve_https(
                        tls.clone(),
                        io,
                        remote,
                        activity,
                        shared,
                    )),
                };
            }
            Err(why) => refusals.refuse(tcp, remote, why, &tasks),
        }
    }
    // Closing the listening socket first: new clients are refused by the kernel at once
    // instead of waiting in a backlog nobody reads.
    drop(listener);
    tasks.close();
    tasks.wait().await;
}
