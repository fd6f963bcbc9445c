//! Per-stream fan-out of a publisher's media to any number of subscribers (the encoder), as
//! FLV, with a bounded keyframe (GOP) cache so that a subscriber can start at any time.
//!
//! The publisher side pushes audio/video/metadata; each tag is encoded to FLV once and shared
//! (`Bytes`) by every subscriber's queue. Each queue is bounded both in tags (`queue_len`)
//! and in **bytes** (`queue_max_bytes`: a tag may be anything up to an RTMP message of
//! 16 MiB, so a count alone would not bound memory). A subscriber's stream starts with what a
//! decoder needs: the FLV header, `onMetaData`, the sequence headers, then the GOP from the
//! last keyframe, then live tags. When a subscriber's queue is full, its oldest tags are
//! dropped: the subscriber has lost its place and skips everything up to the next keyframe
//! (a decoder must never see a GOP with a hole); the skip is logged and counted. The
//! publisher never waits for a subscriber, and a subscriber never holds more than its bound.
//! When the publisher ends, [`Relay::close`] ends the queues: subscribers drain what they
//! have and their streams end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use contract::control::MediaStream;
use contract::StreamId;
use rml_rtmp::sessions::StreamMetadata;
use tokio::sync::Notify;

use crate::flv::{self, TagKind};
use crate::metrics::RelayGauges;

/// Bounds of a relay (with the bound of each subscriber's queue in bytes, given to
/// [`Relay::bounded`]).
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Bound of the GOP cache, in bytes of encoded tags.
    pub gop_cache_max_bytes: usize,
    /// Capacity of each subscriber's queue, in tags.
    pub queue_len: usize,
}

/// One FLV tag as it travels to subscribers.
#[derive(Debug, Clone)]
struct Tag {
    kind: TagKind,
    timestamp: u32,
    /// The complete encoded tag (header, data, previous tag size).
    encoded: Bytes,
    /// A point a decoder can start at: a video keyframe (or any audio frame while the stream
    /// has shown no video).
    start: bool,
    /// Decoder configuration (sequence header); kept aside, not in the GOP cache.
    config: bool,
}

impl Tag {
    fn data(&self) -> Bytes {
        self.encoded
            .slice(flv::TAG_HEADER_LEN..self.encoded.len() - flv::PREVIOUS_TAG_SIZE_LEN)
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    /// `onMetaData` script data (AMF0).
    metadata: Option<Bytes>,
    /// Latest sequence headers (tag data).
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    has_audio: bool,
    has_video: bool,
    /// Tags since the last start point; empty while waiting for one.
    gop: Vec<Tag>,
    gop_bytes: usize,
    subscribers: Vec<Arc<Queue>>,
    /// Where tags are encoded.
    arena: flv::TagArena,
}

/// The relay of one stream. Shared by the publisher's connection (writer) and subscribers.
pub struct Relay {
    stream_id: StreamId,
    config: RelayConfig,
    /// Capacity of each subscriber's queue, in bytes of encoded tags (one tag larger than
    /// this is still queued when the queue is empty).
    queue_max_bytes: usize,
    gauges: RelayGauges,
    state: Mutex<State>,
    lag_skips: AtomicU64,
    gop_overflows: AtomicU64,
}

impl Relay {
    /// A relay whose subscriber queues hold at most the default `MEDIA_QUEUE_MAX_BYTES`
    /// (32 MiB) each.
    pub fn new(stream_id: StreamId, config: RelayConfig) -> Arc<Self> {
        Self::bounded(
            stream_id,
            config,
            crate::config::DEFAULT_MEDIA_QUEUE_MAX_BYTES,
            RelayGauges::default(),
        )
    }

