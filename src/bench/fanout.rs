//! `bench fanout`: S subscribers on one channel, M messages published through the HTTP
//! API at a steady rate; how many arrive, how fast, and how late.
//!
//! Latency is publish-to-delivery: the publisher stamps each message with the wall clock
//! just before sending the HTTP request, each subscriber subtracts it on arrival. Both
//! run on this machine, so they read the same clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::fleet::Fleet;
use super::report::Report;
use super::target::Target;
use super::target::{Outcomes, Publisher};
use super::worker::Command;
use super::{
    ClusterArgs, MAX_SOCKETS, SpreadArgs, TargetArgs, cluster_plans, cpu_secs, payload, rss_kib,
};

/// Publish requests in flight at once; enough for thousands of messages per second.
const PUBLISH_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub spread: SpreadArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Nodes to publish through, in turn (comma-separated `host:port`); default: `--url`.
    #[arg(long, value_delimiter = ',')]
    pub publish_to: Vec<String>,
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS))]
    pub subscribers: u64,
    /// Messages to publish.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub messages: u64,
    /// Size of each message's data, at least the stamp's 48 bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(payload::MIN_SIZE as u64..=1_048_576))]
    pub bytes: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Messages per publish request: above 1, `POST /batch_events` with this many events
    /// (Pusher allows 10), each stamped when its request is sent.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10))]
    pub batch: u64,
    /// After the last publish, how long deliveries may stall before the run ends.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub drain_ms: u64,
    /// Channel name (default: a fresh `bench-fanout-…` per run).
    #[arg(long)]
    pub channel: Option<String>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<Option<Report>> {
    let target = args.target.target()?;
    if target.protocol == super::target::Protocol::Payload {
        anyhow::bail!(
            "payload sockets get only their payload's messages; use `bench payloads` for them"
        );
    }
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("bench-fanout-{}", payload::now_micros() % 1_000_000));
    let subscribers = args.subscribers as usize;
    let publish_secs_planned = args.messages.div_ceil(args.rate);
    let deadline = 300 + publish_secs_planned + args.drain_ms / 1000;
    let (channels, api_keys) = target.prepare_channels(vec![channel]).await?;
    let channel = channels[0].clone();
    let targets = args.cluster.targets(&target)?;
    let publish_to: Vec<Target> = if args.publish_to.is_empty() {
        vec![target.clone()]
    } else {
        ClusterArgs {
            nodes: args.publish_to.clone(),
            ..Default::default()
        }
        .targets(&target)?
    };
    let plans = cluster_plans(
        &targets,
        subscribers,
        &channels,
        &api_keys,
        &args.spread,
        deadline,
    )?;
    let workers = plans.len();
    let pid = args.target.server_pid;

    let mut fleet = Fleet::start(plans).await?;
    let ready = fleet.ready(Duration::from_secs(300)).await?;
    let subscribed: u64 = ready.iter().map(|r| r.subscribed).sum();
    let failed: u64 = ready.iter().map(|r| r.failed).sum();

    let server_cpu_before = pid.and_then(cpu_secs);
    let nodes_cpu_before = args.cluster.cpu_secs();
    let redis_cpu_before = args.cluster.redis_pid.and_then(cpu_secs);
    let own_cpu_before = cpu_secs(std::process::id());
    let measured_from = Instant::now();
    let published = publish(
        &publish_to,
        &channel,
        args.messages,
        args.rate,
        args.bytes,
        args.batch,
    )
    .await?;
    let finish = Command::Finish {
        per_socket: published.outcomes.ok,
        drain_ms: args.drain_ms,
    };
    let limit =
        Duration::from_millis(args.drain_ms) + Duration::from_secs(publish_secs_planned + 60);
    let merged = fleet.collect(finish, limit).await?;
    let measured_secs = measured_from.elapsed().as_secs_f64();
    let utilisation = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) => Some((a - b) / measured_secs),
        _ => None,
    };
    let server_cpu = utilisation(server_cpu_before, pid.and_then(cpu_secs));
    let nodes_cpu = utilisation(nodes_cpu_before, args.cluster.cpu_secs());
    let redis_cpu = utilisation(redis_cpu_before, args.cluster.redis_pid.and_then(cpu_secs));
    // CPU time per delivery (µs), over the whole measured span.
    let per_delivery = |cores: Option<f64>| {
        cores.map(|c| c * measured_secs * 1e6 / merged.delivered.max(1) as f64)
    };
    let nodes_rss = args.cluster.rss_kib();
    let redis_rss = args.cluster.redis_pid.and_then(rss_kib);
    let generator_cpu = utilisation(own_cpu_before, cpu_secs(std::process::id()))
        .map(|publisher| publisher + merged.cpu_secs / measured_secs);
    let rss = pid.and_then(rss_kib);
    fleet.stop().await;

    let expected = published.outcomes.ok * subscribed;
    let span_secs = merged.last_us.saturating_sub(published.first_us) as f64 / 1e6;
    let latency = merged.latency.summary();
    let ms = |us: u64| us as f64 / 1000.0;
    let publish_errors = published.outcomes.error_count();
    let mut report = Report::new("fanout");
    report
        .add("subscribers", "subscribers requested", subscribers)
        .add("subscribed", "subscribed", subscribed)
        .add("failed", "failed to subscribe", failed)
        .add("workers", "worker processes", workers)
        .add("messages", "messages", args.messages)
        .add("bytes", "data bytes", args.bytes)
        .add("rate", "publish rate (msg/s)", args.rate)
        .add("batch", "messages per request", args.batch)
        .add("published", "accepted by the API", published.outcomes.ok)
        .add("publish_errors", "publish errors", publish_errors)
        .add(
            "publish_errors_by_status",
            "publish errors by status",
            serde_json::to_value(&published.outcomes.errors)?,
        )
        .add("publish_secs", "publishing took (s)", published.secs)
        .add(
            "publishes_per_sec",
            "publishes accepted/s",
            published.outcomes.ok as f64 / published.secs.max(0.001),
        )
        .add("expected", "deliveries expected", expected)
        .add("delivered", "delivered", merged.delivered)
        .add(
            "delivered_ratio",
            "delivered / expected",
            merged.delivered as f64 / expected.max(1) as f64,
        )
        .add("reordered", "out of publish order", merged.reordered)
        .add("closed", "sockets dropped", merged.closed)
        .add(
            "offered_deliveries_per_sec",
            "offered deliveries/s",
            (args.rate * subscribed) as f64,
        )
        .add(
            "deliveries_per_sec",
            "deliveries/s",
            merged.delivered as f64 / span_secs.max(0.001),
        )
        .add("p50_ms", "latency p50 (ms)", ms(latency.p50_us))
        .add("p90_ms", "latency p90 (ms)", ms(latency.p90_us))
        .add("p99_ms", "latency p99 (ms)", ms(latency.p99_us))
        .add("max_ms", "latency max (ms)", ms(latency.max_us))
        .add("server_cpu", "server CPU (cores busy)", server_cpu)
        .add(
            "server_cpu_us_per_delivery",
            "server CPU per delivery (µs)",
            per_delivery(server_cpu),
        )
        .add("generator_cpu", "generator CPU (cores busy)", generator_cpu)
        .add("server_rss_kib", "server RSS at end (KiB)", rss)
        .add("nodes", "nodes subscribed on", targets.len())
        .add("publish_nodes", "nodes published through", publish_to.len())
        .add("nodes_cpu", "nodes' CPU (cores busy)", nodes_cpu)
        .add(
            "nodes_cpu_us_per_delivery",
            "nodes' CPU per delivery (µs)",
            per_delivery(nodes_cpu),
        )
        .add(
            "nodes_rss_kib",
            "nodes' RSS at end (KiB)",
            serde_json::to_value(&nodes_rss)?,
        )
        .add("redis_rss_kib", "Redis RSS at end (KiB)", redis_rss)
        .add("redis_cpu", "Redis CPU (cores busy)", redis_cpu)
        .add(
            "redis_cpu_us_per_delivery",
            "Redis CPU per delivery (µs)",
            per_delivery(redis_cpu),
        );
    Ok(Some(report))
}

