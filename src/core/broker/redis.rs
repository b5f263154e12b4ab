//! The Redis broker: every node of a cluster hears what any node publishes.
//!
//! A publication goes out with one `PUBLISH` on its channel's Pub/Sub channel,
//! `{prefix}{app}:ch:{channel}`, and comes back to every node listening there, the
//! publishing node included: every node, this one too, delivers what Redis hands it, in
//! the order Redis received it, so all nodes see one order per channel. Node-wide
//! commands (terminate a user, close a credential's connections, ...) travel on
//! `{prefix}control`, which every node listens to.
//!
//! A node listens (`SUBSCRIBE`) only to the channels it has subscribers on: the hub says
//! when a channel gains its first local subscriber or loses its last
//! ([`ChannelInterest`]), so the traffic a node receives scales with its own channels, not
//! with the cluster's. Listening takes a round trip; the hub holds a new subscriber's
//! `Subscribed` frame behind a [`Gate`] until Redis confirms, so nothing published after
//! the client is told "subscribed" can pass it by.
//!
//! One task owns the Pub/Sub connection ([`listen`]): it connects, subscribes to the
//! control channel and to every wanted channel, then reads messages, applies the hub's
//! changes and pings. When the connection is lost it marks the broker not ready
//! (`/readyz` 503 with the reason, publishes refused with 503 so nothing is accepted
//! and then lost), reconnects with back-off and subscribes to everything again; connected
//! sockets stay open throughout. Publishing uses a separate multiplexed connection
//! (pipelined, bounded in time).
//!
//! A cache channel's last event is kept in Redis too (`{prefix}{app}:cache:{channel}`,
//! expiring after `cache_ttl_secs`), written in the same transaction as the `PUBLISH`, so
//! a subscriber on any node gets the cluster's last event.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc};

use super::{Broker, BrokerError, BrokerMessage, BrokerSink, ChannelInterest, wire};
use crate::core::channel::is_cache_channel;
use crate::core::gate::{ClusterView, GATE_TIMEOUT, Gate};
use crate::core::outbox::CacheState;

/// Reconnection attempts of the publishing connection before a command fails.
const RECONNECT_RETRIES: usize = 1;
/// The longest pause between two reconnections of the Pub/Sub connection.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the Pub/Sub connection is pinged (a silent, half-open link is noticed
/// within this plus the timeout).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Channels named in one `SUBSCRIBE` / `UNSUBSCRIBE`.
const CHUNK: usize = 512;
/// Hub changes applied in one round trip, at most.
const BATCH: usize = 4096;

/// What the broker needs from the configuration.
#[derive(Debug, Clone)]
pub struct RedisBrokerSettings {
    pub url: String,
    pub prefix: String,
    pub node_id: Arc<str>,
    /// Connect and reply timeout of every Redis call.
    pub timeout: Duration,
    /// How long a cache channel's last event is kept.
    pub cache_ttl: Duration,
}

impl RedisBrokerSettings {
    pub fn from_config(config: &crate::config::Config, node_id: Arc<str>) -> Option<Self> {
        Some(RedisBrokerSettings {
            url: config.redis_url.clone()?,
            prefix: config.redis_prefix.clone(),
            node_id,
            timeout: Duration::from_millis(config.token_store_timeout_ms),
            cache_ttl: Duration::from_secs(config.cache_ttl_secs),
        })
    }
}

/// Names of the broker's keys and Pub/Sub channels (the layout is in ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Pub/Sub channel of node-wide commands.
    pub fn control(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// The Pub/Sub channel of one channel's publications.
    pub fn channel(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:ch:{channel}", self.prefix)
    }

    /// A cache channel's last event.
    pub fn cache(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:cache:{channel}", self.prefix)
    }

    /// Hash: node → that node's subscriptions of the channel.
    pub fn subscriptions(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:subs:{channel}", self.prefix)
    }

    /// Hash: channel → the cluster's subscriptions of it (occupied channels only).
    pub fn occupied(&self, app: &str) -> String {
        format!("{}{app}:occupied", self.prefix)
    }

    /// Hash: user id → `user_info` JSON (`""` for none) of a presence channel's members.
    pub fn members(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:members:{channel}", self.prefix)
    }

    /// Hash: user id → how many nodes have a socket of that member in the channel.
    pub fn member_nodes(&self, app: &str, channel: &str) -> String {
        format!("{}{app}:member-nodes:{channel}", self.prefix)
    }

    /// Sorted set: node id → its last heartbeat (Redis time, ms).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Hash: node → its connections of the app (connection limits across nodes).
    pub fn connections(&self, app: &str) -> String {
        format!("{}{app}:connections", self.prefix)
    }

    /// String: the node that runs the sandbox generators, expiring unless renewed.
    pub fn sandbox_lease(&self) -> String {
        format!("{}sandbox-lease", self.prefix)
    }

    /// Set: nodes taken for dead whose contributions are being removed.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }

    /// Set: `{app}:{channel}` of each channel `node` counts subscriptions in.
    pub fn node_channels(&self, node: &str) -> String {
        format!("{}node:{node}:channels", self.prefix)
    }

    /// Set: `{app}:{channel}:{user}` of each presence member `node` has a socket of.
    pub fn node_members(&self, node: &str) -> String {
        format!("{}node:{node}:members", self.prefix)
    }
}

