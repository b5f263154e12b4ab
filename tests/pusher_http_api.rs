//! The Pusher HTTP API: request signing, limits, channel queries, operational endpoints.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_bad_signature_is_a_401_with_a_reason() {
    let server = TestServer::start().await;
    let body = json!({"name": "e", "channel": "c", "data": "{}"});
    let (status, reply) = server
        .api_signed("POST", "/apps/1/events", &[], Some(&body), "wrong-secret")
        .await;
    assert_eq!(status, 401);
    assert!(
        reply["error"].as_str().unwrap().contains("signature"),
        "{reply}"
    );

    let (status, reply) = server
        .raw_request("POST", "/apps/1/events", b"{}".to_vec())
        .await;
    assert_eq!(status, 401);
    assert!(
        reply["error"].as_str().unwrap().contains("auth_signature"),
        "{reply}"
    );
}

#[tokio::test]
async fn stale_timestamps_and_tampered_bodies_are_refused() {
    let server = TestServer::start().await;
    let body = br#"{"name":"e","channel":"c","data":"{}"}"#.to_vec();
    let stale = payrelay::protocols::pusher::request_auth::sign_query(
        KEY,
        SECRET,
        "POST",
        "/apps/1/events",
        &[],
        &body,
        now() - 700,
    );
    let (status, reply) = server
        .raw_request("POST", &format!("/apps/1/events?{stale}"), body.clone())
        .await;
    assert_eq!(status, 401);
    assert!(
        reply["error"].as_str().unwrap().contains("auth_timestamp"),
        "{reply}"
    );

    let fresh = payrelay::protocols::pusher::request_auth::sign_query(
        KEY,
        SECRET,
        "POST",
        "/apps/1/events",
        &[],
        &body,
        now(),
    );
    let tampered = br#"{"name":"f","channel":"c","data":"{}"}"#.to_vec();
    let (status, reply) = server
        .raw_request("POST", &format!("/apps/1/events?{fresh}"), tampered)
        .await;
    assert_eq!(status, 401);
    assert!(
        reply["error"].as_str().unwrap().contains("body_md5"),
        "{reply}"
    );
}

#[tokio::test]
async fn unknown_apps_are_404() {
    let server = TestServer::start().await;
    let (status, reply) = server.api("GET", "/apps/999/channels", &[], None).await;
    assert_eq!(status, 404, "{reply}");
}

#[tokio::test]
async fn oversized_data_is_a_413_with_a_reason() {
    let server = TestServer::start().await;
    let body = json!({"name": "e", "channel": "c", "data": "x".repeat(10 * 1024 + 1)});
    let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 413);
    assert!(
        reply["error"].as_str().unwrap().contains("limit"),
        "{reply}"
    );
    let body = json!({"name": "e", "channel": "c", "data": "x".repeat(10 * 1024)});
    let (status, _) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "exactly the limit is accepted");
}

#[tokio::test]
async fn request_limits_and_validation() {
    let server = TestServer::start().await;
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases = [
        json!({"name": "e", "channels": channels, "data": "{}"}),
        json!({"name": "e", "channels": [], "data": "{}"}),
        json!({"name": "e", "channel": "bad name", "data": "{}"}),
        json!({"name": "", "channel": "c", "data": "{}"}),
        json!({"name": "pusher:x", "channel": "c", "data": "{}"}),
        json!({"name": "e", "channel": "c", "data": "{}", "socket_id": "nope"}),
        json!({"channel": "c", "data": "{}"}),
    ];
    for body in cases {
        let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let (status, reply) = server.raw_signed_body("not json").await;
    assert_eq!(status, 400, "{reply}");

    let hundred: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let body = json!({"name": "e", "channels": hundred, "data": "{}"});
    let (status, _) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200);

    // Any `digits.digits` a Pusher client holds may be excluded (issue 12 item 15: the
    // README's own id has a second half over 32 bits); an absurdly long one may not.
    let long_half = format!("1.{}", "9".repeat(21));
    for (socket_id, expected) in [
        ("957523923.7566984777", 200),
        ("18446744073709551615.18446744073709551615", 200),
        (long_half.as_str(), 400),
    ] {
        let body = json!({"name": "e", "channel": "c", "data": "{}", "socket_id": socket_id});
        let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
        assert_eq!(status, expected, "{socket_id}: {reply}");
    }
}

/// An excluded socket id that this node never handed out excludes nobody.
#[tokio::test]
async fn a_foreign_socket_id_excludes_nobody() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("c").await;
    let body =
        json!({"name": "e", "channel": "c", "data": "x", "socket_id": "957523923.7566984777"});
    let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    let event = client.event("e").await;
    assert_eq!(event["data"], "x");
}

trait RawBody {
    async fn raw_signed_body(&self, body: &str) -> (u16, serde_json::Value);
}

