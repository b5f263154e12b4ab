//! The Pusher WebSocket protocol over a plain WebSocket client: handshake, channels,
//! presence, cache, client events, sign-in, and every error path.

mod common;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use common::*;
use serde_json::{Value, json};

fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

#[tokio::test]
async fn handshake_gives_a_server_library_compatible_socket_id() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = client.json().await;
    assert_eq!(frame["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(frame["data"].as_str().expect("data is a JSON string")).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap();
    let (a, b) = socket_id.split_once('.').unwrap();
    assert!(
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert!(
        !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert_eq!(data["activity_timeout"], 120);
}

#[tokio::test]
async fn unknown_app_gets_4001_error_then_close() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.ws_url("/app/no-such-key?protocol=7")).await;
    let frame = client.json().await;
    assert_eq!(frame["event"], "pusher:error");
    assert_eq!(frame["data"]["code"], 4001);
    assert!(
        frame["data"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-key")
    );
    assert_eq!(client.closed().await.0, 4001);
}

/// Issue 12 item 12: a close reason that quotes a long (or multi-byte) app key stays within
/// the 123 bytes RFC 6455 allows, cut on a character boundary, so the client gets a valid
/// close frame with the code instead of a protocol error.
#[tokio::test]
async fn a_long_unknown_app_key_still_gets_a_valid_close_frame() {
    let server = TestServer::start().await;
    for key in [
        "k".repeat(200),
        "%C3%A9".repeat(100),
        format!("x{}", "%E2%82%AC".repeat(60)),
    ] {
        let mut client = Client::connect(&server.ws_url(&format!("/app/{key}?protocol=7"))).await;
        let frame = client.json().await;
        assert_eq!(frame["data"]["code"], 4001, "{frame}");
        let (code, reason) = client.closed().await;
        assert_eq!(code, 4001);
        assert!(reason.len() <= 123, "{} bytes: {reason}", reason.len());
        assert!(reason.starts_with("App key "), "{reason}");
    }
}

#[tokio::test]
async fn unsupported_protocol_versions_are_refused() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.ws_url("/app/app-key?protocol=3")).await;
    assert_eq!(client.json().await["data"]["code"], 4007);
    assert_eq!(client.closed().await.0, 4007);
    let mut client = Client::connect(&server.ws_url("/app/app-key?protocol=seven")).await;
    assert_eq!(client.json().await["data"]["code"], 4006);
    assert_eq!(client.closed().await.0, 4006);
    // No protocol parameter at all (plain wscat) is accepted as protocol 7.
    let mut client = Client::connect(&server.ws_url("/app/app-key")).await;
    client.established().await;
}

#[tokio::test]
async fn disabled_app_and_quota_and_capacity_refusals() {
    let server = TestServer::with_config(
        r#"
        bind = "127.0.0.1:0"
        max_connections = 3
        [[apps]]
        id = "1"
        key = "app-key"
        secret = "app-secret"
        max_connections = 1
        [[apps]]
        id = "2"
        key = "off-key"
        secret = "off-secret"
        enabled = false
        [[apps]]
        id = "3"
        key = "other-key"
        secret = "other-secret"
        "#,
    )
    .await;
    let mut off = Client::connect(&server.ws_url("/app/off-key?protocol=7")).await;
    assert_eq!(off.json().await["data"]["code"], 4003);
    assert_eq!(off.closed().await.0, 4003);

    let (_first, _) = server.connect_established().await;
    let mut second = server.connect().await;
    assert_eq!(second.json().await["data"]["code"], 4004);
    assert_eq!(second.closed().await.0, 4004);

    let mut others = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(&server.ws_url("/app/other-key?protocol=7")).await;
        c.established().await;
        others.push(c);
    }
    let mut over = Client::connect(&server.ws_url("/app/other-key?protocol=7")).await;
    assert_eq!(over.json().await["data"]["code"], 4100);
    assert_eq!(over.closed().await.0, 4100);
}

