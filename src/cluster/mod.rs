//! The cluster's shared state in Redis: presence, occupancy, node liveness.
//!
//! Each node's hub reports its own part ([`SharedState`]); this module keeps the sum in
//! Redis so every node answers for the whole cluster, and announces what changes for the
//! cluster exactly once:
//!
//! - **Occupancy.** Each node writes its subscription count of a channel into
//!   `{p}{app}:subs:{channel}` (node → count) and a script keeps the total in
//!   `{p}{app}:occupied` (channel → count, occupied channels only). The node whose write
//!   takes the total from 0 or to 0 reports `channel_occupied` / `channel_vacated` (Pusher
//!   app webhooks), so neither fires while another node still has subscribers. Counts are
//!   written by a flusher every [`FLUSH_INTERVAL`], the latest value per channel, so a
//!   burst of subscriptions costs one write per channel.
//! - **Presence.** A member is a user, across nodes: a node's first socket of a user in
//!   a presence channel runs the join script, which records the node's contribution
//!   (`{p}node:{node}:members`), counts the member's nodes (`{p}{app}:member-nodes:…`)
//!   and, for the first node, stores the member (`{p}{app}:members:…`) and publishes
//!   `member_added` on the channel's Pub/Sub channel, in the same script; the node's
//!   last socket runs the leave script, which publishes `member_removed` when the last
//!   node leaves. Every subscriber's member list is the cluster's (read in the same
//!   script, or with `HGETALL`), handed to its `Subscribed` frame through its gate.
//! - **Liveness.** Each node beats into `{p}nodes` (node → Redis time) every third of
//!   `node_dead_after_secs`. Every node sweeps each second: a node silent longer than
//!   that is moved to `{p}dead` and its contributions are removed one by one with the
//!   same scripts (idempotent, so sweepers racing each other announce each
//!   `member_removed` and `channel_vacated` once), then it leaves `{p}dead`.
//! - **Healing.** A node that finds itself missing from `{p}nodes` (Redis lost its data,
//!   or the others took it for dead), that failed to write a change, or that just
//!   started (a node id may come back after a crash) reconciles: what Redis holds for it
//!   but its hub no longer has is removed, what its hub has is written again.

pub mod history;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::core::broker::redis::{Names, RedisBroker};
use crate::core::broker::wire;
use crate::core::channel::{is_cache_channel, is_presence_channel};
use crate::core::gate::{ClusterView, GATE_TIMEOUT, Gate};
use crate::core::presence::{Member, PresenceSnapshot};
use crate::core::{BrokerMessage, ChannelStats, Core, OccupancyChange, SharedState};

/// How often changed subscription counts are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// How often a node looks for dead nodes.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Entries removed per round trip while sweeping a dead node.
const SWEEP_BATCH: usize = 200;

/// Sets this node's subscription count of a channel; returns the cluster's total before
/// and after. KEYS: subs, occupied, node's channels. ARGV: node, channel, count, entry.
const OCCUPANCY: &str = r"
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[3])
if new == old then
  local t = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
  return {t, t}
end
if new > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], new)
  redis.call('SADD', KEYS[3], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[4])
end
local total = redis.call('HINCRBY', KEYS[2], ARGV[2], new - old)
if total <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  total = 0
end
local before = total - (new - old)
if before < 0 then before = 0 end
return {before, total}
";

