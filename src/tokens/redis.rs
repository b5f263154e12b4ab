//! Access tokens in Redis, in the layout a backend can write itself:
//!
//! - key: `{redis_token_prefix}{token}` (default prefix `payrelay:token:`), the token as
//!   the client presents it;
//! - value: JSON `{"user_id": "120045" | 120045, "app_id": "1", "expires_at": 1740748800,
//!   "revoked": false}`, where only `user_id` is required. No `app_id`: the node's only
//!   app, or `redis_token_default_app` when several are served, else the token opens
//!   nothing (a guess could sign it into another tenant). No `expires_at` (or `null`):
//!   valid while the key exists, so a Redis TTL works as expiry; otherwise unix seconds as
//!   an integer, a float or a numeric string, and anything else makes the record
//!   unreadable, i.e. refused (as is a `revoked` that is not a boolean). A merchant's
//!   client token (Socket.IO) is marked `"kind": "client"` and names its
//!   `"merchant_id"` (`user_id` is then optional; `key_id` names the API key that
//!   minted it). Without that mark a value is an
//!   access token, whatever other fields (a `merchant_id` of the user, say) it carries,
//!   so a backend's user token never opens a merchant's Socket.IO room;
//! - revocation: delete the key, or set `"revoked": true`.
//!
//! payrelay writes the same layout when it mints (`SET ... EX ttl`) and deletes the key
//! when it revokes.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::Value;

use super::{
    MintedToken, Subject, TokenError, TokenRecord, TokenStore, credential_id, expiry_after,
};

/// How long start-up waits for Redis to answer.
const CONNECT_AT_START: Duration = Duration::from_secs(5);
/// Reconnection attempts after a lost connection, before the next command starts over.
const RECONNECT_RETRIES: usize = 2;
/// The longest pause between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The `kind` that marks a merchant's client token.
const CLIENT_KIND: &str = "client";

pub struct RedisTokens {
    connection: ConnectionManager,
    prefix: String,
    /// The app of records that name none; `None` refuses them.
    default_app: Option<String>,
}

fn unavailable(e: redis::RedisError) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

/// An id a backend may have written as a string or a number.
fn id(json: &Value, field: &str) -> Option<String> {
    super::id_text(json.get(field)?)
}

/// The latest expiry accepted (9999-12-31): a larger number is not seconds (milliseconds,
/// most likely), and guessing its unit could keep a token alive for ever.
const LATEST_EXPIRY: f64 = 253_402_300_799.0;

/// `expires_at` as a backend may write it: `Ok(None)` when absent or `null`, unix seconds
/// (an integer, a float or a numeric string; fractions round down) or `Err` for anything
/// else. An unreadable expiry must refuse the token, never make it immortal.
fn expiry(json: &Value) -> Result<Option<i64>, ()> {
    let seconds = match json.get("expires_at") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(whole) => whole as f64,
            None => n.as_f64().ok_or(())?,
        },
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| ())?,
        Some(_) => return Err(()),
    };
    if !seconds.is_finite() || seconds.abs() > LATEST_EXPIRY {
        return Err(());
    }
    Ok(Some(seconds.floor() as i64))
}

/// Reads a value as a backend may have written it; `None` if it names nobody or cannot be
/// read safely. `default_app` is the app of a record that names none.
fn parse_record(value: &str, default_app: Option<&str>) -> Option<TokenRecord> {
    let json: Value = serde_json::from_str(value).ok()?;
    let user_id = id(&json, "user_id");
    let subject = if json.get("kind").and_then(Value::as_str) == Some(CLIENT_KIND) {
        Subject::Client {
            merchant_id: id(&json, "merchant_id")?,
            user_id,
            minted_with: id(&json, "key_id"),
        }
    } else {
        Subject::User(user_id?)
    };
    let revoked = match json.get("revoked") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(revoked)) => *revoked,
        Some(_) => return None,
    };
    Some(TokenRecord {
        app_id: id(&json, "app_id").or_else(|| default_app.map(String::from)),
        subject,
        expires_at: expiry(&json).ok()?,
        revoked,
    })
}

impl RedisTokens {
    /// Connects (and reconnects by itself later); fails if Redis does not answer now.
    /// Records without `app_id` belong to `default_app`, or to no app when it is `None`.
    /// Connecting and every command give up after `timeout`, and reconnection backs off
    /// up to `MAX_RECONNECT_DELAY`: the client never holds a caller longer than that
    /// (the defaults wait for a reply for ever and retried for about eight seconds).
    pub async fn connect(
        url: &str,
        prefix: &str,
        default_app: Option<String>,
        timeout: Duration,
    ) -> Result<RedisTokens, TokenError> {
        let limits = crate::redis_client::Limits {
            timeout,
            retries: RECONNECT_RETRIES,
            max_delay: MAX_RECONNECT_DELAY,
            connect_within: CONNECT_AT_START,
        };
        let (_, connection) = crate::redis_client::connect(url, limits)
            .await
            .map_err(TokenError::Unavailable)?;
        Ok(RedisTokens {
            connection,
            prefix: prefix.to_string(),
            default_app,
        })
    }

    fn key(&self, token: &str) -> String {
        format!("{}{token}", self.prefix)
    }

    /// A stored value as a record; an unreadable one is logged (by credential id, never
    /// the token) and treated as unknown.
    fn read(&self, token: &str, value: &str) -> Option<TokenRecord> {
        let record = parse_record(value, self.default_app.as_deref());
        if record.is_none() {
            tracing::warn!(
                credential = %credential_id(token),
                "unreadable token record in Redis (needs user_id or kind/merchant_id, expires_at in unix seconds, revoked as a boolean): refused"
            );
        }
        record
    }
}