#[tokio::test]
async fn public_channel_receives_api_events_with_string_data() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    let ok = client.subscribed("orders").await;
    // Pusher's frame, plus payrelay's `position` (where the events that follow come after).
    let start = ok["position"].as_str().unwrap().to_string();
    assert!(start.starts_with("0."), "{ok}");
    assert_eq!(
        ok,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "orders", "position": start})
    );
    server.trigger("orders", "order-paid", r#"{"id":7}"#).await;
    let frame = client.event("order-paid").await;
    assert_eq!(frame["channel"], "orders");
    assert_eq!(frame["data"], r#"{"id":7}"#, "data stays a JSON string");
    assert!(frame["id"].as_str().unwrap().starts_with("evt_"), "{frame}");
    assert_eq!(
        frame["position"].as_str().unwrap(),
        format!("1.{}", start.split_once('.').unwrap().1)
    );

    client
        .send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": "orders"}}))
        .await;
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.event("pusher:pong").await;
    server.trigger("orders", "order-paid", "{}").await;
    client.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let server = TestServer::start().await;
    let (mut client, socket_id) = server.connect_established().await;

    client.subscribe("private-payments.m_001").await;
    let refused = client.event("pusher:subscription_error").await;
    assert_eq!(refused["channel"], "private-payments.m_001");
    assert_eq!(refused["data"]["type"], "AuthError");
    assert_eq!(refused["data"]["status"], 401);

    let wrong = private_auth(&socket_id, "private-payments.m_002");
    client
        .subscribe_with("private-payments.m_001", &wrong, None)
        .await;
    let refused = client.event("pusher:subscription_error").await;
    assert!(
        refused["data"]["error"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{refused}"
    );

    let bad_key =
        private_auth(&socket_id, "private-payments.m_001").replacen("app-key", "other-key", 1);
    client
        .subscribe_with("private-payments.m_001", &bad_key, None)
        .await;
    let refused = client.event("pusher:subscription_error").await;
    assert!(
        refused["data"]["error"].as_str().unwrap().contains("key"),
        "{refused}"
    );

    let good = private_auth(&socket_id, "private-payments.m_001");
    client
        .subscribe_with("private-payments.m_001", &good, None)
        .await;
    client.event("pusher_internal:subscription_succeeded").await;
    server
        .trigger("private-payments.m_001", "status", r#"{"status":"paid"}"#)
        .await;
    assert_eq!(
        data_of(&client.event("status").await),
        json!({"status": "paid"})
    );
}

#[tokio::test]
async fn invalid_channel_names_are_refused() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribe("has space").await;
    let refused = client.event("pusher:subscription_error").await;
    assert_eq!(refused["data"]["type"], "InvalidChannel");
    client.subscribe(&"x".repeat(165)).await;
    assert_eq!(
        client.event("pusher:subscription_error").await["data"]["status"],
        400
    );
}

async fn join_presence(server: &TestServer, channel: &str, user: &str) -> (Client, Value) {
    let (mut client, socket_id) = server.connect_established().await;
    let channel_data =
        json!({"user_id": user, "user_info": {"name": user.to_uppercase()}}).to_string();
    let auth = presence_auth(&socket_id, channel, &channel_data);
    client
        .subscribe_with(channel, &auth, Some(&channel_data))
        .await;
    let ok = client.event("pusher_internal:subscription_succeeded").await;
    (client, data_of(&ok))
}

#[tokio::test]
async fn presence_counts_users_not_sockets() {
    let server = TestServer::start().await;
    let channel = "presence-room";
    let (mut alice, data) = join_presence(&server, channel, "alice").await;
    assert_eq!(data["presence"]["count"], 1);
    assert_eq!(data["presence"]["ids"], json!(["alice"]));
    assert_eq!(data["presence"]["hash"]["alice"], json!({"name": "ALICE"}));

    let (mut bob, data) = join_presence(&server, channel, "bob").await;
    assert_eq!(data["presence"]["count"], 2);
    let added = alice.event("pusher_internal:member_added").await;
    assert_eq!(
        data_of(&added),
        json!({"user_id": "bob", "user_info": {"name": "BOB"}})
    );

    // A second socket for bob: no second member_added, count stays 2.
    let (mut bob2, data) = join_presence(&server, channel, "bob").await;
    assert_eq!(data["presence"]["count"], 2);
    alice.silent_for(Duration::from_millis(300)).await;

    // The HTTP API agrees.
    let (status, users) = server
        .api("GET", "/apps/1/channels/presence-room/users", &[], None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(users, json!({"users": [{"id": "alice"}, {"id": "bob"}]}));

    // bob's first socket leaves: bob is still present.
    bob.ws.close(None).await.unwrap();
    drop(bob);
    alice.silent_for(Duration::from_millis(300)).await;

    // The last bob socket leaves: exactly one member_removed.
    bob2.send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
        .await;
    let removed = alice.event("pusher_internal:member_removed").await;
    assert_eq!(data_of(&removed), json!({"user_id": "bob"}));
    alice.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn presence_rejects_bad_channel_data_and_full_channels() {
    let server = TestServer::with_settings("", "max_presence_members = 1").await;
    let (mut client, socket_id) = server.connect_established().await;
    let channel_data = r#"{"user_info":{}}"#;
    let auth = presence_auth(&socket_id, "presence-x", channel_data);
    client
        .subscribe_with("presence-x", &auth, Some(channel_data))
        .await;
    let refused = client.event("pusher:subscription_error").await;
    assert!(
        refused["data"]["error"]
            .as_str()
            .unwrap()
            .contains("user_id"),
        "{refused}"
    );

    let _alice = join_presence(&server, "presence-x", "alice").await;
    let (mut bob, socket_id) = server.connect_established().await;
    let channel_data = r#"{"user_id":"bob"}"#;
    let auth = presence_auth(&socket_id, "presence-x", channel_data);
    bob.subscribe_with("presence-x", &auth, Some(channel_data))
        .await;
    let refused = bob.event("pusher:subscription_error").await;
    assert_eq!(refused["data"]["type"], "LimitReached");
}

#[tokio::test]
async fn cache_channels_replay_the_last_event_or_report_a_miss() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribe("cache-empty").await;
    client.event("pusher_internal:subscription_succeeded").await;
    let miss = client.json().await;
    assert_eq!(
        miss,
        json!({"event": "pusher:cache_miss", "channel": "cache-empty"})
    );

    server.trigger("cache-rates", "rate", r#"{"usd":1}"#).await;
    server.trigger("cache-rates", "rate", r#"{"usd":2}"#).await;
    client.subscribe("cache-rates").await;
    client.event("pusher_internal:subscription_succeeded").await;
    let replay = client.json().await;
    assert_eq!(replay["event"], "rate");
    assert_eq!(replay["data"], r#"{"usd":2}"#);

    let (status, info) = server
        .api(
            "GET",
            "/apps/1/channels/cache-rates",
            &[("info", "subscription_count,cache")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["occupied"], true);
    assert_eq!(info["subscription_count"], 1);
    assert_eq!(info["cache"]["data"], r#"{"usd":2}"#);
}

/// Sends `frame` `times` times, then a ping, and returns every frame up to the pong with
/// the bytes they took: what those requests cost the server's uplink.
async fn replies_to_repeats(
    client: &mut Client,
    frame: &Value,
    times: usize,
) -> (Vec<Value>, usize) {
    for _ in 0..times {
        client.send_json(frame.clone()).await;
    }
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    let mut frames = Vec::new();
    let mut bytes = 0;
    loop {
        let text = client.text().await;
        bytes += text.len();
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["event"] == "pusher:pong" {
            return (frames, bytes);
        }
        frames.push(frame);
    }
}

fn assert_only_existing_subscription_errors(frames: &[Value], channel: &str, times: usize) {
    let summary: Vec<String> = frames
        .iter()
        .map(|f| format!("{} ({} bytes)", f["event"], f.to_string().len()))
        .collect();
    assert_eq!(frames.len(), times, "{summary:?}");
    for frame in frames {
        assert_eq!(frame["event"], "pusher:error", "{frame}");
        assert_eq!(frame["data"]["code"], Value::Null, "{frame}");
        assert_eq!(
            frame["data"]["message"],
            format!("Existing subscription to channel {channel}"),
            "{frame}"
        );
    }
}

#[tokio::test]
async fn subscribing_again_to_a_presence_channel_sends_no_member_list() {
    let server = TestServer::with_settings("", "").await;
    let channel = "presence-crowd";
    // 60 members with ~900 bytes of user_info each: one member list is ~57 KB.
    let mut members = Vec::new();
    let mut last = None;
    for i in 0..60 {
        let (mut client, socket_id) = server.connect_established().await;
        let channel_data =
            json!({"user_id": format!("user-{i}"), "user_info": {"bio": "x".repeat(900)}})
                .to_string();
        let auth = presence_auth(&socket_id, channel, &channel_data);
        client
            .subscribe_with(channel, &auth, Some(&channel_data))
            .await;
        let ok = client.event("pusher_internal:subscription_succeeded").await;
        assert_eq!(data_of(&ok)["presence"]["count"], i + 1);
        last = Some((auth, channel_data));
        members.push(client);
    }
    let (auth, channel_data) = last.unwrap();
    let mut repeater = members.pop().unwrap();
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": channel_data}});
    let request_bytes = subscribe.to_string().len() * 20;
    let (frames, reply_bytes) = replies_to_repeats(&mut repeater, &subscribe, 20).await;
    assert_only_existing_subscription_errors(&frames, channel, 20);
    println!("20 repeated presence subscribes: {request_bytes} bytes in, {reply_bytes} bytes out");
    assert!(
        reply_bytes < request_bytes,
        "{reply_bytes} bytes of replies to {request_bytes} bytes of requests"
    );
    // The others saw the member join once, and nothing for the repeats.
    let other = members.first_mut().unwrap();
    other
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    let mut added = 0;
    loop {
        let frame = other.json().await;
        match frame["event"].as_str() {
            Some("pusher:pong") => break,
            Some("pusher_internal:member_added") => added += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(
        added, 59,
        "one member_added per later member, none for repeats"
    );
}

#[tokio::test]
async fn subscribing_again_to_a_cache_channel_replays_nothing() {
    let server = TestServer::start().await;
    let channel = "cache-rates";
    server.trigger(channel, "rates", &"9".repeat(9000)).await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed(channel).await;
    assert_eq!(
        client.json().await["event"],
        "rates",
        "the cached event, once"
    );
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    let (frames, _) = replies_to_repeats(&mut client, &subscribe, 20).await;
    assert_only_existing_subscription_errors(&frames, channel, 20);
    // Still subscribed: new events arrive.
    server.trigger(channel, "rates", "{}").await;
    assert_eq!(client.event("rates").await["data"], "{}");
}

#[tokio::test]
async fn subscribe_requests_are_rate_limited_per_connection() {
    let server = TestServer::with_settings(
        "",
        "max_channels_per_connection = 10\nsubscriptions_per_second = 2",
    )
    .await;
    let (mut client, _) = server.connect_established().await;
    // A reconnecting client subscribes to all its channels at once: a burst as large as
    // the channel limit passes.
    for i in 0..10 {
        client.subscribe(&format!("first-{i}")).await;
    }
    for _ in 0..10 {
        client.event("pusher_internal:subscription_succeeded").await;
    }
    // Churning beyond the rate is refused, per channel, with status 429.
    for i in 0..10 {
        client
            .send_json(
                json!({"event": "pusher:unsubscribe", "data": {"channel": format!("first-{i}")}}),
            )
            .await;
    }
    let mut refused = 0;
    let mut succeeded = 0;
    for i in 0..10 {
        client.subscribe(&format!("second-{i}")).await;
    }
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    loop {
        let frame = client.json().await;
        match frame["event"].as_str() {
            Some("pusher:pong") => break,
            Some("pusher_internal:subscription_succeeded") => succeeded += 1,
            Some("pusher:subscription_error") => {
                assert_eq!(frame["data"]["type"], "LimitReached", "{frame}");
                assert_eq!(frame["data"]["status"], 429, "{frame}");
                assert!(
                    frame["data"]["error"]
                        .as_str()
                        .unwrap()
                        .contains("subscribe requests"),
                    "{frame}"
                );
                refused += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(succeeded + refused, 10);
    assert!(refused >= 5, "{refused} refused, {succeeded} let through");
    // Another socket is not affected.
    let (mut other, _) = server.connect_established().await;
    other.subscribed("first-0").await;
    // The budget comes back with time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.subscribe("later").await;
        let frame = client.json().await;
        if frame["event"] == "pusher_internal:subscription_succeeded" {
            break;
        }
        assert_eq!(frame["data"]["status"], 429, "{frame}");
        assert!(std::time::Instant::now() < deadline, "never allowed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn private_pair(server: &TestServer, channel: &str) -> (Client, Client) {
    let mut pair = Vec::new();
    for _ in 0..2 {
        let (mut c, socket_id) = server.connect_established().await;
        c.subscribe_with(channel, &private_auth(&socket_id, channel), None)
            .await;
        c.event("pusher_internal:subscription_succeeded").await;
        pair.push(c);
    }
    let b = pair.pop().unwrap();
    (pair.pop().unwrap(), b)
}

#[tokio::test]
async fn client_events_reach_others_but_never_the_sender() {
    let server = TestServer::start().await;
    let (mut a, mut b) = private_pair(&server, "private-chat").await;
    a.send_json(json!({"event": "client-typing", "channel": "private-chat", "data": {"x": 1}}))
        .await;
    let got = b.event("client-typing").await;
    assert_eq!(got["channel"], "private-chat");
    assert_eq!(data_of(&got), json!({"x": 1}));
    a.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn client_events_on_presence_carry_the_user_id() {
    let server = TestServer::start().await;
    let (mut alice, _) = join_presence(&server, "presence-chat", "alice").await;
    let (mut bob, _) = join_presence(&server, "presence-chat", "bob").await;
    alice.event("pusher_internal:member_added").await;
    bob.send_json(json!({"event": "client-hi", "channel": "presence-chat", "data": {}}))
        .await;
    assert_eq!(alice.event("client-hi").await["user_id"], "bob");
}

#[tokio::test]
async fn client_events_are_refused_where_pusher_refuses_them() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("public-room").await;
    client
        .send_json(json!({"event": "client-x", "channel": "public-room", "data": {}}))
        .await;
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4009);
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("private and presence"),
        "{error}"
    );

    client
        .send_json(json!({"event": "client-x", "channel": "private-not-joined", "data": {}}))
        .await;
    let error = client.event("pusher:error").await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not subscribed"),
        "{error}"
    );

    // Still connected afterwards.
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.event("pusher:pong").await;
}

#[tokio::test]
async fn client_events_are_off_unless_the_app_enables_them() {
    let server = TestServer::with_settings("", "").await;
    let (mut a, _b) = private_pair(&server, "private-chat").await;
    a.send_json(json!({"event": "client-typing", "channel": "private-chat", "data": {}}))
        .await;
    let error = a.event("pusher:error").await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{error}"
    );
}

#[tokio::test]
async fn client_events_on_encrypted_channels_are_refused() {
    let server = TestServer::start().await;
    let (mut a, _b) = private_pair(&server, "private-encrypted-vault").await;
    a.send_json(json!({"event": "client-x", "channel": "private-encrypted-vault", "data": {}}))
        .await;
    assert_eq!(a.event("pusher:error").await["data"]["code"], 4009);
}

#[tokio::test]
async fn client_events_are_rate_limited_per_socket() {
    let server = TestServer::start().await;
    let (mut a, mut b) = private_pair(&server, "private-flood").await;
    for i in 0..12 {
        a.send_json(json!({"event": "client-n", "channel": "private-flood", "data": {"i": i}}))
            .await;
    }
    let error = a.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4301);
    let mut received = 0;
    while let Some(common::Received::Json(frame)) = b.next_within(Duration::from_millis(300)).await
    {
        if frame["event"] == "client-n" {
            received += 1;
        }
    }
    assert_eq!(
        received, 10,
        "exactly the allowed 10 per second got through"
    );
}

#[tokio::test]
async fn encrypted_channels_relay_ciphertext_untouched() {
    let server = TestServer::start().await;
    let (mut client, socket_id) = server.connect_established().await;
    let channel = "private-encrypted-vault";
    client
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    client.event("pusher_internal:subscription_succeeded").await;
    let sealed = r#"{"nonce":"bm9uY2U=","ciphertext":"c2VjcmV0"}"#;
    server.trigger(channel, "sealed", sealed).await;
    assert_eq!(client.event("sealed").await["data"], sealed);

    let body = json!({"name": "e", "channels": [channel, "public"], "data": "{}"});
    let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 400, "{reply}");
}

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_socket_stays_up() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.send_text("{not json").await;
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4300);
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("Malformed"),
        "{error}"
    );
    client
        .send_text(r#"{"event":"pusher:subscribe","data":{}}"#)
        .await;
    assert_eq!(client.event("pusher:error").await["data"]["code"], 4300);
    client.send_text(r#"["an","array"]"#).await;
    assert_eq!(client.event("pusher:error").await["data"]["code"], 4300);
    // Unknown events, in Pusher's namespace and outside it (not a client- event).
    for unknown in ["pusher:no_such_event", "no-such-event"] {
        client
            .send_json(json!({"event": unknown, "data": {}}))
            .await;
        let error = client.event("pusher:error").await;
        assert_eq!(error["data"]["code"], 4300, "{unknown}: {error}");
    }
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.event("pusher:pong").await;
}

#[tokio::test]
async fn oversized_frames_get_an_error_and_a_1009_close() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    let big = json!({"event": "pusher:ping", "data": {"pad": "x".repeat(12 * 1024)}});
    client.send_json(big).await;
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4300, "{error}");
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds"),
        "{error}"
    );
    assert_eq!(client.closed().await.0, 1009);
}

#[tokio::test]
async fn messages_far_over_the_limit_get_4300_and_1009_too() {
    // The default 10 KiB limit; the WebSocket layer stops reading a message at twice that.
    let server = TestServer::start().await;
    for size in [30 * 1024, 4 * 1024 * 1024] {
        let (client, _) = server.connect_established().await;
        let big = json!({"event": "pusher:ping", "data": {"pad": "x".repeat(size)}});
        let (mut client, _sending) = client.send_in_background(Message::text(big.to_string()));
        let error = client.event("pusher:error").await;
        assert_eq!(error["data"]["code"], 4300, "{size}: {error}");
        assert!(
            error["data"]["message"]
                .as_str()
                .unwrap()
                .contains("exceeds the limit of 10240 bytes"),
            "{size}: {error}"
        );
        assert_eq!(client.closed().await.0, 1009, "{size}");
    }
}

#[tokio::test]
async fn idle_clients_are_pinged_and_dropped_with_4201_without_a_pong() {
    let server =
        TestServer::with_settings("activity_timeout_secs = 1\npong_timeout_secs = 1", "").await;
    // A client that answers stays connected past several timeouts.
    let (mut lively, _) = server.connect_established().await;
    for _ in 0..3 {
        lively.event("pusher:ping").await;
        lively
            .send_json(json!({"event": "pusher:pong", "data": {}}))
            .await;
    }
    // One that does not is closed with 4201.
    let (mut silent, _) = server.connect_established().await;
    silent.event("pusher:ping").await;
    assert_eq!(silent.closed().await.0, 4201);
}

#[tokio::test]
async fn signed_in_users_get_their_events_and_can_be_terminated() {
    let server = TestServer::start().await;
    let (mut client, socket_id) = server.connect_established().await;

    // Another user's channel cannot be joined by name.
    client.subscribe("#server-to-user-u1").await;
    assert_eq!(
        client.event("pusher:subscription_error").await["data"]["status"],
        403
    );

    let user_data = r#"{"id":"u1","user_info":{"name":"U"}}"#;
    let bad = signin_auth("9.9", user_data);
    client
        .send_json(json!({"event": "pusher:signin", "data": {"auth": bad, "user_data": user_data}}))
        .await;
    assert_eq!(client.event("pusher:error").await["data"]["code"], 4009);

    let auth = signin_auth(&socket_id, user_data);
    client
        .send_json(
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
        )
        .await;
    let ok = client.event("pusher:signin_success").await;
    assert_eq!(ok["data"]["user_data"], user_data);

    client.subscribed("#server-to-user-u1").await;
    server
        .trigger("#server-to-user-u1", "hello", r#"{"to":"u1"}"#)
        .await;
    assert_eq!(client.event("hello").await["channel"], "#server-to-user-u1");

    let (status, _) = server
        .api(
            "POST",
            "/apps/1/users/u1/terminate_connections",
            &[],
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4009);
    assert_eq!(client.closed().await.0, 4009);
}

#[tokio::test]
async fn socket_id_exclusion_skips_only_that_socket() {
    let server = TestServer::start().await;
    let (mut a, a_id) = server.connect_established().await;
    let (mut b, _) = server.connect_established().await;
    a.subscribed("news").await;
    b.subscribed("news").await;
    let body = json!({"name": "n", "channel": "news", "data": "{}", "socket_id": a_id});
    let (status, _) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200);
    b.event("n").await;
    a.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn slow_consumers_are_disconnected_not_buffered() {
    let server = TestServer::with_settings("outbound_queue_size = 16", "").await;
    let (mut slow, _) = server.connect_established().await;
    slow.subscribed("firehose").await;
    let app = server.core.apps.by_id("1").unwrap().clone();
    // ~40 MB the client never reads: far more than the socket buffers hold.
    let data = "x".repeat(10_000);
    for _ in 0..4000 {
        let publication = payrelay::core::NewPublication {
            channel: "firehose".into(),
            event: "e".into(),
            data: data.clone(),
            ..Default::default()
        };
        server.core.publish(&app, publication).await.unwrap();
        if server.core.connection_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Drain what the socket buffered: the last frame before the close is the
    // `pusher:error` 4200 the README promises, then the close with the reconnect code.
    let mut last_text = None;
    let (code, reason) = loop {
        match slow.next().await {
            Received::Json(frame) => last_text = Some(frame),
            Received::Close(Some(frame)) => break frame,
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    let error = last_text.expect("frames before the close");
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], 4200, "{error}");
    assert_eq!(code, 4200, "{reason}");
    assert!(reason.contains("Slow consumer"), "{reason}");
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect() {
    let mut server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("news").await;
    let took = server.shutdown().await;
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4200);
    assert_eq!(client.closed().await.0, 4200);
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_replies_is_dropped() {
    let server = TestServer::with_settings("pong_timeout_secs = 1", "").await;
    let (mut client, _) = server.connect_established().await;
    // Ask for pongs and never read them, until the server stops reading us too.
    let ping = json!({"event": "pusher:ping", "data": {}}).to_string();
    let mut sent = 0;
    while sent < 2_000_000 {
        let send = client.ws.send(Message::text(ping.clone()));
        match tokio::time::timeout(Duration::from_millis(200), send).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent < 2_000_000, "the server never pushed back");
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.core.connection_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "a stalled reply kept the connection alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_events_are_never_cached() {
    // The default test app has client events enabled.
    let server = TestServer::start().await;
    let channel = "private-cache-room";
    let (mut sender, sender_id) = server.connect_established().await;
    sender
        .subscribe_with(channel, &private_auth(&sender_id, channel), None)
        .await;
    sender.event("pusher_internal:subscription_succeeded").await;
    sender.event("pusher:cache_miss").await;
    sender
        .send_json(json!({"event": "client-typing", "channel": channel, "data": {}}))
        .await;
    // The server handles one socket's frames in order: once the pong is back, the client
    // event has been published (and, never echoed, nothing came before the pong).
    sender
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(sender.json().await["event"], "pusher:pong");

    let (mut late, late_id) = server.connect_established().await;
    late.subscribe_with(channel, &private_auth(&late_id, channel), None)
        .await;
    late.event("pusher_internal:subscription_succeeded").await;
    late.event("pusher:cache_miss").await;
}

#[tokio::test]
async fn sign_in_ids_that_cannot_name_a_channel_are_refused() {
    let server = TestServer::start().await;
    let (mut client, socket_id) = server.connect_established().await;
    let user_data = r#"{"id":"a b/c"}"#;
    let auth = signin_auth(&socket_id, user_data);
    client
        .send_json(
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
        )
        .await;
    let error = client.event("pusher:error").await;
    assert_eq!(error["data"]["code"], 4009);
    assert!(
        error["data"]["message"].as_str().unwrap().contains("a b/c"),
        "{error}"
    );
}

#[tokio::test]
async fn resume_from_replays_what_followed_or_says_resume_failed() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    let start = client.subscribed("cache-rates").await["position"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=3 {
        server.trigger("cache-rates", "tick", &n.to_string()).await;
    }
    let mut last = String::new();
    for _ in 1..=3 {
        last = client.event("tick").await["position"]
            .as_str()
            .unwrap()
            .to_string();
    }
    assert_eq!(last.split_once('.').unwrap().0, "3");

    // From the start: the three events, and no cached last event on top of them.
    let (mut again, _) = server.connect_established().await;
    again
        .send_json(json!({"event": "pusher:subscribe", "data": {"channel": "cache-rates", "resume_from": start}}))
        .await;
    let ok = again.json().await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ok["position"], start.as_str());
    for n in 1..=3 {
        let frame = again.json().await;
        assert_eq!(
            (&frame["event"], &frame["data"]),
            (&json!("tick"), &json!(n.to_string()))
        );
    }
    again.silent_for(Duration::from_millis(200)).await;

    // Another epoch: subscribed, the cached event (the best state there is), then the
    // explicit failure with where the stream stands.
    let (mut lost, _) = server.connect_established().await;
    lost.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "cache-rates", "resume_from": "3.elsewhere"}}))
        .await;
    assert_eq!(
        lost.json().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(lost.json().await["data"], "3");
    let failed = lost.json().await;
    assert_eq!(failed["event"], "pusher:resume_failed");
    assert_eq!(failed["channel"], "cache-rates");
    let data: Value = serde_json::from_str(failed["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["position"], last.as_str());

    // Not a position: a subscription error, no subscription.
    lost.send_json(
        json!({"event": "pusher:subscribe", "data": {"channel": "other", "resume_from": "soon"}}),
    )
    .await;
    let refused = lost.event("pusher:subscription_error").await;
    assert_eq!(refused["data"]["status"], 400);
    assert_eq!(refused["data"]["type"], "InvalidPosition");
}
