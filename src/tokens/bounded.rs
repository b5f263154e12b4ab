//! The token store as the node uses it: every call bounded in time, and the store's
//! health watched for `/readyz`.
//!
//! A store that stops answering (Redis down, the SQLite file locked) must cost a request
//! a quick 503, not the seconds a client library spends reconnecting: admission would
//! stall and every socket's recheck with it. So each call gives up after
//! `token_store_timeout_ms`, and a probe pings the store every [`PROBE_INTERVAL`]. While
//! the probe finds it down, calls fail at once without touching it (the back-off: a
//! dead Redis gets one ping a second from this node, not one command per request), and
//! `/readyz` reports the node unready with the probe's reason. The first good ping puts
//! everything back.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{MintedToken, Subject, TokenError, TokenRecord, TokenStore};

/// How often the store's health is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A forced logout may take this many timeouts (a Redis store scans for the user's keys).
const REVOKE_USER_CALLS: u32 = 30;

/// What `/readyz` says of the token store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub name: &'static str,
    /// Why the store is not usable, as of the last probe; `None` when it is.
    pub problem: Option<String>,
}

/// The latest probe's finding, shared by the store and its probe task.
#[derive(Debug)]
struct Health {
    problem: Mutex<Option<String>>,
}

impl Health {
    fn problem(&self) -> Option<String> {
        self.problem.lock().clone()
    }

    /// Records a probe's result, logging only changes (an outage is one warning, not one
    /// a second), and sets `payrelay_token_store_ready` for alerting.
    fn record(&self, name: &'static str, result: Result<(), TokenError>) {
        metrics::gauge!("payrelay_token_store_ready", "store" => name).set(if result.is_ok() {
            1.0
        } else {
            0.0
        });
        let mut problem = self.problem.lock();
        match (result, problem.is_some()) {
            (Ok(()), true) => {
                tracing::info!(store = name, "token store answers again");
                *problem = None;
            }
            (Ok(()), false) => {}
            (Err(e), was_down) => {
                if !was_down {
                    tracing::warn!(
                        store = name,
                        "token store unavailable: {e}; refusing admissions until it answers"
                    );
                }
                *problem = Some(e.to_string());
            }
        }
    }
}

pub struct BoundedTokens {
    inner: Arc<dyn TokenStore>,
    timeout: Duration,
    health: Arc<Health>,
}

impl BoundedTokens {
    /// Wraps `inner` and starts its probe; the probe ends when the store is dropped.
    pub fn new(inner: Arc<dyn TokenStore>, timeout: Duration) -> BoundedTokens {
        let health = Arc::new(Health {
            problem: Mutex::new(None),
        });
        tokio::spawn(probe(Arc::downgrade(&inner), health.clone(), timeout));
        BoundedTokens {
            inner,
            timeout,
            health,
        }
    }

    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            name: self.inner.name(),
            problem: self.health.problem(),
        }
    }

    /// Runs one call on the store, unless it is known to be down, for at most the timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, TokenError>>,
    ) -> Result<T, TokenError> {
        if let Some(problem) = self.health.problem() {
            return Err(TokenError::Unavailable(problem));
        }
        bounded(self.timeout, call).await
    }
}

async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, TokenError>>,
) -> Result<T, TokenError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(TokenError::Unavailable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))
        })
}

async fn probe(store: Weak<dyn TokenStore>, health: Arc<Health>, timeout: Duration) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        let result = bounded(timeout, store.ping()).await;
        health.record(store.name(), result);
    }
}

#[async_trait]
impl TokenStore for BoundedTokens {
    async fn mint(
        &self,
        app_id: &str,
        subject: &Subject,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        self.call(self.inner.mint(app_id, subject, ttl)).await
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        self.call(self.inner.lookup(token)).await
    }

    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        self.call(self.inner.revoke(token)).await
    }

    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError> {
        // A forced logout scans Redis, many commands: each is bounded by the client's own
        // response timeout, and the whole by this many of ours.
        if let Some(problem) = self.health.problem() {
            return Err(TokenError::Unavailable(problem));
        }
        bounded(
            self.timeout * REVOKE_USER_CALLS,
            self.inner.revoke_user(app_id, user_id),
        )
        .await
    }

    async fn ping(&self) -> Result<(), TokenError> {
        self.call(self.inner.ping()).await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that answers after `delay`, or fails while `down`.
    struct Slow {
        delay: Duration,
        down: Mutex<bool>,
    }

    #[async_trait]
    impl TokenStore for Slow {
        async fn mint(&self, _: &str, _: &Subject, _: Duration) -> Result<MintedToken, TokenError> {
            Err(TokenError::Unavailable("read-only".into()))
        }
        async fn lookup(&self, _: &str) -> Result<Option<TokenRecord>, TokenError> {
            tokio::time::sleep(self.delay).await;
            Ok(None)
        }
        async fn revoke(&self, _: &str) -> Result<Option<TokenRecord>, TokenError> {
            Ok(None)
        }
        async fn revoke_user(&self, _: &str, _: &str) -> Result<Vec<String>, TokenError> {
            Ok(Vec::new())
        }
        async fn ping(&self) -> Result<(), TokenError> {
            if *self.down.lock() {
                Err(TokenError::Unavailable("connection refused".into()))
            } else {
                Ok(())
            }
        }
        fn name(&self) -> &'static str {
            "slow"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_gives_up_after_the_timeout() {
        let store = BoundedTokens::new(
            Arc::new(Slow {
                delay: Duration::from_secs(60),
                down: Mutex::new(false),
            }),
            Duration::from_millis(500),
        );
        let started = tokio::time::Instant::now();
        let err = store.lookup("t").await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert!(err.to_string().contains("no answer within 500 ms"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_found_down_fails_calls_at_once_until_it_answers_again() {
        let inner = Arc::new(Slow {
            delay: Duration::ZERO,
            down: Mutex::new(false),
        });
        let store = BoundedTokens::new(inner.clone(), Duration::from_millis(500));
        tokio::time::sleep(PROBE_INTERVAL / 2).await;
        assert_eq!(store.status().problem, None);
        assert_eq!(store.lookup("t").await.unwrap(), None);

        *inner.down.lock() = true;
        tokio::time::sleep(PROBE_INTERVAL).await;
        let status = store.status();
        assert_eq!(status.name, "slow");
        assert!(status.problem.unwrap().contains("connection refused"));
        assert!(store.lookup("t").await.is_err(), "fails fast while down");

        *inner.down.lock() = false;
        tokio::time::sleep(PROBE_INTERVAL).await;
        assert_eq!(store.status().problem, None);
        assert_eq!(store.lookup("t").await.unwrap(), None);
    }
}
