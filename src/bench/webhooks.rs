//! Callback scenarios: `payrelay bench webhooks` (throughput, latency, what a webhook costs
//! the publish, failing endpoints beside a healthy one) and `payrelay bench webhook-crash`
//! (`kill -9` at random moments; nothing accepted may be lost).
//!
//! Both start their own node (this binary, `serve`, a fresh SQLite file or the given
//! `--database-url`) on loopback and receive the callbacks in-process: the receiver counts
//! each `webhook-id` and reads the publish time the bench stamped into the event's data,
//! so publish-to-callback latency needs no clock but this machine's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::latency::Latency;
use super::report::Report;

const APP_KEY: &str = "bench-key";
const APP_SECRET: &str = "bench-secret";

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node's database; default a fresh SQLite file in a temporary folder. A
    /// `postgres://` URL must name an empty database the bench may fill.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Port of the node the bench starts. 0: the bench picks a free one, and another if
    /// the node cannot start on it (someone took it in between), so parallel runs and
    /// tests never collide.
    #[arg(long, default_value_t = 6201)]
    pub port: u16,
}

#[derive(Debug, Clone, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Events published for the throughput figure.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub events: u64,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Merchants the throughput publishes go to in turn, each with an endpoint at the
    /// same receiver. One endpoint is bounded by `max_in_flight_per_endpoint` (16)
    /// attempts at once; several show what the node sends in total.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub endpoints: u64,
    /// Events published one at a time for the latency figures.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub latency_events: u64,
    /// Failing endpoints (each answers 500) beside the healthy one.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub failing_endpoints: u64,
    /// Hanging endpoints (each holds every request past the attempt timeout) beside the
    /// healthy one, each sent a message every second while the healthy one is measured.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=5_000))]
    pub hanging_endpoints: u64,
    /// The node's `timeout_secs` (the hanging endpoints hold each attempt this long).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_secs: u64,
    /// The node's `outbox_commits_in_flight` (PostgreSQL only); default the node's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub commits_in_flight: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct CrashArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// How many times the node is killed (`kill -9`) and restarted.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub kills: u64,
    /// Events published per second while it happens.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rate: u64,
    /// Longest run of the node between two kills, in milliseconds (each is random below).
    #[arg(long, default_value_t = 1_500)]
    pub max_uptime_ms: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------- the receiver

#[derive(Default)]
struct Received {
    /// Receipts per webhook-id.
    counts: HashMap<String, u32>,
    latency: Latency,
    total: u64,
    /// When the latest receipt came.
    last: Option<Instant>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Received>>,
}

