//! Throttling of failed merchant authentications: per credential, and per client address
//! within an app.
//!
//! Only failures with a credential count. A merchant backend that authenticates thousands
//! of sockets a minute with good credentials is never slowed, and a request that presents
//! no credential at all (an empty `POST /v1/websocket/auth`, a Socket.IO CONNECT without
//! `apiKey` or `token`) gets its refusal for free and counts against no one: it guesses
//! nothing, and counting it let anyone lock out every merchant behind an address.
//!
//! A failure is counted against two subjects (see [`Subject`]):
//! - the **credential** presented (an API key or a client token, held as a hash prefix),
//!   so a stolen, revoked or guessed credential replayed from many addresses runs out;
//! - the **client address** within the app the credential belongs to, or within "no app"
//!   when it belongs to none (an unknown key: guessing). Failures against one app's keys
//!   never throttle another app's merchants at the same address.
//!
//! Before any lookup, the credential and the address's "no app" subject are checked; once
//! the credential names an app, that app's address subject is. So guessing from an address
//! stops it (good credentials from that same address included, for the rest of the
//! window), while someone failing with a real key is held to that key and that app.
//! Behind a reverse proxy the address must be the client's, not the proxy's:
//! `trusted_proxies` (see `crate::http::client_addr`). IPv6 clients count per /64, the
//! block one host usually holds.
//!
//! The window is fixed, one minute from a subject's first failure. Counts live in this
//! node's memory (with several nodes each counts its own) in two generations of one window
//! each: every operation is O(1), the older generation is dropped whole when the window
//! turns over, and at most [`MAX_TRACKED`] subjects are held. Past that, new subjects go
//! uncounted (`payrelay_auth_failures_untracked_total`) rather than making every failure
//! pay for a sweep: reaching it takes failures from thousands of addresses a minute.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Subjects held at once (~100 B each): bounds the memory failures from many addresses or
/// credentials can make us hold.
pub const MAX_TRACKED: usize = 100_000;

/// What a failure counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A presented API key or client token, as a hash prefix (the secret is not kept).
    Credential([u8; 16]),
    /// A client address (IPv6 as its /64) within an app, or within no app for credentials
    /// that name none.
    Address { app: Option<Arc<str>>, net: IpAddr },
}

impl Subject {
    pub fn credential(secret: &str) -> Subject {
        let digest = Sha256::digest(secret.as_bytes());
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&digest[..16]);
        Subject::Credential(prefix)
    }

    /// The client address within `app` (`None`: failures whose credential named no app).
    pub fn address(app: Option<&Arc<str>>, ip: IpAddr) -> Subject {
        let net = match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
            v4 => v4,
        };
        Subject::Address {
            app: app.cloned(),
            net,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    first: Instant,
    failures: u32,
}

/// Subjects by the generation (window) their first failure fell in. An entry of
/// `previous` began before `started` and so expires before the next turnover, when
/// `previous` is dropped whole.
#[derive(Debug)]
struct Generations {
    started: Instant,
    current: HashMap<Subject, Count>,
    previous: HashMap<Subject, Count>,
}

