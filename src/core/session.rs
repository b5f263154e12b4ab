//! A session: one connection's membership in the core, as an adapter drives it.
//!
//! Adapters open a session when a client connects and drop it when the socket ends. The
//! session remembers what the connection joined, so dropping it (normally or by a panic
//! unwinding the task) always unsubscribes every channel, announces presence departures,
//! leaves the user index and releases the app's connection slot. No per-socket state
//! outlives its socket.

use std::collections::HashMap;
use std::sync::Arc;

use super::history::{Recovered, StreamPosition};
use super::hub::{HubRefusal, Joined};
use super::outbox::Recovery;
use super::presence::Member;
use super::{Connection, Core, NewPublication, Principal, PublishError};

/// Why a subscription was refused by the core (adapters check auth before this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("a connection may subscribe to at most {0} channels")]
    TooManyChannels(usize),
    #[error(transparent)]
    Hub(#[from] HubRefusal),
    #[error("`{0}` is not an internal channel")]
    NotInternal(String),
}

/// What a successful subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// The connection joined the channel; its `Subscribed` item is queued.
    Added,
    /// It was already subscribed: nothing changed and nothing was queued, so repeating a
    /// subscribe costs the server no member list and no cached event.
    AlreadySubscribed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("this connection is already signed in as someone else")]
    AlreadySignedIn,
    #[error("user id `{0}` cannot name a channel: {1}")]
    InvalidUserId(String, super::channel::ChannelNameError),
}

pub struct Session {
    core: Arc<Core>,
    conn: Arc<Connection>,
    /// Subscribed channels, with the presence user each subscription stands for.
    channels: HashMap<Arc<str>, Option<Arc<str>>>,
}

impl Session {
    pub(crate) fn new(core: Arc<Core>, conn: Arc<Connection>) -> Self {
        Session {
            core,
            conn,
            channels: HashMap::new(),
        }
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// The presence user id this connection joined `channel` as.
    pub fn presence_user(&self, channel: &str) -> Option<&Arc<str>> {
        self.channels.get(channel).and_then(|u| u.as_ref())
    }

    /// Subscribes without looking at history: the `Subscribed` item carries no position.
    pub fn subscribe(
        &mut self,
        channel: &str,
        member: Option<Member>,
    ) -> Result<Subscription, SubscribeError> {
        Ok(match self.join(channel, member, false)? {
            Joined::Already => Subscription::AlreadySubscribed,
            Joined::Added | Joined::Held(_) => Subscription::Added,
        })
    }

    /// Subscribes and tells the client where it stands in the channel's stream; with
    /// `since`, first replays every event after that position, in order and before any
    /// live one, or says the position cannot be vouched for ([`Recovery::Failed`]).
    /// Nothing published while history is read is lost or delivered twice: the hub
    /// holds the subscriber's live publications until the replay is queued.
    ///
    /// [`Recovery::Failed`]: super::outbox::Recovery::Failed
    pub async fn subscribe_resuming(
        &mut self,
        channel: &str,
        member: Option<Member>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscription, SubscribeError> {
        let app = self.conn.app.clone();
        if !app.history.enabled() && since.is_none() {
            return self.subscribe(channel, member);
        }
        let mut subscribed = match self.join(channel, member, true)? {
            Joined::Already => return Ok(Subscription::AlreadySubscribed),
            Joined::Added => return Ok(Subscription::Added),
            Joined::Held(subscribed) => subscribed,
        };
        // With a remote broker, read history only once this node hears the channel:
        // whatever is published from then on is held live, whatever before is in history.
        if let Some(gate) = subscribed.gate.clone()
            && !gate.is_open()
        {
            let _ = tokio::time::timeout_at(gate.deadline(), gate.opened()).await;
        }
        let history = self.core.history.clone();
        let mut replay = Vec::new();
        match since {
            None => match history.latest(&app, channel).await {
                Ok(top) => subscribed.position = top,
                Err(e) => tracing::warn!(app = %app.id, "channel position unavailable: {e}"),
            },
            Some(since) => {
                let recovered = if app.history.enabled() {
                    history
                        .since(&app, channel, Some(since), app.history.size)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(app = %app.id, "history unavailable for a resume: {e}");
                            Recovered::Gone { top: None }
                        })
                } else {
                    Recovered::Gone { top: None }
                };
                match recovered {
                    Recovered::Publications { publications, .. } => {
                        subscribed.position = Some(since.clone());
                        subscribed.recovery = Recovery::Recovered;
                        replay = publications;
                    }
                    Recovered::Gone { top } => {
                        subscribed.position = top;
                        subscribed.recovery = Recovery::Failed;
                    }
                }
                let outcome = match subscribed.recovery {
                    Recovery::Recovered => "recovered",
                    _ => "failed",
                };
                metrics::counter!("payrelay_recoveries_total", "outcome" => outcome).increment(1);
            }
        }
        let replayed = self.core.hub.release(&self.conn, subscribed, replay);
        metrics::counter!("payrelay_recovered_events_total").increment(replayed as u64);
        Ok(Subscription::Added)
    }

