//! Payment requests ("payloads", seed 001): created by an app's backend with xumm-sdk's
//! API, shown to the end user by a signing side (a wallet) that reports when it was opened
//! and how it was resolved, followed live on a socket of its own (`/sign/{uuid}`, the
//! adapter in `protocols/payload`), announced to the app's backend by callback.
//!
//! - [`model`]: the payload, the create body, every JSON shape (API, socket, callback).
//! - [`store`]: the table; each change of state is one conditional update that also
//!   records the change as not yet announced (the outbox of the change).
//! - [`timers`]: expiry. A payload never opened by its expiry is expired for good; an
//!   opened one can still be resolved (open before, not resolve before).
//! - [`api`]: `/api/v1/platform/payload[/{uuid}]` (xumm-sdk) and the signing side's
//!   `/v1/payloads/{uuid}/opened|resolve`.
//!
//! A change is announced through the core's one publish path, on the payload's internal
//! channel `#payload-{uuid}` (which no client or API can name): the socket message
//! (event = the change's name, data = the message) and, for resolution, cancellation and
//! expiry, an app-level event (`payload.resolved`, …; data = what the GET answers) that
//! the webhook pipeline delivers to the app's own endpoints. So messages reach sockets on
//! every node through the broker, and a callback is committed before the API answers.
//! Should the node die between the change and its announcement, the sweeper announces it
//! again (at least once, as every callback).

pub mod api;
pub mod config;
pub mod model;
pub mod store;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::PayloadsConfig;
pub use model::{Change, Payload, State};

use crate::core::{App, Core, NewPublication, PublishError};
use crate::db::{Backend, Db, now_ms};
use model::{NewPayload, Resolution};
use store::{PayloadStore, StoreError};
use timers::Timers;

/// Prefix of a payload's internal channel (`#payload-{uuid}`).
pub const CHANNEL_PREFIX: &str = "#payload-";
/// A change recorded this long ago and still not announced is announced by the sweeper
/// (the request that made it, on whichever node, has had its chance).
const ANNOUNCE_GRACE_MS: i64 = 10_000;
/// How often finished payloads past the retention are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: i64 = 5000;
/// Rows one sweep reads at most (due payloads; unannounced changes).
const SWEEP_BATCH: i64 = 10_000;

/// The internal channel of payload `uuid`.
pub fn channel_of(uuid: &str) -> String {
    format!("{CHANNEL_PREFIX}{uuid}")
}

/// The change a socket message publication announces, by its event name; `None` for
/// the callbacks that travel on the same channel.
pub fn socket_change(event: &str) -> Option<Change> {
    Change::parse(event)
}

