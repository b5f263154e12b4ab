//! Throttling of failed merchant authentications, per API key and per client address.
//!
//! Only failures count: a merchant backend that authenticates thousands of sockets a
//! minute with good credentials is never slowed, while guessing keys or replaying a stolen
//! token from one address runs into the limit quickly. The window is fixed (one minute
//! from the first failure), which is enough for that and costs one map entry per subject.
//! Counts live in this node's memory; with several nodes each node counts its own.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Subjects tracked before expired windows are swept; bounds the memory an attacker
/// using many addresses or keys can make us hold (~100 B each).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    failures: DashMap<String, (Instant, u32)>,
}

/// A subject of the limit: the client's address, or the API key it presented (kept as a
/// hash prefix, so key material is not held in memory longer than the request).
pub fn address_subject(ip: std::net::IpAddr) -> String {
    format!("addr:{ip}")
}

pub fn key_subject(api_key: &str) -> String {
    let digest = Sha256::digest(api_key.as_bytes());
    format!("key:{}", hex::encode(&digest[..12]))
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureLimiter {
            limit,
            window,
            failures: DashMap::new(),
        }
    }

    /// How long `subject` must wait, if it has used up its failures for this window.
    pub fn blocked(&self, subject: &str) -> Option<Duration> {
        let entry = self.failures.get(subject)?;
        let (start, count) = *entry;
        let elapsed = start.elapsed();
        (count >= self.limit && elapsed < self.window).then(|| self.window - elapsed)
    }

    pub fn record_failure(&self, subject: &str) {
        if self.failures.len() >= MAX_TRACKED {
            let window = self.window;
            self.failures
                .retain(|_, (start, _)| start.elapsed() < window);
        }
        let now = Instant::now();
        let mut entry = self.failures.entry(subject.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(limiter.blocked("addr:1"), None);
            limiter.record_failure("addr:1");
        }
        assert!(limiter.blocked("addr:1").is_some());
        assert_eq!(limiter.blocked("addr:2"), None, "subjects are independent");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked("addr:1"), None);
        limiter.record_failure("addr:1");
        assert_eq!(
            limiter.blocked("addr:1"),
            None,
            "a new window starts at zero"
        );
    }

    #[test]
    fn key_subjects_do_not_hold_the_key() {
        let subject = key_subject("prk_0123456789abcdef");
        assert!(!subject.contains("0123456789abcdef"));
        assert_eq!(subject, key_subject("prk_0123456789abcdef"));
    }
}
