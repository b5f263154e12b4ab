//! The node's configuration: one TOML file, strict about what it accepts.
//!
//! Every setting has a default so `payrelay serve` runs with no file at all. A file that
//! names an unknown key or gives a bad value stops start-up with a message that names the
//! key (`apps[1].max_message_size: ...`): a typo in a limit must never silently fall back
//! to a default in production. Every setting is documented in `docs/configuration.md`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// A secret string (app secret) that never prints itself, not even in the error for a
/// value of the wrong type (serde would quote `secret = 12345678` back).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(
                    "expected a string (value not shown: it may be a secret)",
                ))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                self.visit_bool(false)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                self.visit_bool(false)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                self.visit_bool(false)
            }
        }
        deserializer.deserialize_string(SecretVisitor)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An app's end-to-end encryption master key (`encryption_master_key_base64`): 32 bytes,
/// written as base64 as Pusher's libraries take it. Never printed, not even when invalid.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionMasterKey([u8; 32]);

impl EncryptionMasterKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EncryptionMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionMasterKey(***)")
    }
}

impl<'de> Deserialize<'de> for EncryptionMasterKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = Secret::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.expose().trim())
            .map_err(|_| {
                serde::de::Error::custom("must be base64 (e.g. `openssl rand -base64 32`)")
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            serde::de::Error::custom(format!(
                "must decode to 32 bytes, not {} (e.g. `openssl rand -base64 32`)",
                bytes.len()
            ))
        })?;
        Ok(EncryptionMasterKey(key))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket listener binds to.
    #[serde(default = "defaults::bind")]
    pub bind: SocketAddr,
    #[serde(default)]
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `payrelay=debug,info`; `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// Connections this node accepts across all apps before refusing with 4100; 0 = no limit.
    #[serde(default)]
    pub max_connections: usize,
    /// Seconds of client silence before the server sends `pusher:ping`; told to clients.
    #[serde(default = "defaults::activity_timeout")]
    pub activity_timeout_secs: u64,
    /// Seconds to wait for any frame after a server ping before closing with 4201.
    #[serde(default = "defaults::pong_timeout")]
    pub pong_timeout_secs: u64,
    /// Upper bound on a graceful shutdown (drain and close every socket).
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Seconds between a shutdown signal and the start of the drain, during which the node
    /// still accepts HTTP but `/readyz` answers 503 and new sockets are refused, so a load
    /// balancer that polls `/readyz` stops routing here before clients are told to go.
    #[serde(default)]
    pub shutdown_unready_secs: u64,
    /// Frames queued for one connection before it counts as a slow consumer and is closed.
    #[serde(default = "defaults::outbound_queue")]
    pub outbound_queue_size: usize,
    /// How long the last event of a `cache-` channel is kept (Pusher keeps it 30 minutes).
    #[serde(default = "defaults::cache_ttl")]
    pub cache_ttl_secs: u64,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// The node's database: `sqlite://path` (created if missing), `sqlite::memory:`, or
    /// `postgres://…` (shared by several nodes).
    #[serde(default = "defaults::database_url")]
    pub database_url: String,
    /// Sandbox mode: every app serves the always-on `test-channel` stream and simulated
    /// exchange rates (`src/sandbox.rs`). Never on by default.
    #[serde(default)]
    pub sandbox: bool,
    /// Seconds between two sandbox test events on `test-channel`.
    #[serde(default = "defaults::sandbox_test_interval")]
    pub sandbox_test_interval_secs: u64,
    /// The public `cache-` channel exchange rates are published on, so a new subscriber
    /// gets the latest rates at once.
    #[serde(default = "defaults::exchange_rates_channel")]
    pub exchange_rates_channel: String,
    /// Failed merchant authentications one credential (API key, client token; an app's
    /// key/secret pair on the payment request API), or one client address within an app,
    /// may make per minute before further attempts get 429
    /// until the minute is over (`src/merchants/failures.rs`). Requests that present no
    /// credential never count.
    #[serde(default = "defaults::auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Reverse proxies (addresses or networks such as `10.0.0.0/8`) whose
    /// `trusted_proxy_header` names the client's address. Empty: the TCP peer is the
    /// client, and forwarding headers are ignored (a client could write them).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header those proxies append the client's address to: `x-forwarded-for` or
    /// `forwarded` (RFC 7239).
    #[serde(default)]
    pub trusted_proxy_header: crate::http::client_addr::ForwardedHeader,
    /// Redis (`redis://host:port/db`): when set, access tokens of the plain JSON protocol
    /// are read from (and minted into) Redis instead of the SQLite file.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of access-token keys in Redis (see `src/tokens/redis.rs` for the layout).
    #[serde(default = "defaults::redis_token_prefix")]
    pub redis_token_prefix: String,
    /// The longest a call to the token store (Redis or SQLite) may take before the
    /// request that needs it gets 503; also Redis's connect and reply timeouts.
    #[serde(default = "defaults::token_store_timeout_ms")]
    pub token_store_timeout_ms: u64,
    /// The app of a Redis token whose record names no `app_id`. Unset, such tokens belong
    /// to the only app, and are refused when several apps are served.
    #[serde(default)]
    pub redis_token_default_app: Option<String>,
    /// This node's name in a cluster: logs, `/readyz`, metrics and its keys in Redis.
    /// Absent: a random one at every start (a restarted node is a new member).
    #[serde(default)]
    pub node_id: Option<String>,
    /// Prefix of every key and Pub/Sub channel the cluster keeps in Redis (the layout is
    /// in ARCHITECTURE.md). Nodes sharing one Redis form one cluster per prefix.
    #[serde(default = "defaults::redis_prefix")]
    pub redis_prefix: String,
    /// Seconds after its last heartbeat a silent node counts as dead: the others remove
    /// its subscriptions and presence members (announcing `member_removed`).
    #[serde(default = "defaults::node_dead_after")]
    pub node_dead_after_secs: u64,
    /// Signed callbacks (`[webhooks]`, see `src/webhooks/config.rs`).
    #[serde(default)]
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Payment requests and their sockets (`[payloads]`, see `src/payloads/config.rs`).
    #[serde(default)]
    pub payloads: crate::payloads::PayloadsConfig,

    // The listener (src/listener/): limits and timeouts that hold before any protocol runs.
    /// TCP connections open at once, HTTP and WebSocket alike, counted at accept. Absent:
    /// the process's open-file limit minus a reserve, so the node never runs out of files;
    /// 0: no limit.
    #[serde(default)]
    pub max_tcp_connections: Option<usize>,
    /// TCP connections one client address (an IPv4 address, or an IPv6 /64) may hold open
    /// at once; 0: no limit.
    #[serde(default = "defaults::max_tcp_connections_per_ip")]
    pub max_tcp_connections_per_ip: usize,
    /// KiB of kernel send buffer per accepted connection (`SO_SNDBUF`; Linux doubles it
    /// for its bookkeeping): what a client that stops reading can park in the kernel
    /// before the node's own queue bounds it (BENCHMARKS.md, "Stalled readers"). 0 leaves
    /// it to the kernel's autotuning, which grows a stalled socket's buffer to
    /// `net.ipv4.tcp_wmem` (4 MiB by default).
    #[serde(default = "defaults::tcp_send_buffer_kib")]
    pub tcp_send_buffer_kib: usize,
    /// Seconds a client has to complete the TLS handshake.
    #[serde(default = "defaults::handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers: from the connection being ready
    /// (accepted, TLS done) for the first request, from its first byte for later ones.
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds an HTTP connection may wait idle for its next request.
    #[serde(default = "defaults::keep_alive_timeout")]
    pub keep_alive_timeout_secs: u64,
    /// Seconds an ordinary HTTP request may take from its headers to its response
    /// (reading the body included); beyond it the client gets 408. WebSocket upgrades
    /// answer at once and are not affected afterwards.
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout_secs: u64,
    /// PEM certificate chain (leaf first) to serve TLS with; with `tls_key_file`. Unset:
    /// plain TCP.
    #[serde(default)]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// How often the TLS files are read again; a changed, valid pair replaces the old one
    /// for new connections (SIGHUP does it at once).
    #[serde(default = "defaults::tls_reload_interval")]
    pub tls_reload_interval_secs: u64,

    // Channel history (src/core/history/): per-app sizes are `[apps.history]`.
    /// Memory the embedded history may take across all apps, counted as the allocator
    /// gives it (each retained event ~500 bytes besides its data and name; checked every
    /// second, the oldest events go first). The 1 GiB default holds the default window
    /// (100 events) of ~18 000 channels of 100-byte events. Redis history is bounded by
    /// the per-app sizes alone.
    #[serde(default = "defaults::history_max_bytes")]
    pub history_max_bytes: usize,
    /// Seconds a stream with nothing retained keeps its position (offset and epoch) in
    /// the embedded history, so a client that saw its last event can still resume with
    /// nothing missed; after that, such a client is told history is gone.
    #[serde(default = "defaults::history_meta_ttl")]
    pub history_meta_ttl_secs: u64,
    /// Seconds a publishing route remembers an idempotency key and its first answer.
    #[serde(default = "defaults::idempotency_window")]
    pub idempotency_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: Secret,
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Concurrent connections for this app before refusing with 4004; 0 = no limit.
    #[serde(default)]
    pub max_connections: usize,
    /// Largest client WebSocket message and largest event `data` accepted, in bytes.
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: usize,
    /// Whether clients may send `client-*` events (off by default, as in Pusher).
    #[serde(default)]
    pub enable_client_messages: bool,
    /// Client events one connection may send per second before getting error 4301.
    #[serde(default = "defaults::client_event_rate")]
    pub client_events_per_second: u32,
    /// Channels one connection may be subscribed to at once.
    #[serde(default = "defaults::max_channels")]
    pub max_channels_per_connection: usize,
    /// Subscribe requests one connection may send per second once it has used a burst of
    /// `max_channels_per_connection`; beyond it a subscribe is refused (Pusher:
    /// `subscription_error` 429, plain: `rate_limited`).
    #[serde(default = "defaults::subscriptions_per_second")]
    pub subscriptions_per_second: u32,
    /// Distinct users in one presence channel.
    #[serde(default = "defaults::presence_members")]
    pub max_presence_members: usize,
    /// Bytes of JSON `user_info` one presence member may carry.
    #[serde(default = "defaults::presence_member_size")]
    pub max_presence_member_size: usize,
    /// Channels one REST `events` call may name (Pusher allows 100).
    #[serde(default = "defaults::event_channels")]
    pub max_event_channels: usize,
    /// Events one REST `batch_events` call may carry (Pusher allows 10).
    #[serde(default = "defaults::batch_size")]
    pub max_batch_size: usize,
    /// How this app's merchant backends prove who they are (`[apps.jwt]`); without it
    /// the merchant auth endpoint refuses every request for this app.
    #[serde(default)]
    pub jwt: Option<crate::merchants::JwtConfig>,
    /// The master key of end-to-end encrypted channels (`private-encrypted-*`): the auth
    /// endpoint answers each with its `shared_secret`, derived from it as Pusher does. The
    /// backend encrypts with the same key (the Pusher server libraries'
    /// `encryptionMasterKeyBase64`); payrelay itself only relays ciphertext. Without it,
    /// encrypted channels are refused.
    #[serde(default)]
    pub encryption_master_key_base64: Option<EncryptionMasterKey>,
    /// The plain JSON protocol (`/api/v1/ws`, `[apps.plain]`).
    #[serde(default)]
    pub plain: PlainConfig,
    /// The Socket.IO gateway (`/socket.io/`, `[apps.socketio]`).
    #[serde(default)]
    pub socketio: SocketIoConfig,
    /// Pusher app webhooks (`[[apps.webhooks]]`): occupancy, presence and client events.
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::PusherWebhookConfig>,
    /// Channel history and recovery (`[apps.history]`).
    #[serde(default)]
    pub history: HistoryConfig,
}