/// Why an operation on a payload failed.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("No payload with this uuid")]
    NotFound,
    /// The payload is not in a state that allows it (409), with xumm's reason code.
    #[error("{message}")]
    Conflict {
        reason: &'static str,
        message: &'static str,
        payload: Box<Payload>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a cancel did, as xumm reports it.
pub struct Cancelled {
    pub cancelled: bool,
    pub reason: &'static str,
    pub payload: Payload,
}

/// The payload room of a running node.
pub struct Payloads {
    pub config: Arc<PayloadsConfig>,
    store: PayloadStore,
    core: Arc<Core>,
    /// Whether the node serves TLS itself (the default scheme of the URLs it hands out).
    tls: bool,
    timers: Timers,
    stop: CancellationToken,
}

impl Payloads {
    /// Opens the room on `db` and starts its timers and sweeper; a payload due while the
    /// node was down expires at the first sweep, and a change it did not announce is
    /// announced.
    pub fn start(config: &crate::config::Config, db: &Db, core: &Arc<Core>) -> Arc<Payloads> {
        let stop = CancellationToken::new();
        let (timers, fired) = Timers::new();
        let payloads = Arc::new(Payloads {
            config: Arc::new(config.payloads.clone()),
            store: PayloadStore::new(db.clone()),
            core: core.clone(),
            tls: config.tls_cert_file.is_some(),
            timers,
            stop: stop.clone(),
        });
        tokio::spawn(timers::run(Arc::downgrade(&payloads), fired, stop));
        tokio::spawn(payloads.clone().sweep());
        payloads
    }

    /// Stops the timers and the sweeper (what they did not get to, the next start does).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn countdown(&self) -> Duration {
        self.config.countdown()
    }

    /// Records a new payload of `app` and arms its expiry.
    pub async fn create(&self, app: &App, new: NewPayload) -> Result<Payload, StoreError> {
        let payload = store::new_row(&app.id, new, now_ms());
        self.store.insert(&payload).await?;
        metrics::counter!("payrelay_payloads_created_total").increment(1);
        if payload.expires_at - now_ms() <= self.lookahead_ms() {
            self.timers.arm(&payload.uuid, payload.expires_at);
        }
        Ok(payload)
    }

    /// A payload by uuid, whichever app's (the socket: the uuid is the credential).
    pub async fn lookup(&self, uuid: &str) -> Result<Option<Payload>, StoreError> {
        let payload = self.store.get(uuid).await?;
        if let Some(p) = &payload
            && p.is_due(now_ms())
        {
            // Due, but its timer has not run yet: expire it now, so nobody sees a payload
            // that is past its expiry and still open to opening.
            return Ok(Some(
                self.expire(&p.uuid).await?.unwrap_or_else(|| p.clone()),
            ));
        }
        Ok(payload)
    }

    /// `app`'s payload `uuid`.
    pub async fn get(&self, app: &App, uuid: &str) -> Result<Payload, PayloadError> {
        match self.lookup(uuid).await? {
            Some(p) if *p.app_id == *app.id => Ok(p),
            _ => Err(PayloadError::NotFound),
        }
    }

    /// Cancels `app`'s payload `uuid` unless it was opened, resolved, or is over.
    pub async fn cancel(&self, app: &App, uuid: &str) -> Result<Cancelled, PayloadError> {
        let current = self.get(app, uuid).await?;
        let refused = |reason, payload| Cancelled {
            cancelled: false,
            reason,
            payload,
        };
        match self.store.cancel(&app.id, uuid, now_ms()).await? {
            Some(payload) => {
                self.announce(app, &payload, Change::Cancelled).await;
                Ok(Cancelled {
                    cancelled: true,
                    reason: "OK",
                    payload,
                })
            }
            None => {
                // It changed in between, or could not be cancelled: say why, as it is now.
                let now = self.get(app, uuid).await.unwrap_or(current);
                Ok(match now.state {
                    State::Resolved => refused("ALREADY_RESOLVED", now),
                    State::Cancelled => refused("ALREADY_CANCELLED", now),
                    State::Expired => refused("ALREADY_EXPIRED", now),
                    State::Pending => refused("ALREADY_OPENED", now),
                })
            }
        }
    }

    /// The signing side opened `app`'s payload `uuid`. Opening it again changes nothing.
    pub async fn open(
        &self,
        app: &App,
        uuid: &str,
        by_deeplink: bool,
    ) -> Result<Payload, PayloadError> {
        if let Some(payload) = self
            .store
            .open(&app.id, uuid, by_deeplink, now_ms())
            .await?
        {
            self.announce(app, &payload, Change::Opened).await;
            return Ok(payload);
        }
        let payload = self.get(app, uuid).await?;
        match payload.state {
            State::Pending if payload.is_opened() => Ok(payload),
            _ => Err(conflict(payload)),
        }
    }

    /// The signing side resolved `app`'s payload `uuid`.
    pub async fn resolve(
        &self,
        app: &App,
        uuid: &str,
        resolution: &Resolution,
    ) -> Result<Payload, PayloadError> {
        let resolved = self
            .store
            .resolve(&app.id, uuid, resolution, now_ms())
            .await?;
        if let Some(payload) = resolved {
            self.announce(app, &payload, Change::Resolved).await;
            return Ok(payload);
        }
        Err(conflict(self.get(app, uuid).await?))
    }

    /// Expires payload `uuid` if it is due and unopened; returns it if it did.
    async fn expire(&self, uuid: &str) -> Result<Option<Payload>, StoreError> {
        let Some(payload) = self.store.expire(uuid, now_ms()).await? else {
            return Ok(None);
        };
        match self.core.apps.by_id(&payload.app_id).cloned() {
            Some(app) => self.announce(&app, &payload, Change::Expired).await,
            None => self.forget_announcement(&payload, Change::Expired).await,
        }
        Ok(Some(payload))
    }

    /// Publishes `change` of `payload`: the callback first (committed to the webhook
    /// outbox before this returns), then the socket message. A failure leaves the change
    /// unannounced for the sweeper, so the caller's answer stands.
    async fn announce(&self, app: &App, payload: &Payload, change: Change) {
        let channel = channel_of(&payload.uuid);
        if let Some(event) = change.callback_event() {
            let callback = NewPublication {
                channel: channel.clone(),
                event: event.to_string(),
                data: payload.details(&app.key, now_ms()).to_string(),
                app_event: true,
                ..Default::default()
            };
            if let Err(e) = self.core.publish_internal(app, callback).await {
                return self.announce_failed(payload, change, e);
            }
        }
        let message = NewPublication {
            channel,
            event: change.as_str().to_string(),
            data: payload.socket_message(change).to_string(),
            ..Default::default()
        };
        if let Err(e) = self.core.publish_internal(app, message).await {
            return self.announce_failed(payload, change, e);
        }
        metrics::counter!("payrelay_payload_changes_total", "change" => change.as_str())
            .increment(1);
        if let Err(e) = self.store.announced(&payload.uuid, change).await {
            tracing::warn!(payload = %payload.uuid, "cannot mark a payload change announced (it will be again): {e}");
        }
    }

    fn announce_failed(&self, payload: &Payload, change: Change, e: PublishError) {
        tracing::warn!(
            payload = %payload.uuid,
            change = change.as_str(),
            "cannot announce a payload change now; the sweeper retries: {e}"
        );
    }

    /// A change of a payload whose app is no longer served: nobody to tell.
    async fn forget_announcement(&self, payload: &Payload, change: Change) {
        tracing::warn!(payload = %payload.uuid, app = %payload.app_id, "payload of an app no longer served");
        let _ = self.store.announced(&payload.uuid, change).await;
    }

    /// How far ahead the sweeper arms timers: a payload due later is armed by a later
    /// sweep.
    fn lookahead_ms(&self) -> i64 {
        2 * self.config.sweep_interval_ms as i64
    }

    /// Every `sweep_interval_ms`: arm the timers of payloads coming due (whichever node
    /// created them), announce changes left unannounced; every hour, prune.
    async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        // On SQLite the file is this node's alone: at start-up, whatever is unannounced
        // was left by a previous run and is announced at once.
        let mut grace = match self.store.backend() {
            Backend::Sqlite => 0,
            Backend::Postgres => ANNOUNCE_GRACE_MS,
        };
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = now_ms();
            match self.store.due(now + self.lookahead_ms(), SWEEP_BATCH).await {
                Ok(due) => {
                    for (uuid, at) in due {
                        self.timers.arm(&uuid, at);
                    }
                }
                Err(e) => tracing::warn!("cannot read payloads coming due: {e}"),
            }
            match self.store.unannounced(now - grace, SWEEP_BATCH).await {
                Ok(left) => {
                    for (payload, change) in left {
                        tracing::info!(payload = %payload.uuid, change = change.as_str(), "announcing a payload change left unannounced");
                        match self.core.apps.by_id(&payload.app_id).cloned() {
                            Some(app) => self.announce(&app, &payload, change).await,
                            None => self.forget_announcement(&payload, change).await,
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot read unannounced payload changes: {e}"),
            }
            grace = ANNOUNCE_GRACE_MS;
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                last_prune = Some(tokio::time::Instant::now());
                self.prune().await;
            }
        }
    }

    /// Deletes payloads past the retention.
    pub async fn prune(&self) {
        let before = now_ms() - self.config.retention_days as i64 * 86_400_000;
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
                    tracing::warn!("cannot prune payloads: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(payloads = total, "pruned payloads past their retention");
            metrics::counter!("payrelay_payloads_pruned_total").increment(total);
        }
    }

    /// The URLs of a created payload, from `public_url` or else the request's `Host`.
    pub fn urls(&self, uuid: &str, host: Option<&str>) -> Urls {
        let base = match &self.config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.tls { "https" } else { "http" };
                let host = host
                    .filter(|h| h.parse::<axum::http::uri::Authority>().is_ok())
                    .unwrap_or("localhost");
                format!("{scheme}://{host}")
            }
        };
        let fill = |template: &str| {
            template
                .replace("{public_url}", &base)
                .replace("{uuid}", uuid)
        };
        // http → ws, https → wss.
        let ws_base = format!("ws{}", base.strip_prefix("http").unwrap_or(&base));
        Urls {
            next: fill(&self.config.next_url),
            qr_png: fill(&self.config.qr_png_url),
            websocket_status: format!("{ws_base}/sign/{uuid}"),
        }
    }
}

/// Where a created payload can be opened, seen, and followed.
pub struct Urls {
    pub next: String,
    pub qr_png: String,
    pub websocket_status: String,
}

/// The 409 for a change `payload`'s state does not allow.
fn conflict(payload: Payload) -> PayloadError {
    let (reason, message) = match payload.state {
        State::Resolved => ("ALREADY_RESOLVED", "The payload is already resolved"),
        State::Cancelled => ("ALREADY_CANCELLED", "The payload was cancelled"),
        State::Expired => (
            "ALREADY_EXPIRED",
            "The payload expired before it was opened",
        ),
        // Still pending: due and unopened, its expiry not yet recorded.
        State::Pending => (
            "ALREADY_EXPIRED",
            "The payload expired before it was opened",
        ),
    };
    PayloadError::Conflict {
        reason,
        message,
        payload: Box::new(payload),
    }
}
