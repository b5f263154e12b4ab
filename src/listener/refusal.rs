//! The answer to a connection over a cap: `503 Service Unavailable` with `Retry-After`.
//!
//! A load balancer reads a 503 as "this backend is full, try another" and a WebSocket
//! client as a failed handshake it retries with back-off; a bare close looks like a
//! crashed server. So a refused plain-TCP connection gets its request read (with a short
//! deadline) and that answer. The answer costs a task and a file for at most a second,
//! so only a few are given at once; beyond them, and on TLS listeners (where an answer
//! would first cost the handshake the cap is there to avoid), the connection is closed
//! at once, which clients treat the same way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::limits::Refusal;
use crate::http::ApiError;

/// Refusals answered at once; more are closed without an answer.
const ANSWERS_AT_ONCE: usize = 32;
/// The whole life of a refused connection: read a request, answer, close.
const ANSWER_DEADLINE: Duration = Duration::from_secs(1);
/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECS: &str = "5";
/// Refusals logged at most once per this interval (with a count).
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Refusals {
    answers: Arc<Semaphore>,
    answer: bool,
    log: parking_lot::Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl Refusals {
    /// `answer`: whether refused connections get a 503 (plain TCP) or are just closed.
    pub fn new(answer: bool) -> Self {
        Refusals {
            answers: Arc::new(Semaphore::new(ANSWERS_AT_ONCE)),
            answer,
            log: Default::default(),
        }
    }

    pub fn refuse(&self, tcp: TcpStream, remote: SocketAddr, why: Refusal, tasks: &TaskTracker) {
        metrics::counter!("payrelay_tcp_connections_refused_total", "reason" => why.reason())
            .increment(1);
        self.log(remote, why);
        let permit = match self.answers.clone().try_acquire_owned() {
            Ok(permit) if self.answer => permit,
            _ => return, // dropping the socket closes it
        };
        tasks.spawn(async move {
            let _permit = permit;
            let answer = hyper::service::service_fn(move |_request| async move {
                Ok::<_, Infallible>(refusal_response(why))
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.keep_alive(false)
                .max_buf_size(super::connection::MAX_HEAD_BYTES);
            let _ = tokio::time::timeout(
                ANSWER_DEADLINE,
                http.serve_connection(TokioIo::new(tcp), answer),
            )
            .await;
        });
    }

    fn log(&self, remote: SocketAddr, why: Refusal) {
        let now = tokio::time::Instant::now();
        let mut log = self.log.lock();
        let (last, not_logged) = &mut *log;
        if last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            tracing::warn!(
                client = %remote.ip(),
                reason = why.reason(),
                refused_since_last_warning = *not_logged,
                "refusing connections over a cap"
            );
            *last = Some(now);
            *not_logged = 0;
        } else {
            *not_logged += 1;
        }
    }
}

fn refusal_response(why: Refusal) -> axum::response::Response {
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why.message()).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}