async fn receive(
    axum::extract::State(seen): axum::extract::State<Arc<Mutex<Received>>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    if uri.path() == "/fail" {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    if uri.path() == "/hang" {
        // Past any attempt timeout: the node gives up first.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return axum::http::StatusCode::NO_CONTENT;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let sent_us = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["data"]["t"].as_u64());
    let mut seen = seen.lock();
    let first = {
        let count = seen.counts.entry(id).or_insert(0);
        *count += 1;
        *count == 1
    };
    if first && let Some(sent) = sent_us {
        seen.latency.record(now_us().saturating_sub(sent));
    }
    seen.total += 1;
    seen.last = Some(Instant::now());
    axum::http::StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let seen = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { addr, seen })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn unique(&self) -> usize {
        self.seen.lock().counts.len()
    }
}

// ---------------------------------------------------------------- the node

/// A `payrelay serve` child on loopback.
struct Node {
    child: Option<Child>,
    config: std::path::PathBuf,
    /// The configuration without its `bind` line.
    settings: String,
    node_id: String,
    base: String,
    /// The bench picks the port (`--port 0`), and may pick another until the node first
    /// started.
    pick_port: bool,
    started_once: bool,
    _dir: TempDir,
}

/// A port free a moment ago. The node binds it a little later: someone else may bind it
/// in between, which `Node::start` handles by picking again.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A temporary folder removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Node {
    fn new(args: &NodeArgs, webhooks: &str) -> anyhow::Result<Node> {
        let dir =
            std::env::temp_dir().join(format!("payrelay-bench-webhooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if let Some(url) = &args.database_url {
            super::require_loopback_url("--database-url", url)?;
        }
        let database = args
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
        // The node's id tells it from whatever else may answer on the port.
        let node_id = format!("bench-{}-{:08x}", std::process::id(), rand::random::<u32>());
        let settings = format!(
            "node_id = \"{node_id}\"\nlog_level = \"warn\"\ndatabase_url = \"{database}\"\n\
             max_tcp_connections_per_ip = 0\n[webhooks]\nallow_private_targets = true\n{webhooks}\n\
             [[apps]]\nid = \"1\"\nkey = \"{APP_KEY}\"\nsecret = \"{APP_SECRET}\"\nmax_connections = 0\n"
        );
        let mut node = Node {
            child: None,
            config: dir.join("payrelay.toml"),
            settings,
            node_id,
            base: String::new(),
            pick_port: args.port == 0,
            started_once: false,
            _dir: TempDir(dir),
        };
        let port = if node.pick_port {
            free_port()?
        } else {
            args.port
        };
        node.listen_on(port)?;
        Ok(node)
    }

    /// Writes the configuration with the node on `port`.
    fn listen_on(&mut self, port: u16) -> anyhow::Result<()> {
        std::fs::write(
            &self.config,
            format!("bind = \"127.0.0.1:{port}\"\n{}", self.settings),
        )?;
        self.base = format!("http://127.0.0.1:{port}");
        Ok(())
    }

    /// Starts the node and waits until it answers. With a picked port, a node that exits
    /// at its first start (the port was taken in between) is started again on another.
    async fn start(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            match self.start_once(http).await {
                Err(StartError::Exited(status))
                    if self.pick_port && !self.started_once && tries < 5 =>
                {
                    tries += 1;
                    eprintln!("the node exited at start ({status}); trying another port");
                    let port = free_port()?;
                    self.listen_on(port)?;
                }
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    self.started_once = true;
                    return Ok(());
                }
            }
        }
    }

    async fn start_once(&mut self, http: &reqwest::Client) -> Result<(), StartError> {
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
                && let Ok(ready) = r.json::<Value>().await
                && ready["node_id"] == self.node_id.as_str()
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(StartError::Exited(status));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StartError::Silent)
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("the node exited at start: {0}")]
    Exited(std::process::ExitStatus),
    #[error("the node did not answer within 30 s")]
    Silent,
    #[error("cannot start the node: {0}")]
    Spawn(#[from] std::io::Error),
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::Client {
    crate::http_client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

async fn create_endpoint(
    http: &reqwest::Client,
    node: &Node,
    merchant: &str,
    url: &str,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("{}/v1/webhooks/endpoints", node.base))
        .basic_auth(APP_KEY, Some(APP_SECRET))
        .json(&json!({"url": url, "merchant_id": merchant}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 201,
        "creating an endpoint: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Publishes one event stamped with the time; returns its id and how long the API took.
async fn publish(
    http: &reqwest::Client,
    base: &str,
    merchant: &str,
    seq: u64,
) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/v1/events"))
        .basic_auth(APP_KEY, Some(APP_SECRET))
        .json(
            &json!({"merchant_id": merchant, "kind": "payments", "event": "bench",
                      "data": {"t": now_us(), "seq": seq}}),
        )
        .send()
        .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        response.status().is_success(),
        "publish: {}",
        response.status()
    );
    let body: Value = response.json().await?;
    Ok((body["id"].as_str().unwrap_or_default().to_string(), took))
}

/// Publishes `count` events to `merchants` in turn, `concurrency` at a time; returns the
/// publish latencies.
async fn publish_many(
    http: &reqwest::Client,
    base: &str,
    merchants: &[String],
    count: u64,
    concurrency: u64,
) -> anyhow::Result<Latency> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let merchants: Arc<[String]> = merchants.into();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, base, merchants, next) = (
            http.clone(),
            base.to_string(),
            merchants.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latency = Latency::default();
            loop {
                let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seq >= count {
                    return Ok::<_, anyhow::Error>(latency);
                }
                let merchant = &merchants[(seq % merchants.len() as u64) as usize];
                let (_, took) = publish(&http, &base, merchant, seq).await?;
                latency.record(took.as_micros() as u64);
            }
        }));
    }
    let mut all = Latency::default();
    for task in tasks {
        all.merge(&task.await??);
    }
    Ok(all)
}

