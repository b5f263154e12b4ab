//! The Socket.IO gateway (seed 003) frame by frame, with a raw WebSocket client: the
//! Engine.IO open packet, CONNECT / CONNECT_ERROR, events as `42["name",data]`, the
//! client-token routes' refusals, the credential recheck, channel kinds, diagnostics,
//! shutdown, and client tokens verified by another node through Redis.
//! socket.io-client and python-socketio drive the same gateway in `tests/real_peers.rs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MERCHANT: &str = "merchant_001";

/// A raw Engine.IO v4 / Socket.IO v5 client over WebSocket.
struct RawSocketIo {
    client: Client,
}

impl RawSocketIo {
    /// Opens the transport and reads the Engine.IO open packet.
    async fn open(server: &TestServer, query: &str) -> (RawSocketIo, Value) {
        let client = Client::connect(
            &server.ws_url(&format!("/socket.io/?EIO=4&transport=websocket{query}")),
        )
        .await;
        let mut raw = RawSocketIo { client };
        let open = raw.client.text().await;
        let handshake = open
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("first frame is the open packet: {open}"));
        (raw, serde_json::from_str(handshake).unwrap())
    }

    /// Opens the transport and connects to `/`, which must succeed.
    async fn connected(server: &TestServer, query: &str) -> RawSocketIo {
        let (mut raw, _) = RawSocketIo::open(server, query).await;
        let answer = raw.connect(None).await;
        assert!(answer.starts_with("40{"), "{answer}");
        raw
    }

    /// Sends the Socket.IO CONNECT for `/` (with an auth payload) and returns the answer.
    async fn connect(&mut self, auth: Option<Value>) -> String {
        let packet = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".into(),
        };
        self.client.send_text(&packet).await;
        self.packet().await
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

