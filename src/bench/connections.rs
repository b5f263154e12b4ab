//! `bench connections`: how many sockets the server holds, how fast they arrive, and what
//! each costs in server memory.

use std::time::Duration;

use clap::Args;

use super::fleet::Fleet;
use super::report::Report;
use super::worker::{Command, JunkAnswers};
use super::{ClusterArgs, MAX_SOCKETS, SpreadArgs, TargetArgs, cluster_plans, rss_kib};

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub spread: SpreadArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Sockets to open.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS))]
    pub sockets: u64,
    /// Channels to spread them over (socket i joins channel i mod C).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub channels: u64,
    /// How long to hold them once all are subscribed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub hold_secs: u64,
    /// Pusher: once subscribed, each socket also asks for this many public channels of
    /// its own at once (`junk-{socket}-{n}`), as a client out to cost the server memory
    /// would; the answers are counted by kind (subscribed, over the subscribe rate, over
    /// the channel cap).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub junk_channels: u64,
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<Option<Report>> {
    let target = args.target.target()?;
    let sockets = args.sockets as usize;
    let names: Vec<String> = (0..args.channels).map(|c| format!("bench-{c}")).collect();
    let (channels, api_keys) = target.prepare_channels(names).await?;
    let deadline = 300 + args.hold_secs;
    let targets = args.cluster.targets(&target)?;
    let mut plans = cluster_plans(
        &targets,
        sockets,
        &channels,
        &api_keys,
        &args.spread,
        deadline,
    )?;
    for plan in &mut plans {
        plan.junk_channels = args.junk_channels as usize;
    }
    let workers = plans.len();
    let pid = args.target.server_pid;
    let rss_before = pid.and_then(rss_kib);
    let nodes_before = args.cluster.rss_kib();

    let mut fleet = Fleet::start(plans).await?;
    let ready = fleet.ready(Duration::from_secs(deadline)).await?;
    let subscribed: u64 = ready.iter().map(|r| r.subscribed).sum();
    let failed: u64 = ready.iter().map(|r| r.failed).sum();
    let connect_secs = ready.iter().map(|r| r.elapsed_ms).max().unwrap_or(0) as f64 / 1000.0;
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    let mut junk = JunkAnswers::default();
    for report in &ready {
        junk.add(&report.junk);
        for (reason, n) in &report.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
    }

    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = pid.and_then(rss_kib);
    let nodes_after = args.cluster.rss_kib();
    let redis_rss = args.cluster.redis_pid.and_then(rss_kib);
    let held = fleet
        .collect(Command::Report, Duration::from_secs(60))
        .await?;
    fleet.stop().await;

    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if subscribed > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / subscribed as f64)
        }
        _ => None,
    };
    let nodes_added: Option<u64> = nodes_before
        .iter()
        .zip(&nodes_after)
        .map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
        .sum();
    let nodes_per_connection = nodes_added
        .filter(|_| subscribed > 0 && !nodes_after.is_empty())
        .map(|added| added as f64 * 1024.0 / subscribed as f64);
    let mut report = Report::new("connections");
    report
        .add("sockets", "sockets requested", sockets)
        .add("channels", "channels", args.channels)
        .add("workers", "worker processes", workers)
        .add("subscribed", "subscribed", subscribed)
        .add("failed", "failed", failed)
        .add("errors", "failure reasons", serde_json::to_value(&errors)?)
        .add("connect_secs", "connect time (s)", connect_secs)
        .add(
            "connects_per_sec",
            "connects/s",
            subscribed as f64 / connect_secs.max(0.001),
        )
        .add(
            "junk_channels",
            "junk channels asked per socket",
            args.junk_channels,
        )
        .add(
            "junk_subscribed",
            "junk subscriptions accepted",
            junk.subscribed,
        )
        .add(
            "junk_rate_limited",
            "junk refused: subscribe rate (429)",
            junk.rate_limited,
        )
        .add(
            "junk_over_channel_cap",
            "junk refused: channel cap (4100)",
            junk.over_channel_cap,
        )
        .add("junk_other", "junk refused: other", junk.other)
        .add("hold_secs", "held for (s)", args.hold_secs)
        .add("dropped_while_held", "dropped while held", held.closed)
        .add("rss_before_kib", "server RSS before (KiB)", rss_before)
        .add("rss_after_kib", "server RSS held (KiB)", rss_after)
        .add(
            "rss_per_connection_bytes",
            "server RSS per connection (B)",
            per_connection,
        )
        .add("nodes", "nodes", targets.len())
        .add(
            "nodes_rss_kib",
            "nodes' RSS held (KiB)",
            serde_json::to_value(&nodes_after)?,
        )
        .add(
            "nodes_rss_per_connection_bytes",
            "nodes' RSS per connection (B)",
            nodes_per_connection,
        )
        .add("redis_rss_kib", "Redis RSS held (KiB)", redis_rss);
    Ok(Some(report))
}
