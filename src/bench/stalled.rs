//! `bench stalled`: sockets that stop reading while events keep coming. The server must
//! hold its memory flat (each socket's queue is bounded, a socket that cannot keep up is
//! closed) and the sockets that do read must not notice.
//!
//! Two fleets subscribe to one channel: healthy sockets that read and time every event,
//! and stalled ones that stop reading once subscribed, with a small receive window so
//! that they stall within a few events. A stalled socket writes a `pusher:ping` every
//! second and, when that fails because the server closed it, opens again and stalls
//! again, so the server faces the same number of stalled sockets for the whole run.
//! Meanwhile events are published at a steady rate and the server's RSS is sampled
//! every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::fanout::publish;
use super::fleet::Fleet;
use super::report::Report;
use super::target::{Protocol, Target};
use super::worker::Command;
use super::{MAX_SOCKETS, SpreadArgs, TargetArgs, cpu_secs, payload, plans, rss_kib};

#[derive(Debug, Clone, Args)]
pub struct StalledArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub spread: SpreadArgs,
    /// Sockets that stop reading once subscribed.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=MAX_SOCKETS))]
    pub stalled: u64,
    /// Sockets that read (and time) every event, on the same channel.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS))]
    pub healthy: u64,
    /// Events published per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// How long to publish.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub secs: u64,
    /// Size of each event's data, at least the stamp's 48 bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(payload::MIN_SIZE as u64..=1_048_576))]
    pub bytes: u64,
    /// After the last publish, how long the healthy sockets' deliveries may stall before
    /// the run ends.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub drain_ms: u64,
}

pub async fn run(args: StalledArgs) -> anyhow::Result<Option<Report>> {
    let target = args.target.target()?;
    if target.protocol != Protocol::Pusher {
        anyhow::bail!("bench stalled speaks the Pusher protocol only");
    }
    let channel = format!("bench-stalled-{}", payload::now_micros() % 1_000_000);
    let messages = args.rate * args.secs;
    let deadline = 300 + args.secs + args.drain_ms / 1000;
    let pid = args.target.server_pid;
    let rss_start = pid.and_then(rss_kib);

    let healthy_plans = plans(
        &target,
        args.healthy as usize,
        std::slice::from_ref(&channel),
        &[],
        &args.spread,
        deadline,
    )?;
    let mut healthy = Fleet::start(healthy_plans).await?;
    let healthy_ready = healthy.ready(Duration::from_secs(300)).await?;
    let mut stalled = None;
    let mut stalled_subscribed = 0;
    if args.stalled > 0 {
        let mut stalled_plans = plans(
            &target,
            args.stalled as usize,
            std::slice::from_ref(&channel),
            &[],
            &args.spread,
            deadline,
        )?;
        for plan in &mut stalled_plans {
            plan.stall = true;
        }
        let mut fleet = Fleet::start(stalled_plans).await?;
        stalled_subscribed = fleet
            .ready(Duration::from_secs(300))
            .await?
            .iter()
            .map(|r| r.subscribed)
            .sum();
        stalled = Some(fleet);
    }
    let subscribed: u64 = healthy_ready.iter().map(|r| r.subscribed).sum();
    let failed: u64 = healthy_ready.iter().map(|r| r.failed).sum();

    let slow_before = slow_consumer_closes(&target).await;
    let rss_ready = pid.and_then(rss_kib);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampling = CancellationToken::new();
    tokio::spawn(sample_memory(pid, samples.clone(), sampling.clone()));
    let server_cpu_before = pid.and_then(cpu_secs);
    let measured_from = Instant::now();
    let published = publish(
        std::slice::from_ref(&target),
        &channel,
        messages,
        args.rate,
        args.bytes,
        1,
    )
    .await?;
    let finish = Command::Finish {
        per_socket: published.outcomes.ok,
        drain_ms: args.drain_ms,
    };
    let limit = Duration::from_millis(args.drain_ms) + Duration::from_secs(args.secs + 60);
    let merged = healthy.collect(finish, limit).await?;
    let measured_secs = measured_from.elapsed().as_secs_f64();
    let stalled_merged = match &mut stalled {
        Some(fleet) => Some(
            fleet
                .collect(Command::Report, Duration::from_secs(60))
                .await?,
        ),
        None => None,
    };
    sampling.cancel();
    let server_cpu = match (server_cpu_before, pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => Some((after - before) / measured_secs),
        _ => None,
    };
    let slow_after = slow_consumer_closes(&target).await;
    healthy.stop().await;
    if let Some(fleet) = stalled {
        fleet.stop().await;
    }

    let tcp_max = samples.lock().iter().filter_map(|s| s.tcp_kib).max();
    let samples: Vec<(f64, u64)> = samples
        .lock()
        .iter()
        .filter_map(|s| Some((s.at_secs, s.rss_kib?)))
        .collect();
    let rss_max = samples.iter().map(|(_, kib)| *kib).max();
    // RSS after the first 10 s of publishing (queues and buffers filled once) and at the
    // end: their difference is what a longer run would keep adding.
    let rss_at = |secs: f64| {
        samples
            .iter()
            .find(|(at, _)| *at >= secs)
            .or(samples.last())
            .map(|(_, kib)| *kib)
    };
    let rss_at_10s = rss_at(10.0);
    let rss_end = samples.last().map(|(_, kib)| *kib);
    let every_5s: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| (*at as u64).is_multiple_of(5))
        .map(|(_, kib)| *kib)
        .collect();

    let expected = published.outcomes.ok * subscribed;
    let latency = merged.latency.summary();
    let ms = |us: u64| us as f64 / 1000.0;
    let (stalled_closed, reopened, reopen_failures) = stalled_merged
        .as_ref()
        .map_or((0, 0, 0), |m| (m.closed, m.reopened, m.reopen_failures));
    let mut report = Report::new("stalled");
    report
        .add("stalled", "stalled sockets requested", args.stalled)
        .add(
            "stalled_subscribed",
            "stalled sockets subscribed",
            stalled_subscribed,
        )
        .add("healthy", "healthy sockets requested", args.healthy)
        .add(
            "healthy_subscribed",
            "healthy sockets subscribed",
            subscribed,
        )
        .add("healthy_failed", "healthy sockets failed", failed)
        .add("rate", "publish rate (msg/s)", args.rate)
        .add("secs", "publishing for (s)", args.secs)
        .add("bytes", "data bytes", args.bytes)
        .add("published", "accepted by the API", published.outcomes.ok)
        .add(
            "publish_errors",
            "publish errors",
            published.outcomes.error_count(),
        )
        .add("publish_secs", "publishing took (s)", published.secs)
        .add("expected", "healthy deliveries expected", expected)
        .add("delivered", "healthy deliveries", merged.delivered)
        .add(
            "delivered_ratio",
            "delivered / expected",
            merged.delivered as f64 / expected.max(1) as f64,
        )
        .add("healthy_closed", "healthy sockets dropped", merged.closed)
        .add("p50_ms", "healthy latency p50 (ms)", ms(latency.p50_us))
        .add("p90_ms", "healthy latency p90 (ms)", ms(latency.p90_us))
        .add("p99_ms", "healthy latency p99 (ms)", ms(latency.p99_us))
        .add("max_ms", "healthy latency max (ms)", ms(latency.max_us))
        .add(
            "stalled_closed",
            "stalled sockets closed by the server",
            stalled_closed,
        )
        .add("stalled_reopened", "stalled sockets opened again", reopened)
        .add(
            "stalled_reopen_failures",
            "failed re-opens",
            reopen_failures,
        )
        .add(
            "slow_consumer_closes",
            "server: slow-consumer closes (metric)",
            match (slow_before, slow_after) {
                (Some(before), Some(after)) => Some(after - before),
                _ => None,
            },
        )
        .add("server_cpu", "server CPU (cores busy)", server_cpu)
        .add("rss_start_kib", "server RSS before (KiB)", rss_start)
        .add("rss_ready_kib", "server RSS subscribed (KiB)", rss_ready)
        .add("rss_10s_kib", "server RSS at 10 s (KiB)", rss_at_10s)
        .add("rss_end_kib", "server RSS at end (KiB)", rss_end)
        .add("rss_max_kib", "server RSS max (KiB)", rss_max)
        .add(
            "rss_every_5s_kib",
            "server RSS every 5 s (KiB)",
            serde_json::to_value(&every_5s)?,
        )
        .add(
            "tcp_buffers_max_kib",
            "kernel TCP buffers max, machine-wide (KiB)",
            tcp_max,
        );
    Ok(Some(report))
}

