//! Connecting to Redis, one way for everything that uses it (the broker, the token store,
//! idempotency keys).
//!
//! The redis crate's defaults wait for a reply for ever and retry a lost connection for
//! about eight seconds, holding every caller meanwhile; here connecting and every command
//! give up after the caller's timeout and reconnection backs off within a bound. The URL
//! may carry a password: errors name it redacted, and a library message that quotes it is
//! scrubbed.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How a connection behaves once open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting, and waiting for any one reply.
    pub timeout: Duration,
    /// Attempts to reconnect before a command fails.
    pub retries: usize,
    /// The longest pause between reconnection attempts.
    pub max_delay: Duration,
    /// How long the first connection may take before start-up fails.
    pub connect_within: Duration,
}

/// The client for `url` and a connection that reconnects by itself; fails (with a
/// message safe to log) if Redis does not answer within `limits.connect_within`.
pub async fn connect(
    url: &str,
    limits: Limits,
) -> Result<(redis::Client, ConnectionManager), String> {
    let failed = |e: redis::RedisError| {
        format!(
            "{}: {}",
            crate::redact::url(url),
            crate::redact::in_text(&e.to_string(), url)
        )
    };
    let client = redis::Client::open(url).map_err(failed)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(limits.timeout))
        .set_response_timeout(Some(limits.timeout))
        .set_number_of_retries(limits.retries)
        .set_max_delay(limits.max_delay);
    let connection = tokio::time::timeout(
        limits.connect_within,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer from {} within {:?}",
            crate::redact::url(url),
            limits.connect_within
        )
    })?
    .map_err(failed)?;
    Ok((client, connection))
}
