//! Merchant JWT keys from a JWKS URL (issue 12 item 8): rotation without a restart, a
//! refresh that never runs inside `/v1/websocket/auth`, a body read with a cap instead of
//! buffered, no redirects, `https://` unless `jwks_allow_http`, and refresh logs that
//! name the URL without its credentials.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use parking_lot::Mutex;
use serde_json::json;

/// What the test identity provider does with the next request.
#[derive(Clone)]
enum Provider {
    Serve(JwkSet),
    /// Accepts the request and never answers.
    Hang,
    Fail,
    /// Streams `total` bytes of a (not JSON) body, counting what it produced.
    Huge {
        total: usize,
        produced: Arc<AtomicUsize>,
    },
    Redirect(String),
}

/// An identity provider on loopback whose behaviour the test can change.
async fn provider(state: Arc<Mutex<Provider>>) -> std::net::SocketAddr {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let mode = state.lock().clone();
            async move {
                match mode {
                    Provider::Serve(set) => axum::Json(set).into_response(),
                    Provider::Hang => std::future::pending().await,
                    Provider::Fail => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    Provider::Huge { total, produced } => {
                        const CHUNK: usize = 64 * 1024;
                        let chunks =
                            futures_util::stream::iter((0..total / CHUNK).map(move |_| {
                                produced.fetch_add(CHUNK, Ordering::Relaxed);
                                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; CHUNK]))
                            }));
                        axum::body::Body::from_stream(chunks).into_response()
                    }
                    Provider::Redirect(to) => {
                        axum::response::Redirect::temporary(&to).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn rsa_key(kid: &str) -> (EncodingKey, Jwk) {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/rs256-private.pem"
    ))
    .unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    (key, jwk)
}

fn rs_token(key: &EncodingKey, kid: &str, merchant: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    encode(
        &header,
        &json!({"merchant_id": merchant, "exp": now() + 60}),
        key,
    )
    .unwrap()
}

fn node_config(jwks_url: &str, jwt_extra: &str) -> String {
    format!(
        r#"
bind = "127.0.0.1:0"
database_url = "sqlite::memory:"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[apps.jwt]
algorithm = "RS256"
jwks_url = "{jwks_url}"
{jwt_extra}
"#
    )
}

/// A node whose app takes keys from `state`'s provider over http, refreshed every second,
/// and an API key of merchant m1.
async fn node_refreshing_every_second(state: Arc<Mutex<Provider>>) -> (TestServer, String) {
    let idp = provider(state).await;
    let server = TestServer::with_config(&node_config(
        &format!("http://{idp}/jwks.json"),
        "jwks_allow_http = true\njwks_refresh_secs = 1",
    ))
    .await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    (server, key.api_key)
}