impl RawBody for TestServer {
    async fn raw_signed_body(&self, body: &str) -> (u16, serde_json::Value) {
        let query = payrelay::protocols::pusher::request_auth::sign_query(
            KEY,
            SECRET,
            "POST",
            "/apps/1/events",
            &[],
            body.as_bytes(),
            now(),
        );
        self.raw_request(
            "POST",
            &format!("/apps/1/events?{query}"),
            body.as_bytes().to_vec(),
        )
        .await
    }
}

#[tokio::test]
async fn batches_publish_in_order_and_are_limited_to_ten() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("b").await;
    let batch: Vec<_> = (0..10)
        .map(|i| json!({"name": "n", "channel": "b", "data": i.to_string()}))
        .collect();
    let (status, reply) = server
        .api(
            "POST",
            "/apps/1/batch_events",
            &[],
            Some(&json!({"batch": batch})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    for i in 0..10 {
        assert_eq!(client.event("n").await["data"], i.to_string());
    }

    let eleven: Vec<_> = (0..11)
        .map(|_| json!({"name": "n", "channel": "b", "data": "{}"}))
        .collect();
    let (status, _) = server
        .api(
            "POST",
            "/apps/1/batch_events",
            &[],
            Some(&json!({"batch": eleven})),
        )
        .await;
    assert_eq!(status, 400);

    // One bad item refuses the whole batch: nothing is published.
    let mixed = json!({"batch": [
        {"name": "ok", "channel": "b", "data": "{}"},
        {"name": "bad", "channel": "bad name", "data": "{}"},
    ]});
    let (status, reply) = server
        .api("POST", "/apps/1/batch_events", &[], Some(&mixed))
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().starts_with("batch[1]"),
        "{reply}"
    );
    client.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn trigger_reports_requested_channel_info() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("counted").await;
    let body = json!({"name": "e", "channels": ["counted", "empty"], "data": "{}", "info": "subscription_count"});
    let (status, reply) = server.api("POST", "/apps/1/events", &[], Some(&body)).await;
    assert_eq!(status, 200);
    // Pusher's answer, plus payrelay's `event_ids` (one per channel).
    let mut reply = reply;
    let ids = reply.as_object_mut().unwrap().remove("event_ids").unwrap();
    assert_eq!(ids.as_object().unwrap().len(), 2);
    assert_eq!(
        reply,
        json!({"channels": {"counted": {"subscription_count": 1}, "empty": {"subscription_count": 0}}})
    );
    let batch = json!({"batch": [
        {"name": "e", "channel": "counted", "data": "{}", "info": "subscription_count"},
        {"name": "e", "channel": "empty", "data": "{}"},
    ]});
    let (status, reply) = server
        .api("POST", "/apps/1/batch_events", &[], Some(&batch))
        .await;
    assert_eq!(status, 200);
    let mut reply = reply;
    let ids = reply.as_object_mut().unwrap().remove("event_ids").unwrap();
    assert_eq!(ids.as_array().unwrap().len(), 2);
    assert_eq!(reply, json!({"batch": [{"subscription_count": 1}, {}]}));
}

