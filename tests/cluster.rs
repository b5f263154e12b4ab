//! Several nodes that behave as one (issue 15): three nodes on one machine, one Redis.
//!
//! Each test is a cluster of its own: its nodes share a Redis key prefix no other test
//! uses (on the shared Redis), or a private `redis-server` it stops and starts itself.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A cluster of nodes sharing one Redis and one prefix.
struct Cluster {
    nodes: Vec<TestServer>,
    prefix: String,
}

impl Cluster {
    async fn start(redis_url: &str, nodes: usize, node_settings: &str) -> Cluster {
        let prefix = format!("test:{:016x}:", rand_u64());
        let mut started = Vec::new();
        for n in 0..nodes {
            started.push(
                TestServer::with_settings(
                    &format!(
                        "redis_url = \"{redis_url}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"node-{n}\"\n{node_settings}"
                    ),
                    "enable_client_messages = true",
                )
                .await,
            );
        }
        Cluster {
            nodes: started,
            prefix,
        }
    }

    fn node(&self, n: usize) -> &TestServer {
        &self.nodes[n]
    }
}

/// Subscribes and waits for success (public channels).
async fn subscribed_client(node: &TestServer, channel: &str) -> Client {
    let (mut client, _) = node.connect_established().await;
    client.subscribed(channel).await;
    client
}

/// The data of the next `n` events named `name`, in arrival order.
async fn events(client: &mut Client, name: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = client.event(name).await;
        seen.push(frame["data"].as_str().unwrap_or_default().to_string());
    }
    seen
}

async fn readyz(node: &TestServer) -> (u16, Value) {
    node.raw_request("GET", "/readyz", Vec::new()).await
}

/// Polls `/readyz` until it answers `status`, or panics after `within`.
async fn readyz_becomes(node: &TestServer, status: u16, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (now, body) = readyz(node).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {now} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn numsub(redis: &TestRedis, channel: &str) -> i64 {
    let mut connection = redis.connection().await;
    let reply: Vec<(String, i64)> = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut connection)
        .await
        .unwrap();
    reply[0].1
}