async fn merchant_auth(server: &TestServer, token: &str, api_key: &str) -> u16 {
    http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(token)
        .header("x-api-key", api_key)
        .json(&json!({"socket_id": "1.2", "channel_name": "private-merchant.m1"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Starting a node with this configuration fails; returns the error's whole text.
async fn start_up_error(toml: &str) -> String {
    let config = payrelay::config::Config::parse(toml).unwrap();
    let error = payrelay::server::Server::bind(config)
        .await
        .err()
        .expect("start-up fails");
    format!("{error:#}")
}

/// Polls `check` until it holds or `within` passes.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn jwt_keys_come_from_a_jwks_url_and_follow_its_rotation() {
    let (key, jwk_a) = rsa_key("key-a");
    let state = Arc::new(Mutex::new(Provider::Serve(JwkSet { keys: vec![jwk_a] })));
    let (server, api_key) = node_refreshing_every_second(state.clone()).await;
    assert_eq!(
        merchant_auth(&server, &rs_token(&key, "key-a", "m1"), &api_key).await,
        200
    );
    assert_eq!(
        merchant_auth(&server, &rs_token(&key, "key-b", "m1"), &api_key).await,
        401,
        "a kid the set does not hold"
    );

    // The provider rotates to key-b; the node picks it up without a restart.
    let (_, jwk_b) = rsa_key("key-b");
    *state.lock() = Provider::Serve(JwkSet { keys: vec![jwk_b] });
    let token_b = rs_token(&key, "key-b", "m1");
    assert!(
        eventually(Duration::from_secs(10), async || {
            merchant_auth(&server, &token_b, &api_key).await == 200
        })
        .await,
        "key-b was never picked up"
    );
    assert_eq!(
        merchant_auth(&server, &rs_token(&key, "key-a", "m1"), &api_key).await,
        401,
        "the retired key no longer verifies"
    );
}

/// The review's case: an identity provider that hangs made `/v1/websocket/auth` wait for
/// the fetch timeout (10 s) whenever a refresh was due or a `kid` was unknown. Requests
/// now answer at once from the keys held, while the refresh waits in the background.
#[tokio::test]
async fn a_hung_identity_provider_never_holds_a_request() {
    let (key, jwk) = rsa_key("key-a");
    let state = Arc::new(Mutex::new(Provider::Serve(JwkSet { keys: vec![jwk] })));
    let (server, api_key) = node_refreshing_every_second(state.clone()).await;
    *state.lock() = Provider::Hang;
    // Let a refresh fall due (and start hanging).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (kid, expected) in [("key-a", 200), ("key-unknown", 401), ("key-a", 200)] {
        let started = Instant::now();
        let status = merchant_auth(&server, &rs_token(&key, kid, "m1"), &api_key).await;
        let took = started.elapsed();
        assert_eq!(status, expected, "{kid}");
        assert!(
            took < Duration::from_secs(3),
            "{kid}: the request waited {took:?} for the identity provider"
        );
    }
}

/// A key set is read chunk by chunk and abandoned past 1 MiB; the review saw a 400 MB
/// chunked answer buffered whole (the node grew to 426 MB).
#[tokio::test]
async fn an_oversized_key_set_is_abandoned_not_buffered() {
    let produced = Arc::new(AtomicUsize::new(0));
    let total = 64 * 1024 * 1024;
    let state = Arc::new(Mutex::new(Provider::Huge {
        total,
        produced: produced.clone(),
    }));
    let idp = provider(state).await;
    let error = start_up_error(&node_config(
        &format!("http://{idp}/jwks.json"),
        "jwks_allow_http = true",
    ))
    .await;
    assert!(error.contains("larger than 1048576 bytes"), "{error}");
    let sent = produced.load(Ordering::Relaxed);
    assert!(
        sent < 16 * 1024 * 1024,
        "the provider produced {sent} of {total} bytes: the body was read past the cap"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (_, jwk) = rsa_key("key-a");
    let good = provider(Arc::new(Mutex::new(Provider::Serve(JwkSet {
        keys: vec![jwk],
    }))))
    .await;
    let redirecting = provider(Arc::new(Mutex::new(Provider::Redirect(format!(
        "http://{good}/jwks.json"
    )))))
    .await;
    let error = start_up_error(&node_config(
        &format!("http://{redirecting}/jwks.json"),
        "jwks_allow_http = true",
    ))
    .await;
    assert!(error.contains("307"), "{error}");
    assert!(error.contains("redirects are not followed"), "{error}");
}

#[test]
fn jwks_urls_must_be_https_unless_http_is_allowed() {
    let parse = |url: &str, extra: &str| payrelay::config::Config::parse(&node_config(url, extra));
    let err = parse("http://idp.example/jwks.json", "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("apps[0].jwt"), "{err}");
    assert!(err.contains("jwks_allow_http"), "{err}");
    assert!(parse("http://idp.example/jwks.json", "jwks_allow_http = true").is_ok());
    assert!(parse("https://idp.example/jwks.json", "").is_ok());
    let err = parse("ftp://idp.example/jwks.json", "jwks_allow_http = true")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an https:// URL"), "{err}");
}

#[tokio::test]
async fn a_jwks_url_that_does_not_answer_stops_start_up() {
    let error = start_up_error(&node_config(
        "http://127.0.0.1:9/jwks.json",
        "jwks_allow_http = true",
    ))
    .await;
    assert!(error.contains("jwks_url"), "{error}");
}

/// Issue 12 item 9 for the JWKS URL: its refresh logs, successful or not, name it without
/// the user-info or query values it carries.
#[tokio::test]
async fn refresh_logs_name_the_url_without_its_credentials() {
    let log = capture_logs();
    let (_, jwk) = rsa_key("key-a");
    let state = Arc::new(Mutex::new(Provider::Serve(JwkSet { keys: vec![jwk] })));
    let idp = provider(state.clone()).await;
    let url = format!("http://idp:hunter2pw@{idp}/jwks.json?access_token=hunter2tok");
    let _server = TestServer::with_config(&node_config(
        &url,
        "jwks_allow_http = true\njwks_refresh_secs = 1",
    ))
    .await;
    let shown = format!("http://***@{idp}/jwks.json?access_token=***");
    assert!(
        eventually(Duration::from_secs(10), async || {
            log.lock().contains("JWKS refreshed")
        })
        .await,
        "no refresh logged: {}",
        log.lock()
    );
    *state.lock() = Provider::Fail;
    assert!(
        eventually(Duration::from_secs(10), async || {
            log.lock().contains("JWKS refresh failed")
        })
        .await,
        "no failed refresh logged: {}",
        log.lock()
    );
    let text = log.lock().clone();
    assert!(text.contains(&shown), "{text}");
    assert!(
        !text.contains("hunter2"),
        "a credential reached the log: {text}"
    );
}

/// Everything this test process logs at info and above, as text.
fn capture_logs() -> Arc<Mutex<String>> {
    static LOG: std::sync::OnceLock<Arc<Mutex<String>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(String::new()));
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
        log
    })
    .clone()
}

struct LogWriter(Arc<Mutex<String>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().push_str(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
