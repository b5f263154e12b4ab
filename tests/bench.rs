//! `payrelay bench` end to end: tiny runs of every scenario against a server started in
//! the test, through the real binary (so worker processes are exercised too).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_payrelay");

/// Runs `payrelay bench ARGS` and returns its JSON line.
async fn bench(args: &[&str]) -> Value {
    let run = Command::new(BIN)
        .arg("bench")
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("bench stops by itself")
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("payrelay bench {}", args[0])),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).expect("the JSON line parses")
}

fn addr(server: &TestServer) -> String {
    server.addr.to_string()
}

#[tokio::test]
async fn fanout_delivers_every_message_to_every_subscriber() {
    let server = TestServer::start().await;
    let url = addr(&server);
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "300",
        "--workers",
        "2",
        "--messages",
        "20",
        "--rate",
        "50",
        "--bytes",
        "200",
        "--drain-ms",
        "2000",
    ])
    .await;
    assert_eq!(report["subscribed"], 300, "{report}");
    assert_eq!(report["published"], 20, "{report}");
    assert_eq!(report["expected"], 6000, "{report}");
    assert_eq!(report["delivered"], 6000, "{report}");
    assert_eq!(report["workers"], 2, "{report}");
    let p50 = report["p50_ms"].as_f64().unwrap();
    let p99 = report["p99_ms"].as_f64().unwrap();
    let max = report["max_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{report}");
}

#[tokio::test]
async fn a_wrong_secret_shows_up_as_publish_errors_not_deliveries() {
    let server = TestServer::start().await;
    let url = addr(&server);
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "10",
        "--messages",
        "5",
        "--rate",
        "50",
        "--secret",
        "not-the-secret",
        "--drain-ms",
        "300",
    ])
    .await;
    assert_eq!(report["published"], 0, "{report}");
    assert_eq!(report["publish_errors"], 5, "{report}");
    assert_eq!(report["publish_errors_by_status"]["401"], 5, "{report}");
    assert_eq!(report["delivered"], 0, "{report}");
}

