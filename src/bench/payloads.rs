//! `bench payloads`: payment request sockets (seed 001), on payrelay.
//!
//! P payloads are created through the API, then N sockets follow them (`/sign/{uuid}`,
//! socket i follows payload i mod P), each with its countdown every 15 s, and are held
//! idle: server memory per socket, server CPU while idle, countdowns received. Then, with
//! the N sockets still open, M sequential samples of the two latencies a payment page
//! lives with: **create → socket**, from the create request to the socket's `Welcome`
//! (create, connect, greeting), and **change → socket message**, from the signing side's
//! `POST …/opened` to `{"opened":true}` on the socket (the change recorded, the message
//! through the core's publish path).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::fleet::Fleet;
use super::latency::Latency;
use super::report::Report;
use super::target::{Protocol, Target};
use super::worker::Command;
use super::{MAX_SOCKETS, SpreadArgs, TargetArgs, cpu_secs, plans, rss_kib};

#[derive(Debug, Clone, Args)]
pub struct PayloadsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub spread: SpreadArgs,
    /// Sockets to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS))]
    pub sockets: u64,
    /// Payloads they follow (default: one per socket).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS))]
    pub payloads: Option<u64>,
    /// Create requests in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub create_concurrency: u64,
    /// How long to hold the sockets idle (the server's CPU is measured over it).
    #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hold_secs: u64,
    /// Latency samples, one after the other.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub samples: u64,
}

/// Expiry of the bench's payloads: longer than any run.
const EXPIRE_SECS: f64 = 3600.0;

pub async fn run(args: PayloadsArgs) -> anyhow::Result<Option<Report>> {
    let mut target = args.target.target()?;
    target.protocol = Protocol::Payload;
    let sockets = args.sockets as usize;
    let payloads = args.payloads.unwrap_or(args.sockets) as usize;
    let (uuids, create_time) = target
        .create_payloads(payloads, EXPIRE_SECS, args.create_concurrency as usize)
        .await?;
    let deadline = 600 + args.hold_secs + args.samples;
    let plans = plans(&target, sockets, &uuids, &[], &args.spread, deadline)?;
    let workers = plans.len();
    let pid = args.target.server_pid;
    let rss_before = pid.and_then(rss_kib);

    let mut fleet = Fleet::start(plans).await?;
    let ready = fleet.ready(Duration::from_secs(deadline)).await?;
    let subscribed: u64 = ready.iter().map(|r| r.subscribed).sum();
    let failed: u64 = ready.iter().map(|r| r.failed).sum();
    let connect_secs = ready.iter().map(|r| r.elapsed_ms).max().unwrap_or(0) as f64 / 1000.0;
    let mut errors = BTreeMap::<String, u64>::new();
    for report in &ready {
        for (reason, n) in &report.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
    }

    let cpu_before = pid.and_then(cpu_secs);
    let held_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let held_secs = held_from.elapsed().as_secs_f64();
    let idle_cpu = match (cpu_before, pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => Some((after - before) / held_secs),
        _ => None,
    };
    let rss_held = pid.and_then(rss_kib);
    let held = fleet
        .collect(Command::Report, Duration::from_secs(60))
        .await?;

    let (to_socket, to_message, sample_errors) = sample(&target, args.samples).await?;
    fleet.stop().await;

    let per_socket = match (rss_before, rss_held) {
        (Some(before), Some(after)) if subscribed > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / subscribed as f64)
        }
        _ => None,
    };
    let to_socket = to_socket.summary();
    let to_message = to_message.summary();
    let ms = |us: u64| us as f64 / 1000.0;
    let mut report = Report::new("payloads");
    report
        .add("payloads", "payloads created", uuids.len())
        .add(
            "creates_per_sec",
            "creates/s",
            uuids.len() as f64 / create_time.as_secs_f64().max(0.001),
        )
        .add("sockets", "sockets requested", sockets)
        .add("workers", "worker processes", workers)
        .add("subscribed", "sockets greeted", subscribed)
        .add("failed", "failed", failed)
        .add("errors", "failure reasons", serde_json::to_value(&errors)?)
        .add("connect_secs", "connect time (s)", connect_secs)
        .add("hold_secs", "held for (s)", held_secs)
        .add(
            "countdowns",
            "countdowns received while held",
            held.delivered,
        )
        .add("dropped_while_held", "dropped while held", held.closed)
        .add(
            "rss_before_kib",
            "server RSS before sockets (KiB)",
            rss_before,
        )
        .add("rss_held_kib", "server RSS held (KiB)", rss_held)
        .add(
            "rss_per_socket_bytes",
            "server RSS per socket (B)",
            per_socket,
        )
        .add(
            "idle_cpu_percent",
            "server CPU while held (% of a core)",
            idle_cpu.map(|cores| cores * 100.0),
        )
        .add("samples", "latency samples", to_socket.count)
        .add("sample_errors", "failed samples", sample_errors)
        .add(
            "create_to_socket_p50_ms",
            "create → Welcome p50 (ms)",
            ms(to_socket.p50_us),
        )
        .add(
            "create_to_socket_p99_ms",
            "create → Welcome p99 (ms)",
            ms(to_socket.p99_us),
        )
        .add(
            "change_to_message_p50_ms",
            "opened → socket message p50 (ms)",
            ms(to_message.p50_us),
        )
        .add(
            "change_to_message_p99_ms",
            "opened → socket message p99 (ms)",
            ms(to_message.p99_us),
        )
        .add(
            "change_to_message_max_ms",
            "opened → socket message max (ms)",
            ms(to_message.max_us),
        );
    Ok(Some(report))
}

/// `samples` rounds of: create a payload, connect its socket, read the greeting; report
/// it opened, read `{"opened":true}`. Returns both latencies and the rounds that failed.
async fn sample(target: &Target, samples: u64) -> anyhow::Result<(Latency, Latency, u64)> {
    let http = crate::http_client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut to_socket = Latency::default();
    let mut to_message = Latency::default();
    let mut failed = 0;
    for _ in 0..samples {
        let round = async {
            let started = Instant::now();
            let uuid = target.create_payload(&http, EXPIRE_SECS).await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(target.payload_url(&uuid)).await?;
            expect(&mut ws, "Welcome").await?;
            let greeted = started.elapsed();
            expect(&mut ws, "expires_in_seconds").await?;
            let opened_at = Instant::now();
            target.open_payload(&http, &uuid).await?;
            expect(&mut ws, r#"{"opened":true}"#).await?;
            let told = opened_at.elapsed();
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>((greeted, told))
        };
        match tokio::time::timeout(Duration::from_secs(10), round).await {
            Ok(Ok((greeted, told))) => {
                to_socket.record(greeted.as_micros() as u64);
                to_message.record(told.as_micros() as u64);
            }
            _ => failed += 1,
        }
    }
    Ok((to_socket, to_message, failed))
}

/// Reads text frames until one contains `wanted`.
async fn expect<S>(ws: &mut S, wanted: &str) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message?
            && text.contains(wanted)
        {
            return Ok(());
        }
    }
    anyhow::bail!("the socket closed before {wanted}")
}
