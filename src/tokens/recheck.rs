//! A connection's periodic credential check, run beside its task and never inside it.
//!
//! Sockets look their token or key up again now and then, so a revocation made behind
//! payrelay's back still closes them. Awaited inside the connection's own loop, a lookup
//! that hangs (a store outage, a client library reconnecting) stopped the loop from
//! draining its outbox: the queue overflowed and healthy sockets were closed as slow
//! consumers. So each check runs in a task of its own, bounded by [`CHECK_TIMEOUT`], and
//! the connection's loop only picks up the verdict when it is ready. At most one check
//! runs at a time; ticks missed meanwhile are not made up in a burst.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::task::AbortOnDropHandle;

/// The longest a check may take before it counts as "no answer" (the store's own calls
/// give up sooner; this bounds a check that makes several).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct BackgroundCheck<T> {
    tick: Interval,
    running: Option<AbortOnDropHandle<Option<T>>>,
}

impl<T: Send + 'static> BackgroundCheck<T> {
    /// Checks every `period`, the first one period from now.
    pub fn every(period: Duration) -> Self {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        BackgroundCheck {
            tick,
            running: None,
        }
    }

    /// Starts `check` on its own task at each tick, unless one is still running, and
    /// resolves with the verdict of one that finished: `None` if it timed out (or
    /// panicked). Cancel-safe, so it can be a `select!` branch: a running check survives
    /// the branch losing, and dropping the `BackgroundCheck` aborts it.
    pub async fn next<F, Fut>(&mut self, mut check: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        loop {
            match &mut self.running {
                Some(running) => {
                    let verdict = running.await;
                    self.running = None;
                    return verdict.ok().flatten();
                }
                None => {
                    self.tick.tick().await;
                    let check = tokio::time::timeout(CHECK_TIMEOUT, check());
                    self.running = Some(AbortOnDropHandle::new(tokio::spawn(async move {
                        check.await.ok()
                    })));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_times_out_and_only_one_runs_at_a_time() {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut recheck = BackgroundCheck::every(Duration::from_secs(1));
        let begin = tokio::time::Instant::now();
        let verdict = recheck
            .next(|| {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<bool>()
            })
            .await;
        assert_eq!(verdict, None);
        assert_eq!(begin.elapsed(), Duration::from_secs(1) + CHECK_TIMEOUT);
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        let verdict = recheck.next(|| async { true }).await;
        assert_eq!(verdict, Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn the_caller_keeps_working_while_a_check_runs() {
        let mut recheck = BackgroundCheck::every(Duration::from_secs(1));
        let mut other_work = 0;
        let verdict = loop {
            tokio::select! {
                verdict = recheck.next(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "revoked"
                }) => break verdict,
                () = tokio::time::sleep(Duration::from_millis(100)) => other_work += 1,
            }
        };
        assert_eq!(verdict, Some("revoked"));
        assert!(other_work >= 39, "the loop kept running: {other_work}");
    }
}
