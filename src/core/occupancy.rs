//! Channel occupancy as it changes on this node: the seam Pusher-style app webhooks
//! (`channel_occupied`, `member_added`, …) are built on, without the hub knowing who
//! listens.
//!
//! The hub reports each change while it holds the channel's lock, so reports about one
//! channel arrive in the order the changes happened. An observer must therefore return at
//! once (queue the change and handle it elsewhere). Occupancy is this node's view; with
//! several nodes, a channel is occupied if any node says so (issue 15 makes that
//! cluster-wide).

use std::sync::Arc;

/// What changed about one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OccupancyChange {
    /// The first subscriber arrived.
    Occupied,
    /// The last subscriber left.
    Vacated,
    /// A presence member joined (their first socket in the channel).
    MemberAdded(Arc<str>),
    /// A presence member left (their last socket in the channel).
    MemberRemoved(Arc<str>),
}

pub trait OccupancyObserver: Send + Sync + 'static {
    /// Called under the channel's lock: queue and return.
    fn changed(&self, app: &Arc<str>, channel: &Arc<str>, change: OccupancyChange);
}
