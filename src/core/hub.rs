//! The hub: which local connections listen to which channel, and fan-out to them.
//!
//! Everything about one channel (subscribers, presence members, the cached last event)
//! lives in one entry and changes under that entry's lock. That is what makes the ordering
//! guarantees cheap: a new subscriber's `Subscribed` frame (with the member list or cached
//! event) is queued under the same lock that publications take, so it always precedes the
//! first publication it sees, and `member_added` / `member_removed` are never reordered
//! against the join or leave that caused them.
//!
//! The hub only knows this node. The broker feeds it publications from every node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::broker::ChannelInterest;
use super::channel::{is_cache_channel, is_presence_channel};
use super::cluster::SharedState;
use super::gate::Gate;
use super::history::StreamPosition;
use super::occupancy::{OccupancyChange, OccupancyObserver};
use super::outbox::{CacheState, Disconnect, Outbound, Recovery, Subscribed};
use super::presence::{Member, PresenceSnapshot};
use super::{Connection, Principal, Publication, SocketId};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChannelKey {
    app: Arc<str>,
    channel: Arc<str>,
}

/// A signed-in identity of one app: users and merchants are separate namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SignedInKey {
    app: Arc<str>,
    principal: Principal,
}

#[derive(Debug)]
struct Subscriber {
    conn: Arc<Connection>,
    /// The presence member this subscription stands for.
    user: Option<Arc<str>>,
    /// While the subscriber's history is read ([`Hub::subscribe`] with `hold`), its live
    /// publications wait here instead of its outbox; [`Hub::release`] sends them after
    /// the replay. Only set or cleared under the channel's write lock, so fan-out (under
    /// the read lock) sees it stable.
    held: Option<Box<parking_lot::Mutex<Vec<Arc<Publication>>>>>,
    /// Set by [`Hub::release`]: the last position the subscriber has (the end of its
    /// replay, or the position its `Subscribed` told). A live publication at or before it
    /// was in history when it was read, so it is in the replay or before the client's
    /// position, and is not queued again: the broker may bring it here only after the
    /// release (with Redis, the script that appended it published it to this node's
    /// Pub/Sub connection before history was read, but this node reads that connection
    /// on its own task; embedded, the publish path appends before it delivers).
    floor: Option<Box<StreamPosition>>,
}

impl Subscriber {
    /// Whether `publication` is at or before what the subscriber already has.
    fn has(&self, publication: &Publication) -> bool {
        match (&self.floor, publication.position()) {
            (Some(floor), Some(p)) => p.epoch == floor.epoch && p.offset <= floor.offset,
            _ => false,
        }
    }
}

/// What [`Hub::subscribe`] did.
#[derive(Debug)]
pub enum Joined {
    /// Already subscribed: nothing changed, nothing queued.
    Already,
    /// Subscribed, and its `Subscribed` item queued.
    Added,
    /// Subscribed with its live publications held: the caller reads history, then
    /// calls [`Hub::release`] with this item.
    Held(Box<Subscribed>),
}

#[derive(Debug)]
struct MemberEntry {
    member: Arc<Member>,
    sockets: usize,
}

#[derive(Debug, Default)]
struct ChannelState {
    subscribers: HashMap<SocketId, Subscriber>,
    members: HashMap<Arc<str>, MemberEntry>,
    last: Option<(Arc<Publication>, Instant)>,
    /// With a remote broker: open once the broker delivers this channel here.
    listening: Option<Arc<Gate>>,
}

impl ChannelState {
    fn fresh_cache(&self, ttl: Duration) -> Option<(&Arc<Publication>, Duration)> {
        let (publication, stored) = self.last.as_ref()?;
        let age = stored.elapsed();
        (age < ttl).then(|| (publication, ttl - age))
    }

    fn is_vacant(&self, ttl: Duration) -> bool {
        self.subscribers.is_empty() && self.fresh_cache(ttl).is_none()
    }

    /// The gate a new subscriber waits behind, while the broker is not yet listening.
    fn pending_gate(&self) -> Option<Arc<Gate>> {
        self.listening.clone().filter(|gate| !gate.is_open())
    }

    fn snapshot(&self) -> PresenceSnapshot {
        PresenceSnapshot {
            members: self.members.values().map(|e| e.member.clone()).collect(),
        }
    }
}

/// Why the hub refused a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubRefusal {
    #[error("the presence channel already has its maximum of {0} members")]
    PresenceFull(usize),
}

