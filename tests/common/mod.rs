//! Test harness: a real payrelay node on an ephemeral port, a raw WebSocket client and a
//! signed Pusher HTTP API client.
#![allow(dead_code)]

pub mod process;
pub mod receiver;
mod redis;
pub mod tls;

// Not every test binary uses it.
#[allow(unused_imports)]
pub use self::redis::{PrivateRedis, TestRedis};

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use payrelay::config::Config;
use payrelay::protocols::pusher::request_auth::sign_query;
use payrelay::server::Server;

pub const APP_ID: &str = "1";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

/// Default test app: client events on, everything else at its default.
pub const DEFAULT_CONFIG: &str = r#"
bind = "127.0.0.1:0"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
enable_client_messages = true
"#;

pub struct TestServer {
    pub addr: SocketAddr,
    pub core: std::sync::Arc<payrelay::core::Core>,
    pub webhooks: std::sync::Arc<payrelay::webhooks::Webhooks>,
    merchants: payrelay::merchants::Merchants,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(DEFAULT_CONFIG).await
    }

    /// The test app (client events off, as by default) with extra node-level and
    /// app-level settings, as TOML lines.
    pub async fn with_settings(node: &str, app: &str) -> TestServer {
        let toml = format!(
            "bind = \"127.0.0.1:0\"\n{node}\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n{app}\n"
        );
        Self::with_config(&toml).await
    }

    pub async fn with_config(toml: &str) -> TestServer {
        let mut config = Config::parse(toml).expect("test config is valid");
        // Tests never leave a payrelay.db behind unless they ask for a file.
        if !toml.contains("database_url") {
            config.database_url = "sqlite::memory:".into();
        }
        // A node on a shared Redis is a cluster member: each test is a cluster of its own
        // unless it names the prefix its nodes share.
        if config.redis_url.is_some() && !toml.contains("redis_prefix") {
            config.redis_prefix = format!("test:{:016x}:", rand_u64());
        }
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let core = server.core().clone();
        let merchants = server.merchants().clone();
        let webhooks = server.webhooks().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            core,
            webhooks,
            merchants,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn merchants(&self) -> &payrelay::merchants::Merchants {
        &self.merchants
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connects a raw client to the default app.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url(&format!("/app/{KEY}?protocol=7&client=test&version=1"))).await
    }

    /// Connects and reads `pusher:connection_established`; returns the client and socket id.
    pub async fn connect_established(&self) -> (Client, String) {
        let mut client = self.connect().await;
        let socket_id = client.established().await;
        (client, socket_id)
    }

    /// Sends the shutdown signal (as SIGTERM would) without waiting for the node to stop.
    #[allow(dead_code)]
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers shutdown and returns how long the server took to finish.
    pub async fn shutdown(&mut self) -> Duration {
        let started = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
        started.elapsed()
    }

    /// A Pusher HTTP API request signed with `secret`.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.api_signed(method, path, params, body, SECRET).await
    }

    pub async fn api_signed(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: Option<&Value>,
        secret: &str,
    ) -> (u16, Value) {
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let query = sign_query(KEY, secret, method, path, params, &body, now());
        self.raw_request(method, &format!("{path}?{query}"), body)
            .await
    }

    pub async fn raw_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let client = http();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, self.url(path_and_query));
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request authenticated with HTTP Basic `app-key:app-secret` (the simple routes).
    pub async fn basic_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http()
            .request(method, self.url(path))
            .basic_auth(KEY, Some(SECRET));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Publishes through the Pusher HTTP API and asserts success.
    pub async fn trigger(&self, channel: &str, event: &str, data: &str) {
        let body = serde_json::json!({"name": event, "channel": channel, "data": data});
        let (status, reply) = self.api("POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, 200, "trigger failed: {reply}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// What a client observed when it asked for the next frame.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Close(Option<(u16, String)>),
    Binary(Vec<u8>),
    Gone,
}

/// The raw test client's WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client. `S` is the whole socket, or only its reading half once a
/// message is being sent from another task (`send_in_background`).
pub struct Client<S = Ws> {
    pub ws: S,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client { ws }
    }

    /// Connects with one extra handshake header (`Content-Type` picks the frame format).
    pub async fn connect_with_header(url: &str, name: &'static str, value: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        Client { ws }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends `message` from another task and returns the reading half. A message the
    /// server refuses part-way is never read to its end, so sending it would block a
    /// client that also has to read the server's answer.
    pub fn send_in_background(self, message: Message) -> (Client<SplitStream<Ws>>, JoinHandle<()>) {
        let (mut sink, stream) = self.ws.split();
        // The send fails once the server drops the socket; the reader reports that.
        let sending = tokio::spawn(async move {
            let _ = sink.send(message).await;
        });
        (Client { ws: stream }, sending)
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.send_json(
            serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}}),
        )
        .await;
    }

    pub async fn subscribe_with(&mut self, channel: &str, auth: &str, channel_data: Option<&str>) {
        let mut data = serde_json::json!({"channel": channel, "auth": auth});
        if let Some(cd) = channel_data {
            data["channel_data"] = cd.into();
        }
        self.send_json(serde_json::json!({"event": "pusher:subscribe", "data": data}))
            .await;
    }

    /// Subscribes and waits for success.
    pub async fn subscribed(&mut self, channel: &str) -> Value {
        self.subscribe(channel).await;
        self.event("pusher_internal:subscription_succeeded").await
    }
}

