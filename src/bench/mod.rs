//! `payrelay bench`: a load generator for Pusher-compatible servers, and the figures'
//! baseline.
//!
//! It speaks the Pusher protocol and the HTTP API, so it measures payrelay or any other
//! Pusher-compatible server on this machine by address, app id, key and secret. Sockets
//! live in worker processes ([`worker`]) because one process may hold at most 20 000
//! files here; the parent ([`fleet`]) plans, publishes and merges. Every scenario is
//! bounded in count and time, targets loopback only, and prints a table plus one JSON
//! line for scripts. [`ceiling`] is the baseline server the figures are compared with.

pub mod ceiling;
mod connections;
mod fanout;
pub mod fleet;
mod history;
pub mod latency;
pub mod payload;
mod payloads;
mod publish;
pub mod report;
mod stalled;
pub mod target;
mod webhooks;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use target::Target;
use worker::Plan;

/// Sockets one worker process holds at most (the per-process file limit is 20 000).
pub const MAX_SOCKETS_PER_WORKER: usize = 10_000;
/// Upper bound on a run's sockets: the bench must stop by itself and stay on this machine.
pub const MAX_SOCKETS: u64 = 200_000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N sockets over C channels, hold them, report connect rate and server RSS.
    Connections(connections::ConnectionsArgs),
    /// S subscribers on one channel; publish M messages of B bytes at R/s; report
    /// delivery and publish-to-delivery latency.
    Fanout(fanout::FanoutArgs),
    /// Signed HTTP API publishes per second.
    Publish(publish::PublishArgs),
    /// Channel history in process: the publish path with history off and on, memory
    /// per retained event, time to resume a subscriber that missed events.
    History(history::HistoryArgs),
    /// S sockets stop reading while R events/s are published for T s; report the
    /// server's RSS over time and what healthy sockets on the same channel received.
    Stalled(stalled::StalledArgs),
    /// Payment request sockets (payrelay only): N sockets with their countdowns held
    /// idle (memory per socket, idle CPU), then create → socket and change → socket
    /// message latencies.
    Payloads(payloads::PayloadsArgs),
    /// Callbacks: deliveries/s, publish → callback latency, what an endpoint adds to
    /// /v1/events, failing endpoints beside a healthy one (starts its own node).
    Webhooks(webhooks::WebhooksArgs),
    /// Kill -9 the node (its own) at random moments while events are published; report
    /// accepted, delivered, duplicated and lost callbacks (fails if any is lost).
    WebhookCrash(webhooks::CrashArgs),
    /// What one outbox claim costs with N due messages waiting (fills the database it
    /// is given: use a scratch one).
    OutboxClaim(webhooks::ClaimArgs),
    /// Serve the baseline: pre-encoded frames written by a minimal tokio loop.
    Ceiling(ceiling::CeilingArgs),
    /// Internal: one worker process of a run (started by the bench itself).
    #[command(hide = true)]
    Worker,
}

/// The server under test.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Server address (`host:port`, `http://…` or `ws://…`); loopback only.
    #[arg(long, default_value = "127.0.0.1:6001")]
    pub url: String,
    #[arg(long, default_value = "1")]
    pub app_id: String,
    #[arg(long, default_value = "app-key")]
    pub key: String,
    #[arg(long, env = "PAYRELAY_BENCH_SECRET", default_value = "app-secret")]
    pub secret: String,
    /// The server's process id, to report its resident memory (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// What the bench sockets speak.
    #[arg(long, value_enum, default_value_t = target::Protocol::Pusher)]
    pub protocol: target::Protocol,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        let mut target = Target::new(&self.url, &self.app_id, &self.key, &self.secret)?;
        target.protocol = self.protocol;
        Ok(target)
    }
}

/// Several payrelay nodes of one cluster (`redis_url`): where the sockets connect, and
/// the processes whose memory and CPU the report shows.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Nodes to spread the sockets over, evenly (comma-separated `host:port`); default:
    /// `--url` alone.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// The nodes' process ids, for their RSS and CPU (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
    /// The Redis server's process id, for its RSS and CPU.
    #[arg(long)]
    pub redis_pid: Option<u32>,
}

impl ClusterArgs {
    /// The targets sockets connect to: `--nodes`, or `target` alone.
    pub fn targets(&self, target: &Target) -> anyhow::Result<Vec<Target>> {
        if self.nodes.is_empty() {
            return Ok(vec![target.clone()]);
        }
        self.nodes
            .iter()
            .map(|url| {
                let mut node = Target::new(url, &target.app_id, &target.key, &target.secret)?;
                node.protocol = target.protocol;
                Ok(node)
            })
            .collect()
    }

