//! The protocol-neutral core of a node.
//!
//! [`Core`] owns the apps, the live connections and the [`Hub`], and is the only way in for
//! a publication: [`Core::publish`] validates it, stamps it, and hands it to the
//! [`Broker`], which delivers it to every node's hub. Protocol adapters (`protocols/`) and
//! the HTTP APIs talk to the core; the core knows nothing of any wire format.

pub mod apps;
pub mod broker;
pub mod channel;
pub mod cluster;
mod connection;
mod event_id;
pub mod gate;
pub mod history;
pub mod hub;
mod journal;
pub mod occupancy;
pub mod outbox;
pub mod presence;
mod principal;
mod publication;
pub mod rate;
mod session;
mod socket_id;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram};

pub use apps::{App, AppRegistry};
pub use broker::{
    Broker, BrokerError, BrokerMessage, BrokerSink, ChannelInterest, InProcessBroker,
    WhichConnections,
};
pub use cluster::SharedState;
pub use connection::Connection;
pub use event_id::{EVENT_ID_PREFIX, EventId};
pub use history::{EmbeddedHistory, History, HistoryError, Recovered, StreamPosition};
pub use hub::{ChannelStats, Hub};
pub use journal::{JournalWrite, PublicationJournal};
pub use occupancy::{OccupancyChange, OccupancyObserver};
pub use outbox::{Disconnect, Outbound, Outbox};
pub use principal::Principal;
pub use publication::{Audience, ENCODING_SLOTS, EncodingSlot, Publication};
pub use session::{Session, SignInError, SubscribeError, Subscription};
pub use socket_id::SocketId;

use crate::config::Config;

/// Longest event name accepted (Pusher's limit).
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// Node-wide settings the core and adapters read.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This node's name (`node_id`, or random at start): logs, `/readyz`, metrics, and
    /// its keys in a cluster.
    pub node_id: Arc<str>,
    pub activity_timeout: Duration,
    pub pong_timeout: Duration,
    pub outbound_queue_size: usize,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    pub shutdown_unready: Duration,
    pub cache_ttl: Duration,
}

impl NodeSettings {
    pub fn from_config(config: &Config) -> Self {
        NodeSettings {
            node_id: match &config.node_id {
                Some(id) => Arc::from(id.as_str()),
                None => random_node_id(),
            },
            activity_timeout: Duration::from_secs(config.activity_timeout_secs),
            pong_timeout: Duration::from_secs(config.pong_timeout_secs),
            outbound_queue_size: config.outbound_queue_size,
            max_connections: config.max_connections,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            shutdown_unready: Duration::from_secs(config.shutdown_unready_secs),
            cache_ttl: Duration::from_secs(config.cache_ttl_secs),
        }
    }
}

/// A fresh node id: `n` and 10 hexadecimal digits (40 random bits), short enough to read
/// in a log line, unlikely to repeat among the nodes of one cluster.
fn random_node_id() -> Arc<str> {
    let bits: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
    Arc::from(format!("n{bits:010x}"))
}

/// Handles to the core's Prometheus series, created once.
#[derive(Clone)]
pub(crate) struct CoreMetrics {
    pub subscriptions: Gauge,
    pub publications: Counter,
    pub deliveries: Counter,
    pub publish_latency: Histogram,
    pub slow_consumers: Counter,
}

impl CoreMetrics {
    fn new() -> Self {
        CoreMetrics {
            subscriptions: metrics::gauge!("payrelay_subscriptions"),
            publications: metrics::counter!("payrelay_publications_total"),
            deliveries: metrics::counter!("payrelay_messages_out_total"),
            publish_latency: metrics::histogram!("payrelay_publish_latency_seconds"),
            slow_consumers: metrics::counter!("payrelay_slow_consumer_disconnects_total"),
        }
    }
}

