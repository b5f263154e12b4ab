//! The cluster's shared state as the core sees it: presence and occupancy across nodes.
//!
//! On one node the hub is the truth: it counts a channel's subscribers, knows its
//! presence members and announces joins and leaves. In a cluster each node's hub only
//! knows its own sockets, so the hub reports its changes to a [`SharedState`] (Redis,
//! `src/cluster/`) and leaves the cluster-wide part to it:
//!
//! - a channel's local subscription count ([`SharedState::subscriptions_changed`]); the
//!   shared state sums the nodes' counts and reports `channel_occupied` /
//!   `channel_vacated` when the cluster's total leaves or reaches zero;
//! - a user's first socket in a presence channel on this node
//!   ([`SharedState::member_joined`]) and its last leaving ([`SharedState::member_left`]);
//!   the shared state counts nodes per member and announces `member_added` /
//!   `member_removed` once for the cluster, through the broker, to every node (this one
//!   included), where the hub queues them ([`Hub::member_added`], [`Hub::member_removed`]);
//! - a new presence subscriber's member list, which is the cluster's
//!   ([`SharedState::members`]), delivered through its gate.
//!
//! The hub calls the sync hooks under the channel's lock: they queue work and return.
//! The reads the HTTP API makes are async and fail while the shared state is unreachable.
//!
//! [`Hub::member_added`]: super::Hub::member_added
//! [`Hub::member_removed`]: super::Hub::member_removed

use std::sync::Arc;

use async_trait::async_trait;

use super::ChannelStats;
use super::gate::Gate;
use super::presence::Member;

#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// This node now has `local` subscriptions to `channel` (under the channel's lock).
    fn subscriptions_changed(&self, app: &Arc<str>, channel: &Arc<str>, local: usize);

    /// `member`'s first socket on this node joined presence channel `channel`. The
    /// returned gate opens, after `after`, with the cluster's member list (and `after`'s
    /// cached event, if it has one).
    fn member_joined(
        &self,
        app: &Arc<str>,
        channel: &Arc<str>,
        member: Arc<Member>,
        after: Arc<Gate>,
    ) -> Arc<Gate>;

    /// Another socket of a member already present on this node subscribed: its gate opens,
    /// after `after`, with the cluster's member list.
    fn members(&self, app: &Arc<str>, channel: &Arc<str>, after: Arc<Gate>) -> Arc<Gate>;

    /// `user`'s last socket on this node left presence channel `channel`.
    fn member_left(&self, app: &Arc<str>, channel: &Arc<str>, user: &Arc<str>);

    /// The channel's occupancy across the cluster (its cached event too).
    async fn channel_stats(&self, app: &Arc<str>, channel: &str) -> Result<ChannelStats, String>;

    /// Channels of `app` occupied anywhere whose name starts with `prefix`, sorted, with
    /// their subscription counts and (presence channels) user counts.
    async fn occupied_channels(
        &self,
        app: &Arc<str>,
        prefix: &str,
    ) -> Result<Vec<(Arc<str>, ChannelStats)>, String>;

    /// User ids of a presence channel's members across the cluster, sorted.
    async fn presence_members(
        &self,
        app: &Arc<str>,
        channel: &str,
    ) -> Result<Vec<Arc<str>>, String>;
}
