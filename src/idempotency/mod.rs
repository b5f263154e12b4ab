//! Idempotent publishing: a backend that retries a publish (a timeout, a crash between
//! the request and its answer) gets the first answer back and delivers nothing twice.
//!
//! Every publishing route accepts a key: the `Idempotency-Key` header for the whole
//! request, or an `idempotency_key` field per event (Pusher's `events` and each item of
//! `batch_events`, `/v1/events`, `/api/v1/events`). The first request with a key claims
//! it; once it has published, its answer is stored for the window
//! (`idempotency_window_secs`, 24 h by default) and every later request with the same
//! key (and the same body) gets that answer with `Idempotent-Replayed: true`, publishing
//! nothing. A retry that arrives while the first is still running waits for its answer.
//! A request that failed without publishing (a 4xx, a 503) releases its key, so the retry
//! is really tried. The same key with another body is refused (422).
//!
//! [`IdempotencyStore`] is the seam: [`MemoryIdempotency`] for one node, bounded in
//! entries; [`RedisIdempotency`] (`SET NX PX`) with `redis_url`, so a retry sent to
//! another node is recognised too.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub use memory::MemoryIdempotency;
pub use redis::RedisIdempotency;

/// The header a replayed answer carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long a retry waits for the first request with its key to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// A stored first answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    /// The JSON body, as sent.
    pub body: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had it: the caller publishes, then completes or releases it.
    First,
    /// A request with this key is running.
    Pending { fingerprint: String },
    /// A request with this key finished with this answer.
    Done {
        fingerprint: String,
        answer: StoredAnswer,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IdempotencyError {
    #[error("idempotency store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request whose body hashes to `fingerprint`, for `window`.
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        window: Duration,
    ) -> Result<Claim, IdempotencyError>;

    /// Stores the answer of the request that claimed `key`.
    async fn complete(
        &self,
        key: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        window: Duration,
    ) -> Result<(), IdempotencyError>;

    /// Gives `key` up: its request published nothing, a retry must really run.
    async fn release(&self, key: &str);

    fn name(&self) -> &'static str;
}

/// A request's key, from the `Idempotency-Key` header or a body field: 1 to
/// [`MAX_KEY_LEN`] visible ASCII characters.
pub fn parse_key(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "An idempotency key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ));
    }
    Ok(text.to_string())
}

/// The `Idempotency-Key` header, if any (an invalid one is an error).
pub fn header_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| "The Idempotency-Key header must be visible ASCII".to_string())?;
            parse_key(text).map(Some)
        }
    }
}

/// The store's key for a client key: scoped by app and route, so two apps (or two
/// routes) never share one.
pub fn scoped(app_id: &str, route: &str, key: &str) -> String {
    format!("{app_id}:{route}:{key}")
}

/// What identifies a request's content: a retry must send the same.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..16])
}

/// Why an idempotent run did not give its own answer.
pub enum Refused {
    /// The key was used for another request.
    Mismatch,
    /// The first request with the key is still running after [`WAIT_FOR_FIRST`].
    StillRunning,
    Unavailable(IdempotencyError),
}

