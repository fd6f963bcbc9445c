//! Per-stream fan-out of a browser recording (WebM / fragmented MP4 bytes, cut by
//! [`crate::container::Scanner`]) to any number of subscribers (the encoder).
//!
//! Every subscriber's byte stream starts with the container header, then media from a start
//! point (a WebM cluster that begins with a video keyframe, an MP4 fragment): the pieces since
//! the last start point are cached (bounded by `gop_cache_max_bytes`), so a subscriber that
//! joins mid-stream starts at the last keyframe. Each subscriber has its own queue bounded in
//! **bytes** (`queue_max_bytes`; blobs vary from a few bytes to the WebSocket frame limit, so a
//! count would not bound memory). A subscriber that falls that far behind keeps what is queued
//! and then skips everything up to the next start point; the skip is logged and counted. The
//! cut is at a piece boundary, which may be inside a cluster: ffmpeg's Matroska demuxer
//! resynchronises on the next cluster and its decoders on the next keyframe.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use contract::control::MediaStream;
use contract::StreamId;
use tokio::sync::Notify;

use crate::container::Format;
use crate::metrics::RelayGauges;

/// Bounds of a container relay.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRelayConfig {
    /// Bound of the cache of pieces since the last start point, in bytes.
    pub gop_cache_max_bytes: usize,
    /// Bound of each subscriber's queue, in bytes.
    pub queue_max_bytes: usize,
}

#[derive(Default)]
struct State {
    closed: bool,
    header: Option<Bytes>,
    format: Option<Format>,
    /// Pieces since the last start point; empty while there is none (or it overflowed).
    gop: Vec<Bytes>,
    gop_bytes: usize,
    subscribers: Vec<Arc<Queue>>,
}

/// The relay of one browser stream.
pub struct ContainerRelay {
    stream_id: StreamId,
    config: ContainerRelayConfig,
    gauges: RelayGauges,
    state: Mutex<State>,
    lag_skips: AtomicU64,
    gop_overflows: AtomicU64,
}

impl ContainerRelay {
    pub fn new(stream_id: StreamId, config: ContainerRelayConfig) -> Arc<Self> {
        Self::with_gauges(stream_id, config, RelayGauges::default())
    }

