//! A token bucket: how often one connection may ask for something that costs the server
//! more than the request costs the client.
//!
//! A subscribe request of a hundred bytes can make the server send a presence member list
//! or a cached event of many kilobytes, and announce the subscriber to every other member.
//! The bucket lets a burst through at once (a reconnecting client subscribes to all its
//! channels in one go) and then a steady rate. It lives in the connection task, so it
//! dies with the socket (invariant 8).

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    tokens: f32,
    capacity: f32,
    per_second: f32,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens that refills at `per_second`.
    pub fn new(burst: u32, per_second: u32) -> Self {
        let capacity = burst.max(1) as f32;
        TokenBucket {
            tokens: capacity,
            capacity,
            per_second: per_second as f32,
            refilled_at: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f32();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, 2);
        bucket.refilled_at = start;
        assert!((0..5).all(|_| bucket.take_at(start)), "the burst passes");
        assert!(!bucket.take_at(start), "then the bucket is empty");
        let half = start + Duration::from_millis(500);
        assert!(
            bucket.take_at(half),
            "2 per second: one after half a second"
        );
        assert!(!bucket.take_at(half));
        let later = half + Duration::from_secs(60);
        assert_eq!(
            (0..10).filter(|_| bucket.take_at(later)).count(),
            5,
            "a long pause refills only up to the burst"
        );
    }
}
