//! Access tokens of app users, for the plain JSON protocol (seed 002).
//!
//! A token is opaque: a lookup in a [`TokenStore`] says which user of which app it
//! stands for, until when, and whether it was revoked. Two stores:
//! - [`SqliteTokens`], the embedded default, in the `database_url` file (token hashes only);
//! - [`RedisTokens`], when `redis_url` is set, so a backend that already keeps its access
//!   tokens in Redis (seed 002: "Redis-backed access-token state") works unchanged. Its key
//!   format and value are documented there.
//!
//! Connections keep only [`credential_id`] of their token, so a revocation can close
//! exactly the sockets opened with it without the token being held or logged.

mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use sha2::{Digest, Sha256};

pub use self::redis::RedisTokens;
pub use self::sqlite::SqliteTokens;

/// Prefix of tokens payrelay mints (tokens written by another backend may look different).
pub const TOKEN_PREFIX: &str = "prt_";

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// The app the user belongs to; `None` when the writer did not say (the node's
    /// first app is meant then).
    pub app_id: Option<String>,
    pub user_id: String,
    /// Unix seconds; `None` = no expiry of its own (Redis may still expire the key).
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

impl TokenRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A freshly minted token: the only time payrelay hands out its plaintext.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintedToken {
    pub token: String,
    pub user_id: String,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    #[error("user id `{0}` must be 1-64 letters, digits, `_`, `-`, `@`, `=` or `,`")]
    BadUserId(String),
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Creates a token for `user_id` of `app_id` valid for `ttl`.
    async fn mint(
        &self,
        app_id: &str,
        user_id: &str,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError>;
    /// What `token` stands for, revoked or expired ones included; `None` if unknown.
    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError>;
    /// Revokes `token`; returns its record as it was, or `None` if unknown.
    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError>;
    /// Revokes every token of a user; returns the credential ids revoked.
    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError>;
    /// Short name for logs.
    fn name(&self) -> &'static str;
}

/// User ids travel inside channel names (`private-user-{id}.{channel}`), so they use
/// channel-name characters and no `.`.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'=' | b','))
}

/// The id a connection keeps of its token: a short hash, useless to an attacker.
pub fn credential_id(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..12])
}

pub(crate) fn new_token() -> String {
    let secret: [u8; 20] = rand::rng().random();
    format!("{TOKEN_PREFIX}{}", hex::encode(secret))
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Opens the store the configuration asks for: Redis when `redis_url` is set, else the
/// SQLite file.
pub async fn open(config: &crate::config::Config) -> anyhow::Result<Arc<dyn TokenStore>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisTokens::connect(url, &config.redis_token_prefix).await?),
        None => Arc::new(SqliteTokens::open(&config.database_url).await?),
    })
}