/// The Pub/Sub link's health, shared by the listening task and the broker.
struct Link {
    ready: AtomicBool,
    problem: Mutex<Option<String>>,
    changed: Notify,
    ready_gauge: metrics::Gauge,
}

impl Link {
    fn up(&self) {
        *self.problem.lock() = None;
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.ready_gauge.set(1.0);
            self.changed.notify_waiters();
        }
    }

    fn down(&self, node: &str, why: String) {
        let was_ready = self.ready.swap(false, Ordering::AcqRel);
        let repeated = self.problem.lock().as_deref() == Some(why.as_str());
        if was_ready || !repeated {
            tracing::warn!(node, "Redis broker unavailable: {why}");
        }
        *self.problem.lock() = Some(why);
        self.ready_gauge.set(0.0);
        self.changed.notify_waiters();
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A change the hub asked for, in the order it asked.
enum Change {
    Listen(String, Arc<Gate>),
    Stop(String),
}

/// The hub's side of the broker: queues listen/stop changes for the listening task, and
/// reads cached events for new subscribers.
struct Interest {
    changes: mpsc::UnboundedSender<Change>,
    names: Names,
    connection: ConnectionManager,
    timeout: Duration,
}

impl ChannelInterest for Interest {
    fn occupied(&self, app: &Arc<str>, channel: &Arc<str>) -> Arc<Gate> {
        let gate = Arc::new(Gate::new());
        let listen = Change::Listen(self.names.channel(app, channel), gate.clone());
        if self.changes.send(listen).is_err() {
            gate.open();
        }
        gate
    }

    fn vacated(&self, app: &Arc<str>, channel: &Arc<str>) {
        let _ = self
            .changes
            .send(Change::Stop(self.names.channel(app, channel)));
    }

    fn cached_event(
        &self,
        app: &Arc<str>,
        channel: &Arc<str>,
        listening: Arc<Gate>,
        narrowed_to: Option<Arc<str>>,
    ) -> Arc<Gate> {
        let gate = Arc::new(Gate::new());
        let key = self.names.cache(app, channel);
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        let opened = gate.clone();
        tokio::spawn(async move {
            // Read after the node listens: an event published later arrives as a
            // publication, behind this frame (at worst once more, never lost).
            let _ = tokio::time::timeout(GATE_TIMEOUT, listening.opened()).await;
            let read = tokio::time::timeout(timeout, async {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut connection)
                    .await
            })
            .await;
            let cache = match read {
                Ok(Ok(Some(bytes))) => match wire::decode(&bytes) {
                    Ok(BrokerMessage::Publication(last))
                        if narrowed_to
                            .as_deref()
                            .is_none_or(|user| last.audience.reaches(user)) =>
                    {
                        CacheState::Hit(last)
                    }
                    _ => CacheState::Miss,
                },
                Ok(Ok(None)) => CacheState::Miss,
                // Redis unreachable: no cached event can be vouched for.
                _ => CacheState::Miss,
            };
            opened.open_with(ClusterView {
                presence: None,
                cache: Some(cache),
            });
        });
        gate
    }
}