async fn publish(server: &TestServer, merchant: &str, kind: &str, event: &str, data: Value) {
    let (status, body) = server
        .basic_request(
            "POST",
            "/v1/events",
            Some(&json!({"merchant_id": merchant, "kind": kind, "event": event, "data": data})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `POST path` with the merchant's API key as `X-API-Key`.
async fn with_api_key(server: &TestServer, path: &str, key: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(server.url(path))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn frames_on_the_wire_match_the_protocol() {
    let server = TestServer::start().await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    let (mut raw, open) = RawSocketIo::open(&server, &format!("&apiKey={}", key.api_key)).await;
    assert!(open["sid"].is_string(), "{open}");
    assert_eq!(open["upgrades"], json!([]), "no upgrade: websocket only");
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 20000);
    let connected = raw.connect(None).await;
    let reply: Value = serde_json::from_str(connected.strip_prefix("40").unwrap()).unwrap();
    // socketioxide reuses the Engine.IO sid as the Socket.IO sid (the reference server
    // draws another). The Engine.IO sid only matters to long-polling requests, which
    // this gateway refuses, so knowing it gives nothing away.
    assert!(reply["sid"].is_string(), "{connected}");

    let trade = json!({"trade": {"id": "trd_1", "status": "completed"}});
    publish(&server, MERCHANT, "merchant", "trade", trade.clone()).await;
    let event = raw.packet().await;
    let args: Value = serde_json::from_str(event.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(args, json!(["trade", trade]));

    // Data published as text that is not JSON (the Pusher API allows it) arrives as a string.
    server
        .trigger(&format!("private-merchant.{MERCHANT}"), "note", "hello")
        .await;
    assert_eq!(raw.packet().await, r#"42["note","hello"]"#);
    // Another kind of the merchant's channels is not Socket.IO's by default.
    publish(&server, MERCHANT, "payments", "payment", json!({})).await;
    assert!(
        raw.client
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// Without a bound, anyone who opened the transport could make the node read and hold
/// a message of up to 64 MiB, before presenting any credential. Messages over
/// `MAX_CLIENT_MESSAGE` now close the transport; smaller ones change nothing.
#[tokio::test]
async fn a_message_over_the_limit_closes_the_transport() {
    let server = TestServer::start().await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    let query = format!("&apiKey={}", key.api_key);
    let limit = payrelay::protocols::socketio::MAX_CLIENT_MESSAGE;
    let event = |size: usize| format!(r#"42["note","{}"]"#, "x".repeat(size));

    let mut raw = RawSocketIo::connected(&server, &query).await;
    raw.client.send_text(&event(limit / 2)).await;
    publish(&server, MERCHANT, "merchant", "trade", json!({"n": 1})).await;
    assert_eq!(raw.packet().await, r#"42["trade",{"n":1}]"#);

    let mut raw = RawSocketIo::connected(&server, &query).await;
    raw.client.send_text(&event(4 * limit)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match raw.client.next_within(WAIT).await {
            Some(Received::Close(_) | Received::Gone) => break,
            // Engine.IO pings may come first.
            Some(Received::Json(_)) => {}
            other => panic!("the transport stayed open: {:?}", other.is_some()),
        }
        assert!(tokio::time::Instant::now() < deadline, "never closed");
    }
}

#[tokio::test]
async fn refusals_are_connect_error_packets_with_a_message() {
    let server = TestServer::start().await;
    for (query, auth, message) in [
        ("", None, "Missing credentials"),
        ("&apiKey=prk_nope", None, "Invalid API key"),
        (
            "",
            Some(json!({"token": "pct_nope"})),
            "Invalid client token",
        ),
        ("&token=pct_a", Some(json!({"apiKey": "prk_b"})), "not both"),
    ] {
        let (mut raw, _) = RawSocketIo::open(&server, query).await;
        let answer = raw.connect(auth).await;
        let error: Value = serde_json::from_str(
            answer
                .strip_prefix("44")
                .unwrap_or_else(|| panic!("{answer}")),
        )
        .unwrap();
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{query}: {error}"
        );
    }
    assert_eq!(
        server.core.connection_count(),
        0,
        "no session outlives a refusal"
    );

    // Long-polling never reaches socketioxide.
    let response = http()
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(body["message"].as_str().unwrap().contains("websocket"));
}

#[tokio::test]
async fn client_token_routes_check_who_asks() {
    let server = TestServer::start().await;
    let store = &server.merchants().store;
    let mine = store.create_key("1", MERCHANT).await.unwrap();
    let theirs = store.create_key("1", "merchant_002").await.unwrap();

    let (status, body) = with_api_key(&server, "/v1/client-tokens", "prk_nope", json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = with_api_key(
        &server,
        "/v1/client-tokens",
        &mine.api_key,
        json!({"merchant_id": "merchant_002"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = with_api_key(
        &server,
        "/v1/client-tokens",
        &mine.api_key,
        json!({"ttl_secs": 86401}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = with_api_key(
        &server,
        "/v1/client-tokens",
        &mine.api_key,
        json!({"user_id": "a.b"}),
    )
    .await;
    assert_eq!(status, 400, "a user id that cannot name a channel: {body}");

    // The app's backend may mint for any merchant, and must say which.
    let (status, body) = server
        .basic_request("POST", "/v1/client-tokens", Some(&json!({})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, minted) = server
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&json!({"merchant_id": MERCHANT})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["merchant_id"], MERCHANT);
    let token = minted["token"].as_str().unwrap();
    assert!(
        minted["expires_at"].as_i64().unwrap() >= now() + 3599,
        "default TTL 1 h"
    );

    // Another merchant cannot revoke it (nor learn that it exists); its own merchant can.
    let (status, _) = with_api_key(
        &server,
        "/v1/client-tokens/revoke",
        &theirs.api_key,
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = with_api_key(
        &server,
        "/v1/client-tokens/revoke",
        &mine.api_key,
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A plain access token is not a client token to revoke here.
    let (_, access) = server
        .basic_request(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"user_id": "u1", "ttl_secs": 60})),
        )
        .await;
    let (status, _) = server
        .basic_request(
            "POST",
            "/v1/client-tokens/revoke",
            Some(&json!({"token": access["data"]["token"]})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_key_revoked_outside_the_api_disconnects_at_the_next_recheck() {
    let server =
        TestServer::with_settings("", "[apps.socketio]\ncredential_recheck_secs = 1").await;
    let store = &server.merchants().store;
    let key = store.create_key("1", MERCHANT).await.unwrap();
    let mut raw = RawSocketIo::connected(&server, &format!("&apiKey={}", key.api_key)).await;
    // A client token the key minted lives only as long as the key.
    let (status, minted) =
        with_api_key(&server, "/v1/client-tokens", &key.api_key, json!({})).await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap();
    let mut by_token = RawSocketIo::connected(&server, &format!("&token={token}")).await;

    // What `payrelay keys revoke` does: edit the store, tell no running node.
    store.revoke_key("1", &key.key_id).await.unwrap();
    assert_eq!(raw.packet().await, "41", "a Socket.IO DISCONNECT");
    assert_eq!(
        by_token.packet().await,
        "41",
        "the key's token goes with it"
    );
    let (mut again, _) = RawSocketIo::open(&server, &format!("&token={token}")).await;
    let answer = again.connect(None).await;
    assert!(answer.contains("Invalid client token"), "{answer}");
}

#[tokio::test]
async fn channel_kinds_diagnostics_and_shutdown() {
    let mut server = TestServer::with_settings(
        "",
        "[apps.socketio]\nchannel_kinds = [\"merchant\", \"payments\"]",
    )
    .await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    let mut raw = RawSocketIo::connected(&server, &format!("&apiKey={}", key.api_key)).await;
    publish(
        &server,
        MERCHANT,
        "payments",
        "payment",
        json!({"id": "p1"}),
    )
    .await;
    assert_eq!(raw.packet().await, r#"42["payment",{"id":"p1"}]"#);

    let (status, body) = server
        .basic_request("GET", "/api/v1/ws/connections", None)
        .await;
    assert_eq!(status, 200);
    let conn = &body["data"]["connections"][0];
    assert_eq!(conn["protocol"], "socketio");
    assert_eq!(conn["merchant_id"], MERCHANT);
    assert_eq!(conn["user_id"], Value::Null, "a merchant is not a user");
    assert_eq!(
        conn["subscriptions"],
        json!([
            format!("private-merchant.{MERCHANT}"),
            format!("private-payments.{MERCHANT}")
        ])
    );

    // Shutdown closes the transport (Engine.IO close `1`; clients reconnect) rather than
    // sending a Socket.IO DISCONNECT `41` (after which socket.io-client stays away).
    server.shutdown().await;
    loop {
        match raw.client.next_within(WAIT).await {
            Some(Received::Close(_)) | Some(Received::Gone) => break,
            Some(Received::Json(frame)) if frame == json!(1) => continue,
            Some(Received::Json(frame)) => panic!("unexpected frame {frame}"),
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("the transport stayed open after shutdown"),
        }
    }
}

#[tokio::test]
async fn client_tokens_in_redis_are_verified_by_another_node() {
    let redis = TestRedis::get().await;
    let url = redis.url();
    let prefix = format!("payrelay-test-{}:", rand::random::<u32>());
    let node = format!("redis_url = \"{url}\"\nredis_token_prefix = \"{prefix}\"");
    let app = "[apps.socketio]\ncredential_recheck_secs = 1";
    let minting = TestServer::with_settings(&node, app).await;
    let other = TestServer::with_settings(&node, app).await;
    let (status, minted) = minting
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&json!({"merchant_id": MERCHANT, "user_id": "player_1", "ttl_secs": 60})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap();
    let mut raw = RawSocketIo::connected(&other, &format!("&token={token}")).await;
    publish(&other, MERCHANT, "merchant", "trade", json!({"trade": {}})).await;
    assert_eq!(raw.packet().await, r#"42["trade",{"trade":{}}]"#);

    // Redis drops a token's key at its expiry. That is not a revocation: a socket opened
    // before expiry stays through the rechecks (auth happens once, on connect).
    let (_, short) = minting
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&json!({"merchant_id": MERCHANT, "ttl_secs": 1})),
        )
        .await;
    let short = short["token"].as_str().unwrap();
    let mut expiring = RawSocketIo::connected(&other, &format!("&token={short}")).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    publish(&other, MERCHANT, "merchant", "trade", json!({"n": 2})).await;
    assert_eq!(expiring.packet().await, r#"42["trade",{"n":2}]"#);
}

#[tokio::test]
async fn failed_attempts_are_throttled_per_address() {
    let server = TestServer::with_settings("auth_failures_per_minute = 2", "").await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    for _ in 0..2 {
        let (mut raw, _) = RawSocketIo::open(&server, "&apiKey=prk_guess").await;
        assert!(raw.connect(None).await.contains("Invalid API key"));
    }
    // Even a good key waits once the address has used up its failures.
    let (mut raw, _) = RawSocketIo::open(&server, &format!("&apiKey={}", key.api_key)).await;
    let answer = raw.connect(None).await;
    assert!(
        answer.starts_with("44") && answer.contains("Too many failed attempts"),
        "{answer}"
    );
}

/// Issue 12 item 3 on Socket.IO: credential-less attempts (empty Pusher auth requests,
/// CONNECTs without `apiKey` or `token`) count against no one, so a merchant's client at
/// the same address still connects.
#[tokio::test]
async fn attempts_without_credentials_do_not_throttle_an_address() {
    let server = TestServer::with_settings("auth_failures_per_minute = 2", "").await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    for _ in 0..5 {
        let status = http()
            .post(server.url("/v1/websocket/auth"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401);
        let (mut raw, _) = RawSocketIo::open(&server, "").await;
        assert!(raw.connect(None).await.contains("Missing credentials"));
    }
    let (mut raw, _) = RawSocketIo::open(&server, &format!("&apiKey={}", key.api_key)).await;
    let answer = raw.connect(None).await;
    assert!(answer.starts_with("40{"), "{answer}");
}

#[tokio::test]
async fn a_token_that_expires_while_connected_keeps_its_socket_across_rechecks() {
    let server =
        TestServer::with_settings("", "[apps.socketio]\ncredential_recheck_secs = 1").await;
    let (_, minted) = server
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&json!({"merchant_id": MERCHANT, "ttl_secs": 3})),
        )
        .await;
    let token = minted["token"].as_str().unwrap();
    // 3 s leaves a loaded machine time to connect before the token expires; the socket
    // then lives through the expiry and at least one recheck after it.
    let mut raw = RawSocketIo::connected(&server, &format!("&token={token}")).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    publish(&server, MERCHANT, "merchant", "trade", json!({"n": 1})).await;
    assert_eq!(raw.packet().await, r#"42["trade",{"n":1}]"#);
    // A new connection with it is refused: auth happens on connect.
    let (mut late, _) = RawSocketIo::open(&server, &format!("&token={token}")).await;
    assert!(late.connect(None).await.contains("Invalid client token"));
}

#[tokio::test]
async fn a_client_token_without_app_is_refused_when_several_apps_are_served() {
    let redis = PrivateRedis::start().await;
    let server = TestServer::with_config(&format!(
        "bind = \"127.0.0.1:0\"\nredis_url = \"{}\"\nredis_token_prefix = \"t:\"\n\
         [[apps]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"secret-1\"\n\
         [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"secret-2\"\n",
        redis.url()
    ))
    .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("t:pct_appless")
        .arg(format!(r#"{{"kind":"client","merchant_id":"{MERCHANT}"}}"#))
        .query_async(&mut connection)
        .await
        .unwrap();
    let (mut raw, _) = RawSocketIo::open(&server, "&token=pct_appless").await;
    let answer = raw.connect(None).await;
    assert!(
        answer.starts_with("44") && answer.contains("names no app"),
        "{answer}"
    );
}

/// Issue 12 item 10: merchants and app users are separate namespaces. Pusher
/// `terminate_connections` for end user "42" closes that user's sockets, never merchant
/// "42"'s Socket.IO feed; revoking merchant "42"'s key leaves user "42" signed in.
#[tokio::test]
async fn user_42_and_merchant_42_are_different_identities() {
    let server = TestServer::start().await;
    let key = server
        .merchants()
        .store
        .create_key("1", "42")
        .await
        .unwrap();
    let mut merchant = RawSocketIo::connected(&server, &format!("&apiKey={}", key.api_key)).await;

    let sign_in = |socket_id: &str| {
        let user_data = r#"{"id":"42"}"#;
        json!({"event": "pusher:signin", "data": {"auth": signin_auth(socket_id, user_data), "user_data": user_data}})
    };
    let (mut user, socket_id) = server.connect_established().await;
    user.send_json(sign_in(&socket_id)).await;
    user.event("pusher:signin_success").await;

    let (status, body) = server
        .api(
            "POST",
            "/apps/1/users/42/terminate_connections",
            &[],
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(user.closed().await.0, 4009, "the user's socket goes");
    publish(&server, "42", "merchant", "trade", json!({"n": 1})).await;
    assert_eq!(
        merchant.packet().await,
        r#"42["trade",{"n":1}]"#,
        "the merchant's feed stays"
    );

    // The other way round: the merchant's key is revoked, user 42 stays signed in.
    let (mut user, socket_id) = server.connect_established().await;
    user.send_json(sign_in(&socket_id)).await;
    user.event("pusher:signin_success").await;
    let (status, _) = server
        .basic_request("DELETE", &format!("/apps/1/keys/{}", key.key_id), None)
        .await;
    assert_eq!(status, 200);
    user.subscribed("#server-to-user-42").await;
    server.trigger("#server-to-user-42", "hello", "{}").await;
    assert_eq!(user.event("hello").await["channel"], "#server-to-user-42");

    // Diagnostics tell them apart too.
    let (status, list) = server
        .basic_request("GET", "/api/v1/ws/connections", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let sockets = list["data"]["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pusher = sockets.iter().find(|c| c["protocol"] == "pusher").unwrap();
    assert_eq!(pusher["user_id"], "42", "{list}");
}

#[tokio::test]
async fn an_app_may_disconnect_client_tokens_at_their_expiry() {
    let server =
        TestServer::with_settings("", "[apps.socketio]\ndisconnect_on_token_expiry = true").await;
    let (_, minted) = server
        .basic_request(
            "POST",
            "/v1/client-tokens",
            Some(&json!({"merchant_id": MERCHANT, "ttl_secs": 2})),
        )
        .await;
    let token = minted["token"].as_str().unwrap();
    let mut raw = RawSocketIo::connected(&server, &format!("&token={token}")).await;
    publish(&server, MERCHANT, "merchant", "trade", json!({"n": 1})).await;
    assert_eq!(raw.packet().await, r#"42["trade",{"n":1}]"#);
    // At the expiry: a Socket.IO DISCONNECT, so the client reconnects only with a fresh
    // token (`io server disconnect` is not retried by socket.io-client).
    assert_eq!(raw.packet().await, "41");
    // An API key has no expiry: its sockets stay.
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    let mut by_key = RawSocketIo::connected(&server, &format!("&apiKey={}", key.api_key)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish(&server, MERCHANT, "merchant", "trade", json!({"n": 2})).await;
    assert_eq!(by_key.packet().await, r#"42["trade",{"n":2}]"#);
}

/// `POST /v1/events` with extra fields, answering its status and body.
async fn publish_marked(server: &TestServer, event: &str, n: u32, mark: Value) -> (u16, Value) {
    let mut body =
        json!({"merchant_id": MERCHANT, "kind": "merchant", "event": event, "data": {"n": n}});
    if let (Some(body), Some(mark)) = (body.as_object_mut(), mark.as_object()) {
        body.extend(mark.clone());
    }
    server
        .basic_request("POST", "/v1/events", Some(&body))
        .await
}

/// A client token of `MERCHANT`, minted by the app's backend for `user` (if any).
async fn client_token(server: &TestServer, user: Option<&str>) -> String {
    let mut body = json!({"merchant_id": MERCHANT, "ttl_secs": 600});
    if let Some(user) = user {
        body["user_id"] = json!(user);
    }
    let (status, minted) = server
        .basic_request("POST", "/v1/client-tokens", Some(&body))
        .await;
    assert_eq!(status, 201, "{minted}");
    minted["token"].as_str().unwrap().to_string()
}

/// The `n` of every event a socket receives up to and including the `end` marker.
async fn received_until_end(raw: &mut RawSocketIo) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let packet = raw.packet().await;
        let args: Value = serde_json::from_str(packet.strip_prefix("42").unwrap()).unwrap();
        seen.push(args[1]["n"].as_u64().unwrap());
        if args[0] == "end" {
            return seen;
        }
    }
}

#[tokio::test]
async fn user_scoped_client_tokens_get_their_users_events_and_merchant_wide_ones() {
    let server =
        TestServer::with_settings("", "[apps.socketio]\nclient_token_scope = \"user\"").await;
    let key = server
        .merchants()
        .store
        .create_key("1", MERCHANT)
        .await
        .unwrap();
    let mut player_1 = RawSocketIo::connected(
        &server,
        &format!("&token={}", client_token(&server, Some("player_1")).await),
    )
    .await;
    let mut player_2 = RawSocketIo::connected(
        &server,
        &format!("&token={}", client_token(&server, Some("player_2")).await),
    )
    .await;
    let mut merchant_token = RawSocketIo::connected(
        &server,
        &format!("&token={}", client_token(&server, None).await),
    )
    .await;
    let mut merchant_key =
        RawSocketIo::connected(&server, &format!("&apiKey={}", key.api_key)).await;

    for (n, mark) in [
        (1, json!({"user_id": "player_1"})),
        (2, json!({"merchant_wide": true})),
        (3, json!({})),
        (4, json!({"user_id": "player_2"})),
    ] {
        let (status, body) = publish_marked(&server, "trade", n, mark).await;
        assert_eq!(status, 200, "{body}");
    }
    // The Pusher HTTP API cannot mark an event: it is unmarked, merchant-level.
    server
        .trigger(
            &format!("private-merchant.{MERCHANT}"),
            "trade",
            r#"{"n":5}"#,
        )
        .await;
    let (status, _) = publish_marked(&server, "end", 6, json!({"merchant_wide": true})).await;
    assert_eq!(status, 200);

    assert_eq!(received_until_end(&mut player_1).await, [1, 2, 6]);
    assert_eq!(received_until_end(&mut player_2).await, [2, 4, 6]);
    // Merchant-level credentials see every event of the merchant, marked or not.
    assert_eq!(
        received_until_end(&mut merchant_token).await,
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        received_until_end(&mut merchant_key).await,
        [1, 2, 3, 4, 5, 6]
    );

    // A mark must make sense.
    for mark in [
        json!({"user_id": "player_1", "merchant_wide": true}),
        json!({"user_id": "a.b"}),
        json!({"user_id": true}),
        json!({"merchant_wide": "yes"}),
    ] {
        let (status, body) = publish_marked(&server, "trade", 7, mark.clone()).await;
        assert_eq!(status, 400, "{mark}: {body}");
    }
}

#[tokio::test]
async fn by_default_a_client_token_sees_every_event_of_its_merchant() {
    let server = TestServer::start().await;
    let mut player_1 = RawSocketIo::connected(
        &server,
        &format!("&token={}", client_token(&server, Some("player_1")).await),
    )
    .await;
    for (n, mark) in [
        (1, json!({"user_id": "player_2"})),
        (2, json!({})),
        (3, json!({"merchant_wide": true})),
    ] {
        let (status, body) = publish_marked(&server, "trade", n, mark).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = publish_marked(&server, "end", 4, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(received_until_end(&mut player_1).await, [1, 2, 3, 4]);
}