#[tokio::test]
async fn channel_queries() {
    let server = TestServer::start().await;
    let (mut a, socket_id) = server.connect_established().await;
    a.subscribed("public-1").await;
    let cd = r#"{"user_id":"7"}"#;
    a.subscribe_with(
        "presence-lobby",
        &presence_auth(&socket_id, "presence-lobby", cd),
        Some(cd),
    )
    .await;
    a.event("pusher_internal:subscription_succeeded").await;

    let (status, all) = server.api("GET", "/apps/1/channels", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        all,
        json!({"channels": {"presence-lobby": {}, "public-1": {}}})
    );

    let (status, presence) = server
        .api(
            "GET",
            "/apps/1/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        presence,
        json!({"channels": {"presence-lobby": {"user_count": 1}}})
    );

    let (status, reply) = server
        .api("GET", "/apps/1/channels", &[("info", "user_count")], None)
        .await;
    assert_eq!(status, 400, "user_count needs a presence- prefix: {reply}");

    let (status, info) = server
        .api(
            "GET",
            "/apps/1/channels/presence-lobby",
            &[("info", "user_count,subscription_count")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({"occupied": true, "user_count": 1, "subscription_count": 1})
    );

    let (status, info) = server
        .api("GET", "/apps/1/channels/nobody-here", &[], None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(info, json!({"occupied": false}));

    let (status, _) = server
        .api(
            "GET",
            "/apps/1/channels/public-1",
            &[("info", "user_count")],
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .api("GET", "/apps/1/channels/public-1/users", &[], None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn apps_never_see_each_others_channels() {
    let server = TestServer::with_config(
        r#"
        bind = "127.0.0.1:0"
        [[apps]]
        id = "1"
        key = "app-key"
        secret = "app-secret"
        [[apps]]
        id = "2"
        key = "key-two"
        secret = "secret-two"
        "#,
    )
    .await;
    let mut other = Client::connect(&server.ws_url("/app/key-two?protocol=7")).await;
    other.established().await;
    other.subscribed("shared-name").await;
    let (mut mine, _) = server.connect_established().await;
    mine.subscribed("shared-name").await;
    server.trigger("shared-name", "e", "{}").await;
    mine.event("e").await;
    other.silent_for(Duration::from_millis(300)).await;
    // App 1's key cannot sign requests for app 2.
    let (status, _) = server.api("GET", "/apps/2/channels", &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let mut server = TestServer::start().await;
    // The documented series, by value: what this test does moves each by a known amount.
    // nextest runs each test in its own process, so the amounts are exact; a plain
    // `cargo test` shares one metrics registry between the tests of this file, so there
    // they are lower bounds.
    let exact = std::env::var_os("NEXTEST").is_some();
    let series = [
        ("payrelay_connections{protocol=\"pusher\"}", 1.0),
        ("payrelay_subscriptions", 1.0),
        // pusher:subscribe and one pusher:ping
        ("payrelay_messages_in_total{protocol=\"pusher\"}", 2.0),
        ("payrelay_messages_out_total", 1.0),
        ("payrelay_publications_total", 1.0),
        ("payrelay_publish_latency_seconds_count", 1.0),
    ];
    let mut before = Vec::new();
    for (name, _) in series {
        before.push(server.metric(name).await);
    }
    let (mut client, _) = server.connect_established().await;
    client.subscribed("m").await;
    server.trigger("m", "e", "{}").await;
    client.event("e").await;
    client
        .send_json(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.event("pusher:pong").await;
    for ((name, moved), before) in series.iter().zip(before) {
        let now = server.metric(name).await;
        if exact {
            assert_eq!(now - before, *moved, "{name}: {before} -> {now}");
        } else {
            assert!(now - before >= *moved, "{name}: {before} -> {now}");
        }
    }

    let (status, health) = server.raw_request("GET", "/healthz", vec![]).await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let (status, ready) = server.raw_request("GET", "/readyz", vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "ready");

    let text = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "payrelay_connections{protocol=\"pusher\"}",
        "payrelay_subscriptions",
        "payrelay_messages_in_total{protocol=\"pusher\"}",
        "payrelay_messages_out_total",
        "payrelay_publish_latency_seconds_bucket",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(!text.contains(SECRET));

    let (status, _) = server.raw_request("GET", "/no/such/route", vec![]).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn channel_events_returns_history_after_a_position() {
    let server = TestServer::start().await;
    let path = "/apps/1/channels/orders/events";
    // Nothing published yet: no events, the stream's start.
    let (status, empty) = server.api("GET", path, &[], None).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["events"], json!([]));
    let start = empty["position"].as_str().unwrap().to_string();
    assert!(start.starts_with("0."), "{empty}");
    for n in 1..=3 {
        server
            .trigger("orders", "paid", &format!("{{\"n\":{n}}}"))
            .await;
    }
    let (status, all) = server.api("GET", path, &[], None).await;
    assert_eq!(status, 200);
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["data"], r#"{"n":1}"#);
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));
    let first = events[0]["position"].as_str().unwrap().to_string();
    assert_eq!(all["position"], events[2]["position"]);

    let (_, after) = server
        .api("GET", path, &[("after", &first), ("limit", "1")], None)
        .await;
    let events = after["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"], r#"{"n":2}"#);

    // Another epoch: 410. Junk: 400. Unsigned: 401.
    let (status, _) = server
        .api("GET", path, &[("after", "1.otherEpoch")], None)
        .await;
    assert_eq!(status, 410);
    for params in [[("after", "x")], [("limit", "0")], [("limit", "101")]] {
        let (status, reply) = server.api("GET", path, &params, None).await;
        assert_eq!(status, 400, "{params:?}: {reply}");
    }
    let (status, _) = server
        .api_signed("GET", path, &[], None, "wrong-secret")
        .await;
    assert_eq!(status, 401);
}

/// serde reads a struct from a JSON array of its fields in order; no Pusher library
/// sends that, and an event published from `["trade", {…}, ["ch"]]` is not what a
/// backend meant (found for the other routes by fuzz/publish_bodies).
#[tokio::test]
async fn event_bodies_must_be_json_objects() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("feed").await;
    for (path, body) in [
        ("/apps/1/events", json!(["trade", {"n": 1}, ["feed"]])),
        (
            "/apps/1/batch_events",
            json!([[{"name": "trade", "data": "1", "channel": "feed"}]]),
        ),
    ] {
        let (status, answer) = server.api("POST", path, &[], Some(&body)).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer.to_string().contains("not a JSON object"),
            "{path}: {answer}"
        );
    }
    // The object forms still publish, and nothing was published before them.
    let (status, _) = server
        .api(
            "POST",
            "/apps/1/events",
            &[],
            Some(&json!({"name": "trade", "data": "2", "channel": "feed"})),
        )
        .await;
    assert_eq!(status, 200);
    let event = client.event("trade").await;
    assert_eq!(event["data"], "2", "{event}");
}
