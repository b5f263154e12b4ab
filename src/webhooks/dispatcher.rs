//! Sending what the outbox holds: slots, claims and attempts.
//!
//! Every attempt runs in a task of its own and holds a [`Slot`]: one of `max_in_flight`
//! for the node and one of `max_in_flight_per_endpoint` for its endpoint. A slow or dead
//! endpoint therefore holds at most its own slots and never delays another endpoint's
//! messages (no head-of-line blocking), and the node never opens more connections than
//! its total.
//!
//! Work arrives two ways. A message recorded by this node goes out at once: the journal
//! takes its slot before the commit and records it already leased to this node, so the
//! common path costs no claim query. Everything else (retries coming due, messages that
//! found no free slot, work another node recorded, what a crashed node left) is claimed
//! by the claim loop, which wakes on a timer, when a slot frees while work is waiting, and
//! when the journal leaves work behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::WebhooksConfig;
use super::endpoint::Endpoint;
use super::index::EndpointIndex;
use super::sender::{self, Attempted};
use super::store::{Next, OutboxStore, Outcome};
use super::writer::Writer;
use crate::core::Core;
use crate::db::now_ms;

/// Attempts in flight on this node, in total and per endpoint.
#[derive(Debug)]
pub struct Slots {
    inner: Mutex<SlotCounts>,
    max_total: usize,
    max_per_endpoint: usize,
    /// Set when work may be waiting for a slot; a freed slot then wakes the claimer.
    backlog: AtomicBool,
    wake: Notify,
    in_flight_gauge: metrics::Gauge,
}

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    per_endpoint: HashMap<Arc<str>, usize>,
}

/// One attempt's right to run; dropping it frees the slots.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    endpoint: Arc<str>,
}

impl Slots {
    pub fn new(config: &WebhooksConfig) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(SlotCounts::default()),
            max_total: config.max_in_flight,
            max_per_endpoint: config.max_in_flight_per_endpoint,
            backlog: AtomicBool::new(false),
            wake: Notify::new(),
            in_flight_gauge: metrics::gauge!("payrelay_webhook_in_flight"),
        })
    }

    /// A slot for `endpoint` if both limits allow one.
    pub fn try_acquire(self: &Arc<Self>, endpoint: &Arc<str>) -> Option<Slot> {
        let mut counts = self.inner.lock();
        if counts.total >= self.max_total {
            return None;
        }
        let used = counts.per_endpoint.get(endpoint).copied().unwrap_or(0);
        if used >= self.max_per_endpoint {
            return None;
        }
        Some(self.take(&mut counts, endpoint))
    }

    /// A slot for a message the claim query already admitted (it counted the endpoint's
    /// leases, cluster-wide, and asked for no more than [`Slots::free`]).
    fn acquire_claimed(self: &Arc<Self>, endpoint: &Arc<str>) -> Slot {
        let mut counts = self.inner.lock();
        self.take(&mut counts, endpoint)
    }

    fn take(self: &Arc<Self>, counts: &mut SlotCounts, endpoint: &Arc<str>) -> Slot {
        counts.total += 1;
        *counts.per_endpoint.entry(endpoint.clone()).or_insert(0) += 1;
        self.in_flight_gauge.increment(1.0);
        Slot {
            slots: self.clone(),
            endpoint: endpoint.clone(),
        }
    }

    /// Free slots on this node.
    pub fn free(&self) -> usize {
        self.max_total.saturating_sub(self.inner.lock().total)
    }

    pub fn in_flight(&self) -> usize {
        self.inner.lock().total
    }

    /// Says that work is waiting (left unleased for the claimer).
    pub fn note_backlog(&self) {
        self.backlog.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Wakes the claim loop now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut counts = self.slots.inner.lock();
            counts.total = counts.total.saturating_sub(1);
            if let Some(used) = counts.per_endpoint.get_mut(&self.endpoint) {
                *used -= 1;
                if *used == 0 {
                    counts.per_endpoint.remove(&self.endpoint);
                }
            }
        }
        self.slots.in_flight_gauge.decrement(1.0);
        if self.slots.backlog.load(Ordering::Acquire) {
            self.slots.wake.notify_one();
        }
    }
}

/// One message to send now, with its slot.
pub struct Job {
    pub endpoint: Arc<Endpoint>,
    pub event_id: String,
    pub body: Arc<str>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the event was recorded (ms), for the publish-to-delivery latency.
    pub created_at: Option<i64>,
    pub slot: Slot,
}

/// Everything an attempt task needs.
pub struct Dispatcher {
    pub config: Arc<WebhooksConfig>,
    pub store: OutboxStore,
    pub writer: Writer,
    pub index: Arc<EndpointIndex>,
    pub slots: Arc<Slots>,
    pub core: Arc<Core>,
    pub client: reqwest::Client,
    /// This node's name on the leases it takes.
    pub owner: String,
    pub tasks: TaskTracker,
}

impl Dispatcher {
    /// Starts `job` in a task of its own.
    pub fn spawn(self: &Arc<Self>, job: Job) {
        let this = self.clone();
        self.tasks.spawn(async move { this.run(job).await });
    }

