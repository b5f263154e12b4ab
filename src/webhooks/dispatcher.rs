//! Sending what the outbox holds: slots, claims and attempts.
//!
//! Every attempt runs in a task of its own and holds a [`Slot`]: one of `max_in_flight`
//! for the node and one of `max_in_flight_per_endpoint` for its endpoint. A slow or dead
//! endpoint therefore holds at most its own slots and never delays another endpoint's
//! messages (no head-of-line blocking), and the node never opens more connections than
//! its total.
//!
//! Endpoints are in one of three classes ([`Health`]), and only proven ones get the full
//! share:
//! - **failing**: its latest attempt failed (any answer but a 2xx, a timeout, a refused
//!   connection). One slot until it succeeds again; failing endpoints together hold at
//!   most half of the node's (`max_in_flight / 2`).
//! - **unproven**: not failing, but no success yet (a new endpoint). One slot until its
//!   first success promotes it; unproven endpoints together hold at most a quarter of the
//!   node's (`max_in_flight / 4`), apart from the failing half.
//! - **proven**: not failing, and a success recorded: `max_in_flight_per_endpoint`.
//!   Changing an endpoint's URL makes it unproven again (neither failing nor proven:
//!   `last_success_at` and `failing_since` cleared), so a proven endpoint cannot be
//!   pointed at a URL that hangs with its full share; the node that took the change
//!   knows at once, the others at their next index reload (their [`Slots`] compare URLs).
//!   An attempt still on the wire to the old URL when the edit lands ends without a say
//!   in the endpoint's health (in memory and in its row, matched by URL), and a 410 from
//!   there does not disable it: its message is retried at the new URL.
//!
//! Without the bounds, endpoints that hang until the attempt timeout fill every slot for
//! the whole timeout and a healthy endpoint's message waits for one of them to give up.
//! With them, failing endpoints cannot starve anyone, endpoints that hang from their very
//! first attempt (never known to fail before) cannot starve established ones, and a new
//! endpoint that answers competes only with other new ones, for one attempt. Proven
//! endpoints always have at least a quarter of the slots. What an endpoint is comes from
//! its attempts on this node and, across nodes and restarts, from its `failing_since` and
//! `last_success_at` columns, which the claim reads. An endpoint that starts to hang while
//! proven holds its normal share until its first attempt times out.
//!
//! Work arrives two ways. A message recorded by this node goes out at once: the journal
//! takes its slot before the commit and records it already leased to this node, so the
//! common path costs no claim query. A message that finds its endpoint's slots taken is
//! recorded leased to this node too and waits in this node's queue for that endpoint
//! (bounded); each finished attempt starts the next queued one.
//!
//! Leases are short (`lease_secs`, 10 s) and renewed by the live node every third of
//! that ([`Dispatcher::renew_loop`]), whatever its attempts take: a killed node's
//! messages go to another node one lease after its last renewal. [`LeaseClock`] knows
//! until when every lease of this node is sure to hold; an attempt still running when
//! that comes within a third of a lease (renewals failed: the database is out of reach)
//! is abandoned, and queued messages are dropped to the claim, so no attempt runs on a
//! lease another node may already have taken. Everything else (retries coming due, messages no queue took, work
//! another node recorded, what a crashed node left) is claimed by the claim loop, which
//! wakes on a timer, when a slot frees while claimed work may be waiting, when claimed
//! work's outcomes are recorded, and when the journal leaves work behind. For a proven
//! endpoint it claims ahead (`CLAIM_AHEAD` slots' worth): what has no slot yet waits,
//! leased, in the same queue, so a backlog drains at the pace of attempts, not of claim
//! rounds. Each node bounds its own attempts per endpoint; nodes that share an outbox
//! may each send to one endpoint at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::WebhooksConfig;
use super::endpoint::Endpoint;
use super::index::EndpointIndex;
use super::sender::{self, Attempted};
use super::store::{Claimed, Health, Next, OutboxStore, Outcome};
use super::writer::Writer;
use crate::core::Core;
use crate::db::now_ms;

