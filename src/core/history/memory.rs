//! The embedded history: every channel stream in this node's memory.
//!
//! One [`Stream`] per `(app, channel)` holds its epoch (random, made when the stream is),
//! its latest offset and a deque of the publications it still retains, trimmed on every
//! append to the app's `size` and `ttl_secs`. A stream with nothing retained keeps its
//! offset and epoch for `history_meta_ttl_secs`, so a client that saw its last event can
//! still resume with nothing missed. The node's budget (`history_max_bytes`) is enforced
//! by [`EmbeddedHistory::sweep`] every second: the oldest events of the node go first.
//! A restart loses every stream, and the new ones get new epochs: a client coming back
//! with a position of the old node's is told its history is gone, never given a gap.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use dashmap::DashMap;
use metrics::{Counter, Gauge};

use super::{Appended, History, HistoryError, Recovered, StreamPosition, keeps};
use crate::core::{App, Publication};

/// What a stream costs besides its events, for the budget: its map slot and key, the
/// `Arc`'d stream with its two locks and deque header, its epoch and its order lock's
/// allocation (about 500 bytes as the allocator gives them).
const STREAM_OVERHEAD: usize = 512;

/// What the allocator takes for `n` bytes: glibc's malloc on 64-bit hands out chunks of
/// the request plus an 8-byte header, in steps of 16 bytes, at least 32 (0: nothing
/// allocated, as for an empty string).
fn allocated(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (n + 8).next_multiple_of(16).max(32)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StreamKey {
    app: Arc<str>,
    channel: Arc<str>,
}

struct Stream {
    /// Held from the append until the broker delivered: publications of one stream
    /// reach subscribers in offset order.
    order: Arc<tokio::sync::Mutex<()>>,
    state: parking_lot::Mutex<StreamState>,
}

struct StreamState {
    epoch: Arc<str>,
    /// Offset of the latest publication (0: none yet).
    top: u64,
    events: VecDeque<Retained>,
    /// The app's retention when it last appended (the sweeper trims with it).
    ttl: Duration,
    /// Last append or position request: a stream idle and empty for the meta TTL goes.
    touched: Instant,
    /// Taken out of the map by the sweeper: whoever still holds it must look again.
    removed: bool,
}

struct Retained {
    publication: Arc<Publication>,
    stored_at: Instant,
    bytes: usize,
}

impl StreamState {
    fn position(&self) -> StreamPosition {
        StreamPosition::new(self.top, self.epoch.clone())
    }

    fn offset_of(retained: &Retained) -> u64 {
        retained.publication.position().map_or(0, |p| p.offset)
    }

    /// The first event still within the TTL.
    fn first_live(&self, now: Instant) -> usize {
        self.events
            .iter()
            .position(|r| now.duration_since(r.stored_at) < self.ttl)
            .unwrap_or(self.events.len())
    }
}

struct HistoryMetrics {
    appended: Counter,
    evicted_size: Counter,
    evicted_ttl: Counter,
    evicted_memory: Counter,
    events: Gauge,
    bytes: Gauge,
    streams: Gauge,
}

impl HistoryMetrics {
    fn new() -> Self {
        let evicted = |reason: &'static str| metrics::counter!("payrelay_history_evicted_total", "reason" => reason);
        HistoryMetrics {
            appended: metrics::counter!("payrelay_history_appended_total"),
            evicted_size: evicted("size"),
            evicted_ttl: evicted("ttl"),
            evicted_memory: evicted("memory"),
            events: metrics::gauge!("payrelay_history_events"),
            bytes: metrics::gauge!("payrelay_history_bytes"),
            streams: metrics::gauge!("payrelay_history_streams"),
        }
    }
}

pub struct EmbeddedHistory {
    streams: DashMap<StreamKey, Arc<Stream>>,
    max_bytes: usize,
    meta_ttl: Duration,
    /// Retained events and their bytes (with each stream's overhead), node-wide.
    events: AtomicUsize,
    bytes: AtomicUsize,
    metrics: HistoryMetrics,
}

impl EmbeddedHistory {
    /// A history holding at most about `max_bytes` (enforced by [`Self::sweep`]), that
    /// forgets an empty stream's position after `meta_ttl` idle.
    pub fn new(max_bytes: usize, meta_ttl: Duration) -> Self {
        EmbeddedHistory {
            streams: DashMap::new(),
            max_bytes,
            meta_ttl,
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            metrics: HistoryMetrics::new(),
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(
            config.history_max_bytes,
            Duration::from_secs(config.history_meta_ttl_secs),
        )
    }

    fn key(app: &App, channel: &str) -> StreamKey {
        StreamKey {
            app: app.id.clone(),
            channel: Arc::from(channel),
        }
    }

    /// The stream of `key`, made (with a new epoch) if there is none.
    fn stream(&self, key: StreamKey, ttl: Duration) -> Arc<Stream> {
        if let Some(stream) = self.streams.get(&key) {
            return stream.clone();
        }
        self.streams
            .entry(key)
            .or_insert_with(|| {
                self.bytes.fetch_add(STREAM_OVERHEAD, Ordering::Relaxed);
                Arc::new(Stream {
                    order: Arc::new(tokio::sync::Mutex::new(())),
                    state: parking_lot::Mutex::new(StreamState {
                        epoch: StreamPosition::new_epoch(),
                        top: 0,
                        events: VecDeque::new(),
                        ttl,
                        touched: Instant::now(),
                        removed: false,
                    }),
                })
            })
            .clone()
    }

    /// The memory a retained copy of `publication` takes, as the allocator gives it: the
    /// `Arc`'d copy (its counts beside it), its own strings, and its slot in the
    /// stream's deque, counted twice because a deque grows by doubling. Shared parts
    /// (app id, channel name, epoch) are not counted. With 100-byte events this is within
    /// a few percent of the resident memory the history adds (`payrelay bench history`
    /// reports both), so `history_max_bytes` bounds real memory.
    fn retained_bytes(publication: &Publication) -> usize {
        let audience = match &publication.audience {
            crate::core::Audience::User(user) => allocated(user.len()),
            _ => 0,
        };
        allocated(2 * std::mem::size_of::<usize>() + std::mem::size_of::<Publication>())
            + allocated(publication.data.len())
            + allocated(publication.event.len())
            + publication
                .user_id
                .as_ref()
                .map_or(0, |u| allocated(u.len()))
            + audience
            + 2 * std::mem::size_of::<Retained>()
    }

    fn forget(&self, retained: &Retained) {
        self.events.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(retained.bytes, Ordering::Relaxed);
    }

    /// Retained events across all streams.
    pub fn event_count(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Bytes counted against `history_max_bytes`.
    pub fn byte_count(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Housekeeping, every second: drops expired events, forgets streams empty and idle
    /// for the meta TTL, then drops the node's oldest events while over the byte budget,
    /// and refreshes the gauges.
    pub fn sweep_now(&self) {
        let now = Instant::now();
        let mut expired = 0u64;
        self.streams.retain(|_, stream| {
            let mut state = stream.state.lock();
            let live = state.first_live(now);
            for retained in state.events.drain(..live) {
                self.forget(&retained);
                expired += 1;
            }
            let gone = state.events.is_empty() && now.duration_since(state.touched) > self.meta_ttl;
            if gone {
                state.removed = true;
                self.bytes.fetch_sub(STREAM_OVERHEAD, Ordering::Relaxed);
            }
            !gone
        });
        self.metrics.evicted_ttl.increment(expired);
        if self.byte_count() > self.max_bytes {
            self.evict_oldest();
        }
        self.metrics.events.set(self.event_count() as f64);
        self.metrics.bytes.set(self.byte_count() as f64);
        self.metrics.streams.set(self.stream_count() as f64);
    }

    /// Drops the oldest events of the node until it is within its budget; if only
    /// streams' positions are left, forgets the longest idle of those.
    fn evict_oldest(&self) {
        // Oldest first: a min-heap on each stream's oldest retained event.
        let mut heap: BinaryHeap<std::cmp::Reverse<(Instant, usize)>> = BinaryHeap::new();
        let streams: Vec<(StreamKey, Arc<Stream>)> = self
            .streams
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (i, (_, stream)) in streams.iter().enumerate() {
            if let Some(front) = stream.state.lock().events.front() {
                heap.push(std::cmp::Reverse((front.stored_at, i)));
            }
        }
        let mut evicted = 0u64;
        while self.byte_count() > self.max_bytes {
            let Some(std::cmp::Reverse((_, i))) = heap.pop() else {
                break;
            };
            let mut state = streams[i].1.state.lock();
            if let Some(retained) = state.events.pop_front() {
                self.forget(&retained);
                evicted += 1;
            }
            if let Some(front) = state.events.front() {
                heap.push(std::cmp::Reverse((front.stored_at, i)));
            }
        }
        self.metrics.evicted_memory.increment(evicted);
        if self.byte_count() <= self.max_bytes {
            return;
        }
        let mut idle: Vec<(Instant, &StreamKey)> = streams
            .iter()
            .map(|(key, stream)| (stream.state.lock().touched, key))
            .collect();
        idle.sort_by_key(|(touched, _)| *touched);
        for (_, key) in idle {
            if self.byte_count() <= self.max_bytes {
                break;
            }
            self.streams.remove_if(key, |_, stream| {
                let mut state = stream.state.lock();
                let empty = state.events.is_empty();
                if empty {
                    state.removed = true;
                    self.bytes.fetch_sub(STREAM_OVERHEAD, Ordering::Relaxed);
                }
                empty
            });
        }
    }
}

#[async_trait]
impl History for EmbeddedHistory {
    async fn append(
        &self,
        app: &App,
        publication: &Publication,
    ) -> Result<Option<Appended>, HistoryError> {
        if !keeps(app, publication) {
            return Ok(None);
        }
        let size = app.history.size;
        let ttl = app.history.ttl();
        let key = StreamKey {
            app: app.id.clone(),
            channel: publication.channel.clone(),
        };
        loop {
            let stream = self.stream(key.clone(), ttl);
            let order = stream.order.clone().lock_owned().await;
            let mut state = stream.state.lock();
            if state.removed {
                // Swept between the lookup and the lock: the map holds (or will hold) a
                // new stream.
                continue;
            }
            state.top += 1;
            state.ttl = ttl;
            let now = Instant::now();
            state.touched = now;
            let position = state.position();
            let kept = publication.detached_copy();
            kept.set_position(position.clone());
            let bytes = Self::retained_bytes(&kept);
            state.events.push_back(Retained {
                publication: Arc::new(kept),
                stored_at: now,
                bytes,
            });
            self.events.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.metrics.appended.increment(1);
            let mut over_size = 0;
            while state.events.len() > size {
                let retained = state.events.pop_front().expect("longer than size");
                self.forget(&retained);
                over_size += 1;
            }
            self.metrics.evicted_size.increment(over_size);
            let live = state.first_live(now);
            for retained in state.events.drain(..live) {
                self.forget(&retained);
                self.metrics.evicted_ttl.increment(1);
            }
            return Ok(Some(Appended {
                position,
                order: Some(Box::new(order)),
            }));
        }
    }

    async fn since(
        &self,
        app: &App,
        channel: &str,
        from: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovered, HistoryError> {
        let Some(stream) = self
            .streams
            .get(&Self::key(app, channel))
            .map(|s| s.clone())
        else {
            return Ok(Recovered::Gone { top: None });
        };
        let state = stream.state.lock();
        let top = state.position();
        let now = Instant::now();
        let first_live = state.first_live(now);
        let retained = state.events.range(first_live..);
        let after = match from {
            None => 0,
            Some(from) => {
                if from.epoch != state.epoch || from.offset > state.top {
                    return Ok(Recovered::Gone { top: Some(top) });
                }
                // Everything after `from` must still be here: the oldest retained event
                // is at most the next one (or nothing followed `from`).
                let oldest = state
                    .events
                    .get(first_live)
                    .map_or(state.top + 1, StreamState::offset_of);
                if from.offset < state.top && oldest > from.offset + 1 {
                    return Ok(Recovered::Gone { top: Some(top) });
                }
                from.offset
            }
        };
        // A copy per replay, not the retained event itself: the frames the protocols
        // encode (and cache on a publication) for this replay go away with it, instead of
        // staying on the retained event outside what `history_max_bytes` counts.
        let publications = retained
            .filter(|r| StreamState::offset_of(r) > after)
            .take(limit)
            .map(|r| {
                let copy = r.publication.detached_copy();
                if let Some(position) = r.publication.position() {
                    copy.set_position(position.clone());
                }
                Arc::new(copy)
            })
            .collect();
        Ok(Recovered::Publications { publications, top })
    }

    async fn latest(
        &self,
        app: &App,
        channel: &str,
    ) -> Result<Option<StreamPosition>, HistoryError> {
        if !app.history.enabled() {
            return Ok(None);
        }
        loop {
            let stream = self.stream(Self::key(app, channel), app.history.ttl());
            let mut state = stream.state.lock();
            if state.removed {
                continue;
            }
            state.touched = Instant::now();
            return Ok(Some(state.position()));
        }
    }

    fn sweep(&self) {
        self.sweep_now();
    }

    fn counted_bytes(&self) -> Option<usize> {
        Some(self.byte_count())
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn app(size: usize, ttl_secs: u64) -> App {
        let mut config = AppConfig::development();
        config.history.size = size;
        config.history.ttl_secs = ttl_secs;
        App::from_config(&config)
    }

    fn publication(channel: &str, n: usize) -> Publication {
        Publication::new(
            "1".into(),
            channel.into(),
            "e".into(),
            format!("{{\"n\":{n}}}").into(),
        )
    }

    async fn publish(
        history: &EmbeddedHistory,
        app: &App,
        channel: &str,
        n: usize,
    ) -> StreamPosition {
        history
            .append(app, &publication(channel, n))
            .await
            .unwrap()
            .unwrap()
            .position
    }

    fn data(recovered: &Recovered) -> Vec<String> {
        match recovered {
            Recovered::Publications { publications, .. } => {
                publications.iter().map(|p| p.data.to_string()).collect()
            }
            Recovered::Gone { .. } => panic!("gone: {recovered:?}"),
        }
    }

    fn history() -> EmbeddedHistory {
        EmbeddedHistory::new(usize::MAX, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn a_replay_leaves_nothing_cached_on_the_retained_events() {
        let history = history();
        let app = app(100, 120);
        let start = history.latest(&app, "c").await.unwrap().unwrap();
        let p1 = publish(&history, &app, "c", 1).await;
        let encodes = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..2 {
            let Recovered::Publications { publications, .. } =
                history.since(&app, "c", Some(&start), 100).await.unwrap()
            else {
                panic!("gone");
            };
            assert_eq!(publications[0].position(), Some(&p1));
            publications[0].encoded(crate::core::EncodingSlot(0), |p| {
                encodes.fetch_add(1, Ordering::Relaxed);
                p.data.to_string()
            });
        }
        // Each replay encoded its own copy: no frame stayed on the retained event, where
        // the budget would not count it.
        assert_eq!(encodes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_retained_event_counts_the_memory_the_allocator_gives_it() {
        assert_eq!(
            [0, 1, 24, 25, 100, 1000].map(allocated),
            [0, 32, 32, 48, 112, 1008]
        );
        let small = Publication::new("1".into(), "c".into(), "e".into(), "x".into());
        let big = Publication::new("1".into(), "c".into(), "e".into(), "x".repeat(100).into());
        // 100 bytes of data are a 112-byte chunk where 1 byte is a 32-byte one.
        assert_eq!(
            EmbeddedHistory::retained_bytes(&big) - EmbeddedHistory::retained_bytes(&small),
            112 - 32
        );
        // The copy itself (more than 200 bytes of struct) counts, not only the data.
        assert!(
            EmbeddedHistory::retained_bytes(&small) > 200 + std::mem::size_of::<Retained>(),
            "{}",
            EmbeddedHistory::retained_bytes(&small)
        );
    }

    #[test]
    fn the_default_budget_holds_the_default_window_of_ten_thousand_channels() {
        let config = crate::config::Config::parse(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"secret-123\"\n",
        )
        .unwrap();
        let app = App::from_config(&config.apps[0]);
        let event = Publication::new(
            "1".into(),
            "c".into(),
            "tick".into(),
            "x".repeat(100).into(),
        );
        let full =
            10_000 * (STREAM_OVERHEAD + app.history.size * EmbeddedHistory::retained_bytes(&event));
        assert!(
            full < config.history_max_bytes,
            "10 000 channels of {} events: {full} bytes, over the default budget {}",
            app.history.size,
            config.history_max_bytes
        );
    }

    #[tokio::test]
    async fn positions_count_up_per_channel_and_recovery_returns_what_followed() {
        let history = history();
        let app = app(100, 120);
        let top0 = history.latest(&app, "c").await.unwrap().unwrap();
        assert_eq!(top0.offset, 0);
        let p1 = publish(&history, &app, "c", 1).await;
        let p2 = publish(&history, &app, "c", 2).await;
        let other = publish(&history, &app, "d", 1).await;
        assert_eq!((p1.offset, p2.offset, other.offset), (1, 2, 1));
        assert_eq!(p1.epoch, top0.epoch);
        assert_ne!(other.epoch, p1.epoch, "each stream has its own epoch");

        let after0 = history.since(&app, "c", Some(&top0), 100).await.unwrap();
        assert_eq!(data(&after0), [r#"{"n":1}"#, r#"{"n":2}"#]);
        let after1 = history.since(&app, "c", Some(&p1), 100).await.unwrap();
        assert_eq!(data(&after1), [r#"{"n":2}"#]);
        let Recovered::Publications { publications, top } = &after1 else {
            unreachable!()
        };
        assert_eq!(publications[0].position(), Some(&p2));
        assert_eq!(top, &p2);
        assert!(data(&history.since(&app, "c", Some(&p2), 100).await.unwrap()).is_empty());
        assert_eq!(
            data(&history.since(&app, "c", None, 1).await.unwrap()),
            [r#"{"n":1}"#]
        );
    }

    #[tokio::test]
    async fn another_epoch_or_a_position_past_the_end_is_gone() {
        let history = history();
        let app = app(100, 120);
        let p1 = publish(&history, &app, "c", 1).await;
        let foreign = StreamPosition::new(1, "otherEpoch".into());
        let future = StreamPosition::new(9, p1.epoch.clone());
        for from in [&foreign, &future] {
            match history.since(&app, "c", Some(from), 100).await.unwrap() {
                Recovered::Gone { top } => assert_eq!(top, Some(p1.clone())),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            history
                .since(&app, "nothing", Some(&p1), 100)
                .await
                .unwrap(),
            Recovered::Gone { top: None }
        ));
    }

    #[tokio::test]
    async fn only_the_last_size_events_are_kept() {
        let history = history();
        let app = app(3, 120);
        let start = history.latest(&app, "c").await.unwrap().unwrap();
        let mut positions = Vec::new();
        for n in 1..=5 {
            positions.push(publish(&history, &app, "c", n).await);
        }
        assert_eq!(history.event_count(), 3);
        // 3, 4, 5 are kept: from 2 nothing is missing, from 1 event 2 is.
        assert_eq!(
            data(
                &history
                    .since(&app, "c", Some(&positions[1]), 100)
                    .await
                    .unwrap()
            ),
            [r#"{"n":3}"#, r#"{"n":4}"#, r#"{"n":5}"#]
        );
        for from in [&start, &positions[0]] {
            assert!(matches!(
                history.since(&app, "c", Some(from), 100).await.unwrap(),
                Recovered::Gone { .. }
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_older_than_the_ttl_are_gone_but_the_position_stays() {
        let history = history();
        let app = app(100, 2);
        let p1 = publish(&history, &app, "c", 1).await;
        let p2 = publish(&history, &app, "c", 2).await;
        tokio::time::advance(Duration::from_secs(3)).await;
        // Expired but not yet swept: already not recoverable.
        assert!(matches!(
            history.since(&app, "c", Some(&p1), 100).await.unwrap(),
            Recovered::Gone { .. }
        ));
        history.sweep_now();
        assert_eq!(history.event_count(), 0);
        // A client that saw the last event missed nothing.
        assert!(data(&history.since(&app, "c", Some(&p2), 100).await.unwrap()).is_empty());
        let p3 = publish(&history, &app, "c", 3).await;
        assert_eq!((p3.offset, &p3.epoch), (3, &p2.epoch));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_empty_stream_is_forgotten_and_comes_back_with_a_new_epoch() {
        let history = EmbeddedHistory::new(usize::MAX, Duration::from_secs(10));
        let app = app(100, 2);
        let p1 = publish(&history, &app, "c", 1).await;
        tokio::time::advance(Duration::from_secs(11)).await;
        history.sweep_now();
        assert_eq!(history.stream_count(), 0);
        assert_eq!(history.byte_count(), 0);
        assert!(matches!(
            history.since(&app, "c", Some(&p1), 100).await.unwrap(),
            Recovered::Gone { top: None }
        ));
        let again = publish(&history, &app, "c", 2).await;
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, p1.epoch);
    }

    #[tokio::test]
    async fn the_budget_drops_the_oldest_events_of_the_node() {
        let app = app(100, 120);
        let one = EmbeddedHistory::retained_bytes(&publication("a", 1));
        // Room for two streams and three events.
        let history =
            EmbeddedHistory::new(2 * STREAM_OVERHEAD + 3 * one, Duration::from_secs(3600));
        let a1 = publish(&history, &app, "a", 1).await;
        publish(&history, &app, "b", 1).await;
        publish(&history, &app, "a", 2).await;
        publish(&history, &app, "b", 2).await;
        history.sweep_now();
        assert_eq!(history.event_count(), 3);
        assert!(history.byte_count() <= 2 * STREAM_OVERHEAD + 3 * one);
        // a's first event went: from before it, a is gone; b is whole.
        assert!(matches!(
            history
                .since(
                    &app,
                    "a",
                    Some(&StreamPosition::new(0, a1.epoch.clone())),
                    100
                )
                .await
                .unwrap(),
            Recovered::Gone { .. }
        ));
        assert_eq!(
            data(&history.since(&app, "a", Some(&a1), 100).await.unwrap()).len(),
            1
        );
        assert_eq!(
            data(&history.since(&app, "b", None, 100).await.unwrap()).len(),
            2
        );
    }

    #[tokio::test]
    async fn no_history_for_an_app_without_it_nor_for_relayed_client_events() {
        let history = history();
        let off = app(0, 120);
        assert!(
            history
                .append(&off, &publication("c", 1))
                .await
                .unwrap()
                .is_none()
        );
        assert!(history.latest(&off, "c").await.unwrap().is_none());
        let on = app(100, 120);
        let mut relayed = publication("c", 1);
        relayed.relay_only = true;
        assert!(history.append(&on, &relayed).await.unwrap().is_none());
        assert_eq!(history.event_count(), 0);
    }

    #[tokio::test]
    async fn appends_of_one_stream_wait_for_the_previous_delivery() {
        let history = Arc::new(history());
        let app = Arc::new(app(100, 120));
        let first = history
            .append(&app, &publication("c", 1))
            .await
            .unwrap()
            .unwrap();
        let second = {
            let (history, app) = (history.clone(), app.clone());
            tokio::spawn(async move { history.append(&app, &publication("c", 2)).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "the second waits for the first's order guard"
        );
        drop(first.order);
        let second = second.await.unwrap().unwrap().unwrap();
        assert_eq!(second.position.offset, 2);
        // Another channel never waits.
        let other = history
            .append(&app, &publication("d", 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.position.offset, 1);
    }
}
