//! A worker process: holds a share of the bench's sockets and reports what they received.
//!
//! One process may hold at most 20 000 open files here, so a run of N sockets is split
//! over several workers (`payrelay bench worker`, started by the parent). A worker reads
//! its [`Plan`] as the first line of stdin, then commands; it answers with one JSON line
//! per [`Event`] on stdout. It runs on a single-threaded runtime: the generator should
//! cost as little as possible, and its counters then need no cross-thread traffic.
//! It exits on its own at the plan's deadline, or when the parent goes away (stdin EOF).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::latency::{Buckets, Latency};
use super::payload;
use super::target::{Protocol, Target};

/// How long one socket may take to connect, handshake and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// `SO_RCVBUF` of a socket that will stall (the kernel doubles it and rounds it up).
const STALLED_RECEIVE_BUFFER: u32 = 4096;
/// How often a stalled socket writes a `pusher:ping`, which fails once the server has
/// closed it.
const STALLED_PING_EVERY: Duration = Duration::from_secs(1);

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub sockets: usize,
    /// Socket `i` subscribes to `channels[(first_socket + i) % channels.len()]`.
    pub channels: Vec<String>,
    /// Socket.IO: the merchant API key for each channel (same index).
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub first_socket: usize,
    /// Local addresses to connect from, in turn (spreads the ephemeral port space).
    pub source_ips: Vec<IpAddr>,
    pub connect_concurrency: usize,
    /// The worker stops by itself after this long, whatever the parent says.
    pub deadline_secs: u64,
    /// Pusher: public channels each socket also subscribes to once subscribed, each its
    /// own (`junk-{socket}-{n}`), all sent at once: what a client that wants to cost the
    /// server memory would do. The answers are counted in [`ReadyReport::junk`].
    #[serde(default)]
    pub junk_channels: usize,
    /// Once subscribed, the sockets stop reading (see [`stall`]).
    #[serde(default)]
    pub stall: bool,
}

/// Parent → worker, after [`Event::Ready`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Wait until every live socket has `per_socket` bench events (or `drain_ms` without
    /// progress), then report.
    Finish { per_socket: u64, drain_ms: u64 },
    /// Report now.
    Report,
}

/// Worker → parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Ready(ReadyReport),
    Done(Deliveries),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadyReport {
    pub subscribed: u64,
    pub failed: u64,
    /// Failure reasons and how often each happened.
    pub errors: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// What the server answered the junk subscriptions.
    #[serde(default)]
    pub junk: JunkAnswers,
}

/// The server's answers to junk subscriptions, by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JunkAnswers {
    pub subscribed: u64,
    /// `pusher:subscription_error` with status 429: over `subscriptions_per_second`.
    pub rate_limited: u64,
    /// `pusher:subscription_error` with status 4100: over `max_channels_per_connection`.
    pub over_channel_cap: u64,
    /// Any other refusal.
    pub other: u64,
}

impl JunkAnswers {
    pub fn add(&mut self, other: &JunkAnswers) {
        self.subscribed += other.subscribed;
        self.rate_limited += other.rate_limited;
        self.over_channel_cap += other.over_channel_cap;
        self.other += other.other;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deliveries {
    pub delivered: u64,
    /// Sockets the server closed (or that broke) after subscribing.
    pub closed: u64,
    /// Bench events that arrived out of sequence on their socket.
    pub reordered: u64,
    pub first_us: u64,
    pub last_us: u64,
    pub latency: Buckets,
    /// CPU seconds this worker used since it was ready: tells whether the generator,
    /// rather than the server, was the limit.
    pub cpu_secs: f64,
    /// Stalled sockets: how often one was found closed by the server and opened again.
    #[serde(default)]
    pub reopened: u64,
    /// Stalled sockets: attempts to open one again that failed.
    #[serde(default)]
    pub reopen_failures: u64,
}

#[derive(Default)]
struct Shared {
    subscribed: AtomicU64,
    failed: AtomicU64,
    settled: AtomicU64,
    delivered: AtomicU64,
    closed: AtomicU64,
    reordered: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    reopened: AtomicU64,
    reopen_failures: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    junk: Mutex<JunkAnswers>,
    latency: Mutex<Latency>,
    progress: Notify,
}

impl Shared {
    fn fail(&self, reason: String) {
        *self.errors.lock().entry(reason).or_default() += 1;
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.settle();
    }

    fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Release);
        self.progress.notify_one();
    }

