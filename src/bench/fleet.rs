//! The parent's side of the workers: start them, hand out plans, collect their reports.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};

use super::latency::Latency;
use super::worker::{Command, Deliveries, Event, Plan, ReadyReport};

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

pub struct Fleet {
    workers: Vec<Worker>,
}

/// Everything the workers saw, merged.
#[derive(Debug, Default)]
pub struct Merged {
    pub delivered: u64,
    pub closed: u64,
    pub reordered: u64,
    pub first_us: u64,
    pub last_us: u64,
    pub latency: Latency,
    pub cpu_secs: f64,
    pub reopened: u64,
    pub reopen_failures: u64,
}

impl Fleet {
    /// Starts one worker process per plan (`<exe> bench worker`).
    pub async fn start(plans: Vec<Plan>) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe()?;
        let mut workers = Vec::with_capacity(plans.len());
        for plan in plans {
            let mut child = Process::new(&exe)
                .args(["bench", "worker"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
            let mut line = serde_json::to_string(&plan)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            workers.push(Worker {
                child,
                stdin,
                stdout,
            });
        }
        Ok(Fleet { workers })
    }

    /// Waits for every worker to have set up its sockets.
    pub async fn ready(&mut self, limit: Duration) -> anyhow::Result<Vec<ReadyReport>> {
        let mut reports = Vec::new();
        for worker in &mut self.workers {
            match Self::next_event(worker, limit).await? {
                Event::Ready(report) => reports.push(report),
                other => anyhow::bail!("worker sent {other:?} before it was ready"),
            }
        }
        Ok(reports)
    }

    /// Sends `command` to every worker and merges their delivery reports.
    pub async fn collect(&mut self, command: Command, limit: Duration) -> anyhow::Result<Merged> {
        let mut line = serde_json::to_string(&command)?;
        line.push('\n');
        for worker in &mut self.workers {
            worker.stdin.write_all(line.as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let mut merged = Merged {
            first_us: u64::MAX,
            ..Default::default()
        };
        for worker in &mut self.workers {
            match Self::next_event(worker, limit).await? {
                Event::Done(d) => merged.add(&d),
                other => anyhow::bail!("worker sent {other:?} instead of a report"),
            }
        }
        if merged.first_us == u64::MAX {
            merged.first_us = 0;
        }
        Ok(merged)
    }

    async fn next_event(worker: &mut Worker, limit: Duration) -> anyhow::Result<Event> {
        let line = tokio::time::timeout(limit, worker.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("a worker did not answer within {limit:?}"))??;
        let Some(line) = line else {
            let status = worker.child.wait().await?;
            anyhow::bail!("a worker exited early ({status})");
        };
        Ok(serde_json::from_str(&line)?)
    }

    /// Closes every worker's stdin (they exit) and waits for them briefly.
    pub async fn stop(self) {
        for mut worker in self.workers {
            drop(worker.stdin);
            if tokio::time::timeout(Duration::from_secs(10), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
    }
}

impl Merged {
    fn add(&mut self, d: &Deliveries) {
        self.delivered += d.delivered;
        self.closed += d.closed;
        self.reordered += d.reordered;
        if d.delivered > 0 {
            self.first_us = self.first_us.min(d.first_us);
            self.last_us = self.last_us.max(d.last_us);
        }
        self.latency.add_buckets(&d.latency);
        self.cpu_secs += d.cpu_secs;
        self.reopened += d.reopened;
        self.reopen_failures += d.reopen_failures;
    }
}
