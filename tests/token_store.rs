//! The token stores under stress: a Redis outage (on a private `redis-server` this test
//! stops and starts again), records another backend wrote, and the SQLite file locked by
//! another process.

mod common;

use std::time::Duration;

use common::*;

/// A plain-protocol access token for `user`, valid ten minutes.
async fn mint_access_token(server: &TestServer, user: &str) -> String {
    let (status, minted) = server
        .basic_request(
            "POST",
            "/api/v1/tokens",
            Some(&serde_json::json!({"user_id": user, "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    minted["data"]["token"].as_str().unwrap().to_string()
}

/// A Socket.IO client token of `merchant`, valid ten minutes.
async fn mint_client_token(server: &TestServer, merchant: &str) -> String {
    let (status, minted) = server
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&serde_json::json!({"merchant_id": merchant, "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    minted["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_private_redis_stops_and_comes_back_on_the_same_port() {
    let mut redis = PrivateRedis::start().await;
    let port = redis.port();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut connection)
        .await
        .unwrap();
    redis.stop().await;
    assert!(!redis.is_running());
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection()
        )
        .await
        .is_ok_and(|c| c.is_err()),
        "a stopped server refuses connections"
    );
    redis.restart().await;
    assert_eq!(redis.port(), port);
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = ::redis::cmd("GET")
        .arg("k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, None, "nothing survives a stop: persistence is off");
}

/// Another process holding the SQLite file's write lock, as the `sqlite3` shell does
/// inside a transaction (or a backup tool writing to it). Released on drop.
struct ExternalWriteLock {
    shell: std::process::Child,
}

impl ExternalWriteLock {
    async fn take(path: &std::path::Path) -> ExternalWriteLock {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let mut shell = Command::new("sqlite3")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sqlite3 runs (the SQLite shell is part of the test setup)");
        let mut stdin = shell.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN IMMEDIATE; INSERT INTO merchants VALUES ('lock', 'lock', 0); SELECT 'locked';"
        )
        .unwrap();
        stdin.flush().unwrap();
        // Keep stdin open: the shell waits for more input with the transaction open.
        std::mem::forget(stdin);
        let stdout = shell.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(line.trim(), "locked", "the shell took the write lock");
        ExternalWriteLock { shell }
    }
}

impl Drop for ExternalWriteLock {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

#[tokio::test]
async fn reads_do_not_queue_behind_writes_stuck_on_another_process_lock() {
    let dir = std::env::temp_dir().join(format!("payrelay-lock-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("payrelay.db");
    let server =
        TestServer::with_settings(&format!("database_url = \"sqlite://{}\"", db.display()), "")
            .await;
    let key = server
        .merchants()
        .store
        .create_key(APP_ID, "merchant_001")
        .await
        .unwrap();
    let token = mint_access_token(&server, "u1").await;

    let _lock = ExternalWriteLock::take(&db).await;
    // Writes to both stores now wait on the lock (up to their busy timeout) ...
    let mut writers = Vec::new();
    for n in 0..6 {
        let url = server.url("/api/v1/tokens");
        writers.push(tokio::spawn(
            http()
                .post(url)
                .basic_auth(KEY, Some(SECRET))
                .json(&serde_json::json!({"user_id": format!("w{n}"), "ttl_secs": 60}))
                .send(),
        ));
        let url = server.url(&format!("/apps/{APP_ID}/merchants/m{n}/keys"));
        writers.push(tokio::spawn(
            http().post(url).basic_auth(KEY, Some(SECRET)).send(),
        ));
    }
    // ... give them a head start to take every connection they can ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and reads of both stores still answer at once: an API key lookup (what merchant
    // auth does) and a plain socket's admission (a token lookup).
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let found = tokio::time::timeout(
            Duration::from_secs(2),
            server.merchants().store.find_key(&key.api_key),
        )
        .await
        .expect("an API key lookup answers within 2 s during the lock")
        .unwrap();
        assert_eq!(
            found.map(|k| k.merchant_id).as_deref(),
            Some("merchant_001")
        );
        let admitted = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(server.ws_url(&format!("/api/v1/ws?token={token}"))),
        )
        .await
        .expect("admission answers within 2 s during the lock");
        assert!(admitted.is_ok(), "admitted: {admitted:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for writer in writers {
        writer.abort();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Three apps (in a `HashMap`, whose order changes with every start) sharing one Redis.
fn three_apps(redis: &PrivateRedis, prefix: &str, node: &str) -> String {
    let mut toml = format!(
        "bind = \"127.0.0.1:0\"\nredis_url = \"{}\"\nredis_token_prefix = \"{prefix}\"\n{node}\n",
        redis.url()
    );
    for id in ["1", "2", "3"] {
        toml.push_str(&format!(
            "[[apps]]\nid = \"{id}\"\nkey = \"key-{id}\"\nsecret = \"secret-{id}\"\n[apps.plain]\nenable_test_route = true\n"
        ));
    }
    toml
}

async fn redis_set(redis: &PrivateRedis, key: &str, value: &str) {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut connection)
        .await
        .unwrap();
}

async fn redis_exists(redis: &PrivateRedis, key: &str) -> bool {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// A request with HTTP Basic credentials of app `id` (of [`three_apps`]).
async fn as_app(
    server: &TestServer,
    id: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = http()
        .request(method, server.url(path))
        .basic_auth(format!("key-{id}"), Some(format!("secret-{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The status of a plain socket's upgrade with `token`, and the refusal's message.
async fn admission(server: &TestServer, token: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(server.ws_url(&format!("/api/v1/ws?token={token}")))
        .await
    {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .unwrap_or_default();
            (
                response.status().as_u16(),
                body["message"].as_str().unwrap_or_default().to_string(),
            )
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_token_without_app_is_refused_when_several_apps_are_served() {
    let redis = PrivateRedis::start().await;
    let prefix = "t:";
    let server = TestServer::with_config(&three_apps(&redis, prefix, "")).await;
    redis_set(&redis, "t:appless", r#"{"user_id": "u1"}"#).await;
    assert_eq!(
        admission(&server, "appless").await,
        (
            401,
            "The token names no app and several are served here".into()
        )
    );
    // No app may revoke it or force it out: it is nobody's.
    for id in ["1", "2", "3"] {
        let (status, _) = as_app(
            &server,
            id,
            reqwest::Method::POST,
            "/api/v1/tokens/revoke",
            serde_json::json!({"token": "appless"}),
        )
        .await;
        assert_eq!(status, 404, "app {id} revoked an app-less token");
        let (status, body) = as_app(
            &server,
            id,
            reqwest::Method::POST,
            "/api/v1/users/u1/force-logout",
            serde_json::json!({"revoke_tokens": true}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["tokens_revoked"], 0, "app {id}");
    }
    assert!(redis_exists(&redis, "t:appless").await);

    // Several apps enable the unauthenticated test route: the caller must say which.
    let (status, body) = server
        .raw_request("GET", "/api/v1/ws/test?user_id=u1", Vec::new())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("app_id"),
        "{body}"
    );
    let (status, body) = server
        .raw_request("GET", "/api/v1/ws/test?user_id=u1&app_id=2", Vec::new())
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_configured_default_app_takes_tokens_without_app() {
    let redis = PrivateRedis::start().await;
    let prefix = "t:";
    let server = TestServer::with_config(&three_apps(
        &redis,
        prefix,
        "redis_token_default_app = \"2\"",
    ))
    .await;
    redis_set(&redis, "t:appless", r#"{"user_id": "u1"}"#).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(server.ws_url("/api/v1/ws?token=appless"))
            .await
            .expect("admitted into the default app");
    let (status, body) = as_app(
        &server,
        "2",
        reqwest::Method::GET,
        "/api/v1/ws/connected-users",
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user_ids"], serde_json::json!(["u1"]));
    // Another app's forced logout leaves it alone; its own app's takes it.
    let (_, body) = as_app(
        &server,
        "3",
        reqwest::Method::POST,
        "/api/v1/users/u1/force-logout",
        serde_json::json!({"revoke_tokens": true}),
    )
    .await;
    assert_eq!(body["data"]["tokens_revoked"], 0);
    assert!(redis_exists(&redis, "t:appless").await);
    let (status, _) = as_app(
        &server,
        "1",
        reqwest::Method::POST,
        "/api/v1/tokens/revoke",
        serde_json::json!({"token": "appless"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = as_app(
        &server,
        "2",
        reqwest::Method::POST,
        "/api/v1/tokens/revoke",
        serde_json::json!({"token": "appless"}),
    )
    .await;
    assert_eq!(status, 200);
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 4401);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_token_whose_expiry_cannot_be_read_is_refused() {
    let redis = PrivateRedis::start().await;
    let server = TestServer::with_config(&format!(
        "bind = \"127.0.0.1:0\"\nredis_url = \"{}\"\nredis_token_prefix = \"t:\"\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-1\"\n",
        redis.url()
    ))
    .await;
    let past = now() - 10;
    let future = now() + 600;
    for (token, value, status) in [
        (
            "float-past",
            format!(r#"{{"user_id":"u1","expires_at":{past}.5}}"#),
            401,
        ),
        (
            "string-past",
            format!(r#"{{"user_id":"u2","expires_at":"{past}"}}"#),
            401,
        ),
        (
            "float-future",
            format!(r#"{{"user_id":"u3","expires_at":{future}.5}}"#),
            101,
        ),
        (
            "string-future",
            format!(r#"{{"user_id":"u4","expires_at":"{future}"}}"#),
            101,
        ),
        (
            "words",
            r#"{"user_id":"u5","expires_at":"tomorrow"}"#.to_string(),
            401,
        ),
        (
            "millis",
            format!(r#"{{"user_id":"u6","expires_at":{}}}"#, future * 1000),
            401,
        ),
    ] {
        redis_set(&redis, &format!("t:{token}"), &value).await;
        assert_eq!(
            admission(&server, token).await.0,
            status,
            "{token}: {value}"
        );
    }
}

/// A Socket.IO client reduced to what these tests need: connect with a client token,
/// read events, answer Engine.IO pings.
struct SocketIoClient {
    client: Client,
}

impl SocketIoClient {
    /// Opens the transport and sends CONNECT; returns the client and the server's answer
    /// (`40{…}` for success, `44{…}` for `connect_error`).
    async fn connect(server: &TestServer, token: &str) -> (SocketIoClient, String) {
        let client = Client::connect(&server.ws_url(&format!(
            "/socket.io/?EIO=4&transport=websocket&token={token}"
        )))
        .await;
        let mut socket = SocketIoClient { client };
        let open = socket.client.text().await;
        assert!(open.starts_with('0'), "the open packet first: {open}");
        socket.client.send_text("40").await;
        let answer = socket.packet().await;
        (socket, answer)
    }

    /// The next Socket.IO packet, answering Engine.IO pings on the way.
    async fn packet(&mut self) -> String {
        loop {
            let text = self.client.text().await;
            if text == "2" {
                self.client.send_text("3").await;
                continue;
            }
            return text;
        }
    }
}

async fn readyz(server: &TestServer) -> (u16, serde_json::Value) {
    server.raw_request("GET", "/readyz", Vec::new()).await
}

/// Polls `/readyz` until it answers `status`, or panics after `within`.
async fn readyz_becomes(server: &TestServer, status: u16, within: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (now, body) = readyz(server).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {now} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_neither_freezes_sockets_nor_stalls_admission() {
    // Frozen admission waited ~9 s for Redis's back-off; an answer within 4 s is "at
    // once" even on a loaded 2-core machine.
    const ADMISSION_BOUND: Duration = Duration::from_secs(4);
    let mut redis = PrivateRedis::start().await;
    let server = TestServer::with_config(&format!(
        r#"
bind = "127.0.0.1:0"
redis_url = "{}"
redis_token_prefix = "t:"
outbound_queue_size = 16
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[apps.plain]
token_recheck_secs = 1
[apps.socketio]
credential_recheck_secs = 1
"#,
        redis.url()
    ))
    .await;
    let token = mint_access_token(&server, "u1").await;
    let client_token = mint_client_token(&server, "m1").await;

    let mut plain = Client::connect(&server.ws_url(&format!("/api/v1/ws?token={token}"))).await;
    assert_eq!(plain.json_bare().await["event"], "subscribed");
    let (mut socketio, answer) = SocketIoClient::connect(&server, &client_token).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "{body}");
    let slow = "payrelay_slow_consumer_disconnects_total";
    let slow_before = server.metric(slow).await;

    redis.stop().await;
    // With `redis_url` the node is a cluster member, and Redis is its broker too: while
    // Redis is gone, publishes are refused at once (503, never accepted and then lost),
    // and /readyz names the broker first. Admission answers 503 at once rather than
    // waiting for Redis, and sockets stay open through several credential rechecks.
    let body = readyz_becomes(&server, 503, Duration::from_secs(5)).await;
    assert_eq!(body["status"], "broker_unavailable", "{body}");
    let body = loop {
        let (_, body) = readyz(&server).await;
        if body["token_store"]["ready"] == false {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["token_store"]["name"], "redis", "{body}");
    assert!(body["token_store"]["error"].is_string(), "{body}");
    let ready = "payrelay_token_store_ready{store=\"redis\"}";
    assert_eq!(server.metric(ready).await, 0.0);
    let publish = |path: &'static str, n: i32| {
        let url = server.url(path);
        async move {
            let body = if path == "/api/v1/events" {
                serde_json::json!({"channel": "settings", "event": "tick", "data": {"n": n}})
            } else {
                serde_json::json!({"merchant_id": "m1", "kind": "merchant", "event": "tick", "data": {"n": n}})
            };
            let started = std::time::Instant::now();
            let status = http()
                .post(url)
                .basic_auth(KEY, Some(SECRET))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            (status.as_u16(), started.elapsed())
        }
    };
    for path in ["/api/v1/events", "/v1/events"] {
        let (status, took) = publish(path, -1).await;
        assert_eq!(status, 503, "{path}");
        assert!(took < ADMISSION_BOUND, "{path}: {took:?}");
    }
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let refused =
            tokio_tungstenite::connect_async(server.ws_url(&format!("/api/v1/ws?token={token}")))
                .await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                let body: serde_json::Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["message"], "Token store unavailable");
            }
            other => panic!("expected a 503 during the outage, got {other:?}"),
        }
        assert!(
            started.elapsed() < ADMISSION_BOUND,
            "{:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();
        let (_, answer) = SocketIoClient::connect(&server, &client_token).await;
        assert!(
            answer.starts_with("44") && answer.contains("unavailable"),
            "{answer}"
        );
        assert!(
            started.elapsed() < ADMISSION_BOUND,
            "{:?}",
            started.elapsed()
        );
    }
    // Several rechecks (every second) fail meanwhile; neither socket is closed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    plain.send_json(serde_json::json!({"event": "ping"})).await;
    assert_eq!(plain.json_bare().await["event"], "pong");
    // Nothing but Engine.IO pings (answered) on the Socket.IO transport: no close.
    while let Some(frame) = socketio
        .client
        .next_within(Duration::from_millis(200))
        .await
    {
        match frame {
            Received::Json(ping) if ping == 2 => socketio.client.send_text("3").await,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert_eq!(
        server.metric(slow).await,
        slow_before,
        "no socket was closed as a slow consumer"
    );

    // Redis comes back (empty: it keeps nothing): the node is ready again and admits.
    redis.restart().await;
    let body = readyz_becomes(&server, 200, Duration::from_secs(20)).await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["token_store"]["ready"], true, "{body}");
    assert_eq!(server.metric(ready).await, 1.0);
    let fresh = mint_access_token(&server, "u2").await;
    let mut again = Client::connect(&server.ws_url(&format!("/api/v1/ws?token={fresh}"))).await;
    assert_eq!(again.json_bare().await["event"], "subscribed");

    // Traffic flows again: what is published now reaches the new socket, every event
    // in order (far more than the 16 a socket may have queued).
    let events = 100;
    for n in 0..events {
        assert_eq!(publish("/api/v1/events", n).await.0, 200);
    }
    for n in 0..events {
        assert_eq!(
            again.json_bare().await,
            serde_json::json!({"event": "tick", "channel": "settings", "data": {"n": n}}),
        );
    }
}

#[tokio::test]
async fn a_backend_that_extends_a_token_keeps_its_socket_open() {
    let redis = PrivateRedis::start().await;
    let server = TestServer::with_config(&format!(
        "bind = \"127.0.0.1:0\"\nredis_url = \"{}\"\nredis_token_prefix = \"t:\"\n\
         [[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-1\"\n[apps.plain]\ntoken_recheck_secs = 1\n",
        redis.url()
    ))
    .await;
    let record = |user: &str, expires_at: i64| {
        format!(r#"{{"user_id":"{user}","expires_at":{expires_at}}}"#)
    };
    redis_set(&redis, "t:sliding", &record("u1", now() + 3)).await;
    redis_set(&redis, "t:shortened", &record("u2", now() + 600)).await;
    let mut sliding = Client::connect(&server.ws_url("/api/v1/ws?token=sliding")).await;
    assert_eq!(sliding.json_bare().await["event"], "subscribed");
    let mut shortened = Client::connect(&server.ws_url("/api/v1/ws?token=shortened")).await;
    assert_eq!(shortened.json_bare().await["event"], "subscribed");
    // The backend slides one expiry forward and pulls the other in; the next recheck
    // (every second) moves each socket's deadline.
    redis_set(&redis, "t:sliding", &record("u1", now() + 600)).await;
    redis_set(&redis, "t:shortened", &record("u2", now() + 1)).await;
    assert_eq!(
        shortened.closed().await,
        (4401, "Token expired".to_string())
    );
    // Past the first expiry, the extended socket is still served.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    sliding
        .send_json(serde_json::json!({"event": "ping"}))
        .await;
    assert_eq!(
        sliding.json_bare().await,
        serde_json::json!({"event": "pong"})
    );
}
