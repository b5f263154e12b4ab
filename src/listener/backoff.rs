//! What the accept loop does when `accept` fails.
//!
//! Some errors belong to one connection (the client reset it while it waited in the
//! backlog): the next `accept` may succeed at once. The others say the process or the
//! machine is out of something (EMFILE, ENFILE, ENOBUFS, ENOMEM): the pending connection
//! stays in the backlog, the listener stays readable, and retrying at once would spin a
//! core and flood the log while nothing gets better. So the loop pauses, doubling the
//! pause up to a second, and logs the condition once per interval with a count, until
//! files are freed (connections time out or close) and `accept` succeeds again.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct AcceptBackoff {
    pause: Option<Duration>,
    last_logged: Option<Instant>,
    not_logged: u64,
}

impl AcceptBackoff {
    /// `accept` succeeded: the next failure starts from the shortest pause again.
    /// (The log stays rate-limited across successes: under a file shortage, accepts
    /// succeed and fail in turn as connections close.)
    pub fn succeeded(&mut self) {
        self.pause = None;
    }

    /// How long to wait before the next `accept` after `error`; `None` to try at once.
    pub fn failed(&mut self, error: &io::Error) -> Option<Duration> {
        metrics::counter!("payrelay_accept_errors_total").increment(1);
        if belongs_to_one_connection(error) {
            tracing::debug!("accept: {error}");
            return None;
        }
        let pause = self
            .pause
            .map_or(FIRST_PAUSE, |p| (p * 2).min(LONGEST_PAUSE));
        self.pause = Some(pause);
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            tracing::warn!(
                repeated = self.not_logged,
                pause_ms = pause.as_millis() as u64,
                "accept error: {error}; pausing accept (raise the file limit or lower max_tcp_connections)"
            );
            self.last_logged = Some(now);
            self.not_logged = 0;
        } else {
            self.not_logged += 1;
        }
        Some(pause)
    }
}

fn belongs_to_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn pauses_double_up_to_a_second_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<_> = (0..10)
            .map(|_| backoff.failed(&emfile()).unwrap())
            .collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), LONGEST_PAUSE);
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile()), Some(FIRST_PAUSE));
    }

    #[test]
    fn a_reset_client_does_not_pause_the_loop() {
        let mut backoff = AcceptBackoff::default();
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&reset), None);
    }
}