/// Attempts in flight on this node, in total and per endpoint.
#[derive(Debug)]
pub struct Slots {
    inner: Mutex<SlotCounts>,
    max_total: usize,
    max_per_endpoint: usize,
    /// Slots failing endpoints may hold together: half the node's (at least one).
    max_failing: usize,
    /// Slots unproven endpoints may hold together: a quarter of the node's (at least one).
    max_unproven: usize,
    /// Set when work may be waiting for a slot; a freed slot then wakes the claimer.
    backlog: AtomicBool,
    /// Set when failing endpoints' work may be waiting for their half: a freed slot of a
    /// failing endpoint then wakes the claimer.
    failing_backlog: AtomicBool,
    /// The same for unproven endpoints and their quarter.
    unproven_backlog: AtomicBool,
    /// Attempts the claim loop started whose outcomes are not recorded yet: their
    /// leases still count against their endpoints, so a claim that finds nothing while
    /// some are out must run again once they are recorded.
    claimed_out: AtomicUsize,
    wake: Notify,
    in_flight_gauge: metrics::Gauge,
}

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    per_endpoint: HashMap<Arc<str>, usize>,
    /// Endpoints whose latest attempt failed.
    failing: HashSet<Arc<str>>,
    /// Endpoints with a success: on this node, or recorded when the database was read.
    proven: HashSet<Arc<str>>,
    /// Each known endpoint's URL: a new one makes the endpoint unproven again.
    urls: HashMap<Arc<str>, Arc<str>>,
    /// Slots held by attempts to endpoints that were failing when they started.
    failing_total: usize,
    /// Slots held by attempts to endpoints that were unproven when they started.
    unproven_total: usize,
    /// Messages recorded leased to this node that found no free slot, per endpoint,
    /// oldest first.
    queued: HashMap<Arc<str>, VecDeque<Queued>>,
    queued_total: usize,
    /// Endpoints with queued messages, served in turn.
    waiting: VecDeque<Arc<str>>,
}

/// A message waiting in this node's queue for a slot of its endpoint.
#[derive(Debug)]
pub struct Queued {
    pub endpoint: Arc<Endpoint>,
    pub event_id: String,
    pub body: Arc<str>,
    /// When the event was recorded (ms), if this node recorded it (the latency metric).
    pub created_at: Option<i64>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Taken by the claim loop (counted in `claimed_out` until its outcome commits).
    pub claimed: bool,
}

/// Messages one endpoint may have queued on a node, per slot it has.
const QUEUE_PER_SLOT: usize = 64;

/// Leases a claim may hold per endpoint, in slots' worth: a claim takes ahead what the
/// endpoint's slots will send next into the node's queue, so the claim path sends at the
/// pace of attempts, as recorded messages do, not at the pace of claim rounds (each
/// round would otherwise take only what the last commit's outcomes freed: one or two
/// messages for up to three queries; PostgreSQL drained a burst at half SQLite's rate).
const CLAIM_AHEAD: usize = 4;

/// One attempt's right to run; dropping it frees the slots.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    endpoint: Arc<str>,
    /// The endpoint's class when the attempt started: whose share the slot counts in.
    health: Health,
}

impl SlotCounts {
    fn health(&self, endpoint: &str) -> Health {
        if self.failing.contains(endpoint) {
            Health::Failing
        } else if self.proven.contains(endpoint) {
            Health::Proven
        } else {
            Health::Unproven
        }
    }

    /// Records `endpoint`'s URL; a change from the one known starts it afresh (neither
    /// failing nor proven).
    fn note_url(&mut self, endpoint: &str, url: &str) {
        match self.urls.get(endpoint) {
            Some(known) if &**known == url => {}
            Some(_) => {
                self.failing.remove(endpoint);
                self.proven.remove(endpoint);
                self.urls.insert(endpoint.into(), url.into());
            }
            None => {
                self.urls.insert(endpoint.into(), url.into());
            }
        }
    }

    /// Slots held in the share of `health` (the proven ones have none of their own).
    fn share_mut(&mut self, health: Health) -> Option<&mut usize> {
        match health {
            Health::Proven => None,
            Health::Unproven => Some(&mut self.unproven_total),
            Health::Failing => Some(&mut self.failing_total),
        }
    }
}