#[tokio::test]
async fn connections_are_held_and_measured() {
    let server = TestServer::start().await;
    let url = addr(&server);
    let pid = std::process::id().to_string();
    let run = tokio::spawn(async move {
        bench(&[
            "connections",
            "--url",
            &url,
            "--sockets",
            "400",
            "--channels",
            "7",
            "--workers",
            "2",
            "--hold-secs",
            "2",
            "--server-pid",
            &pid,
        ])
        .await
    });
    // While the bench holds them, the server has every socket, spread over the channels.
    let app: std::sync::Arc<str> = "1".into();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.core.connection_count() < 400 || occupied(&server, &app) < 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "sockets never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = run.await.unwrap();
    assert_eq!(report["subscribed"], 400, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["dropped_while_held"], 0, "{report}");
    assert!(report["rss_after_kib"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["connects_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// 10 sockets each ask for 150 junk channels at once beside their bench channel.
async fn junk_run(server: &TestServer) -> Value {
    bench(&[
        "connections",
        "--url",
        &addr(server),
        "--sockets",
        "10",
        "--channels",
        "2",
        "--junk-channels",
        "150",
        "--hold-secs",
        "1",
    ])
    .await
}

fn junk_refusals(report: &Value) -> [u64; 3] {
    ["junk_rate_limited", "junk_over_channel_cap", "junk_other"]
        .map(|key| report[key].as_u64().unwrap())
}

#[tokio::test]
async fn junk_subscriptions_are_held_to_the_channel_cap_and_the_subscribe_rate() {
    // Defaults: 100 channels per socket, 10 subscribes/s after a burst of 100. The burst
    // is spent exactly when the cap is reached, so which of the two refuses the 51 extra
    // subscribes depends on how fast they arrive (on a fast machine the limiter refuses
    // all of them before a token comes back): both are refusals, and the rate is seen.
    let server = TestServer::start().await;
    let report = junk_run(&server).await;
    assert_eq!(report["subscribed"], 10, "{report}");
    // Each socket is on its bench channel and may hold 100 channels: 99 junk ones.
    assert_eq!(report["junk_subscribed"], 990, "{report}");
    let refused = junk_refusals(&report);
    assert_eq!(refused.iter().sum::<u64>(), 10 * 51, "{report}");
    assert!(refused[0] > 0, "{report}");
    assert_eq!(refused[2], 0, "{report}");

    // With a rate the limiter never reaches, the channel cap alone refuses all 51.
    let server = TestServer::with_settings("", "subscriptions_per_second = 1000000").await;
    let report = junk_run(&server).await;
    assert_eq!(report["subscribed"], 10, "{report}");
    assert_eq!(report["junk_subscribed"], 990, "{report}");
    assert_eq!(junk_refusals(&report), [0, 10 * 51, 0], "{report}");
}

#[tokio::test]
async fn stalled_sockets_are_closed_and_healthy_ones_get_everything() {
    // Large events, so that the stalled sockets' kernel buffers fill within the run
    // whatever their size (the node's 128 KiB, or up to 4 MiB with `tcp_send_buffer_kib
    // = 0`): 400 events of 20 KB are 8 MB per socket. A write blocked for
    // `pong_timeout_secs` closes the socket.
    let server = TestServer::with_settings(
        "outbound_queue_size = 64\npong_timeout_secs = 2",
        "max_message_size = 32768",
    )
    .await;
    let url = addr(&server);
    let pid = std::process::id().to_string();
    let report = bench(&[
        "stalled",
        "--url",
        &url,
        "--stalled",
        "4",
        "--healthy",
        "3",
        "--rate",
        "50",
        "--secs",
        "8",
        "--bytes",
        "20000",
        "--drain-ms",
        "3000",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(report["stalled_subscribed"], 4, "{report}");
    assert_eq!(report["healthy_subscribed"], 3, "{report}");
    assert_eq!(report["published"], 400, "{report}");
    assert_eq!(report["delivered"], 1200, "{report}");
    assert_eq!(report["healthy_closed"], 0, "{report}");
    let closed = report["stalled_closed"].as_u64().unwrap();
    assert!(closed >= 1, "{report}");
    assert!(
        report["slow_consumer_closes"].as_f64().unwrap() >= 1.0,
        "{report}"
    );
    assert!(
        report["stalled_reopened"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(report["rss_max_kib"].as_u64().unwrap() > 0, "{report}");
}

fn occupied(server: &TestServer, app: &std::sync::Arc<str>) -> usize {
    server.core.hub().occupied_channels(app, "bench-").len()
}

#[tokio::test]
async fn publish_counts_requests_and_errors() {
    let server = TestServer::start().await;
    let url = addr(&server);
    let report = bench(&[
        "publish",
        "--url",
        &url,
        "--requests",
        "200",
        "--concurrency",
        "8",
    ])
    .await;
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["requests_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );

    let report = bench(&[
        "publish",
        "--url",
        &url,
        "--requests",
        "20",
        "--bytes",
        "20000",
    ])
    .await;
    assert_eq!(report["errors_by_status"]["413"], 20, "{report}");
}

#[tokio::test]
async fn the_ceiling_server_serves_the_same_fanout_scenario() {
    // Port 0: the server binds a free port itself and names it in its banner, so no other
    // process can take the port between choosing it and binding it.
    let mut ceiling = Command::new(BIN)
        .args(["bench", "ceiling", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(ceiling.stderr.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bind = banner
        .strip_prefix("ceiling server on ")
        .unwrap_or_else(|| panic!("unexpected banner: {banner}"))
        .trim()
        .to_string();
    assert_ne!(
        bind.parse::<std::net::SocketAddr>()
            .expect("banner names an address")
            .port(),
        0,
        "{banner}"
    );
    let report = bench(&[
        "fanout",
        "--url",
        &bind,
        "--subscribers",
        "200",
        "--messages",
        "10",
        "--rate",
        "50",
        "--drain-ms",
        "1000",
    ])
    .await;
    assert_eq!(report["delivered"], 2000, "{report}");
    ceiling.kill().await.unwrap();
}

#[tokio::test]
async fn remote_targets_are_refused() {
    let output = Command::new(BIN)
        .args([
            "bench",
            "publish",
            "--url",
            "192.0.2.1:6001",
            "--requests",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn payload_sockets_are_held_counted_down_and_timed() {
    let server = TestServer::start().await;
    let url = addr(&server);
    let pid = std::process::id().to_string();
    let report = bench(&[
        "payloads",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--sockets",
        "200",
        "--payloads",
        "50",
        "--workers",
        "2",
        "--hold-secs",
        "16",
        "--samples",
        "5",
    ])
    .await;
    assert_eq!(report["payloads"], 50, "{report}");
    assert_eq!(report["subscribed"], 200, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    // One countdown per socket 15 s after its greeting.
    assert_eq!(report["countdowns"], 200, "{report}");
    assert_eq!(report["dropped_while_held"], 0, "{report}");
    assert_eq!(report["samples"], 5, "{report}");
    assert_eq!(report["sample_errors"], 0, "{report}");
    let p50 = report["change_to_message_p50_ms"].as_f64().unwrap();
    let p99 = report["change_to_message_p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    assert!(
        report["create_to_socket_p50_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["rss_per_socket_bytes"].is_number(), "{report}");
    assert!(report["idle_cpu_percent"].is_number(), "{report}");
    // The bench closed its sockets (the node may take a moment to see the last ones go).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.core.connection_count() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.core.connection_count(), 0);
}

/// Cluster runs: sockets spread over `--nodes`, publishes through `--publish-to`, every
/// node's RSS and Redis's reported.
#[tokio::test]
async fn fanout_and_connections_spread_over_cluster_nodes() {
    let redis = common::TestRedis::get().await;
    let prefix = format!("test:{:016x}:", common::rand_u64());
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push(
            TestServer::with_settings(
                &format!(
                    "redis_url = \"{}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"bench-{n}\"",
                    redis.url()
                ),
                "",
            )
            .await,
        );
    }
    let (a, b) = (addr(&nodes[0]), addr(&nodes[1]));
    let both = format!("{a},{b}");
    let pid = std::process::id().to_string();
    let pids = format!("{pid},{pid}");
    let report = bench(&[
        "fanout",
        "--url",
        &a,
        "--nodes",
        &both,
        "--publish-to",
        &b,
        "--node-pids",
        &pids,
        "--subscribers",
        "10",
        "--workers",
        "2",
        "--messages",
        "30",
        "--rate",
        "100",
        "--drain-ms",
        "2000",
    ])
    .await;
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["publish_nodes"], 1, "{report}");
    assert_eq!(report["delivered"], 300, "{report}");
    assert_eq!(
        report["nodes_rss_kib"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    // Held sockets are spread: half on each node while the run holds them.
    let url_a = a.clone();
    let both_nodes = both.clone();
    let pids_held = pids.clone();
    let held = tokio::spawn(async move {
        bench(&[
            "connections",
            "--url",
            &url_a,
            "--nodes",
            &both_nodes,
            "--node-pids",
            &pids_held,
            "--sockets",
            "40",
            "--channels",
            "4",
            "--hold-secs",
            "3",
        ])
        .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while nodes[0].core.connection_count() + nodes[1].core.connection_count() < 40 {
        assert!(tokio::time::Instant::now() < deadline, "sockets not opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            nodes[0].core.connection_count(),
            nodes[1].core.connection_count()
        ),
        (20, 20)
    );
    let report = held.await.unwrap();
    assert_eq!(report["subscribed"], 40, "{report}");
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(
        report["nodes_rss_kib"].as_array().unwrap().len(),
        2,
        "{report}"
    );
}

#[tokio::test]
async fn history_measures_the_publish_path_memory_and_a_resume() {
    let report = bench(&[
        "history",
        "--channels",
        "30",
        "--events",
        "10",
        "--missed",
        "7",
        "--recoveries",
        "5",
    ])
    .await;
    assert_eq!(report["history_in"], "process", "{report}");
    assert_eq!(report["retained_events"], 300, "{report}");
    assert_eq!(report["recoveries"], 5, "{report}");
    for key in [
        "publishes_per_sec_without_history",
        "publishes_per_sec_with_history",
        "recovery_p50_us",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(report["redis_used_memory_growth_mib"].is_null(), "{report}");
    // What the history counts against history_max_bytes: the copy and its data at least.
    assert!(
        report["counted_bytes_per_event"].as_f64().unwrap() > 300.0,
        "{report}"
    );
}

/// `--redis-url`: history in Redis, as a node with `redis_url` keeps it; what Redis
/// gains is measured, and the bench removes its keys (and only its keys) at the end. On a
/// private redis-server: on the shared one, other tests' keys move `used_memory` by more
/// than these 300 events take.
#[tokio::test]
async fn history_in_redis_measures_redis_memory_and_cleans_up() {
    let redis = common::PrivateRedis::start().await;
    let url = redis.url();
    let mut connection = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = ::redis::cmd("SET")
        .arg("someone-else")
        .arg("kept")
        .query_async(&mut connection)
        .await
        .unwrap();
    let report = bench(&[
        "history",
        "--channels",
        "30",
        "--events",
        "10",
        "--missed",
        "7",
        "--recoveries",
        "5",
        "--publishers",
        "4",
        "--redis-url",
        &url,
    ])
    .await;
    assert_eq!(report["history_in"], "redis", "{report}");
    assert_eq!(report["retained_events"], 300, "{report}");
    assert!(report["recovery_p50_us"].as_u64().unwrap() > 0, "{report}");
    // 300 retained events of 100 bytes: Redis holds at least their data.
    assert!(
        report["redis_bytes_per_event"].as_f64().unwrap() > 100.0,
        "{report}"
    );
    // Each channel's stream and its position (and the resumed channel's).
    assert!(
        report["redis_keys_removed"].as_u64().unwrap() >= 62,
        "{report}"
    );
    assert!(report["redis_prefix"].as_str().is_some(), "{report}");
    let left: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        left,
        ["someone-else"],
        "the bench's keys are gone, no other"
    );
}

#[tokio::test]
async fn history_refuses_a_remote_redis() {
    let run = Command::new(BIN)
        .args(["bench", "history", "--channels", "1", "--events", "1"])
        .args(["--redis-url", "redis://192.0.2.1:6379/"])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn outbox_claim_times_claims_against_a_backlog_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("payrelay-claim-{}", common::rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}", dir.join("outbox.db").display());
    let pg = common::PgDatabase::create().await;
    let mut urls = vec![sqlite];
    urls.extend(pg.as_ref().map(|pg| pg.url.clone()));
    for url in &urls {
        let report = bench(&[
            "outbox-claim",
            "--database-url",
            url,
            "--pending",
            "3000",
            "--endpoints",
            "4",
            "--rounds",
            "3",
        ])
        .await;
        // A share of 16 from each endpoint, every round (the leases are given back).
        assert_eq!(report["claimed"], 64, "{report}");
        assert_eq!(report["pending"], 3000, "{report}");
        assert!(report["claim_p50_ms"].as_f64().unwrap() > 0.0, "{report}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn outbox_claim_refuses_a_remote_database_without_printing_its_password() {
    let run = Command::new(BIN)
        .args(["bench", "outbox-claim", "--pending", "1"])
        .args([
            "--database-url",
            "postgres://bench:hunter2@192.0.2.1:5432/db",
        ])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
