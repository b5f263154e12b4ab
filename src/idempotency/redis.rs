//! Idempotency keys in Redis, shared by every node: `{redis_prefix}idem:{app}:{route}:{key}`
//! holds `{"f": <fingerprint>, "a"?: {status, body}}`, claimed with `SET NX PX <window>`
//! (one node wins), completed with `SET XX PX`, released with `DEL`.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{Claim, IdempotencyError, IdempotencyStore, StoredAnswer};

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<StoredAnswer>,
}

pub struct RedisIdempotency {
    connection: ConnectionManager,
    prefix: String,
    url: String,
}

impl RedisIdempotency {
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisIdempotency, IdempotencyError> {
        let limits = crate::redis_client::Limits {
            timeout,
            retries: 2,
            max_delay: Duration::from_secs(2),
            connect_within: Duration::from_secs(10),
        };
        let (_, connection) = crate::redis_client::connect(url, limits)
            .await
            .map_err(IdempotencyError::Unavailable)?;
        Ok(RedisIdempotency {
            connection,
            prefix: prefix.to_string(),
            url: url.to_string(),
        })
    }

    fn unavailable(&self, e: redis::RedisError) -> IdempotencyError {
        IdempotencyError::Unavailable(crate::redact::in_text(&e.to_string(), &self.url))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn millis(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        window: Duration,
    ) -> Result<Claim, IdempotencyError> {
        let mut connection = self.connection.clone();
        let redis_key = self.key(key);
        let pending = serde_json::to_string(&Record {
            f: fingerprint.to_string(),
            a: None,
        })
        .unwrap_or_default();
        for _ in 0..3 {
            let set: Option<String> = redis::cmd("SET")
                .arg(&redis_key)
                .arg(&pending)
                .arg("NX")
                .arg("PX")
                .arg(millis(window))
                .query_async(&mut connection)
                .await
                .map_err(|e| self.unavailable(e))?;
            if set.is_some() {
                return Ok(Claim::First);
            }
            let found: Option<String> = redis::cmd("GET")
                .arg(&redis_key)
                .query_async(&mut connection)
                .await
                .map_err(|e| self.unavailable(e))?;
            // Gone between the two (expired, released): claim again.
            let Some(found) = found else { continue };
            let Ok(record) = serde_json::from_str::<Record>(&found) else {
                return Err(IdempotencyError::Unavailable(
                    "an idempotency record in Redis is unreadable".into(),
                ));
            };
            return Ok(match record.a {
                Some(answer) => Claim::Done {
                    fingerprint: record.f,
                    answer,
                },
                None => Claim::Pending {
                    fingerprint: record.f,
                },
            });
        }
        Err(IdempotencyError::Unavailable(
            "an idempotency key kept vanishing while claimed".into(),
        ))
    }

    async fn complete(
        &self,
        key: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        window: Duration,
    ) -> Result<(), IdempotencyError> {
        let mut connection = self.connection.clone();
        let record = serde_json::to_string(&Record {
            f: fingerprint.to_string(),
            a: Some(answer.clone()),
        })
        .unwrap_or_default();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(record)
            .arg("XX")
            .arg("PX")
            .arg(millis(window))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn release(&self, key: &str) {
        let mut connection = self.connection.clone();
        let deleted: Result<i64, _> = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut connection)
            .await;
        if let Err(e) = deleted {
            tracing::warn!(
                "could not release an idempotency key (it expires with the window): {}",
                self.unavailable(e)
            );
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