    /// RSS of each node (KiB), in `--node-pids` order.
    pub fn rss_kib(&self) -> Vec<Option<u64>> {
        self.node_pids.iter().map(|pid| rss_kib(*pid)).collect()
    }

    /// CPU seconds the nodes have used, together.
    pub fn cpu_secs(&self) -> Option<f64> {
        if self.node_pids.is_empty() {
            return None;
        }
        self.node_pids.iter().map(|pid| cpu_secs(*pid)).sum()
    }
}

/// Splits `sockets` evenly over `targets`, then each share over worker plans; socket
/// numbers stay consecutive across nodes, so channels stay evenly used.
pub fn cluster_plans(
    targets: &[Target],
    sockets: usize,
    channels: &[String],
    api_keys: &[String],
    spread: &SpreadArgs,
    deadline_secs: u64,
) -> anyhow::Result<Vec<Plan>> {
    let n = targets.len().max(1);
    let mut per_node = spread.clone();
    per_node.workers = spread.workers.map(|w| w.div_ceil(n as u64).max(1));
    let mut all = Vec::new();
    let mut offset = 0;
    for (i, target) in targets.iter().enumerate() {
        let share = sockets / n + usize::from(i < sockets % n);
        if share == 0 {
            continue;
        }
        for mut plan in plans(target, share, channels, api_keys, &per_node, deadline_secs)? {
            plan.first_socket += offset;
            all.push(plan);
        }
        offset += share;
    }
    Ok(all)
}

/// How sockets are spread over processes and source addresses.
#[derive(Debug, Clone, Args)]
pub struct SpreadArgs {
    /// Worker processes (default: one per 5 000 sockets).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: Option<u64>,
    /// Connect from this many source addresses, 127.0.0.1 upwards (IPv4 targets only).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=250))]
    pub source_ips: u64,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub connect_concurrency: u64,
}

/// Splits `sockets` over worker plans.
pub fn plans(
    target: &Target,
    sockets: usize,
    channels: &[String],
    api_keys: &[String],
    spread: &SpreadArgs,
    deadline_secs: u64,
) -> anyhow::Result<Vec<Plan>> {
    let wanted = spread
        .workers
        .map_or_else(|| sockets.div_ceil(5_000), |w| w as usize)
        .max(1);
    let needed = sockets.div_ceil(MAX_SOCKETS_PER_WORKER);
    if wanted < needed {
        anyhow::bail!(
            "{sockets} sockets need at least {needed} workers ({MAX_SOCKETS_PER_WORKER} per process)"
        );
    }
    let workers = wanted.min(sockets.max(1));
    let source_ips: Vec<IpAddr> = if target.is_ipv4() {
        (1..=spread.source_ips as u8)
            .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .collect()
    } else {
        Vec::new()
    };
    let mut first_socket = 0;
    Ok((0..workers)
        .map(|w| {
            let share = sockets / workers + usize::from(w < sockets % workers);
            let plan = Plan {
                target: target.clone(),
                sockets: share,
                channels: channels.to_vec(),
                api_keys: api_keys.to_vec(),
                first_socket,
                // Rotate so that workers do not all start on 127.0.0.1.
                source_ips: rotate(&source_ips, w),
                connect_concurrency: spread.connect_concurrency as usize,
                deadline_secs,
                junk_channels: 0,
                stall: false,
            };
            first_socket += share;
            plan
        })
        .collect())
}

fn rotate(ips: &[IpAddr], by: usize) -> Vec<IpAddr> {
    if ips.is_empty() {
        return Vec::new();
    }
    let by = by % ips.len();
    ips[by..].iter().chain(&ips[..by]).copied().collect()
}

/// Refuses a server URL (`--redis-url`, `--database-url`) that is not on this machine:
/// the bench writes and reads in bulk, and stays on loopback. A URL without a host (a
/// SQLite file) is local. The error names the URL redacted: it may carry a password.
pub fn require_loopback_url(flag: &str, url: &str) -> anyhow::Result<()> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", crate::redact::url(url)))?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        anyhow::bail!(
            "{flag} {} is not a loopback address: the bench stays on this machine",
            crate::redact::url(url)
        );
    }
    Ok(())
}

