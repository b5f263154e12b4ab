//! Apps (tenants): who may connect, with which key, under which limits.
//!
//! Every channel, connection and publication belongs to exactly one app; nothing is looked
//! up without the app in hand, so two apps with a channel of the same name never meet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{AppConfig, EncryptionMasterKey, Secret};

/// One app as the node runs it: its configuration plus live counters.
#[derive(Debug)]
pub struct App {
    pub id: Arc<str>,
    pub key: String,
    secret: Secret,
    encryption_master_key: Option<EncryptionMasterKey>,
    pub enabled: bool,
    pub limits: AppLimits,
    /// Settings of the plain JSON protocol adapter.
    pub plain: crate::config::PlainConfig,
    /// Settings of the Socket.IO gateway.
    pub socketio: crate::config::SocketIoConfig,
    /// What each channel keeps for clients that reconnect.
    pub history: crate::config::HistoryConfig,
    /// Connections of this app currently open on this node.
    connections: AtomicUsize,
    /// Connections of this app on the cluster's other nodes, as they last reported them
    /// (0 on a node of its own); counted against `max_connections`.
    elsewhere: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct AppLimits {
    pub max_connections: usize,
    pub max_message_size: usize,
    pub enable_client_messages: bool,
    pub client_events_per_second: u32,
    pub max_channels_per_connection: usize,
    /// Subscribe requests one connection may send per second, after a burst of
    /// `max_channels_per_connection` (see [`AppLimits::subscribe_budget`]).
    pub subscriptions_per_second: u32,
    pub max_presence_members: usize,
    pub max_presence_member_size: usize,
    pub max_event_channels: usize,
    pub max_batch_size: usize,
}

impl AppLimits {
    /// A connection's budget of subscribe requests: a burst as large as the channel limit
    /// (a reconnecting client subscribes to everything at once), then the app's rate.
    pub fn subscribe_budget(&self) -> crate::core::rate::TokenBucket {
        let burst = u32::try_from(self.max_channels_per_connection).unwrap_or(u32::MAX);
        crate::core::rate::TokenBucket::new(
            burst.max(self.subscriptions_per_second),
            self.subscriptions_per_second,
        )
    }
}

impl App {
    pub fn from_config(config: &AppConfig) -> Self {
        App {
            id: Arc::from(config.id.as_str()),
            key: config.key.clone(),
            secret: config.secret.clone(),
            encryption_master_key: config.encryption_master_key_base64.clone(),
            enabled: config.enabled,
            limits: AppLimits {
                max_connections: config.max_connections,
                max_message_size: config.max_message_size,
                enable_client_messages: config.enable_client_messages,
                client_events_per_second: config.client_events_per_second,
                max_channels_per_connection: config.max_channels_per_connection,
                subscriptions_per_second: config.subscriptions_per_second,
                max_presence_members: config.max_presence_members,
                max_presence_member_size: config.max_presence_member_size,
                max_event_channels: config.max_event_channels,
                max_batch_size: config.max_batch_size,
            },
            plain: config.plain.clone(),
            socketio: config.socketio.clone(),
            history: config.history.clone(),
            connections: AtomicUsize::new(0),
            elsewhere: AtomicUsize::new(0),
        }
    }

    /// The app secret, for signing and verifying. Never log it.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The master key of end-to-end encrypted channels, if the app has one.
    pub fn encryption_master_key(&self) -> Option<&EncryptionMasterKey> {
        self.encryption_master_key.as_ref()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Reserves one connection slot, or says the app's quota is used up (counting the
    /// cluster's other nodes as they last reported).
    pub(crate) fn try_acquire_connection(&self) -> bool {
        let limit = self.limits.max_connections;
        let elsewhere = self.elsewhere.load(Ordering::Relaxed);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n.saturating_add(elsewhere) < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Records how many connections of this app the cluster's other nodes hold.
    pub fn set_connections_elsewhere(&self, count: usize) {
        self.elsewhere.store(count, Ordering::Relaxed);
    }

    pub(crate) fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All apps of the node, by id (HTTP API) and by key (WebSocket path).
#[derive(Debug, Default)]
pub struct AppRegistry {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl AppRegistry {
    pub fn new(configs: &[AppConfig]) -> Self {
        let mut registry = AppRegistry::default();
        for config in configs {
            let app = Arc::new(App::from_config(config));
            registry.by_id.insert(config.id.clone(), app.clone());
            registry.by_key.insert(config.key.clone(), app);
        }
        registry
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }
}