pub(super) struct PublishOutcome {
    pub outcomes: Outcomes,
    pub first_us: u64,
    pub secs: f64,
}

/// Publishes `messages` at `rate` through `targets` in turn, `batch` per request (one
/// `batch_events` request when above 1), each stamped with its request's send time. A
/// request that fails is counted, not retried: the expected count is what the servers
/// accepted.
pub(super) async fn publish(
    targets: &[Target],
    channel: &str,
    messages: u64,
    rate: u64,
    bytes: u64,
    batch: u64,
) -> anyhow::Result<PublishOutcome> {
    let publishers = targets
        .iter()
        .map(Publisher::new)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = Arc::new(Semaphore::new(PUBLISH_CONCURRENCY));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let batch = batch.max(1);
    let first_us = payload::now_micros();
    let started = Instant::now();
    let mut request = 0u64;
    let mut seq = 0;
    while seq < messages {
        // Scheduled from the start, not from the previous send, so the rate does not drift.
        tokio::time::sleep_until((started + interval.mul_f64(seq as f64)).into()).await;
        let permit = gate.clone().acquire_owned().await?;
        let now = payload::now_micros();
        let items = batch.min(messages - seq);
        let data: Vec<String> = (seq..seq + items)
            .map(|s| payload::stamp(now, s, bytes as usize))
            .collect();
        seq += items;
        let publisher = publishers[(request % publishers.len() as u64) as usize].clone();
        request += 1;
        let (outcomes, channel) = (outcomes.clone(), channel.to_string());
        tokio::spawn(async move {
            let result = if data.len() == 1 {
                publisher.trigger(&channel, payload::EVENT, &data[0]).await
            } else {
                publisher
                    .trigger_batch(&channel, payload::EVENT, &data)
                    .await
            };
            let mut outcomes = outcomes.lock();
            for _ in 0..data.len() {
                outcomes.record(result);
            }
            drop(permit);
        });
    }
    let _all = gate.acquire_many(PUBLISH_CONCURRENCY as u32).await?;
    let secs = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().clone();
    Ok(PublishOutcome {
        outcomes,
        first_us,
        secs,
    })
}
