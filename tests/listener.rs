//! The listener under attack: connections that send nothing, drip their headers, idle on
//! keep-alive or never finish a body are closed on time; one address cannot take every
//! connection; a node out of file descriptors recovers instead of spinning.
//!
//! Every wait polls against a deadline (the machine is shared and busy); the lower bounds
//! only check that a timeout, not an immediate refusal, closed the connection.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::TestServer;
use common::process::NodeProcess;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.expect("connects")
}

/// Reads until the server closes the connection; returns what it sent and when it closed,
/// or `None` if it was still open at `deadline`.
async fn read_until_closed(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Option<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((received, Instant::now())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a keep-alive `GET path` and reads one whole response (head and sized body).
async fn get(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: payrelay\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + common::WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {response:?}");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let server = TestServer::with_settings("header_read_timeout_secs = 1", "").await;
    let started = Instant::now();
    let mut silent = connect_from(LOCAL, server.addr).await;
    let (sent, closed) = read_until_closed(&mut silent, started + Duration::from_secs(10))
        .await
        .expect("the server closed a connection that sent nothing");
    assert!(
        closed - started >= Duration::from_millis(900),
        "closed after {:?}, before the timeout",
        closed - started
    );
    assert!(sent.is_empty(), "{sent:?}");
}

#[tokio::test]
async fn headers_dripped_a_byte_at_a_time_are_cut_off() {
    let server = TestServer::with_settings(
        "header_read_timeout_secs = 1\nkeep_alive_timeout_secs = 60",
        "",
    )
    .await;
    // The first request of a connection, then a later one after a normal exchange: the
    // header timeout holds for both, however long the keep-alive timeout is.
    for after_a_request in [false, true] {
        let mut slow = connect_from(LOCAL, server.addr).await;
        if after_a_request {
            assert!(get(&mut slow, "/healthz").await.starts_with("HTTP/1.1 200"));
        }
        let started = Instant::now();
        let head = b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: payrelay\r\nUpgrade: websocket\r\nX-Slow: ";
        let mut closed = false;
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(200) {
            if slow.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        let closed_at = if closed {
            Instant::now()
        } else {
            read_until_closed(&mut slow, started + Duration::from_secs(8))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "a dripping client (after a request: {after_a_request}) was never cut off"
                    )
                })
                .1
        };
        assert!(
            closed_at - started >= Duration::from_millis(900),
            "cut off after {:?}",
            closed_at - started
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = TestServer::with_settings(
        "keep_alive_timeout_secs = 1\nheader_read_timeout_secs = 60",
        "",
    )
    .await;
    let mut idle = connect_from(LOCAL, server.addr).await;
    assert!(get(&mut idle, "/healthz").await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, idle_from + Duration::from_secs(10))
        .await
        .expect("the server closed an idle keep-alive connection");
    assert!(
        closed - idle_from >= Duration::from_millis(900),
        "closed after {:?}",
        closed - idle_from
    );
}

#[tokio::test]
async fn keep_alive_outlasts_the_header_timeout() {
    // A load balancer keeps idle connections to its backends longer than a client may
    // take to send headers; the two timeouts are separate.
    let server = TestServer::with_settings(
        "keep_alive_timeout_secs = 30\nheader_read_timeout_secs = 1",
        "",
    )
    .await;
    let mut pooled = connect_from(LOCAL, server.addr).await;
    assert!(
        get(&mut pooled, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        get(&mut pooled, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_gets_408() {
    let server = TestServer::with_settings("request_timeout_secs = 1", "").await;
    let mut stalled = connect_from(LOCAL, server.addr).await;
    let head = "POST /apps/1/events HTTP/1.1\r\nHost: payrelay\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":";
    stalled.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (response, _) = read_until_closed(&mut stalled, started + Duration::from_secs(10))
        .await
        .expect("the server gave up on the body");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("Request timed out"), "{response}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Polls until a connection from `source` is served `/healthz`.
async fn served_from(source: Ipv4Addr, server: SocketAddr, within: Duration) -> TcpStream {
    let deadline = Instant::now() + within;
    loop {
        let mut stream = connect_from(source, server).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: payrelay\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 200")
        {
            return stream;
        }
        assert!(Instant::now() < deadline, "{source} was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole answer an over-the-cap connection gets to a request.
async fn refusal(source: Ipv4Addr, server: SocketAddr) -> String {
    let mut refused = connect_from(source, server).await;
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: payrelay\r\n\r\n")
        .await;
    let (answer, _) = read_until_closed(&mut refused, Instant::now() + Duration::from_secs(5))
        .await
        .expect("a refused connection is closed at once");
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share() {
    let server = TestServer::with_settings("max_tcp_connections_per_ip = 3", "").await;
    // WebSockets and idle TCP connections count alike, from accept on.
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = connect_from(LOCAL, server.addr).await;
        let url = server.ws_url(&format!("/app/{}?protocol=7", common::KEY));
        let (ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("under the cap, the upgrade succeeds");
        held.push(ws);
    }
    let idle = connect_from(LOCAL, server.addr).await;

    let answer = refusal(LOCAL, server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Too many connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );

    // A WebSocket client over the cap sees the refusal as a failed handshake.
    let tcp = connect_from(LOCAL, server.addr).await;
    let url = server.ws_url(&format!("/app/{}?protocol=7", common::KEY));
    match tokio_tungstenite::client_async(url, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503 handshake, got {other:?}"),
    }

    // Another address is not affected.
    served_from(OTHER, server.addr, common::WAIT).await;

    // A closed connection gives its place back.
    drop(idle);
    served_from(LOCAL, server.addr, common::WAIT).await;
    drop(held);
}

/// Raises this process's soft open-file limit to at least `files` (within the hard
/// limit), for tests that hold thousands of sockets.
fn at_least_open_files(files: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < files {
            assert!(
                limit.rlim_max >= files,
                "this test needs {files} open files; the hard limit is {}",
                limit.rlim_max
            );
            limit.rlim_cur = files;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Opens a Pusher socket from `source` and waits for `connection_established`.
async fn pusher_socket_from(
    source: Ipv4Addr,
    server: SocketAddr,
) -> Result<common::Client, tokio_tungstenite::tungstenite::Error> {
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(connect_from(source, server).await);
    let url = format!("ws://{server}/app/{}?protocol=7", common::KEY);
    let (ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let mut client = common::Client { ws };
    assert!(
        client
            .text()
            .await
            .contains("pusher:connection_established"),
        "a socket under the cap is established"
    );
    Ok(client)
}

/// Issue 12, item 7: one address opened 2 000 sockets and every one was accepted. With
/// the cap at 2 000, the 2 001st WebSocket from that address is refused with 503 before
/// the upgrade, while another address is served and a closed socket frees its place.
#[tokio::test]
async fn the_2001st_socket_from_one_address_is_refused() {
    const CAP: usize = 2_000;
    // The node holds CAP + 2 sockets, this process as many, beside their other files.
    at_least_open_files(2 * CAP as u64 + 512);
    let node = NodeProcess::start(
        Some(2 * CAP as u32 + 512),
        &format!("max_tcp_connections_per_ip = {CAP}"),
    );
    let mut held = Vec::with_capacity(CAP);
    let mut opening = futures_util::stream::iter(0..CAP)
        .map(|_| pusher_socket_from(LOCAL, node.addr))
        .buffer_unordered(64);
    while let Some(socket) = opening.next().await {
        held.push(socket.expect("every socket under the cap is accepted"));
    }
    drop(opening);
    assert_eq!(held.len(), CAP);

    match pusher_socket_from(LOCAL, node.addr).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        Err(other) => panic!("expected a 503 handshake, got {other}"),
        Ok(_) => panic!("the socket over the cap was accepted"),
    }
    // Another address is not affected.
    drop(
        pusher_socket_from(OTHER, node.addr)
            .await
            .expect("another address is served"),
    );
    // A closed socket gives its place back (the node sees the close shortly after).
    drop(held.pop());
    let deadline = Instant::now() + common::WAIT;
    loop {
        match pusher_socket_from(LOCAL, node.addr).await {
            Ok(socket) => {
                held.push(socket);
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the freed place never came back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held.len(), CAP);
}

#[tokio::test]
async fn the_node_wide_cap_holds_across_addresses() {
    let server = TestServer::with_settings(
        "max_tcp_connections = 2\nmax_tcp_connections_per_ip = 0",
        "",
    )
    .await;
    let first = connect_from(LOCAL, server.addr).await;
    let _second = served_from(OTHER, server.addr, common::WAIT).await;
    let answer = refusal(Ipv4Addr::new(127, 0, 0, 3), server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(first);
    served_from(Ipv4Addr::new(127, 0, 0, 3), server.addr, common::WAIT).await;
}

#[tokio::test]
async fn refusals_and_timeouts_are_counted() {
    let server = TestServer::with_settings(
        "max_tcp_connections_per_ip = 1\nheader_read_timeout_secs = 1",
        "",
    )
    .await;
    let _silent = connect_from(Ipv4Addr::new(127, 0, 0, 9), server.addr).await;
    let answer = refusal(Ipv4Addr::new(127, 0, 0, 9), server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The silent connection is closed by the header timeout, and counted.
    let deadline = Instant::now() + common::WAIT;
    loop {
        let (status, metrics) = server.raw_request("GET", "/metrics", Vec::new()).await;
        assert_eq!(status, 200);
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let refused = metrics.lines().any(|l| {
            l.starts_with("payrelay_tcp_connections_refused_total{reason=\"address_limit\"}")
        });
        let gauge = metrics
            .lines()
            .any(|l| l.starts_with("payrelay_tcp_connections "));
        let timed_out = metrics
            .lines()
            .any(|l| l.starts_with("payrelay_tcp_timeouts_total{kind=\"header_read\"}"));
        if refused && gauge && timed_out {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `n` connections that never send anything and keeps them.
async fn flood(server: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect_from(LOCAL, server).await);
    }
    held
}

/// Asserts the node uses well under a core while `hold` lasts.
async fn assert_quiet(node: &NodeProcess, hold: Duration) {
    let before = node.cpu_seconds();
    tokio::time::sleep(hold).await;
    let used = node.cpu_seconds() - before;
    assert!(
        used < hold.as_secs_f64() * 0.3,
        "the node used {used:.2} s of CPU in {hold:?}: it spins"
    );
}

#[tokio::test]
async fn a_node_out_of_files_backs_off_and_recovers() {
    // The cap is set above what the file limit allows, so accept itself fails (EMFILE).
    let node = NodeProcess::start(
        Some(256),
        "max_tcp_connections = 100000\nmax_tcp_connections_per_ip = 0\nheader_read_timeout_secs = 1",
    );
    let held = flood(node.addr, 600).await;
    assert_quiet(&node, Duration::from_secs(2)).await;
    // The silent connections time out, the backlog drains, and the node answers again
    // while the flood's sockets are still open on the client side.
    let _probe = served_from(OTHER, node.addr, Duration::from_secs(60)).await;
    assert!(node.log_lines_containing("Too many open files") >= 1);
    assert!(
        node.log_lines_containing("accept") < 20,
        "accept errors flood the log: {} lines",
        node.log_lines_containing("accept")
    );
    drop(held);
    // Every failed accept is counted, though the log says so only now and then.
    let metrics = common::http()
        .get(format!("http://{}/metrics", node.addr))
        .send()
        .await
        .expect("/metrics answers once the flood is gone")
        .text()
        .await
        .unwrap();
    let accept_errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("payrelay_accept_errors_total "))
        .expect("payrelay_accept_errors_total is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(accept_errors >= 1.0, "{accept_errors}");
}

#[tokio::test]
async fn the_default_cap_keeps_a_node_inside_its_file_limit() {
    let node = NodeProcess::start(
        Some(256),
        "max_tcp_connections_per_ip = 0\nheader_read_timeout_secs = 1",
    );
    let held = flood(node.addr, 600).await;
    assert_quiet(&node, Duration::from_secs(2)).await;
    let _probe = served_from(OTHER, node.addr, Duration::from_secs(60)).await;
    assert_eq!(node.log_lines_containing("Too many open files"), 0);
    assert!(node.log_lines_containing("refusing connections over a cap") >= 1);
    drop(held);
}