/// Occupancy of one channel, as the HTTP API reports it.
#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    pub subscription_count: usize,
    /// Distinct presence members (presence channels only).
    pub user_count: usize,
    /// The cached last event and how long it stays cached (cache channels only).
    pub cache: Option<(Arc<Publication>, Duration)>,
}

impl ChannelStats {
    pub fn occupied(&self) -> bool {
        self.subscription_count > 0
    }
}

/// The hub's occupancy observer, set once.
#[derive(Default)]
struct ObserverSlot(std::sync::OnceLock<Arc<dyn OccupancyObserver>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ObserverSlot(set)"
        } else {
            "ObserverSlot(none)"
        })
    }
}

/// The remote broker's side of the hub, set once.
#[derive(Default)]
struct InterestSlot(std::sync::OnceLock<Arc<dyn ChannelInterest>>);

impl std::fmt::Debug for InterestSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "InterestSlot(set)"
        } else {
            "InterestSlot(none)"
        })
    }
}

/// This node's part of the cluster's state: `(app, channel, local subscriptions)` of
/// each occupied channel, `(app, channel, member)` of each member with a local socket.
pub type LocalState = (
    Vec<(Arc<str>, Arc<str>, usize)>,
    Vec<(Arc<str>, Arc<str>, Arc<Member>)>,
);

#[derive(Debug)]
pub struct Hub {
    channels: DashMap<ChannelKey, ChannelState>,
    /// Connections by who they are signed in as (users and merchants), for terminate,
    /// revocation and one-socket-per-user.
    signed_in: DashMap<SignedInKey, Vec<Arc<Connection>>>,
    cache_ttl: Duration,
    /// Told when channels become occupied or vacated and members join or leave.
    observer: ObserverSlot,
    /// A remote broker, told which channels this node listens to. With one, the cluster
    /// keeps cache channels' last events, and the hub keeps nothing for channels without
    /// local subscribers (it no longer hears them).
    interest: InterestSlot,
    /// The cluster's shared presence and occupancy (see `core/cluster.rs`).
    shared: SharedSlot,
}

/// The cluster's shared state, set once.
#[derive(Default)]
struct SharedSlot(std::sync::OnceLock<Arc<dyn SharedState>>);

impl std::fmt::Debug for SharedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "SharedSlot(set)"
        } else {
            "SharedSlot(none)"
        })
    }
}

impl Hub {
    pub fn new(cache_ttl: Duration) -> Self {
        Hub {
            channels: DashMap::new(),
            signed_in: DashMap::new(),
            cache_ttl,
            observer: ObserverSlot::default(),
            interest: InterestSlot::default(),
            shared: SharedSlot::default(),
        }
    }

    /// Connects the cluster's shared state (once, at start-up, before any connection).
    /// From then on presence is announced by the cluster and occupancy webhooks follow
    /// the cluster's totals. Returns false if one was set.
    pub fn set_shared_state(&self, shared: Arc<dyn SharedState>) -> bool {
        self.shared.0.set(shared).is_ok()
    }

    /// Connects a remote broker (once, at start-up). Returns false if one was set.
    pub fn set_interest(&self, interest: Arc<dyn ChannelInterest>) -> bool {
        self.interest.0.set(interest).is_ok()
    }

    fn is_vacant(&self, state: &ChannelState) -> bool {
        if self.interest.0.get().is_some() {
            state.subscribers.is_empty()
        } else {
            state.is_vacant(self.cache_ttl)
        }
    }

    /// Sets the occupancy observer (once, at start-up). Returns false if one was set.
    pub fn set_observer(&self, observer: Arc<dyn OccupancyObserver>) -> bool {
        self.observer.0.set(observer).is_ok()
    }

    /// Reports an occupancy change of one of the app's channels. The node's internal
    /// channels are not the app's (no Pusher webhook or channel listing shows them).
    fn observe(&self, app: &Arc<str>, channel: &Arc<str>, change: OccupancyChange) {
        if super::channel::looks_internal(channel) {
            return;
        }
        if let Some(observer) = self.observer.0.get() {
            observer.changed(app, channel, change);
        }
    }

    fn key(app: &Arc<str>, channel: &str) -> ChannelKey {
        ChannelKey {
            app: app.clone(),
            channel: Arc::from(channel),
        }
    }

