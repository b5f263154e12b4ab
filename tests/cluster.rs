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
        Self::with_app(redis_url, nodes, node_settings, "").await
    }

    async fn with_app(
        redis_url: &str,
        nodes: usize,
        node_settings: &str,
        app_settings: &str,
    ) -> Cluster {
        let prefix = format!("test:{:016x}:", rand_u64());
        let mut started = Vec::new();
        for n in 0..nodes {
            started.push(
                TestServer::with_settings(
                    &format!(
                        "redis_url = \"{redis_url}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"node-{n}\"\n{node_settings}"
                    ),
                    &format!("enable_client_messages = true\n{app_settings}"),
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

/// Joins presence channel `channel` as `user` on `node`; returns the client, its socket
/// id and the member list it was given (`presence.hash` keys, sorted).
async fn join_presence(node: &TestServer, channel: &str, user: &str) -> (Client, Vec<String>) {
    let (mut client, socket_id) = node.connect_established().await;
    let data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
    client
        .subscribe_with(
            channel,
            &presence_auth(&socket_id, channel, &data),
            Some(&data),
        )
        .await;
    let ok = client.event("pusher_internal:subscription_succeeded").await;
    let presence: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
    let mut ids: Vec<String> = presence["presence"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(presence["presence"]["count"], ids.len());
    for id in &ids {
        assert_eq!(
            presence["presence"]["hash"][id]["name"],
            id.as_str(),
            "{presence}"
        );
    }
    (client, ids)
}

async fn users(node: &TestServer, channel: &str) -> Vec<String> {
    let (status, body) = node
        .api(
            "GET",
            &format!("/apps/1/channels/{channel}/users"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

async fn channel_info(node: &TestServer, channel: &str, info: &str) -> Value {
    let (status, body) = node
        .api(
            "GET",
            &format!("/apps/1/channels/{channel}"),
            &[("info", info)],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `check` until it holds, or panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn presence_is_one_member_list_across_nodes() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    let channel = "presence-room";
    let (mut alice, ids) = join_presence(cluster.node(0), channel, "alice").await;
    assert_eq!(ids, ["alice"]);
    let (bob_c, ids) = join_presence(cluster.node(2), channel, "bob").await;
    assert_eq!(ids, ["alice", "bob"], "bob on C sees alice on A");
    let added = alice.event("pusher_internal:member_added").await;
    let added: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        added,
        json!({"user_id": "bob", "user_info": {"name": "bob"}})
    );

    // Bob's second socket, on B: the same member, announced to nobody.
    let (bob_b, ids) = join_presence(cluster.node(1), channel, "bob").await;
    assert_eq!(ids, ["alice", "bob"]);
    for node in 0..3 {
        assert_eq!(users(cluster.node(node), channel).await, ["alice", "bob"]);
        let info = channel_info(cluster.node(node), channel, "user_count,subscription_count").await;
        assert_eq!(info["occupied"], true);
        assert_eq!(info["user_count"], 2, "{info}");
        assert_eq!(info["subscription_count"], 3, "{info}");
    }
    let (status, listed) = cluster
        .node(1)
        .api(
            "GET",
            "/apps/1/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["channels"][channel]["user_count"], 2, "{listed}");

    // One of bob's sockets leaves: he is still a member.
    drop(bob_c);
    alice.silent_for(Duration::from_millis(500)).await;
    assert_eq!(users(cluster.node(0), channel).await, ["alice", "bob"]);
    // The last one leaves: member_removed, once, on every node.
    drop(bob_b);
    let removed = alice.event("pusher_internal:member_removed").await;
    let removed: Value = serde_json::from_str(removed["data"].as_str().unwrap()).unwrap();
    assert_eq!(removed, json!({"user_id": "bob"}));
    alice.silent_for(Duration::from_millis(300)).await;
    assert_eq!(users(cluster.node(2), channel).await, ["alice"]);
    eventually(WAIT, "subscription_count back to 1", || async {
        channel_info(cluster.node(1), channel, "subscription_count").await["subscription_count"]
            == 1
    })
    .await;
    drop(alice);
    eventually(WAIT, "the channel vacated", || async {
        channel_info(cluster.node(1), channel, "").await["occupied"] == false
    })
    .await;
}

/// A node killed with `kill -9` leaves no ghost: within `node_dead_after_secs` (3 here)
/// and a sweep, the others announce its members' departure and forget its subscribers.
#[tokio::test]
async fn a_killed_node_leaves_no_ghost_members_or_subscriptions() {
    let redis = TestRedis::get().await;
    let settings = "node_dead_after_secs = 3";
    let cluster = Cluster::start(redis.url(), 1, settings).await;
    let channel = "presence-room";
    let (mut alice, _) = join_presence(cluster.node(0), channel, "alice").await;
    let doomed = common::process::NodeProcess::start(
        None,
        &format!(
            "redis_url = \"{}\"\nredis_prefix = \"{}\"\nnode_id = \"doomed\"\n{settings}",
            redis.url(),
            cluster.prefix
        ),
    );
    let doomed_ws = format!(
        "ws://{}/app/{KEY}?protocol=7&client=test&version=1",
        doomed.addr
    );
    let mut carol = Client::connect(&doomed_ws).await;
    let socket_id = carol.established().await;
    let data = json!({"user_id": "carol", "user_info": {"name": "carol"}}).to_string();
    carol
        .subscribe_with(
            channel,
            &presence_auth(&socket_id, channel, &data),
            Some(&data),
        )
        .await;
    carol.event("pusher_internal:subscription_succeeded").await;
    let mut watcher = Client::connect(&doomed_ws).await;
    watcher.established().await;
    watcher.subscribed("orders").await;
    alice.event("pusher_internal:member_added").await;
    assert_eq!(users(cluster.node(0), channel).await, ["alice", "carol"]);
    eventually(WAIT, "orders occupied on the doomed node", || async {
        channel_info(cluster.node(0), "orders", "").await["occupied"] == true
    })
    .await;

    doomed.signal("KILL");
    let killed = std::time::Instant::now();
    let removed = tokio::time::timeout(
        Duration::from_secs(10),
        alice.event("pusher_internal:member_removed"),
    )
    .await
    .expect("member_removed within 10 s");
    let removed: Value = serde_json::from_str(removed["data"].as_str().unwrap()).unwrap();
    assert_eq!(removed["user_id"], "carol");
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "not before the node counts as dead: {took:?}"
    );
    alice.silent_for(Duration::from_millis(500)).await;
    assert_eq!(users(cluster.node(0), channel).await, ["alice"]);
    let info = channel_info(cluster.node(0), "orders", "subscription_count").await;
    assert_eq!(info["occupied"], false, "{info}");
    let info = channel_info(cluster.node(0), channel, "subscription_count").await;
    assert_eq!(info["subscription_count"], 1, "{info}");
}

/// Pusher app webhooks follow the cluster: `channel_vacated` only once no node has a
/// subscriber, `channel_occupied` once for the cluster, members once per user.
#[tokio::test]
async fn occupancy_webhooks_follow_the_cluster_not_one_node() {
    let redis = TestRedis::get().await;
    let receiver = common::receiver::Receiver::start().await;
    let cluster = Cluster::with_app(
        redis.url(),
        2,
        "[webhooks]\nallow_private_targets = true\npoll_interval_ms = 50\npusher_leave_delay_ms = 300",
        &format!(
            "[[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"channel_occupied\", \"channel_vacated\", \"member_added\", \"member_removed\"]\n",
            receiver.url("/pusher")
        ),
    )
    .await;
    let names = |got: &[common::receiver::Received]| -> Vec<String> {
        got.iter()
            .map(|r| {
                let event = &r.json()["events"][0];
                format!(
                    "{} {}{}",
                    event["name"].as_str().unwrap(),
                    event["channel"].as_str().unwrap(),
                    event["user_id"]
                        .as_str()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                )
            })
            .collect()
    };
    let on_a = subscribed_client(cluster.node(0), "news").await;
    let on_b = subscribed_client(cluster.node(1), "news").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(names(&got), ["channel_occupied news"]);
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        names(&receiver.received()),
        ["channel_occupied news"],
        "B still listens"
    );
    drop(on_b);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(names(&got)[1], "channel_vacated news");

    let (alice_a, _) = join_presence(cluster.node(0), "presence-x", "alice").await;
    let (alice_b, _) = join_presence(cluster.node(1), "presence-x", "alice").await;
    let got = receiver.wait_for(4, WAIT).await;
    let mut later = names(&got)[2..].to_vec();
    later.sort();
    assert_eq!(
        later,
        [
            "channel_occupied presence-x",
            "member_added presence-x alice"
        ]
    );
    drop(alice_a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "{:?}",
        names(&receiver.received())
    );
    drop(alice_b);
    let got = receiver.wait_for(6, WAIT).await;
    let mut last = names(&got)[4..].to_vec();
    last.sort();
    assert_eq!(
        last,
        [
            "channel_vacated presence-x",
            "member_removed presence-x alice"
        ]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        6,
        "{:?}",
        names(&receiver.received())
    );
}

/// Redis restarts empty: the nodes write their subscriptions and members again by
/// themselves, and the cluster's answers are whole again.
#[tokio::test]
async fn shared_state_is_rebuilt_after_redis_loses_it() {
    let mut redis = PrivateRedis::start().await;
    let cluster = Cluster::start(&redis.url(), 2, "node_dead_after_secs = 3").await;
    let channel = "presence-room";
    let (mut alice, _) = join_presence(cluster.node(0), channel, "alice").await;
    let (_bob, _) = join_presence(cluster.node(1), channel, "bob").await;
    alice.event("pusher_internal:member_added").await;
    redis.restart().await;
    for node in &cluster.nodes {
        readyz_becomes(node, 200, Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "members written again", || async {
        let (status, body) = cluster
            .node(0)
            .api(
                "GET",
                &format!("/apps/1/channels/{channel}/users"),
                &[],
                None,
            )
            .await;
        status == 200 && body["users"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let info = channel_info(cluster.node(1), channel, "subscription_count,user_count").await;
    assert_eq!(
        (
            info["subscription_count"].as_u64(),
            info["user_count"].as_u64()
        ),
        (Some(2), Some(2)),
        "{info}"
    );
}

/// A plain-protocol access token minted through `node` (Redis holds it: every node
/// verifies it).
async fn mint_plain(node: &TestServer, user: &str) -> String {
    let (status, body) = node
        .basic_request(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"user_id": user, "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["token"].as_str().unwrap().to_string()
}

async fn plain_socket(node: &TestServer, token: &str) -> Client {
    let mut client = Client::connect(&node.ws_url(&format!("/api/v1/ws?token={token}"))).await;
    assert_eq!(client.json_bare().await["event"], "subscribed");
    client
}

#[tokio::test]
async fn one_socket_per_user_logout_and_revocation_reach_every_node() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    // A newer socket of the same user on another node replaces the older one.
    let token = mint_plain(cluster.node(0), "u1").await;
    let mut old = plain_socket(cluster.node(0), &token).await;
    let mut new = plain_socket(cluster.node(1), &token).await;
    assert_eq!(
        old.closed().await,
        (4409, "Replaced by a newer connection".to_string())
    );
    new.send_json(json!({"event": "ping"})).await;
    assert_eq!(new.json_bare().await, json!({"event": "pong"}));

    // A forced logout through node C closes the socket on node B.
    new.send_json(json!({"event": "subscribe", "channel": "mobile.force.logout"}))
        .await;
    new.json_bare().await;
    let (status, body) = cluster
        .node(2)
        .basic_request("POST", "/api/v1/users/u1/force-logout", Some(&json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        new.event("MOBILE_USER_FORCE_LOGOUT_EVENT").await["channel"],
        "mobile.force.logout"
    );
    assert_eq!(new.closed().await.0, 4403);

    // A token revoked through node A closes its socket on node C at once.
    let doomed = mint_plain(cluster.node(0), "u2").await;
    let mut on_c = plain_socket(cluster.node(2), &doomed).await;
    let (status, _) = cluster
        .node(0)
        .basic_request(
            "POST",
            "/api/v1/tokens/revoke",
            Some(&json!({"token": doomed})),
        )
        .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    assert_eq!(on_c.closed().await.0, 4401);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// An app's `max_connections` counts the whole cluster: each node adds the others'
/// counts as they last shared them (every second), so the limit holds within what the
/// other nodes admitted in the last second.
#[tokio::test]
async fn an_apps_connection_limit_counts_every_node() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::with_app(redis.url(), 2, "", "max_connections = 2").await;
    let (_a, _) = cluster.node(0).connect_established().await;
    let (_b, _) = cluster.node(1).connect_established().await;
    // After the counts are shared, a third socket on either node is over the quota.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for node in 0..2 {
        let mut third = cluster.node(node).connect().await;
        let frame = third.json().await;
        assert_eq!(frame["event"], "pusher:error", "{frame}");
        assert_eq!(frame["data"]["code"], 4004, "{frame}");
    }
}

/// With `sandbox = true` the cluster runs one generator, not one per node, and another
/// node takes over when its node stops.
#[tokio::test]
async fn the_sandbox_stream_has_one_generator_per_cluster() {
    let redis = TestRedis::get().await;
    let mut cluster = Cluster::start(
        redis.url(),
        3,
        "sandbox = true\nsandbox_test_interval_secs = 1",
    )
    .await;
    let mut watcher = subscribed_client(cluster.node(0), "test-channel").await;
    // Let a lease be taken, then watch for a while: one generator numbers its events
    // 1, 2, 3…, so two generators would repeat numbers. The numbers, not the arrival
    // times, are what is checked: on a starved machine events can arrive in bunches.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counted = std::time::Instant::now();
    let mut sequences = Vec::new();
    while counted.elapsed() < Duration::from_secs(4) {
        if let Some(Received::Json(frame)) = watcher.next_within(Duration::from_millis(200)).await
            && frame["event"] == "test-event"
        {
            let data: Value = match &frame["data"] {
                Value::String(text) => serde_json::from_str(text).unwrap(),
                data => data.clone(),
            };
            sequences.push(data["sequence"].as_u64().expect("a numbered test event"));
        }
    }
    assert!(
        sequences.len() >= 2,
        "{sequences:?}: the generator publishes about once a second"
    );
    assert!(
        sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{sequences:?}: one generator for the cluster numbers its events one after another"
    );

    // The holder stops: another node takes over.
    let holder: String = {
        let mut connection = redis.connection().await;
        ::redis::cmd("GET")
            .arg(format!("{}sandbox-lease", cluster.prefix))
            .query_async(&mut connection)
            .await
            .unwrap()
    };
    let n: usize = holder.strip_prefix("node-").unwrap().parse().unwrap();
    let mut watcher = if n == 0 {
        subscribed_client(cluster.node(1), "test-channel").await
    } else {
        watcher
    };
    cluster.nodes[n].shutdown().await;
    let mut after = 0;
    let started = std::time::Instant::now();
    while after < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no generator took over"
        );
        if let Some(Received::Json(frame)) = watcher.next_within(Duration::from_millis(200)).await
            && frame["event"] == "test-event"
        {
            after += 1;
        }
    }
}

/// Issue 15's real clients across nodes (tests/peers/cluster.mjs): pusher-js, npm
/// `pusher`, npm `ws` and socket.io-client on three nodes sharing Redis and PostgreSQL.
#[tokio::test]
async fn real_clients_across_nodes() {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    assert!(
        peers.join("node_modules/pusher-js/package.json").exists(),
        "tests/peers/node_modules is missing: run scripts/setup-test-deps"
    );
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, &format!("database_url = \"{}\"", pg.url)).await;
    let key = cluster
        .node(0)
        .merchants()
        .store
        .create_key("1", "merchant_001")
        .await
        .unwrap();
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(peers.join("cluster.mjs"))
            .current_dir(&peers)
            .env("PAYRELAY_NODES", nodes.join(","))
            .env("PAYRELAY_APP_ID", APP_ID)
            .env("PAYRELAY_KEY", KEY)
            .env("PAYRELAY_SECRET", SECRET)
            .env("PAYRELAY_MERCHANT", "merchant_001")
            .env("PAYRELAY_API_KEY", &key.api_key)
            .env("PAYRELAY_API_KEY_ID", &key.key_id)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("cluster.mjs finishes within 90 s")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "cluster.mjs failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("ok ").count(), 4, "{stdout}");
}

fn position_of(frame: &Value) -> (u64, String) {
    let text = frame["position"]
        .as_str()
        .unwrap_or_else(|| panic!("no position: {frame}"));
    let (offset, epoch) = text.split_once('.').unwrap();
    (offset.parse().unwrap(), epoch.to_string())
}

/// Channel history lives in Redis: a channel's publications through any node get
/// consecutive positions of one stream, delivered in position order on every node, and a
/// client that went away resumes on another node with exactly what it missed.
#[tokio::test]
async fn history_is_the_clusters_and_a_client_resumes_on_any_node() {
    let redis = TestRedis::get().await;
    let cluster = Cluster::start(redis.url(), 3, "").await;
    let (mut on_a, _) = cluster.node(0).connect_established().await;
    let start = position_of(&on_a.subscribed("feed").await);
    let (mut on_c, _) = cluster.node(2).connect_established().await;
    on_c.subscribed("feed").await;

    // Published at once through B and C.
    let mut publishers = Vec::new();
    for n in [1, 2] {
        let url = cluster.node(n).url("");
        publishers.push(tokio::spawn(async move {
            for i in 0..20 {
                let body = json!({"name": "tick", "channel": "feed", "data": format!("{n}-{i}")});
                let query = payrelay::protocols::pusher::request_auth::sign_query(
                    KEY,
                    SECRET,
                    "POST",
                    "/apps/1/events",
                    &[],
                    body.to_string().as_bytes(),
                    now(),
                );
                let status = http()
                    .post(format!("{url}/apps/1/events?{query}"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut seen_a = Vec::new();
    let mut seen_c = Vec::new();
    for _ in 0..40 {
        let frame = on_a.event("tick").await;
        seen_a.push((
            position_of(&frame),
            frame["data"].as_str().unwrap().to_string(),
        ));
        let frame = on_c.event("tick").await;
        seen_c.push((
            position_of(&frame),
            frame["data"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        seen_a, seen_c,
        "the same events at the same positions, in the same order"
    );
    for (i, ((offset, epoch), _)) in seen_a.iter().enumerate() {
        assert_eq!(
            *offset,
            start.0 + 1 + i as u64,
            "consecutive offsets in delivery order"
        );
        assert_eq!(*epoch, start.1);
    }

    // A leaves after the 25th; ten more go out through B; it comes back on C.
    let (last_offset, epoch) = seen_a[24].0.clone();
    drop(on_a);
    for i in 0..10 {
        cluster
            .node(1)
            .trigger("feed", "later", &i.to_string())
            .await;
    }
    let (mut back, _) = cluster.node(2).connect_established().await;
    back.send_json(json!({"event": "pusher:subscribe", "data": {"channel": "feed", "resume_from": format!("{last_offset}.{epoch}")}}))
        .await;
    assert_eq!(
        back.json().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let mut replayed = Vec::new();
    for _ in 0..25 {
        let frame = back.json().await;
        replayed.push((
            position_of(&frame).0,
            frame["data"].as_str().unwrap().to_string(),
        ));
    }
    let expected: Vec<(u64, String)> = seen_a[25..]
        .iter()
        .map(|((o, _), d)| (*o, d.clone()))
        .chain((0..10).map(|i| (start.0 + 41 + i, i.to_string())))
        .collect();
    assert_eq!(replayed, expected, "exactly what it missed, in order");
    cluster.node(0).trigger("feed", "live", "now").await;
    let live = back.json().await;
    assert_eq!(
        (live["event"].as_str(), position_of(&live).0),
        (Some("live"), start.0 + 51)
    );
}

/// Redis loses the streams (a restart): a position from before cannot be vouched for,
/// and the client is told so, never given a silent gap.
#[tokio::test]
async fn a_stream_lost_with_redis_is_an_explicit_resume_failure() {
    let mut redis = PrivateRedis::start().await;
    let cluster = Cluster::start(&redis.url(), 2, "").await;
    let (mut client, _) = cluster.node(0).connect_established().await;
    client.subscribed("feed").await;
    cluster.node(1).trigger("feed", "tick", "1").await;
    let before = client.event("tick").await["position"]
        .as_str()
        .unwrap()
        .to_string();
    drop(client);
    redis.restart().await;
    for node in &cluster.nodes {
        readyz_becomes(node, 200, Duration::from_secs(10)).await;
    }
    cluster.node(1).trigger("feed", "tick", "2").await;
    let (mut back, _) = cluster.node(1).connect_established().await;
    back.send_json(
        json!({"event": "pusher:subscribe", "data": {"channel": "feed", "resume_from": before}}),
    )
    .await;
    assert_eq!(
        back.json().await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let failed = back.json().await;
    assert_eq!(failed["event"], "pusher:resume_failed", "{failed}");
    let data: Value = serde_json::from_str(failed["data"].as_str().unwrap()).unwrap();
    let now = data["position"].as_str().unwrap();
    assert_eq!(
        now.split_once('.').unwrap().0,
        "1",
        "the new stream's position: {now}"
    );
    assert_ne!(
        now.split_once('.').unwrap().1,
        before.split_once('.').unwrap().1,
        "a new epoch"
    );
}

/// Runs one of the real-client recovery peers (tests/peers/*_recovery.mjs) across two
/// nodes of a cluster whose app keeps 50 events per channel: the client starts on the
/// first node, loses its TCP connection and resumes on the second.
async fn recovery_peer_across_nodes(script: &str) {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    assert!(
        peers.join("node_modules/pusher-js/package.json").exists(),
        "tests/peers/node_modules is missing: run scripts/setup-test-deps"
    );
    let redis = TestRedis::get().await;
    let cluster = Cluster::with_app(redis.url(), 2, "", "[apps.history]\nsize = 50").await;
    let (a, b) = (cluster.node(0).addr, cluster.node(1).addr);
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg(peers.join(script))
            .current_dir(&peers)
            .env("PAYRELAY_HOST", a.ip().to_string())
            .env("PAYRELAY_PORT", a.port().to_string())
            .env("PAYRELAY_PORT_2", b.port().to_string())
            .env("PAYRELAY_APP_ID", APP_ID)
            .env("PAYRELAY_KEY", KEY)
            .env("PAYRELAY_SECRET", SECRET)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} finishes within 90 s"))
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("ok ").count(), 2, "{stdout}");
}

/// npm `ws` on the plain protocol: its TCP connection to node A is killed while the
/// backend publishes through A and B; it subscribes on B with `since` and gets exactly
/// what it missed, in order, once; past the window, `resume_failed`.
#[tokio::test]
async fn plain_protocol_recovery_on_another_node_with_the_npm_ws_client() {
    recovery_peer_across_nodes("plain_ws_recovery.mjs").await;
}

/// pusher-js with clients/pusher-resume.js: the proxy kills its TCP connection to node A
/// and sends the reconnect to node B, where the helper's `resume_from` replays exactly
/// what it missed, in order, once; past the window, `pusher:resume_failed`.
#[tokio::test]
async fn pusher_js_recovery_on_another_node_with_the_resume_helper() {
    recovery_peer_across_nodes("pusher_js_recovery.mjs").await;
}

/// A resume on a node races the publications it replays: another node's script appends
/// an event and publishes it to this node's Pub/Sub connection before this node reads
/// history, but this node reads that connection on a task of its own, so the event can
/// arrive live after the replay already sent it. It must still come once. Each round,
/// clients resume on B one after another while A publishes a burst; a resume hits the
/// window now and then, so there are many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_another_node_publishes_gets_each_event_once() {
    const ROUNDS: usize = 10;
    const EVENTS: usize = 16;
    const RESUMES: usize = 8;
    let redis = TestRedis::get().await;
    // A burst on a loaded machine can keep Redis calls waiting past the default timeout
    // (a 503, whose append may still have happened); this test is about duplicates.
    let settings = "token_store_timeout_ms = 10000";
    let cluster = std::sync::Arc::new(Cluster::with_app(redis.url(), 2, settings, "").await);
    for round in 0..ROUNDS {
        let channel = format!("race-{round}");
        let mut watcher = subscribed_client(cluster.node(0), &channel).await;
        cluster.node(0).trigger(&channel, "e", "0").await;
        let since = position_of(&watcher.event("e").await);
        let publishing: Vec<_> = (1..=EVENTS)
            .map(|n| {
                let (cluster, channel) = (cluster.clone(), channel.clone());
                tokio::spawn(async move {
                    cluster.node(0).trigger(&channel, "e", &n.to_string()).await;
                })
            })
            .collect();
        let resuming: Vec<_> = (0..RESUMES)
            .map(|r| {
                let (cluster, channel, since) = (cluster.clone(), channel.clone(), since.clone());
                tokio::spawn(async move {
                    // Spread over the burst.
                    tokio::time::sleep(Duration::from_millis(r as u64 * 40)).await;
                    let (mut client, _) = cluster.node(1).connect_established().await;
                    client
                        .send_json(json!({"event": "pusher:subscribe", "data": {
                            "channel": channel, "resume_from": format!("{}.{}", since.0, since.1)}}))
                        .await;
                    assert_eq!(
                        client.json().await["event"],
                        "pusher_internal:subscription_succeeded"
                    );
                    let mut offsets = Vec::new();
                    let mut data = std::collections::BTreeSet::new();
                    while offsets.len() < EVENTS {
                        let frame = client.event("e").await;
                        offsets.push(position_of(&frame).0);
                        let n: usize = frame["data"].as_str().unwrap().parse().unwrap();
                        assert!(
                            data.insert(n),
                            "round {round}, resume {r}: event {n} twice ({offsets:?})"
                        );
                    }
                    let expected: Vec<u64> = (1..=EVENTS as u64).map(|i| since.0 + i).collect();
                    assert_eq!(offsets, expected, "round {round}, resume {r}: in order");
                    client.silent_for(Duration::from_millis(50)).await;
                })
            })
            .collect();
        for task in publishing.into_iter().chain(resuming) {
            task.await.unwrap();
        }
    }
}
