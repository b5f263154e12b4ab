//! The bounded outbound queue of one connection.
//!
//! The hub pushes into it without ever waiting; the connection's own task drains it in
//! batches and writes to the socket. When a consumer falls behind and the queue reaches its
//! bound, the outbox does not grow: it marks itself closing with
//! [`Disconnect::SlowConsumer`], drops what is queued, and the connection task closes the
//! socket with its protocol's "reconnect" code. Other parts of the node (shutdown,
//! `terminate_connections`) close a connection the same way, through [`Outbox::close`].

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Publication;
use super::gate::Gate;
use super::history::StreamPosition;
use super::presence::{Member, PresenceSnapshot};

/// Something a connection must write, in protocol-neutral form; adapters encode it.
#[derive(Debug, Clone)]
pub enum Outbound {
    Publication(Arc<Publication>),
    /// The subscription is in place; sent under the channel lock so it precedes every
    /// publication the new subscriber will see.
    Subscribed(Box<Subscribed>),
    MemberAdded {
        channel: Arc<str>,
        member: Arc<Member>,
    },
    MemberRemoved {
        channel: Arc<str>,
        user_id: Arc<str>,
    },
}

#[derive(Debug, Clone)]
pub struct Subscribed {
    pub channel: Arc<str>,
    pub presence: Option<PresenceSnapshot>,
    pub cache: CacheState,
    /// Holds this frame (and everything behind it) back until the cluster listens to the
    /// channel; see [`Gate`]. Adapters never see a shut one.
    pub gate: Option<Arc<Gate>>,
    /// Where the subscriber stands in the channel's stream: the events that follow this
    /// item are those after it (the replay of a resume, then live ones). `None` when the
    /// app keeps no history (or it could not be read).
    pub position: Option<StreamPosition>,
    /// What became of a request to resume from a position.
    pub recovery: Recovery,
}

impl Subscribed {
    /// Whether a gate still holds this frame back.
    fn held_by(&self) -> Option<&Arc<Gate>> {
        self.gate.as_ref().filter(|gate| !gate.is_open())
    }

    /// Replaces this node's view with the cluster's, once the gate opened with one.
    fn apply_gate(&mut self) {
        let Some(gate) = self.gate.take() else { return };
        if let Some(view) = gate.view() {
            if let Some(presence) = &view.presence
                && self.presence.is_some()
            {
                self.presence = Some(presence.clone());
            }
            if let Some(cache) = &view.cache
                && !matches!(self.cache, CacheState::NotACacheChannel)
            {
                self.cache = cache.clone();
            }
        }
    }
}

/// What became of a subscriber's request to resume from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// None was asked for.
    NotAsked,
    /// Every event after the position follows, replayed in order before live ones.
    Recovered,
    /// The position cannot be vouched for (history lost, older than retained, history
    /// off or unreachable): the client must reload its state; live events follow
    /// [`Subscribed::position`].
    Failed,
}

/// What a cache channel had for a new subscriber.
#[derive(Debug, Clone)]
pub enum CacheState {
    NotACacheChannel,
    Hit(Arc<Publication>),
    Miss,
}

/// Why the node closes a connection. Adapters map each to their protocol's close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The node is shutting down; queued frames are written first. Clients should reconnect.
    Shutdown,
    /// The outbound queue overflowed. Clients should reconnect.
    SlowConsumer,
    /// The app's backend asked to terminate this user's connections.
    Terminated,
    /// A newer connection of the same user replaced this one.
    Replaced,
    /// The credential the connection was opened with has been revoked.
    Revoked,
}

impl Disconnect {
    /// Whether frames queued before the close are still written. Only a slow consumer's
    /// queue is dropped (it is the problem); a logout or replacement is announced after
    /// whatever was published before it, such as the force-logout event itself.
    fn flushes_queue(self) -> bool {
        !matches!(self, Disconnect::SlowConsumer)
    }
}

/// Result of draining an outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Frames were moved into the caller's buffer.
    Frames,
    /// The connection must close; the buffer holds whatever must still be written first.
    Close(Disconnect),
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    capacity: usize,
    closing: Option<Disconnect>,
}