    /// Adds `conn` to `channel` and queues its `Subscribed` frame. Subscribing again
    /// changes nothing and queues nothing ([`Joined::Already`]): a repeated subscribe
    /// must not cost a member list or a cached event.
    ///
    /// With `hold`, the `Subscribed` item is returned instead of queued and the
    /// subscriber's live publications are held until [`Hub::release`]: the caller reads
    /// the channel's history in between, and nothing published meanwhile is lost or
    /// overtakes the replay.
    ///
    /// A channel new to the hub keeps the caller's name (the session's own `Arc`), so
    /// a channel with one subscriber holds its name once.
    pub fn subscribe(
        &self,
        conn: &Arc<Connection>,
        channel: impl Into<Arc<str>>,
        member: Option<Member>,
        max_presence_members: usize,
        hold: bool,
    ) -> Result<Joined, HubRefusal> {
        let key = ChannelKey {
            app: conn.app.id.clone(),
            channel: channel.into(),
        };
        let channel_name = key.channel.clone();
        let outcome = {
            let mut state = self.channels.entry(key.clone()).or_default();
            self.subscribe_locked(
                &mut state,
                conn,
                channel_name,
                member,
                max_presence_members,
                hold,
            )
        };
        if outcome.is_err() {
            self.channels.remove_if(&key, |_, s| self.is_vacant(s));
        }
        outcome
    }

    fn subscribe_locked(
        &self,
        state: &mut ChannelState,
        conn: &Arc<Connection>,
        channel: Arc<str>,
        member: Option<Member>,
        max_presence_members: usize,
        hold: bool,
    ) -> Result<Joined, HubRefusal> {
        if state.subscribers.contains_key(&conn.id) {
            return Ok(Joined::Already);
        }
        let app = &conn.app.id;
        let shared = self.shared.0.get();
        let was_empty = state.subscribers.is_empty();
        let mut occupied_reported = false;
        // With shared state, a user's first socket here is reported to the cluster, which
        // announces the member (once for the cluster) and tells who else is present.
        let mut joined_here = None;
        let user = match member {
            Some(member) => {
                let user_id = member.user_id.clone();
                match state.members.get_mut(&user_id) {
                    Some(entry) => entry.sockets += 1,
                    None => {
                        if state.members.len() >= max_presence_members {
                            return Err(HubRefusal::PresenceFull(max_presence_members));
                        }
                        let member = Arc::new(member);
                        if shared.is_some() {
                            joined_here = Some(member.clone());
                        } else {
                            for sub in state.subscribers.values() {
                                sub.conn.outbox.push(Outbound::MemberAdded {
                                    channel: channel.clone(),
                                    member: member.clone(),
                                });
                            }
                            if was_empty {
                                self.observe(app, &channel, OccupancyChange::Occupied);
                                occupied_reported = true;
                            }
                            self.observe(
                                app,
                                &channel,
                                OccupancyChange::MemberAdded(user_id.clone()),
                            );
                        }
                        state
                            .members
                            .insert(user_id.clone(), MemberEntry { member, sockets: 1 });
                    }
                }
                Some(user_id)
            }
            None => None,
        };
        // A new presence member's join reported it above, before `MemberAdded`.
        if was_empty && !occupied_reported && shared.is_none() {
            self.observe(app, &channel, OccupancyChange::Occupied);
        }
        let interest = self.interest.0.get();
        if was_empty && let Some(interest) = interest {
            state.listening = Some(interest.occupied(app, &channel));
        }
        state.subscribers.insert(
            conn.id,
            Subscriber {
                conn: conn.clone(),
                user,
                held: hold.then(Default::default),
                floor: None,
            },
        );
        if let Some(shared) = shared {
            shared.subscriptions_changed(app, &channel, state.subscribers.len());
        }
        let presence = is_presence_channel(&channel).then(|| state.snapshot());
        let mut gate = state.pending_gate();
        let cache = if is_cache_channel(&channel) {
            if let Some(interest) = interest {
                // The cluster's last event, read once the broker listens.
                let listening = state
                    .listening
                    .clone()
                    .unwrap_or_else(|| interest.occupied(app, &channel));
                gate = Some(interest.cached_event(
                    app,
                    &channel,
                    listening,
                    conn.narrowed_to().cloned(),
                ));
            }
            match state.fresh_cache(self.cache_ttl) {
                Some((publication, _)) if conn.receives(publication) => {
                    CacheState::Hit(publication.clone())
                }
                _ => CacheState::Miss,
            }
        } else {
            CacheState::NotACacheChannel
        };
        if let Some(shared) = shared
            && presence.is_some()
        {
            // The cluster's member list, after the node listens (and any cached event).
            let after = gate
                .clone()
                .or_else(|| state.listening.clone())
                .unwrap_or_else(|| {
                    let open = Arc::new(Gate::new());
                    open.open();
                    open
                });
            gate = Some(match joined_here {
                Some(member) => shared.member_joined(app, &channel, member, after),
                None => shared.members(app, &channel, after),
            });
        }
        let subscribed = Box::new(Subscribed {
            channel,
            presence,
            cache,
            gate,
            position: None,
            recovery: Recovery::NotAsked,
        });
        if hold {
            return Ok(Joined::Held(subscribed));
        }
        conn.outbox.push(Outbound::Subscribed(subscribed));
        Ok(Joined::Added)
    }

