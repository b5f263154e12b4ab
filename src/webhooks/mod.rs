//! Guaranteed callbacks: signed webhooks from a crash-proof outbox, retried until they
//! land (seed 003: "callbacks with guaranteed delivery and retries").
//!
//! The path of one event:
//! 1. [`Core::publish`] offers every publication to this room's journal
//!    ([`Webhooks`] implements [`PublicationJournal`]). The journal finds, in memory, the
//!    enabled endpoints that want it ([`index`]): a merchant's endpoints for publications
//!    on its `private-{merchant,payments,notifications}.{id}` channels, the app's own
//!    endpoints for app-level events, Pusher app webhooks for client events. Nothing
//!    wants most publications, and those cost one atomic load.
//! 2. The body is built once ([`payload`]) and the event with one delivery per endpoint is
//!    committed by the group-commit [`writer`]; only then does the publishing API answer.
//! 3. Deliveries this node can start at once are recorded already leased to it and
//!    handed to the [`dispatcher`]; the rest are claimed later by its claim loop (which
//!    also finds retries coming due, and whatever a crashed node or another node left).
//! 4. Each attempt ([`sender`]) signs ([`signature`]) and POSTs through the SSRF
//!    [`guard`], then records its outcome through the writer: delivered, retry at a time
//!    from the schedule, or failed. 410 disables the endpoint; so does failing without a
//!    success for `disable_after_failing_secs`.
//!
//! A `kill -9` at any point loses nothing: an event is acknowledged only once committed,
//! and a message whose lease ran out (or, on a restarted single node, any lease) is sent
//! again. Receivers de-duplicate by `webhook-id`, the event's id.
//!
//! The HTTP API ([`api`]) and `payrelay webhooks` ([`manage`]) edit endpoints and read
//! the delivery log; [`pusher`] turns hub occupancy into Pusher app webhooks.

pub mod api;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod endpoint;
pub mod guard;
pub mod index;
pub mod manage;
pub mod payload;
pub mod sender;
pub mod signature;
pub mod store;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{PusherWebhookConfig, WebhooksConfig};

use crate::core::{Core, JournalWrite, Publication, PublicationJournal};
use crate::db::{Backend, Db, now_ms};
use dispatcher::{Dispatcher, Job, LeaseClock, Queued, Slot, Slots};
use endpoint::Endpoint;
use index::EndpointIndex;
use store::{NewEvent, OutboxStore};
use writer::Writer;

/// How often the endpoint table is checked for changes made elsewhere (another node,
/// `payrelay webhooks`); the index is reloaded when it changed.
const CHANGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the outbox gauges are refreshed and failing endpoints looked for.
const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the index is reloaded whatever the change check says.
const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// How often retention is applied.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Messages one pruning statement deletes (then it goes again).
const PRUNE_BATCH: i64 = 5000;

/// The webhook room of a running node.
pub struct Webhooks {
    pub config: Arc<WebhooksConfig>,
    pub store: OutboxStore,
    pub index: Arc<EndpointIndex>,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
}

/// The merchant whose callbacks a channel's publications are: only the merchant's own
/// private channels (not presence, whose events are member traffic, nor end-to-end
/// encrypted ones, which payrelay cannot read).
pub fn merchant_of(channel: &str) -> Option<&str> {
    if !channel.starts_with("private-") || channel.starts_with("private-encrypted-") {
        return None;
    }
    crate::merchants::channels::owner(channel)
}

/// Each endpoint with what the database says of its health.
fn health_of(rows: &[store::EndpointRow]) -> impl Iterator<Item = (&str, &str, store::Health)> {
    rows.iter()
        .map(|r| (r.id.as_str(), r.url.as_str(), store::Health::of(r)))
}

