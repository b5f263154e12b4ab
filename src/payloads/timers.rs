//! Expiry timers: one task holds the payloads coming due soon, ordered by expiry, and
//! expires each at its time.
//!
//! Durable without being stored: the table is the truth, and the sweeper arms, every
//! `sweep_interval_ms`, the timers of every unopened payload due within the next two
//! intervals, whichever node created it and whether or not this node restarted since.
//! A payload created on this node that is due sooner is armed at once. So the set stays
//! small (what is due in the next seconds), and a timer lost with a process is found
//! again by the next sweep. Expiring is a conditional update: when several nodes hold
//! the same timer, one expires the payload and announces it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Payloads;
use crate::db::now_ms;

/// The handle payloads arm timers with.
pub(super) struct Timers {
    arm: mpsc::UnboundedSender<(i64, String)>,
}

pub(super) type Armed = mpsc::UnboundedReceiver<(i64, String)>;

impl Timers {
    pub(super) fn new() -> (Timers, Armed) {
        let (arm, armed) = mpsc::unbounded_channel();
        (Timers { arm }, armed)
    }

    /// Expires `uuid` at `expires_at` (ms since the epoch); arming it twice is once.
    pub(super) fn arm(&self, uuid: &str, expires_at: i64) {
        let _ = self.arm.send((expires_at, uuid.to_string()));
    }
}

/// The timer task: sleeps until the soonest expiry, then expires every payload due.
pub(super) async fn run(payloads: Weak<Payloads>, mut armed: Armed, stop: CancellationToken) {
    let mut queue: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut known: HashSet<String> = HashSet::new();
    let gauge = metrics::gauge!("payrelay_payload_timers");
    loop {
        let wait = queue
            .first()
            .map(|(at, _)| Duration::from_millis((at - now_ms()).max(0) as u64));
        tokio::select! {
            () = stop.cancelled() => return,
            next = armed.recv() => match next {
                Some((at, uuid)) => {
                    if known.insert(uuid.clone()) {
                        queue.insert((at, uuid));
                    }
                }
                None => return,
            },
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                let now = now_ms();
                let Some(payloads) = payloads.upgrade() else { return };
                while let Some(first) = queue.first() {
                    if first.0 > now {
                        break;
                    }
                    let Some((_, uuid)) = queue.pop_first() else { break };
                    known.remove(&uuid);
                    let payloads = payloads.clone();
                    tokio::spawn(async move {
                        if let Err(e) = payloads.expire(&uuid).await {
                            tracing::warn!(payload = %uuid, "cannot expire a payload now (the next sweep retries): {e}");
                        }
                    });
                }
            }
        }
        gauge.set(queue.len() as f64);
    }
}