impl Slots {
    pub fn new(config: &WebhooksConfig) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(SlotCounts::default()),
            max_total: config.max_in_flight,
            max_per_endpoint: config.max_in_flight_per_endpoint,
            max_failing: (config.max_in_flight / 2).max(1),
            max_unproven: (config.max_in_flight / 4).max(1),
            backlog: AtomicBool::new(false),
            failing_backlog: AtomicBool::new(false),
            unproven_backlog: AtomicBool::new(false),
            claimed_out: AtomicUsize::new(0),
            wake: Notify::new(),
            in_flight_gauge: metrics::gauge!("payrelay_webhook_in_flight"),
        })
    }

    /// A slot for `endpoint` if the limits allow one.
    pub fn try_acquire(self: &Arc<Self>, endpoint: &Arc<str>) -> Option<Slot> {
        let mut counts = self.inner.lock();
        if !self.may_start(&counts, endpoint) {
            return None;
        }
        Some(self.take(&mut counts, endpoint))
    }

    /// The most slots endpoints of class `health` may hold together.
    fn share(&self, health: Health) -> usize {
        match health {
            Health::Proven => self.max_total,
            Health::Unproven => self.max_unproven,
            Health::Failing => self.max_failing,
        }
    }

    /// Whether one more attempt to `endpoint` fits: the node's total, the endpoint's
    /// share (one while it is failing or unproven), and the failing endpoints' half or
    /// the unproven ones' quarter.
    fn may_start(&self, counts: &SlotCounts, endpoint: &str) -> bool {
        if counts.total >= self.max_total {
            return false;
        }
        let used = counts.per_endpoint.get(endpoint).copied().unwrap_or(0);
        match counts.health(endpoint) {
            Health::Proven => used < self.max_per_endpoint,
            Health::Unproven => used < 1 && counts.unproven_total < self.max_unproven,
            Health::Failing => used < 1 && counts.failing_total < self.max_failing,
        }
    }

    /// Records how an attempt to `endpoint` at `url` ended: a failure makes it failing
    /// (one slot, within the failing half), a success makes it proven (healthy again, or
    /// promoted from unproven). An attempt to a URL the endpoint no longer has says
    /// nothing about it.
    pub fn record(&self, endpoint: &Arc<str>, url: &str, delivered: bool) {
        let mut counts = self.inner.lock();
        if counts
            .urls
            .get(endpoint)
            .is_some_and(|known| &**known != url)
        {
            return;
        }
        if delivered {
            counts.failing.remove(endpoint);
            if !counts.proven.contains(endpoint) {
                counts.proven.insert(endpoint.clone());
            }
        } else if !counts.failing.contains(endpoint) {
            counts.failing.insert(endpoint.clone());
        }
    }

    /// What this node takes `endpoint` to be.
    pub fn health(&self, endpoint: &str) -> Health {
        self.inner.lock().health(endpoint)
    }

    /// Says that `endpoint` has a success recorded (the claim found it proven).
    fn proven(&self, endpoint: &Arc<str>) {
        let mut counts = self.inner.lock();
        if !counts.proven.contains(endpoint) {
            counts.proven.insert(endpoint.clone());
        }
    }

    /// Takes in what the database says (endpoints other nodes, or an earlier run, saw
    /// failing or succeed) and forgets endpoints that are gone. A success on this node
    /// clears a failing endpoint; only a new URL makes a proven one unproven again.
    pub fn sync_health<'a>(&self, endpoints: impl IntoIterator<Item = (&'a str, &'a str, Health)>) {
        let mut counts = self.inner.lock();
        let mut known = HashSet::new();
        for (id, url, health) in endpoints {
            known.insert(id);
            counts.note_url(id, url);
            match health {
                Health::Failing if !counts.failing.contains(id) => {
                    counts.failing.insert(id.into());
                }
                Health::Proven if !counts.proven.contains(id) => {
                    counts.proven.insert(id.into());
                }
                _ => {}
            }
        }
        counts.failing.retain(|id| known.contains(&**id));
        counts.proven.retain(|id| known.contains(&**id));
        counts.urls.retain(|id, _| known.contains(&**id));
    }

    /// Says that `endpoint` now sends to `url` (created or edited through this node): a new
    /// URL has proven nothing yet, so the endpoint is unproven, one slot, until its first
    /// success there.
    pub fn endpoint_url(&self, endpoint: &str, url: &str) {
        self.inner.lock().note_url(endpoint, url);
    }

    /// Slots endpoints of class `health` may still take together on this node.
    pub fn free_for(&self, health: Health) -> usize {
        let mut counts = self.inner.lock();
        let held = counts.share_mut(health).map_or(0, |held| *held);
        self.share(health)
            .saturating_sub(held)
            .min(self.max_total.saturating_sub(counts.total))
    }

    /// Whether this node's queue takes another message for `endpoint`. A failing
    /// endpoint queues nothing: its messages, one at a time, go through the claim, and a
    /// lease on a queue that drains one attempt per timeout would only hold them back.
    /// An unproven one does: its first success lets the queue drain at the full share.
    pub fn queue_has_room(&self, endpoint: &str) -> bool {
        let counts = self.inner.lock();
        !counts.failing.contains(endpoint)
            && counts.queued_total < self.max_total * QUEUE_PER_SLOT
            && counts
                .queued
                .get(endpoint)
                .is_none_or(|q| q.len() < self.max_per_endpoint * QUEUE_PER_SLOT)
    }

    /// Messages this node's queue takes before it is full.
    pub fn queue_room(&self) -> usize {
        let counts = self.inner.lock();
        (self.max_total * QUEUE_PER_SLOT).saturating_sub(counts.queued_total)
    }

    /// Queues messages recorded leased to this node.
    pub fn enqueue(&self, messages: Vec<Queued>) {
        let mut counts = self.inner.lock();
        for message in messages {
            let id = message.endpoint.id.clone();
            let queue = counts.queued.entry(id.clone()).or_default();
            queue.push_back(message);
            if queue.len() == 1 {
                counts.waiting.push_back(id);
            }
            counts.queued_total += 1;
        }
    }

    /// Takes queued messages that have a slot now, endpoints in turn, with their slots.
    /// Without `leases_hold` (renewals failing), every queued message is dropped from the
    /// queue: its lease runs out and a claim sends it.
    fn take_queued(self: &Arc<Self>, leases_hold: bool) -> (Vec<(Queued, Slot)>, usize) {
        let mut counts = self.inner.lock();
        let mut ready = Vec::new();
        let mut expired = 0;
        if !leases_hold {
            expired = counts.queued_total;
            let claimed = counts
                .queued
                .values()
                .flatten()
                .filter(|m| m.claimed)
                .count();
            self.claimed_ended(claimed);
            counts.queued.clear();
            counts.waiting.clear();
            counts.queued_total = 0;
            return (ready, expired);
        }
        for _ in 0..counts.waiting.len() {
            if counts.total >= self.max_total {
                break;
            }
            let Some(id) = counts.waiting.pop_front() else {
                break;
            };
            let mut queue = counts.queued.remove(&id).unwrap_or_default();
            while !queue.is_empty() {
                if !self.may_start(&counts, &id) {
                    break;
                }
                let Some(message) = queue.pop_front() else {
                    break;
                };
                let slot = self.take(&mut counts, &id);
                ready.push((message, slot));
            }
            if !queue.is_empty() {
                counts.queued.insert(id.clone(), queue);
                counts.waiting.push_back(id);
            }
        }
        counts.queued_total = counts.queued.values().map(VecDeque::len).sum();
        (ready, expired)
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
        let health = counts.health(endpoint);
        if let Some(held) = counts.share_mut(health) {
            *held += 1;
        }
        self.in_flight_gauge.increment(1.0);
        Slot {
            slots: self.clone(),
            endpoint: endpoint.clone(),
            health,
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

    /// Says that attempts' outcomes are recorded (their leases over), `claimed` of them
    /// started by the claim loop: if claimed work was held back by its endpoint's
    /// leases, claim again.
    ///
    /// Ended claimed work always wakes the claimer, whatever the backlog note says: a
    /// round that ran while these outcomes committed read their leases still held,
    /// claimed nothing behind them, and cleared the note (this decrement made
    /// `claimed_out` zero before the round looked), so only the poll would have
    /// claimed again. A burst beyond an endpoint's slots drained at one claim per poll
    /// that way (`bench webhooks --concurrency 256`: 315 deliveries/s, callbacks up
    /// to a minute late).
    pub fn leases_ended(&self, claimed: usize) {
        if claimed > 0 {
            self.claimed_ended(claimed);
            self.wake.notify_one();
        } else if self.backlog.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    fn claimed_ended(&self, n: usize) {
        let _ = self
            .claimed_out
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |out| {
                Some(out.saturating_sub(n))
            });
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
            if let Some(held) = counts.share_mut(self.health) {
                *held = held.saturating_sub(1);
            }
            if let Some(used) = counts.per_endpoint.get_mut(&self.endpoint) {
                *used -= 1;
                if *used == 0 {
                    counts.per_endpoint.remove(&self.endpoint);
                }
            }
        }
        self.slots.in_flight_gauge.decrement(1.0);
        let share_backlog = match self.health {
            Health::Proven => false,
            Health::Unproven => self.slots.unproven_backlog.load(Ordering::Acquire),
            Health::Failing => self.slots.failing_backlog.load(Ordering::Acquire),
        };
        if self.slots.backlog.load(Ordering::Acquire) || share_backlog {
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
    /// Started by the claim loop (counted in [`Slots`] until its outcome is recorded).
    pub claimed: bool,
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
    pub leases: LeaseClock,
    pub tasks: TaskTracker,
    /// Cancelled at shutdown: nothing new starts.
    pub stop: CancellationToken,
}

/// Until when every lease this node holds is sure to last: the start of its latest
/// successful renewal plus the lease (a message claimed or recorded since has a lease
/// ending later still).
#[derive(Debug)]
pub struct LeaseClock {
    horizon: AtomicI64,
    /// What must be left of the horizon for an attempt to go on: a third of the lease.
    margin: i64,
}

impl LeaseClock {
    pub fn new(config: &WebhooksConfig) -> LeaseClock {
        let lease = config.lease().as_millis() as i64;
        LeaseClock {
            horizon: AtomicI64::new(now_ms() + lease),
            margin: lease / 3,
        }
    }

    /// A renewal that started at `at` (ms) succeeded.
    fn renewed(&self, at: i64, lease: i64) {
        self.horizon.fetch_max(at + lease, Ordering::AcqRel);
    }

    /// Whether this node's leases hold for a while yet.
    pub fn holds(&self) -> bool {
        now_ms() < self.horizon.load(Ordering::Acquire) - self.margin
    }

    /// Resolves when this node's leases no longer surely hold.
    async fn lost(&self) {
        loop {
            let left = self.horizon.load(Ordering::Acquire) - self.margin - now_ms();
            if left <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(left as u64)).await;
        }
    }
}

impl Dispatcher {
    /// Starts `job` in a task of its own.
    pub fn spawn(self: &Arc<Self>, job: Job) {
        let this = self.clone();
        self.tasks.spawn(async move {
            this.run(job).await;
            // Its slot is free: the next queued message may go.
            this.pump();
        });
    }

    /// Starts the queued messages that have a slot now.
    pub fn pump(self: &Arc<Self>) {
        if self.stop.is_cancelled() {
            return;
        }
        // A queued message goes out only while this node's leases are being renewed;
        // otherwise another node may take it soon.
        let (ready, expired) = self.slots.take_queued(self.leases.holds());
        if expired > 0 {
            tracing::warn!(
                expired,
                "webhook leases are not being renewed: queued messages go out when their lease ends"
            );
        }
        for (message, slot) in ready {
            self.spawn(Job {
                endpoint: message.endpoint,
                event_id: message.event_id,
                body: message.body,
                attempts: message.attempts,
                created_at: message.created_at,
                claimed: message.claimed,
                slot,
            });
        }
    }

    async fn run(&self, job: Job) {
        let Job {
            endpoint,
            event_id,
            body,
            attempts,
            created_at,
            claimed,
            slot,
        } = job;
        let Some(app) = self.core.apps.by_id(&endpoint.app_id).cloned() else {
            // The app left the configuration: nothing can sign for it. The lease runs out
            // and the message stays pending until the app is back.
            tracing::warn!(endpoint = %endpoint.id, app = %endpoint.app_id, "webhook endpoint of an app this node does not serve");
            if claimed {
                self.slots.claimed_ended(1);
            }
            return;
        };
        let attempted_at = now_ms();
        let result = tokio::select! {
            result = sender::attempt(
                &self.client,
                &self.config,
                &endpoint,
                &app,
                &event_id,
                &body,
            ) => result,
            () = self.leases.lost() => {
                // Renewals failed: another node may claim this message soon, and must
                // not find this attempt still on the wire. Nothing is recorded; whoever
                // claims it sends it again.
                tracing::warn!(endpoint = %endpoint.id, event = %event_id, "webhook attempt abandoned: this node's lease could not be renewed");
                metrics::counter!("payrelay_webhook_attempts_abandoned_total").increment(1);
                if claimed {
                    self.slots.claimed_ended(1);
                }
                return;
            }
        };
        self.slots
            .record(&endpoint.id, &endpoint.url, result.delivered());
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
                url: endpoint.url.to_string(),
                attempted_at,
                status_code: result.status.map(i64::from),
                error: result.error,
                latency_ms: result.latency.as_millis() as i64,
                response_body: result.body,
                attempts,
                next,
                claimed,
            })
            .await;
    }

    async fn next_step(&self, endpoint: &Endpoint, result: &Attempted, attempts: i64) -> Next {
        if result.delivered() {
            return Next::Delivered;
        }
        // A 410 from a URL the endpoint has left (edited while the attempt ran) is the
        // old URL's answer, not the endpoint's: the message is retried at the new one.
        if result.gone() && self.disable_gone(endpoint).await {
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
            .disable_endpoint(&endpoint.id, reason, now_ms(), None)
            .await
        {
            Ok(true) => announce_disabled(endpoint, reason, "failing"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(endpoint = %endpoint.id, "cannot record that the endpoint is disabled: {e}");
            }
        }
    }

    /// An endpoint answered 410 Gone: disables it if it still has the URL that answered.
    /// The database decides, so neither the node that took an edit of the URL nor one
    /// whose index has not seen the edit yet disables the endpoint for its old URL's
    /// answer. Returns whether the endpoint is disabled now (false: retry the message).
    async fn disable_gone(&self, endpoint: &Endpoint) -> bool {
        const REASON: &str = "the endpoint answered 410 Gone";
        match self
            .store
            .disable_endpoint(&endpoint.id, REASON, now_ms(), Some(&endpoint.url))
            .await
        {
            Ok(true) => {
                self.index.disable(&endpoint.id);
                announce_disabled(endpoint, REASON, "gone");
                true
            }
            Ok(false) => false,
            Err(e) => {
                // It said Gone: stop sending to it here even if that cannot be recorded.
                self.index.disable(&endpoint.id);
                tracing::error!(endpoint = %endpoint.id, "cannot record that the endpoint is disabled: {e}");
                true
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

    /// Claims and starts due work: proven endpoints' first, up to every free slot and
    /// `max_in_flight_per_endpoint` each; then unproven endpoints', one each, within what
    /// is left of their quarter; then failing endpoints', one each, within what is left
    /// of their half.
    async fn claim_round(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        let free = self.slots.free();
        if free == 0 {
            // A freed slot must wake us: work may be waiting.
            self.slots.backlog.store(true, Ordering::Release);
            return Ok(());
        }
        self.slots.backlog.store(false, Ordering::Release);
        let now = now_ms();
        let lease_until = now + self.config.lease().as_millis() as i64;
        let per_endpoint = self.config.max_in_flight_per_endpoint as i64;
        // Proven endpoints' messages are claimed ahead, into the queue (CLAIM_AHEAD).
        let queue_room = self.slots.queue_room().min(free * CLAIM_AHEAD);
        let proven = self
            .store
            .claim(
                now,
                lease_until,
                &self.owner,
                per_endpoint * CLAIM_AHEAD as i64,
                (free + queue_room) as i64,
                Health::Proven,
            )
            .await?;
        let mut started = !proven.is_empty();
        self.start_claimed(proven, Health::Proven).await?;
        for (health, backlog) in [
            (Health::Unproven, &self.slots.unproven_backlog),
            (Health::Failing, &self.slots.failing_backlog),
        ] {
            let share_free = self.slots.free_for(health);
            if share_free == 0 {
                // A freed slot of this class must wake us: its work may be waiting.
                backlog.store(true, Ordering::Release);
                continue;
            }
            backlog.store(false, Ordering::Release);
            let claimed = self
                .store
                .claim(now, lease_until, &self.owner, 1, share_free as i64, health)
                .await?;
            if claimed.len() >= share_free {
                backlog.store(true, Ordering::Release);
            }
            started |= !claimed.is_empty();
            self.start_claimed(claimed, health).await?;
        }
        if started {
            // More may be due behind what the slots admitted: a freed slot claims again
            // (an empty claim clears this).
            self.slots.backlog.store(true, Ordering::Release);
        } else if self.slots.claimed_out.load(Ordering::Acquire) > 0 {
            // Leases of attempts still being recorded may be what held work back.
            self.slots.backlog.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Starts claimed messages, each in a slot of its own; `health` is the class the claim
    /// read from the database.
    async fn start_claimed(
        self: &Arc<Self>,
        claimed: Vec<Claimed>,
        health: Health,
    ) -> Result<(), sqlx::Error> {
        if claimed.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
        let mut bodies = self.store.payloads(&ids).await?;
        let mut queued = false;
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
            let slot = if health == Health::Proven {
                // A success is recorded (maybe by another node): the full share.
                self.slots.proven(&endpoint.id);
                // Claimed ahead: what has no slot now waits in the queue, leased.
                match self.slots.try_acquire(&endpoint.id) {
                    Some(slot) => slot,
                    None if self.slots.queue_has_room(&endpoint.id) => {
                        self.slots.claimed_out.fetch_add(1, Ordering::AcqRel);
                        self.slots.enqueue(vec![Queued {
                            endpoint,
                            event_id: claim.event_id,
                            body: body.into(),
                            created_at: None,
                            attempts: claim.attempts,
                            claimed: true,
                        }]);
                        queued = true;
                        continue;
                    }
                    None => {
                        self.store
                            .release_lease(&claim.endpoint_id, &claim.event_id, &self.owner)
                            .await?;
                        continue;
                    }
                }
            } else {
                self.slots.acquire_claimed(&endpoint.id)
            };
            self.slots.claimed_out.fetch_add(1, Ordering::AcqRel);
            self.spawn(Job {
                endpoint,
                event_id: claim.event_id,
                body: body.into(),
                attempts: claim.attempts,
                created_at: None,
                claimed: true,
                slot,
            });
        }
        if queued {
            // The endpoint's attempts may all have ended while these were queued.
            self.pump();
        }
        Ok(())
    }

    /// Renews this node's leases every third of a lease, until the node shuts down and
    /// its last attempt is over.
    pub async fn renew_loop(self: Arc<Self>) {
        let lease = self.config.lease().as_millis() as i64;
        let mut tick = tokio::time::interval(self.config.lease_renewal());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                // Resolves once shutdown closed the tracker and every attempt ended.
                () = self.tasks.wait() => return,
                _ = tick.tick() => {}
            }
            let at = now_ms();
            match self.store.renew_leases(&self.owner, at, at + lease).await {
                Ok(_) => {
                    failures = 0;
                    self.leases.renewed(at, lease);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(failures, "cannot renew webhook leases: {e}");
                    }
                }
            }
        }
    }

    /// The claim loop: runs until `stop`.
    pub async fn claim_loop(self: Arc<Self>, stop: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        // Each round is up to three claim queries: how often they run and what they cost
        // is what the database pays beyond the writer's commits.
        let round_seconds = metrics::histogram!("payrelay_webhook_claim_round_seconds");
        let mut failures = 0u32;
        loop {
            let started = std::time::Instant::now();
            let round = self.claim_round().await;
            round_seconds.record(started.elapsed().as_secs_f64());
            if let Err(e) = round {
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

/// Logs and counts an endpoint this node disabled.
fn announce_disabled(endpoint: &Endpoint, reason: &str, label: &'static str) {
    tracing::warn!(endpoint = %endpoint.id, app = %endpoint.app_id, merchant = ?endpoint.merchant_id, reason, "webhook endpoint disabled");
    metrics::counter!("payrelay_webhook_endpoints_disabled_total", "reason" => label).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// Whether the claim loop, waiting now, would wake at once.
    fn woken(slots: &Slots) -> bool {
        slots.wake.notified().now_or_never().is_some()
    }

    #[test]
    fn claimed_work_that_ends_during_a_claim_round_wakes_the_claimer() {
        let slots = Slots::new(&WebhooksConfig::default());
        // A round started sixteen claimed attempts; they ended and the next round began
        // (clearing the backlog note) before their outcomes were committed.
        slots.claimed_out.store(16, Ordering::Release);
        slots.backlog.store(false, Ordering::Release);
        // The outcomes commit while that round reads the leases as still held.
        slots.leases_ended(16);
        assert_eq!(slots.claimed_out.load(Ordering::Acquire), 0);
        assert!(
            woken(&slots),
            "the round saw the leases held and nothing left out: only a wake claims again"
        );
        assert!(!woken(&slots), "one wake");

        // Outcomes of messages this node sent without a claim wake it only if work
        // waits for the claim.
        slots.leases_ended(0);
        assert!(!woken(&slots));
        slots.note_backlog();
        assert!(woken(&slots));
        slots.leases_ended(0);
        assert!(woken(&slots));
    }

    fn queued(id: &str, claimed: bool) -> Queued {
        Queued {
            endpoint: Arc::new(Endpoint {
                id: "ep_1".into(),
                app_id: "1".into(),
                merchant_id: Some("m1".into()),
                kind: crate::webhooks::endpoint::Kind::Standard,
                url: "https://example.test/".into(),
                filter: crate::webhooks::endpoint::EventFilter::all(),
                enabled: true,
                secret: "whsec_x".into(),
                previous_secret: None,
                previous_until: 0,
            }),
            event_id: id.into(),
            body: "{}".into(),
            created_at: None,
            attempts: 2,
            claimed,
        }
    }

    #[test]
    fn messages_claimed_ahead_wait_in_the_queue_and_are_counted_until_they_end() {
        let config = WebhooksConfig::default();
        let slots = Slots::new(&config);
        let endpoint: Arc<str> = "ep_1".into();
        slots.proven(&endpoint);
        // The endpoint's slots are all taken: what a claim took ahead waits, leased.
        let held: Vec<Slot> = (0..config.max_in_flight_per_endpoint)
            .map(|_| slots.try_acquire(&endpoint).unwrap())
            .collect();
        assert!(slots.try_acquire(&endpoint).is_none());
        assert!(slots.queue_has_room(&endpoint));
        slots.claimed_out.store(2, Ordering::Release);
        slots.enqueue(vec![queued("evt_1", true), queued("evt_2", true)]);
        assert_eq!(
            slots.queue_room(),
            config.max_in_flight * QUEUE_PER_SLOT - 2
        );

        // A freed slot starts the oldest, with its attempt count and as claimed.
        drop(held);
        let (ready, expired) = slots.take_queued(true);
        assert_eq!((ready.len(), expired), (2, 0));
        assert_eq!(ready[0].0.event_id, "evt_1");
        assert_eq!((ready[0].0.attempts, ready[0].0.claimed), (2, true));

        // When the node's leases stop holding, the queue is dropped (a claim anywhere
        // sends those messages when their leases end) and its claimed messages no
        // longer count as claimed work in flight.
        slots.claimed_out.store(3, Ordering::Release);
        slots.enqueue(vec![queued("evt_3", true), queued("evt_4", false)]);
        let (ready_now, expired) = slots.take_queued(false);
        assert_eq!((ready_now.len(), expired), (0, 2));
        assert_eq!(slots.claimed_out.load(Ordering::Acquire), 2);
        drop(ready);
    }
}