impl<S> Client<S>
where
    S: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    /// The next text frame exactly as the server wrote it.
    pub async fn text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrives in time")
                .expect("connection open")
                .expect("frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next binary frame's bytes.
    pub async fn binary(&mut self) -> Vec<u8> {
        match self.next().await {
            Received::Binary(bytes) => bytes,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// The next application frame (pings and pongs are skipped).
    pub async fn next(&mut self) -> Received {
        self.next_within(WAIT)
            .await
            .expect("a frame arrives in time")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Received::Gone),
                Ok(Some(Err(_))) => return Some(Received::Gone),
                Ok(Some(Ok(message))) => message,
            };
            return Some(match message {
                Message::Text(text) => {
                    Received::Json(serde_json::from_str(&text).expect("server sends JSON"))
                }
                Message::Binary(bytes) => Received::Binary(bytes.to_vec()),
                Message::Close(frame) => Received::Close(
                    frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string())),
                ),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            });
        }
    }

    /// The next JSON frame; panics on anything else.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next JSON frame without the `id` and `position` every event and subscription
    /// carries when history is on (for comparing frames whole).
    pub async fn json_bare(&mut self) -> Value {
        let mut frame = self.json().await;
        if let Some(object) = frame.as_object_mut() {
            object.remove("id");
            object.remove("position");
        }
        frame
    }

    /// Skips frames until one with this event name arrives.
    pub async fn event(&mut self, name: &str) -> Value {
        loop {
            let frame = self.json().await;
            if frame["event"] == name {
                return frame;
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(frame) = self.next_within(wait).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    /// Reads `pusher:connection_established` and returns the socket id.
    pub async fn established(&mut self) -> String {
        let frame = self.json().await;
        assert_eq!(frame["event"], "pusher:connection_established", "{frame}");
        let data: Value =
            serde_json::from_str(frame["data"].as_str().expect("data is a string")).unwrap();
        data["socket_id"].as_str().unwrap().to_string()
    }

    /// Reads frames until the close frame; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Received::Close(Some(frame)) => return frame,
                Received::Close(None) => panic!("close frame without a code"),
                Received::Gone => panic!("connection dropped without a close frame"),
                _ => continue,
            }
        }
    }
}

/// `key:signature` for a private channel, as an auth endpoint would answer.
pub fn private_auth(socket_id: &str, channel: &str) -> String {
    let sig = payrelay::signing::hmac_sha256_hex(
        SECRET.as_bytes(),
        format!("{socket_id}:{channel}").as_bytes(),
    );
    format!("{KEY}:{sig}")
}

pub fn presence_auth(socket_id: &str, channel: &str, channel_data: &str) -> String {
    let sig = payrelay::signing::hmac_sha256_hex(
        SECRET.as_bytes(),
        format!("{socket_id}:{channel}:{channel_data}").as_bytes(),
    );
    format!("{KEY}:{sig}")
}

pub fn signin_auth(socket_id: &str, user_data: &str) -> String {
    let sig = payrelay::signing::hmac_sha256_hex(
        SECRET.as_bytes(),
        format!("{socket_id}::user::{user_data}").as_bytes(),
    );
    format!("{KEY}:{sig}")
}

/// A fresh HTTP client (with the TLS provider payrelay installs); one per call, so no
/// pooled connection outlives the test's runtime.
pub fn http() -> reqwest::Client {
    payrelay::http_client::builder().build().unwrap()
}

impl TestServer {
    /// The value of one series on `/metrics`, named exactly as Prometheus prints it
    /// (`payrelay_connections{protocol="plain"}`); 0 when the series is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a numeric sample"))
    }
}

/// A PostgreSQL database of its own for one test, dropped when the guard is.
///
/// The local server (`PAYRELAY_TEST_POSTGRES_URL`, default `postgres://127.0.0.1:5432/test`)
/// is shared with other tests and other projects, so each test creates a uniquely named
/// database and never touches anything else. Without a server the test is skipped with a
/// printed reason, unless `PAYRELAY_REQUIRE_POSTGRES` is set (scripts/test, hence CI, sets
/// it): then it fails.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<PgDatabase> {
        use sqlx::Connection;
        let admin_url = std::env::var("PAYRELAY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://127.0.0.1:5432/test".into());
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                if std::env::var_os("PAYRELAY_REQUIRE_POSTGRES").is_some() {
                    panic!(
                        "PostgreSQL at {admin_url} does not answer ({reason}), and PAYRELAY_REQUIRE_POSTGRES is set (scripts/test sets it)"
                    );
                }
                println!(
                    "SKIPPED: no PostgreSQL answers at {admin_url} ({reason}; set PAYRELAY_REQUIRE_POSTGRES to fail instead)"
                );
                return None;
            }
        };
        let name = format!("payrelay_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let url = match admin_url.rfind('/') {
            Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &admin_url[..slash]),
            _ => panic!("PAYRELAY_TEST_POSTGRES_URL must name a database: {admin_url}"),
        };
        Some(PgDatabase {
            url,
            name,
            admin_url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; the clean-up gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A random number for names tests must not share.
pub fn rand_u64() -> u64 {
    rand::random()
}