pub struct RedisBroker {
    node_id: Arc<str>,
    url: String,
    names: Names,
    publisher: ConnectionManager,
    link: Arc<Link>,
    interest: Arc<Interest>,
    timeout: Duration,
    cache_ttl_ms: u64,
    listener: tokio::task::AbortHandle,
    /// Publications with a position went out with the history script.
    history_publishes: bool,
    published: metrics::Counter,
    failed: metrics::Counter,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A broker connected for publishing, not yet listening (see [`RedisBroker::start`]).
pub struct Connected {
    settings: RedisBrokerSettings,
    client: redis::Client,
    publisher: ConnectionManager,
}

/// An error that may quote the URL, with its secret parts masked.
fn scrubbed(url: &str, e: &redis::RedisError) -> String {
    crate::redact::in_text(&e.to_string(), url)
}

impl RedisBroker {
    /// Opens the publishing connection; fails if Redis does not answer within the
    /// timeout (start-up then fails, as it does for the token store).
    pub async fn connect(settings: RedisBrokerSettings) -> Result<Connected, BrokerError> {
        let limits = crate::redis_client::Limits {
            timeout: settings.timeout,
            retries: RECONNECT_RETRIES,
            max_delay: MAX_BACKOFF,
            connect_within: settings.timeout.max(Duration::from_secs(1)),
        };
        let (client, publisher) = crate::redis_client::connect(&settings.url, limits)
            .await
            .map_err(BrokerError::Unavailable)?;
        Ok(Connected {
            settings,
            client,
            publisher,
        })
    }
}

impl Connected {
    /// The publishing connection (cheap to clone), for what shares it (Redis history).
    pub fn connection(&self) -> ConnectionManager {
        self.publisher.clone()
    }

    /// Starts listening, delivering to `sink`. The broker is ready once the control
    /// channel is subscribed ([`RedisBroker::wait_ready`]). With `history_publishes`,
    /// a publication that has a stream position was published by the Redis history's
    /// script (in offset order) and is not published again.
    pub fn start(self, sink: Arc<dyn BrokerSink>, history_publishes: bool) -> Arc<RedisBroker> {
        let Connected {
            settings,
            client,
            publisher,
        } = self;
        let names = Names::new(&settings.prefix);
        let node = settings.node_id.clone();
        let link = Arc::new(Link {
            ready: AtomicBool::new(false),
            problem: Mutex::new(Some("connecting".into())),
            changed: Notify::new(),
            ready_gauge: metrics::gauge!("payrelay_broker_ready"),
        });
        let (changes, wanted) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen(Listener {
            client,
            publisher: publisher.clone(),
            url: settings.url.clone(),
            names: names.clone(),
            node: node.clone(),
            link: link.clone(),
            sink,
            timeout: settings.timeout,
            changes: wanted,
        }))
        .abort_handle();
        tracing::info!(node = %node, prefix = %names.prefix(), "Redis broker started");
        Arc::new(RedisBroker {
            node_id: node,
            url: settings.url.clone(),
            interest: Arc::new(Interest {
                changes,
                names: names.clone(),
                connection: publisher.clone(),
                timeout: settings.timeout,
            }),
            names,
            publisher,
            link,
            timeout: settings.timeout,
            cache_ttl_ms: u64::try_from(settings.cache_ttl.as_millis()).unwrap_or(u64::MAX),
            listener,
            history_publishes,
            published: metrics::counter!("payrelay_broker_published_total"),
            failed: metrics::counter!("payrelay_broker_publish_failures_total"),
        })
    }
}