/// `[apps.history]`: what each channel of the app keeps for clients that reconnect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events kept per channel; 0 turns history (and recovery) off for the app.
    #[serde(default = "defaults::history_size")]
    pub size: usize,
    /// Seconds an event stays in history; 0 turns history off for the app.
    #[serde(default = "defaults::history_ttl")]
    pub ttl_secs: u64,
    /// Whether Pusher publications carry `id` and `position` as extra fields (the
    /// official Pusher clients ignore unknown fields).
    #[serde(default = "defaults::yes")]
    pub pusher_fields: bool,
}

impl HistoryConfig {
    /// Whether the app keeps history at all.
    pub fn enabled(&self) -> bool {
        self.size > 0 && self.ttl_secs > 0
    }

    pub fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ttl_secs)
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: defaults::history_size(),
            ttl_secs: defaults::history_ttl(),
            pusher_fields: true,
        }
    }
}

/// What a Socket.IO client token minted with a `user_id` receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientTokenScope {
    /// Every event of its merchant, as an API key does.
    #[default]
    Merchant,
    /// Events published for its user, and those marked merchant-wide.
    User,
}

/// `[apps.socketio]`: the Socket.IO v4 gateway of seed 003.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketIoConfig {
    /// When false, this app's API keys and client tokens get `connect_error`.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Which of a merchant's channels feed its Socket.IO clients: kinds among
    /// `merchant`, `payments`, `notifications`, read as `private-{kind}.{merchant_id}`.
    /// An event published on any of them reaches the clients under its own name.
    #[serde(default = "defaults::socketio_channel_kinds")]
    pub channel_kinds: Vec<String>,
    /// Lifetime of a client token when the minting request names none.
    #[serde(default = "defaults::client_token_ttl")]
    pub client_token_ttl_secs: u64,
    /// Longest lifetime a client token may be minted with.
    #[serde(default = "defaults::max_client_token_ttl")]
    pub max_client_token_ttl_secs: u64,
    /// How often an open socket's API key or client token is looked up again, so a
    /// revocation made outside the HTTP API (`payrelay keys revoke`, a Redis DEL)
    /// disconnects it too.
    #[serde(default = "defaults::token_recheck")]
    pub credential_recheck_secs: u64,
    /// What a client token minted with a `user_id` receives: `merchant` (default, seed
    /// 003's "both receive the same events"), every event of its merchant; `user`, only
    /// the events published for that user plus those marked merchant-wide.
    #[serde(default)]
    pub client_token_scope: ClientTokenScope,
    /// Seed 003 authenticates once, on connect, so an expired client token keeps its
    /// socket by default. When true, a socket opened with a client token gets a Socket.IO
    /// DISCONNECT at the token's expiry (plus `token_expiry_grace_secs`).
    #[serde(default)]
    pub disconnect_on_token_expiry: bool,
    /// With `disconnect_on_token_expiry`: seconds past the expiry before the disconnect.
    #[serde(default)]
    pub token_expiry_grace_secs: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        toml::from_str("").expect("the default socketio config is valid")
    }
}