/// Records this node's contribution to a member; announces the member when it is the
/// first node's; returns whether it did, and the members. KEYS: members, member-nodes,
/// node's members. ARGV: user, info, entry, Pub/Sub channel, announcement.
const JOIN: &str = r"
local added = 0
if redis.call('SADD', KEYS[3], ARGV[3]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('PUBLISH', ARGV[4], ARGV[5])
    added = 1
  end
end
return {added, redis.call('HGETALL', KEYS[1])}
";

/// Removes a node's contribution to a member; announces the member's departure when it
/// was the last node's; returns whether it did. KEYS: members, member-nodes, node's
/// members. ARGV: user, entry, Pub/Sub channel, announcement.
const LEAVE: &str = r"
if redis.call('SREM', KEYS[3], ARGV[2]) == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('PUBLISH', ARGV[3], ARGV[4])
    return 1
  end
end
return 0
";

/// A heartbeat: 1 if the node was not listed (new, or its record was lost), 0 if it
/// was, -1 while it is being swept as dead (it must not write until that is over).
/// KEYS: nodes, dead. ARGV: node.
const BEAT: &str = r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local t = redis.call('TIME')
return redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
";

/// Moves nodes silent for longer than ARGV[1] ms to the dead set; returns the dead set.
/// KEYS: nodes, dead.
const CLAIM_DEAD: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
  redis.call('SADD', KEYS[2], node)
end
return redis.call('SMEMBERS', KEYS[2])
";

/// Takes or renews the sandbox lease for ARGV[1] for ARGV[2] ms; 1 if held.
/// KEYS: the lease.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if ARGV[1] holds it. KEYS: the lease.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How long the sandbox lease lasts unless renewed (every sweep, each second).
const SANDBOX_LEASE: Duration = Duration::from_secs(5);

struct Scripts {
    occupancy: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    beat: redis::Script,
    claim_dead: redis::Script,
    lease: redis::Script,
    release: redis::Script,
}

/// What the presence worker does, in the order the hub asked.
enum Op {
    Join {
        app: Arc<str>,
        channel: Arc<str>,
        member: Arc<Member>,
        after: Arc<Gate>,
        gate: Arc<Gate>,
    },
    Members {
        app: Arc<str>,
        channel: Arc<str>,
        after: Arc<Gate>,
        gate: Arc<Gate>,
    },
    Leave {
        app: Arc<str>,
        channel: Arc<str>,
        user: Arc<str>,
    },
    /// Reconcile this node's part with its hub.
    Resync,
}

/// An app's channel.
type AppChannel = (Arc<str>, Arc<str>);

pub struct RedisCluster {
    node: Arc<str>,
    names: Names,
    connection: ConnectionManager,
    timeout: Duration,
    dead_after: Duration,
    scripts: Scripts,
    core: Weak<Core>,
    ops: mpsc::UnboundedSender<Op>,
    /// Subscription counts not yet written: the latest per channel.
    dirty: Mutex<HashMap<AppChannel, usize>>,
    /// Set when a write failed: the next successful heartbeat reconciles.
    lost_writes: std::sync::atomic::AtomicBool,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// With `sandbox = true`: whether this node holds the lease to run the generators
    /// (one node of the cluster does).
    sandbox_lease: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// A node's contribution sets, which sweeping it empties.
#[derive(Clone, Copy)]
enum Contribution {
    /// `{p}node:{node}:members`: undone with the leave script.
    Members,
    /// `{p}node:{node}:channels`: undone by setting the node's count to 0.
    Channels,
}

fn redis_error(e: &redis::RedisError) -> String {
    crate::redact::in_text(&e.to_string(), "")
}

/// Splits `{app}:{channel}` (neither contains `:`).
fn split_channel(entry: &str) -> Option<(&str, &str)> {
    entry.split_once(':')
}

/// Splits `{app}:{channel}:{user}` (the user id may contain `:`).
fn split_member(entry: &str) -> Option<(&str, &str, &str)> {
    let (app, rest) = entry.split_once(':')?;
    let (channel, user) = rest.split_once(':')?;
    Some((app, channel, user))
}

/// Escapes Redis glob characters so `prefix` matches only itself.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

/// Members as `HGETALL` of the members hash returns them.
fn snapshot_of(pairs: Vec<(String, String)>) -> PresenceSnapshot {
    PresenceSnapshot {
        members: pairs
            .into_iter()
            .map(|(user, info)| {
                Arc::new(Member {
                    user_id: Arc::from(user),
                    user_info: if info.is_empty() {
                        None
                    } else {
                        serde_json::from_str(&info).ok()
                    },
                })
            })
            .collect(),
    }
}

impl RedisCluster {
    /// Starts the shared state of `core` on the broker's Redis and connects it to the
    /// hub. Call before the node admits connections.
    pub fn start(
        core: &Arc<Core>,
        broker: &RedisBroker,
        config: &crate::config::Config,
    ) -> Arc<RedisCluster> {
        let (ops, queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(RedisCluster {
            node: broker.node_id().clone(),
            names: broker.names().clone(),
            connection: broker.connection(),
            timeout: Duration::from_millis(config.token_store_timeout_ms),
            dead_after: Duration::from_secs(config.node_dead_after_secs),
            scripts: Scripts {
                occupancy: redis::Script::new(OCCUPANCY),
                join: redis::Script::new(JOIN),
                leave: redis::Script::new(LEAVE),
                beat: redis::Script::new(BEAT),
                claim_dead: redis::Script::new(CLAIM_DEAD),
                lease: redis::Script::new(LEASE),
                release: redis::Script::new(RELEASE),
            },
            sandbox_lease: config
                .sandbox
                .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false))),
            core: Arc::downgrade(core),
            ops,
            dirty: Mutex::new(HashMap::new()),
            lost_writes: std::sync::atomic::AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        core.set_shared_state(cluster.clone());
        let weak = Arc::downgrade(&cluster);
        let tasks = vec![
            tokio::spawn(presence_worker(weak.clone(), queue)).abort_handle(),
            tokio::spawn(flusher(weak.clone())).abort_handle(),
            tokio::spawn(liveness(weak)).abort_handle(),
        ];
        *cluster.tasks.lock() = tasks;
        // A node id may come back after a crash: whatever Redis still holds for it is
        // reconciled with this (empty) hub at once.
        let _ = cluster.ops.send(Op::Resync);
        cluster
    }

    pub fn node_id(&self) -> &Arc<str> {
        &self.node
    }

    /// With `sandbox = true`: set while this node holds the cluster's sandbox lease.
    pub fn sandbox_lease(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.sandbox_lease.clone()
    }

    /// Writes this node's connection count of every app and reads the others'.
    async fn share_connections(&self) -> Result<(), String> {
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        let apps: Vec<_> = core.apps.iter().cloned().collect();
        let mut pipe = redis::pipe();
        for app in &apps {
            let key = self.names.connections(&app.id);
            pipe.cmd("HSET")
                .arg(&key)
                .arg(&*self.node)
                .arg(app.connection_count())
                .ignore()
                .cmd("HGETALL")
                .arg(&key);
        }
        let mut connection = self.connection();
        let counts: Vec<HashMap<String, usize>> = self
            .bounded("connection counts", pipe.query_async(&mut connection))
            .await?;
        for (app, counts) in apps.iter().zip(counts) {
            let elsewhere = counts
                .iter()
                .filter(|(node, _)| **node != *self.node)
                .map(|(_, n)| *n)
                .sum();
            app.set_connections_elsewhere(elsewhere);
        }
        Ok(())
    }

    /// Takes or renews the sandbox lease.
    async fn renew_sandbox_lease(&self, lease: &std::sync::atomic::AtomicBool) {
        let mut connection = self.connection();
        let held: Result<i64, String> = self
            .bounded(
                "sandbox lease",
                self.scripts
                    .lease
                    .key(self.names.sandbox_lease())
                    .arg(&*self.node)
                    .arg(u64::try_from(SANDBOX_LEASE.as_millis()).unwrap_or(5000))
                    .invoke_async(&mut connection),
            )
            .await;
        let held = held == Ok(1);
        if lease.swap(held, std::sync::atomic::Ordering::AcqRel) != held {
            tracing::info!(node = %self.node, held, "sandbox lease");
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Queues for the presence worker the op `make` builds around a new gate, which the
    /// worker opens when done (at once if the worker is gone).
    fn queue_gated(&self, make: impl FnOnce(Arc<Gate>) -> Op) -> Arc<Gate> {
        let gate = Arc::new(Gate::new());
        if self.ops.send(make(gate.clone())).is_err() {
            gate.open();
        }
        gate
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{what}: {}", redis_error(&e))),
            Err(_) => Err(format!("{what}: no answer within {:?}", self.timeout)),
        }
    }

    fn observe(&self, app: &Arc<str>, channel: &Arc<str>, change: OccupancyChange) {
        if let Some(core) = self.core.upgrade() {
            core.hub().observe_cluster(app, channel, change);
        }
    }

    fn lost(&self, why: &str) {
        if !self
            .lost_writes
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::warn!(node = %self.node, "cluster state not written, will reconcile: {why}");
        }
    }

    /// Sets `node`'s subscription count of a channel and reports the cluster's
    /// transitions.
    async fn set_count(
        &self,
        node: &str,
        app: &Arc<str>,
        channel: &Arc<str>,
        count: usize,
    ) -> Result<(), String> {
        let mut connection = self.connection();
        let (before, after): (i64, i64) = self
            .bounded(
                "subscription count",
                self.scripts
                    .occupancy
                    .key(self.names.subscriptions(app, channel))
                    .key(self.names.occupied(app))
                    .key(self.names.node_channels(node))
                    .arg(node)
                    .arg(&**channel)
                    .arg(count)
                    .arg(format!("{app}:{channel}"))
                    .invoke_async(&mut connection),
            )
            .await?;
        if before == 0 && after > 0 {
            self.observe(app, channel, OccupancyChange::Occupied);
        } else if before > 0 && after == 0 {
            self.observe(app, channel, OccupancyChange::Vacated);
        }
        Ok(())
    }

    /// Runs the join script for this node; returns the cluster's members.
    async fn join(
        &self,
        app: &Arc<str>,
        channel: &Arc<str>,
        member: &Arc<Member>,
    ) -> Result<PresenceSnapshot, String> {
        let announcement = wire::encode(&BrokerMessage::MemberAdded {
            app_id: app.clone(),
            channel: channel.clone(),
            member: member.clone(),
        });
        let info = member
            .user_info
            .as_ref()
            .map(|info| info.to_string())
            .unwrap_or_default();
        let mut connection = self.connection();
        let (added, members): (i64, Vec<(String, String)>) = self
            .bounded(
                "presence join",
                self.scripts
                    .join
                    .key(self.names.members(app, channel))
                    .key(self.names.member_nodes(app, channel))
                    .key(self.names.node_members(&self.node))
                    .arg(&*member.user_id)
                    .arg(info)
                    .arg(format!("{app}:{channel}:{}", member.user_id))
                    .arg(self.names.channel(app, channel))
                    .arg(announcement)
                    .invoke_async(&mut connection),
            )
            .await?;
        if added == 1 {
            self.observe(
                app,
                channel,
                OccupancyChange::MemberAdded(member.user_id.clone()),
            );
        }
        Ok(snapshot_of(members))
    }

    /// Runs the leave script for `node`'s contribution.
    async fn leave(
        &self,
        node: &str,
        app: &Arc<str>,
        channel: &Arc<str>,
        user: &Arc<str>,
    ) -> Result<(), String> {
        let announcement = wire::encode(&BrokerMessage::MemberRemoved {
            app_id: app.clone(),
            channel: channel.clone(),
            user_id: user.clone(),
        });
        let mut connection = self.connection();
        let removed: i64 = self
            .bounded(
                "presence leave",
                self.scripts
                    .leave
                    .key(self.names.members(app, channel))
                    .key(self.names.member_nodes(app, channel))
                    .key(self.names.node_members(node))
                    .arg(&**user)
                    .arg(format!("{app}:{channel}:{user}"))
                    .arg(self.names.channel(app, channel))
                    .arg(announcement)
                    .invoke_async(&mut connection),
            )
            .await?;
        if removed == 1 {
            self.observe(app, channel, OccupancyChange::MemberRemoved(user.clone()));
        }
        Ok(())
    }

    async fn members_now(
        &self,
        app: &Arc<str>,
        channel: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut connection = self.connection();
        self.bounded(
            "presence members",
            redis::cmd("HGETALL")
                .arg(self.names.members(app, channel))
                .query_async(&mut connection),
        )
        .await
    }

    /// Reconciles this node's part in Redis with its hub.
    async fn resync(&self) -> Result<(), String> {
        let Some(core) = self.core.upgrade() else {
            return Ok(());
        };
        let (channels, members) = core.hub().local_state();
        let local_channels: HashSet<String> = channels
            .iter()
            .map(|(app, channel, _)| format!("{app}:{channel}"))
            .collect();
        let local_members: HashSet<String> = members
            .iter()
            .map(|(app, channel, member)| format!("{app}:{channel}:{}", member.user_id))
            .collect();
        // What Redis holds for this node but the hub no longer has.
        for entry in self
            .set_members(&self.names.node_members(&self.node))
            .await?
        {
            if local_members.contains(&entry) {
                continue;
            }
            if let Some((app, channel, user)) = split_member(&entry) {
                let (app, channel, user) = (Arc::from(app), Arc::from(channel), Arc::from(user));
                // Joined again since the hub was read: keep it.
                if core.hub().has_local_member(&app, &channel, &user) {
                    continue;
                }
                self.leave(&self.node, &app, &channel, &user).await?;
            }
        }
        for entry in self
            .set_members(&self.names.node_channels(&self.node))
            .await?
        {
            if local_channels.contains(&entry) {
                continue;
            }
            if let Some((app, channel)) = split_channel(&entry) {
                let (app, channel): (Arc<str>, Arc<str>) = (Arc::from(app), Arc::from(channel));
                let now = core.hub().channel_stats(&app, &channel).subscription_count;
                self.set_count(&self.node, &app, &channel, now).await?;
            }
        }
        // What the hub has, written again (joins are no-ops where Redis kept them).
        for (app, channel, member) in members {
            self.join(&app, &channel, &member).await?;
        }
        let mut dirty = self.dirty.lock();
        for (app, channel, count) in channels {
            dirty.entry((app, channel)).or_insert(count);
        }
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, String> {
        let mut connection = self.connection();
        self.bounded(
            "set members",
            redis::cmd("SMEMBERS").arg(key).query_async(&mut connection),
        )
        .await
    }

    /// Removes every contribution of dead node `node`, then its dead mark.
    async fn sweep_node(&self, node: &str) -> Result<(), String> {
        let removed = self.sweep_set(node, Contribution::Members).await?
            + self.sweep_set(node, Contribution::Channels).await?;
        let mut connection = self.connection();
        let mut pipe = redis::pipe();
        if let Some(core) = self.core.upgrade() {
            for app in core.apps.iter() {
                pipe.cmd("HDEL")
                    .arg(self.names.connections(&app.id))
                    .arg(node)
                    .ignore();
            }
        }
        pipe.cmd("SREM").arg(self.names.dead()).arg(node).ignore();
        let _: () = self
            .bounded("sweep", pipe.query_async(&mut connection))
            .await?;
        if removed > 0 || node != &*self.node {
            tracing::info!(node = %self.node, dead = node, removed, "swept a dead node's subscriptions and members");
        }
        Ok(())
    }

    /// Undoes every entry of one of `node`'s contribution sets, a batch at a time, until
    /// the set is empty (each undo removes its entry; an unreadable entry is dropped).
    /// Returns how many entries there were.
    async fn sweep_set(&self, node: &str, what: Contribution) -> Result<usize, String> {
        let key = match what {
            Contribution::Members => self.names.node_members(node),
            Contribution::Channels => self.names.node_channels(node),
        };
        let mut removed = 0usize;
        loop {
            let mut connection = self.connection();
            let entries: Vec<String> = self
                .bounded(
                    "sweep",
                    redis::cmd("SRANDMEMBER")
                        .arg(&key)
                        .arg(SWEEP_BATCH)
                        .query_async(&mut connection),
                )
                .await?;
            if entries.is_empty() {
                return Ok(removed);
            }
            for entry in entries {
                let undone = match what {
                    Contribution::Members => match split_member(&entry) {
                        Some((app, channel, user)) => {
                            self.leave(node, &app.into(), &channel.into(), &user.into())
                                .await?;
                            true
                        }
                        None => false,
                    },
                    Contribution::Channels => match split_channel(&entry) {
                        Some((app, channel)) => {
                            self.set_count(node, &app.into(), &channel.into(), 0)
                                .await?;
                            true
                        }
                        None => false,
                    },
                };
                if !undone {
                    let _: () = self
                        .bounded(
                            "sweep",
                            redis::cmd("SREM")
                                .arg(&key)
                                .arg(&entry)
                                .query_async(&mut connection),
                        )
                        .await?;
                }
                removed += 1;
            }
        }
    }

    /// Leaves the cluster on shutdown: this node's contributions are removed now rather
    /// than after `node_dead_after_secs`.
    pub async fn leave_cluster(&self, deadline: tokio::time::Instant) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let leaving = async {
            if self.sandbox_lease.is_some() {
                let mut connection = self.connection();
                let _: i64 = self
                    .scripts
                    .release
                    .key(self.names.sandbox_lease())
                    .arg(&*self.node)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| redis_error(&e))?;
            }
            let mut connection = self.connection();
            let _: () = redis::pipe()
                .atomic()
                .cmd("ZREM")
                .arg(self.names.nodes())
                .arg(&*self.node)
                .ignore()
                .cmd("SADD")
                .arg(self.names.dead())
                .arg(&*self.node)
                .ignore()
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(&e))?;
            self.sweep_node(&self.node).await
        };
        match tokio::time::timeout_at(deadline, leaving).await {
            Ok(Ok(())) => tracing::info!(node = %self.node, "left the cluster"),
            Ok(Err(e)) => {
                tracing::warn!(node = %self.node, "could not leave the cluster cleanly: {e}")
            }
            Err(_) => tracing::warn!(node = %self.node, "could not leave the cluster in time"),
        }
    }
}