impl Webhooks {
    /// Opens the outbox in `db`, recovers what a previous run left, and starts the
    /// dispatcher and housekeeping. The journal is installed in `core`.
    pub async fn start(
        config: &crate::config::Config,
        db: &Db,
        core: &Arc<Core>,
    ) -> anyhow::Result<Arc<Webhooks>> {
        let settings = Arc::new(config.webhooks.clone());
        let store = OutboxStore::new(db.clone());
        if store.backend() == Backend::Sqlite {
            // The file is this node's alone: whoever held a lease is a dead process.
            let released = store.release_leases(None).await?;
            if released > 0 {
                tracing::info!(
                    released,
                    "webhook messages in flight when the node last stopped will be sent again"
                );
            }
        }
        manage::sync_pusher_endpoints(&store, config).await?;
        let index = Arc::new(EndpointIndex::default());
        let rows = store.endpoints(None, None).await?;
        index.replace_all(rows.iter().map(store::EndpointRow::to_endpoint));
        let owner = format!("node_{:016x}", rand::random::<u64>());
        let slots = Slots::new(&settings);
        // Endpoints that were failing stay on their single slot until they succeed;
        // endpoints that never succeeded have one until their first success.
        slots.sync_health(health_of(&rows));
        let writer = Writer::spawn(
            store.clone(),
            owner.clone(),
            slots.clone(),
            settings.outbox_commits_in_flight,
        );
        let stop = CancellationToken::new();
        let dispatcher = Arc::new(Dispatcher {
            config: settings.clone(),
            store: store.clone(),
            writer,
            index: index.clone(),
            slots,
            core: core.clone(),
            client: sender::client(&settings),
            owner,
            leases: LeaseClock::new(&settings),
            tasks: TaskTracker::new(),
            stop: stop.clone(),
        });
        tokio::spawn(dispatcher.clone().claim_loop(stop.clone()));
        tokio::spawn(dispatcher.clone().renew_loop());
        let webhooks = Arc::new(Webhooks {
            config: settings,
            store,
            index,
            dispatcher,
            stop,
        });
        tokio::spawn(webhooks.clone().housekeeping());
        core.set_journal(webhooks.clone());
        Ok(webhooks)
    }