impl SocketIoConfig {
    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.channel_kinds.is_empty() {
            return Err(invalid(at("channel_kinds"), "name at least one kind"));
        }
        if let Some(bad) = self
            .channel_kinds
            .iter()
            .find(|k| !crate::merchants::channels::KINDS.contains(&k.as_str()))
        {
            return Err(invalid(
                at("channel_kinds"),
                format!("`{bad}` is not one of merchant, payments, notifications"),
            ));
        }
        positive(&at("client_token_ttl_secs"), self.client_token_ttl_secs)?;
        at_most(
            &at("client_token_ttl_secs"),
            self.client_token_ttl_secs,
            self.max_client_token_ttl_secs,
        )?;
        at_most(
            &at("max_client_token_ttl_secs"),
            self.max_client_token_ttl_secs,
            30 * 86400,
        )?;
        at_most(
            &at("token_expiry_grace_secs"),
            self.token_expiry_grace_secs,
            86400,
        )?;
        positive(&at("credential_recheck_secs"), self.credential_recheck_secs)?;
        at_most(
            &at("credential_recheck_secs"),
            self.credential_recheck_secs,
            86400,
        )?;
        Ok(())
    }
}

/// `[apps.plain]`: the plain JSON channel protocol of seed 002.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainConfig {
    /// When false, `/api/v1/ws` answers 503 for this app's users.
    #[serde(default = "defaults::yes")]
    pub websocket_enabled: bool,
    /// Browser origins allowed to connect: exact (`https://app.example.com`) or a
    /// subdomain pattern (`https://*.example.com`). Empty = any origin. Requests without
    /// an `Origin` header (mobile apps, servers) are not browsers and are let through.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Channels that reach every user of the app (`settings` is subscribed on connect).
    #[serde(default = "defaults::global_channels")]
    pub global_channels: Vec<String>,
    /// Channels whose events reach only the user they are published for.
    #[serde(default = "defaults::user_channels")]
    pub user_channels: Vec<String>,
    /// Sockets one user may hold; a newer one closes the oldest beyond this (4409).
    #[serde(default = "defaults::one")]
    pub max_sockets_per_user: usize,
    /// Seconds between WebSocket pings; a socket silent for `pong_timeout_secs` after a
    /// ping (or until the next ping, if sooner) is closed with 4408.
    #[serde(default = "defaults::ping_interval")]
    pub ping_interval_secs: u64,
    /// How often an open socket's token is looked up again, so a token revoked directly
    /// in the store (not through the API) closes its sockets too.
    #[serde(default = "defaults::token_recheck")]
    pub token_recheck_secs: u64,
    /// Seconds a socket stays open after its token's `expires_at` before it is closed
    /// (4401 "Token expired"); gives a client time to reconnect with a fresh token.
    #[serde(default)]
    pub token_expiry_grace_secs: u64,
    /// Malformed messages a socket may send before it is closed (4400).
    #[serde(default = "defaults::max_invalid_messages")]
    pub max_invalid_messages: u32,
    /// The seed's unauthenticated `GET /api/v1/ws/test?user_id=` route. Never enable it in
    /// production.
    #[serde(default)]
    pub enable_test_route: bool,
}

