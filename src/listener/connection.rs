//! One accepted connection: HTTP/1.1 on hyper until it closes or upgrades.
//!
//! The task serves the connection and watches its [`Activity`] beside it: a client that
//! is too slow with its headers is dropped, an idle keep-alive connection is shut down
//! gracefully, and node shutdown asks every connection to finish its request and close.
//! An upgraded WebSocket leaves this task (hyper hands its socket to the protocol's own
//! task), so none of these timeouts reach an open WebSocket; the protocols' pings do.
//!
//! The node speaks HTTP/1.1 only, as it always has: every protocol it serves is a
//! WebSocket upgrade or a small JSON request, and HTTP/2 would add a second parser and
//! its own flood defences for no client that needs it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Next, Timeouts};
use crate::http::ApiError;

/// Largest request head (request line and headers) a client may send; beyond it hyper
/// answers 431. Client handshakes and API requests need a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long an idle connection told to close may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What every connection task shares.
pub struct Shared {
    pub router: Router,
    pub timeouts: Timeouts,
    /// Cancelled when the node shuts down.
    pub stopping: CancellationToken,
    /// How long a connection may take to finish after shutdown began.
    pub shutdown_grace: Duration,
}

/// Completes the TLS handshake within the handshake timeout, then serves HTTP over it.
pub async fn serve_https<I>(
    tls: tokio_rustls::TlsAcceptor,
    io: I,
    remote: SocketAddr,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio::time::timeout(shared.timeouts.handshake, tls.accept(io));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::counter!("payrelay_tls_handshake_failures_total").increment(1);
                tracing::debug!(%remote, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                count_timeout("tls_handshake");
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
        () = shared.stopping.cancelled() => return,
    };
    serve_http(stream, remote, activity, shared).await;
}

/// Serves HTTP on `io` until the connection closes, upgrades or times out.
pub async fn serve_http<I>(io: I, remote: SocketAddr, activity: Arc<Activity>, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = RequestService {
        router: shared.router.clone(),
        remote,
        activity: activity.clone(),
        timeout: shared.timeouts.request,
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES).keep_alive(true);
    let mut connection = pin!(
        http.serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    let ready_at = Instant::now();
    // Set once the connection was asked to close: the moment it is dropped regardless.
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match closing {
            Some(at) => at,
            None => match activity.next(Instant::now(), ready_at, &shared.timeouts) {
                Next::CheckAt(at) => at,
                Next::HeadersTooSlow => {
                    count_timeout("header_read");
                    tracing::debug!(%remote, "closing a connection too slow to send its headers");
                    return;
                }
                Next::IdleTooLong => {
                    count_timeout("keep_alive");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                    continue;
                }
            },
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, "connection ended: {e}");
                }
                return;
            }
            () = shared.stopping.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + shared.shutdown_grace);
            }
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some_and(|at| Instant::now() >= at) {
                    return;
                }
            }
        }
    }
}

pub fn count_timeout(kind: &'static str) {
    metrics::counter!("payrelay_tcp_timeouts_total", "kind" => kind).increment(1);
}

/// The router behind one connection: tells handlers the client's address, marks the
/// request as running for [`Activity`], and bounds it by the request timeout.
#[derive(Clone)]
struct RequestService {
    router: Router,
    remote: SocketAddr,
    activity: Arc<Activity>,
    timeout: Duration,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.remote));
        let running = self.activity.request_started();
        // The router is always ready (axum's `poll_ready` is `Ready(Ok)`), so it is called
        // directly, as axum's own server does.
        let response = tower_service::Service::call(&mut self.router.clone(), request);
        let limit = self.timeout;
        Box::pin(async move {
            let _running = running;
            match tokio::time::timeout(limit, response).await {
                Ok(Ok(response)) => Ok(response),
                Err(_) => {
                    count_timeout("request");
                    Ok(request_timed_out())
                }
            }
        })
    }
}

/// 408 with `Connection: close`: the request may still be half-sent, so the connection
/// cannot carry another one.
fn request_timed_out() -> Response<axum::body::Body> {
    let mut response =
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "Request timed out").into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
