//! Pusher app webhooks: `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed` and `client_event`, per app from `[[apps.webhooks]]`, through the same
//! outbox and retries as every callback, signed with the app secret (`X-Pusher-Key`,
//! `X-Pusher-Signature`).
//!
//! The hub reports occupancy changes ([`OccupancyObserver`]) to a queue; one task turns
//! them into events. A vacancy (or a member leaving) waits `pusher_leave_delay_ms`, as
//! Pusher's does: if the channel fills again (the member returns) within it, neither the
//! leave nor the matching return is sent, so a client reconnecting does not flap the
//! receiver's state.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::Webhooks;
use super::store::NewEvent;
use crate::core::{EventId, JournalWrite, OccupancyChange, OccupancyObserver, Publication};
use crate::db::now_ms;

/// Changes queued for the task before further ones are dropped (and counted).
const QUEUE: usize = 64 * 1024;

struct Change {
    app: Arc<str>,
    channel: Arc<str>,
    change: OccupancyChange,
}

/// The hub's observer: forwards the changes some app webhook may care about.
pub struct Observer {
    webhooks: Weak<Webhooks>,
    queue: mpsc::Sender<Change>,
    dropped: metrics::Counter,
}

impl OccupancyObserver for Observer {
    fn changed(&self, app: &Arc<str>, channel: &Arc<str>, change: OccupancyChange) {
        let Some(webhooks) = self.webhooks.upgrade() else {
            return;
        };
        // A return must reach the task when the matching leave is wanted (to cancel it).
        let wanted = match &change {
            OccupancyChange::Occupied | OccupancyChange::Vacated => {
                webhooks.index.wants_pusher(app, "channel_occupied")
                    || webhooks.index.wants_pusher(app, "channel_vacated")
            }
            OccupancyChange::MemberAdded(_) | OccupancyChange::MemberRemoved(_) => {
                webhooks.index.wants_pusher(app, "member_added")
                    || webhooks.index.wants_pusher(app, "member_removed")
            }
        };
        if wanted
            && self
                .queue
                .try_send(Change {
                    app: app.clone(),
                    channel: channel.clone(),
                    change,
                })
                .is_err()
        {
            self.dropped.increment(1);
        }
    }
}

/// Installs the observer in the hub and starts the task behind it.
pub fn start(webhooks: &Arc<Webhooks>, core: &crate::core::Core) {
    let (queue, changes) = mpsc::channel(QUEUE);
    let observer = Observer {
        webhooks: Arc::downgrade(webhooks),
        queue,
        dropped: metrics::counter!("payrelay_webhook_pusher_changes_dropped_total"),
    };
    core.hub().set_observer(Arc::new(observer));
    tokio::spawn(run(Arc::downgrade(webhooks), changes));
}

/// What is waiting out its delay: a vacancy, or a member's departure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pending {
    app: Arc<str>,
    channel: Arc<str>,
    /// The member, for `member_removed`.
    user: Option<Arc<str>>,
}

async fn run(webhooks: Weak<Webhooks>, mut changes: mpsc::Receiver<Change>) {
    let (fire, mut due) = mpsc::unbounded_channel::<(Pending, u64)>();
    let mut waiting: HashMap<Pending, u64> = HashMap::new();
    let mut generation = 0u64;
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(Change { app, channel, change }) = change else { return };
                let Some(hooks) = webhooks.upgrade() else { return };
                let delay = Duration::from_millis(hooks.config.pusher_leave_delay_ms);
                let (pending, leaving) = match &change {
                    OccupancyChange::Occupied | OccupancyChange::Vacated => (
                        Pending { app: app.clone(), channel: channel.clone(), user: None },
                        change == OccupancyChange::Vacated,
                    ),
                    OccupancyChange::MemberAdded(user) | OccupancyChange::MemberRemoved(user) => (
                        Pending { app: app.clone(), channel: channel.clone(), user: Some(user.clone()) },
                        matches!(change, OccupancyChange::MemberRemoved(_)),
                    ),
                };
                if leaving {
                    generation += 1;
                    waiting.insert(pending.clone(), generation);
                    let fire = fire.clone();
                    let this = generation;
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = fire.send((pending, this));
                    });
                } else if waiting.remove(&pending).is_none() {
                    // Not a quick return: the arrival is news.
                    send(&hooks, &pending, false).await;
                }
            }
            Some((pending, this)) = due.recv() => {
                if waiting.get(&pending) == Some(&this) {
                    waiting.remove(&pending);
                    let Some(hooks) = webhooks.upgrade() else { return };
                    send(&hooks, &pending, true).await;
                }
            }
        }
    }
}

/// Records one occupancy event for the app webhooks that want it.
async fn send(hooks: &Arc<Webhooks>, pending: &Pending, leaving: bool) {
    let name = match (&pending.user, leaving) {
        (None, false) => "channel_occupied",
        (None, true) => "channel_vacated",
        (Some(_), false) => "member_added",
        (Some(_), true) => "member_removed",
    };
    let mut event = json!({"name": name, "channel": &*pending.channel});
    if let Some(user) = &pending.user {
        event["user_id"] = json!(&**user);
    }
    let id = EventId::new().to_string();
    if let Some(write) = record(hooks, id, &pending.app, &pending.channel, name, event)
        && let Err(e) = write.await
    {
        tracing::error!(app = %pending.app, event = name, "cannot record a Pusher app webhook: {e}");
    }
}

/// Starts recording a Pusher event for the endpoints of `app` that asked for `name`.
fn record(
    hooks: &Webhooks,
    id: String,
    app: &str,
    channel: &str,
    name: &str,
    event: serde_json::Value,
) -> Option<JournalWrite> {
    let endpoints = hooks.index.pusher_for(app, name);
    if endpoints.is_empty() {
        return None;
    }
    let payload = super::payload::pusher(now_ms(), event);
    let new = NewEvent::for_endpoints(id, app, None, name, channel, payload, &endpoints);
    Some(hooks.record_event(new, endpoints))
}

/// The `client_event` webhook for a client event, if the app wants it. Its id is the
/// publication's.
pub(super) fn client_event(
    hooks: &Webhooks,
    publication: &Arc<Publication>,
) -> Option<JournalWrite> {
    if !hooks
        .index
        .wants_pusher(&publication.app_id, "client_event")
    {
        return None;
    }
    let mut event = json!({
        "name": "client_event",
        "channel": &*publication.channel,
        "event": &*publication.event,
        "data": &*publication.data,
    });
    if let Some(socket) = publication.exclude {
        event["socket_id"] = json!(socket.to_string());
    }
    if let Some(user) = &publication.user_id {
        event["user_id"] = json!(&**user);
    }
    record(
        hooks,
        publication.id.to_string(),
        &publication.app_id,
        &publication.channel,
        "client_event",
        event,
    )
}