#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    generations: Mutex<Generations>,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_TRACKED)
    }

    fn with_capacity(limit: u32, window: Duration, max_tracked: usize) -> Self {
        FailureLimiter {
            limit,
            window,
            max_tracked,
            generations: Mutex::new(Generations {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    /// How long the longest-blocked of `subjects` must still wait, if any has used up
    /// its failures for its window.
    pub fn blocked(&self, subjects: &[Subject]) -> Option<Duration> {
        let now = Instant::now();
        let mut generations = self.generations.lock();
        self.turn_over(&mut generations, now);
        subjects
            .iter()
            .filter_map(|subject| {
                let count = generations
                    .current
                    .get(subject)
                    .or_else(|| generations.previous.get(subject))?;
                let elapsed = now.saturating_duration_since(count.first);
                (count.failures >= self.limit && elapsed < self.window)
                    .then(|| self.window - elapsed)
            })
            .max()
    }

    /// Counts one failure against each of `subjects`.
    pub fn record_failure(&self, subjects: &[Subject]) {
        let now = Instant::now();
        let mut generations = self.generations.lock();
        self.turn_over(&mut generations, now);
        for subject in subjects {
            self.record_one(&mut generations, subject, now);
        }
    }

    fn record_one(&self, generations: &mut Generations, subject: &Subject, now: Instant) {
        let live = |count: &Count| now.saturating_duration_since(count.first) < self.window;
        if let Some(count) = generations.current.get_mut(subject) {
            if live(count) {
                count.failures = count.failures.saturating_add(1);
                return;
            }
            // Its window is over (possible only for entries of a just-started generation
            // after a long pause): start a new one below.
            generations.current.remove(subject);
        } else if let Some(count) = generations.previous.get_mut(subject) {
            if live(count) {
                count.failures = count.failures.saturating_add(1);
                return;
            }
            generations.previous.remove(subject);
        }
        if generations.current.len() + generations.previous.len() >= self.max_tracked {
            metrics::counter!("payrelay_auth_failures_untracked_total").increment(1);
            return;
        }
        generations.current.insert(
            subject.clone(),
            Count {
                first: now,
                failures: 1,
            },
        );
    }

    /// Starts a new generation once the current one is a window old; what was begun two
    /// generations ago has expired by then and is dropped whole.
    fn turn_over(&self, generations: &mut Generations, now: Instant) {
        let age = now.saturating_duration_since(generations.started);
        if age < self.window {
            return;
        }
        generations.previous = if age >= self.window * 2 {
            // Idle for two windows: everything has expired.
            generations.current.clear();
            HashMap::new()
        } else {
            std::mem::take(&mut generations.current)
        };
        generations.current = HashMap::new();
        generations.started = now;
    }

    /// Subjects held now (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        let generations = self.generations.lock();
        generations.current.len() + generations.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> Subject {
        Subject::address(None, ip.parse().unwrap())
    }

    #[test]
    fn failures_block_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        let a = [addr("10.0.0.1")];
        for _ in 0..3 {
            assert_eq!(limiter.blocked(&a), None);
            limiter.record_failure(&a);
        }
        assert!(limiter.blocked(&a).is_some());
        assert_eq!(
            limiter.blocked(&[addr("10.0.0.2")]),
            None,
            "subjects are independent"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked(&a), None);
        limiter.record_failure(&a);
        assert_eq!(limiter.blocked(&a), None, "a new window starts at zero");
    }

    #[test]
    fn a_subject_keeps_its_window_across_a_turnover() {
        let limiter = FailureLimiter::new(2, Duration::from_millis(300));
        let a = [addr("10.0.0.1")];
        // First failure late in the first generation, second after the turnover.
        std::thread::sleep(Duration::from_millis(200));
        limiter.record_failure(&a);
        std::thread::sleep(Duration::from_millis(150));
        limiter.record_failure(&[addr("10.0.0.9")]); // turns the generation over
        limiter.record_failure(&a);
        let wait = limiter
            .blocked(&a)
            .expect("blocked: both failures are in its window");
        assert!(
            wait <= Duration::from_millis(150),
            "{wait:?}: measured from the first"
        );
    }

    #[test]
    fn the_app_scopes_addresses_and_ipv6_counts_per_64() {
        let ip: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let app: Arc<str> = Arc::from("1");
        assert_eq!(Subject::address(None, ip), Subject::address(None, same_64));
        assert_ne!(Subject::address(None, ip), Subject::address(None, other_64));
        assert_ne!(Subject::address(None, ip), Subject::address(Some(&app), ip));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            Subject::address(None, mapped),
            Subject::address(None, "192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn credential_subjects_do_not_hold_the_secret() {
        let subject = Subject::credential("prk_0123456789abcdef");
        assert!(!format!("{subject:?}").contains("0123456789abcdef"));
        assert_eq!(subject, Subject::credential("prk_0123456789abcdef"));
        assert_ne!(subject, Subject::credential("prk_0123456789abcdeF"));
    }

    /// Issue 12 item 3: past 100 000 subjects every failure used to sweep the whole map.
    /// Here 300 000 failures of distinct subjects (three times the cap) stay linear: held
    /// subjects never exceed the cap, and the run takes well under what 200 000 sweeps of
    /// 100 000 entries would (minutes).
    #[test]
    fn cost_and_memory_stay_bounded_past_the_cap() {
        let limiter = FailureLimiter::new(20, Duration::from_secs(60));
        let started = Instant::now();
        for i in 0..3 * MAX_TRACKED as u32 {
            let subject = [Subject::address(None, IpAddr::from(i.to_be_bytes()))];
            limiter.record_failure(&subject);
            assert!(limiter.blocked(&subject).is_none());
        }
        let took = started.elapsed();
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        assert!(took < Duration::from_secs(30), "took {took:?}");
        // Subjects already held keep counting when the table is full.
        let first = [Subject::address(None, IpAddr::from(0u32.to_be_bytes()))];
        for _ in 0..19 {
            limiter.record_failure(&first);
        }
        assert!(limiter.blocked(&first).is_some());
    }

    #[test]
    fn a_full_table_frees_up_when_the_window_turns_over() {
        let limiter = FailureLimiter::with_capacity(1, Duration::from_millis(100), 10);
        for i in 0..10u32 {
            limiter.record_failure(&[Subject::address(None, IpAddr::from(i.to_be_bytes()))]);
        }
        let late = [addr("192.0.2.200")];
        limiter.record_failure(&late);
        assert_eq!(limiter.blocked(&late), None, "untracked while full");
        std::thread::sleep(Duration::from_millis(220));
        limiter.record_failure(&late);
        assert!(
            limiter.blocked(&late).is_some(),
            "tracked again after the turnover"
        );
        assert_eq!(limiter.tracked(), 1);
    }
}