/// A publication as an API or adapter asks for it.
#[derive(Debug, Clone, Default)]
pub struct NewPublication {
    pub channel: String,
    pub event: String,
    pub data: String,
    pub exclude: Option<SocketId>,
    pub user_id: Option<String>,
    /// Relayed to current subscribers only, never kept as a cache channel's last event
    /// (peer-to-peer messages such as Pusher client events).
    pub relay_only: bool,
    /// Also an app-level event: besides reaching the channel's subscribers, it is meant
    /// for the app's own backend (its webhook endpoints without a merchant), as a payment
    /// request's resolution is.
    pub app_event: bool,
    /// Whom among the channel's subscribers it is for (see [`Audience`]).
    pub audience: Audience,
}

/// What the publish path checks of a backend's or client's publication before it is
/// stamped: a channel clients may name, data within the app's `max_message_size`, an
/// event name of 1 to [`MAX_EVENT_NAME_LEN`] bytes.
pub(crate) fn check_publication(app: &App, new: &NewPublication) -> Result<(), PublishError> {
    channel::classify(&new.channel)
        .map_err(|e| PublishError::InvalidChannel(new.channel.clone(), e))?;
    let limit = app.limits.max_message_size;
    if new.data.len() > limit {
        return Err(PublishError::DataTooLarge {
            size: new.data.len(),
            limit,
        });
    }
    if new.event.is_empty() || new.event.len() > MAX_EVENT_NAME_LEN {
        return Err(PublishError::InvalidEventName);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid channel name `{0}`: {1}")]
    InvalidChannel(String, channel::ChannelNameError),
    #[error("event name must be 1 to {MAX_EVENT_NAME_LEN} characters")]
    InvalidEventName,
    #[error("event data is {size} bytes, over the app's limit of {limit} bytes")]
    DataTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Broker(String),
    /// The journal (the webhook outbox) could not record it: nothing was published.
    #[error("{0}")]
    Journal(String),
    /// The history store could not give it a position (Redis down): nothing was
    /// published.
    #[error("{0}")]
    History(String),
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the app is disabled")]
    AppDisabled,
    #[error("the app's connection quota is used up")]
    AppQuotaReached,
    #[error("the node is at capacity")]
    OverCapacity,
    #[error("the node is shutting down")]
    ShuttingDown,
}

pub struct Core {
    pub apps: AppRegistry,
    pub settings: NodeSettings,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    history: Arc<dyn History>,
    connections: DashMap<SocketId, Arc<Connection>>,
    connection_count: AtomicUsize,
    shutting_down: AtomicBool,
    journal: std::sync::OnceLock<Arc<dyn PublicationJournal>>,
    /// The cluster's presence and occupancy, when the node is a cluster member.
    shared: std::sync::OnceLock<Arc<dyn SharedState>>,
    pub(crate) metrics: CoreMetrics,
}

/// Delivers what the broker brings to this node's hub.
struct LocalDelivery {
    hub: Arc<Hub>,
    metrics: CoreMetrics,
}

impl BrokerSink for LocalDelivery {
    fn deliver(&self, message: BrokerMessage) {
        match message {
            BrokerMessage::Publication(publication) => {
                let queued = self.hub.fan_out(&publication);
                self.metrics.deliveries.increment(queued as u64);
                self.metrics
                    .publish_latency
                    .record(publication.accepted_at.elapsed().as_secs_f64());
            }
            BrokerMessage::MemberAdded {
                app_id,
                channel,
                member,
            } => self.hub.member_added(&app_id, &channel, &member),
            BrokerMessage::MemberRemoved {
                app_id,
                channel,
                user_id,
            } => self.hub.member_removed(&app_id, &channel, &user_id),
            BrokerMessage::TerminateUser { app_id, user_id } => {
                let closed = self
                    .hub
                    .disconnect_user(&app_id, &user_id, Disconnect::Terminated);
                tracing::info!(app = %app_id, closed, "terminated a user's connections");
            }
            BrokerMessage::CloseConnections {
                app_id,
                principal,
                which,
                reason,
            } => {
                let closed = self
                    .hub
                    .close_connections_of(&app_id, &principal, &which, reason);
                let kind = principal.kind();
                tracing::debug!(app = %app_id, closed, ?reason, "closed connections of a {kind}");
            }
        }
    }
}

impl Core {
    /// A core with the embedded in-process broker.
    pub fn new(config: &Config) -> Arc<Core> {
        Self::with_broker(config, NodeSettings::from_config(config), |sink| {
            Arc::new(InProcessBroker::new(sink))
        })
    }

    /// A core whose broker is built from the sink it must deliver to, with the embedded
    /// history.
    pub fn with_broker(
        config: &Config,
        settings: NodeSettings,
        make_broker: impl FnOnce(Arc<dyn BrokerSink>) -> Arc<dyn Broker>,
    ) -> Arc<Core> {
        let history = Arc::new(EmbeddedHistory::from_config(config));
        Self::with_broker_and_history(config, settings, make_broker, history)
    }

    /// A core with a broker built from its sink and the given history (Redis history
    /// goes with the Redis broker).
    pub fn with_broker_and_history(
        config: &Config,
        settings: NodeSettings,
        make_broker: impl FnOnce(Arc<dyn BrokerSink>) -> Arc<dyn Broker>,
        history: Arc<dyn History>,
    ) -> Arc<Core> {
        let hub = Arc::new(Hub::new(settings.cache_ttl));
        let metrics = CoreMetrics::new();
        let broker = make_broker(Arc::new(LocalDelivery {
            hub: hub.clone(),
            metrics: metrics.clone(),
        }));
        if let Some(interest) = broker.interest() {
            hub.set_interest(interest);
        }
        metrics::gauge!("payrelay_node_info", "node_id" => settings.node_id.to_string(), "broker" => broker.name())
            .set(1.0);
        Arc::new(Core {
            apps: AppRegistry::new(&config.apps),
            settings,
            hub,
            broker,
            history,
            connections: DashMap::new(),
            connection_count: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            journal: std::sync::OnceLock::new(),
            shared: std::sync::OnceLock::new(),
            metrics,
        })
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Makes the node a cluster member for presence and occupancy (once, at start-up,
    /// before any connection). Returns false if it already was.
    pub fn set_shared_state(&self, shared: Arc<dyn SharedState>) -> bool {
        self.shared.set(shared.clone()).is_ok() && self.hub.set_shared_state(shared)
    }

    /// A channel's occupancy: the cluster's when the node is a member, else this node's.
    /// Fails only while the cluster's state cannot be read.
    pub async fn channel_stats(
        &self,
        app: &Arc<str>,
        channel: &str,
    ) -> Result<ChannelStats, String> {
        match self.shared.get() {
            Some(shared) => shared.channel_stats(app, channel).await,
            None => Ok(self.hub.channel_stats(app, channel)),
        }
    }

    /// Occupied channels of `app` starting with `prefix` (see [`Hub::occupied_channels`]),
    /// across the cluster when the node is a member.
    pub async fn occupied_channels(
        &self,
        app: &Arc<str>,
        prefix: &str,
    ) -> Result<Vec<(Arc<str>, ChannelStats)>, String> {
        match self.shared.get() {
            Some(shared) => shared.occupied_channels(app, prefix).await,
            None => Ok(self.hub.occupied_channels(app, prefix)),
        }
    }

    /// A presence channel's members' ids, across the cluster when the node is a member.
    pub async fn presence_members(
        &self,
        app: &Arc<str>,
        channel: &str,
    ) -> Result<Vec<Arc<str>>, String> {
        match self.shared.get() {
            Some(shared) => shared.presence_members(app, channel).await,
            None => Ok(self.hub.presence_members(app, channel)),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Where channel streams live (see [`history`]).
    pub fn history(&self) -> &Arc<dyn History> {
        &self.history
    }

    /// Admits a new connection of `app`, or says why not.
    pub fn open_session(
        self: &Arc<Self>,
        app: &Arc<App>,
        protocol: &'static str,
        remote: SocketAddr,
    ) -> Result<Session, OpenError> {
        if self.is_shutting_down() {
            return Err(OpenError::ShuttingDown);
        }
        if !app.enabled {
            return Err(OpenError::AppDisabled);
        }
        let max = self.settings.max_connections;
        let admitted = self
            .connection_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(OpenError::OverCapacity);
        }
        if !app.try_acquire_connection() {
            self.connection_count.fetch_sub(1, Ordering::AcqRel);
            return Err(OpenError::AppQuotaReached);
        }
        let conn = loop {
            let id = SocketId::random();
            if let dashmap::Entry::Vacant(slot) = self.connections.entry(id) {
                let conn = Arc::new(Connection::new(
                    id,
                    app.clone(),
                    protocol,
                    remote,
                    self.settings.outbound_queue_size,
                ));
                slot.insert(conn.clone());
                break conn;
            }
        };
        // `begin_shutdown` may have walked the registry between the check above and the
        // insert; a connection it missed must still be told to go.
        if self.is_shutting_down() {
            conn.outbox.close(Disconnect::Shutdown);
        }
        metrics::gauge!("payrelay_connections", "protocol" => protocol).increment(1.0);
        metrics::counter!("payrelay_connections_opened_total", "protocol" => protocol).increment(1);
        Ok(Session::new(self.clone(), conn))
    }

    fn deregister(&self, conn: &Connection) {
        if self.connections.remove(&conn.id).is_some() {
            self.connection_count.fetch_sub(1, Ordering::AcqRel);
            conn.app.release_connection();
            metrics::gauge!("payrelay_connections", "protocol" => conn.protocol).decrement(1.0);
        }
    }

    /// Counts a connection closed because it could not keep up.
    pub fn record_slow_consumer(&self) {
        self.metrics.slow_consumers.increment(1);
    }

    pub fn connection_count(&self) -> usize {
        self.connection_count.load(Ordering::Acquire)
    }

    /// Live connections of this node (for diagnostics and shutdown).
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }

    /// The one publish path for backends (HTTP APIs, the sandbox): validate, stamp an
    /// [`EventId`], record in the journal, give it its [`StreamPosition`] in the channel's
    /// history, hand to the broker. Returns the id.
    pub async fn publish(&self, app: &App, new: NewPublication) -> Result<EventId, PublishError> {
        self.publish_from(app, new, false).await
    }

    /// The same path for what a client connection sends ([`Session::publish`]).
    pub(crate) async fn publish_from(
        &self,
        app: &App,
        new: NewPublication,
        from_client: bool,
    ) -> Result<EventId, PublishError> {
        check_publication(app, &new)?;
        self.publish_checked(app, new, from_client).await
    }

    /// The same path for the node's own rooms, on an internal channel
    /// ([`channel::is_internal`], e.g. a payment request's `#payload-{uuid}`), which no
    /// API or client can name. The room bounds what it publishes itself, so the app's
    /// `max_message_size` (a limit on what clients and backends send) does not apply.
    pub async fn publish_internal(
        &self,
        app: &App,
        new: NewPublication,
    ) -> Result<EventId, PublishError> {
        if !channel::is_internal(&new.channel) {
            let error = channel::ChannelNameError::BadCharacter;
            return Err(PublishError::InvalidChannel(new.channel, error));
        }
        self.publish_checked(app, new, false).await
    }

    /// Stamps a publication whose channel and size were checked, records it in the
    /// journal, and hands it to the broker.
    async fn publish_checked(
        &self,
        app: &App,
        new: NewPublication,
        from_client: bool,
    ) -> Result<EventId, PublishError> {
        if new.event.is_empty() || new.event.len() > MAX_EVENT_NAME_LEN {
            return Err(PublishError::InvalidEventName);
        }
        let mut publication = Publication::new(
            app.id.clone(),
            Arc::from(new.channel),
            new.event.into_boxed_str(),
            new.data.into_boxed_str(),
        );
        publication.exclude = new.exclude;
        publication.user_id = new.user_id.map(String::into_boxed_str);
        publication.relay_only = new.relay_only;
        publication.from_client = from_client;
        publication.app_event = new.app_event;
        publication.audience = new.audience;
        let id = publication.id;
        let publication = Arc::new(publication);
        // A broker that cannot deliver refuses before the journal commits callbacks for
        // an event nobody would hear.
        if !self.broker.is_ready() {
            let why = self.broker.problem().unwrap_or_else(|| "not ready".into());
            return Err(PublishError::Broker(format!("broker unavailable: {why}")));
        }
        if let Some(write) = self.journal.get().and_then(|j| j.record(&publication)) {
            write.await.map_err(PublishError::Journal)?;
        }
        // The stream's order is held until the broker delivered, so subscribers of this
        // node see the channel's positions in order.
        let _order = if history::keeps(app, &publication) {
            match self
                .history
                .append(app, &publication)
                .await
                .map_err(|e| PublishError::History(e.to_string()))?
            {
                Some(appended) => {
                    publication.set_position(appended.position);
                    appended.order
                }
                None => None,
            }
        } else {
            None
        };
        self.metrics.publications.increment(1);
        self.broker
            .publish(BrokerMessage::Publication(publication))
            .await
            .map_err(|e| PublishError::Broker(e.to_string()))?;
        Ok(id)
    }

    /// Sets the journal every publication is offered to before it is handed to the
    /// broker (once, at start-up). Returns false if one was already set.
    pub fn set_journal(&self, journal: Arc<dyn PublicationJournal>) -> bool {
        self.journal.set(journal).is_ok()
    }

    /// Closes every connection of `user_id` in `app`, on every node.
    pub async fn terminate_user(&self, app: &App, user_id: &str) -> Result<(), BrokerError> {
        self.broker
            .publish(BrokerMessage::TerminateUser {
                app_id: app.id.clone(),
                user_id: Arc::from(user_id),
            })
            .await
    }

    /// Closes the connections of end user `user_id` that `which` selects, on every node.
    pub async fn close_user_connections(
        &self,
        app: &App,
        user_id: &str,
        which: WhichConnections,
        reason: Disconnect,
    ) -> Result<(), BrokerError> {
        self.close_connections_of(app, Principal::user(user_id), which, reason)
            .await
    }

    /// Closes the connections of merchant `merchant_id` that `which` selects, on every
    /// node (its API key or client token was revoked).
    pub async fn close_merchant_connections(
        &self,
        app: &App,
        merchant_id: &str,
        which: WhichConnections,
        reason: Disconnect,
    ) -> Result<(), BrokerError> {
        self.close_connections_of(app, Principal::merchant(merchant_id), which, reason)
            .await
    }

    async fn close_connections_of(
        &self,
        app: &App,
        principal: Principal,
        which: WhichConnections,
        reason: Disconnect,
    ) -> Result<(), BrokerError> {
        self.broker
            .publish(BrokerMessage::CloseConnections {
                app_id: app.id.clone(),
                principal,
                which,
                reason,
            })
            .await
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Stops admitting connections (and `/readyz` says so); open ones keep working.
    pub fn stop_admitting(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Stops admitting connections and asks every open one to close after writing what it
    /// has queued. Returns how many were asked.
    pub fn begin_shutdown(&self) -> usize {
        self.stop_admitting();
        let conns = self.connections();
        for conn in &conns {
            conn.outbox.close(Disconnect::Shutdown);
        }
        conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outbox::Drain;

    /// The events `session` has queued, by name (subscription frames skipped), and
    /// whether a cache channel replayed one to it.
    async fn queued(session: &Session) -> (Vec<String>, Option<String>) {
        let mut batch = Vec::new();
        let mut events = Vec::new();
        let mut replayed = None;
        while !session.connection().outbox.is_empty() {
            assert_eq!(
                session.connection().outbox.drain(&mut batch).await,
                Drain::Frames
            );
            for item in batch.drain(..) {
                match item {
                    Outbound::Publication(p) => events.push(p.event.to_string()),
                    Outbound::Subscribed(s) => {
                        if let outbox::CacheState::Hit(p) = &s.cache {
                            replayed = Some(p.event.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        (events, replayed)
    }

    #[tokio::test]
    async fn a_connection_narrowed_to_a_user_gets_what_is_marked_for_it() {
        let config =
            Config::parse("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-123\"").unwrap();
        let core = Core::new(&config);
        let app = core.apps.by_id("1").unwrap().clone();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut narrowed = core.open_session(&app, "test", addr).unwrap();
        narrowed.connection().narrow_to_user(Arc::from("u1"));
        let mut whole = core.open_session(&app, "test", addr).unwrap();
        for session in [&mut narrowed, &mut whole] {
            session.subscribe("private-c", None).unwrap();
        }
        for (event, audience) in [
            ("for-u1", Audience::User("u1".into())),
            ("for-u2", Audience::User("u2".into())),
            ("unmarked", Audience::Unmarked),
            ("everyone", Audience::Everyone),
        ] {
            let new = NewPublication {
                channel: "private-c".into(),
                event: event.into(),
                data: "{}".into(),
                audience,
                ..Default::default()
            };
            core.publish(&app, new).await.unwrap();
        }
        assert_eq!(queued(&narrowed).await.0, ["for-u1", "everyone"]);
        assert_eq!(
            queued(&whole).await.0,
            ["for-u1", "for-u2", "unmarked", "everyone"]
        );

        // A cache channel's last event is replayed to a new subscriber only if it is for it.
        let new = NewPublication {
            channel: "cache-c".into(),
            event: "for-u2".into(),
            data: "{}".into(),
            audience: Audience::User("u2".into()),
            ..Default::default()
        };
        core.publish(&app, new).await.unwrap();
        narrowed.subscribe("cache-c", None).unwrap();
        whole.subscribe("cache-c", None).unwrap();
        assert_eq!(queued(&narrowed).await.1, None);
        assert_eq!(queued(&whole).await.1.as_deref(), Some("for-u2"));
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use crate::core::outbox::Drain;

    async fn positions(session: &Session) -> Vec<Option<u64>> {
        let mut batch = Vec::new();
        let mut found = Vec::new();
        while !session.connection().outbox.is_empty() {
            assert_eq!(
                session.connection().outbox.drain(&mut batch).await,
                Drain::Frames
            );
            for item in batch.drain(..) {
                if let Outbound::Publication(p) = item {
                    found.push(p.position().map(|p| p.offset));
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn the_publish_path_gives_each_kept_publication_its_position_in_order() {
        let config = Config::parse(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-123\"\n\
             [[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"secret-123\"\n\
             [apps.history]\nsize = 0",
        )
        .unwrap();
        let core = Core::new(&config);
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        for (app_id, expected) in [("1", Vec::new()), ("2", vec![None; 4])] {
            let app = core.apps.by_id(app_id).unwrap().clone();
            let mut session = core.open_session(&app, "test", addr).unwrap();
            session.subscribe("c", None).unwrap();
            let mut publishing = Vec::new();
            for relay_only in [false, false, true, false] {
                let new = NewPublication {
                    channel: "c".into(),
                    event: "e".into(),
                    data: "{}".into(),
                    relay_only,
                    ..Default::default()
                };
                // Concurrent publishes on one channel still reach it in offset order.
                publishing.push(core.publish(&app, new));
            }
            for result in futures_util::future::join_all(publishing).await {
                result.unwrap();
            }
            let mut got = positions(&session).await;
            if app_id == "1" {
                // The relayed client event has no position; the others count up.
                let relayed = got.iter().position(Option::is_none).unwrap();
                got.remove(relayed);
                assert_eq!(got, [Some(1), Some(2), Some(3)]);
            } else {
                assert_eq!(got, expected);
            }
        }
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;
    use crate::core::hub::Joined;
    use crate::core::outbox::{Drain, Recovery};

    /// What `session` has queued: `S<recovery>@<position>` for a `Subscribed` item,
    /// the data of each publication.
    async fn items(session: &Session) -> Vec<String> {
        let mut batch = Vec::new();
        let mut found = Vec::new();
        while !session.connection().outbox.is_empty() {
            assert_eq!(
                session.connection().outbox.drain(&mut batch).await,
                Drain::Frames
            );
            for item in batch.drain(..) {
                match item {
                    Outbound::Publication(p) => found.push(p.data.to_string()),
                    Outbound::Subscribed(s) => found.push(format!(
                        "S{:?}@{}",
                        s.recovery,
                        s.position.map_or("-".into(), |p| p.offset.to_string())
                    )),
                    _ => {}
                }
            }
        }
        found
    }

    fn setup(history: &str) -> (Arc<Core>, Arc<App>) {
        let config = Config::parse(&format!(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-123\"\n{history}"
        ))
        .unwrap();
        let core = Core::new(&config);
        let app = core.apps.by_id("1").unwrap().clone();
        (core, app)
    }

    async fn publish(core: &Core, app: &App, n: u32) -> StreamPosition {
        let new = NewPublication {
            channel: "c".into(),
            event: "e".into(),
            data: n.to_string(),
            ..Default::default()
        };
        core.publish(app, new).await.unwrap();
        core.history().latest(app, "c").await.unwrap().unwrap()
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn a_resume_replays_what_followed_its_position_then_live_events() {
        let (core, app) = setup("");
        let mut first = core.open_session(&app, "test", addr()).unwrap();
        first.subscribe_resuming("c", None, None).await.unwrap();
        assert_eq!(items(&first).await, ["SNotAsked@0"]);
        let p1 = publish(&core, &app, 1).await;
        publish(&core, &app, 2).await;
        publish(&core, &app, 3).await;
        assert_eq!(items(&first).await, ["1", "2", "3"]);

        let mut again = core.open_session(&app, "test", addr()).unwrap();
        again
            .subscribe_resuming("c", None, Some(&p1))
            .await
            .unwrap();
        publish(&core, &app, 4).await;
        assert_eq!(items(&again).await, ["SRecovered@1", "2", "3", "4"]);

        // Another epoch: the explicit failure, at the stream's current position.
        let mut lost = core.open_session(&app, "test", addr()).unwrap();
        let foreign = StreamPosition::new(1, "elsewhere".into());
        lost.subscribe_resuming("c", None, Some(&foreign))
            .await
            .unwrap();
        publish(&core, &app, 5).await;
        assert_eq!(items(&lost).await, ["SFailed@4", "5"]);
    }

    #[tokio::test]
    async fn what_is_published_during_the_history_read_comes_once_after_the_replay() {
        let (core, app) = setup("");
        let session = core.open_session(&app, "test", addr()).unwrap();
        let conn = session.connection().clone();
        let p1 = publish(&core, &app, 1).await;
        let Joined::Held(mut subscribed) =
            core.hub().subscribe(&conn, "c", None, 10, true).unwrap()
        else {
            panic!("not held");
        };
        // Published while the history is being read: held, and also in history.
        publish(&core, &app, 2).await;
        assert!(conn.outbox.is_empty(), "live events wait for the replay");
        let Recovered::Publications { publications, .. } = core
            .history()
            .since(&app, "c", Some(&p1), 100)
            .await
            .unwrap()
        else {
            panic!("gone");
        };
        // And one more between the read and the release: only live.
        publish(&core, &app, 3).await;
        subscribed.position = Some(p1);
        subscribed.recovery = Recovery::Recovered;
        assert_eq!(core.hub().release(&conn, subscribed, publications), 1);
        publish(&core, &app, 4).await;
        assert_eq!(items(&session).await, ["SRecovered@1", "2", "3", "4"]);
        core.hub().unsubscribe(&conn, "c");
    }

    /// A broker that can keep what it is handed in flight: in history, not yet at the
    /// hub, as another node's publication is between the Redis script that appended it
    /// and this node's Pub/Sub reader, or this node's own between `History::append` and
    /// the broker's delivery.
    struct StallingBroker {
        sink: Arc<dyn BrokerSink>,
        in_flight: parking_lot::Mutex<Option<Vec<BrokerMessage>>>,
    }

    impl StallingBroker {
        fn stall(&self) {
            *self.in_flight.lock() = Some(Vec::new());
        }

        /// Delivers what was held back, and from now on at once.
        fn land(&self) {
            for message in self.in_flight.lock().take().unwrap_or_default() {
                self.sink.deliver(message);
            }
        }
    }

    #[async_trait::async_trait]
    impl Broker for StallingBroker {
        async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
            match &mut *self.in_flight.lock() {
                Some(in_flight) => in_flight.push(message),
                None => self.sink.deliver(message),
            }
            Ok(())
        }

        fn name(&self) -> &'static str {
            "stalling"
        }
    }

    #[tokio::test]
    async fn an_event_replayed_and_then_delivered_live_comes_once() {
        let config =
            Config::parse("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-123\"\n").unwrap();
        let broker = std::sync::OnceLock::new();
        let core = Core::with_broker(&config, NodeSettings::from_config(&config), |sink| {
            let stalling = Arc::new(StallingBroker {
                sink,
                in_flight: Default::default(),
            });
            let _ = broker.set(stalling.clone());
            stalling
        });
        let broker = broker.get().unwrap();
        let app = core.apps.by_id("1").unwrap().clone();
        let p1 = publish(&core, &app, 1).await;
        // 2 is in history but still on its way to the hub while two clients subscribe:
        // one resuming after 1 (2 is in its replay), one fresh (told position 2).
        broker.stall();
        publish(&core, &app, 2).await;
        let mut resumed = core.open_session(&app, "test", addr()).unwrap();
        resumed
            .subscribe_resuming("c", None, Some(&p1))
            .await
            .unwrap();
        let mut fresh = core.open_session(&app, "test", addr()).unwrap();
        fresh.subscribe_resuming("c", None, None).await.unwrap();
        broker.land();
        publish(&core, &app, 3).await;
        assert_eq!(items(&resumed).await, ["SRecovered@1", "2", "3"]);
        assert_eq!(items(&fresh).await, ["SNotAsked@2", "3"]);
    }

    #[tokio::test]
    async fn without_history_a_resume_fails_and_a_subscribe_has_no_position() {
        let (core, app) = setup("[apps.history]\nsize = 0");
        let mut session = core.open_session(&app, "test", addr()).unwrap();
        session.subscribe_resuming("c", None, None).await.unwrap();
        let mut resuming = core.open_session(&app, "test", addr()).unwrap();
        resuming
            .subscribe_resuming("c", None, Some(&StreamPosition::new(1, "x".into())))
            .await
            .unwrap();
        assert_eq!(items(&session).await, ["SNotAsked@-"]);
        assert_eq!(items(&resuming).await, ["SFailed@-"]);
    }

    #[tokio::test]
    async fn a_hold_that_outgrows_the_outbox_closes_the_connection() {
        let (core, app) = setup("");
        let session = core.open_session(&app, "test", addr()).unwrap();
        let conn = session.connection().clone();
        let Joined::Held(_) = core.hub().subscribe(&conn, "c", None, 10, true).unwrap() else {
            panic!("not held");
        };
        for n in 0..=conn.outbox.capacity() as u32 {
            publish(&core, &app, n).await;
        }
        assert!(conn.outbox.is_closing());
        core.hub().unsubscribe(&conn, "c");
    }
}