    /// Ends the hold of a subscription made with `hold`: queues its `Subscribed` item,
    /// then `replay` (what history held after the subscriber's position, oldest first),
    /// then the live publications held meanwhile, minus those at or before the last
    /// position it has by then (a publication can be both in history and live). From
    /// here on, publications go to its outbox directly, except those at or before that
    /// position still on their way to this node (in history, so replayed, before the
    /// broker delivered them here). Returns how many replayed publications were queued.
    pub fn release(
        &self,
        conn: &Arc<Connection>,
        subscribed: Box<Subscribed>,
        replay: Vec<Arc<Publication>>,
    ) -> usize {
        let key = Self::key(&conn.app.id, &subscribed.channel);
        let Some(mut state) = self.channels.get_mut(&key) else {
            return 0;
        };
        let Some(subscriber) = state.subscribers.get_mut(&conn.id) else {
            return 0;
        };
        let held = subscriber
            .held
            .take()
            .map(|held| held.into_inner())
            .unwrap_or_default();
        let mut last: Option<StreamPosition> = subscribed.position.clone();
        conn.outbox.push(Outbound::Subscribed(subscribed));
        let mut replayed = 0;
        for publication in replay {
            if let Some(position) = publication.position() {
                last = Some(position.clone());
            }
            if publication.exclude != Some(conn.id)
                && conn.receives(&publication)
                && conn.outbox.push(Outbound::Publication(publication))
            {
                replayed += 1;
            }
        }
        subscriber.floor = last.map(Box::new);
        for publication in held {
            if !subscriber.has(&publication) {
                conn.outbox.push(Outbound::Publication(publication));
            }
        }
        replayed
    }

    /// Removes `conn` from `channel`; announces `member_removed` when it was the member's
    /// last socket. Returns whether it was subscribed.
    pub fn unsubscribe(&self, conn: &Connection, channel: &str) -> bool {
        let key = Self::key(&conn.app.id, channel);
        let app = &conn.app.id;
        let shared = self.shared.0.get();
        let removed = match self.channels.get_mut(&key) {
            Some(mut state) => match state.subscribers.remove(&conn.id) {
                Some(subscriber) => {
                    if let Some(user) = subscriber.user
                        && Self::leave_member(&mut state, &key.channel, &user, shared.is_none())
                    {
                        match shared {
                            Some(shared) => shared.member_left(app, &key.channel, &user),
                            None => self.observe(
                                app,
                                &key.channel,
                                OccupancyChange::MemberRemoved(user),
                            ),
                        }
                    }
                    if let Some(shared) = shared {
                        shared.subscriptions_changed(app, &key.channel, state.subscribers.len());
                    }
                    if state.subscribers.is_empty() {
                        if shared.is_none() {
                            self.observe(app, &key.channel, OccupancyChange::Vacated);
                        }
                        if let Some(interest) = self.interest.0.get() {
                            state.listening = None;
                            interest.vacated(app, &key.channel);
                        }
                    }
                    true
                }
                None => false,
            },
            None => false,
        };
        if removed {
            self.channels.remove_if(&key, |_, s| self.is_vacant(s));
        }
        removed
    }

    /// Drops one socket of `user`'s membership; returns whether that was its last (the
    /// member left here). `announce`: queue `member_removed` for the local subscribers
    /// (without shared state; with it the cluster announces).
    fn leave_member(
        state: &mut ChannelState,
        channel: &Arc<str>,
        user: &Arc<str>,
        announce: bool,
    ) -> bool {
        let Some(entry) = state.members.get_mut(user) else {
            return false;
        };
        entry.sockets -= 1;
        if entry.sockets > 0 {
            return false;
        }
        state.members.remove(user);
        if announce {
            for sub in state.subscribers.values() {
                sub.conn.outbox.push(Outbound::MemberRemoved {
                    channel: channel.clone(),
                    user_id: user.clone(),
                });
            }
        }
        true
    }