    fn join(
        &mut self,
        channel: &str,
        member: Option<Member>,
        hold: bool,
    ) -> Result<Joined, SubscribeError> {
        let limits = &self.conn.app.limits;
        if self.channels.contains_key(channel) {
            return Ok(Joined::Already);
        }
        if self.channels.len() >= limits.max_channels_per_connection {
            return Err(SubscribeError::TooManyChannels(
                limits.max_channels_per_connection,
            ));
        }
        let user = member.as_ref().map(|m| m.user_id.clone());
        let name: Arc<str> = Arc::from(channel);
        let joined = self.core.hub.subscribe(
            &self.conn,
            name.clone(),
            member,
            limits.max_presence_members,
            hold,
        )?;
        if !matches!(joined, Joined::Already) {
            self.conn.note_subscribed(name.clone());
            self.channels.insert(name, user);
            self.conn.add_subscriptions(1);
            self.core.metrics.subscriptions.increment(1.0);
        }
        Ok(joined)
    }

    /// Subscribes to one of the node's internal channels ([`channel::is_internal`]), which
    /// only the room that owns it (not a client naming it) decides to join.
    ///
    /// [`channel::is_internal`]: super::channel::is_internal
    pub fn subscribe_internal(&mut self, channel: &str) -> Result<Subscription, SubscribeError> {
        if !super::channel::is_internal(channel) {
            return Err(SubscribeError::NotInternal(channel.to_string()));
        }
        self.subscribe(channel, None)
    }

    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        if self.channels.remove(channel).is_none() {
            return false;
        }
        self.core.hub.unsubscribe(&self.conn, channel);
        self.conn.note_unsubscribed(channel);
        self.conn.add_subscriptions(-1);
        self.core.metrics.subscriptions.decrement(1.0);
        true
    }

    /// Marks the connection as authenticated as end user `user_id` (once per connection).
    pub fn sign_in(&mut self, user_id: &str) -> Result<(), SignInError> {
        // The user's events travel on `#server-to-user-{id}`, so the id must make a valid
        // channel name; refusing it here beats a sign-in that silently never gets events.
        let channel = format!("{}{user_id}", super::channel::SERVER_TO_USER_PREFIX);
        if let Err(e) = super::channel::classify(&channel) {
            return Err(SignInError::InvalidUserId(user_id.to_string(), e));
        }
        self.sign_in_as(Principal::user(user_id))
    }

    /// Marks the connection as authenticated as merchant `merchant_id` (once per
    /// connection). Merchants are not users: terminating user "42" leaves merchant "42".
    pub fn sign_in_merchant(&mut self, merchant_id: &str) -> Result<(), SignInError> {
        self.sign_in_as(Principal::merchant(merchant_id))
    }

    fn sign_in_as(&mut self, principal: Principal) -> Result<(), SignInError> {
        match self.conn.principal() {
            Some(existing) if *existing == principal => return Ok(()),
            Some(_) => return Err(SignInError::AlreadySignedIn),
            None => {}
        }
        self.conn
            .set_principal(principal.clone())
            .map_err(|_| SignInError::AlreadySignedIn)?;
        self.core.hub.add_signed_in(&self.conn, principal);
        Ok(())
    }

    /// Publishes what this connection's client sent, through the core's one publish path.
    pub async fn publish(
        &self,
        publication: NewPublication,
    ) -> Result<super::EventId, PublishError> {
        self.core
            .publish_from(&self.conn.app, publication, true)
            .await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let channels = std::mem::take(&mut self.channels);
        for channel in channels.keys() {
            self.core.hub.unsubscribe(&self.conn, channel);
        }
        self.core
            .metrics
            .subscriptions
            .decrement(channels.len() as f64);
        if let Some(principal) = self.conn.principal() {
            self.core.hub.remove_signed_in(&self.conn, principal);
        }
        self.core.deregister(&self.conn);
    }
}