    /// A relay whose subscriber queues hold at most `queue_max_bytes` each, and whose queued
    /// and cached bytes are added to `gauges`.
    pub fn bounded(
        stream_id: StreamId,
        config: RelayConfig,
        queue_max_bytes: usize,
        gauges: RelayGauges,
    ) -> Arc<Self> {
        Arc::new(Relay {
            stream_id,
            config,
            queue_max_bytes,
            gauges,
            state: Mutex::new(State::default()),
            lag_skips: AtomicU64::new(0),
            gop_overflows: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent in a way that
        // matters more than losing the stream, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The publisher sent (new) metadata.
    pub fn set_metadata(&self, metadata: &StreamMetadata) {
        match flv::metadata_body(metadata) {
            Ok(body) => {
                let mut st = self.state();
                st.has_video |= metadata.video_codec_id.is_some();
                st.has_audio |= metadata.audio_codec_id.is_some();
                st.metadata = Some(body);
            }
            Err(err) => {
                tracing::warn!(stream_id = %self.stream_id, %err, "metadata not relayed");
            }
        }
    }

    /// The publisher sent a video message (its body is FLV video tag data).
    pub fn push_video(&self, timestamp: u32, data: &[u8]) {
        let info = flv::video_info(data);
        self.push(
            TagKind::Video,
            timestamp,
            data,
            info.is_sequence_header,
            info.is_keyframe,
        );
    }

    /// The publisher sent an audio message (its body is FLV audio tag data).
    pub fn push_audio(&self, timestamp: u32, data: &[u8]) {
        let config = flv::is_audio_sequence_header(data);
        self.push(TagKind::Audio, timestamp, data, config, false);
    }

    fn push(&self, kind: TagKind, timestamp: u32, data: &[u8], config: bool, keyframe: bool) {
        if data.is_empty() {
            return;
        }
        let mut st = self.state();
        if st.closed {
            return;
        }
        let encoded = match st.arena.encode(kind, timestamp, data) {
            Ok(encoded) => encoded,
            Err(err) => {
                tracing::warn!(stream_id = %self.stream_id, %err, "tag dropped");
                return;
            }
        };
        match kind {
            TagKind::Video => st.has_video = true,
            TagKind::Audio => st.has_audio = true,
            TagKind::Script => {}
        }
        let start = !config && (keyframe || (kind == TagKind::Audio && !st.has_video));
        let tag = Tag {
            kind,
            timestamp,
            encoded,
            start,
            config,
        };
        if config {
            // A copy: the configuration is kept for the stream's life and would keep its
            // whole arena block alive.
            let data = Bytes::copy_from_slice(&tag.data());
            match kind {
                TagKind::Video => st.video_config = Some(data),
                _ => st.audio_config = Some(data),
            }
        } else {
            if start {
                self.clear_gop(&mut st);
            }
            if !st.gop.is_empty() || start {
                let len = tag.encoded.len();
                if st.gop_bytes + len > self.config.gop_cache_max_bytes {
                    self.clear_gop(&mut st);
                    self.gop_overflows.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stream_id = %self.stream_id,
                        limit = self.config.gop_cache_max_bytes,
                        "GOP larger than the cache bound; new subscribers wait for the next keyframe"
                    );
                } else {
                    st.gop.push(tag.clone());
                    st.gop_bytes += len;
                    self.gauges.cached.add(len);
                }
            }
        }
        st.subscribers.retain(|q| !q.gone.load(Ordering::Relaxed));
        for queue in &st.subscribers {
            queue.push(tag.clone(), self.config.queue_len, self.queue_max_bytes);
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
        for queue in st.subscribers.drain(..) {
            queue.lock().closed = true;
            queue.notify.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Number of open subscriber streams.
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

    /// How many times a subscriber fell behind and skipped to a keyframe.
    pub fn lag_skips(&self) -> u64 {
        self.lag_skips.load(Ordering::Relaxed)
    }

    /// How many GOPs were too large to cache.
    pub fn gop_overflows(&self) -> u64 {
        self.gop_overflows.load(Ordering::Relaxed)
    }

    /// A new subscriber: a valid FLV byte stream from its first byte. `None` once closed.
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
        st.subscribers.push(Arc::clone(&queue));
        let mut sub = Subscriber {
            relay: Arc::clone(self),
            queue,
            pending: VecDeque::new(),
            phase: Phase::AwaitingStart,
            sent_video_config: None,
            sent_audio_config: None,
        };
        if !st.gop.is_empty() {
            // Snapshot and subscription happen under the same lock as `push`, so the
            // subscriber's queue continues exactly where the cached GOP ends.
            sub.start(&st, &st.gop);
        }
        drop(st);
        Some(Box::pin(futures::stream::unfold(
            sub,
            |mut sub| async move { sub.next().await.map(|bytes| (bytes, sub)) },
        )))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let gop_bytes = self.state().gop_bytes;
        self.gauges.cached.sub(gop_bytes);
    }
}

/// One subscriber's queue, filled by the publisher, emptied by the subscriber.
struct Queue {
    inner: Mutex<QueueState>,
    notify: Notify,
    /// The subscriber was dropped.
    gone: AtomicBool,
    gauges: RelayGauges,
}

#[derive(Default)]
struct QueueState {
    tags: VecDeque<Tag>,
    bytes: usize,
    /// Tags dropped since the subscriber last looked: it lost its place.
    dropped: u64,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `tag`, dropping the oldest tags to stay within the bounds.
    fn push(&self, tag: Tag, max_len: usize, max_bytes: usize) {
        let len = tag.encoded.len();
        let mut q = self.lock();
        let mut freed = 0;
        while !q.tags.is_empty() && (q.tags.len() >= max_len.max(1) || q.bytes + len > max_bytes) {
            if let Some(old) = q.tags.pop_front() {
                q.bytes -= old.encoded.len();
                freed += old.encoded.len();
                q.dropped += 1;
            }
        }
        q.bytes += len;
        q.tags.push_back(tag);
        drop(q);
        self.gauges.queued.sub(freed);
        self.gauges.queued.add(len);
        // `notify_one` stores a permit when nobody waits, so a push between the reader's
        // check and its wait is not missed.
        self.notify.notify_one();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.gauges.queued.sub(bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet: waiting for the first start point.
    AwaitingStart,
    /// Following the live tags.
    Live,
    /// Lagged: skipping up to the next start point.
    Resyncing,
}

/// What the subscriber finds in its queue.
enum Next {
    Tag(Tag),
    Lagged(u64),
    Closed,
    Empty,
}

struct Subscriber {
    relay: Arc<Relay>,
    queue: Arc<Queue>,
    pending: VecDeque<Bytes>,
    phase: Phase,
    sent_video_config: Option<Bytes>,
    sent_audio_config: Option<Bytes>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.queue.gone.store(true, Ordering::Relaxed);
    }
}

impl Subscriber {
    /// Queues the file header, metadata, sequence headers and `tags` (which begin at a start
    /// point).
    fn start(&mut self, st: &State, tags: &[Tag]) {
        let ts = tags.first().map_or(0, |t| t.timestamp);
        self.pending
            .push_back(flv::file_header(st.has_audio, st.has_video));
        if let Some(meta) = &st.metadata {
            self.queue(TagKind::Script, ts, meta);
        }
        self.queue_configs(st, ts);
        self.pending.extend(tags.iter().map(|t| t.encoded.clone()));
        self.phase = Phase::Live;
    }

    /// Queues the current sequence headers that this subscriber has not had yet.
    fn queue_configs(&mut self, st: &State, ts: u32) {
        if let Some(cfg) = &st.video_config {
            if self.sent_video_config.as_ref() != Some(cfg) {
                self.queue(TagKind::Video, ts, cfg);
                self.sent_video_config = Some(cfg.clone());
            }
        }
        if let Some(cfg) = &st.audio_config {
            if self.sent_audio_config.as_ref() != Some(cfg) {
                self.queue(TagKind::Audio, ts, cfg);
                self.sent_audio_config = Some(cfg.clone());
            }
        }
    }

    fn queue(&mut self, kind: TagKind, ts: u32, data: &[u8]) {
        // Sizes were checked when the data arrived, so this cannot fail.
        if let Ok(tag) = flv::encode_tag(kind, ts, data) {
            self.pending.push_back(tag);
        }
    }

    fn take(&self) -> Next {
        let mut q = self.queue.lock();
        if q.dropped > 0 {
            return Next::Lagged(std::mem::take(&mut q.dropped));
        }
        match q.tags.pop_front() {
            Some(tag) => {
                q.bytes -= tag.encoded.len();
                drop(q);
                self.queue.gauges.queued.sub(tag.encoded.len());
                Next::Tag(tag)
            }
            None if q.closed => Next::Closed,
            None => Next::Empty,
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Some(bytes);
            }
            match self.take() {
                Next::Tag(tag) => self.on_tag(tag),
                Next::Lagged(skipped) => {
                    self.relay.lag_skips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stream_id = %self.relay.stream_id,
                        skipped,
                        "media subscriber fell behind; skipping to the next keyframe"
                    );
                    if self.phase == Phase::Live {
                        self.phase = Phase::Resyncing;
                    }
                }
                Next::Closed => return None,
                Next::Empty => self.queue.notify.notified().await,
            }
        }
    }

    fn on_tag(&mut self, tag: Tag) {
        match self.phase {
            Phase::Live => {
                if tag.config {
                    match tag.kind {
                        TagKind::Video => {
                            self.sent_video_config = Some(Bytes::copy_from_slice(&tag.data()))
                        }
                        _ => self.sent_audio_config = Some(Bytes::copy_from_slice(&tag.data())),
                    }
                }
                self.pending.push_back(tag.encoded);
            }
            Phase::AwaitingStart if tag.start => {
                let relay = Arc::clone(&self.relay);
                let st = relay.state();
                self.start(&st, std::slice::from_ref(&tag));
            }
            Phase::Resyncing if tag.start => {
                let relay = Arc::clone(&self.relay);
                let st = relay.state();
                self.queue_configs(&st, tag.timestamp);
                drop(st);
                self.pending.push_back(tag.encoded);
                self.phase = Phase::Live;
            }
            // Configuration seen while waiting is sent (latest version) with the start point.
            Phase::AwaitingStart | Phase::Resyncing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

    const AVC_CONFIG: &[u8] = &[0x17, 0, 0, 0, 0, 1, 2, 3];
    const AAC_CONFIG: &[u8] = &[0xAF, 0, 0x12, 0x10];

    fn key(n: u8) -> Vec<u8> {
        vec![0x17, 1, 0, 0, 0, n]
    }
    fn inter(n: u8) -> Vec<u8> {
        vec![0x27, 1, 0, 0, 0, n]
    }
    fn aac(n: u8) -> Vec<u8> {
        vec![0xAF, 1, n]
    }

    fn relay(gop: usize, queue: usize) -> Arc<Relay> {
        Relay::new(
            StreamId::generate(),
            RelayConfig {
                gop_cache_max_bytes: gop,
                queue_len: queue,
            },
        )
    }

    /// Reads the stream to its end (the relay must be closed) and parses it.
    async fn collect(stream: MediaStream) -> flv::ParsedFlv {
        let chunks: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(5), stream.collect())
            .await
            .expect("stream ends after close");
        let bytes: Vec<u8> = chunks.concat();
        flv::parse(&bytes).expect("valid FLV")
    }

    fn payloads(parsed: &flv::ParsedFlv) -> Vec<(u8, Vec<u8>)> {
        parsed
            .tags
            .iter()
            .map(|(t, _, d)| (*t, d.clone()))
            .collect()
    }

    fn setup(relay: &Relay) {
        let mut meta = StreamMetadata::new();
        meta.video_codec_id = Some(7);
        meta.audio_codec_id = Some(10);
        relay.set_metadata(&meta);
        relay.push_video(0, AVC_CONFIG);
        relay.push_audio(0, AAC_CONFIG);
    }

    #[tokio::test]
    async fn a_subscriber_that_joins_mid_stream_starts_at_the_last_keyframe() {
        let relay = relay(1 << 20, 64);
        setup(&relay);
        relay.push_video(0, &key(1));
        relay.push_video(33, &inter(2));
        relay.push_video(66, &key(3));
        relay.push_audio(70, &aac(4));
        relay.push_video(100, &inter(5));
        let sub = relay.subscribe().expect("open");
        relay.push_video(133, &inter(6));
        relay.close();

        let parsed = collect(sub).await;
        assert!(parsed.has_audio && parsed.has_video);
        let tags = payloads(&parsed);
        assert_eq!(tags[0].0, 18, "onMetaData first");
        assert_eq!(
            &tags[1..],
            &[
                (9, AVC_CONFIG.to_vec()),
                (8, AAC_CONFIG.to_vec()),
                (9, key(3)),
                (8, aac(4)),
                (9, inter(5)),
                (9, inter(6)),
            ]
        );
        // Timestamps never go backwards: the headers take the keyframe's.
        let ts: Vec<u32> = parsed.tags.iter().map(|t| t.1).collect();
        assert_eq!(ts, vec![66, 66, 66, 66, 70, 100, 133]);
    }

    #[tokio::test]
    async fn a_subscriber_that_joins_before_the_first_keyframe_gets_everything_from_it() {
        let relay = relay(1 << 20, 64);
        let sub = relay.subscribe().expect("open");
        setup(&relay);
        relay.push_video(0, &inter(1)); // no keyframe yet: not decodable, skipped
        relay.push_video(33, &key(2));
        relay.push_audio(40, &aac(3));
        relay.close();

        let tags = payloads(&collect(sub).await);
        assert_eq!(
            &tags[1..],
            &[
                (9, AVC_CONFIG.to_vec()),
                (8, AAC_CONFIG.to_vec()),
                (9, key(2)),
                (8, aac(3))
            ]
        );
    }

    #[tokio::test]
    async fn a_lagging_subscriber_skips_to_the_next_keyframe() {
        let relay = relay(1 << 20, 4);
        setup(&relay);
        relay.push_video(0, &key(1));
        let sub = relay.subscribe().expect("open");
        // Overflow the 4-tag queue without reading.
        for n in 2..20 {
            relay.push_video(u32::from(n) * 33, &inter(n));
        }
        relay.push_video(700, &key(20));
        relay.push_video(733, &inter(21));
        relay.close();

        let tags = payloads(&collect(sub).await);
        assert_eq!(relay.lag_skips(), 1);
        assert!(tags.contains(&(9, key(1))));
        let at = tags
            .iter()
            .position(|t| *t == (9, key(1)))
            .expect("first keyframe");
        // Right after the cached GOP start comes the next keyframe: nothing of the broken GOP.
        assert_eq!(&tags[at + 1..], &[(9, key(20)), (9, inter(21))]);
    }

    #[tokio::test]
    async fn a_stalled_subscriber_holds_at_most_its_byte_bound_and_the_gauges_follow() {
        let gauges = RelayGauges::default();
        let relay = Relay::bounded(
            StreamId::generate(),
            RelayConfig {
                gop_cache_max_bytes: 1 << 20,
                queue_len: 1024,
            },
            10_000,
            gauges.clone(),
        );
        setup(&relay);
        relay.push_video(0, &key(1));
        let sub = relay.subscribe().expect("open");
        let big = |first: u8, n: u8| {
            let mut data = vec![first, 1, 0, 0, 0, n];
            data.resize(3000, n);
            data
        };
        // 38 tags of 3 kB, never read: only the newest fit.
        for n in 2..40 {
            relay.push_video(u32::from(n) * 33, &big(0x27, n));
        }
        let queued = relay.queued_bytes();
        assert!((6000..=10_000).contains(&queued), "{queued}");
        assert_eq!(gauges.queued.get(), queued);
        assert!(gauges.cached.get() > 38 * 3000, "the GOP cache is counted");
        relay.push_video(2000, &big(0x17, 50));
        relay.push_video(2033, &big(0x27, 51));
        relay.close();
        assert_eq!(gauges.cached.get(), 0, "the cache is freed at the end");

        let tags = payloads(&collect(sub).await);
        assert_eq!(relay.lag_skips(), 1);
        let at = tags
            .iter()
            .position(|t| *t == (9, key(1)))
            .expect("first keyframe");
        assert_eq!(&tags[at + 1..], &[(9, big(0x17, 50)), (9, big(0x27, 51))]);
        assert_eq!(
            gauges.queued.get(),
            0,
            "nothing held once the subscriber is gone"
        );
    }

    #[tokio::test]
    async fn a_dropped_subscriber_stops_holding_bytes() {
        let gauges = RelayGauges::default();
        let relay = Relay::bounded(
            StreamId::generate(),
            RelayConfig {
                gop_cache_max_bytes: 1 << 20,
                queue_len: 1024,
            },
            1 << 20,
            gauges.clone(),
        );
        setup(&relay);
        relay.push_video(0, &key(1));
        let sub = relay.subscribe().expect("open");
        relay.push_video(33, &inter(2));
        assert!(gauges.queued.get() > 0);
        drop(sub);
        assert_eq!(relay.subscriber_count(), 0);
        relay.push_video(66, &inter(3));
        assert_eq!(gauges.queued.get(), 0);
        assert_eq!(relay.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn the_gop_cache_is_bounded_and_refills_at_the_next_keyframe() {
        let relay = relay(100, 64);
        setup(&relay);
        relay.push_video(0, &key(1));
        relay.push_video(33, &[0x27, 1, 0, 0, 0, 9].repeat(20)); // 120 bytes: overflow
        assert_eq!(relay.gop_overflows(), 1);
        relay.push_video(66, &inter(3));

        // Nothing cached: a new subscriber waits for the next keyframe.
        let sub = relay.subscribe().expect("open");
        relay.push_video(99, &inter(4));
        relay.push_video(132, &key(5));
        relay.push_video(165, &inter(6));
        // And the cache works again after it.
        let late = relay.subscribe().expect("open");
        relay.close();

        let tags = payloads(&collect(sub).await);
        assert_eq!(&tags[3..], &[(9, key(5)), (9, inter(6))]);
        let tags = payloads(&collect(late).await);
        assert_eq!(&tags[3..], &[(9, key(5)), (9, inter(6))]);
    }

    #[tokio::test]
    async fn a_closed_relay_accepts_no_subscriber_and_ends_open_ones() {
        let relay = relay(1 << 20, 8);
        let sub = relay.subscribe().expect("open");
        assert_eq!(relay.subscriber_count(), 1);
        relay.close();
        assert!(relay.subscribe().is_none());
        let chunks: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(5), sub.collect())
            .await
            .expect("ends");
        assert!(chunks.is_empty(), "no keyframe ever came: nothing to send");
    }

    #[tokio::test]
    async fn an_audio_only_stream_starts_at_any_audio_frame() {
        let relay = relay(1 << 20, 8);
        relay.push_audio(0, AAC_CONFIG);
        relay.push_audio(10, &aac(1));
        relay.push_audio(20, &aac(2));
        let sub = relay.subscribe().expect("open");
        relay.close();
        let parsed = collect(sub).await;
        assert!(parsed.has_audio && !parsed.has_video);
        assert_eq!(
            payloads(&parsed),
            vec![(8, AAC_CONFIG.to_vec()), (8, aac(2))]
        );
    }
}
