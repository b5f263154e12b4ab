//! `payrelay bench history`: what channel history costs and what recovery takes, measured
//! in process on the node's own core (no network, no generator competing for the CPU):
//!
//! - the publish path with history off and on (publications/s, one task publishing one
//!   event after the other over `channels` channels, nobody subscribed),
//! - memory: the resident size this process gains while the embedded history fills
//!   `channels` channels with `events` events of `bytes` bytes each, per retained event,
//!   beside what the history itself counts against `history_max_bytes` (the two should
//!   agree: the budget bounds real memory),
//! - recovery: a subscriber that missed `missed` events resumes (`subscribe_resuming`
//!   with its last position); the time from the request until every missed event is
//!   queued for it and encoded as a Pusher frame.
//!
//! With `--redis-url` the node is a cluster member on that Redis (a fresh key prefix,
//! removed at the end; nothing else there is touched): the publish path goes through the
//! Redis broker in both runs and, with history on, through the script that appends to the
//! channel's stream; memory is what Redis gains (`INFO memory` `used_memory`) while the
//! streams fill; a resume reads the missed events from Redis. `--publishers` publishes
//! from several tasks at once (each over its own channels), which a Redis round trip per
//! publication needs to fill 10 000 channels in reasonable time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;

use std::sync::Arc;

use super::report::Report;
use crate::config::Config;
use crate::core::outbox::{Drain, Outbound};
use crate::core::{Core, NewPublication};
use crate::server::Server;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Channels filled with history.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub channels: u64,
    /// Events kept per channel (the app's history `size`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub events: u64,
    /// Bytes of each event's data.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub bytes: u64,
    /// Events a resuming subscriber missed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub missed: u64,
    /// Resumes measured.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub recoveries: u64,
    /// Keep history in this Redis (loopback only), as a node with `redis_url` does.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Tasks publishing at once, each over its own share of the channels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub publishers: u64,
}

/// A running node (serving on a port of its own, which the bench does not use).
struct Node {
    core: Arc<Core>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Shuts it down as a node does (on Redis, it leaves the cluster).
    async fn stop(self) -> anyhow::Result<()> {
        drop(self.core);
        let _ = self.stop.send(());
        self.serving.await?
    }
}