/// Polls until `channel` has `expected` Redis subscribers.
async fn numsub_becomes(redis: &TestRedis, channel: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = numsub(redis, channel).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} has {now} subscribers, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_publication_on_any_node_reaches_every_node_once_in_order() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    let mut clients = Vec::new();
    for n in 0..3 {
        clients.push(subscribed_client(cluster.node(n), "orders").await);
    }
    // Published one after the other, through every node in turn.
    let total = 60;
    for i in 0..total {
        cluster
            .node(i % 3)
            .trigger("orders", "order", &i.to_string())
            .await;
    }
    let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    for client in &mut clients {
        assert_eq!(events(client, "order", total).await, expected);
        client.silent_for(Duration::from_millis(300)).await;
    }

    // Published at once through all three: every node sees the same order.
    let mut publishers = Vec::new();
    for n in 0..3 {
        let url = cluster.node(n).url("");
        publishers.push(tokio::spawn(async move {
            for i in 0..40 {
                let body = json!({"name": "race", "channel": "orders", "data": format!("{n}-{i}")});
                let query = payrelay::protocols::pusher::request_auth::sign_query(
                    KEY,
                    SECRET,
                    "POST",
                    "/apps/1/events",
                    &[],
                    body.to_string().as_bytes(),
                    now(),
                );
                let response = http()
                    .post(format!("{url}/apps/1/events?{query}"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let first = events(&mut clients[0], "race", 120).await;
    for client in &mut clients[1..] {
        assert_eq!(events(client, "race", 120).await, first);
    }
    for n in 0..3 {
        // Each publisher's own events stay in the order it sent them.
        let own: Vec<&String> = first
            .iter()
            .filter(|d| d.starts_with(&format!("{n}-")))
            .collect();
        let sent: Vec<String> = (0..40).map(|i| format!("{n}-{i}")).collect();
        assert_eq!(own, sent.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn client_events_and_exclusion_cross_nodes() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 2, "").await;
    let channel = "private-chat";
    let (mut a, a_id) = cluster.node(0).connect_established().await;
    a.subscribe_with(channel, &private_auth(&a_id, channel), None)
        .await;
    a.event("pusher_internal:subscription_succeeded").await;
    let (mut b, b_id) = cluster.node(1).connect_established().await;
    b.subscribe_with(channel, &private_auth(&b_id, channel), None)
        .await;
    b.event("pusher_internal:subscription_succeeded").await;

    // A client event on node A reaches B on node B, never its sender.
    a.send_json(json!({"event": "client-typing", "channel": channel, "data": {"who": "a"}}))
        .await;
    let typed = b.event("client-typing").await;
    assert_eq!(typed["data"], r#"{"who":"a"}"#);
    a.silent_for(Duration::from_millis(300)).await;

    // A trigger through node B excluding B's socket reaches only A.
    let body = json!({"name": "e", "channel": channel, "data": "x", "socket_id": b_id});
    let (status, _) = cluster
        .node(1)
        .api("POST", "/apps/1/events", &[], Some(&body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.event("e").await["data"], "x");
    b.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn nodes_listen_only_to_channels_they_have_subscribers_on() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    let control = format!("{}control", cluster.prefix);
    numsub_becomes(&redis, &control, 3).await;
    let redis_channel = format!("{}1:ch:only-on-a", cluster.prefix);
    assert_eq!(numsub(&redis, &redis_channel).await, 0);

    let mut first = subscribed_client(cluster.node(0), "only-on-a").await;
    // Listening is confirmed before the client hears "subscribed".
    assert_eq!(numsub(&redis, &redis_channel).await, 1);
    let mut second = subscribed_client(cluster.node(0), "only-on-a").await;
    assert_eq!(numsub(&redis, &redis_channel).await, 1, "one per node");
    cluster.node(2).trigger("only-on-a", "e", "1").await;
    assert_eq!(first.event("e").await["data"], "1");
    assert_eq!(second.event("e").await["data"], "1");

    first
        .send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": "only-on-a"}}))
        .await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        numsub(&redis, &redis_channel).await,
        1,
        "one subscriber left"
    );
    drop(second);
    numsub_becomes(&redis, &redis_channel, 0).await;
}

#[tokio::test]
async fn cache_channels_replay_the_clusters_last_event() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 2, "").await;
    // Nobody listens anywhere when it is published on node A.
    cluster.node(0).trigger("cache-rates", "rate", "1").await;
    cluster.node(0).trigger("cache-rates", "rate", "2").await;
    let (mut late, _) = cluster.node(1).connect_established().await;
    late.subscribe("cache-rates").await;
    late.event("pusher_internal:subscription_succeeded").await;
    let replay = late.json().await;
    assert_eq!(
        (replay["event"].as_str(), replay["data"].as_str()),
        (Some("rate"), Some("2"))
    );

    let (mut empty, _) = cluster.node(1).connect_established().await;
    empty.subscribe("cache-empty").await;
    empty.event("pusher_internal:subscription_succeeded").await;
    assert_eq!(empty.json().await["event"], "pusher:cache_miss");
}

#[tokio::test]
async fn terminate_connections_closes_a_users_sockets_on_every_node() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    let user_data = r#"{"id":"u1"}"#;
    let mut clients = Vec::new();
    for n in [1, 2] {
        let (mut client, socket_id) = cluster.node(n).connect_established().await;
        let auth = signin_auth(&socket_id, user_data);
        client
            .send_json(
                json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
            )
            .await;
        client.event("pusher:signin_success").await;
        clients.push(client);
    }
    let mut bystander = subscribed_client(cluster.node(2), "lobby").await;
    let (status, _) = cluster
        .node(0)
        .api(
            "POST",
            "/apps/1/users/u1/terminate_connections",
            &[],
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    for client in &mut clients {
        assert_eq!(client.closed().await.0, 4009);
    }
    bystander.silent_for(Duration::from_millis(300)).await;
}

/// Redis goes away and comes back: `/readyz` says why meanwhile, publishes are refused
/// (never accepted and lost), sockets stay open, and the nodes listen again by
/// themselves.
#[tokio::test]
async fn a_redis_outage_refuses_publishes_keeps_sockets_and_heals_by_itself() {
    let mut redis = PrivateRedis::start().await;
    let cluster = Cluster::start(&redis.url(), 2, "").await;
    let mut on_a = subscribed_client(cluster.node(0), "feed").await;
    let mut on_b = subscribed_client(cluster.node(1), "feed").await;
    let (status, body) = readyz(cluster.node(0)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node_id"], "node-0");
    assert_eq!(body["broker"]["name"], "redis");
    assert_eq!(body["broker"]["ready"], true);

    redis.stop().await;
    for node in &cluster.nodes {
        let body = readyz_becomes(node, 503, Duration::from_secs(5)).await;
        assert_eq!(body["status"], "broker_unavailable", "{body}");
        assert_eq!(body["broker"]["ready"], false, "{body}");
        assert!(body["broker"]["error"].is_string(), "{body}");
    }
    let started = std::time::Instant::now();
    let body = json!({"name": "lost?", "channel": "feed", "data": "x"});
    let (status, reply) = cluster
        .node(0)
        .api("POST", "/apps/1/events", &[], Some(&body))
        .await;
    assert_eq!(status, 503, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (status, _) = cluster
        .node(0)
        .api(
            "POST",
            "/apps/1/users/u1/terminate_connections",
            &[],
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 503);
    // The sockets stay: nothing arrives, nothing closes.
    on_a.silent_for(Duration::from_millis(500)).await;
    on_b.silent_for(Duration::from_millis(100)).await;

    redis.restart().await;
    for node in &cluster.nodes {
        let body = readyz_becomes(node, 200, Duration::from_secs(10)).await;
        assert_eq!(body["broker"]["ready"], true, "{body}");
    }
    cluster.node(0).trigger("feed", "back", "1").await;
    cluster.node(1).trigger("feed", "back", "2").await;
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(events(client, "back", 2).await, ["1", "2"]);
    }
    let reconnects = cluster
        .node(0)
        .metric("payrelay_broker_reconnects_total")
        .await;
    assert!(reconnects >= 1.0, "{reconnects}");
}

#[tokio::test]
async fn a_node_refuses_to_start_without_redis_and_says_where() {
    let config = payrelay::config::Config::parse(&format!(
        "bind = \"127.0.0.1:0\"\ndatabase_url = \"sqlite::memory:\"\nredis_url = \"redis://user:hunter2pw@127.0.0.1:1/\"\nredis_prefix = \"test:{:x}:\"\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-1\"\n",
        rand_u64()
    ))
    .unwrap();
    let error = match payrelay::server::Server::bind(config).await {
        Ok(_) => panic!("a node started without Redis"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(!error.contains("hunter2pw"), "{error}");
}