    fn deliveries(&self) -> Deliveries {
        Deliveries {
            delivered: self.delivered.load(Ordering::Acquire),
            closed: self.closed.load(Ordering::Acquire),
            reordered: self.reordered.load(Ordering::Acquire),
            first_us: self.first_us.load(Ordering::Acquire),
            last_us: self.last_us.load(Ordering::Acquire),
            latency: self.latency.lock().buckets(),
            cpu_secs: 0.0,
            reopened: self.reopened.load(Ordering::Acquire),
            reopen_failures: self.reopen_failures.load(Ordering::Acquire),
        }
    }
}

/// Entry point of `payrelay bench worker`.
pub fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let plan: Plan = match stdin.next_line().await? {
        Some(line) => serde_json::from_str(&line)?,
        None => return Ok(()),
    };
    if plan.channels.is_empty() {
        anyhow::bail!("the plan names no channel");
    }
    let deadline = Duration::from_secs(plan.deadline_secs);
    match tokio::time::timeout(deadline, drive(plan, &mut stdin)).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("worker deadline reached"),
    }
}

async fn drive(
    plan: Plan,
    stdin: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        first_us: AtomicU64::new(u64::MAX),
        ..Default::default()
    });
    let started = Instant::now();
    let plan = Arc::new(plan);
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    for i in 0..plan.sockets {
        let (plan, shared, gate) = (plan.clone(), shared.clone(), gate.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let setup = async {
                let mut ws = open(&plan, i).await?;
                if plan.junk_channels > 0 {
                    let answers = subscribe_junk(&mut ws, &plan, i).await?;
                    shared.junk.lock().add(&answers);
                }
                Ok::<_, String>(ws)
            };
            let ws = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(reason)) => return shared.fail(reason),
                Err(_) => return shared.fail("setup timed out".into()),
            };
            drop(permit);
            shared.subscribed.fetch_add(1, Ordering::Relaxed);
            shared.settle();
            if plan.stall {
                stall(ws, &plan, i, &shared).await;
            } else {
                receive(ws, &shared).await;
            }
        });
    }
    while shared.settled.load(Ordering::Acquire) < plan.sockets as u64 {
        shared.progress.notified().await;
    }
    let ready = ReadyReport {
        subscribed: shared.subscribed.load(Ordering::Acquire),
        failed: shared.failed.load(Ordering::Acquire),
        errors: shared.errors.lock().clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        junk: shared.junk.lock().clone(),
    };
    emit(&Event::Ready(ready))?;
    let cpu_at_ready = super::cpu_secs(std::process::id()).unwrap_or(0.0);

    while let Some(line) = stdin.next_line().await? {
        match serde_json::from_str::<Command>(&line)? {
            Command::Report => {}
            Command::Finish {
                per_socket,
                drain_ms,
            } => {
                let expected = per_socket * shared.subscribed.load(Ordering::Acquire);
                wait_for(&shared, expected, Duration::from_millis(drain_ms)).await;
            }
        }
        let cpu_secs = super::cpu_secs(std::process::id()).unwrap_or(0.0) - cpu_at_ready;
        emit(&Event::Done(Deliveries {
            cpu_secs,
            ..shared.deliveries()
        }))?;
    }
    Ok(())
}

/// Waits until `expected` deliveries arrived, or until `drain` passes with none arriving.
/// The quiet time counts from the later of the last delivery and the call itself, so a
/// slow first delivery is waited for too.
async fn wait_for(shared: &Shared, expected: u64, drain: Duration) {
    let asked_at = payload::now_micros();
    let drain_us = drain.as_micros() as u64;
    while shared.delivered.load(Ordering::Acquire) < expected {
        let last = shared.last_us.load(Ordering::Acquire).max(asked_at);
        if payload::now_micros().saturating_sub(last) >= drain_us {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20).min(drain)).await;
    }
}