impl Default for PlainConfig {
    fn default() -> Self {
        toml::from_str("").expect("the default plain config is valid")
    }
}

mod defaults {
    use std::net::SocketAddr;

    pub fn bind() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6001))
    }
    pub fn idempotency_window() -> u64 {
        86_400
    }
    pub fn history_size() -> usize {
        100
    }
    pub fn history_ttl() -> u64 {
        120
    }
    pub fn history_max_bytes() -> usize {
        1024 * 1024 * 1024
    }
    pub fn history_meta_ttl() -> u64 {
        86_400
    }
    pub fn sandbox_test_interval() -> u64 {
        5
    }
    pub fn exchange_rates_channel() -> String {
        "cache-exchange-rates".into()
    }
    pub fn auth_failures_per_minute() -> u32 {
        20
    }
    pub fn global_channels() -> Vec<String> {
        vec!["settings".into()]
    }
    pub fn user_channels() -> Vec<String> {
        [
            "notification.events",
            "payment_order.events",
            "card.events",
            "card.create.events",
            "card.withdraw.events",
            "kyc.events",
            "mobile.force.logout",
        ]
        .map(String::from)
        .to_vec()
    }
    pub fn one() -> usize {
        1
    }
    pub fn ping_interval() -> u64 {
        25
    }
    pub fn token_recheck() -> u64 {
        30
    }
    pub fn socketio_channel_kinds() -> Vec<String> {
        vec!["merchant".into()]
    }
    pub fn client_token_ttl() -> u64 {
        3600
    }
    pub fn max_client_token_ttl() -> u64 {
        86400
    }
    pub fn max_invalid_messages() -> u32 {
        10
    }
    pub fn max_tcp_connections_per_ip() -> usize {
        256
    }
    pub fn tcp_send_buffer_kib() -> usize {
        64
    }
    pub fn handshake_timeout() -> u64 {
        10
    }
    pub fn header_read_timeout() -> u64 {
        15
    }
    pub fn keep_alive_timeout() -> u64 {
        75
    }
    pub fn request_timeout() -> u64 {
        30
    }
    pub fn token_store_timeout_ms() -> u64 {
        1000
    }
    pub fn tls_reload_interval() -> u64 {
        60
    }
    pub fn redis_token_prefix() -> String {
        "payrelay:token:".into()
    }
    pub fn redis_prefix() -> String {
        "payrelay:".into()
    }
    pub fn node_dead_after() -> u64 {
        30
    }
    pub fn database_url() -> String {
        "sqlite://payrelay.db".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn activity_timeout() -> u64 {
        120
    }
    pub fn pong_timeout() -> u64 {
        30
    }
    pub fn shutdown_timeout() -> u64 {
        10
    }
    pub fn outbound_queue() -> usize {
        1024
    }
    pub fn cache_ttl() -> u64 {
        30 * 60
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_message_size() -> usize {
        10 * 1024
    }
    pub fn client_event_rate() -> u32 {
        10
    }
    pub fn max_channels() -> usize {
        100
    }
    pub fn subscriptions_per_second() -> u32 {
        10
    }
    pub fn presence_members() -> usize {
        100
    }
    pub fn presence_member_size() -> usize {
        1024
    }
    pub fn event_channels() -> usize {
        100
    }
    pub fn batch_size() -> usize {
        10
    }
}

/// A configuration error that names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// The configuration `payrelay serve` runs with when given no file: one development app.
    pub fn development() -> Self {
        let mut config = Config::parse("").expect("the empty configuration is valid");
        config.apps.push(AppConfig::development());
        config
    }

    /// Reads the file at `path`. Relative paths in it (`database_url`, key files) are the
    /// file's: they resolve against its folder, so `payrelay keys list --config
    /// /etc/payrelay/payrelay.toml` opens the same store from any working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        let absolute = std::path::absolute(path).map_err(read_error)?;
        let folder = absolute.parent().unwrap_or(Path::new("/"));
        Self::parse_in(&text, Some(folder))
    }

    /// Parses a configuration whose relative paths are the working directory's.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, None)
    }

    fn parse_in(text: &str, folder: Option<&Path>) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            invalid(
                if key == "." { "config".into() } else { key },
                located(text, e.inner()),
            )
        })?;
        if let Some(folder) = folder {
            config.resolve_paths(folder);
        }
        config.validate()?;
        Ok(config)
    }

    /// Makes every relative path of the file absolute against `folder`, before validation
    /// reads any of them.
    fn resolve_paths(&mut self, folder: &Path) {
        self.database_url = paths::sqlite_url_in(&self.database_url, folder);
        for file in [&mut self.tls_cert_file, &mut self.tls_key_file]
            .into_iter()
            .flatten()
        {
            paths::resolve_in(file, folder);
        }
        for app in &mut self.apps {
            if let Some(jwt) = &mut app.jwt {
                for file in [&mut jwt.public_key_file, &mut jwt.jwks_file]
                    .into_iter()
                    .flatten()
                {
                    paths::resolve_in(file, folder);
                }
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        positive("activity_timeout_secs", self.activity_timeout_secs)?;
        positive("pong_timeout_secs", self.pong_timeout_secs)?;
        // Pusher clients treat a server that stays silent longer than this as gone, and a
        // huge value would overflow the socket task's timer arithmetic.
        at_most("activity_timeout_secs", self.activity_timeout_secs, 3600)?;
        at_most("pong_timeout_secs", self.pong_timeout_secs, 600)?;
        positive("shutdown_timeout_secs", self.shutdown_timeout_secs)?;
        positive("cache_ttl_secs", self.cache_ttl_secs)?;
        positive(
            "sandbox_test_interval_secs",
            self.sandbox_test_interval_secs,
        )?;
        at_most(
            "sandbox_test_interval_secs",
            self.sandbox_test_interval_secs,
            3600,
        )?;
        positive(
            "auth_failures_per_minute",
            u64::from(self.auth_failures_per_minute),
        )?;
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            crate::http::client_addr::parse_proxy(entry)
                .map_err(|e| invalid(format!("trusted_proxies[{i}]"), e))?;
        }
        match crate::core::channel::classify(&self.exchange_rates_channel) {
            Ok(info) if info.cached && info.kind == crate::core::channel::ChannelKind::Public => {}
            _ => {
                return Err(invalid(
                    "exchange_rates_channel",
                    "must be a valid public cache channel name (`cache-...`)",
                ));
            }
        }
        if self.redis_token_prefix.contains(['*', '?', '[', ']', '\\']) {
            return Err(invalid(
                "redis_token_prefix",
                "must not contain Redis glob characters (* ? [ ] \\)",
            ));
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || self
                .redis_prefix
                .contains(['*', '?', '[', ']', '\\', '{', '}'])
            || self.redis_prefix.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "redis_prefix",
                "must be 1 to 64 characters, without spaces or the characters * ? [ ] \\ { }",
            ));
        }
        if !(3..=3600).contains(&self.node_dead_after_secs) {
            return Err(invalid(
                "node_dead_after_secs",
                "must be between 3 and 3600",
            ));
        }
        if let Some(id) = &self.node_id
            && !is_url_safe_token(id)
        {
            return Err(invalid(
                "node_id",
                "must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return Err(invalid(
                "redis_url",
                "must start with redis:// (TLS is not built in)",
            ));
        }
        if !(50..=30_000).contains(&self.token_store_timeout_ms) {
            return Err(invalid(
                "token_store_timeout_ms",
                "must be between 50 and 30000",
            ));
        }
        if let Some(app) = &self.redis_token_default_app
            && !self.apps.iter().any(|a| &a.id == app)
        {
            return Err(invalid(
                "redis_token_default_app",
                format!("`{app}` is not the id of a configured app"),
            ));
        }
        self.validate_listener()?;
        self.webhooks.validate()?;
        self.payloads.validate()?;
        if !(self.database_url.starts_with("sqlite:")
            || crate::db::is_postgres_url(&self.database_url))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        positive("history_meta_ttl_secs", self.history_meta_ttl_secs)?;
        positive("idempotency_window_secs", self.idempotency_window_secs)?;
        at_most(
            "idempotency_window_secs",
            self.idempotency_window_secs,
            7 * 86_400,
        )?;
        if self.outbound_queue_size < 16 {
            return Err(invalid("outbound_queue_size", "must be at least 16"));
        }
        let mut ids = HashMap::new();
        let mut keys = HashMap::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = |field: &str| format!("apps[{i}].{field}");
            app.validate(&at)?;
            if let Some(first) = ids.insert(app.id.as_str(), i) {
                return Err(invalid(
                    at("id"),
                    format!("duplicate app id `{}` (also apps[{first}])", app.id),
                ));
            }
            if let Some(first) = keys.insert(app.key.as_str(), i) {
                return Err(invalid(
                    at("key"),
                    format!("duplicate app key `{}` (also apps[{first}])", app.key),
                ));
            }
        }
        Ok(())
    }
}

