//! Opaque tokens: access tokens of app users for the plain JSON protocol (seed 002), and
//! client tokens a merchant's backend mints for its front ends (Socket.IO, seed 003).
//!
//! A token is opaque: a lookup in a [`TokenStore`] says whom of which app it stands for,
//! until when, and whether it was revoked. An access token names a user; a client token
//! names a merchant (and optionally one of its users), and neither opens the other's
//! protocol. Two stores:
//! - [`SqliteTokens`], the default, in the node's database (`database_url`: the SQLite
//!   file, or PostgreSQL; token hashes only);
//! - [`RedisTokens`], when `redis_url` is set, so a backend that already keeps its access
//!   tokens in Redis (seed 002: "Redis-backed access-token state") works unchanged. Its key
//!   format and value are documented there.
//!
//! Connections keep only [`credential_id`] of their token, so a revocation can close
//! exactly the sockets opened with it without the token being held or logged.

mod bounded;
mod recheck;
mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use sha2::{Digest, Sha256};

pub use self::bounded::{BoundedTokens, StoreStatus};
pub use self::recheck::BackgroundCheck;
pub use self::redis::RedisTokens;
pub use self::sqlite::SqliteTokens;

/// Prefix of the access tokens payrelay mints (tokens written by another backend may look
/// different).
pub const TOKEN_PREFIX: &str = "prt_";
/// Prefix of the merchants' client tokens payrelay mints.
pub const CLIENT_TOKEN_PREFIX: &str = "pct_";

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The app the holder belongs to: the one the record names, or for a Redis record
    /// that names none the node's only app or `redis_token_default_app`. `None`: no app
    /// can be decided, and the token opens nothing and is no app's to revoke.
    pub app_id: Option<String>,
    pub subject: Subject,
    /// Unix seconds; `None` = no expiry of its own (Redis may still expire the key).
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

/// Whom a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user of the app: an access token of the plain JSON protocol.
    User(String),
    /// A merchant's front end, optionally on behalf of one of the merchant's users: a
    /// client token of the Socket.IO gateway.
    Client {
        merchant_id: String,
        user_id: Option<String>,
        /// The id of the merchant API key that minted it, if a key did: the token is
        /// good only while that key is (a revoked, maybe leaked, key takes its tokens
        /// with it).
        minted_with: Option<String>,
    },
}

impl TokenRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the token still opens sockets at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        !self.revoked && !self.is_expired(now)
    }

    /// The core user id the token's sockets sign in as: the user of an access token, the
    /// merchant of a client token. Revocation finds the sockets to close by it.
    pub fn connection_user(&self) -> &str {
        match &self.subject {
            Subject::User(user) => user,
            Subject::Client { merchant_id, .. } => merchant_id,
        }
    }

    /// The app the token belongs to, if it names one this node serves.
    pub fn app(&self, apps: &crate::core::AppRegistry) -> Option<Arc<crate::core::App>> {
        apps.by_id(self.app_id.as_deref()?).cloned()
    }

    /// The user of an access token; `None` for a client token.
    pub fn access_user(&self) -> Option<&str> {
        match &self.subject {
            Subject::User(user) => Some(user),
            Subject::Client { .. } => None,
        }
    }
}

/// A freshly minted token: the only time payrelay hands out its plaintext.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintedToken {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    #[error("user id `{0}` must be 1-64 letters, digits, `_`, `-`, `@`, `=` or `,`")]
    BadUserId(String),
    #[error("merchant id `{0}` must be 1-64 letters, digits, `_` or `-`")]
    BadMerchantId(String),
}

impl Subject {
    /// The merchant of a client token.
    pub fn merchant_id(&self) -> Option<&str> {
        match self {
            Subject::User(_) => None,
            Subject::Client { merchant_id, .. } => Some(merchant_id),
        }
    }

    /// The user: always for an access token, optionally for a client token.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Subject::User(user) => Some(user),
            Subject::Client { user_id, .. } => user_id.as_deref(),
        }
    }

    /// Refuses ids that could not travel in channel names.
    pub fn validate(&self) -> Result<(), TokenError> {
        if let Some(m) = self
            .merchant_id()
            .filter(|m| !crate::merchants::store::valid_merchant_id(m))
        {
            return Err(TokenError::BadMerchantId(m.to_string()));
        }
        if let Some(u) = self.user_id().filter(|u| !valid_user_id(u)) {
            return Err(TokenError::BadUserId(u.to_string()));
        }
        Ok(())
    }

    /// A new random token of this subject's kind.
    pub(crate) fn new_token(&self) -> String {
        let prefix = match self {
            Subject::User(_) => TOKEN_PREFIX,
            Subject::Client { .. } => CLIENT_TOKEN_PREFIX,
        };
        let secret: [u8; 20] = rand::rng().random();
        format!("{prefix}{}", hex::encode(secret))
    }

    pub(crate) fn minted(&self, token: String, expires_at: i64) -> MintedToken {
        MintedToken {
            token,
            merchant_id: self.merchant_id().map(String::from),
            user_id: self.user_id().map(String::from),
            expires_at,
        }
    }
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Creates a token for `subject` in `app_id` valid for `ttl`.
    async fn mint(
        &self,
        app_id: &str,
        subject: &Subject,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError>;
    /// What `token` stands for, revoked or expired ones included; `None` if unknown.
    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError>;
    /// Revokes `token`; returns its record as it was, or `None` if unknown.
    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError>;
    /// Revokes every access token of a user; returns the credential ids revoked.
    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError>;
    /// Whether the store answers now (the health probe behind `/readyz`).
    async fn ping(&self) -> Result<(), TokenError>;
    /// Short name for logs.
    fn name(&self) -> &'static str;
}

