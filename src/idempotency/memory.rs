//! Idempotency keys in the node's memory (one node): at most `max_entries`, each kept for
//! the window; when full, expired keys go first, then the oldest.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Claim, IdempotencyError, IdempotencyStore, StoredAnswer};

/// Keys one node remembers at most (about 100 MB at 1 KiB answers).
pub const MAX_ENTRIES: usize = 100_000;

struct Entry {
    fingerprint: String,
    answer: Option<StoredAnswer>,
    expires: Instant,
}

#[derive(Default)]
struct Keys {
    entries: HashMap<String, Entry>,
    /// Keys in claim order, for eviction (may name keys already gone).
    order: VecDeque<(String, Instant)>,
}

pub struct MemoryIdempotency {
    keys: parking_lot::Mutex<Keys>,
    max_entries: usize,
}

impl MemoryIdempotency {
    pub fn new(max_entries: usize) -> Self {
        MemoryIdempotency {
            keys: parking_lot::Mutex::new(Keys::default()),
            max_entries: max_entries.max(1),
        }
    }

    fn make_room(keys: &mut Keys, max: usize, now: Instant) {
        while keys.entries.len() >= max {
            let Some((key, expires)) = keys.order.pop_front() else {
                break;
            };
            // Only the entry this order record was made for (a key claimed again after
            // expiring has a newer record).
            if keys.entries.get(&key).is_some_and(|e| e.expires == expires) {
                keys.entries.remove(&key);
                if expires > now {
                    metrics::counter!("payrelay_idempotency_evicted_total").increment(1);
                }
            }
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        window: Duration,
    ) -> Result<Claim, IdempotencyError> {
        let now = Instant::now();
        let mut keys = self.keys.lock();
        if let Some(entry) = keys.entries.get(key)
            && entry.expires > now
        {
            return Ok(match &entry.answer {
                Some(answer) => Claim::Done {
                    fingerprint: entry.fingerprint.clone(),
                    answer: answer.clone(),
                },
                None => Claim::Pending {
                    fingerprint: entry.fingerprint.clone(),
                },
            });
        }
        Self::make_room(&mut keys, self.max_entries, now);
        let expires = now + window;
        keys.entries.insert(
            key.to_string(),
            Entry {
                fingerprint: fingerprint.to_string(),
                answer: None,
                expires,
            },
        );
        keys.order.push_back((key.to_string(), expires));
        Ok(Claim::First)
    }

    async fn complete(
        &self,
        key: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        _window: Duration,
    ) -> Result<(), IdempotencyError> {
        let mut keys = self.keys.lock();
        if let Some(entry) = keys.entries.get_mut(key)
            && entry.fingerprint == fingerprint
        {
            entry.answer = Some(answer.clone());
        }
        Ok(())
    }

    async fn release(&self, key: &str) {
        self.keys.lock().entries.remove(key);
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keys_expire_after_the_window_and_the_bound_holds() {
        let store = MemoryIdempotency::new(2);
        let window = Duration::from_secs(10);
        assert_eq!(store.claim("a", "f", window).await.unwrap(), Claim::First);
        assert!(matches!(
            store.claim("a", "f", window).await.unwrap(),
            Claim::Pending { .. }
        ));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.claim("a", "f", window).await.unwrap(), Claim::First);
        store.claim("b", "f", window).await.unwrap();
        store.claim("c", "f", window).await.unwrap();
        assert!(store.keys.lock().entries.len() <= 2);
    }
}