/// Relative paths of a configuration file, made the file's.
mod paths {
    use std::path::{Path, PathBuf};

    pub fn resolve_in(path: &mut PathBuf, folder: &Path) {
        if path.is_relative() {
            *path = folder.join(&*path);
        }
    }

    /// `sqlite://rel/x.db` (or `sqlite:rel/x.db`) with its path made absolute against
    /// `folder`, in the form sqlx reads (`sqlite://<percent-encoded path>?<params>`). In-memory
    /// databases and absolute paths are left as they are; so is anything not SQLite.
    pub fn sqlite_url_in(url: &str, folder: &Path) -> String {
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return url.to_string();
        };
        let (database, params) = match rest.split_once('?') {
            Some((database, params)) => (database, Some(params)),
            None => (rest, None),
        };
        let in_memory = database.is_empty()
            || database == ":memory:"
            || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
        if in_memory || database.starts_with('/') {
            return url.to_string();
        }
        // sqlx percent-decodes the path; the folder is encoded so that a `%`, `?` or `#`
        // in it survives, and the relative part is kept as written (already encoded).
        let folder = folder
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let folder = folder.trim_end_matches('/');
        match params {
            Some(params) => format!("sqlite://{folder}/{database}?{params}"),
            None => format!("sqlite://{folder}/{database}"),
        }
    }
}