fn emit(event: &Event) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects socket `i`, waits for `connection_established`, subscribes and waits for the
/// subscription to succeed. Errors are short categories, counted by the parent.
async fn open(plan: &Plan, i: usize) -> Result<Socket, String> {
    let target: SocketAddr = plan.target.addr;
    let tcp = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {}", e.kind()))?;
    if plan.stall {
        // A small window, so that a socket that stops reading is a stalled one for the
        // server within a few events rather than after megabytes of kernel buffers.
        tcp.set_recv_buffer_size(STALLED_RECEIVE_BUFFER)
            .map_err(|e| format!("socket: {}", e.kind()))?;
    }
    if !plan.source_ips.is_empty() {
        let ip = plan.source_ips[i % plan.source_ips.len()];
        tcp.bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {}", e.kind()))?;
    }
    let stream = tcp
        .connect(target)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    // Small buffers: the generator holds as many sockets as the server does.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let index = (plan.first_socket + i) % plan.channels.len();
    let url = match plan.target.protocol {
        Protocol::Pusher => plan.target.socket_url(),
        Protocol::Payload => plan.target.payload_url(&plan.channels[index]),
        Protocol::Socketio => {
            let api_key = plan
                .api_keys
                .get(index)
                .ok_or("the plan has no API key for this channel")?;
            plan.target.socketio_url(api_key)
        }
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {}", short(&e.to_string())))?;
    if plan.target.protocol == Protocol::Socketio {
        socketio_connect(&mut ws).await?;
        return Ok(ws);
    }
    if plan.target.protocol == Protocol::Payload {
        // `{"message":"Welcome <uuid>"}`, then the first countdown.
        let welcome = next_text(&mut ws).await?;
        if !welcome.contains("Welcome") {
            return Err(format!("refused: {}", short(&welcome)));
        }
        let countdown = next_text(&mut ws).await?;
        if !countdown.contains("expires_in_seconds") {
            return Err(format!("no countdown: {}", short(&countdown)));
        }
        return Ok(ws);
    }
    let first = next_text(&mut ws).await?;
    if !first.contains("pusher:connection_established") {
        return Err(format!("refused: {}", short(&first)));
    }
    let channel = &plan.channels[index];
    let subscribe = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| format!("send: {}", short(&e.to_string())))?;
    loop {
        let frame = next_text(&mut ws).await?;
        if frame.contains("pusher_internal:subscription_succeeded") {
            return Ok(ws);
        }
        if frame.contains("pusher:subscription_error") || frame.contains("pusher:error") {
            return Err(format!("refused: {}", short(&frame)));
        }
    }
}

/// Sends `plan.junk_channels` subscribe requests for public channels of this socket's
/// own at once, then reads until each has its answer (bench events that arrive in
/// between are ignored).
async fn subscribe_junk(ws: &mut Socket, plan: &Plan, i: usize) -> Result<JunkAnswers, String> {
    if plan.target.protocol != Protocol::Pusher {
        return Err("junk channels are Pusher channels".into());
    }
    let socket = plan.first_socket + i;
    for n in 0..plan.junk_channels {
        let channel = format!("junk-{socket}-{n}");
        let subscribe =
            serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        ws.feed(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| format!("send: {}", short(&e.to_string())))?;
    }
    ws.flush()
        .await
        .map_err(|e| format!("send: {}", short(&e.to_string())))?;
    let mut answers = JunkAnswers::default();
    let mut pending = plan.junk_channels;
    while pending > 0 {
        let text = next_text(ws).await?;
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let on_junk = frame["channel"]
            .as_str()
            .is_some_and(|c| c.starts_with("junk-"));
        match frame["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") if on_junk => {
                answers.subscribed += 1;
            }
            Some("pusher:subscription_error") if on_junk => {
                // `data` is an object here; Pusher servers may also send it as a string.
                let data = match &frame["data"] {
                    serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
                    other => other.clone(),
                };
                match data["status"].as_u64() {
                    Some(429) => answers.rate_limited += 1,
                    Some(4100) => answers.over_channel_cap += 1,
                    _ => answers.other += 1,
                }
            }
            Some("pusher:error") => answers.other += 1,
            _ => continue,
        }
        pending -= 1;
    }
    Ok(answers)
}