    async fn run(&self, job: Job) {
        let Job {
            endpoint,
            event_id,
            body,
            attempts,
            created_at,
            slot,
        } = job;
        let Some(app) = self.core.apps.by_id(&endpoint.app_id).cloned() else {
            // The app left the configuration: nothing can sign for it. The lease runs out
            // and the message stays pending until the app is back.
            tracing::warn!(endpoint = %endpoint.id, app = %endpoint.app_id, "webhook endpoint of an app this node does not serve");
            return;
        };
        let attempted_at = now_ms();
        let result = sender::attempt(
            &self.client,
            &self.config,
            &endpoint,
            &app,
            &event_id,
            &body,
        )
        .await;
        drop(slot);
        metrics::counter!("payrelay_webhook_attempts_total", "outcome" => result.outcome)
            .increment(1);
        metrics::histogram!("payrelay_webhook_attempt_seconds")
            .record(result.latency.as_secs_f64());
        let attempts = attempts + 1;
        let next = self.next_step(&endpoint, &result, attempts).await;
        if next == Next::Delivered
            && attempts == 1
            && let Some(created_at) = created_at
        {
            metrics::histogram!("payrelay_webhook_publish_to_delivery_seconds")
                .record((now_ms() - created_at).max(0) as f64 / 1000.0);
        }
        if next == Next::Failed {
            tracing::info!(endpoint = %endpoint.id, event = %event_id, attempts, "webhook message failed: no retry left");
        }
        self.writer
            .outcome(Outcome {
                endpoint_id: endpoint.id.to_string(),
                event_id,
                attempted_at,
                status_code: result.status.map(i64::from),
                error: result.error,
                latency_ms: result.latency.as_millis() as i64,
                response_body: result.body,
                attempts,
                next,
            })
            .await;
    }

    async fn next_step(&self, endpoint: &Endpoint, result: &Attempted, attempts: i64) -> Next {
        if result.delivered() {
            return Next::Delivered;
        }
        if result.gone() {
            self.disable(endpoint, "the endpoint answered 410 Gone")
                .await;
            return Next::Failed;
        }
        match sender::next_delay(
            &self.config.retry_schedule_secs,
            self.config.retry_jitter,
            attempts,
            result.retry_after,
        ) {
            Some(delay) => Next::RetryAt(now_ms() + delay.as_millis() as i64),
            None => Next::Failed,
        }
    }

    /// Disables an endpoint: no further attempts, pending messages failed (retryable).
    /// Logged and counted once, by the node that disabled it.
    pub async fn disable(&self, endpoint: &Endpoint, reason: &str) {
        self.index.disable(&endpoint.id);
        match self
            .store
            .disable_endpoint(&endpoint.id, reason, now_ms())
            .await
        {
            Ok(true) => {
                tracing::warn!(endpoint = %endpoint.id, app = %endpoint.app_id, merchant = ?endpoint.merchant_id, reason, "webhook endpoint disabled");
                let label = if reason.contains("410") {
                    "gone"
                } else {
                    "failing"
                };
                metrics::counter!("payrelay_webhook_endpoints_disabled_total", "reason" => label)
                    .increment(1);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(endpoint = %endpoint.id, "cannot record that the endpoint is disabled: {e}");
            }
        }
    }

    /// The enabled endpoint `id`: from the index, or else from the database (made or
    /// enabled on another node since this one last reloaded; the claim found its
    /// messages, so waiting for the next reload would hold them for a whole lease).
    async fn endpoint(&self, id: &str) -> Result<Option<Arc<Endpoint>>, sqlx::Error> {
        if let Some(endpoint) = self.index.get(id)
            && endpoint.enabled
        {
            return Ok(Some(endpoint));
        }
        let Some(row) = self.store.endpoint_by_id(id).await? else {
            return Ok(None);
        };
        if !row.enabled {
            return Ok(None);
        }
        self.index.upsert(row.to_endpoint());
        Ok(self.index.get(id))
    }

    /// Claims and starts due work until there is none or no slot is free.
    async fn claim_round(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        loop {
            let free = self.slots.free();
            if free == 0 {
                // A freed slot must wake us: work may be waiting.
                self.slots.backlog.store(true, Ordering::Release);
                return Ok(());
            }
            self.slots.backlog.store(false, Ordering::Release);
            let now = now_ms();
            let lease_until = now + self.config.lease().as_millis() as i64;
            let claimed = self
                .store
                .claim(
                    now,
                    lease_until,
                    &self.owner,
                    self.config.max_in_flight_per_endpoint as i64,
                    free as i64,
                )
                .await?;
            if claimed.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
            let mut bodies = self.store.payloads(&ids).await?;
            let full = claimed.len() >= free;
            for claim in claimed {
                let Some(endpoint) = self.endpoint(&claim.endpoint_id).await? else {
                    // Deleted or disabled since the claim read it: whoever may send it
                    // (nobody, until it is enabled again) need not wait for the lease.
                    self.store
                        .release_lease(&claim.endpoint_id, &claim.event_id, &self.owner)
                        .await?;
                    continue;
                };
                let Some(body) = bodies.remove(&claim.event_id) else {
                    continue;
                };
                let slot = self.slots.acquire_claimed(&endpoint.id);
                self.spawn(Job {
                    endpoint,
                    event_id: claim.event_id,
                    body: body.into(),
                    attempts: claim.attempts,
                    created_at: None,
                    slot,
                });
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The claim loop: runs until `stop`.
    pub async fn claim_loop(self: Arc<Self>, stop: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut failures = 0u32;
        loop {
            if let Err(e) = self.claim_round().await {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::error!(failures, "cannot claim webhook messages: {e}");
                }
            } else {
                failures = 0;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.slots.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}
