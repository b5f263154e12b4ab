//! Payment requests (seed 001) against a real node: the xumm-style API, the signing
//! side's reports, the `/sign/{uuid}` socket message by message with its timing,
//! expiry (open before, not resolve before), cancellation, callbacks, restarts,
//! tenancy, bad input, PostgreSQL. xumm-sdk itself drives the same node in
//! `tests/real_peers.rs` (`tests/peers/xumm_sdk.mjs`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::receiver::Receiver;
use common::*;

/// xumm-sdk accepts only UUID-shaped credentials, so the payload app uses them.
const PAY_KEY: &str = "3c9d1f0e-6a1b-4c5d-8e7f-0a1b2c3d4e5f";
const PAY_SECRET: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const OTHER_KEY: &str = "11111111-2222-4333-8444-555555555555";
const OTHER_SECRET: &str = "66666666-7777-4888-9999-aaaaaaaaaaaa";

fn config(node: &str) -> String {
    format!(
        r#"bind = "127.0.0.1:0"
{node}
[webhooks]
allow_private_targets = true
retry_schedule_secs = [1, 1]
retry_jitter = 0.0
poll_interval_ms = 50
[[apps]]
id = "pay"
key = "{PAY_KEY}"
secret = "{PAY_SECRET}"
[[apps]]
id = "other"
key = "{OTHER_KEY}"
secret = "{OTHER_SECRET}"
"#
    )
}

async fn node(settings: &str) -> TestServer {
    TestServer::with_config(&config(&format!(
        "[payloads]\nsweep_interval_ms = 100\n{settings}"
    )))
    .await
}

