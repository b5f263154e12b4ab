//! The broker seam: how a publication or a node-wide command reaches every node.
//!
//! A node never fans out a publication directly; it hands it to the broker, and the broker
//! delivers it to every node's [`BrokerSink`] (the hub), the publishing node included. With
//! one node the broker is [`InProcessBroker`], a direct call. A multi-node broker (Redis)
//! implements the same trait; adapters and the HTTP API never know which one runs.

mod memory;

use std::sync::Arc;

use async_trait::async_trait;

pub use memory::InProcessBroker;

use super::Publication;

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
}