/// Queues larger than this are shrunk once drained, so one burst does not pin memory.
const RETAINED_CAPACITY: usize = 64;

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity,
                closing: None,
            }),
            ready: Notify::new(),
        }
    }

    /// Queues a frame. Returns false when the frame was not queued: the connection is
    /// closing, or this push overflowed the queue (which starts closing it).
    pub fn push(&self, item: Outbound) -> bool {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return false;
        }
        if state.queue.len() >= state.capacity {
            state.closing = Some(Disconnect::SlowConsumer);
            state.queue.clear();
            drop(state);
            self.ready.notify_one();
            return false;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(item);
        drop(state);
        // The consumer drains everything it finds, so only the first frame needs a wake-up.
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Asks the connection to close. The first reason wins.
    pub fn close(&self, reason: Disconnect) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
            if !reason.flushes_queue() {
                state.queue.clear();
            }
        }
        drop(state);
        self.ready.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Frees the queue's memory if it is empty: for connections that idle for long and
    /// hear little (a payment request's socket), so a drained queue holds nothing.
    pub fn release_idle(&self) {
        let mut state = self.state.lock();
        if state.queue.is_empty() {
            state.queue = VecDeque::new();
        }
    }

    /// Items the queue holds before its connection counts as a slow consumer.
    pub fn capacity(&self) -> usize {
        self.state.lock().capacity
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until there is something to write or the connection must close, and moves
    /// the queued frames into `out`, up to the first one a shut [`Gate`] holds back.
    /// Cancel-safe: frames are only taken synchronously.
    pub async fn drain(&self, out: &mut Vec<Outbound>) -> Drain {
        loop {
            let held = {
                let mut state = self.state.lock();
                let mut held = None;
                let mut moved = false;
                while let Some(front) = state.queue.front_mut() {
                    if let Outbound::Subscribed(subscribed) = front {
                        if let Some(gate) = subscribed.held_by() {
                            held = Some(gate.clone());
                            break;
                        }
                        subscribed.apply_gate();
                    }
                    out.extend(state.queue.pop_front());
                    moved = true;
                }
                if state.queue.is_empty() && state.queue.capacity() > RETAINED_CAPACITY {
                    state.queue.shrink_to(RETAINED_CAPACITY);
                }
                // Write what is queued before acting on a flushing close.
                if moved {
                    return Drain::Frames;
                }
                if held.is_none()
                    && let Some(reason) = state.closing
                {
                    return Drain::Close(reason);
                }
                held
            };
            match held {
                None => self.ready.notified().await,
                Some(gate) => {
                    tokio::select! {
                        () = gate.opened() => {}
                        // A slow-consumer close empties the queue, gate and all.
                        () = self.ready.notified() => {}
                        () = tokio::time::sleep_until(gate.deadline()) => gate.open(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Outbound {
        let data = n.to_string();
        Outbound::Publication(Arc::new(Publication::new(
            "a".into(),
            "c".into(),
            "e".into(),
            data.into(),
        )))
    }

    #[tokio::test]
    async fn drains_in_order() {
        let outbox = Outbox::new(16);
        assert!(outbox.push(frame(1)));
        assert!(outbox.push(frame(2)));
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out).await, Drain::Frames);
        let data: Vec<&str> = out
            .iter()
            .map(|o| match o {
                Outbound::Publication(p) => &*p.data,
                _ => "",
            })
            .collect();
        assert_eq!(data, ["1", "2"]);
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_and_drops_the_backlog() {
        let outbox = Outbox::new(2);
        assert!(outbox.push(frame(1)));
        assert!(outbox.push(frame(2)));
        assert!(!outbox.push(frame(3)), "third frame overflows");
        assert!(!outbox.push(frame(4)), "nothing is queued once closing");
        let mut out = Vec::new();
        assert_eq!(
            outbox.drain(&mut out).await,
            Drain::Close(Disconnect::SlowConsumer)
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn closes_flush_first_except_for_a_slow_consumer() {
        let outbox = Outbox::new(8);
        outbox.push(frame(1));
        outbox.close(Disconnect::Shutdown);
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out).await, Drain::Frames);
        assert_eq!(out.len(), 1);
        out.clear();
        assert_eq!(
            outbox.drain(&mut out).await,
            Drain::Close(Disconnect::Shutdown)
        );

        // A logout is announced after what was published before it; the first reason wins.
        let outbox = Outbox::new(8);
        outbox.push(frame(1));
        outbox.close(Disconnect::Terminated);
        outbox.close(Disconnect::Shutdown);
        assert_eq!(outbox.drain(&mut out).await, Drain::Frames);
        out.clear();
        assert_eq!(
            outbox.drain(&mut out).await,
            Drain::Close(Disconnect::Terminated)
        );

        let outbox = Outbox::new(8);
        outbox.push(frame(1));
        outbox.close(Disconnect::SlowConsumer);
        assert_eq!(
            outbox.drain(&mut out).await,
            Drain::Close(Disconnect::SlowConsumer)
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_drain_wakes_on_push() {
        let outbox = Arc::new(Outbox::new(8));
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                outbox.drain(&mut out).await;
                out.len()
            })
        };
        tokio::task::yield_now().await;
        outbox.push(frame(1));
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
