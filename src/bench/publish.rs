//! `bench publish`: signed HTTP API requests per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::TargetArgs;
use super::latency::Latency;
use super::payload;
use super::report::Report;
use super::target::{Outcomes, Publisher};

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Requests to send.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Size of each event's data.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(payload::MIN_SIZE as u64..=1_048_576))]
    pub bytes: u64,
    /// Channel to publish on (nobody needs to listen).
    #[arg(long, default_value = "bench-publish")]
    pub channel: String,
    /// Stop after this long even if requests remain.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_secs: u64,
}

#[derive(Default)]
struct Tally {
    outcomes: Outcomes,
    latency: Latency,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<Option<Report>> {
    let target = args.target.target()?;
    let publisher = Publisher::new(&target)?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let gate = Arc::new(Semaphore::new(args.concurrency as usize));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.max_secs);
    let mut sent = 0;
    for seq in 0..args.requests {
        if Instant::now() >= stop_at {
            break;
        }
        let permit = gate.clone().acquire_owned().await?;
        let (publisher, tally, channel) = (publisher.clone(), tally.clone(), args.channel.clone());
        let data = payload::stamp(payload::now_micros(), seq, args.bytes as usize);
        sent += 1;
        tokio::spawn(async move {
            let began = Instant::now();
            let outcome = publisher.trigger(&channel, payload::EVENT, &data).await;
            let mut tally = tally.lock();
            tally.latency.record(began.elapsed().as_micros() as u64);
            tally.outcomes.record(outcome);
            drop(permit);
        });
    }
    // Every permit back means every request finished.
    let _all = gate.acquire_many(args.concurrency as u32).await?;
    let secs = started.elapsed().as_secs_f64();
    let tally = tally.lock();
    let latency = tally.latency.summary();
    let errors = tally.outcomes.error_count();
    let mut report = Report::new("publish");
    report
        .add("requests", "requests sent", sent)
        .add("concurrency", "concurrency", args.concurrency)
        .add("bytes", "data bytes", args.bytes)
        .add("ok", "accepted (2xx)", tally.outcomes.ok)
        .add("errors", "errors", errors)
        .add(
            "errors_by_status",
            "errors by status",
            serde_json::to_value(&tally.outcomes.errors)?,
        )
        .add("secs", "duration (s)", secs)
        .add(
            "requests_per_sec",
            "requests/s",
            sent as f64 / secs.max(0.001),
        )
        .add("p50_ms", "latency p50 (ms)", latency.p50_us as f64 / 1000.0)
        .add("p99_ms", "latency p99 (ms)", latency.p99_us as f64 / 1000.0)
        .add("max_ms", "latency max (ms)", latency.max_us as f64 / 1000.0);
    Ok(Some(report))
}
