//! TLS on the node's own port: the configured pair is served to WebSocket and HTTPS
//! clients that verify it, a renewed pair replaces it without dropping open sockets (on a
//! timer and on SIGHUP), a broken or half-written renewal keeps the old pair, and the
//! handshake has its own timeout. Real third-party clients over TLS are in
//! `tests/real_peers.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::NodeProcess;
use common::tls::{self, TestCa};
use common::{KEY, SECRET, TestServer};
use futures_util::{SinkExt, StreamExt};
use payrelay::protocols::pusher::request_auth::sign_query;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame.
async fn frame(ws: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A Pusher socket over `wss://`, subscribed to `channel`.
async fn subscribed(addr: SocketAddr, ca: &TestCa, channel: &str) -> Wss {
    let mut ws = tls::wss(addr, ca, &format!("/app/{KEY}?protocol=7&client=test")).await;
    assert_eq!(
        frame(&mut ws).await["event"],
        "pusher:connection_established"
    );
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    assert_eq!(
        frame(&mut ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    ws
}

/// A signed `POST /apps/1/events` over HTTPS.
async fn trigger(addr: SocketAddr, ca: &TestCa, channel: &str, data: &str) {
    let body = json!({"name": "paid", "channel": channel, "data": data}).to_string();
    let path = "/apps/1/events";
    let query = sign_query(
        KEY,
        SECRET,
        "POST",
        path,
        &[],
        body.as_bytes(),
        common::now(),
    );
    let response = ca
        .https_client()
        .post(format!("https://127.0.0.1:{}{path}?{query}", addr.port()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(response.status(), 200);
}

/// Polls until new TLS connections are given `der`.
async fn served(addr: SocketAddr, ca: &TestCa, der: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(stream) = tls::connect(addr, ca).await
            && tls::presented(&stream) == der
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the expected certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(server: &TestServer, ca: &TestCa, line_start: &str) -> Option<f64> {
    let response = ca
        .https_client()
        .get(format!("https://127.0.0.1:{}/metrics", server.addr.port()))
        .send()
        .await
        .ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn websockets_and_https_are_served_with_the_configured_pair() {
    let ca = TestCa::new("serve");
    let pair = ca.issue("payrelay serve");
    let dir = tls::temp_dir("serve");
    let server = TestServer::with_settings(&tls::install(&dir, &pair), "").await;

    let stream = tls::connect(server.addr, &ca).await.expect("TLS handshake");
    assert_eq!(tls::presented(&stream), pair.der);
    drop(stream);

    // A client offering HTTP/2 and HTTP/1.1 is told HTTP/1.1, all the node speaks.
    let mut offering = (*ca.client_config()).clone();
    offering.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let negotiated = tokio_rustls::TlsConnector::from(std::sync::Arc::new(offering))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with ALPN");
    assert_eq!(
        negotiated.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
    drop(negotiated);

    let health = ca
        .https_client()
        .get(format!("https://127.0.0.1:{}/healthz", server.addr.port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);

    let mut ws = subscribed(server.addr, &ca, "orders").await;
    trigger(server.addr, &ca, "orders", "{\"id\":42}").await;
    let event = frame(&mut ws).await;
    assert_eq!(event["event"], "paid");
    assert_eq!(event["data"], "{\"id\":42}");

    // A client that does not trust the CA is refused by its own verification.
    assert!(
        tls::connect(server.addr, &TestCa::new("stranger"))
            .await
            .is_err()
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: payrelay\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(common::WAIT, plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn a_renewed_pair_is_served_without_dropping_open_sockets() {
    let ca = TestCa::new("renew");
    let first = ca.issue("payrelay first");
    let dir = tls::temp_dir("renew");
    let settings = format!(
        "{}\ntls_reload_interval_secs = 1",
        tls::install(&dir, &first)
    );
    let server = TestServer::with_settings(&settings, "").await;
    let mut open = subscribed(server.addr, &ca, "orders").await;

    let second = ca.issue("payrelay second");
    tls::install(&dir, &second);
    served(server.addr, &ca, &second.der, Duration::from_secs(15)).await;

    // The socket opened under the first certificate is still there and still delivered.
    trigger(server.addr, &ca, "orders", "after renewal").await;
    assert_eq!(frame(&mut open).await["data"], "after renewal");
    let mut fresh = subscribed(server.addr, &ca, "orders").await;
    trigger(server.addr, &ca, "orders", "to both").await;
    assert_eq!(frame(&mut open).await["data"], "to both");
    assert_eq!(frame(&mut fresh).await["data"], "to both");
}

#[tokio::test]
async fn a_broken_or_half_written_renewal_keeps_the_old_pair() {
    let ca = TestCa::new("broken");
    let first = ca.issue("payrelay first");
    let dir = tls::temp_dir("broken");
    let settings = format!(
        "{}\ntls_reload_interval_secs = 1",
        tls::install(&dir, &first)
    );
    let server = TestServer::with_settings(&settings, "").await;
    let refused = "payrelay_tls_reloads_total{result=\"refused\"}";

    // A renewal caught half way: the new certificate, the old key.
    let second = ca.issue("payrelay second");
    std::fs::write(dir.join("cert.pem"), &second.cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server, &ca, refused).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the mismatched pair was never looked at"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served(server.addr, &ca, &first.der, common::WAIT).await;

    // Not PEM at all.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    while metric(&server, &ca, refused).await < Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "the broken file was never looked at"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served(server.addr, &ca, &first.der, common::WAIT).await;

    // The renewal completes.
    tls::install(&dir, &second);
    served(server.addr, &ca, &second.der, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn the_tls_handshake_has_its_own_timeout() {
    let ca = TestCa::new("handshake");
    let dir = tls::temp_dir("handshake");
    let settings = format!(
        "{}\nhandshake_timeout_secs = 1\nheader_read_timeout_secs = 60",
        tls::install(&dir, &ca.issue("payrelay"))
    );
    let server = TestServer::with_settings(&settings, "").await;
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the handshake never timed out"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let timeouts = "payrelay_tcp_timeouts_total{kind=\"tls_handshake\"}";
    assert!(
        metric(&server, &ca, timeouts).await >= Some(1.0),
        "{timeouts}"
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_port_is_a_counted_handshake_failure() {
    let ca = TestCa::new("plaintext");
    let dir = tls::temp_dir("plaintext");
    let server = TestServer::with_settings(&tls::install(&dir, &ca.issue("payrelay")), "").await;
    let failures = "payrelay_tls_handshake_failures_total";
    let before = metric(&server, &ca, failures).await.unwrap_or(0.0);
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // rustls may answer with an alert; either way the connection ends and nothing of the
    // router is reached.
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    assert!(read.is_ok(), "the connection was left open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server, &ca, failures).await.unwrap_or(0.0) < before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "{failures} never counted the failure"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_the_cap_a_tls_connection_is_closed_at_once() {
    let ca = TestCa::new("cap");
    let dir = tls::temp_dir("cap");
    let settings = format!(
        "{}\nmax_tcp_connections_per_ip = 1",
        tls::install(&dir, &ca.issue("payrelay"))
    );
    let server = TestServer::with_settings(&settings, "").await;
    let _held = tls::connect(server.addr, &ca).await.expect("under the cap");
    let started = Instant::now();
    assert!(tls::connect(server.addr, &ca).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn unusable_pairs_stop_start_up_without_quoting_the_key() {
    let ca = TestCa::new("startup");
    let dir = tls::temp_dir("startup");
    let pair = ca.issue("payrelay");
    let other = ca.issue("payrelay other");
    let start = |settings: String| async move {
        let mut config =
            payrelay::config::Config::parse(&format!("bind = \"127.0.0.1:0\"\n{settings}"))
                .unwrap();
        config.database_url = "sqlite::memory:".into();
        match payrelay::server::Server::bind(config).await {
            Ok(_) => panic!("a node started with an unusable pair"),
            Err(e) => format!("{e:#}"),
        }
    };

    let settings = tls::install(&dir, &pair);
    std::fs::write(dir.join("key.pem"), &other.key_pem).unwrap();
    let err = start(settings.clone()).await;
    assert!(err.contains("the key is not the certificate's"), "{err}");

    let secretish =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    std::fs::write(dir.join("key.pem"), secretish).unwrap();
    let err = start(settings.clone()).await;
    assert!(err.contains("key.pem"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "the key file is quoted: {err}");

    std::fs::remove_file(dir.join("cert.pem")).unwrap();
    let err = start(settings).await;
    assert!(err.contains("cert.pem"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_the_pair_at_once() {
    let ca = TestCa::new("sighup");
    let first = ca.issue("payrelay first");
    let dir = tls::temp_dir("sighup");
    let settings = format!(
        "{}\ntls_reload_interval_secs = 3600",
        tls::install(&dir, &first)
    );
    let node = NodeProcess::start(None, &settings);
    served(node.addr, &ca, &first.der, common::WAIT).await;
    let second = ca.issue("payrelay second");
    tls::install(&dir, &second);
    node.signal("HUP");
    served(node.addr, &ca, &second.der, Duration::from_secs(10)).await;
    // The log line is written beside the swap and read from the node's output by another
    // thread: it may trail the first handshake with the new pair by a moment.
    let deadline = Instant::now() + common::WAIT;
    while node.log_lines_containing("TLS certificate replaced") == 0 {
        assert!(Instant::now() < deadline, "the reload was never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.log_lines_containing("TLS certificate replaced"), 1);
    // The node is still up: SIGHUP reloads, it does not stop the process.
    served(node.addr, &ca, &second.der, common::WAIT).await;
}
