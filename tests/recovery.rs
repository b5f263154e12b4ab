//! Nothing missed, nothing twice (issue 16): idempotent publishing on every publishing
//! route, on one node and across nodes sharing Redis. (Recovery after a reconnect is
//! tested per protocol: tests/plain_protocol.rs, tests/pusher_protocol.rs and, with
//! real clients, tests/peers/*_recovery.mjs on one node (tests/real_peers.rs) and across
//! two nodes on Redis (tests/cluster.rs).)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// POSTs `body` to `path` with the app credentials and an `Idempotency-Key` header.
async fn post_with_key(
    server: &TestServer,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, bool, Value) {
    let response = http()
        .post(server.url(path))
        .basic_auth(KEY, Some(SECRET))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// How many `name` events `client` receives within a short while.
async fn count(client: &mut Client, name: &str) -> usize {
    let mut n = 0;
    while let Some(frame) = client.next_within(Duration::from_millis(400)).await {
        if let Received::Json(frame) = frame
            && frame["event"] == name
        {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn the_same_publish_three_times_is_delivered_once_and_answers_the_same_id() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("orders").await;

    // Pusher `events` with a per-event `idempotency_key`, three times at once.
    let body =
        json!({"name": "paid", "channel": "orders", "data": "{}", "idempotency_key": "order-1"});
    let sends = (0..3).map(|_| server.api("POST", "/apps/1/events", &[], Some(&body)));
    let replies = futures_util::future::join_all(sends).await;
    let ids: Vec<&Value> = replies
        .iter()
        .map(|(_, r)| &r["event_ids"]["orders"])
        .collect();
    assert!(
        replies.iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    assert!(ids[0].as_str().unwrap().starts_with("evt_"));
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count(&mut client, "paid").await, 1);

    // The `Idempotency-Key` header on the plain API, three times at once.
    let body = json!({"channel": "settings", "event": "fee", "data": {"rate": 1}});
    let (mut plain, socket_id) = server.connect_established().await;
    let channel = "private-all.settings";
    plain
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    plain.event("pusher_internal:subscription_succeeded").await;
    let sends = (0..3).map(|_| post_with_key(&server, "/api/v1/events", "fee-1", &body));
    let replies = futures_util::future::join_all(sends).await;
    let first: Vec<&Value> = replies.iter().map(|(_, _, r)| &r["data"]["id"]).collect();
    assert!(
        first.iter().all(|id| *id == first[0] && id.is_string()),
        "{replies:?}"
    );
    assert_eq!(
        replies.iter().filter(|(_, replayed, _)| *replayed).count(),
        2
    );
    assert_eq!(count(&mut plain, "fee").await, 1);

    // The same key with another body is refused; another key publishes again.
    let other = json!({"channel": "settings", "event": "fee", "data": {"rate": 2}});
    let (status, _, _) = post_with_key(&server, "/api/v1/events", "fee-1", &other).await;
    assert_eq!(status, 422);
    let (status, replayed, _) = post_with_key(&server, "/api/v1/events", "fee-2", &body).await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(count(&mut plain, "fee").await, 1);
}

#[tokio::test]
async fn batch_items_with_a_key_are_published_once_the_others_every_time() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("orders").await;
    let body = json!({"batch": [
        {"name": "keyed", "channel": "orders", "data": "{}", "idempotency_key": "item-1"},
        {"name": "plain", "channel": "orders", "data": "{}"},
    ]});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, reply) = server
            .api("POST", "/apps/1/batch_events", &[], Some(&body))
            .await;
        assert_eq!(status, 200, "{reply}");
        ids.push(reply["event_ids"].clone());
    }
    assert_eq!(ids[0][0], ids[1][0], "the keyed item answers its first id");
    assert_ne!(ids[0][1], ids[1][1], "the other item was published twice");
    let mut seen = Vec::new();
    while let Some(Received::Json(frame)) = client.next_within(Duration::from_millis(400)).await {
        seen.push(frame["event"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen, ["keyed", "plain", "plain"]);

    // A key that is not visible ASCII: 400, nothing published.
    let bad = json!({"name": "x", "channel": "orders", "data": "{}", "idempotency_key": "a b"});
    let (status, _) = server.api("POST", "/apps/1/events", &[], Some(&bad)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_retry_sent_to_another_node_is_recognised_through_redis() {
    let redis = TestRedis::get().await;
    let prefix = format!("test:{:016x}:", rand_u64());
    let node = |n: usize| {
        let settings = format!(
            "redis_url = \"{}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"idem-{n}\"",
            redis.url()
        );
        async move { TestServer::with_settings(&settings, "").await }
    };
    let (a, b) = (node(0).await, node(1).await);
    let (mut client, socket_id) = a.connect_established().await;
    let channel = "private-merchant.m1";
    client
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    client.event("pusher_internal:subscription_succeeded").await;
    let body = json!({"merchant_id": "m1", "kind": "merchant", "event": "paid", "data": {"n": 1}});
    let sends = [&a, &b, &a, &b]
        .into_iter()
        .map(|node| post_with_key(node, "/v1/events", "pay-7", &body));
    let replies = futures_util::future::join_all(sends).await;
    assert!(
        replies.iter().all(|(status, _, _)| *status == 200),
        "{replies:?}"
    );
    let ids: Vec<&Value> = replies.iter().map(|(_, _, r)| &r["id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.is_string()),
        "{ids:?}"
    );
    assert_eq!(
        replies.iter().filter(|(_, replayed, _)| *replayed).count(),
        3
    );
    assert_eq!(count(&mut client, "paid").await, 1);
}

/// The publishing routes issue 16 names.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// Pusher `POST /apps/{id}/events` (signed).
    PusherEvents,
    /// Pusher `POST /apps/{id}/batch_events` (signed), a batch of one.
    PusherBatch,
    /// Seed 002's `POST /api/v1/events` (Basic).
    PlainEvents,
    /// Seed 000's `POST /v1/events` (Basic).
    MerchantEvents,
}

const ROUTES: [Route; 4] = [
    Route::PusherEvents,
    Route::PusherBatch,
    Route::PlainEvents,
    Route::MerchantEvents,
];

/// Where the key travels: the `Idempotency-Key` header, or `idempotency_key` in the event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyIn {
    Header,
    Field,
}

/// One publish of `event` through `route` with `key`: (status, `Idempotent-Replayed`,
/// the event id the answer gives).
async fn publish_keyed(
    node: &TestServer,
    route: Route,
    key_in: KeyIn,
    key: &str,
    event: &str,
) -> (u16, bool, Value) {
    let field = (key_in == KeyIn::Field).then_some(key);
    let pusher_event =
        json!({"name": event, "channel": "orders", "data": "{\"n\":1}", "idempotency_key": field});
    let (path, body) = match route {
        Route::PusherEvents => ("/apps/1/events", pusher_event),
        Route::PusherBatch => ("/apps/1/batch_events", json!({"batch": [pusher_event]})),
        Route::PlainEvents => (
            "/api/v1/events",
            json!({"channel": "settings", "event": event, "data": {"n": 1}, "idempotency_key": field}),
        ),
        Route::MerchantEvents => (
            "/v1/events",
            json!({"merchant_id": "m1", "kind": "merchant", "event": event, "data": {"n": 1}, "idempotency_key": field}),
        ),
    };
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut request = match route {
        Route::PusherEvents | Route::PusherBatch => {
            let query = payrelay::protocols::pusher::request_auth::sign_query(
                KEY,
                SECRET,
                "POST",
                path,
                &[],
                &bytes,
                now(),
            );
            http().post(node.url(&format!("{path}?{query}")))
        }
        Route::PlainEvents | Route::MerchantEvents => {
            http().post(node.url(path)).basic_auth(KEY, Some(SECRET))
        }
    };
    if key_in == KeyIn::Header {
        request = request.header("idempotency-key", key);
    }
    let response = request
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let id = match route {
        Route::PusherEvents => answer["event_ids"]["orders"].clone(),
        Route::PusherBatch => answer["event_ids"][0].clone(),
        Route::PlainEvents => answer["data"]["id"].clone(),
        Route::MerchantEvents => answer["id"].clone(),
    };
    (status, replayed, id)
}

/// A socket on `node` subscribed to every channel the routes above publish on.
async fn listener(node: &TestServer) -> Client {
    let (mut client, socket_id) = node.connect_established().await;
    client.subscribed("orders").await;
    for channel in ["private-all.settings", "private-merchant.m1"] {
        client
            .subscribe_with(channel, &private_auth(&socket_id, channel), None)
            .await;
        client.event("pusher_internal:subscription_succeeded").await;
    }
    client
}

/// Every route, with the key in the header and in the event, sends the same publish three
/// times in each `way` through `nodes` (one after the other, or all at once; the n-th
/// send goes to `nodes[n % len]`): every answer is a success carrying the same event id,
/// and `client` receives the event once.
async fn three_times_everywhere(nodes: &[&TestServer], client: &mut Client, label: &str) {
    let mut cases = Vec::new();
    for route in ROUTES {
        for key_in in [KeyIn::Header, KeyIn::Field] {
            for concurrent in [false, true] {
                let name = format!("{label}-{route:?}-{key_in:?}-{concurrent}");
                let sends = (0..3)
                    .map(|n| publish_keyed(nodes[n % nodes.len()], route, key_in, &name, &name));
                let replies = if concurrent {
                    futures_util::future::join_all(sends).await
                } else {
                    let mut replies = Vec::new();
                    for send in sends {
                        replies.push(send.await);
                    }
                    replies
                };
                assert!(
                    replies.iter().all(|(status, _, id)| *status == 200
                        && id.as_str().is_some_and(|id| id.starts_with("evt_"))),
                    "{name}: {replies:?}"
                );
                assert!(
                    replies.iter().all(|(_, _, id)| *id == replies[0].2),
                    "{name}: one id for the three: {replies:?}"
                );
                if key_in == KeyIn::Header {
                    // A replayed request says so; a key inside an event replays that
                    // event's id in an answer of its own.
                    assert_eq!(
                        replies.iter().filter(|(_, replayed, _)| *replayed).count(),
                        2,
                        "{name}: {replies:?}"
                    );
                }
                cases.push(name);
            }
        }
    }
    let mut delivered = std::collections::HashMap::<String, usize>::new();
    while let Some(frame) = client.next_within(Duration::from_millis(500)).await {
        if let Received::Json(frame) = frame
            && let Some(name) = frame["event"].as_str()
            && name.starts_with(label)
        {
            *delivered.entry(name.to_string()).or_default() += 1;
        }
    }
    for name in &cases {
        assert_eq!(
            delivered.get(name),
            Some(&1),
            "{name} delivered once: {delivered:?}"
        );
    }
    assert_eq!(delivered.len(), cases.len(), "{delivered:?}");
}

/// Issue 16's idempotency check on one node (the in-memory store): every publishing
/// route, key in the header or in the event, three times in a row and three times at once.
#[tokio::test]
async fn every_route_publishes_a_repeated_publish_once_on_one_node() {
    let server = TestServer::start().await;
    let mut client = listener(&server).await;
    three_times_everywhere(&[&server], &mut client, "one").await;
}

/// The same across two nodes sharing Redis: the three sends alternate between the nodes,
/// in a row and at once, and the event is delivered once, on a socket of either node.
#[tokio::test]
async fn every_route_publishes_a_repeated_publish_once_across_nodes() {
    let redis = TestRedis::get().await;
    let prefix = format!("test:{:016x}:", rand_u64());
    let node = |n: usize| {
        let settings = format!(
            "redis_url = \"{}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"idem-{n}\"",
            redis.url()
        );
        async move { TestServer::with_settings(&settings, "").await }
    };
    let (a, b) = (node(0).await, node(1).await);
    let mut on_a = listener(&a).await;
    let mut on_b = listener(&b).await;
    three_times_everywhere(&[&a, &b], &mut on_a, "two").await;
    // Node B's socket got each once too (nothing delivered twice by the other node).
    let mut seen = std::collections::HashMap::<String, usize>::new();
    while let Some(frame) = on_b.next_within(Duration::from_millis(500)).await {
        if let Received::Json(frame) = frame
            && let Some(name) = frame["event"].as_str()
            && name.starts_with("two")
        {
            *seen.entry(name.to_string()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 16, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

/// A plain-protocol access token for `user` (Basic credentials).
async fn plain_token(server: &TestServer, user: &str) -> String {
    let (status, body) = server
        .basic_request(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"user_id": user, "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["token"].as_str().unwrap().to_string()
}

/// Issue 16's "one event, one id": the id a publishing route answers is the id on the
/// Pusher frame and the plain frame, the callback's `webhook-id`, the delivery log's, the
/// history route's, and a cache channel's replayed last event's.
#[tokio::test]
async fn one_event_has_one_id_on_every_wire_in_the_callback_and_the_logs() {
    let server = TestServer::with_config(
        "bind = \"127.0.0.1:0\"\n[webhooks]\nallow_private_targets = true\npoll_interval_ms = 50\n\
         [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n",
    )
    .await;
    let receiver = common::receiver::Receiver::start().await;
    let (status, endpoint) = server
        .basic_request(
            "POST",
            "/v1/webhooks/endpoints",
            Some(&json!({"url": receiver.url("/hooks"), "merchant_id": "m1"})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_string();

    // /v1/events: the Pusher frame, the callback, the delivery log, the history route.
    let (mut pusher, socket_id) = server.connect_established().await;
    let channel = "private-payments.m1";
    pusher
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    pusher.event("pusher_internal:subscription_succeeded").await;
    let (status, reply) = server
        .basic_request(
            "POST",
            "/v1/events",
            Some(&json!({"merchant_id": "m1", "kind": "payments", "event": "paid", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("evt_"), "{id}");
    let frame = pusher.event("paid").await;
    assert_eq!(frame["id"], id.as_str(), "{frame}");
    let position = frame["position"].as_str().unwrap().to_string();
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), id);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, log) = server
            .basic_request(
                "GET",
                &format!("/v1/webhooks/endpoints/{endpoint}/messages"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        if log["messages"][0]["status"] == "delivered" {
            assert_eq!(log["messages"][0]["id"], id.as_str(), "{log}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, history) = server
        .api(
            "GET",
            &format!("/apps/1/channels/{channel}/events"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["events"][0]["id"], id.as_str(), "{history}");
    assert_eq!(
        history["events"][0]["position"],
        position.as_str(),
        "{history}"
    );

    // /api/v1/events: the plain protocol's frame.
    let token = plain_token(&server, "u1").await;
    let mut plain = Client::connect(&server.ws_url(&format!("/api/v1/ws?token={token}"))).await;
    assert_eq!(plain.json_bare().await["event"], "subscribed");
    let (status, reply) = server
        .basic_request(
            "POST",
            "/api/v1/events",
            Some(&json!({"channel": "settings", "event": "fee", "data": {"rate": 1}})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["data"]["id"].as_str().unwrap();
    let frame = plain.json().await;
    assert_eq!(
        (frame["event"].as_str(), frame["id"].as_str()),
        (Some("fee"), Some(id)),
        "{frame}"
    );
    assert!(frame["position"].is_string(), "{frame}");

    // A cache channel: the live frame, a later subscriber's replayed last event and
    // `info=cache` carry the trigger's id.
    let (mut live, _) = server.connect_established().await;
    live.subscribed("cache-rates").await;
    let (status, reply) = server
        .api(
            "POST",
            "/apps/1/events",
            &[],
            Some(&json!({"name": "rate", "channel": "cache-rates", "data": "{\"usd\":2}"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["event_ids"]["cache-rates"].as_str().unwrap();
    let frame = live.event("rate").await;
    assert_eq!(frame["id"], id, "{frame}");
    let (mut late, _) = server.connect_established().await;
    late.subscribed("cache-rates").await;
    let replayed = late.event("rate").await;
    assert_eq!(
        (&replayed["id"], &replayed["position"]),
        (&frame["id"], &frame["position"]),
        "{replayed}"
    );
    let (status, info) = server
        .api(
            "GET",
            "/apps/1/channels/cache-rates",
            &[("info", "cache")],
            None,
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["cache"]["id"], id, "{info}");
}
