//! Group commit: one task gathers what the outbox must write, many callers wait for it.
//!
//! A publish that must be recorded hands its rows here and waits for the commit; while a
//! transaction is being committed, the next callers queue, and the task takes all of them
//! into the next transaction. So a burst of N concurrent events costs a few commits (one
//! fsync each), not N, and a lone event waits for exactly one. Attempt outcomes take the
//! same road, in the same transactions, without anyone waiting on them.
//!
//! SQLite has one writer, so one transaction is in flight at a time. PostgreSQL takes
//! several at once and flushes their commit records together; a commit there is mostly
//! waiting (the WAL flush, round trips to the server), so the task keeps up to
//! `outbox_commits_in_flight` batches in flight: the next batch is executed while the previous
//! one waits for its flush, instead of the whole node waiting behind it. Batches in flight
//! together touch different delivery rows (an outcome only ever follows its delivery's
//! commit), and take endpoint rows in id order, so they never deadlock.

use tokio::sync::{Semaphore, mpsc, oneshot};

use std::sync::Arc;

use super::dispatcher::Slots;
use super::store::{NewEvent, OutboxStore, Outcome};
use crate::db::Backend;

/// Most events, and most outcomes, one transaction takes.
const MAX_BATCH: usize = 1000;
/// Jobs that may wait for the writer before callers wait to queue.
const QUEUE: usize = 16 * 1024;

/// Batches the writer keeps in flight at once on `backend` when `configured` is asked.
fn commits_in_flight(backend: Backend, configured: usize) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => configured.max(1),
    }
}

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
#[derive(Clone)]
struct WriterMetrics {
    commit_seconds: metrics::Histogram,
    batch_events: metrics::Histogram,
    failures: metrics::Counter,
}

/// What one transaction writes, and who waits for it.
#[derive(Default)]
struct Batch {
    events: Vec<NewEvent>,
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
    outcomes: Vec<Outcome>,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Record { mut events, done } => {
                self.events.append(&mut events);
                self.waiting.push(done);
            }
            Job::Outcome(o) => self.outcomes.push(o),
        }
    }

    fn full(&self) -> bool {
        self.events.len() >= MAX_BATCH || self.outcomes.len() >= MAX_BATCH
    }
}

impl Writer {
    /// Starts the writer task; it ends when every [`Writer`] is dropped. Recorded
    /// outcomes end leases, so `slots` hears of them (the claimer may have work waiting).
    pub fn spawn(
        store: OutboxStore,
        owner: String,
        slots: Arc<Slots>,
        commits_in_flight: usize,
    ) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, owner, jobs, slots, commits_in_flight));
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

async fn run(
    store: OutboxStore,
    owner: String,
    mut jobs: mpsc::Receiver<Job>,
    slots: Arc<Slots>,
    commits_in_flight: usize,
) {
    let metrics = WriterMetrics {
        commit_seconds: metrics::histogram!("payrelay_webhook_outbox_commit_seconds"),
        batch_events: metrics::histogram!("payrelay_webhook_outbox_batch_events"),
        failures: metrics::counter!("payrelay_webhook_outbox_write_failures_total"),
    };
    let owner: Arc<str> = owner.into();
    let in_flight = Arc::new(Semaphore::new(self::commits_in_flight(
        store.backend(),
        commits_in_flight,
    )));
    loop {
        // A batch is gathered only once it can be written at once: while every commit
        // slot is busy, callers pile up in the queue and go into the next batch together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = Batch::default();
        batch.add(first);
        while !batch.full() {
            match jobs.try_recv() {
                Ok(job) => batch.add(job),
                Err(_) => break,
            }
        }
        let (store, owner, slots, metrics) =
            (store.clone(), owner.clone(), slots.clone(), metrics.clone());
        tokio::spawn(async move {
            commit(&store, &owner, batch, &slots, &metrics).await;
            drop(permit);
        });
    }
}

/// Writes one batch, tells its waiters, and frees the leases its outcomes ended.
async fn commit(
    store: &OutboxStore,
    owner: &str,
    batch: Batch,
    slots: &Slots,
    metrics: &WriterMetrics,
) {
    let Batch {
        events,
        waiting,
        outcomes,
    } = batch;
    let now = crate::db::now_ms();
    let started = std::time::Instant::now();
    // One transaction for both; if it fails with both kinds in it, each is tried
    // alone, so a bad outcome never refuses publishes (nor the reverse).
    let (recorded, logged) = match store.write_batch(&events, &outcomes, owner, now).await {
        Ok(()) => (Ok(()), Ok(())),
        Err(e) if events.is_empty() || outcomes.is_empty() => {
            (Err(e.to_string()), Err(e.to_string()))
        }
        Err(_) => (
            store
                .write_batch(&events, &[], owner, now)
                .await
                .map_err(|e| e.to_string()),
            store
                .write_batch(&[], &outcomes, owner, now)
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
        for done in waiting {
            let _ = done.send(result.clone());
        }
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
    }
}