/// A request with the xumm headers of `key`/`secret` (none when `key` is empty).
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    (key, secret): (&str, &str),
) -> (u16, Value) {
    let mut request = http().request(method.parse().unwrap(), server.url(path));
    if !key.is_empty() {
        request = request
            .header("x-api-key", key)
            .header("x-api-secret", secret);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const PAY: (&str, &str) = (PAY_KEY, PAY_SECRET);
const OTHER: (&str, &str) = (OTHER_KEY, OTHER_SECRET);

async fn create(server: &TestServer, body: Value) -> String {
    let (status, reply) = call(server, "POST", "/api/v1/platform/payload", Some(&body), PAY).await;
    assert_eq!(status, 200, "{reply}");
    reply["uuid"].as_str().unwrap().to_string()
}

/// A SignIn payload expiring in `seconds`.
async fn sign_in(server: &TestServer, seconds: f64) -> String {
    create(
        server,
        json!({"txjson": {"TransactionType": "SignIn"}, "options": {"expire": seconds / 60.0}}),
    )
    .await
}

async fn get(server: &TestServer, uuid: &str) -> Value {
    let path = format!("/api/v1/platform/payload/{uuid}");
    let (status, reply) = call(server, "GET", &path, None, PAY).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn report(server: &TestServer, uuid: &str, what: &str, body: Value) -> (u16, Value) {
    call(
        server,
        "POST",
        &format!("/v1/payloads/{uuid}/{what}"),
        Some(&body),
        PAY,
    )
    .await
}

/// Registers an app-level webhook endpoint of the payload app.
async fn register(server: &TestServer, body: Value) -> (u16, Value) {
    let response = http()
        .post(server.url("/v1/webhooks/endpoints"))
        .basic_auth(PAY_KEY, Some(PAY_SECRET))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn socket(server: &TestServer, uuid: &str) -> Client {
    Client::connect(&server.ws_url(&format!("/sign/{uuid}"))).await
}

/// Reads the greeting of a live payload: Welcome, then the countdown; returns N.
async fn greeted(client: &mut Client, uuid: &str) -> i64 {
    assert_eq!(
        client.json().await,
        json!({"message": format!("Welcome {uuid}")})
    );
    let countdown = client.json().await;
    countdown["expires_in_seconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("a countdown, got {countdown}"))
}

fn resolve_body() -> Value {
    json!({"signed": true, "txid": "9B124C14528ED14C0BDA17075A39B90ABED598B77A22DFEEBD913CAC07A513BC",
           "account": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "user_token": "c5bc4ccc-28fa-4080-b702-0d3aac97b993"})
}

#[tokio::test]
async fn a_payload_from_creation_to_resolution() {
    let server = node("").await;
    let body = json!({
        "txjson": {"TransactionType": "Payment", "Destination": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "Amount": "1000000", "DestinationTag": 495},
        "options": {"expire": 5, "submit": false, "return_url": {"app": "shop://paid/{id}?tx={txid}", "web": "https://shop.example/paid?cid={cid}"}},
        "custom_meta": {"identifier": "order-1", "blob": {"cart": [1, 2]}, "instruction": "Pay for order 1"},
        "an_unknown_field": {"is": "ignored"}
    });
    let (status, created) = call(
        &server,
        "POST",
        "/api/v1/platform/payload",
        Some(&body),
        PAY,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let parsed = uuid::Uuid::parse_str(&uuid).unwrap();
    assert_eq!(parsed.get_version_num(), 4, "a random UUIDv4");
    assert_eq!(
        created["refs"]["websocket_status"],
        server.ws_url(&format!("/sign/{uuid}"))
    );
    assert_eq!(
        created["next"]["always"],
        server.url(&format!("/sign/{uuid}"))
    );
    assert_eq!(created["pushed"], false);
    assert!(created["refs"]["qr_png"].as_str().unwrap().contains(&uuid));

    let details = get(&server, &uuid).await;
    assert_eq!(details["meta"]["uuid"], uuid.as_str());
    assert_eq!(details["meta"]["exists"], true);
    assert_eq!(details["meta"]["resolved"], false);
    assert_eq!(details["meta"]["app_opened"], false);
    assert_eq!(details["meta"]["submit"], false);
    assert_eq!(details["payload"]["tx_type"], "Payment");
    assert_eq!(
        details["payload"]["tx_destination"],
        "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY"
    );
    assert_eq!(details["payload"]["tx_destination_tag"], 495);
    assert_eq!(details["payload"]["request_json"], body["txjson"]);
    let left = details["payload"]["expires_in_seconds"].as_i64().unwrap();
    assert!((298..=300).contains(&left), "{left}");
    assert_eq!(details["custom_meta"], body["custom_meta"]);
    assert_eq!(details["response"]["txid"], Value::Null);

    let mut client = socket(&server, &uuid).await;
    let n = greeted(&mut client, &uuid).await;
    assert!((298..=300).contains(&n), "{n}");
    client.send_json(json!({"ping": true})).await;
    assert_eq!(
        client.json().await,
        json!({"message": "Right back at you!"})
    );

    let (status, reply) = report(
        &server,
        &uuid,
        "opened",
        json!({"opened_by_deeplink": true}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["meta"]["app_opened"], true);
    assert_eq!(client.json().await, json!({"opened": true}));

    let (status, reply) = report(&server, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 200, "{reply}");
    let txid = resolve_body()["txid"].clone();
    let resolved = client.json().await;
    assert_eq!(
        resolved,
        json!({
            "payload_uuidv4": uuid,
            "reference_call_uuidv4": resolved["reference_call_uuidv4"],
            "return_url": {"app": format!("shop://paid/{uuid}?tx={}", txid.as_str().unwrap()), "web": "https://shop.example/paid?cid=order-1"},
            "signed": true,
            "opened_by_deeplink": true,
            "user_token": true,
            "custom_meta": body["custom_meta"],
            "txid": txid,
        })
    );
    let reference = resolved["reference_call_uuidv4"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(reference).is_ok() && reference != uuid);

    let details = get(&server, &uuid).await;
    assert_eq!(details["meta"]["resolved"], true);
    assert_eq!(details["meta"]["signed"], true);
    assert_eq!(details["meta"]["expired"], false);
    assert_eq!(details["meta"]["opened_by_deeplink"], true);
    assert_eq!(details["response"]["txid"], txid);
    assert_eq!(
        details["response"]["account"],
        "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY"
    );
    assert!(details["response"]["resolved_at"].is_string());
    assert_eq!(
        details["application"]["issued_user_token"],
        "c5bc4ccc-28fa-4080-b702-0d3aac97b993"
    );

    // Resolving twice, opening or cancelling a resolved payload: refused, with a reason.
    let (status, reply) = report(&server, &uuid, "resolve", json!({"signed": false})).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["error"]["reason"], "ALREADY_RESOLVED");
    assert!(reply["error"]["reference"].is_string());
    let (status, reply) = report(&server, &uuid, "opened", json!({})).await;
    assert_eq!(
        (status, reply["error"]["reason"].clone()),
        (409, json!("ALREADY_RESOLVED"))
    );
    let path = format!("/api/v1/platform/payload/{uuid}");
    let (status, reply) = call(&server, "DELETE", &path, None, PAY).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["result"],
        json!({"cancelled": false, "reason": "ALREADY_RESOLVED"})
    );
    assert_eq!(reply["meta"]["uuid"], uuid.as_str());

    // The countdown stopped with the resolution; the socket stays open and answers.
    client.silent_for(Duration::from_millis(300)).await;
    client.send_json(json!({"ping": true})).await;
    assert_eq!(
        client.json().await,
        json!({"message": "Right back at you!"})
    );

    // A socket that connects now learns everything that happened.
    let mut late = socket(&server, &uuid).await;
    greeted(&mut late, &uuid).await;
    assert_eq!(late.json().await, json!({"opened": true}));
    assert_eq!(late.json().await, resolved);
    late.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn every_socket_of_a_payload_gets_every_message_once() {
    let server = node("").await;
    let uuid = sign_in(&server, 120.0).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = socket(&server, &uuid).await;
        greeted(&mut client, &uuid).await;
        clients.push(client);
    }
    report(&server, &uuid, "opened", json!({})).await;
    // Opening again changes nothing and says nothing.
    let (status, _) = report(&server, &uuid, "opened", json!({})).await;
    assert_eq!(status, 200);
    report(&server, &uuid, "resolve", json!({"signed": false})).await;
    for client in &mut clients {
        assert_eq!(client.json().await, json!({"opened": true}));
        let resolved = client.json().await;
        assert_eq!(resolved["signed"], false);
        assert_eq!(resolved["opened_by_deeplink"], false);
        assert_eq!(resolved["user_token"], false);
        assert_eq!(resolved["txid"], Value::Null);
        client.silent_for(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_countdown_comes_every_15_seconds_by_default() {
    let server = TestServer::with_config(&config("")).await;
    let uuid = sign_in(&server, 600.0).await;
    let mut client = socket(&server, &uuid).await;
    let first = greeted(&mut client, &uuid).await;
    let started = Instant::now();
    let frame = client
        .next_within(Duration::from_secs(17))
        .await
        .expect("a second countdown");
    let Received::Json(second) = frame else {
        panic!("{frame:?}")
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(14_500) && waited <= Duration::from_millis(16_000),
        "{waited:?}"
    );
    let second = second["expires_in_seconds"].as_i64().unwrap();
    assert!(
        (first - 16..=first - 14).contains(&second),
        "{first} then {second}"
    );
}

#[tokio::test]
async fn an_unopened_payload_expires_on_time_and_for_good() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    let (status, endpoint) = register(
        &server,
        json!({"url": receiver.url("/hook"), "events": ["payload.*"]}),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let uuid = sign_in(&server, 2.0).await;
    let mut client = socket(&server, &uuid).await;
    let created = Instant::now();
    let n = greeted(&mut client, &uuid).await;
    assert!((0..=2).contains(&n), "{n}");
    assert_eq!(client.json().await, json!({"expired": true}));
    let at = created.elapsed();
    assert!(
        at >= Duration::from_millis(1500) && at < Duration::from_millis(3000),
        "{at:?}"
    );
    // The socket stays open (the client closes it), without a countdown.
    client.silent_for(Duration::from_millis(500)).await;
    client.send_json(json!({"ping": true})).await;
    assert_eq!(
        client.json().await,
        json!({"message": "Right back at you!"})
    );

    let details = get(&server, &uuid).await;
    assert_eq!(details["meta"]["expired"], true);
    assert_eq!(details["meta"]["resolved"], false);
    assert!(details["payload"]["expires_in_seconds"].as_i64().unwrap() < 0);
    for what in ["opened", "resolve"] {
        let (status, reply) = report(&server, &uuid, what, json!({"signed": true})).await;
        assert_eq!(status, 409, "{what}: {reply}");
        assert_eq!(reply["error"]["reason"], "ALREADY_EXPIRED");
    }
    let path = format!("/api/v1/platform/payload/{uuid}");
    let (_, reply) = call(&server, "DELETE", &path, None, PAY).await;
    assert_eq!(
        reply["result"],
        json!({"cancelled": false, "reason": "ALREADY_EXPIRED"})
    );

    // A socket connecting afterwards hears only that.
    let mut late = socket(&server, &uuid).await;
    assert_eq!(late.json().await, json!({"expired": true}));
    late.silent_for(Duration::from_millis(300)).await;

    // The app's backend is told, with what the GET answers.
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    let callback = received[0].json();
    assert_eq!(callback["type"], "payload.expired");
    assert_eq!(callback["data"]["meta"], details["meta"]);
    assert_eq!(callback["merchant_id"], Value::Null);
}

#[tokio::test]
async fn opened_before_expiry_means_resolvable_after_it() {
    let server = node("").await;
    let uuid = sign_in(&server, 1.0).await;
    let mut client = socket(&server, &uuid).await;
    greeted(&mut client, &uuid).await;
    report(
        &server,
        &uuid,
        "opened",
        json!({"opened_by_deeplink": false}),
    )
    .await;
    assert_eq!(client.json().await, json!({"opened": true}));
    // Past the expiry: no `expired`, since it was opened in time.
    client.silent_for(Duration::from_millis(1600)).await;
    let details = get(&server, &uuid).await;
    assert_eq!(details["meta"]["expired"], false);
    assert!(details["payload"]["expires_in_seconds"].as_i64().unwrap() < 0);
    let (status, reply) = report(&server, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 200, "{reply}");
    let resolved = client.json().await;
    assert_eq!(resolved["signed"], true);
    assert_eq!(resolved["payload_uuidv4"], uuid.as_str());
    // A late socket: still the greeting, then the story; the countdown is negative.
    let mut late = socket(&server, &uuid).await;
    let n = greeted(&mut late, &uuid).await;
    assert!(n < 0, "{n}");
    assert_eq!(late.json().await, json!({"opened": true}));
    assert_eq!(late.json().await, resolved);
}

#[tokio::test]
async fn opened_countdowns_go_negative() {
    let server = node("countdown_secs = 1").await;
    let uuid = sign_in(&server, 1.0).await;
    report(&server, &uuid, "opened", json!({})).await;
    let mut client = socket(&server, &uuid).await;
    let first = greeted(&mut client, &uuid).await;
    assert_eq!(client.json().await, json!({"opened": true}));
    let mut last = first;
    for _ in 0..2 {
        last = client.json().await["expires_in_seconds"].as_i64().unwrap();
    }
    assert!(last < 0 && last < first, "{first} → {last}");
}

#[tokio::test]
async fn cancelling_ends_an_unopened_payload_only() {
    let server = node("").await;
    let uuid = sign_in(&server, 60.0).await;
    let mut client = socket(&server, &uuid).await;
    greeted(&mut client, &uuid).await;
    let path = format!("/api/v1/platform/payload/{uuid}");
    let (status, reply) = call(&server, "DELETE", &path, None, PAY).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"], json!({"cancelled": true, "reason": "OK"}));
    assert_eq!(reply["meta"]["cancelled"], true);
    assert_eq!(reply["meta"]["expired"], true);
    assert!(reply["custom_meta"].is_object());
    // xumm marks a cancelled payload expired, and so does its socket.
    assert_eq!(client.json().await, json!({"expired": true}));
    let (_, reply) = call(&server, "DELETE", &path, None, PAY).await;
    assert_eq!(
        reply["result"],
        json!({"cancelled": false, "reason": "ALREADY_CANCELLED"})
    );
    for what in ["opened", "resolve"] {
        let (status, reply) = report(&server, &uuid, what, json!({"signed": true})).await;
        assert_eq!(
            (status, reply["error"]["reason"].clone()),
            (409, json!("ALREADY_CANCELLED"))
        );
    }

    // An opened payload may be being signed: it cannot be cancelled.
    let opened = sign_in(&server, 60.0).await;
    report(&server, &opened, "opened", json!({})).await;
    let path = format!("/api/v1/platform/payload/{opened}");
    let (_, reply) = call(&server, "DELETE", &path, None, PAY).await;
    assert_eq!(
        reply["result"],
        json!({"cancelled": false, "reason": "ALREADY_OPENED"})
    );
    let (status, _) = report(&server, &opened, "resolve", json!({"signed": true})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_and_malformed_uuids_get_a_message_then_a_close() {
    let server = node("").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let mut client = socket(&server, &unknown).await;
    let message = client.json().await;
    assert!(
        message["message"].as_str().unwrap().contains(&unknown),
        "{message}"
    );
    assert_eq!(client.closed().await.0, 1000);
    let mut client = socket(&server, "not-a-uuid").await;
    assert!(client.json().await["message"].is_string());
    assert_eq!(client.closed().await.0, 1000);

    let path = format!("/api/v1/platform/payload/{unknown}");
    let (status, reply) = call(&server, "GET", &path, None, PAY).await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["code"], 404);
    let (status, _) = call(&server, "GET", "/api/v1/platform/payload/x", None, PAY).await;
    assert_eq!(status, 404);
    let (status, _) = report(&server, &unknown, "resolve", json!({"signed": true})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn websocket_pings_are_answered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = node("").await;
    let uuid = sign_in(&server, 60.0).await;
    let mut client = socket(&server, &uuid).await;
    greeted(&mut client, &uuid).await;
    client
        .ws
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), client.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"hi".to_vec().into()));
    // Anything else a client says is ignored.
    client.send_text("hello").await;
    client.send_json(json!({"ping": false})).await;
    client.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn apps_see_only_their_own_payloads() {
    let server = node("").await;
    let uuid = sign_in(&server, 60.0).await;
    let path = format!("/api/v1/platform/payload/{uuid}");
    for method in ["GET", "DELETE"] {
        let (status, reply) = call(&server, method, &path, None, OTHER).await;
        assert_eq!(status, 404, "{method}: {reply}");
    }
    let (status, _) = call(
        &server,
        "POST",
        &format!("/v1/payloads/{uuid}/resolve"),
        Some(&json!({"signed": true})),
        OTHER,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(get(&server, &uuid).await["meta"]["resolved"], false);
}

#[tokio::test]
async fn no_other_protocol_can_reach_a_payload_channel() {
    let server = TestServer::with_config(&format!(
        "{}[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n",
        config("")
    ))
    .await;
    let uuid = sign_in(&server, 60.0).await;
    let channel = format!("#payload-{uuid}");
    let mut payload_socket = socket(&server, &uuid).await;
    greeted(&mut payload_socket, &uuid).await;
    // A Pusher client naming it is refused; an API trigger to it too.
    let (mut pusher, _) = server.connect_established().await;
    pusher.subscribe(&channel).await;
    let refusal = pusher.json().await;
    assert_eq!(refusal["event"], "pusher:subscription_error", "{refusal}");
    let body = json!({"name": "resolved", "channel": channel, "data": "{\"signed\":true}"});
    let (status, _) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 400);
    payload_socket.silent_for(Duration::from_millis(300)).await;
    // Payload channels are not listed among an app's channels.
    let (status, channels) = server.api("GET", "/apps/1/channels", &[], None).await;
    assert_eq!(status, 200);
    assert!(!channels.to_string().contains("#payload-"), "{channels}");
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let server = node("max_blob_bytes = 100").await;
    let path = "/api/v1/platform/payload";
    let good = json!({"txjson": {"TransactionType": "SignIn"}});
    let (status, reply) = call(&server, "POST", path, Some(&good), ("", "")).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key")
    );
    let (status, _) = call(&server, "POST", path, Some(&good), (PAY_KEY, OTHER_SECRET)).await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &server,
        "GET",
        &format!("{path}/{}", uuid::Uuid::new_v4()),
        None,
        ("", ""),
    )
    .await;
    assert_eq!(status, 401);
    // HTTP Basic works too.
    let response = http()
        .post(server.url(path))
        .basic_auth(PAY_KEY, Some(PAY_SECRET))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let blob = json!({"txjson": {"TransactionType": "SignIn"}, "custom_meta": {"blob": {"data": "x".repeat(200)}}});
    let (status, reply) = call(&server, "POST", path, Some(&blob), PAY).await;
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("custom_meta.blob")
    );
    for expire in [json!(0), json!(-1), json!(100_000), json!("5")] {
        let body = json!({"txjson": {"TransactionType": "SignIn"}, "options": {"expire": expire}});
        let (status, reply) = call(&server, "POST", path, Some(&body), PAY).await;
        assert_eq!(status, 400, "{expire}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expire")
        );
    }
    let huge = "x".repeat(40_000);
    let (status, _) = call(
        &server,
        "POST",
        path,
        Some(&json!({"txjson": {"TransactionType": "SignIn", "Memo": huge}})),
        PAY,
    )
    .await;
    assert_eq!(status, 413);
    let response = http()
        .post(server.url(path))
        .header("x-api-key", PAY_KEY)
        .header("x-api-secret", PAY_SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let uuid = sign_in(&server, 60.0).await;
    let (status, reply) = report(&server, &uuid, "resolve", json!({"txid": "A"})).await;
    assert_eq!(status, 400, "{reply}");
}

/// `GET /api/v1/platform/payload/{random}` with these credentials (`("", "")`: none;
/// `basic`: as HTTP Basic) from `client` (an `X-Forwarded-For`): status, body, and
/// `Retry-After`.
async fn probe(
    server: &TestServer,
    (key, secret): (&str, &str),
    basic: bool,
    client: Option<&str>,
) -> (u16, Value, Option<u64>) {
    let path = format!("/api/v1/platform/payload/{}", uuid::Uuid::new_v4());
    let mut request = http().get(server.url(&path));
    if basic {
        request = request.basic_auth(key, Some(secret));
    } else if !key.is_empty() {
        request = request
            .header("x-api-key", key)
            .header("x-api-secret", secret);
    }
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, response.json().await.unwrap(), retry_after)
}

/// The payload API's credentials are throttled as the other credentialed routes' are
/// (issue 12 item 3): keyed on the pair presented and on the client's address within the
/// key's app, never on requests without credentials, the client's address taken from a
/// trusted proxy only. A good answer for an unknown uuid is 404.
#[tokio::test]
async fn failed_payload_api_credentials_are_throttled() {
    async fn limited(extra: &str) -> TestServer {
        let settings =
            format!("auth_failures_per_minute = 3\n{extra}\n[payloads]\nsweep_interval_ms = 100");
        TestServer::with_config(&config(&settings)).await
    }
    let server = limited("").await;
    // Requests without credentials count against no one.
    for _ in 0..10 {
        assert_eq!(probe(&server, ("", ""), false, None).await.0, 401);
    }
    assert_eq!(probe(&server, PAY, false, None).await.0, 404);
    // A wrong secret for the app's key, in both forms of credentials: three, then 429.
    let wrong = (PAY_KEY, OTHER_SECRET);
    assert_eq!(probe(&server, wrong, false, None).await.0, 401);
    assert_eq!(probe(&server, wrong, true, None).await.0, 401);
    assert_eq!(probe(&server, (PAY_KEY, "guess"), false, None).await.0, 401);
    let (status, refusal, retry_after) = probe(&server, wrong, true, None).await;
    assert_eq!(status, 429, "{refusal}");
    assert!((1..=60).contains(&retry_after.expect("Retry-After")));
    assert_eq!(refusal["error"]["code"], 429, "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many failed attempts"),
        "{refusal}"
    );
    // This address is held for that app, good credentials included, and no other app.
    assert_eq!(probe(&server, PAY, false, None).await.0, 429);
    assert_eq!(probe(&server, OTHER, false, None).await.0, 404);
    assert_eq!(probe(&server, OTHER, true, None).await.0, 404);

    // Guessing keys holds the guessing address for everything.
    let server = limited("").await;
    for i in 0..3 {
        let key = uuid::Uuid::new_v4().to_string();
        let (status, _, _) = probe(&server, (&key, &format!("s{i}")), false, None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(probe(&server, PAY, false, None).await.0, 429);

    // Behind a trusted proxy each client counts alone, and a header from anyone else is
    // the client's own word, ignored.
    let server = limited("trusted_proxies = [\"127.0.0.0/8\"]").await;
    let guesser = Some("203.0.113.7");
    for _ in 0..3 {
        assert_eq!(probe(&server, wrong, false, guesser).await.0, 401);
    }
    assert_eq!(probe(&server, PAY, false, guesser).await.0, 429);
    let neighbour = Some("198.51.100.9, 127.0.0.1");
    assert_eq!(probe(&server, PAY, false, neighbour).await.0, 404);
    let server = limited("").await;
    for i in 0..3 {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(probe(&server, wrong, false, Some(&spoofed)).await.0, 401);
    }
    assert_eq!(probe(&server, PAY, false, Some("192.0.2.1")).await.0, 429);
}

/// The app-level callbacks of a payload carry what the GET answers.
#[tokio::test]
async fn resolution_and_cancellation_reach_the_apps_endpoints() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    let (status, endpoint) = register(&server, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let uuid = sign_in(&server, 60.0).await;
    report(&server, &uuid, "opened", json!({})).await;
    report(&server, &uuid, "resolve", resolve_body()).await;
    let details = get(&server, &uuid).await;
    let cancelled = sign_in(&server, 60.0).await;
    call(
        &server,
        "DELETE",
        &format!("/api/v1/platform/payload/{cancelled}"),
        None,
        PAY,
    )
    .await;

    let received = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 2, "opening makes no callback");
    let resolved = received
        .iter()
        .find(|r| r.json()["type"] == "payload.resolved")
        .unwrap();
    let body = resolved.json();
    let mut data = body["data"].clone();
    // Only the countdown moves between the callback and the GET.
    data["payload"]["expires_in_seconds"] = details["payload"]["expires_in_seconds"].clone();
    assert_eq!(data, details);
    assert_eq!(body["channel"], format!("#payload-{uuid}"));
    let id = resolved.header("webhook-id");
    let timestamp: i64 = resolved.header("webhook-timestamp").parse().unwrap();
    let expected = payrelay::webhooks::signature::standard_signature(
        &[&secret],
        id,
        timestamp,
        &resolved.body,
    );
    assert!(resolved.header("webhook-signature").contains(&expected));
    let cancel = received
        .iter()
        .find(|r| r.json()["type"] == "payload.cancelled")
        .unwrap();
    assert_eq!(cancel.json()["data"]["meta"]["uuid"], cancelled.as_str());
    assert_eq!(cancel.json()["data"]["meta"]["cancelled"], true);
}

fn temp_db() -> (PathBuf, String) {
    let dir =
        std::env::temp_dir().join(format!("payrelay-payloads-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("payrelay.db").display());
    (dir, url)
}

#[tokio::test]
async fn timers_survive_a_restart() {
    let (dir, url) = temp_db();
    let settings = format!("database_url = \"{url}\"\n[payloads]\nsweep_interval_ms = 100");
    let mut first = TestServer::with_config(&config(&settings)).await;
    let receiver = Receiver::start().await;
    let (status, _) = register(&first, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(status, 201);
    // One expires while the node is down, one after it is back, one is opened in time.
    let while_down = sign_in(&first, 1.0).await;
    let after = sign_in(&first, 4.0).await;
    let opened = sign_in(&first, 1.0).await;
    report(&first, &opened, "opened", json!({})).await;
    let created = Instant::now();
    first.shutdown().await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let second = TestServer::with_config(&config(&settings)).await;
    let mut down = socket(&second, &while_down).await;
    assert_eq!(down.json().await, json!({"expired": true}));
    let mut live = socket(&second, &after).await;
    let n = greeted(&mut live, &after).await;
    assert!((1..=3).contains(&n), "{n}");
    assert_eq!(live.json().await, json!({"expired": true}));
    let at = created.elapsed();
    assert!(
        at >= Duration::from_millis(3500) && at < Duration::from_millis(5500),
        "{at:?}"
    );
    let (status, reply) = report(&second, &opened, "resolve", json!({"signed": true})).await;
    assert_eq!(
        status, 200,
        "opened before its expiry, resolvable after a restart: {reply}"
    );

    let received = receiver.wait_for(3, Duration::from_secs(5)).await;
    let mut types: Vec<(String, String)> = received
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["type"].as_str().unwrap().to_string(),
                body["data"]["meta"]["uuid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    types.sort();
    let mut expected = vec![
        ("payload.expired".to_string(), while_down.clone()),
        ("payload.expired".to_string(), after.clone()),
        ("payload.resolved".to_string(), opened.clone()),
    ];
    expected.sort();
    assert_eq!(types, expected);
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

/// A change recorded but not announced (the node died in between) is announced at the
/// next start: the socket message and the callback.
#[tokio::test]
async fn a_change_left_unannounced_is_announced_after_a_restart() {
    let (dir, url) = temp_db();
    let settings = format!("database_url = \"{url}\"\n[payloads]\nsweep_interval_ms = 100");
    let receiver = Receiver::start().await;
    let mut first = TestServer::with_config(&config(&settings)).await;
    let (status, _) = register(&first, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(status, 201);
    let uuid = sign_in(&first, 60.0).await;
    first.shutdown().await;
    drop(first);
    // What a crash between the update and the publication leaves behind.
    {
        let db = payrelay::db::Db::open(&url).await.unwrap();
        let payrelay::db::Pool::Sqlite(pool) = db.writer() else {
            unreachable!()
        };
        sqlx::query(
            "UPDATE payloads SET state = 'resolved', signed = 1, finished_at = $1, \
             announce = 'resolved', announce_at = $1 WHERE uuid = $2",
        )
        .bind(now() * 1000)
        .bind(&uuid)
        .execute(pool)
        .await
        .unwrap();
        db.close().await;
    }
    let second = TestServer::with_config(&config(&settings)).await;
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["type"], "payload.resolved");
    assert_eq!(received[0].json()["data"]["meta"]["uuid"], uuid.as_str());
    // Announced once: a later sweep finds nothing left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
    let mut client = socket(&second, &uuid).await;
    greeted(&mut client, &uuid).await;
    assert_eq!(client.json().await["signed"], true);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn payloads_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let server = TestServer::with_config(&config(&format!(
        "database_url = \"{}\"\n[payloads]\nsweep_interval_ms = 100",
        pg.url
    )))
    .await;
    let uuid = sign_in(&server, 60.0).await;
    let mut client = socket(&server, &uuid).await;
    greeted(&mut client, &uuid).await;
    report(
        &server,
        &uuid,
        "opened",
        json!({"opened_by_deeplink": true}),
    )
    .await;
    assert_eq!(client.json().await, json!({"opened": true}));
    let (status, _) = report(&server, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 200);
    assert_eq!(client.json().await["opened_by_deeplink"], true);
    assert_eq!(get(&server, &uuid).await["meta"]["signed"], true);
    let (status, _) = report(&server, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 409);
    let expiring = sign_in(&server, 1.0).await;
    let mut client = socket(&server, &expiring).await;
    greeted(&mut client, &expiring).await;
    assert_eq!(client.json().await, json!({"expired": true}));
}

/// Every callback (`payload.resolved`, `payload.cancelled`, `payload.expired`) carries
/// what the GET answers for that payload, so a backend that trusts only callbacks needs
/// nothing else: resolved and cancelled before a restart, expired while the node was
/// down and after it came back (the timers survive it), on `database_url`.
async fn every_callback_carries_what_the_get_answers(database_url: &str) {
    let settings =
        format!("database_url = \"{database_url}\"\n[payloads]\nsweep_interval_ms = 100");
    let receiver = Receiver::start().await;
    let mut first = TestServer::with_config(&config(&settings)).await;
    let (status, _) = register(&first, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(status, 201);
    let meta = json!({"identifier": "order-42", "blob": {"cart": [1, 2]}, "instruction": "Pay"});
    let resolved = create(
        &first,
        json!({"txjson": {"TransactionType": "Payment", "Destination": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "Amount": "1000000"},
               "options": {"expire": 1, "return_url": {"app": "shop://{id}", "web": "https://shop.example/{cid}?tx={txid}"}},
               "custom_meta": meta}),
    )
    .await;
    report(
        &first,
        &resolved,
        "opened",
        json!({"opened_by_deeplink": true}),
    )
    .await;
    let (status, reply) = report(&first, &resolved, "resolve", resolve_body()).await;
    assert_eq!(status, 200, "{reply}");
    let cancelled = sign_in(&first, 60.0).await;
    let path = format!("/api/v1/platform/payload/{cancelled}");
    let (status, reply) = call(&first, "DELETE", &path, None, PAY).await;
    assert_eq!(reply["result"]["cancelled"], true, "{status} {reply}");
    let while_down = sign_in(&first, 1.0).await;
    let after = sign_in(&first, 3.0).await;
    first.shutdown().await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let second = TestServer::with_config(&config(&settings)).await;
    let received = receiver.wait_for(4, Duration::from_secs(15)).await;
    assert_eq!(
        received.len(),
        4,
        "{:?}",
        received.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let mut seen = Vec::new();
    for callback in &received {
        let body = callback.json();
        let data = &body["data"];
        let uuid = data["meta"]["uuid"].as_str().unwrap().to_string();
        let answer = get(&second, &uuid).await;
        let mut data = data.clone();
        // Only the countdown moves between the callback and the GET.
        assert!(data["payload"]["expires_in_seconds"].is_i64(), "{data}");
        data["payload"]["expires_in_seconds"] = answer["payload"]["expires_in_seconds"].clone();
        assert_eq!(data, answer, "{} of {uuid}", body["type"]);
        assert_eq!(body["channel"], format!("#payload-{uuid}"));
        seen.push((body["type"].as_str().unwrap().to_string(), uuid));
    }
    seen.sort();
    let mut expected = vec![
        ("payload.resolved".to_string(), resolved.clone()),
        ("payload.cancelled".to_string(), cancelled.clone()),
        ("payload.expired".to_string(), while_down.clone()),
        ("payload.expired".to_string(), after.clone()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    // What each says, as the GET does.
    let of = |uuid: &str| {
        received
            .iter()
            .map(|r| r.json()["data"].clone())
            .find(|d| d["meta"]["uuid"] == uuid)
            .unwrap()
    };
    let data = of(&resolved);
    assert_eq!(data["meta"]["resolved"], true);
    assert_eq!(data["meta"]["signed"], true);
    assert_eq!(data["meta"]["opened_by_deeplink"], true);
    assert_eq!(data["response"]["txid"], resolve_body()["txid"]);
    assert_eq!(data["response"]["account"], resolve_body()["account"]);
    assert_eq!(data["custom_meta"], meta);
    assert_eq!(data["payload"]["request_json"]["Amount"], "1000000");
    assert_eq!(of(&cancelled)["meta"]["cancelled"], true);
    for uuid in [&while_down, &after] {
        let data = of(uuid);
        assert_eq!(data["meta"]["expired"], true, "{data}");
        assert_eq!(data["meta"]["resolved"], false, "{data}");
    }
    // Each announced once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 4);
}

#[tokio::test]
async fn every_callback_carries_what_the_get_answers_on_sqlite() {
    let (dir, url) = temp_db();
    every_callback_carries_what_the_get_answers(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn every_callback_carries_what_the_get_answers_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    every_callback_carries_what_the_get_answers(&pg.url).await;
}

/// Runs `sql` on the node's database (`$1` is bound to `at`, `$2` to `uuid`).
async fn backdate(url: &str, sql: &str, at: i64, uuid: &str) {
    let db = payrelay::db::Db::open(url).await.unwrap();
    let done = match db.writer() {
        payrelay::db::Pool::Sqlite(pool) => sqlx::query(sql)
            .bind(at)
            .bind(uuid)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        payrelay::db::Pool::Postgres(pool) => sqlx::query(sql)
            .bind(at)
            .bind(uuid)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(done, 1, "{sql}");
    db.close().await;
}

/// Payloads are deleted after `retention_days`: finished ones that long after they
/// finished, unfinished ones (opened, never resolved) that long after they were created;
/// younger ones stay. The sweeper prunes at start-up and then every hour.
async fn payloads_are_pruned_after_the_retention(database_url: &str) {
    let settings = format!(
        "database_url = \"{database_url}\"\n[payloads]\nsweep_interval_ms = 100\nretention_days = 8"
    );
    let mut first = TestServer::with_config(&config(&settings)).await;
    let resolved_long_ago = sign_in(&first, 60.0).await;
    report(&first, &resolved_long_ago, "opened", json!({})).await;
    report(&first, &resolved_long_ago, "resolve", resolve_body()).await;
    let cancelled_long_ago = sign_in(&first, 60.0).await;
    let path = format!("/api/v1/platform/payload/{cancelled_long_ago}");
    call(&first, "DELETE", &path, None, PAY).await;
    let opened_long_ago = sign_in(&first, 60.0).await;
    report(&first, &opened_long_ago, "opened", json!({})).await;
    // Finished seven days ago, within the eight days: kept.
    let resolved_lately = sign_in(&first, 60.0).await;
    report(&first, &resolved_lately, "opened", json!({})).await;
    report(&first, &resolved_lately, "resolve", resolve_body()).await;
    let pending = sign_in(&first, 60.0).await;
    first.shutdown().await;
    drop(first);

    let day = 86_400_000;
    let now = now() * 1000;
    let finished = "UPDATE payloads SET finished_at = $1 WHERE uuid = $2";
    backdate(database_url, finished, now - 9 * day, &resolved_long_ago).await;
    backdate(database_url, finished, now - 9 * day, &cancelled_long_ago).await;
    backdate(database_url, finished, now - 7 * day, &resolved_lately).await;
    let created = "UPDATE payloads SET created_at = $1, expires_at = $1 + 60000, \
                   opened_at = $1 + 1000 WHERE uuid = $2";
    backdate(database_url, created, now - 9 * day, &opened_long_ago).await;

    let second = TestServer::with_config(&config(&settings)).await;
    let gone = [&resolved_long_ago, &cancelled_long_ago, &opened_long_ago];
    let deadline = Instant::now() + Duration::from_secs(10);
    for uuid in gone {
        let path = format!("/api/v1/platform/payload/{uuid}");
        loop {
            let (status, reply) = call(&second, "GET", &path, None, PAY).await;
            if status == 404 {
                break;
            }
            assert_eq!(status, 200, "{reply}");
            assert!(Instant::now() < deadline, "{uuid} was not pruned: {reply}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Its socket knows it no more either.
        let mut client = socket(&second, uuid).await;
        let message = client.json().await;
        assert!(message["message"].is_string(), "{message}");
        assert!(message.get("expires_in_seconds").is_none(), "{message}");
    }
    assert_eq!(
        get(&second, &resolved_lately).await["meta"]["resolved"],
        true
    );
    assert_eq!(get(&second, &pending).await["meta"]["resolved"], false);
    assert_eq!(second.metric("payrelay_payloads_pruned_total").await, 3.0);
}

#[tokio::test]
async fn payloads_are_pruned_after_the_retention_on_sqlite() {
    let (dir, url) = temp_db();
    payloads_are_pruned_after_the_retention(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn payloads_are_pruned_after_the_retention_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    payloads_are_pruned_after_the_retention(&pg.url).await;
}

/// Issue 16: a per-payment socket recovers by state. One whose TCP connection died
/// before the resolve gets the resolution when it comes back, as a first-time socket does.
#[tokio::test]
async fn a_socket_away_during_the_resolve_gets_it_when_it_reconnects() {
    let server = node("").await;
    let uuid = sign_in(&server, 60.0).await;
    let mut client = socket(&server, &uuid).await;
    greeted(&mut client, &uuid).await;
    let (status, reply) = report(&server, &uuid, "opened", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(client.json().await, json!({"opened": true}));
    // The connection goes away without a close; the payload is resolved meanwhile.
    drop(client);
    let (status, reply) = report(&server, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 200, "{reply}");

    let mut back = socket(&server, &uuid).await;
    greeted(&mut back, &uuid).await;
    assert_eq!(back.json().await, json!({"opened": true}));
    let resolved = back.json().await;
    assert_eq!(resolved["payload_uuidv4"], uuid.as_str());
    assert_eq!(resolved["signed"], true);
    assert_eq!(resolved["txid"], resolve_body()["txid"]);
}

/// Issue 15: payment requests on several nodes sharing PostgreSQL and Redis. A payload
/// created through one node is served to sockets on every node, and what is reported
/// through any node (opened, resolved) reaches every socket once, in order.
#[tokio::test]
async fn a_payload_changed_through_one_node_reaches_sockets_on_every_node() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let redis = TestRedis::get().await;
    let prefix = format!("test:{:016x}:", rand_u64());
    let shared = format!(
        "database_url = \"{}\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"",
        pg.url,
        redis.url()
    );
    let on_node = |id: &str| config(&format!("{shared}\nnode_id = \"{id}\""));
    let a = TestServer::with_config(&on_node("pay-a")).await;
    let b = TestServer::with_config(&on_node("pay-b")).await;

    let uuid = sign_in(&a, 60.0).await;
    // Created on A, read and watched on B.
    assert_eq!(get(&b, &uuid).await["meta"]["uuid"], uuid.as_str());
    let mut on_a = socket(&a, &uuid).await;
    greeted(&mut on_a, &uuid).await;
    let mut on_b = socket(&b, &uuid).await;
    greeted(&mut on_b, &uuid).await;

    // Opened through B, resolved through A: both sockets get both, in that order.
    let (status, reply) = report(&b, &uuid, "opened", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = report(&a, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 200, "{reply}");
    for client in [&mut on_a, &mut on_b] {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let message = client.json().await;
            // Countdowns may come in between; they are each socket's own.
            if message.get("expires_in_seconds").is_none() {
                seen.push(message);
            }
        }
        assert_eq!(seen[0], json!({"opened": true}));
        assert_eq!(seen[1]["payload_uuidv4"], uuid.as_str());
        assert_eq!(seen[1]["signed"], true);
        assert_eq!(seen[1]["txid"], resolve_body()["txid"]);
        // Once: nothing but a countdown or the end follows.
        let quiet_until = Instant::now() + Duration::from_millis(500);
        while let Some(frame) = client
            .next_within(quiet_until.saturating_duration_since(Instant::now()))
            .await
        {
            match frame {
                Received::Json(message) => assert!(
                    message.get("expires_in_seconds").is_some(),
                    "delivered twice or more: {message}"
                ),
                Received::Close(_) | Received::Gone => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // The resolution is the cluster's: a second resolve through B is refused.
    let (status, _) = report(&b, &uuid, "resolve", resolve_body()).await;
    assert_eq!(status, 409);
}