impl Config {
    fn validate_listener(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("keep_alive_timeout_secs", self.keep_alive_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            positive(key, value)?;
            at_most(key, value, 3600)?;
        }
        if self.tcp_send_buffer_kib != 0 {
            if self.tcp_send_buffer_kib < 4 {
                return Err(invalid(
                    "tcp_send_buffer_kib",
                    "must be 0 (the kernel's) or at least 4",
                ));
            }
            at_most(
                "tcp_send_buffer_kib",
                self.tcp_send_buffer_kib as u64,
                65536,
            )?;
        }
        positive("tls_reload_interval_secs", self.tls_reload_interval_secs)?;
        at_most(
            "tls_reload_interval_secs",
            self.tls_reload_interval_secs,
            86400,
        )?;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => Err(invalid("tls_key_file", "is required with tls_cert_file")),
            (None, Some(_)) => Err(invalid("tls_cert_file", "is required with tls_key_file")),
            _ => Ok(()),
        }
    }
}

/// A syntax error as line, column and toml's message.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax(located(text, error))
}

/// toml's whole reason ("unknown field `x`, expected one of ...") and where it is, as
/// `reason (line L, column C)` on one line. toml's own `Display` would instead start with
/// "TOML parse error at ..." and quote the offending line of the file, which may be the
/// one holding an app secret.
fn located(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

fn at_most(key: &str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value > max {
        Err(invalid(key, format!("must be at most {max}")))
    } else {
        Ok(())
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Ids and keys appear in URLs (`/app/{key}`, `/apps/{id}/events`) and in signed strings.
fn is_url_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl PlainConfig {
    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let channel_ok = |c: &String| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        for (field, list) in [
            ("global_channels", &self.global_channels),
            ("user_channels", &self.user_channels),
        ] {
            if let Some(bad) = list.iter().find(|c| !channel_ok(c)) {
                return Err(invalid(
                    at(field),
                    format!("`{bad}` must be 1-64 letters, digits, `_`, `-` or `.`"),
                ));
            }
        }
        if let Some(both) = self
            .global_channels
            .iter()
            .find(|c| self.user_channels.contains(c))
        {
            return Err(invalid(
                at("user_channels"),
                format!("`{both}` is also a global channel"),
            ));
        }
        if self.max_sockets_per_user == 0 {
            return Err(invalid(at("max_sockets_per_user"), "must be at least 1"));
        }
        positive(&at("token_recheck_secs"), self.token_recheck_secs)?;
        positive(&at("ping_interval_secs"), self.ping_interval_secs)?;
        at_most(&at("ping_interval_secs"), self.ping_interval_secs, 3600)?;
        at_most(&at("token_recheck_secs"), self.token_recheck_secs, 86400)?;
        at_most(
            &at("token_expiry_grace_secs"),
            self.token_expiry_grace_secs,
            86400,
        )?;
        positive(
            &at("max_invalid_messages"),
            u64::from(self.max_invalid_messages),
        )?;
        if let Some(bad) = self
            .allowed_origins
            .iter()
            .find(|o| !(o.starts_with("https://") || o.starts_with("http://")))
        {
            return Err(invalid(
                at("allowed_origins"),
                format!("`{bad}` must start with https:// or http://"),
            ));
        }
        Ok(())
    }
}

impl AppConfig {
    pub fn development() -> Self {
        toml::from_str("id = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"")
            .expect("the development app is valid")
    }

    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        // A stream is one bounded deque per channel; a day of history is a database's job.
        at_most(&at("history.size"), self.history.size as u64, 10_000)?;
        at_most(&at("history.ttl_secs"), self.history.ttl_secs, 86_400)?;
        if !is_url_safe_token(&self.id) {
            return Err(invalid(
                at("id"),
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if !is_url_safe_token(&self.key) {
            return Err(invalid(
                at("key"),
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if self.secret.expose().len() < 8 {
            return Err(invalid(at("secret"), "must be at least 8 characters"));
        }
        self.plain.validate(&|f: &str| at(&format!("plain.{f}")))?;
        for (i, hook) in self.webhooks.iter().enumerate() {
            hook.validate(&at(&format!("webhooks[{i}]")))?;
        }
        self.socketio
            .validate(&|f: &str| at(&format!("socketio.{f}")))?;
        if let Some(jwt) = &self.jwt {
            crate::merchants::JwtVerifier::new(jwt)
                .map_err(|e| invalid(at("jwt"), e.to_string()))?;
        }
        if !(256..=1024 * 1024).contains(&self.max_message_size) {
            return Err(invalid(
                at("max_message_size"),
                "must be between 256 and 1048576 bytes",
            ));
        }
        if self.client_events_per_second == 0 {
            return Err(invalid(
                at("client_events_per_second"),
                "must be at least 1",
            ));
        }
        if self.max_channels_per_connection == 0 {
            return Err(invalid(
                at("max_channels_per_connection"),
                "must be at least 1",
            ));
        }
        if self.subscriptions_per_second == 0 {
            return Err(invalid(
                at("subscriptions_per_second"),
                "must be at least 1",
            ));
        }
        if !(1..=100).contains(&self.max_event_channels) {
            return Err(invalid(
                at("max_event_channels"),
                "must be between 1 and 100",
            ));
        }
        if !(1..=100).contains(&self.max_batch_size) {
            return Err(invalid(at("max_batch_size"), "must be between 1 and 100"));
        }
        if self.max_presence_members == 0 {
            return Err(invalid(at("max_presence_members"), "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let config = Config::parse(
            r#"
            bind = "127.0.0.1:6001"
            [[apps]]
            id = "1234"
            key = "app-key"
            secret = "app-secret"
            "#,
        )
        .unwrap();
        assert_eq!(config.bind.port(), 6001);
        assert_eq!(config.apps.len(), 1);
        let app = &config.apps[0];
        assert!(app.enabled);
        assert!(
            !app.enable_client_messages,
            "client events are off by default"
        );
        assert_eq!(app.max_message_size, 10 * 1024);
        assert_eq!(config.activity_timeout_secs, 120);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("bnid = \"127.0.0.1:1\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnid"), "{err}");
        let err = Config::parse(
            "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_conections = 3",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apps[0]"), "{err}");
        assert!(err.contains("max_conections"), "{err}");
    }

    /// Issue 12 item 17: the reason (toml's "unknown field ...", "invalid type ...") is kept
    /// whole beside the key path, not cut to "TOML parse error at line 6, column 1".
    #[test]
    fn errors_keep_their_reason_and_key_path() {
        let text = "bind = \"127.0.0.1:0\"\n[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_conections = 3\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.starts_with("apps[0]"), "{err}");
        assert!(err.contains("unknown field `max_conections`"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(!err.contains("TOML parse error"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        let err = Config::parse(
            "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_message_size = \"big\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("apps[0].max_message_size"), "{err}");
        assert!(
            err.contains("invalid type: string \"big\", expected usize"),
            "{err}"
        );

        // The reason never quotes the file's line nor a secret of the wrong type.
        for value in ["[\"hunter2-secret\"]", "12345678912", "1234567.125", "true"] {
            let err = Config::parse(&format!("[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret={value}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("apps[0].secret"), "{err}");
            assert!(err.contains("expected a string"), "{err}");
            for part in ["hunter2", "1234567"] {
                assert!(!err.contains(part), "{err}");
            }
        }
    }

    #[test]
    fn sqlite_paths_resolve_against_the_config_folder() {
        let folder = Path::new("/etc/pay relay");
        for (url, expected) in [
            (
                "sqlite://payrelay.db",
                "sqlite:///etc/pay relay/payrelay.db",
            ),
            (
                "sqlite:data/x.db?mode=rwc",
                "sqlite:///etc/pay relay/data/x.db?mode=rwc",
            ),
            ("sqlite://./x.db", "sqlite:///etc/pay relay/./x.db"),
            ("sqlite:///var/lib/x.db", "sqlite:///var/lib/x.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite://?mode=memory", "sqlite://?mode=memory"),
            ("postgres://u:p@h/db", "postgres://u:p@h/db"),
        ] {
            assert_eq!(paths::sqlite_url_in(url, folder), expected, "{url}");
        }
        assert_eq!(
            paths::sqlite_url_in("sqlite://x.db", Path::new("/a%b?c#d/")),
            "sqlite:///a%25b%3Fc%23d/x.db"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse(
            "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_message_size = \"big\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("apps[0].max_message_size"), "{err}");

        let err = Config::parse("bind = \"not an address\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bind"), "{err}");

        let err = Config::parse("[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"short\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("apps[0].secret"), "{err}");
    }

    #[test]
    fn duplicate_apps_are_refused() {
        let err = Config::parse(
            "[[apps]]\nid=\"1\"\nkey=\"k1\"\nsecret=\"secret-123\"\n\
             [[apps]]\nid=\"1\"\nkey=\"k2\"\nsecret=\"secret-123\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("apps[1].id"), "{err}");
    }

    #[test]
    fn the_default_app_of_redis_tokens_must_be_served() {
        let apps = "[[apps]]\nid=\"1\"\nkey=\"k1\"\nsecret=\"secret-123\"\n\
                    [[apps]]\nid=\"2\"\nkey=\"k2\"\nsecret=\"secret-123\"";
        let config = Config::parse(&format!("redis_token_default_app = \"2\"\n{apps}")).unwrap();
        assert_eq!(config.redis_token_default_app.as_deref(), Some("2"));
        let err = Config::parse(&format!("redis_token_default_app = \"3\"\n{apps}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("redis_token_default_app"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let app = AppConfig::development();
        let debug = format!("{app:?}");
        assert!(!debug.contains("app-secret"), "{debug}");
    }

    #[test]
    fn syntax_errors_point_at_the_line_without_quoting_it() {
        let err = Config::parse("[[apps]]\nid = \"1\"\nsecret = \"hunter2-secret\" oops\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn listener_timeouts_are_positive_and_bounded() {
        for key in [
            "handshake_timeout_secs",
            "header_read_timeout_secs",
            "keep_alive_timeout_secs",
            "request_timeout_secs",
        ] {
            for bad in ["0", "3601"] {
                let err = Config::parse(&format!("{key} = {bad}"))
                    .unwrap_err()
                    .to_string();
                assert!(err.starts_with(key), "{err}");
            }
        }
        let err = Config::parse("tls_cert_file = \"cert.pem\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tls_key_file"), "{err}");
        let config = Config::parse("").unwrap();
        assert_eq!(config.max_tcp_connections, None, "follows the file limit");
        assert_eq!(config.max_tcp_connections_per_ip, 256);
        assert_eq!(config.tcp_send_buffer_kib, 64);
        for bad in ["1", "65537"] {
            let err = Config::parse(&format!("tcp_send_buffer_kib = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("tcp_send_buffer_kib"), "{err}");
        }
        assert_eq!(
            Config::parse("tcp_send_buffer_kib = 0")
                .unwrap()
                .tcp_send_buffer_kib,
            0
        );
    }

    #[test]
    fn timeouts_are_bounded() {
        let err = Config::parse("activity_timeout_secs = 18446744073709551615")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("activity_timeout_secs"), "{err}");
    }
}