/// What a recheck finds of a token that opened a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Revoked since: marked so, or deleted before its own expiry.
    Revoked,
    /// Not revoked, with its expiry as the store has it now: the backend that wrote it
    /// may have moved it since the socket opened (a sliding session).
    Current { expires_at: Option<i64> },
}

/// The standing of a token that opened a socket when its expiry was `expires_at`. Redis
/// drops a key at its TTL, so a key missing after that expiry has only expired; one
/// missing before it was deleted, i.e. revoked.
pub async fn standing(
    store: &dyn TokenStore,
    token: &str,
    expires_at: Option<i64>,
) -> Result<Standing, TokenError> {
    Ok(match store.lookup(token).await? {
        Some(record) if record.revoked => Standing::Revoked,
        Some(record) => Standing::Current {
            expires_at: record.expires_at,
        },
        None => match expires_at {
            Some(at) if at <= now_unix() => Standing::Current { expires_at },
            _ => Standing::Revoked,
        },
    })
}

/// When a socket opened with a token expiring at `expires_at` (unix seconds) must close:
/// at the expiry plus `grace`. `None` when the token has no expiry of its own, or one too
/// far off to schedule.
pub fn expiry_deadline(expires_at: Option<i64>, grace: Duration) -> Option<tokio::time::Instant> {
    // The grace runs from the expiry, not from now: a recheck after the expiry must not
    // push the deadline further out.
    let close_at = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(expires_at?.max(0) as u64))?
        .checked_add(grace)?;
    let left = close_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now().checked_add(left)
}

/// An id as backends write it in JSON: a non-empty string, or a number (the seeds' user
/// ids are numbers).
pub fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
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

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The expiry (unix seconds) of a token minted now to live `ttl`, and how long from now
/// that is. Rounded up, so the token lives at least `ttl`: a token is expired from its
/// `expires_at` second on, and the current second plus `ttl` would cut off what has
/// passed of this second (up to a whole one: a 2-second token opened sockets for only
/// just over 1 s when minted late in a second).
pub(crate) fn expiry_after(ttl: Duration) -> (i64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let at = now.saturating_add(ttl);
    let secs = at
        .as_secs()
        .saturating_add(u64::from(at.subsec_nanos() > 0));
    let expires_at = i64::try_from(secs).unwrap_or(i64::MAX);
    (expires_at, Duration::from_secs(secs).saturating_sub(now))
}

/// The app of a Redis token that names none: the one configured, else the node's only
/// app. With several apps and none configured there is none: picking one would sign the
/// token into a tenant its writer may never have meant.
fn default_app(config: &crate::config::Config) -> Option<String> {
    match (&config.redis_token_default_app, config.apps.as_slice()) {
        (Some(app), _) => Some(app.clone()),
        (None, [only]) => Some(only.id.clone()),
        (None, _) => None,
    }
}

/// Opens the store the configuration asks for: Redis when `redis_url` is set, else the
/// node's database `db`; every call bounded by `token_store_timeout_ms`.
pub async fn open(
    config: &crate::config::Config,
    db: &crate::db::Db,
) -> anyhow::Result<Arc<BoundedTokens>> {
    let timeout = Duration::from_millis(config.token_store_timeout_ms);
    let store: Arc<dyn TokenStore> = match &config.redis_url {
        Some(url) => Arc::new(
            RedisTokens::connect(
                url,
                &config.redis_token_prefix,
                default_app(config),
                timeout,
            )
            .await?,
        ),
        None => Arc::new(SqliteTokens::new(db.clone())),
    };
    Ok(Arc::new(BoundedTokens::new(store, timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_grace_runs_from_the_expiry_not_from_each_recheck() {
        let grace = Duration::from_secs(3);
        let expired = now_unix() - 10;
        // Ten seconds past the expiry, a three-second grace is over: close now.
        let deadline = expiry_deadline(Some(expired), grace).unwrap();
        assert!(deadline <= tokio::time::Instant::now());
        let soon = expiry_deadline(Some(now_unix() + 60), grace).unwrap();
        let left = soon - tokio::time::Instant::now();
        assert!(
            left > Duration::from_secs(61) && left <= Duration::from_secs(63),
            "{left:?}"
        );
        assert_eq!(expiry_deadline(None, grace), None, "no expiry of its own");
        assert_eq!(
            expiry_deadline(Some(i64::MAX), grace),
            None,
            "too far to schedule"
        );
    }
}