    /// The cluster announced a new presence member: queues `member_added` for this node's
    /// subscribers of the channel, except the member's own sockets.
    pub fn member_added(&self, app: &Arc<str>, channel: &str, member: &Arc<Member>) {
        if let Some(state) = self.channels.get(&Self::key(app, channel)) {
            let channel: Arc<str> = Arc::from(channel);
            for sub in state.subscribers.values() {
                if sub.user.as_ref() != Some(&member.user_id) {
                    sub.conn.outbox.push(Outbound::MemberAdded {
                        channel: channel.clone(),
                        member: member.clone(),
                    });
                }
            }
        }
    }

    /// The cluster announced that a member left: queues `member_removed` for this node's
    /// subscribers of the channel (the member has none, unless it just came back here).
    pub fn member_removed(&self, app: &Arc<str>, channel: &str, user: &Arc<str>) {
        if let Some(state) = self.channels.get(&Self::key(app, channel)) {
            let channel: Arc<str> = Arc::from(channel);
            for sub in state.subscribers.values() {
                if sub.user.as_ref() != Some(user) {
                    sub.conn.outbox.push(Outbound::MemberRemoved {
                        channel: channel.clone(),
                        user_id: user.clone(),
                    });
                }
            }
        }
    }

    /// Reports a change the cluster made (a channel occupied or vacated across nodes, a
    /// member added or removed) to the occupancy observer (Pusher app webhooks).
    pub fn observe_cluster(&self, app: &Arc<str>, channel: &Arc<str>, change: OccupancyChange) {
        self.observe(app, channel, change);
    }

    /// This node's part of the shared state, to report again after the cluster lost it
    /// (Redis restarted, or this node was taken for dead): each channel with local
    /// subscribers and their count, and each presence member with a socket here.
    pub fn local_state(&self) -> LocalState {
        let mut channels = Vec::new();
        let mut members = Vec::new();
        for entry in self.channels.iter() {
            let key = entry.key();
            if entry.subscribers.is_empty() {
                continue;
            }
            channels.push((
                key.app.clone(),
                key.channel.clone(),
                entry.subscribers.len(),
            ));
            for member in entry.members.values() {
                members.push((key.app.clone(), key.channel.clone(), member.member.clone()));
            }
        }
        (channels, members)
    }

    /// Queues `publication` for every local subscriber of its channel (except an excluded
    /// one) and, for cache channels, keeps it for later subscribers. Returns how many
    /// connections it was queued for.
    pub fn fan_out(&self, publication: &Arc<Publication>) -> usize {
        let key = ChannelKey {
            app: publication.app_id.clone(),
            channel: publication.channel.clone(),
        };
        if is_cache_channel(&publication.channel)
            && !publication.relay_only
            && self.interest.0.get().is_none()
        {
            let mut state = self.channels.entry(key).or_default();
            state.last = Some((publication.clone(), Instant::now()));
            Self::push_to_subscribers(&state, publication)
        } else {
            match self.channels.get(&key) {
                Some(state) => Self::push_to_subscribers(&state, publication),
                None => 0,
            }
        }
    }

    fn push_to_subscribers(state: &ChannelState, publication: &Arc<Publication>) -> usize {
        let mut queued = 0;
        for (id, sub) in &state.subscribers {
            if publication.exclude == Some(*id)
                || !sub.conn.receives(publication)
                || sub.has(publication)
            {
                continue;
            }
            if let Some(held) = &sub.held {
                // Bounded as the outbox is: a hold that outgrows it is a slow consumer.
                let mut held = held.lock();
                if held.len() >= sub.conn.outbox.capacity() {
                    sub.conn.outbox.close(Disconnect::SlowConsumer);
                } else {
                    held.push(publication.clone());
                    queued += 1;
                }
                continue;
            }
            if sub
                .conn
                .outbox
                .push(Outbound::Publication(publication.clone()))
            {
                queued += 1;
            }
        }
        queued
    }

    /// Drops cached events older than the TTL from channels nobody listens to.
    pub fn sweep_expired_cache(&self) {
        self.channels.retain(|_, state| !self.is_vacant(state));
    }