    /// Stops claiming, lets attempts in flight finish until `deadline`, and gives the
    /// leases of unsent messages back so another node (or the next start) sends them.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        self.dispatcher.tasks.close();
        let _ = tokio::time::timeout_at(deadline, self.dispatcher.tasks.wait()).await;
        // Outcomes queued by the attempts that finished reach the database first.
        let _ =
            tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(50))).await;
        if let Err(e) = self
            .store
            .release_leases(Some(&self.dispatcher.owner))
            .await
        {
            tracing::warn!(
                "cannot release webhook leases at shutdown (they run out by themselves): {e}"
            );
        }
    }

    /// The endpoint index (for the API and tests).
    pub fn endpoints(&self) -> &Arc<EndpointIndex> {
        &self.index
    }

    /// Says that an endpoint was edited through this node and sends to `url` now: a new
    /// URL makes it unproven at once here (other nodes see it at their next reload).
    pub fn endpoint_edited(&self, id: &str, url: &str) {
        self.dispatcher.slots.endpoint_url(id, url);
    }

    /// Wakes the claim loop (a message was put back in the queue).
    pub fn wake(&self) {
        self.dispatcher.slots.wake();
    }

    /// Records `events`, starting at once what has a free slot; resolves when committed.
    fn write(&self, mut events: Vec<NewEvent>, endpoints: Vec<Arc<Endpoint>>) -> JournalWrite {
        let now = now_ms();
        let lease_until = now + self.config.lease().as_millis() as i64;
        let mut ready: Vec<(Arc<Endpoint>, usize, Slot)> = Vec::new();
        let mut queued: Vec<(Arc<Endpoint>, usize)> = Vec::new();
        let mut left_behind = false;
        let slots = &self.dispatcher.slots;
        for (i, event) in events.iter_mut().enumerate() {
            for delivery in &mut event.deliveries {
                let Some(endpoint) = endpoints.iter().find(|e| *e.id == *delivery.endpoint_id)
                else {
                    continue;
                };
                if let Some(slot) = slots.try_acquire(&endpoint.id) {
                    delivery.lease_until = lease_until;
                    ready.push((endpoint.clone(), i, slot));
                } else if slots.queue_has_room(&endpoint.id) {
                    delivery.lease_until = lease_until;
                    queued.push((endpoint.clone(), i));
                } else {
                    left_behind = true;
                }
            }
        }
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            let bodies: Vec<(String, Arc<str>, i64)> = events
                .iter()
                .map(|e| (e.id.clone(), Arc::from(e.payload.as_str()), e.created_at))
                .collect();
            dispatcher.writer.record(events).await?;
            for (endpoint, i, slot) in ready {
                let (event_id, body, created_at) = &bodies[i];
                dispatcher.spawn(Job {
                    endpoint,
                    event_id: event_id.clone(),
                    body: body.clone(),
                    attempts: 0,
                    created_at: Some(*created_at),
                    claimed: false,
                    slot,
                });
            }
            if !queued.is_empty() {
                dispatcher.slots.enqueue(
                    queued
                        .into_iter()
                        .map(|(endpoint, i)| {
                            let (event_id, body, created_at) = &bodies[i];
                            Queued {
                                endpoint,
                                event_id: event_id.clone(),
                                body: body.clone(),
                                created_at: Some(*created_at),
                                attempts: 0,
                                claimed: false,
                            }
                        })
                        .collect(),
                );
                // A slot may have freed while the commit ran.
                dispatcher.pump();
            }
            if left_behind {
                dispatcher.slots.note_backlog();
            }
            Ok(())
        })
    }

    /// Records one event for `endpoints` and starts what it can (Pusher app webhooks use
    /// this for events that are not publications).
    pub fn record_event(&self, event: NewEvent, endpoints: Vec<Arc<Endpoint>>) -> JournalWrite {
        self.write(vec![event], endpoints)
    }

    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHANGE_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = tokio::time::Instant::now();
        let (mut last_stats, mut last_reload, mut last_prune) = (None, started, started);
        let mut version = None;
        let gauges = (
            metrics::gauge!("payrelay_webhook_pending"),
            metrics::gauge!("payrelay_webhook_oldest_pending_age_seconds"),
            metrics::gauge!("payrelay_webhook_disabled_endpoints"),
        );
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.store.endpoints_version().await {
                Ok(now)
                    if version != Some(now) || last_reload.elapsed() >= FULL_RELOAD_INTERVAL =>
                {
                    if self.reload().await {
                        version = Some(now);
                        last_reload = tokio::time::Instant::now();
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot check the webhook endpoints for changes: {e}"),
            }
            if last_stats.is_none_or(|at: tokio::time::Instant| at.elapsed() >= STATS_INTERVAL) {
                last_stats = Some(tokio::time::Instant::now());
                self.disable_failing().await;
                match self.store.stats().await {
                    Ok(stats) => {
                        gauges.0.set(stats.pending as f64);
                        let age = stats
                            .oldest_pending_created_at
                            .map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
                        gauges.1.set(age);
                        gauges.2.set(stats.disabled_endpoints as f64);
                    }
                    Err(e) => tracing::warn!("cannot read webhook outbox figures: {e}"),
                }
            }
            if last_prune.elapsed() >= PRUNE_INTERVAL {
                last_prune = tokio::time::Instant::now();
                self.prune().await;
            }
        }
    }

    /// Reloads the endpoint index from the database; false if it could not.
    async fn reload(&self) -> bool {
        match self.store.endpoints(None, None).await {
            Ok(rows) => {
                self.index
                    .replace_all(rows.iter().map(store::EndpointRow::to_endpoint));
                self.dispatcher.slots.sync_health(health_of(&rows));
                true
            }
            Err(e) => {
                tracing::warn!("cannot reload webhook endpoints: {e}");
                false
            }
        }
    }

    /// Disables endpoints that have failed without a success for too long.
    async fn disable_failing(&self) {
        let limit = self.config.disable_after_failing_secs as i64 * 1000;
        let rows = match self.store.failing_before(now_ms() - limit).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot look for failing webhook endpoints: {e}");
                return;
            }
        };
        for row in rows {
            let reason = format!(
                "failing without a success for {} s",
                self.config.disable_after_failing_secs
            );
            self.dispatcher.disable(&row.to_endpoint(), &reason).await;
        }
    }

    /// Deletes delivered and failed messages past the retention.
    pub async fn prune(&self) -> u64 {
        self.prune_at(now_ms()).await
    }

    /// [`Webhooks::prune`] as if it were `now` (ms): tests look days ahead. Returns how
    /// many messages went.
    pub async fn prune_at(&self, now: i64) -> u64 {
        let before = now - self.config.retention_days as i64 * 86_400_000;
        let mut total = 0;
        loop {
            match self.store.prune(before, PRUNE_BATCH).await {
                Ok(gone) => {
                    total += gone;
                    if gone < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot prune the webhook log: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                messages = total,
                "pruned webhook messages past their retention"
            );
            metrics::counter!("payrelay_webhook_pruned_total").increment(total);
        }
        total
    }
}

impl PublicationJournal for Webhooks {
    fn record(&self, publication: &Arc<Publication>) -> Option<JournalWrite> {
        if self.index.is_empty() {
            return None;
        }
        let app = &*publication.app_id;
        let event = &*publication.event;
        if publication.from_client {
            return pusher::client_event(self, publication);
        }
        let merchant = merchant_of(&publication.channel);
        let mut endpoints = match merchant {
            Some(m) => self.index.standard_for(app, Some(m), event),
            None => Vec::new(),
        };
        if publication.app_event {
            endpoints.extend(self.index.standard_for(app, None, event));
        }
        if endpoints.is_empty() {
            return None;
        }
        let body = payload::standard(
            event,
            publication.published_at,
            &publication.data,
            merchant,
            &publication.channel,
        );
        let new = NewEvent::for_endpoints(
            publication.id.to_string(),
            app,
            merchant,
            event,
            &publication.channel,
            body,
            &endpoints,
        );
        Some(self.write(vec![new], endpoints))
    }
}

pub mod pusher;