/// The view a gate opens with: the cluster's members, and the cached event `after` got.
fn view(after: &Gate, presence: Option<PresenceSnapshot>) -> ClusterView {
    ClusterView {
        presence,
        cache: after.view().and_then(|v| v.cache.clone()),
    }
}

async fn presence_worker(cluster: Weak<RedisCluster>, mut queue: mpsc::UnboundedReceiver<Op>) {
    while let Some(op) = queue.recv().await {
        let Some(this) = cluster.upgrade() else {
            return;
        };
        match op {
            Op::Join {
                app,
                channel,
                member,
                after,
                gate,
            } => {
                let _ = tokio::time::timeout(GATE_TIMEOUT, after.opened()).await;
                match this.join(&app, &channel, &member).await {
                    Ok(members) => gate.open_with(view(&after, Some(members))),
                    Err(e) => {
                        this.lost(&e);
                        gate.open_with(view(&after, None));
                    }
                }
            }
            Op::Members {
                app,
                channel,
                after,
                gate,
            } => {
                let _ = tokio::time::timeout(GATE_TIMEOUT, after.opened()).await;
                match this.members_now(&app, &channel).await {
                    Ok(members) => gate.open_with(view(&after, Some(snapshot_of(members)))),
                    Err(e) => {
                        tracing::debug!(node = %this.node, "presence members not read: {e}");
                        gate.open_with(view(&after, None));
                    }
                }
            }
            Op::Leave { app, channel, user } => {
                if let Err(e) = this.leave(&this.node, &app, &channel, &user).await {
                    this.lost(&e);
                }
            }
            Op::Resync => {
                this.lost_writes
                    .store(false, std::sync::atomic::Ordering::Release);
                match this.resync().await {
                    Ok(()) => tracing::debug!(node = %this.node, "cluster state reconciled"),
                    Err(e) => this.lost(&e),
                }
            }
        }
    }
}

