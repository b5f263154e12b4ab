//! Running a node: bind, serve, shut down gracefully.
//!
//! Shutdown order: stop accepting, tell every client to reconnect (each adapter sends its
//! protocol's "reconnect" close after writing what it had queued), wait for the sockets to
//! close, and give up after `shutdown_timeout_secs` so the process always exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::RedisCluster;
use crate::config::Config;
use crate::core::Core;
use crate::http::{self, HttpState};
use crate::listener::tls::{Reloader, Tls, TlsFiles};
use crate::listener::{self, ListenerSettings};
use crate::sandbox::Sandbox;
use crate::telemetry;

/// Pending connections the kernel holds for us; load tests open thousands at once.
const LISTEN_BACKLOG: u32 = 4096;
/// How often expired cache-channel events are dropped.
const CACHE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often history drops expired events and enforces `history_max_bytes`.
const HISTORY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct Server {
    /// The cluster's shared state, when the node is a cluster member.
    cluster: Option<Arc<RedisCluster>>,
    listener: TcpListener,
    local_addr: SocketAddr,
    core: Arc<Core>,
    state: HttpState,
    sandbox: Option<Sandbox>,
    listener_settings: ListenerSettings,
    tls: Option<Arc<Tls>>,
    tls_reloader: Option<Reloader>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long start-up waits for the Redis broker to listen.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(5);

/// The core with the broker the configuration asks for: Redis when `redis_url` is set
/// (the node is a cluster member), else the in-process one.
async fn build_core(config: &Config) -> anyhow::Result<(Arc<Core>, Option<Arc<RedisCluster>>)> {
    use crate::core::broker::redis::{RedisBroker, RedisBrokerSettings};
    let node = crate::core::NodeSettings::from_config(config);
    let Some(settings) = RedisBrokerSettings::from_config(config, node.node_id.clone()) else {
        let core = Core::with_broker(config, node, |sink| {
            Arc::new(crate::core::InProcessBroker::new(sink))
        });
        return Ok((core, None));
    };
    let connected = RedisBroker::connect(settings)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect the Redis broker: {e}"))?;
    // Channel streams live in Redis too, appended and published by one script.
    let history = Arc::new(crate::cluster::history::RedisHistory::new(
        crate::core::broker::redis::Names::new(&config.redis_prefix),
        connected.connection(),
        Duration::from_millis(config.token_store_timeout_ms),
        Duration::from_secs(config.cache_ttl_secs),
    ));
    let mut started = None;
    let core = Core::with_broker_and_history(
        config,
        node,
        |sink| {
            let broker = connected.start(sink, true);
            started = Some(broker.clone());
            broker
        },
        history,
    );
    let Some(broker) = started else {
        anyhow::bail!("the Redis broker was not built");
    };
    broker
        .wait_ready(BROKER_START_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("the Redis broker cannot listen: {e}"))?;
    let cluster = RedisCluster::start(&core, &broker, config);
    Ok((core, Some(cluster)))
}

impl Server {
    /// Builds the node and binds its listener (port 0 picks a free port).
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let prometheus = telemetry::prometheus();
        let (core, cluster) = build_core(&config).await?;
        tracing::info!(
            node = %core.settings.node_id,
            broker = core.broker().name(),
            "node starting"
        );
        let listener =
            listen(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
        let local_addr = listener.local_addr()?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                Some(Arc::new(
                    Tls::load(files).context("cannot load the TLS certificate")?,
                ))
            }
            _ => None,
        };
        // Store errors may quote `database_url` (sqlx echoes its parameters): they are
        // reported with its secret parts masked.
        let db_url = &config.database_url;
        let scrubbed = |e: anyhow::Error| crate::redact::in_text(&format!("{e:#}"), db_url);
        let db = crate::db::Db::open(db_url).await.map_err(|e| {
            let url = crate::redact::url(db_url);
            anyhow::anyhow!("cannot open the database {url}: {}", scrubbed(e.into()))
        })?;
        let merchants = crate::merchants::Merchants::open(&config, &db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot load the merchant settings: {}", scrubbed(e)))?;
        let tokens = crate::tokens::open(&config, &db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the access-token store: {}", scrubbed(e)))?;
        let webhooks = crate::webhooks::Webhooks::start(&config, &db, &core)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the webhook outbox: {}", scrubbed(e)))?;
        crate::webhooks::pusher::start(&webhooks, &core);
        let payloads = crate::payloads::Payloads::start(&config, &db, &core);
        let idempotency = crate::idempotency::Idempotency::from_config(&config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the idempotency store: {e}"))?;
        let state = HttpState {
            core: core.clone(),
            tracker: TaskTracker::new(),
            prometheus,
            merchants,
            tokens,
            client_addr: Arc::new(http::client_addr::ClientAddr::from_config(&config)),
            socketio: Default::default(),
            webhooks,
            payloads,
            idempotency: Arc::new(idempotency),
        };
        if config.sandbox {
            tracing::warn!("sandbox mode: serving test-channel and simulated exchange rates");
        }
        Ok(Server {
            cluster,
            listener,
            local_addr,
            core,
            state,
            sandbox: Sandbox::from_config(&config),
            listener_settings: ListenerSettings::from_config(&config),
            tls_reloader: tls
                .as_ref()
                .map(|tls| tls.reloader(Duration::from_secs(config.tls_reload_interval_secs))),
            tls,
        })
    }

    pub fn merchants(&self) -> &crate::merchants::Merchants {
        &self.state.merchants
    }

    pub fn webhooks(&self) -> &Arc<crate::webhooks::Webhooks> {
        &self.state.webhooks
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Whether the node serves TLS (`tls_cert_file` / `tls_key_file`).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            cluster,
            listener,
            core,
            state,
            sandbox,
            listener_settings,
            tls,
            tls_reloader,
            ..
        } = self;
        let tracker = state.tracker.clone();
        let socketio = state.socketio.clone();
        let webhooks = state.webhooks.clone();
        let payloads = state.payloads.clone();
        let stop_accepting = CancellationToken::new();
        let mut serving = tokio::spawn(listener::serve(
            listener,
            http::router(state),
            listener_settings,
            tls.as_ref().map(|tls| tls.acceptor()),
            stop_accepting.clone(),
        ));
        let tls_reloader = tls_reloader.map(|reloader| tokio::spawn(reloader.run()));
        let sweeper = {
            let core = core.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(HISTORY_SWEEP_INTERVAL);
                let mut last_cache_sweep = tokio::time::Instant::now();
                loop {
                    tick.tick().await;
                    core.history().sweep();
                    if last_cache_sweep.elapsed() >= CACHE_SWEEP_INTERVAL {
                        last_cache_sweep = tokio::time::Instant::now();
                        core.hub().sweep_expired_cache();
                    }
                }
            })
        };

        let lease = cluster.as_ref().and_then(|c| c.sandbox_lease());
        let sandbox = sandbox.map(|sandbox| sandbox.spawn(core.clone(), lease));
        let stop_background = move || {
            sweeper.abort();
            payloads.shutdown();
            if let Some(reloader) = &tls_reloader {
                reloader.abort();
            }
            if let Some(sandbox) = &sandbox {
                sandbox.abort();
            }
        };

        tokio::select! {
            () = shutdown => {}
            result = &mut serving => {
                stop_background();
                return result.context("the listener task failed");
            }
        }

        // Unready first, still serving: a load balancer polling /readyz routes new clients
        // elsewhere before this node tells its own to reconnect.
        core.stop_admitting();
        if !core.settings.shutdown_unready.is_zero() {
            tracing::info!(
                seconds = core.settings.shutdown_unready.as_secs(),
                "shutting down: unready, draining starts after shutdown_unready_secs"
            );
            tokio::time::sleep(core.settings.shutdown_unready).await;
        }
        let deadline = tokio::time::Instant::now() + core.settings.shutdown_timeout;
        stop_background();
        stop_accepting.cancel();
        let asked = core.begin_shutdown();
        tracing::info!(
            connections = asked,
            "shutting down: asked every client to reconnect"
        );
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = core.connection_count(),
                "shutdown timeout reached with connections still open"
            );
        }
        // Socket.IO bridges have handed their queued events to socketioxide by now (they
        // are tracked above). Its clients reconnect after a transport close, not after a
        // Socket.IO disconnect, so their transports are closed rather than disconnected.
        let _ = tokio::time::timeout_at(deadline, socketio.close_all()).await;
        // The cluster hears now, not after `node_dead_after_secs`, that this node's
        // subscribers and members are gone (its webhooks are recorded before the outbox
        // stops).
        if let Some(cluster) = &cluster {
            cluster.leave_cluster(deadline).await;
        }
        // Callbacks in flight finish (or their leases go back) within the same deadline.
        webhooks.shutdown(deadline).await;
        if tokio::time::timeout_at(deadline, &mut serving)
            .await
            .is_err()
        {
            serving.abort();
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}