/// Resident memory of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) `pid` has used, in seconds, from /proc.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the whole line, in USER_HZ (100 on Linux).
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Entry point of `payrelay bench`.
pub fn main(args: BenchArgs) -> ExitCode {
    if matches!(args.scenario, Scenario::Worker) {
        return match worker::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("payrelay bench worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("payrelay bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.scenario {
            Scenario::Connections(args) => connections::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Publish(args) => publish::run(args).await,
            Scenario::History(args) => history::run(args).await,
            Scenario::Stalled(args) => stalled::run(args).await,
            Scenario::Payloads(args) => payloads::run(args).await,
            Scenario::Ceiling(args) => ceiling::run(args).await.map(|()| None),
            Scenario::Webhooks(args) => webhooks::run(args).await,
            Scenario::WebhookCrash(args) => webhooks::crash(args).await,
            Scenario::OutboxClaim(args) => webhooks::claim(args).await,
            Scenario::Worker => unreachable!("handled above"),
        }
    });
    match result {
        Ok(Some(report)) => {
            report.print();
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payrelay bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("127.0.0.1:6001", "1", "k", "s").unwrap()
    }

    fn spread(workers: Option<u64>) -> SpreadArgs {
        SpreadArgs {
            workers,
            source_ips: 8,
            connect_concurrency: 256,
        }
    }

    #[test]
    fn sockets_are_split_evenly_and_completely() {
        let channels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let plans = plans(&target(), 19_001, &channels, &[], &spread(None), 60).unwrap();
        assert_eq!(plans.len(), 4);
        assert_eq!(plans.iter().map(|p| p.sockets).sum::<usize>(), 19_001);
        assert!(plans.iter().all(|p| p.sockets <= MAX_SOCKETS_PER_WORKER));
        // Consecutive socket numbers, so channels stay evenly used across workers.
        assert_eq!(plans[1].first_socket, plans[0].sockets);
        assert_ne!(plans[0].source_ips[0], plans[1].source_ips[0]);
    }

    #[test]
    fn too_few_workers_for_the_file_limit_is_an_error() {
        let err = plans(&target(), 25_000, &["c".into()], &[], &spread(Some(2)), 60).unwrap_err();
        assert!(err.to_string().contains("at least 3 workers"), "{err}");
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        let rss = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0);
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn cpu_time_of_this_process_grows() {
        // Spin until the kernel has charged 50 ms of CPU, not for a fixed wall time: on a
        // busy machine 100 ms of wall time may bring far less CPU time.
        let before = cpu_secs(std::process::id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        let mut after = before;
        while after - before < 0.05 {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time never grew: {before} -> {after}"
            );
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = cpu_secs(std::process::id()).unwrap();
        }
    }
}

#[cfg(test)]
mod parsing_tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &str) -> Result<Scenario, clap::Error> {
        let argv = std::iter::once("bench").chain(args.split_whitespace());
        Cli::try_parse_from(argv).map(|cli| cli.bench.scenario)
    }

    #[test]
    fn scenarios_parse_with_their_defaults() {
        let Scenario::Fanout(f) = parse("fanout --subscribers 10000 --rate 100").unwrap() else {
            panic!("not fanout");
        };
        assert_eq!(
            (f.subscribers, f.rate, f.bytes, f.messages),
            (10_000, 100, 100, 1000)
        );
        assert_eq!(f.target.url, "127.0.0.1:6001");
        assert_eq!(f.spread.source_ips, 8);

        let Scenario::Connections(c) =
            parse("connections --sockets 19000 --channels 10 --server-pid 42 --workers 4").unwrap()
        else {
            panic!("not connections");
        };
        assert_eq!(
            (c.sockets, c.channels, c.target.server_pid),
            (19_000, 10, Some(42))
        );
        assert_eq!(c.spread.workers, Some(4));

        assert!(matches!(
            parse("publish --concurrency 8"),
            Ok(Scenario::Publish(_))
        ));

        let Scenario::Stalled(s) = parse("stalled").unwrap() else {
            panic!("not stalled");
        };
        assert_eq!(
            (s.stalled, s.healthy, s.rate, s.secs, s.bytes),
            (1000, 100, 1000, 60, 100)
        );
        let Scenario::Connections(c) = parse("connections --junk-channels 100").unwrap() else {
            panic!("not connections");
        };
        assert_eq!(c.junk_channels, 100);
        let Scenario::Payloads(p) = parse("payloads --server-pid 7").unwrap() else {
            panic!("not payloads");
        };
        assert_eq!(
            (p.sockets, p.payloads, p.hold_secs, p.samples),
            (10_000, None, 45, 200)
        );
    }

    #[test]
    fn unbounded_or_meaningless_runs_are_refused() {
        for bad in [
            "fanout --rate 0",
            "fanout --bytes 10",
            "fanout --messages 0",
            "fanout --subscribers 1000000",
            "connections --hold-secs 100000",
            "connections --sockets 0",
            "publish --concurrency 0",
            "fanout --workers 0",
            "connections --junk-channels 100000",
            "stalled --secs 0",
            "stalled --secs 100000",
            "stalled --healthy 0",
            "stalled --bytes 10",
            "payloads --sockets 0",
            "payloads --samples 0",
            "payloads --hold-secs 100000",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
