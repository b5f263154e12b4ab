//! The broker seam: how a publication or a node-wide command reaches every node.
//!
//! A node never fans out a publication directly; it hands it to the broker, and the broker
//! delivers it to every node's [`BrokerSink`] (the hub), the publishing node included. With
//! one node the broker is [`InProcessBroker`], a direct call. A multi-node broker (Redis)
//! implements the same trait; adapters and the HTTP API never know which one runs.

mod memory;
pub mod redis;
pub(crate) mod wire;

use std::sync::Arc;

use async_trait::async_trait;

pub use memory::InProcessBroker;
pub use redis::RedisBroker;

use super::Publication;
use super::gate::Gate;

/// What travels between nodes.
#[derive(Debug, Clone)]
pub enum BrokerMessage {
    Publication(Arc<Publication>),
    /// Close every connection authenticated as this end user (Pusher
    /// `terminate_connections`); merchants are another namespace and stay.
    TerminateUser {
        app_id: Arc<str>,
        user_id: Arc<str>,
    },
    /// The cluster has a new presence member (its first socket on any node).
    MemberAdded {
        app_id: Arc<str>,
        channel: Arc<str>,
        member: Arc<super::presence::Member>,
    },
    /// A presence member's last socket in the cluster left (or its node died).
    MemberRemoved {
        app_id: Arc<str>,
        channel: Arc<str>,
        user_id: Arc<str>,
    },
    /// Close some connections of a user or a merchant, on every node (token or key
    /// revocation, one socket per user, forced logout).
    CloseConnections {
        app_id: Arc<str>,
        principal: super::Principal,
        which: WhichConnections,
        reason: super::Disconnect,
    },
}

/// Which of a user's or merchant's connections [`BrokerMessage::CloseConnections`] closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhichConnections {
    /// Every connection of one protocol.
    Protocol(&'static str),
    /// Connections opened with this credential id.
    Credential(Arc<str>),
    /// The oldest connections of one protocol beyond the newest `keep`, never `newest`
    /// itself (a node enforces this over its own connections).
    OlderThan {
        protocol: &'static str,
        newest: super::SocketId,
        keep: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Receives what the broker delivers to this node.
pub trait BrokerSink: Send + Sync + 'static {
    fn deliver(&self, message: BrokerMessage);
}

/// What a remote broker needs from the hub: which channels this node has subscribers on,
/// so it listens to those and no others, and what the cluster holds for a new subscriber.
///
/// The hub calls these under the channel's lock, so calls about one channel arrive in
/// the order its subscribers came and went: queue the work and return at once.
pub trait ChannelInterest: Send + Sync + 'static {
    /// `channel` has its first subscriber on this node: start listening. The gate opens
    /// once publications of the channel reach this node; the hub holds every new
    /// subscriber's `Subscribed` frame behind it until then.
    fn occupied(&self, app: &Arc<str>, channel: &Arc<str>) -> Arc<Gate>;

    /// `channel`'s last subscriber on this node left: stop listening.
    fn vacated(&self, app: &Arc<str>, channel: &Arc<str>);

    /// A new subscriber of cache channel `channel`: the returned gate opens, after
    /// `listening`, with the cluster's cached last event (if it is for a connection
    /// narrowed to `narrowed_to`, when it is narrowed).
    fn cached_event(
        &self,
        app: &Arc<str>,
        channel: &Arc<str>,
        listening: Arc<Gate>,
        narrowed_to: Option<Arc<str>>,
    ) -> Arc<Gate>;
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Delivers `message` to every node, this one included.
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError>;

    /// Short name for logs and `/readyz`.
    fn name(&self) -> &'static str;

    /// Whether the broker can currently deliver (a remote broker may be disconnected).
    fn is_ready(&self) -> bool {
        true
    }

    /// Why it is not ready, for `/readyz`.
    fn problem(&self) -> Option<String> {
        None
    }

    /// The hub's side of a remote broker; `None` for one that needs no bookkeeping.
    fn interest(&self) -> Option<Arc<dyn ChannelInterest>> {
        None
    }
}