impl Refused {
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            Refused::Mismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "This idempotency key was used with a different request".into(),
            ),
            Refused::StillRunning => (
                StatusCode::CONFLICT,
                "A request with this idempotency key is still running; retry later".into(),
            ),
            Refused::Unavailable(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// What [`Idempotency::begin`] decided.
pub enum Begun {
    /// Publish, then [`Idempotency::finish`].
    First,
    /// The first request's answer: send it, publish nothing.
    Replay(StoredAnswer),
}

/// The node's idempotency: a store and the window.
pub struct Idempotency {
    store: Box<dyn IdempotencyStore>,
    window: Duration,
}

impl Idempotency {
    pub fn new(store: Box<dyn IdempotencyStore>, window: Duration) -> Self {
        Idempotency { store, window }
    }

    /// With `redis_url`, keys live in Redis (every node sees them); else in memory.
    pub async fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        let window = Duration::from_secs(config.idempotency_window_secs);
        let store: Box<dyn IdempotencyStore> = match &config.redis_url {
            Some(url) => Box::new(
                RedisIdempotency::connect(
                    url,
                    &format!("{}idem:", config.redis_prefix),
                    Duration::from_millis(config.token_store_timeout_ms),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            None => Box::new(MemoryIdempotency::new(memory::MAX_ENTRIES)),
        };
        Ok(Idempotency::new(store, window))
    }

    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Claims `key`, or waits for the first request with it and returns its answer.
    pub async fn begin(&self, key: &str, fingerprint: &str) -> Result<Begun, Refused> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            match self
                .store
                .claim(key, fingerprint, self.window)
                .await
                .map_err(Refused::Unavailable)?
            {
                Claim::First => return Ok(Begun::First),
                Claim::Done {
                    fingerprint: first,
                    answer,
                } => {
                    return if first == fingerprint {
                        metrics::counter!("payrelay_idempotent_replays_total").increment(1);
                        Ok(Begun::Replay(answer))
                    } else {
                        Err(Refused::Mismatch)
                    };
                }
                Claim::Pending { fingerprint: first } => {
                    if first != fingerprint {
                        return Err(Refused::Mismatch);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Refused::StillRunning);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Ends the run that claimed `key`: a success (or a refusal after publishing) is
    /// stored for the window; a failure that published nothing releases the key.
    pub async fn finish(
        &self,
        key: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        published: bool,
    ) {
        if published {
            if let Err(e) = self
                .store
                .complete(key, fingerprint, answer, self.window)
                .await
            {
                // The event went out; a retry may deliver it again. Say so.
                tracing::error!("could not store an idempotent answer: {e}");
            }
        } else {
            self.store.release(key).await;
        }
    }
}

/// A stored answer as an HTTP response, marked as a replay.
pub fn replayed(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    response.headers_mut().insert(
        REPLAYED_HEADER,
        axum::http::HeaderValue::from_static("true"),
    );
    response
}

/// Runs `publish` at most once per `key` within the window: the first request runs it and
/// its answer is stored; a retry gets that answer back. `publish` returns its answer and
/// whether it published anything.
pub async fn run<F, Fut>(
    idempotency: &Idempotency,
    key: Option<String>,
    fingerprint: &str,
    publish: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (StoredAnswer, bool)>,
{
    let Some(key) = key else {
        return replayed_free(publish().await.0);
    };
    match idempotency.begin(&key, fingerprint).await {
        Ok(Begun::Replay(answer)) => replayed(answer),
        Ok(Begun::First) => {
            let (answer, published) = publish().await;
            idempotency
                .finish(&key, fingerprint, &answer, published)
                .await;
            replayed_free(answer)
        }
        Err(refused) => {
            let (status, message) = refused.status_and_message();
            let body = serde_json::json!({ "error": message }).to_string();
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    }
}

/// A fresh answer as an HTTP response.
fn replayed_free(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(body: &str) -> StoredAnswer {
        StoredAnswer {
            status: 200,
            body: body.into(),
        }
    }

    #[tokio::test]
    async fn a_key_runs_once_and_retries_get_the_first_answer() {
        let idem = Arc::new(Idempotency::new(
            Box::new(MemoryIdempotency::new(100)),
            Duration::from_secs(60),
        ));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (idem, runs) = (idem.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                run(&idem, Some("k".into()), "f", || async {
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    (answer(&format!("{{\"run\":{n}}}")), true)
                })
                .await
            }));
        }
        let mut bodies = Vec::new();
        let mut replays = 0;
        for task in tasks {
            let response = task.await.unwrap();
            if response.headers().contains_key(REPLAYED_HEADER) {
                replays += 1;
            }
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            bodies.push(String::from_utf8(body.to_vec()).unwrap());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(replays, 2);
        assert!(bodies.iter().all(|b| b == r#"{"run":0}"#), "{bodies:?}");
    }

    #[tokio::test]
    async fn a_failure_that_published_nothing_lets_the_retry_run_and_another_body_is_refused() {
        let idem = Idempotency::new(
            Box::new(MemoryIdempotency::new(100)),
            Duration::from_secs(60),
        );
        let failed = run(&idem, Some("k".into()), "f", || async {
            (
                StoredAnswer {
                    status: 503,
                    body: "{}".into(),
                },
                false,
            )
        })
        .await;
        assert_eq!(failed.status(), 503);
        let retried = run(&idem, Some("k".into()), "f", || async {
            (answer("{}"), true)
        })
        .await;
        assert_eq!(retried.status(), 200);
        assert!(!retried.headers().contains_key(REPLAYED_HEADER));
        let other = run(&idem, Some("k".into()), "g", || async {
            (answer("{}"), true)
        })
        .await;
        assert_eq!(other.status(), 422);
    }

    #[test]
    fn keys_are_visible_ascii() {
        assert!(parse_key("order-42_retry.1").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }
}