/// A socket that stops reading: what the server sends piles up in the kernel's buffers,
/// then in the server's queue for it, until the server closes it as a slow consumer.
/// Once a second it writes a `pusher:ping` (so it is not idle either); when that fails,
/// the server has closed the socket, and it is opened again and stalls again, so the
/// server faces the same number of stalled sockets for the whole run.
async fn stall(mut ws: Socket, plan: &Plan, i: usize, shared: &Shared) {
    let ping = r#"{"event":"pusher:ping","data":{}}"#;
    loop {
        tokio::time::sleep(STALLED_PING_EVERY).await;
        if ws.send(Message::text(ping)).await.is_ok() {
            continue;
        }
        shared.closed.fetch_add(1, Ordering::Relaxed);
        ws = loop {
            match tokio::time::timeout(SETUP_TIMEOUT, open(plan, i)).await {
                Ok(Ok(ws)) => break ws,
                _ => {
                    shared.reopen_failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(STALLED_PING_EVERY).await;
                }
            }
        };
        shared.reopened.fetch_add(1, Ordering::Relaxed);
    }
}

/// Engine.IO open packet, then the Socket.IO CONNECT for `/` (the credential is in the
/// URL), answering Engine.IO pings until the CONNECT is answered.
async fn socketio_connect(ws: &mut Socket) -> Result<(), String> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        return Err(format!("no Engine.IO open: {}", short(&open)));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("send: {}", short(&e.to_string())))?;
    loop {
        let frame = next_text(ws).await?;
        if frame == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| format!("send: {}", short(&e.to_string())))?;
        } else if frame.starts_with("40") {
            return Ok(());
        } else if frame.starts_with("44") {
            return Err(format!("refused: {}", short(&frame)));
        }
    }
}

async fn next_text(ws: &mut Socket) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(0, |f| u16::from(f.code));
                return Err(format!("closed with {code}"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {}", short(&e.to_string()))),
            None => return Err("closed".into()),
        }
    }
}

/// Error texts become map keys; keep them short and free of per-socket details.
fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Counts bench events until the socket ends, answering Pusher pings on the way.
async fn receive(mut ws: Socket, shared: &Shared) {
    let mut last_seq: Option<u64> = None;
    while let Some(message) = ws.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Ping(_)) => {
                // tungstenite queued the pong; send it.
                if ws.flush().await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if text.starts_with(r#"{"expires_in_seconds":"#) {
            // A payload socket's countdown: counted, no latency.
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some((sent_us, seq)) = payload::read_stamp(&text) {
            let now = payload::now_micros();
            shared.latency.lock().record(now.saturating_sub(sent_us));
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            shared.first_us.fetch_min(now, Ordering::Relaxed);
            shared.last_us.fetch_max(now, Ordering::Release);
            if last_seq.is_some_and(|last| seq <= last) {
                shared.reordered.fetch_add(1, Ordering::Relaxed);
            }
            last_seq = Some(seq);
        } else if text.starts_with("41") {
            // Socket.IO DISCONNECT (a slow consumer, say): the transport may stay open,
            // but the socket gets nothing more.
            break;
        } else if text.as_str() == "2" {
            // Engine.IO (Socket.IO) ping.
            if ws.send(Message::text("3")).await.is_err() {
                break;
            }
        } else if text.contains("\"pusher:ping\"") {
            let pong = r#"{"event":"pusher:pong","data":{}}"#;
            if ws.send(Message::text(pong)).await.is_err() {
                break;
            }
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
}
