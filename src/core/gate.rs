//! Gates: a new subscriber's first frame held back until the cluster has caught up.
//!
//! With a remote broker, a node hears a channel's publications only once it has
//! subscribed to the channel at the broker, which takes a round trip. A client told
//! "subscribed" before that could miss an event published in between, elsewhere. So the
//! hub queues the `Subscribed` item with a [`Gate`], and the outbox hands it to the
//! connection task only once the gate is open: the client hears "subscribed" after the
//! broker listens, and anything published from then on reaches it, queued behind.
//!
//! An open gate may carry the cluster's view of the channel ([`ClusterView`]): its
//! presence members and cached last event across every node, which replace this node's
//! own view in the `Subscribed` frame.
//!
//! A gate never blocks for ever: the outbox opens one that stays shut longer than
//! [`GATE_TIMEOUT`] (the node's own view is then sent, as it would be without a cluster).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

use super::outbox::CacheState;
use super::presence::PresenceSnapshot;

/// The longest a subscriber's first frame waits for the cluster.
pub const GATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's view of a channel at the moment a subscriber joined.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Members across the cluster (presence channels); `None`: this node's own.
    pub presence: Option<PresenceSnapshot>,
    /// The cluster's cached last event (cache channels); `None`: this node's own.
    pub cache: Option<CacheState>,
}

#[derive(Debug)]
pub struct Gate {
    view: OnceLock<ClusterView>,
    opened: Notify,
    /// When the outbox stops waiting and opens it.
    deadline: tokio::time::Instant,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            view: OnceLock::new(),
            opened: Notify::new(),
            deadline: tokio::time::Instant::now() + GATE_TIMEOUT,
        }
    }

    /// [`GATE_TIMEOUT`] after it was made.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Opens the gate; the subscriber keeps this node's own view.
    pub fn open(&self) {
        self.open_with(ClusterView::default());
    }

    /// Opens the gate with the cluster's view (the first opening wins).
    pub fn open_with(&self, view: ClusterView) {
        if self.view.set(view).is_ok() {
            self.opened.notify_waiters();
        }
    }

    pub fn is_open(&self) -> bool {
        self.view.get().is_some()
    }

    /// The view it was opened with, once open.
    pub fn view(&self) -> Option<&ClusterView> {
        self.view.get()
    }

    /// Waits until the gate is open.
    pub async fn opened(&self) {
        loop {
            let notified = self.opened.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_wake_when_it_opens_and_the_first_view_wins() {
        let gate = Arc::new(Gate::new());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.opened().await })
        };
        tokio::task::yield_now().await;
        assert!(!gate.is_open());
        gate.open_with(ClusterView {
            presence: Some(PresenceSnapshot::default()),
            cache: None,
        });
        gate.open();
        waiter.await.unwrap();
        assert!(gate.view().unwrap().presence.is_some());
        gate.opened().await;
    }
}