impl RedisBroker {
    /// Waits until the broker listens (or `within` passes); says why not.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.link.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.link.is_ready() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(BrokerError::Unavailable(
                    self.problem().unwrap_or_else(|| "not ready".into()),
                ));
            }
        }
    }

    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// The key and channel names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// A handle on the multiplexed command connection (cheap to clone).
    pub fn connection(&self) -> ConnectionManager {
        self.publisher.clone()
    }

    async fn send(&self, message: &BrokerMessage) -> Result<(), redis::RedisError> {
        let payload = wire::encode(message);
        let mut connection = self.publisher.clone();
        match message {
            BrokerMessage::Publication(p) if is_cache_channel(&p.channel) && !p.relay_only => {
                // The last event and its delivery in one transaction: a subscriber that
                // reads the cache after listening never misses the newest.
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(self.names.cache(&p.app_id, &p.channel))
                    .arg(&payload)
                    .arg("PX")
                    .arg(self.cache_ttl_ms.max(1))
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(self.names.channel(&p.app_id, &p.channel))
                    .arg(&payload)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            }
            BrokerMessage::Publication(p) => {
                redis::cmd("PUBLISH")
                    .arg(self.names.channel(&p.app_id, &p.channel))
                    .arg(&payload)
                    .query_async::<()>(&mut connection)
                    .await
            }
            _ => {
                redis::cmd("PUBLISH")
                    .arg(self.names.control())
                    .arg(&payload)
                    .query_async::<()>(&mut connection)
                    .await
            }
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<(), BrokerError> {
        if let BrokerMessage::Publication(p) = &message
            && self.history_publishes
            && p.position().is_some()
        {
            self.published.increment(1);
            return Ok(());
        }
        if !self.link.is_ready() {
            self.failed.increment(1);
            return Err(BrokerError::Unavailable(
                self.problem().unwrap_or_else(|| "not ready".into()),
            ));
        }
        match tokio::time::timeout(self.timeout, self.send(&message)).await {
            Ok(Ok(())) => {
                self.published.increment(1);
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed.increment(1);
                Err(BrokerError::Unavailable(format!(
                    "Redis: {}",
                    scrubbed(&self.url, &e)
                )))
            }
            Err(_) => {
                self.failed.increment(1);
                Err(BrokerError::Unavailable(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn is_ready(&self) -> bool {
        self.link.is_ready()
    }

    fn problem(&self) -> Option<String> {
        if self.link.is_ready() {
            None
        } else {
            Some(
                self.link
                    .problem
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "not ready".into()),
            )
        }
    }

    fn interest(&self) -> Option<Arc<dyn ChannelInterest>> {
        Some(self.interest.clone())
    }
}

/// Everything the listening task owns.
struct Listener {
    client: redis::Client,
    /// The publishing connection, checked before the link is declared up again.
    publisher: ConnectionManager,
    /// For scrubbing errors that may quote it.
    url: String,
    names: Names,
    node: Arc<str>,
    link: Arc<Link>,
    sink: Arc<dyn BrokerSink>,
    timeout: Duration,
    changes: mpsc::UnboundedReceiver<Change>,
}

/// The channels this node wants, as the hub's changes say.
#[derive(Default)]
struct Wanted {
    channels: HashSet<String>,
}

impl Wanted {
    /// Applies up to [`BATCH`] queued changes (the first is `first`); returns the
    /// channels they touched and the gates to open once Redis has applied them.
    fn apply(
        &mut self,
        first: Change,
        more: &mut mpsc::UnboundedReceiver<Change>,
    ) -> (Vec<String>, Vec<Arc<Gate>>) {
        let mut touched = Vec::new();
        let mut gates = Vec::new();
        let mut next = Some(first);
        while let Some(change) = next.take() {
            match change {
                Change::Listen(channel, gate) => {
                    self.channels.insert(channel.clone());
                    touched.push(channel);
                    gates.push(gate);
                }
                Change::Stop(channel) => {
                    self.channels.remove(&channel);
                    touched.push(channel);
                }
            }
            if touched.len() < BATCH {
                next = more.try_recv().ok();
            }
        }
        (touched, gates)
    }
}

fn open_all(gates: Vec<Arc<Gate>>) {
    for gate in gates {
        gate.open();
    }
}

/// The listening task: connect, subscribe, read; on any failure mark the link down,
/// back off and start over, subscribing to everything wanted again.
async fn listen(mut this: Listener) {
    let mut wanted = Wanted::default();
    let mut backoff = Duration::from_millis(50);
    let reconnects = metrics::counter!("payrelay_broker_reconnects_total");
    let received = metrics::counter!("payrelay_broker_messages_in_total");
    let unreadable = metrics::counter!("payrelay_broker_unreadable_messages_total");
    let subscribed = metrics::gauge!("payrelay_broker_subscribed_channels");
    let mut first = true;
    loop {
        if !first {
            reconnects.increment(1);
        }
        first = false;
        let why = match connect_and_subscribe(&this, &wanted).await {
            Ok((mut sink, mut stream)) => {
                backoff = Duration::from_millis(50);
                let mut active: HashSet<String> = wanted.channels.clone();
                subscribed.set(active.len() as f64);
                this.link.up();
                tracing::info!(node = %this.node, channels = active.len(), "Redis broker listening");
                let mut ping = tokio::time::interval(PING_INTERVAL);
                ping.tick().await;
                loop {
                    tokio::select! {
                        message = stream.next() => {
                            let Some(message) = message else {
                                break "the Pub/Sub connection was closed".to_string();
                            };
                            received.increment(1);
                            match wire::decode(message.get_payload_bytes()) {
                                Ok(message) => this.sink.deliver(message),
                                Err(e) => {
                                    unreadable.increment(1);
                                    tracing::warn!(node = %this.node, "unreadable broker message: {e}");
                                }
                            }
                        }
                        change = this.changes.recv() => {
                            let Some(change) = change else { return };
                            let (touched, gates) = wanted.apply(change, &mut this.changes);
                            let result = sync(&mut sink, &wanted, &mut active, touched, this.timeout)
                                .await
                                .map_err(|e| crate::redact::in_text(&e, &this.url));
                            subscribed.set(active.len() as f64);
                            open_all(gates);
                            if let Err(why) = result {
                                break why;
                            }
                        }
                        _ = ping.tick() => {
                            match tokio::time::timeout(this.timeout, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => break format!("ping failed: {}", scrubbed(&this.url, &e)),
                                Err(_) => break format!("no answer to a ping within {:?}", this.timeout),
                            }
                        }
                    }
                }
            }
            Err(why) => why,
        };
        this.link.down(&this.node, why);
        subscribed.set(0.0);
        // While down, the hub's changes still update what is wanted (and their gates
        // open at once: publishing is refused until the link is back).
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                change = this.changes.recv() => {
                    let Some(change) = change else { return };
                    let (_, gates) = wanted.apply(change, &mut this.changes);
                    open_all(gates);
                }
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens the Pub/Sub connection and subscribes to the control channel and everything
/// wanted.
async fn connect_and_subscribe(
    this: &Listener,
    wanted: &Wanted,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
    let url = &this.url;
    let pubsub = match tokio::time::timeout(this.timeout, this.client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return Err(format!("cannot connect: {}", scrubbed(url, &e))),
        Err(_) => return Err(format!("no answer within {:?}", this.timeout)),
    };
    // The publishing connection learns of a lost connection on its next command, which
    // then fails: have it find out now, before publishes are accepted again.
    let mut publisher = this.publisher.clone();
    let mut tries = 0;
    loop {
        let ping = tokio::time::timeout(this.timeout, async {
            redis::cmd("PING")
                .query_async::<redis::Value>(&mut publisher)
                .await
        });
        match ping.await {
            Ok(Ok(_)) => break,
            Ok(Err(e)) if tries >= 3 => {
                return Err(format!(
                    "the publishing connection fails: {}",
                    scrubbed(url, &e)
                ));
            }
            Err(_) if tries >= 3 => {
                return Err(format!(
                    "the publishing connection does not answer within {:?}",
                    this.timeout
                ));
            }
            _ => tries += 1,
        }
    }
    let (mut sink, stream) = pubsub.split();
    let mut all: Vec<&str> = vec![];
    let control = this.names.control();
    all.push(&control);
    all.extend(wanted.channels.iter().map(String::as_str));
    for chunk in all.chunks(CHUNK) {
        bounded("SUBSCRIBE", this.timeout, sink.subscribe(chunk))
            .await
            .map_err(|e| crate::redact::in_text(&e, url))?;
    }
    Ok((sink, stream))
}

/// Brings the connection's subscriptions in line with `wanted` for the touched channels.
async fn sync(
    sink: &mut redis::aio::PubSubSink,
    wanted: &Wanted,
    active: &mut HashSet<String>,
    touched: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    let mut start = Vec::new();
    let mut stop = Vec::new();
    let mut seen = HashSet::new();
    for channel in touched {
        if !seen.insert(channel.clone()) {
            continue;
        }
        match (
            wanted.channels.contains(&channel),
            active.contains(&channel),
        ) {
            (true, false) => start.push(channel),
            (false, true) => stop.push(channel),
            _ => {}
        }
    }
    for chunk in start.chunks(CHUNK) {
        bounded("SUBSCRIBE", timeout, sink.subscribe(chunk)).await?;
        active.extend(chunk.iter().cloned());
    }
    for chunk in stop.chunks(CHUNK) {
        bounded("UNSUBSCRIBE", timeout, sink.unsubscribe(chunk)).await?;
        for channel in chunk {
            active.remove(channel);
        }
    }
    Ok(())
}

/// Runs a Pub/Sub command within `timeout`; says what failed (the error may quote the
/// URL: callers scrub it).
async fn bounded(
    command: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{command} failed: {e}")),
        Err(_) => Err(format!("no answer to {command} within {timeout:?}")),
    }
}
