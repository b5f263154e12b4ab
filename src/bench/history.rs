//! `payrelay bench history`: what channel history costs and what recovery takes, measured
//! in process on the node's own core (no network, no generator competing for the CPU):
//!
//! - the publish path with history off and on (publications/s, one task publishing one
//!   event after the other over `channels` channels, nobody subscribed),
//! - memory: the resident size this process gains while the embedded history fills
//!   `channels` channels with `events` events of `bytes` bytes each, per retained event,
//!   beside what the history itself counts against `history_max_bytes`,
//! - recovery: a subscriber that missed `missed` events resumes (`subscribe_resuming`
//!   with its last position); the time from the request until every missed event is
//!   queued for it and encoded as a Pusher frame.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;

use super::report::Report;
use crate::config::Config;
use crate::core::outbox::{Drain, Outbound};
use crate::core::{Core, NewPublication};

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
}

fn config(size: u64) -> anyhow::Result<Config> {
    let toml = format!(
        "database_url = \"sqlite::memory:\"\nhistory_max_bytes = {}\n[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"bench-secret\"\n[apps.history]\nsize = {size}\nttl_secs = 3600\n",
        usize::MAX / 2
    );
    Config::parse(&toml).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Publishes `events` rounds over `channels` channels; returns publications/s.
async fn fill(core: &Core, channels: u64, events: u64, data: &str) -> anyhow::Result<f64> {
    let app = core
        .apps
        .by_id("1")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no app"))?;
    let started = Instant::now();
    for _ in 0..events {
        for c in 0..channels {
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
    Ok((channels * events) as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<Option<Report>> {
    let data = "x".repeat(args.bytes as usize);
    let pid = std::process::id();

    // The publish path without history, then with it (the same work otherwise).
    let off = Core::new(&config(0)?);
    let without = fill(&off, args.channels, args.events, &data).await?;
    drop(off);

    let core = Core::new(&config(args.events)?);
    let rss_before = super::rss_kib(pid).unwrap_or(0);
    let with = fill(&core, args.channels, args.events, &data).await?;
    let rss_after = super::rss_kib(pid).unwrap_or(0);
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

    let mut report = Report::new("history");
    report
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