async fn flusher(cluster: Weak<RedisCluster>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(this) = cluster.upgrade() else {
            return;
        };
        let pending = std::mem::take(&mut *this.dirty.lock());
        if pending.is_empty() {
            continue;
        }
        let writes = pending.iter().map(|((app, channel), count)| {
            let this = &this;
            async move { this.set_count(&this.node, app, channel, *count).await }
        });
        for result in futures_util::future::join_all(writes).await {
            if let Err(e) = result {
                this.lost(&e);
            }
        }
    }
}

async fn liveness(cluster: Weak<RedisCluster>) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<tokio::time::Instant> = None;
    loop {
        sweep.tick().await;
        let Some(this) = cluster.upgrade() else {
            return;
        };
        let beat_every =
            (this.dead_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let lost = this.lost_writes.load(std::sync::atomic::Ordering::Acquire);
        if lost || last_beat.is_none_or(|at| at.elapsed() >= beat_every) {
            let mut connection = this.connection();
            let beat: Result<i64, String> = this
                .bounded(
                    "heartbeat",
                    this.scripts
                        .beat
                        .key(this.names.nodes())
                        .key(this.names.dead())
                        .arg(&*this.node)
                        .invoke_async(&mut connection),
                )
                .await;
            match beat {
                Ok(1) if last_beat.is_some() => {
                    tracing::warn!(node = %this.node, "this node was missing from the cluster: writing its state again");
                    let _ = this.ops.send(Op::Resync);
                    last_beat = Some(tokio::time::Instant::now());
                }
                Ok(-1) => {
                    // Being swept as dead: beat again (and rejoin) once that is over.
                    last_beat = Some(tokio::time::Instant::now() - beat_every);
                    this.lost_writes
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                Ok(_) => {
                    if lost {
                        let _ = this.ops.send(Op::Resync);
                    }
                    last_beat = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::debug!(node = %this.node, "heartbeat failed: {e}"),
            }
        }
        if let Err(e) = this.share_connections().await {
            tracing::debug!(node = %this.node, "connection counts not shared: {e}");
        }
        if let Some(lease) = &this.sandbox_lease {
            this.renew_sandbox_lease(lease).await;
        }
        let mut connection = this.connection();
        let dead_ms = u64::try_from(this.dead_after.as_millis()).unwrap_or(u64::MAX);
        let dead: Result<Vec<String>, String> = this
            .bounded(
                "sweep",
                this.scripts
                    .claim_dead
                    .key(this.names.nodes())
                    .key(this.names.dead())
                    .arg(dead_ms)
                    .invoke_async(&mut connection),
            )
            .await;
        if let Ok(dead) = dead {
            for node in dead {
                if let Err(e) = this.sweep_node(&node).await {
                    tracing::debug!(node = %this.node, dead = %node, "sweep interrupted: {e}");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl SharedState for RedisCluster {
    fn subscriptions_changed(&self, app: &Arc<str>, channel: &Arc<str>, local: usize) {
        self.dirty
            .lock()
            .insert((app.clone(), channel.clone()), local);
    }

    fn member_joined(
        &self,
        app: &Arc<str>,
        channel: &Arc<str>,
        member: Arc<Member>,
        after: Arc<Gate>,
    ) -> Arc<Gate> {
        self.queue_gated(|gate| Op::Join {
            app: app.clone(),
            channel: channel.clone(),
            member,
            after,
            gate,
        })
    }

    fn members(&self, app: &Arc<str>, channel: &Arc<str>, after: Arc<Gate>) -> Arc<Gate> {
        self.queue_gated(|gate| Op::Members {
            app: app.clone(),
            channel: channel.clone(),
            after,
            gate,
        })
    }

    fn member_left(&self, app: &Arc<str>, channel: &Arc<str>, user: &Arc<str>) {
        let _ = self.ops.send(Op::Leave {
            app: app.clone(),
            channel: channel.clone(),
            user: user.clone(),
        });
    }

    async fn channel_stats(&self, app: &Arc<str>, channel: &str) -> Result<ChannelStats, String> {
        let mut connection = self.connection();
        let cache_key = self.names.cache(app, channel);
        let (total, users, cached, ttl_ms): (Option<i64>, i64, Option<Vec<u8>>, i64) = self
            .bounded(
                "channel stats",
                redis::pipe()
                    .cmd("HGET")
                    .arg(self.names.occupied(app))
                    .arg(channel)
                    .cmd("HLEN")
                    .arg(self.names.members(app, channel))
                    .cmd("GET")
                    .arg(&cache_key)
                    .cmd("PTTL")
                    .arg(&cache_key)
                    .query_async(&mut connection),
            )
            .await?;
        let cache = match cached {
            Some(bytes) if is_cache_channel(channel) && ttl_ms > 0 => match wire::decode(&bytes) {
                Ok(BrokerMessage::Publication(last)) => Some((
                    last,
                    Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
                )),
                _ => None,
            },
            _ => None,
        };
        Ok(ChannelStats {
            subscription_count: usize::try_from(total.unwrap_or(0)).unwrap_or(0),
            user_count: usize::try_from(users).unwrap_or(0),
            cache,
        })
    }

    async fn occupied_channels(
        &self,
        app: &Arc<str>,
        prefix: &str,
    ) -> Result<Vec<(Arc<str>, ChannelStats)>, String> {
        let mut connection = self.connection();
        let pattern = glob_escape(prefix);
        let mut cursor: u64 = 0;
        let mut found: Vec<(String, i64)> = Vec::new();
        loop {
            let (next, page): (u64, Vec<(String, i64)>) = self
                .bounded(
                    "occupied channels",
                    redis::cmd("HSCAN")
                        .arg(self.names.occupied(app))
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut connection),
                )
                .await?;
            found.extend(page.into_iter().filter(|(_, n)| *n > 0));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        found.sort();
        found.dedup_by(|a, b| a.0 == b.0);
        let presence: Vec<&String> = found
            .iter()
            .map(|(name, _)| name)
            .filter(|name| is_presence_channel(name))
            .collect();
        let mut user_counts: HashMap<&str, i64> = HashMap::new();
        if !presence.is_empty() {
            let mut pipe = redis::pipe();
            for name in &presence {
                pipe.cmd("HLEN").arg(self.names.members(app, name));
            }
            let counts: Vec<i64> = self
                .bounded("user counts", pipe.query_async(&mut connection))
                .await?;
            for (name, count) in presence.iter().zip(counts) {
                user_counts.insert(name.as_str(), count);
            }
        }
        Ok(found
            .iter()
            .map(|(name, total)| {
                let users = user_counts.get(name.as_str()).copied().unwrap_or(0);
                (
                    Arc::from(name.as_str()),
                    ChannelStats {
                        subscription_count: usize::try_from(*total).unwrap_or(0),
                        user_count: usize::try_from(users).unwrap_or(0),
                        cache: None,
                    },
                )
            })
            .collect())
    }

    async fn presence_members(
        &self,
        app: &Arc<str>,
        channel: &str,
    ) -> Result<Vec<Arc<str>>, String> {
        let mut connection = self.connection();
        let mut users: Vec<String> = self
            .bounded(
                "presence members",
                redis::cmd("HKEYS")
                    .arg(self.names.members(app, channel))
                    .query_async(&mut connection),
            )
            .await?;
        users.sort();
        Ok(users.into_iter().map(Arc::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_where_names_cannot_hold_a_colon() {
        assert_eq!(split_channel("1:presence-x"), Some(("1", "presence-x")));
        assert_eq!(
            split_member("1:presence-x:user:with:colons"),
            Some(("1", "presence-x", "user:with:colons"))
        );
        assert_eq!(split_member("1:presence-x"), None);
    }

    #[test]
    fn a_prefix_matches_only_itself() {
        assert_eq!(glob_escape("presence-"), "presence-*");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