    /// A relay whose queued and cached bytes are added to `gauges`.
    pub fn with_gauges(
        stream_id: StreamId,
        config: ContainerRelayConfig,
        gauges: RelayGauges,
    ) -> Arc<Self> {
        Arc::new(ContainerRelay {
            stream_id,
            config,
            gauges,
            state: Mutex::new(State::default()),
            lag_skips: AtomicU64::new(0),
            gop_overflows: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container header (once, before any media).
    pub fn set_header(&self, format: Format, header: Bytes) {
        let mut st = self.state();
        st.format = Some(format);
        st.header = Some(header);
    }

    pub fn format(&self) -> Option<Format> {
        self.state().format
    }

    /// Media bytes; `start`: a decoder can start at their first byte.
    pub fn push(&self, bytes: Bytes, start: bool) {
        if bytes.is_empty() {
            return;
        }
        let mut st = self.state();
        if st.closed {
            return;
        }
        if start {
            self.clear_gop(&mut st);
        }
        if start || !st.gop.is_empty() {
            if st.gop_bytes + cost(&bytes) > self.config.gop_cache_max_bytes {
                self.clear_gop(&mut st);
                self.gop_overflows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    stream_id = %self.stream_id,
                    limit = self.config.gop_cache_max_bytes,
                    "keyframe interval larger than the cache bound; new subscribers wait for the next keyframe"
                );
            } else {
                st.gop_bytes += cost(&bytes);
                self.gauges.cached.add(cost(&bytes));
                st.gop.push(bytes.clone());
            }
        }
        st.subscribers.retain(|q| !q.gone.load(Ordering::Relaxed));
        let header = st.header.clone();
        for queue in &st.subscribers {
            let mut q = queue.lock();
            match q.phase {
                Phase::Live => {
                    if q.bytes + cost(&bytes) > self.config.queue_max_bytes {
                        q.phase = Phase::Resyncing;
                        self.lag_skips.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            stream_id = %self.stream_id,
                            queued = q.bytes,
                            "media subscriber fell behind; skipping to the next keyframe"
                        );
                    } else {
                        q.push(bytes.clone(), &self.gauges);
                    }
                }
                Phase::AwaitingStart if start => {
                    if let Some(header) = &header {
                        q.push(header.clone(), &self.gauges);
                    }
                    q.push(bytes.clone(), &self.gauges);
                    q.phase = Phase::Live;
                }
                Phase::Resyncing
                    if start && q.bytes + cost(&bytes) <= self.config.queue_max_bytes =>
                {
                    q.push(bytes.clone(), &self.gauges);
                    q.phase = Phase::Live;
                }
                Phase::AwaitingStart | Phase::Resyncing => {}
            }
            drop(q);
            queue.notify.notify_one();
        }
    }

    fn clear_gop(&self, st: &mut State) {
        st.gop.clear();
        self.gauges.cached.sub(st.gop_bytes);
        st.gop_bytes = 0;
    }

    /// The publisher is gone: subscribers drain what they have and end.
    pub fn close(&self) {
        let mut st = self.state();
        st.closed = true;
        self.clear_gop(&mut st);
        st.header = None;
        for queue in st.subscribers.drain(..) {
            queue.lock().closed = true;
            queue.notify.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Open subscriber streams.
    pub fn subscriber_count(&self) -> usize {
        self.state()
            .subscribers
            .iter()
            .filter(|q| !q.gone.load(Ordering::Relaxed))
            .count()
    }

    /// Bytes queued for this stream's subscribers now (each subscriber's queue counted).
    pub fn queued_bytes(&self) -> usize {
        self.state()
            .subscribers
            .iter()
            .map(|q| q.lock().bytes)
            .sum()
    }

    /// Times a subscriber fell behind and skipped to a start point.
    pub fn lag_skips(&self) -> u64 {
        self.lag_skips.load(Ordering::Relaxed)
    }

    /// Times the pieces since the last start point exceeded the cache bound.
    pub fn gop_overflows(&self) -> u64 {
        self.gop_overflows.load(Ordering::Relaxed)
    }

    /// A new subscriber: a decodable byte stream from its first byte. `None` once closed.
    pub fn subscribe(self: &Arc<Self>) -> Option<MediaStream> {
        let mut st = self.state();
        if st.closed {
            return None;
        }
        let queue = Arc::new(Queue {
            inner: Mutex::default(),
            notify: Notify::new(),
            gone: AtomicBool::new(false),
            gauges: self.gauges.clone(),
        });
        {
            let mut q = queue.lock();
            if let (Some(header), false) = (&st.header, st.gop.is_empty()) {
                q.push(header.clone(), &self.gauges);
                for piece in &st.gop {
                    q.push(piece.clone(), &self.gauges);
                }
                q.phase = Phase::Live;
            }
        }
        st.subscribers.push(Arc::clone(&queue));
        drop(st);
        let reader = Reader { queue };
        Some(Box::pin(futures::stream::unfold(
            reader,
            |reader| async move { reader.next().await.map(|bytes| (bytes, reader)) },
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Nothing sent yet: waiting for the first start point.
    #[default]
    AwaitingStart,
    Live,
    /// Fell behind: skipping up to the next start point.
    Resyncing,
}

struct Queue {
    inner: Mutex<QueueState>,
    notify: Notify,
    /// The reader was dropped.
    gone: AtomicBool,
    gauges: RelayGauges,
}

/// What a queued or cached piece is counted as against the byte bounds: its data plus a fixed
/// cost for the piece itself (its `Bytes` handle, its allocation, its slot), so a publisher
/// sending tiny messages cannot make a bounded queue hold millions of pieces.
const PIECE_COST: usize = 64;

fn cost(bytes: &Bytes) -> usize {
    bytes.len() + PIECE_COST
}

#[derive(Default)]
struct QueueState {
    pieces: VecDeque<Bytes>,
    bytes: usize,
    phase: Phase,
    closed: bool,
}

impl QueueState {
    fn push(&mut self, bytes: Bytes, gauges: &RelayGauges) {
        self.bytes += cost(&bytes);
        gauges.queued.add(cost(&bytes));
        self.pieces.push_back(bytes);
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.gauges.queued.sub(bytes);
    }
}

impl Drop for ContainerRelay {
    fn drop(&mut self) {
        let gop_bytes = self.state().gop_bytes;
        self.gauges.cached.sub(gop_bytes);
    }
}

struct Reader {
    queue: Arc<Queue>,
}

impl Reader {
    async fn next(&self) -> Option<Bytes> {
        loop {
            {
                let mut q = self.queue.lock();
                if let Some(bytes) = q.pieces.pop_front() {
                    q.bytes -= cost(&bytes);
                    self.queue.gauges.queued.sub(cost(&bytes));
                    return Some(bytes);
                }
                if q.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this wait is not missed.
            self.queue.notify.notified().await;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.queue.gone.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    fn relay(gop: usize, queue: usize) -> Arc<ContainerRelay> {
        ContainerRelay::new(
            StreamId::generate(),
            ContainerRelayConfig {
                gop_cache_max_bytes: gop,
                queue_max_bytes: queue,
            },
        )
    }

    async fn collect(stream: MediaStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(5), stream.collect())
            .await
            .expect("the stream ends after close");
        chunks.concat()
    }

    #[tokio::test]
    async fn an_early_subscriber_gets_the_header_and_everything_from_the_first_start() {
        let relay = relay(1 << 20, 1 << 20);
        let sub = relay.subscribe().expect("open");
        relay.set_header(Format::WebM, Bytes::from_static(b"HEAD|"));
        relay.push(Bytes::from_static(b"junk|"), false);
        relay.push(Bytes::from_static(b"K1|"), true);
        relay.push(Bytes::from_static(b"p|"), false);
        relay.close();
        assert_eq!(collect(sub).await, b"HEAD|K1|p|");
    }

    #[tokio::test]
    async fn a_late_subscriber_starts_at_the_last_start_point() {
        let relay = relay(1 << 20, 1 << 20);
        relay.set_header(Format::WebM, Bytes::from_static(b"HEAD|"));
        relay.push(Bytes::from_static(b"K1|"), true);
        relay.push(Bytes::from_static(b"a|"), false);
        relay.push(Bytes::from_static(b"K2|"), true);
        relay.push(Bytes::from_static(b"b|"), false);
        let sub = relay.subscribe().expect("open");
        relay.push(Bytes::from_static(b"c|"), false);
        relay.close();
        assert_eq!(collect(sub).await, b"HEAD|K2|b|c|");
        assert!(relay.subscribe().is_none());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_bounded_in_bytes_and_resumes_at_the_next_start() {
        // Room for H, k and two x, then (once the third x was skipped) for K and y.
        let bound = 426 + 6 * PIECE_COST + 20;
        let relay = relay(1 << 20, bound);
        relay.set_header(Format::WebM, Bytes::from_static(b"H"));
        let sub = relay.subscribe().expect("open");
        relay.push(Bytes::from(vec![b'k'; 10]), true);
        for _ in 0..50 {
            relay.push(Bytes::from(vec![b'x'; 200]), false);
        }
        relay.push(Bytes::from(vec![b'K'; 10]), true);
        relay.push(Bytes::from(vec![b'y'; 5]), false);
        relay.close();
        let got = collect(sub).await;
        assert_eq!(relay.lag_skips(), 1);
        assert!(got.len() <= bound + 15, "bounded: {} bytes", got.len());
        assert!(got.ends_with(b"KKKKKKKKKKyyyyy"));
        assert!(got.starts_with(b"Hkkkkkkkkkk"));
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_refills_at_the_next_start() {
        let relay = relay(20 + 2 * PIECE_COST, 1 << 20);
        relay.set_header(Format::WebM, Bytes::from_static(b"H|"));
        relay.push(Bytes::from_static(b"K1|"), true);
        relay.push(Bytes::from(vec![b'x'; 30]), false);
        assert_eq!(relay.gop_overflows(), 1);
        let waiting = relay.subscribe().expect("open");
        relay.push(Bytes::from_static(b"p|"), false);
        relay.push(Bytes::from_static(b"K2|"), true);
        let late = relay.subscribe().expect("open");
        relay.close();
        assert_eq!(collect(waiting).await, b"H|K2|");
        assert_eq!(collect(late).await, b"H|K2|");
    }

    #[tokio::test]
    async fn the_gauges_count_what_is_queued_and_cached() {
        let gauges = RelayGauges::default();
        let relay = ContainerRelay::with_gauges(
            StreamId::generate(),
            ContainerRelayConfig {
                gop_cache_max_bytes: 1 << 20,
                queue_max_bytes: 300,
            },
            gauges.clone(),
        );
        relay.set_header(Format::WebM, Bytes::from_static(b"H"));
        let sub = relay.subscribe().expect("open");
        relay.push(Bytes::from(vec![b'k'; 10]), true);
        for _ in 0..50 {
            relay.push(Bytes::from(vec![b'x'; 30]), false);
        }
        assert!(gauges.queued.get() <= 300, "{}", gauges.queued.get());
        assert_eq!(gauges.queued.get(), relay.queued_bytes());
        // Every piece counts its data and its fixed cost.
        assert_eq!(gauges.cached.get(), 10 + 50 * 30 + 51 * PIECE_COST);
        relay.close();
        assert_eq!(gauges.cached.get(), 0);
        let _ = collect(sub).await;
        assert_eq!(gauges.queued.get(), 0);
    }

    #[tokio::test]
    async fn tiny_pieces_are_bounded_by_their_count_too() {
        // 1-byte messages: without a cost per piece a 6400-byte bound would hold 6400 of them.
        let relay = relay(1 << 20, 100 * (1 + PIECE_COST));
        let sub = relay.subscribe().expect("open");
        relay.push(Bytes::from_static(b"K"), true);
        for _ in 0..10_000 {
            relay.push(Bytes::from_static(b"x"), false);
        }
        assert!(relay.queued_bytes() <= 100 * (1 + PIECE_COST));
        assert_eq!(relay.lag_skips(), 1);
        relay.close();
        assert!(collect(sub).await.len() <= 100);
    }

    #[tokio::test]
    async fn dropped_subscribers_are_not_counted() {
        let relay = relay(1 << 20, 1 << 20);
        let a = relay.subscribe().expect("open");
        let _b = relay.subscribe().expect("open");
        assert_eq!(relay.subscriber_count(), 2);
        drop(a);
        assert_eq!(relay.subscriber_count(), 1);
    }
}