async fn wait_delivered(receiver: &Receiver, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if receiver.unique() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The `_sum` and `_count` of each of `names` (histograms or summaries) in the node's
/// `/metrics`.
async fn metric_sums(
    http: &reqwest::Client,
    base: &str,
    names: &[&str],
) -> anyhow::Result<HashMap<String, (f64, f64)>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut found = HashMap::new();
    for name in names {
        let value = |suffix: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(suffix)?
                        .strip_prefix(' ')
                })
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        found.insert(name.to_string(), (value("_sum"), value("_count")));
    }
    Ok(found)
}

/// Where the throughput run's time went, from the node's own histograms: commits (how
/// many, how long, how many events each), attempts (how long), between two readings.
const PROFILE: [&str; 4] = [
    "payrelay_webhook_outbox_commit_seconds",
    "payrelay_webhook_outbox_batch_events",
    "payrelay_webhook_attempt_seconds",
    "payrelay_webhook_claim_round_seconds",
];

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

// ---------------------------------------------------------------- webhooks

pub async fn run(args: WebhooksArgs) -> anyhow::Result<Option<Report>> {
    let http = client();
    let receiver = Receiver::start().await?;
    let mut node = Node::new(
        &args.node,
        &format!(
            "retry_schedule_secs = [1, 5, 30]\ntimeout_secs = {}\n{}",
            args.timeout_secs,
            args.commits_in_flight
                .map(|n| format!("outbox_commits_in_flight = {n}"))
                .unwrap_or_default()
        ),
    )?;
    node.start(&http).await?;
    let mut report = Report::new("webhooks");

    // 1. What a webhook-enabled merchant adds to /v1/events: the same publishes with
    //    and without an endpoint, one at a time.
    let plain = ["plain".to_string()];
    let hooked: Vec<String> = (0..args.endpoints).map(|i| format!("hooked{i}")).collect();
    let without = publish_many(&http, &node.base, &plain, args.latency_events, 1).await?;
    for merchant in &hooked {
        create_endpoint(&http, &node, merchant, &receiver.url("/ok")).await?;
    }
    let with = publish_many(&http, &node.base, &hooked[..1], args.latency_events, 1).await?;
    wait_delivered(
        &receiver,
        args.latency_events as usize,
        Duration::from_secs(60),
    )
    .await;
    let healthy = receiver.seen.lock().latency.summary();
    let (a, b) = (without.summary(), with.summary());
    report
        .add(
            "publish_p50_ms_without",
            "/v1/events p50 without endpoint (ms)",
            ms(a.p50_us),
        )
        .add(
            "publish_p99_ms_without",
            "/v1/events p99 without endpoint (ms)",
            ms(a.p99_us),
        )
        .add(
            "publish_p50_ms_with",
            "/v1/events p50 with an endpoint (ms)",
            ms(b.p50_us),
        )
        .add(
            "publish_p99_ms_with",
            "/v1/events p99 with an endpoint (ms)",
            ms(b.p99_us),
        )
        .add(
            "callback_p50_ms",
            "publish → callback p50, one at a time (ms)",
            ms(healthy.p50_us),
        )
        .add(
            "callback_p99_ms",
            "publish → callback p99, one at a time (ms)",
            ms(healthy.p99_us),
        );

    // 2. Throughput: many publishes at once; deliveries per second from the first
    //    publish to the last callback.
    *receiver.seen.lock() = Received::default();
    let cpu = |pid: Option<u32>| pid.and_then(super::cpu_secs).unwrap_or(0.0);
    let (server_cpu, own_cpu) = (cpu(node.pid()), cpu(Some(std::process::id())));
    let before = metric_sums(&http, &node.base, &PROFILE).await?;
    let started = Instant::now();
    let concurrent =
        publish_many(&http, &node.base, &hooked, args.events, args.concurrency).await?;
    let published = started.elapsed();
    let all = wait_delivered(&receiver, args.events as usize, Duration::from_secs(300)).await;
    let last = receiver.seen.lock().last.unwrap_or_else(Instant::now);
    let delivered = receiver.unique();
    let took = last.duration_since(started).max(published);
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = (cpu(node.pid()) - server_cpu) / wall;
    let own_cpu = (cpu(Some(std::process::id())) - own_cpu) / wall;
    let busy = receiver.seen.lock().latency.summary();
    let after = metric_sums(&http, &node.base, &PROFILE).await?;
    let delta = |name: &str| {
        let (a, b) = (after[name], before[name]);
        (a.0 - b.0, a.1 - b.1)
    };
    let (commit_secs, commits) = delta(PROFILE[0]);
    let (batched, batches) = delta(PROFILE[1]);
    let (attempt_secs, attempts) = delta(PROFILE[2]);
    let (claim_secs, claim_rounds) = delta(PROFILE[3]);
    let mean = |sum: f64, count: f64| if count > 0.0 { sum / count } else { 0.0 };
    report
        .add("commits", "outbox commits during it", commits as u64)
        .add(
            "commit_mean_ms",
            "mean commit (ms)",
            (mean(commit_secs, commits) * 100_000.0).round() / 100.0,
        )
        .add(
            "writer_busy",
            "share of the time the outbox writer was committing",
            (commit_secs / wall * 100.0).round() / 100.0,
        )
        .add(
            "events_per_commit",
            "events per commit with events",
            (mean(batched, batches) * 10.0).round() / 10.0,
        )
        .add(
            "attempt_mean_ms",
            "mean attempt, POST to answer (ms)",
            (mean(attempt_secs, attempts) * 100_000.0).round() / 100.0,
        )
        .add(
            "claim_rounds",
            "claim rounds during it",
            claim_rounds as u64,
        )
        .add(
            "claim_round_mean_ms",
            "mean claim round (ms)",
            (mean(claim_secs, claim_rounds) * 100_000.0).round() / 100.0,
        );
    report
        .add("events", "events published concurrently", args.events)
        .add("endpoints", "endpoints they go to", args.endpoints)
        .add("delivered", "delivered", delivered as u64)
        .add("all_delivered", "all delivered", all)
        .add(
            "deliveries_per_sec",
            "deliveries/s (first publish → last callback)",
            (delivered as f64 / took.as_secs_f64()).round(),
        )
        .add(
            "publish_p99_ms_busy",
            "/v1/events p99 under that load (ms)",
            ms(concurrent.summary().p99_us),
        )
        .add(
            "callback_p99_ms_busy",
            "publish → callback p99 under that load (ms)",
            ms(busy.p99_us),
        )
        .add(
            "server_cpu",
            "server CPU during it (cores)",
            (server_cpu * 100.0).round() / 100.0,
        )
        .add(
            "bench_cpu",
            "publisher + receiver CPU during it (cores)",
            (own_cpu * 100.0).round() / 100.0,
        );

    // 3. Failing endpoints beside the healthy one: each failing merchant publishes too.
    if args.failing_endpoints > 0 {
        for i in 0..args.failing_endpoints {
            create_endpoint(&http, &node, &format!("failing{i}"), &receiver.url("/fail")).await?;
        }
        let failing = args.failing_endpoints;
        let noise = {
            let (http, base) = (http.clone(), node.base.clone());
            tokio::spawn(async move {
                for i in 0..failing {
                    let _ = publish(&http, &base, &format!("failing{i}"), i).await;
                }
            })
        };
        noise.await?;
        *receiver.seen.lock() = Received::default();
        publish_many(&http, &node.base, &hooked[..1], args.latency_events, 1).await?;
        wait_delivered(
            &receiver,
            args.latency_events as usize,
            Duration::from_secs(60),
        )
        .await;
        let beside = receiver.seen.lock().latency.summary();
        report
            .add(
                "failing_endpoints",
                "failing endpoints (500, retrying)",
                failing,
            )
            .add(
                "callback_p50_ms_beside_failing",
                "healthy publish → callback p50 beside them (ms)",
                ms(beside.p50_us),
            )
            .add(
                "callback_p99_ms_beside_failing",
                "healthy publish → callback p99 beside them (ms)",
                ms(beside.p99_us),
            );
    }
    // 4. Hanging endpoints beside the healthy one: each fails once (its first attempt
    //    times out), then keeps getting messages that hang until the timeout, while the
    //    healthy merchant publishes one at a time.
    if args.hanging_endpoints > 0 {
        let hanging = args.hanging_endpoints;
        for i in 0..hanging {
            create_endpoint(&http, &node, &format!("hanging{i}"), &receiver.url("/hang")).await?;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let noise = {
            let (http, base, stop) = (http.clone(), node.base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut round = 0;
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    for i in 0..hanging {
                        let _ = publish(&http, &base, &format!("hanging{i}"), round).await;
                    }
                    round += 1;
                    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()))
                        .await;
                }
            })
        };
        // Every hanging endpoint's first attempt has timed out by now: they are failing.
        tokio::time::sleep(Duration::from_secs(args.timeout_secs + 2)).await;
        *receiver.seen.lock() = Received::default();
        publish_many(&http, &node.base, &hooked[..1], args.latency_events, 1).await?;
        let all = wait_delivered(
            &receiver,
            args.latency_events as usize,
            Duration::from_secs(120),
        )
        .await;
        stop.cancel();
        noise.await?;
        let beside = receiver.seen.lock().latency.summary();
        report
            .add(
                "hanging_endpoints",
                "hanging endpoints (past the timeout, a message each per second)",
                hanging,
            )
            .add("timeout_secs", "attempt timeout (s)", args.timeout_secs)
            .add(
                "healthy_all_delivered_beside_hanging",
                "healthy messages all delivered beside them",
                all,
            )
            .add(
                "callback_p50_ms_beside_hanging",
                "healthy publish → callback p50 beside them (ms)",
                ms(beside.p50_us),
            )
            .add(
                "callback_p99_ms_beside_hanging",
                "healthy publish → callback p99 beside them (ms)",
                ms(beside.p99_us),
            )
            .add(
                "callback_max_ms_beside_hanging",
                "healthy publish → callback max beside them (ms)",
                ms(beside.max_us),
            );
    }
    report.add("server_pid", "server pid", node.pid().unwrap_or(0));
    Ok(Some(report))
}