/// A node holding `size` events per channel: embedded, or on `redis` under `prefix`.
async fn node(size: u64, redis: Option<(&str, &str)>) -> anyhow::Result<Node> {
    let cluster = redis.map_or(String::new(), |(url, prefix)| {
        format!("redis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\nnode_id = \"bench-history\"\n")
    });
    let toml = format!(
        "bind = \"127.0.0.1:0\"\nlog_level = \"warn\"\ndatabase_url = \"sqlite::memory:\"\nhistory_max_bytes = {}\n{cluster}[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"bench-secret\"\n[apps.history]\nsize = {size}\nttl_secs = 3600\n",
        usize::MAX / 2
    );
    let config = Config::parse(&toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = Server::bind(config).await?;
    let core = server.core().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok(Node {
        core,
        stop,
        serving,
    })
}

/// Publishes `events` rounds over `channels` channels from `publishers` tasks (task `t`
/// owns the channels `c` with `c % publishers == t`); returns publications/s.
async fn fill(
    core: &Arc<Core>,
    channels: u64,
    events: u64,
    publishers: u64,
    data: &str,
) -> anyhow::Result<f64> {
    let app = core
        .apps
        .by_id("1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no app"))?;
    let data: Arc<str> = data.into();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..publishers.min(channels) {
        let (core, app, data) = (core.clone(), app.clone(), data.clone());
        tasks.spawn(async move {
            for _ in 0..events {
                for c in (task..channels).step_by(publishers as usize) {
                    let new = NewPublication {
                        channel: format!("history-bench-{c}"),
                        event: "tick".into(),
                        data: data.to_string(),
                        ..Default::default()
                    };
                    core.publish(&app, new)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok((channels * events) as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// A connection of the bench's own to `url`.
async fn redis_connection(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    super::require_loopback_url("--redis-url", url)?;
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Redis's `used_memory` (bytes).
async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Removes every key under `prefix` (the bench's own); returns how many there were.
async fn remove_prefix(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<u64> {
    let mut cursor = 0u64;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        if !keys.is_empty() {
            removed += keys.len() as u64;
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(redis)
                .await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<Option<Report>> {
    let data = "x".repeat(args.bytes as usize);
    let pid = std::process::id();
    let mut redis = match &args.redis_url {
        Some(url) => Some(redis_connection(url).await?),
        None => None,
    };
    let run = format!("bench-history:{:016x}", rand::random::<u64>());
    let (off_prefix, on_prefix) = (format!("{run}:off:"), format!("{run}:on:"));
    let url = args.redis_url.as_deref();

    // The publish path without history, then with it (the same work otherwise).
    let off = node(0, url.map(|url| (url, off_prefix.as_str()))).await?;
    let without = fill(
        &off.core,
        args.channels,
        args.events,
        args.publishers,
        &data,
    )
    .await?;
    off.stop().await?;

    let on = node(args.events, url.map(|url| (url, on_prefix.as_str()))).await?;
    let core = on.core.clone();
    let rss_before = super::rss_kib(pid).unwrap_or(0);
    let redis_before = match redis.as_mut() {
        Some(redis) => Some(used_memory(redis).await?),
        None => None,
    };
    let with = fill(&core, args.channels, args.events, args.publishers, &data).await?;
    let rss_after = super::rss_kib(pid).unwrap_or(0);
    let counted = core.history().counted_bytes();
    let redis_growth = match (redis.as_mut(), redis_before) {
        (Some(redis), Some(before)) => Some(used_memory(redis).await?.saturating_sub(before)),
        _ => None,
    };
    let retained = args.channels * args.events;
    let bytes_per_event = (rss_after.saturating_sub(rss_before) * 1024) as f64 / retained as f64;

    // Recovery of a subscriber that missed `missed` events on one channel.
    let app = core
        .apps
        .by_id("1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no app"))?;
    let channel = "history-bench-recover";
    let start = core
        .history()
        .latest(&app, channel)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| anyhow::anyhow!("history is off"))?;
    for n in 0..args.missed {
        let new = NewPublication {
            channel: channel.into(),
            event: "tick".into(),
            data: format!("{{\"n\":{n}}}"),
            ..Default::default()
        };
        core.publish(&app, new)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut batch = Vec::new();
    for _ in 0..args.recoveries {
        let mut session = core
            .open_session(&app, "bench", addr)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let began = Instant::now();
        session
            .subscribe_resuming(channel, None, Some(&start))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut replayed = 0;
        while replayed < args.missed {
            let drained = tokio::time::timeout(
                Duration::from_secs(5),
                session.connection().outbox.drain(&mut batch),
            )
            .await
            .map_err(|_| anyhow::anyhow!("the replay did not arrive"))?;
            if drained != Drain::Frames {
                anyhow::bail!("the resuming connection was closed");
            }
            for item in batch.drain(..) {
                if let Outbound::Publication(publication) = item {
                    std::hint::black_box(crate::protocols::pusher::frames::event(
                        &publication,
                        true,
                    ));
                    replayed += 1;
                }
            }
        }
        latency.record(began.elapsed().as_micros() as u64)?;
    }

    drop(core);
    on.stop().await?;
    let removed = match redis.as_mut() {
        Some(redis) => {
            Some(remove_prefix(redis, &off_prefix).await? + remove_prefix(redis, &on_prefix).await?)
        }
        None => None,
    };

    let mut report = Report::new("history");
    report
        .add(
            "history_in",
            "history kept in",
            if args.redis_url.is_some() {
                "redis"
            } else {
                "process"
            },
        )
        .add("publishers", "tasks publishing", args.publishers)
        .add("channels", "channels", args.channels)
        .add("events_per_channel", "events per channel", args.events)
        .add("bytes", "event data (B)", args.bytes)
        .add(
            "publishes_per_sec_without_history",
            "publishes/s, history off",
            without,
        )
        .add(
            "publishes_per_sec_with_history",
            "publishes/s, history on",
            with,
        )
        .add(
            "history_cost_us_per_publish",
            "history cost per publish (µs)",
            (1e6 / with - 1e6 / without).max(0.0),
        )
        .add("retained_events", "retained events", retained)
        .add(
            "rss_growth_mib",
            "RSS growth filling history (MiB)",
            rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        )
        .add(
            "rss_bytes_per_event",
            "RSS per retained event (B)",
            bytes_per_event,
        )
        .add(
            "counted_bytes_per_event",
            "counted against history_max_bytes per retained event (B)",
            counted.map(|b| b as f64 / retained as f64),
        )
        .add(
            "redis_used_memory_growth_mib",
            "Redis used_memory growth filling history (MiB)",
            redis_growth.map(|b| b as f64 / 1_048_576.0),
        )
        .add(
            "redis_bytes_per_event",
            "Redis used_memory per retained event (B)",
            redis_growth.map(|b| b as f64 / retained as f64),
        )
        .add(
            "redis_prefix",
            "Redis key prefix (removed at the end)",
            url.map(|_| format!("{run}:")),
        )
        .add(
            "redis_keys_removed",
            "bench keys removed from Redis",
            removed,
        )
        .add("missed", "events missed per resume", args.missed)
        .add("recoveries", "resumes measured", args.recoveries)
        .add(
            "recovery_p50_us",
            "resume → all missed queued, p50 (µs)",
            latency.value_at_quantile(0.5),
        )
        .add(
            "recovery_p99_us",
            "resume → all missed queued, p99 (µs)",
            latency.value_at_quantile(0.99),
        );
    Ok(Some(report))
}