    pub fn channel_stats(&self, app: &Arc<str>, channel: &str) -> ChannelStats {
        let key = Self::key(app, channel);
        self.channels
            .get(&key)
            .map(|state| self.stats_of(&state))
            .unwrap_or_default()
    }

    fn stats_of(&self, state: &ChannelState) -> ChannelStats {
        ChannelStats {
            subscription_count: state.subscribers.len(),
            user_count: state.members.len(),
            cache: state
                .fresh_cache(self.cache_ttl)
                .map(|(p, ttl)| (p.clone(), ttl)),
        }
    }

    /// Occupied channels of `app` whose name starts with `prefix`, sorted by name (the
    /// node's internal channels are not listed).
    pub fn occupied_channels(&self, app: &Arc<str>, prefix: &str) -> Vec<(Arc<str>, ChannelStats)> {
        let mut found: Vec<_> = self
            .channels
            .iter()
            .filter(|entry| {
                entry.key().app == *app
                    && entry.key().channel.starts_with(prefix)
                    && !super::channel::looks_internal(&entry.key().channel)
                    && !entry.subscribers.is_empty()
            })
            .map(|entry| (entry.key().channel.clone(), self.stats_of(entry.value())))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Whether `user` has a socket of this node in presence channel `channel`.
    pub fn has_local_member(&self, app: &Arc<str>, channel: &str, user: &str) -> bool {
        self.channels
            .get(&Self::key(app, channel))
            .is_some_and(|state| state.members.contains_key(user))
    }

    /// User ids of a presence channel's members, sorted.
    pub fn presence_members(&self, app: &Arc<str>, channel: &str) -> Vec<Arc<str>> {
        let key = Self::key(app, channel);
        let mut ids: Vec<Arc<str>> = self
            .channels
            .get(&key)
            .map(|state| state.members.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    pub fn add_signed_in(&self, conn: &Arc<Connection>, principal: Principal) {
        let key = SignedInKey {
            app: conn.app.id.clone(),
            principal,
        };
        self.signed_in.entry(key).or_default().push(conn.clone());
    }

    pub fn remove_signed_in(&self, conn: &Connection, principal: &Principal) {
        let key = SignedInKey {
            app: conn.app.id.clone(),
            principal: principal.clone(),
        };
        if let Some(mut conns) = self.signed_in.get_mut(&key) {
            conns.retain(|c| c.id != conn.id);
        }
        self.signed_in.remove_if(&key, |_, conns| conns.is_empty());
    }

    /// Local connections of `app` signed in as `principal`.
    pub fn signed_in_connections(
        &self,
        app: &Arc<str>,
        principal: &Principal,
    ) -> Vec<Arc<Connection>> {
        let key = SignedInKey {
            app: app.clone(),
            principal: principal.clone(),
        };
        self.signed_in
            .get(&key)
            .map(|conns| conns.clone())
            .unwrap_or_default()
    }

    /// Closes every local connection of end user `user` (never a merchant's); returns how
    /// many.
    pub fn disconnect_user(&self, app: &Arc<str>, user: &str, reason: Disconnect) -> usize {
        let conns = self.signed_in_connections(app, &Principal::user(user));
        for conn in &conns {
            conn.outbox.close(reason);
        }
        conns.len()
    }

    /// Closes the local connections of `principal` that `which` selects; returns how many.
    pub fn close_connections_of(
        &self,
        app: &Arc<str>,
        principal: &Principal,
        which: &super::WhichConnections,
        reason: Disconnect,
    ) -> usize {
        use super::WhichConnections;
        let conns = self.signed_in_connections(app, principal);
        let doomed: Vec<&Arc<Connection>> = match which {
            WhichConnections::Protocol(protocol) => {
                conns.iter().filter(|c| c.protocol == *protocol).collect()
            }
            WhichConnections::Credential(credential) => conns
                .iter()
                .filter(|c| c.credential() == Some(credential))
                .collect(),
            WhichConnections::OlderThan {
                protocol,
                newest,
                keep,
            } => {
                let mut others: Vec<&Arc<Connection>> = conns
                    .iter()
                    .filter(|c| c.protocol == *protocol && c.id != *newest)
                    .collect();
                // Newest first; the newest `keep - 1` others stay beside `newest`.
                others.sort_by_key(|c| std::cmp::Reverse(c.connected_at));
                others.into_iter().skip(keep.saturating_sub(1)).collect()
            }
        };
        for conn in &doomed {
            conn.outbox.close(reason);
        }
        doomed.len()
    }
}