// ---------------------------------------------------------------- crash

pub async fn crash(args: CrashArgs) -> anyhow::Result<Option<Report>> {
    let http = client();
    let receiver = Receiver::start().await?;
    let mut node = Node::new(
        &args.node,
        "retry_schedule_secs = [1, 1, 2, 5, 10]\npoll_interval_ms = 100",
    )?;
    node.start(&http).await?;
    create_endpoint(&http, &node, "m1", &receiver.url("/ok")).await?;

    // The publisher runs for the whole test, through every kill; what got a 2xx is
    // accepted, what got an error or no answer is not.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let unanswered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (http, base, accepted, unanswered, stop) = (
            http.clone(),
            node.base.clone(),
            accepted.clone(),
            unanswered.clone(),
            stop.clone(),
        );
        let interval = Duration::from_micros(1_000_000 / args.rate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            let mut inflight = tokio::task::JoinSet::new();
            while !stop.is_cancelled() {
                tick.tick().await;
                seq += 1;
                let (http, base, accepted, unanswered) = (
                    http.clone(),
                    base.clone(),
                    accepted.clone(),
                    unanswered.clone(),
                );
                inflight.spawn(async move {
                    match publish(&http, &base, "m1", seq).await {
                        Ok((id, _)) => accepted.lock().push(id),
                        Err(_) => {
                            unanswered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    };
    for kill in 0..args.kills {
        let uptime = rand::random::<u64>() % args.max_uptime_ms.max(1);
        tokio::time::sleep(Duration::from_millis(uptime)).await;
        node.kill();
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 200)).await;
        node.start(&http).await?;
        eprintln!("kill {}/{} done", kill + 1, args.kills);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    publisher.await?;
    let accepted = accepted.lock().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let lost = loop {
        let lost = {
            let seen = receiver.seen.lock();
            accepted
                .iter()
                .filter(|id| !seen.counts.contains_key(*id))
                .count()
        };
        if lost == 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (unique, total) = {
        let seen = receiver.seen.lock();
        (seen.counts.len(), seen.total)
    };
    let mut report = Report::new("webhook-crash");
    report
        .add("kills", "kill -9 and restart", args.kills)
        .add("accepted", "events accepted (2xx)", accepted.len() as u64)
        .add(
            "unanswered",
            "publishes without a 2xx (node down)",
            unanswered.load(std::sync::atomic::Ordering::Relaxed),
        )
        .add(
            "delivered",
            "accepted events delivered",
            (accepted.len() - lost) as u64,
        )
        .add(
            "delivered_unacknowledged",
            "delivered though unanswered",
            unique.saturating_sub(accepted.len() - lost) as u64,
        )
        .add(
            "duplicated",
            "duplicate deliveries (same webhook-id)",
            total - unique as u64,
        )
        .add("lost", "accepted events never delivered", lost as u64);
    if lost > 0 {
        report.print();
        anyhow::bail!("{lost} accepted events were lost");
    }
    Ok(Some(report))
}

// ---------------------------------------------------------------- the claim

/// `payrelay bench outbox-claim`: what one claim costs against a backlog.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// The database to fill: `sqlite://path` (created) or `postgres://…`. Use an empty,
    /// scratch database: every proven endpoint in it takes part in the claims.
    #[arg(long)]
    pub database_url: String,
    /// Due messages waiting, spread evenly over the endpoints.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub pending: u64,
    /// Proven endpoints they belong to.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub endpoints: u64,
    /// Claims timed (each takes an endpoint's share of 16 from every endpoint, then gives
    /// the leases back).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rounds: u64,
}

/// Fills the outbox through the writer's own batch statement, then times claims of one
/// share per endpoint, each followed by giving the leases back so the next finds the
/// same backlog. The claim's cost should follow the endpoints, not the backlog.
pub async fn claim(args: ClaimArgs) -> anyhow::Result<Option<Report>> {
    use crate::db::Db;
    use crate::webhooks::endpoint::{EventFilter, Kind};
    use crate::webhooks::store::{EndpointRow, Health, NewDelivery, NewEvent, OutboxStore};

    const SHARE: i64 = 16;
    const OWNER: &str = "bench-claim";
    super::require_loopback_url("--database-url", &args.database_url)?;
    let db = Db::open(&args.database_url).await?;
    let store = OutboxStore::new(db.clone());
    let run = format!("{:08x}", rand::random::<u32>());
    let endpoints: Vec<String> = (0..args.endpoints)
        .map(|i| format!("ep_bench_{run}_{i}"))
        .collect();
    for id in &endpoints {
        let mut row = EndpointRow::fresh(
            id.clone(),
            "bench".into(),
            Some(format!("m_{id}")),
            Kind::Standard,
            "http://127.0.0.1:9/".into(),
            EventFilter::all(),
            "whsec_bench".into(),
        );
        row.last_success_at = Some(1);
        store.insert_endpoint(&row).await?;
    }
    let filling = Instant::now();
    let mut written = 0;
    while written < args.pending {
        let events: Vec<NewEvent> = (written..(written + 1000).min(args.pending))
            .map(|i| NewEvent {
                id: format!("evt_bench_{run}_{i:09}"),
                app_id: "bench".into(),
                merchant_id: None,
                event_type: "bench".into(),
                channel: None,
                payload: "{}".into(),
                created_at: i as i64 + 1,
                deliveries: vec![NewDelivery {
                    endpoint_id: endpoints[(i % args.endpoints) as usize].clone(),
                    lease_until: 0,
                }],
            })
            .collect();
        written += events.len() as u64;
        store
            .write_batch(&events, &[], OWNER, crate::db::now_ms())
            .await?;
    }
    let fill_secs = filling.elapsed().as_secs_f64();

    let mut times = Latency::default();
    let mut claimed = 0;
    for _ in 0..args.rounds {
        let now = crate::db::now_ms();
        let started = Instant::now();
        let got = store
            .claim(
                now,
                now + 60_000,
                OWNER,
                SHARE,
                SHARE * args.endpoints as i64,
                Health::Proven,
            )
            .await?;
        times.record(started.elapsed().as_micros() as u64);
        claimed = got.len();
        store.release_leases(Some(OWNER)).await?;
    }
    for id in &endpoints {
        store.delete_endpoint("bench", id).await?;
    }
    db.close().await;
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    let mut report = Report::new("outbox-claim");
    report
        .add("backend", "database", format!("{:?}", store.backend()))
        .add("pending", "due messages waiting", args.pending)
        .add("endpoints", "proven endpoints", args.endpoints)
        .add(
            "fill_per_sec",
            "messages recorded per second while filling",
            (args.pending as f64 / fill_secs).round(),
        )
        .add("claimed", "messages one claim leased", claimed as u64)
        .add("rounds", "claims timed", args.rounds)
        .add("claim_p50_ms", "claim p50 (ms)", ms(times.summary().p50_us))
        .add("claim_max_ms", "claim max (ms)", ms(times.summary().max_us));
    Ok(Some(report))
}
