//! Group commit: one task writes the outbox, many callers wait for it.
//!
//! A publish that must be recorded hands its rows here and waits for the commit; while one
//! transaction is being committed, the next callers queue, and the task takes all of them
//! into the next transaction. So a burst of N concurrent events costs a few commits (one
//! fsync each on SQLite), not N, and a lone event waits for exactly one. Attempt outcomes
//! take the same road, in the same transactions, without anyone waiting on them.

use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::dispatcher::Slots;
use super::store::{NewEvent, OutboxStore, Outcome};

/// Most events, and most outcomes, one transaction takes.
const MAX_BATCH: usize = 1000;
/// Jobs that may wait for the writer before callers wait to queue.
const QUEUE: usize = 16 * 1024;

pub enum Job {
    Record {
        events: Vec<NewEvent>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Outcome(Outcome),
}

#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

/// Telemetry of the writer, created once.
struct WriterMetrics {
    commit_seconds: metrics::Histogram,
    batch_events: metrics::Histogram,
    failures: metrics::Counter,
}

impl Writer {
    /// Starts the writer task; it ends when every [`Writer`] is dropped. Recorded
    /// outcomes end leases, so `slots` hears of them (the claimer may have work waiting).
    pub fn spawn(store: OutboxStore, owner: String, slots: Arc<Slots>) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, owner, jobs, slots));
        Writer { queue }
    }

    /// Records `events` durably; returns once they are committed.
    pub async fn record(&self, events: Vec<NewEvent>) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Job::Record { events, done })
            .await
            .map_err(|_| "the outbox writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the outbox writer has stopped".to_string())?
    }

    /// Queues an attempt's outcome.
    pub async fn outcome(&self, outcome: Outcome) {
        if self.queue.send(Job::Outcome(outcome)).await.is_err() {
            tracing::warn!(
                "outbox writer stopped: an attempt's outcome is not recorded (the message will be sent again)"
            );
        }
    }
}

async fn run(store: OutboxStore, owner: String, mut jobs: mpsc::Receiver<Job>, slots: Arc<Slots>) {
    let metrics = WriterMetrics {
        commit_seconds: metrics::histogram!("payrelay_webhook_outbox_commit_seconds"),
        batch_events: metrics::histogram!("payrelay_webhook_outbox_batch_events"),
        failures: metrics::counter!("payrelay_webhook_outbox_write_failures_total"),
    };
    let mut events = Vec::new();
    let mut waiting = Vec::new();
    let mut outcomes = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Record {
                    events: mut e,
                    done,
                } => {
                    events.append(&mut e);
                    waiting.push(done);
                }
                Job::Outcome(o) => outcomes.push(o),
            }
            if events.len() < MAX_BATCH && outcomes.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        let now = crate::db::now_ms();
        let started = std::time::Instant::now();
        // One transaction for both; if it fails with both kinds in it, each is tried
        // alone, so a bad outcome never refuses publishes (nor the reverse).
        let (recorded, logged) = match store.write_batch(&events, &outcomes, &owner, now).await {
            Ok(()) => (Ok(()), Ok(())),
            Err(e) if events.is_empty() || outcomes.is_empty() => {
                (Err(e.to_string()), Err(e.to_string()))
            }
            Err(_) => (
                store
                    .write_batch(&events, &[], &owner, now)
                    .await
                    .map_err(|e| e.to_string()),
                store
                    .write_batch(&[], &outcomes, &owner, now)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        if !events.is_empty() {
            metrics.batch_events.record(events.len() as f64);
            let result = recorded.map_err(|e| format!("the outbox cannot record the event: {e}"));
            if let Err(e) = &result {
                metrics.failures.increment(1);
                tracing::error!("{e}");
            }
            for done in waiting.drain(..) {
                let _ = done.send(result.clone());
            }
            events.clear();
        }
        if !outcomes.is_empty() {
            if let Err(e) = logged {
                metrics.failures.increment(1);
                tracing::error!(
                    count = outcomes.len(),
                    "the outbox cannot record attempt outcomes (those messages will be sent again when their lease ends): {e}"
                );
            }
            // Those leases are over: an endpoint the claim held back may take more now.
            slots.leases_ended(outcomes.iter().filter(|o| o.claimed).count());
            outcomes.clear();
        }
    }
}
