//! What an HTTP connection is doing, as far as its timeouts care, and when it must end.
//!
//! hyper's own header timer starts whenever a connection waits for a request, idle or
//! not, so it cannot keep a short limit on sending headers beside a long keep-alive (a
//! load balancer pools connections for a minute; a slow-headers client must be cut off
//! in seconds). So the connection's reads and its requests report here, and the
//! connection task asks [`Activity::next`] what the next deadline is:
//!
//! - before the first request: the header timeout from the moment the connection was
//!   ready (accepted, or its TLS handshake done): a client that sends nothing, or drips
//!   its headers, is cut off;
//! - while a request runs: nothing here (the request timeout is the service's);
//! - idle after a response: the keep-alive timeout, unless bytes of a new request have
//!   arrived, in which case the header timeout from the first of them.
//!
//! The reads only record a timestamp on the first read of an idle period, so the cost on
//! a busy connection (or an upgraded WebSocket, whose IO still passes through here) is
//! one atomic load per read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// "No such moment yet" in the millisecond fields.
const NONE: u64 = u64::MAX;

/// The connection-level timeouts (see docs/configuration.md).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub request: Duration,
}

pub struct Activity {
    origin: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `origin` when the last response was produced; NONE before one.
    idle_since: AtomicU64,
    /// Milliseconds after `origin` of the first byte read while idle; NONE otherwise.
    head_started: AtomicU64,
}

/// What the connection task does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing is due before this moment; ask again then.
    CheckAt(Instant),
    /// A client is too slow to send a request's headers: close the connection.
    HeadersTooSlow,
    /// Idle for the keep-alive timeout: close it gracefully.
    IdleTooLong,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(NONE),
            head_started: AtomicU64::new(NONE),
        }
    }
}

impl Activity {
    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    /// The connection read some bytes.
    pub fn bytes_read(&self) {
        if self.head_started.load(Ordering::Relaxed) == NONE
            && self.in_flight.load(Ordering::Acquire) == 0
        {
            self.head_started
                .store(self.elapsed_ms(), Ordering::Relaxed);
        }
    }

    /// A request's headers are in and its handler runs until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// What is due for a connection that was ready at `ready_at`.
    ///
    /// The task is not woken by requests starting or ending, so it never sleeps longer
    /// than the shortest deadline that could begin meanwhile: then no deadline is missed.
    pub fn next(&self, now: Instant, ready_at: Instant, timeouts: &Timeouts) -> Next {
        let look_again = now + timeouts.header_read.min(timeouts.keep_alive);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Next::CheckAt(look_again);
        }
        let idle_since = self.idle_since.load(Ordering::Acquire);
        let head_started = self.head_started.load(Ordering::Relaxed);
        let (deadline, expired) = if idle_since == NONE {
            (ready_at + timeouts.header_read, Next::HeadersTooSlow)
        } else if head_started != NONE {
            (
                self.at(head_started) + timeouts.header_read,
                Next::HeadersTooSlow,
            )
        } else {
            (self.at(idle_since) + timeouts.keep_alive, Next::IdleTooLong)
        };
        if now >= deadline {
            expired
        } else {
            Next::CheckAt(deadline.min(look_again))
        }
    }
}

/// Marks a request as running; dropping it (response produced, or the request abandoned)
/// starts the idle period.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.head_started.store(NONE, Ordering::Relaxed);
        activity
            .idle_since
            .store(activity.elapsed_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        handshake: Duration::from_secs(10),
        header_read: Duration::from_secs(5),
        keep_alive: Duration::from_secs(60),
        request: Duration::from_secs(30),
    };

    #[test]
    fn each_phase_has_its_deadline() {
        let activity = Arc::new(Activity::default());
        let ready = activity.origin;
        // Before the first request: the header timeout from readiness, bytes or not.
        assert_eq!(
            activity.next(ready, ready, &TIMEOUTS),
            Next::CheckAt(ready + TIMEOUTS.header_read)
        );
        activity.bytes_read();
        assert_eq!(
            activity.next(ready + TIMEOUTS.header_read, ready, &TIMEOUTS),
            Next::HeadersTooSlow
        );
        // A running request has no deadline here.
        let request = activity.request_started();
        let much_later = ready + Duration::from_secs(3600);
        assert!(matches!(
            activity.next(much_later, ready, &TIMEOUTS),
            Next::CheckAt(_)
        ));
        drop(request);
        // Idle: keep-alive, until a byte of the next request arrives; looked at again
        // no later than a new header timeout could end.
        let idle_since = activity.at(activity.idle_since.load(Ordering::Relaxed));
        assert_eq!(
            activity.next(idle_since, ready, &TIMEOUTS),
            Next::CheckAt(idle_since + TIMEOUTS.header_read)
        );
        let almost = idle_since + TIMEOUTS.keep_alive - Duration::from_secs(1);
        assert_eq!(
            activity.next(almost, ready, &TIMEOUTS),
            Next::CheckAt(idle_since + TIMEOUTS.keep_alive)
        );
        assert_eq!(
            activity.next(idle_since + TIMEOUTS.keep_alive, ready, &TIMEOUTS),
            Next::IdleTooLong
        );
        activity.bytes_read();
        let head = activity.at(activity.head_started.load(Ordering::Relaxed));
        assert_eq!(
            activity.next(head, ready, &TIMEOUTS),
            Next::CheckAt(head + TIMEOUTS.header_read)
        );
    }
}
