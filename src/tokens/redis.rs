//! Access tokens in Redis, in the layout a backend can write itself:
//!
//! - key: `{redis_token_prefix}{token}` (default prefix `payrelay:token:`), the token as
//!   the client presents it;
//! - value: JSON `{"user_id": "120045" | 120045, "app_id": "1", "expires_at": 1740748800,
//!   "revoked": false}`, where only `user_id` is required (no `app_id`: the node's first
//!   app; no `expires_at`: valid while the key exists, so a Redis TTL works as expiry);
//!   a merchant's client token (Socket.IO) is marked `"kind": "client"` and names its
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

use super::{MintedToken, Subject, TokenError, TokenRecord, TokenStore, credential_id, now_unix};

/// The `kind` that marks a merchant's client token.
const CLIENT_KIND: &str = "client";

pub struct RedisTokens {
    connection: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

/// An id a backend may have written as a string or a number.
fn id(json: &Value, field: &str) -> Option<String> {
    super::id_text(json.get(field)?)
}

/// Reads a value as a backend may have written it; `None` if it names nobody.
fn parse_record(value: &str) -> Option<TokenRecord> {
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
    Some(TokenRecord {
        app_id: id(&json, "app_id"),
        subject,
        expires_at: json.get("expires_at").and_then(Value::as_i64),
        revoked: json
            .get("revoked")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

impl RedisTokens {
    /// Connects (and reconnects by itself later); fails if Redis does not answer now.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisTokens, TokenError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection =
            tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
                .await
                .map_err(|_| TokenError::Unavailable(format!("no answer from {url} within 5 s")))?
                .map_err(unavailable)?;
        Ok(RedisTokens {
            connection,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, token: &str) -> String {
        format!("{}{token}", self.prefix)
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
        let expires_at = now_unix().saturating_add(ttl.as_secs() as i64);
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
            .set_ex(self.key(&token), value.to_string(), ttl.as_secs().max(1))
            .await
            .map_err(unavailable)?;
        Ok(subject.minted(token, expires_at))
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = connection.get(self.key(token)).await.map_err(unavailable)?;
        Ok(value.as_deref().and_then(parse_record))
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
                let Some(record) = value.as_deref().and_then(parse_record) else {
                    continue;
                };
                let same_app = record.app_id.as_deref().is_none_or(|a| a == app_id);
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

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
