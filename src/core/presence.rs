//! Presence members as the core keeps them.
//!
//! A member is a user, not a socket: one user with three sockets in a presence channel is
//! one member, announced once when the first socket joins and removed once when the last
//! one leaves. The hub counts sockets per member under the channel lock.

use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: Arc<str>,
    /// The `user_info` JSON the auth endpoint signed, if any.
    pub user_info: Option<serde_json::Value>,
}

/// Members of a presence channel at the moment a subscriber joined.
#[derive(Debug, Clone, Default)]
pub struct PresenceSnapshot {
    pub members: Vec<Arc<Member>>,
}