/// One reading of [`sample_memory`].
struct Sample {
    /// Seconds since publishing began, rounded.
    at_secs: f64,
    rss_kib: Option<u64>,
    tcp_kib: Option<u64>,
}

/// Samples the server's RSS and the kernel's TCP buffer memory every second until
/// `stop`. The kernel's share is where a stalled socket's unread data waits first (the
/// server's send buffer, the client's receive buffer); it is machine-wide, so it counts
/// the generator's side too.
async fn sample_memory(
    pid: Option<u32>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        samples.lock().push(Sample {
            at_secs: started.elapsed().as_secs_f64().round(),
            rss_kib: pid.and_then(rss_kib),
            tcp_kib: tcp_buffers_kib(),
        });
    }
}

/// Memory in the kernel's TCP buffers, machine-wide (`TCP: … mem PAGES` of
/// `/proc/net/sockstat`), in KiB.
fn tcp_buffers_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    words.find(|w| *w == "mem")?;
    let pages: u64 = words.next()?.parse().ok()?;
    // 4 KiB pages, as on x86-64 Linux.
    Some(pages * 4)
}

/// `payrelay_slow_consumer_disconnects_total` from the server's `/metrics`, summed over
/// its labels; `None` from a server without it (the ceiling, another implementation).
async fn slow_consumer_closes(target: &Target) -> Option<f64> {
    let http = crate::http_client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let response = http
        .get(format!("http://{}/metrics", target.addr))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let text = response.text().await.ok()?;
    // A counter appears once it has counted something: absent from a node's metrics
    // means none yet.
    Some(
        text.lines()
            .filter(|line| line.starts_with("payrelay_slow_consumer_disconnects_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}