#[async_trait]
impl TokenStore for RedisTokens {
    async fn mint(
        &self,
        app_id: &str,
        subject: &Subject,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        subject.validate()?;
        let token = subject.new_token();
        let (expires_at, left) = expiry_after(ttl);
        let mut value = serde_json::json!({"app_id": app_id, "expires_at": expires_at});
        if let Some(user) = subject.user_id() {
            value["user_id"] = user.into();
        }
        if let Subject::Client {
            merchant_id,
            minted_with,
            ..
        } = subject
        {
            value["kind"] = CLIENT_KIND.into();
            value["merchant_id"] = merchant_id.as_str().into();
            if let Some(key_id) = minted_with {
                value["key_id"] = key_id.as_str().into();
            }
        }
        let mut connection = self.connection.clone();
        let _: () = connection
            // The key goes when the token expires, not earlier: one missing before its
            // `expires_at` reads as revoked (`standing`).
            .pset_ex(
                self.key(&token),
                value.to_string(),
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
            )
            .await
            .map_err(unavailable)?;
        Ok(subject.minted(token, expires_at))
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = connection.get(self.key(token)).await.map_err(unavailable)?;
        Ok(value.and_then(|value| self.read(token, &value)))
    }

    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let record = self.lookup(token).await?;
        let mut connection = self.connection.clone();
        let _: () = connection.del(self.key(token)).await.map_err(unavailable)?;
        Ok(record)
    }

    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError> {
        // Redis keeps no index by user; forced logouts are rare, so a SCAN is fine.
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut revoked = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            for key in keys {
                let value: Option<String> = connection.get(&key).await.map_err(unavailable)?;
                let Some(record) = value
                    .as_deref()
                    .and_then(|v| parse_record(v, self.default_app.as_deref()))
                else {
                    continue;
                };
                // A record that names no app is the default app's, or nobody's.
                let same_app = record.app_id.as_deref() == Some(app_id);
                if record.access_user() == Some(user_id) && same_app {
                    let _: () = connection.del(&key).await.map_err(unavailable)?;
                    revoked.push(credential_id(&key[self.prefix.len()..]));
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(revoked)
    }

    async fn ping(&self) -> Result<(), TokenError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_record(value: &str) -> Option<TokenRecord> {
        super::parse_record(value, None)
    }

    #[test]
    fn a_record_without_app_is_the_default_apps_or_nobodys() {
        let value = r#"{"user_id":"u1"}"#;
        assert_eq!(parse_record(value).unwrap().app_id, None);
        let record = super::parse_record(value, Some("2")).unwrap();
        assert_eq!(record.app_id.as_deref(), Some("2"));
        let named = super::parse_record(r#"{"user_id":"u1","app_id":"3"}"#, Some("2")).unwrap();
        assert_eq!(named.app_id.as_deref(), Some("3"), "a named app wins");
    }

    #[test]
    fn values_written_by_another_backend_are_read() {
        let record = parse_record(r#"{"user_id":120045}"#).unwrap();
        assert_eq!(record.access_user(), Some("120045"));
        assert_eq!(record.app_id, None);
        assert!(!record.revoked);
        let record =
            parse_record(r#"{"user_id":"u1","app_id":"1","expires_at":5,"revoked":true}"#).unwrap();
        assert!(record.revoked && record.is_expired(6));
        assert_eq!(parse_record(r#"{"user":"x"}"#), None);
        let record = parse_record(r#"{"kind":"client","merchant_id":"m1"}"#).unwrap();
        assert_eq!(
            record.subject,
            Subject::Client {
                merchant_id: "m1".into(),
                user_id: None,
                minted_with: None,
            }
        );
        // A user's access token that happens to carry a merchant id stays a user's.
        let record = parse_record(r#"{"user_id":"u1","merchant_id":"m1"}"#).unwrap();
        assert_eq!(record.access_user(), Some("u1"));
        assert_eq!(parse_record(r#"{"kind":"client","user_id":"u1"}"#), None);
        assert_eq!(parse_record("not json"), None);
    }

    fn expiry_of(value: &str) -> Option<Option<i64>> {
        parse_record(&format!(
            r#"{{"user_id":"u1","app_id":"1","expires_at":{value}}}"#
        ))
        .map(|record| record.expires_at)
    }

    #[test]
    fn expiry_is_read_as_an_integer_a_float_or_a_numeric_string() {
        assert_eq!(expiry_of("1740748800"), Some(Some(1740748800)));
        // A fraction of a second rounds down: a token never outlives its writer's intent.
        assert_eq!(expiry_of("1740748800.9"), Some(Some(1740748800)));
        assert_eq!(expiry_of(r#""1740748800""#), Some(Some(1740748800)));
        assert_eq!(expiry_of(r#""1740748800.5""#), Some(Some(1740748800)));
        assert_eq!(expiry_of("-5"), Some(Some(-5)), "long past: expired");
        assert_eq!(
            expiry_of("null"),
            Some(None),
            "null says: no expiry of its own"
        );
    }

    #[test]
    fn an_unreadable_expiry_or_revocation_refuses_the_token() {
        // Read as "never expires" or "not revoked", each would keep a token alive for ever.
        for value in [
            r#""soon""#,
            r#""""#,
            r#""NaN""#,
            r#""inf""#,
            "true",
            "{}",
            "[1740748800]",
            // Milliseconds (year 57 000 read as seconds) are refused, not guessed.
            "1740748800000",
        ] {
            assert_eq!(expiry_of(value), None, "expires_at = {value}");
        }
        for value in [r#""true""#, "1", r#""yes""#, "{}"] {
            let json = format!(r#"{{"user_id":"u1","app_id":"1","revoked":{value}}}"#);
            assert_eq!(parse_record(&json), None, "revoked = {value}");
        }
    }
}
