//! From finished segments to stored objects, playlists and events, in the order SPEC §3
//! requires: a segment (and, for fMP4, its init segment) is stored before the live (and VOD)
//! playlist that names it is written, every live playlist is written before the master that
//! names it, a preview image before the `index.json` that counts it, and a playlist or index
//! is announced (`Available`) only once it is stored.
//!
//! Per rendition: our own numbering (`{N}.ts`, from 0, continued across ffmpeg restarts), a
//! [`LivePlaylist`] window, a [`VodPlaylist`] per part when recording, bit-rate statistics for
//! the master's `BANDWIDTH` / `AVERAGE-BANDWIDTH`, and the `CODECS` read from the first
//! segment's SPS (or the fMP4 init segment's `avcC`). Segments that leave the live window of a
//! stream that is not recorded are deleted one window later by a [`DelayedDeleter`]; what is
//! left when it ends is listed in [`PublishSummary::leftovers`] for [`crate::cleanup`].
//!
//! Durability: items come from the stream's [`Spool`] one at a time, in order. An upload that
//! fails with a retryable error is retried with backoff for as long as it takes (the spool
//! bounds what waits meanwhile); only a refusal for good (or an unreadable file) loses an
//! object, and the next segment then carries a discontinuity. When a backlog drains, the
//! playlists of a rendition are written once its last waiting segment is stored instead of
//! after each one, so the live playlist catches up quickly. When uploads take longer than half
//! a segment on average, a warning is logged and counted
//! ([`crate::metrics::StorageMetrics::slow_upload_warnings`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use contract::control::{EncoderEvent, StreamType};
use contract::keys::{self, SegmentType};
use contract::playlist::{
    render_master, LivePlaylist, MediaPlaylistHeader, SegmentEntry, Variant, VodPlaylist,
};
use contract::{PreviewSpec, Rendition, StreamId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::cleanup::Leftovers;
use crate::codecs::{avc_codec_from_annex_b, avc_codec_from_avcc, codecs_attribute, FALLBACK_AVC};
use crate::events::EventSender;
use crate::ffmpeg::{RateControl, AUDIO_KBPS};
use crate::metrics;
use crate::spool::{Spool, Taken};
use crate::store::{ObjectStore, Retention, StoreError};
use crate::watch::{PreviewReady, Produced, SegmentReady};

/// Delay before the second upload attempt; doubled for each following one.
const PUT_FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between two upload attempts (how late the backlog starts after the store
/// came back, at most).
const PUT_MAX_BACKOFF: Duration = Duration::from_secs(4);
/// While the store stays unavailable, a warning this often.
const DOWN_REPORT_EVERY: Duration = Duration::from_secs(30);
/// The master is rewritten when a variant's peak grows by more than this factor.
const PEAK_GROWTH: f64 = 1.10;
/// Segments over which the upload time is averaged.
const PACE_WINDOW: usize = 10;

/// What went wrong with one object.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("upload of {key} failed: {source}")]
    UploadFailed {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot read segment file {path:?}: {source}")]
    ReadSegment {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Stores an object, retrying retryable failures with backoff (250 ms doubling up to 4 s) until
/// it is stored: while the store is down, this waits. Returns the time the successful attempt
/// took. Fails only on a refusal that will not pass.
pub async fn put_until_stored(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    retention: Retention,
) -> Result<Duration, PublishError> {
    let mut backoff = PUT_FIRST_BACKOFF;
    let mut failures = 0u64;
    let mut down_since = Instant::now();
    let mut reported = Instant::now();
    loop {
        let attempt = Instant::now();
        match store.put_with(key, body.clone(), retention).await {
            Ok(()) => {
                metrics::object_stored();
                if failures > 0 {
                    info!(%key, failures, down_for = ?down_since.elapsed(), "the store is reachable again: upload done");
                }
                return Ok(attempt.elapsed());
            }
            Err(source) if source.is_retryable() => {
                metrics::upload_retried();
                failures += 1;
                if failures == 1 {
                    down_since = attempt;
                    reported = Instant::now();
                    warn!(%key, error = %source, "upload failed: retrying until the store is back (finished segments wait in the spool)");
                } else if reported.elapsed() >= DOWN_REPORT_EVERY {
                    reported = Instant::now();
                    warn!(%key, failures, down_for = ?down_since.elapsed(), error = %source, "the store is still unavailable");
                } else {
                    debug!(%key, failures, error = %source, "upload failed, retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PUT_MAX_BACKOFF);
            }
            Err(source) => {
                metrics::object_lost();
                return Err(PublishError::UploadFailed {
                    key: key.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Deletes objects a fixed delay after they are scheduled (in order), in a task of its own.
/// On shutdown the pending deletions are done at once. The task ends when every handle is
/// dropped and the queue is drained.
#[derive(Clone)]
pub struct DelayedDeleter {
    queue: mpsc::UnboundedSender<(tokio::time::Instant, String)>,
    delay: Duration,
}

impl DelayedDeleter {
    pub fn spawn(
        store: Arc<dyn ObjectStore>,
        delay: Duration,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<(tokio::time::Instant, String)>();
        tracker.spawn(
            async move {
                while let Some((due, key)) = pending.recv().await {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    match store.delete(&key).await {
                        Ok(()) => debug!(%key, "deleted a segment that left the live window"),
                        Err(err) => warn!(%key, error = %err, "could not delete an old segment"),
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        DelayedDeleter { queue, delay }
    }

    pub fn schedule(&self, key: String) {
        let _ = self
            .queue
            .send((tokio::time::Instant::now() + self.delay, key));
    }
}

/// The settings of one stream's publication.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub channel: String,
    pub stream_id: StreamId,
    pub hls_time: f64,
    pub live_window: usize,
    pub vod_max_size: u64,
    pub record: bool,
    pub has_audio: bool,
    pub fragment_count_limit: u64,
    pub segment_type: SegmentType,
    pub preview: Option<PreviewSpec>,
}

/// What was published, for the end-of-stream log, the cleanup and the tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishSummary {
    /// Per rendition (in variant order): its name and the durations of its stored segments.
    pub renditions: Vec<(String, Vec<f64>)>,
    pub master_written: bool,
    /// Preview images stored.
    pub previews: u64,
    /// What the stream leaves in the store (its last live window, playlists, master, init
    /// segments, previews): deleted later when the stream is not recorded. Empty for
    /// recorded streams.
    pub leftovers: Leftovers,
}

/// Whether uploads keep pace with the stream: the average time to store a segment and its
/// playlists over the last few segments, against half a segment.
#[derive(Debug)]
pub struct UploadPace {
    limit: Duration,
    recent: VecDeque<Duration>,
    slow: bool,
}

impl UploadPace {
    pub fn new(hls_time: f64) -> Self {
        UploadPace {
            limit: Duration::from_secs_f64(hls_time / 2.0),
            recent: VecDeque::with_capacity(PACE_WINDOW),
            slow: false,
        }
    }

    /// Records one segment's upload time; returns the average when uploads just became too
    /// slow (once, until they are fast again).
    pub fn record(&mut self, took: Duration) -> Option<Duration> {
        if self.recent.len() == PACE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
        let average = self.recent.iter().sum::<Duration>() / self.recent.len() as u32;
        let slow = self.recent.len() >= PACE_WINDOW.min(3) && average > self.limit;
        let became_slow = slow && !self.slow;
        self.slow = slow;
        became_slow.then_some(average)
    }
}

struct VodPart {
    part: u64,
    playlist: VodPlaylist,
    /// Summed duration of the earlier parts (`x-start-time`).
    start_time: f64,
    announced: bool,
}

struct Output {
    rendition: Rendition,
    name: String,
    nominal_bps: u64,
    live: LivePlaylist,
    live_written: bool,
    /// Segments were added to the playlists since they were last written (a backlog).
    playlists_behind: bool,
    vod: Option<VodPart>,
    durations: Vec<f64>,
    discontinuity_pending: bool,
    /// Program-date-time of the current timeline: its start and the time elapsed in it.
    clock: Option<(u64, f64)>,
    last_end_ms: u64,
    peak_bps: u64,
    bytes: u64,
    seconds: f64,
    codecs: Option<String>,
    /// fMP4: the `EXT-X-MAP` of the current run's segments, and the codecs its `avcC` gave.
    map_uri: Option<String>,
    init_codecs: Option<String>,
    /// Keys of the init segments stored.
    inits: Vec<String>,
}

impl Output {
    /// The program-date-time of `segment`, advancing the clock by its duration. A new
    /// timeline (first segment, restart) starts at its first byte's arrival, never before the
    /// end of the previous one.
    fn program_date_time(&mut self, segment: &SegmentReady) -> u64 {
        let (base, elapsed) = match self.clock {
            Some(clock) if !segment.discontinuity => clock,
            _ => (segment.timeline_start_ms.max(self.last_end_ms), 0.0),
        };
        let start = base + (elapsed * 1000.0).round() as u64;
        self.clock = Some((base, elapsed + segment.duration));
        self.last_end_ms = start + (segment.duration * 1000.0).round() as u64;
        start
    }

    fn average_bps(&self) -> u64 {
        if self.seconds > 0.0 {
            (self.bytes as f64 * 8.0 / self.seconds).round() as u64
        } else {
            0
        }
    }

    /// `BANDWIDTH`: the measured peak, at least the nominal rate and the average.
    fn bandwidth(&self) -> u64 {
        self.peak_bps.max(self.nominal_bps).max(self.average_bps())
    }
}

/// Preview images of the stream.
#[derive(Default)]
struct Previews {
    /// Images stored (`0.jpg` to `{stored-1}.jpg`).
    stored: u64,
    /// The count `index.json` was last written with.
    indexed: u64,
    announced: bool,
}

/// Publishes the segments of one stream.
pub struct Publisher {
    store: Arc<dyn ObjectStore>,
    settings: PublishSettings,
    retention: Retention,
    outputs: Vec<Output>,
    /// The bandwidths in the master as last written (`None`: not written yet).
    announced: Option<Vec<u64>>,
    /// VOD and preview events held until the live playlists are announced.
    pending_events: Vec<EncoderEvent>,
    events: EventSender,
    deleter: Option<DelayedDeleter>,
    stop: CancellationToken,
    limit_reached: bool,
    previews: Previews,
    /// What is still waiting, to write playlists once per backlog instead of once per segment.
    spool: Option<Spool>,
    pace: UploadPace,
    /// Time the successful attempts of the current segment's uploads took.
    upload_time: Duration,
}

impl Publisher {
    /// `stop` is cancelled when the fragment count limit is reached; `deleter` is used when
    /// the stream is not recorded.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        settings: PublishSettings,
        renditions: &[Rendition],
        events: EventSender,
        deleter: Option<DelayedDeleter>,
        stop: CancellationToken,
    ) -> Self {
        let header = || Self::header(&settings);
        let audio_bps = if settings.has_audio {
            u64::from(AUDIO_KBPS) * 1000
        } else {
            0
        };
        let outputs = renditions
            .iter()
            .map(|rendition| Output {
                rendition: *rendition,
                name: rendition.name(),
                nominal_bps: match RateControl::for_rendition(rendition) {
                    RateControl::Bitrate { kbps } => u64::from(kbps) * 1000 + audio_bps,
                    RateControl::Crf { .. } => 0,
                },
                live: LivePlaylist::new(header(), settings.live_window, settings.hls_time),
                live_written: false,
                playlists_behind: false,
                vod: settings.record.then(|| VodPart {
                    part: 0,
                    playlist: VodPlaylist::new(header(), settings.hls_time),
                    start_time: 0.0,
                    announced: false,
                }),
                durations: Vec::new(),
                discontinuity_pending: false,
                clock: None,
                last_end_ms: 0,
                peak_bps: 0,
                bytes: 0,
                seconds: 0.0,
                codecs: None,
                map_uri: None,
                init_codecs: None,
                inits: Vec::new(),
            })
            .collect();
        Publisher {
            store,
            retention: if settings.record {
                Retention::Kept
            } else {
                Retention::Live
            },
            pace: UploadPace::new(settings.hls_time),
            settings,
            outputs,
            announced: None,
            pending_events: Vec::new(),
            events,
            deleter,
            stop,
            limit_reached: false,
            previews: Previews::default(),
            spool: None,
            upload_time: Duration::ZERO,
        }
    }

    fn header(settings: &PublishSettings) -> MediaPlaylistHeader {
        MediaPlaylistHeader {
            map_uri: (settings.segment_type == SegmentType::Fmp4)
                .then(|| keys::init_segment_name(0)),
        }
    }

    /// Publishes everything the spool gives, in order, until it is closed and empty; then the
    /// final playlists.
    pub async fn run(mut self, spool: Spool) -> PublishSummary {
        self.spool = Some(spool.clone());
        while let Some(taken) = spool.next().await {
            match taken {
                Taken::Item { produced, bytes } => {
                    match produced {
                        Produced::Segment(segment) => self.publish(segment).await,
                        Produced::Preview(image) => self.publish_preview(image).await,
                    }
                    spool.release(bytes);
                }
                Taken::Dropped(segment) => self.skip(&segment).await,
            }
        }
        self.finish().await
    }

    fn segment_key(&self, rendition: &str, index: u64) -> String {
        keys::segment(
            &self.settings.channel,
            &self.settings.stream_id,
            rendition,
            index,
            self.settings.segment_type,
        )
    }

    fn live_key(&self, rendition: &str) -> String {
        keys::live_playlist(&self.settings.channel, &self.settings.stream_id, rendition)
    }

    fn vod_key(&self, rendition: &str, part: u64) -> String {
        keys::vod_playlist(
            &self.settings.channel,
            &self.settings.stream_id,
            rendition,
            part,
        )
    }

    fn master_key(&self) -> String {
        keys::master_playlist(&self.settings.channel, &self.settings.stream_id)
    }

    /// Stores an object (waiting while the store is unavailable); false if it was lost.
    async fn put(&mut self, key: &str, body: impl Into<Bytes>) -> bool {
        match put_until_stored(self.store.as_ref(), key, body.into(), self.retention).await {
            Ok(took) => {
                self.upload_time += took;
                true
            }
            Err(err) => {
                error!(error = %err, "object not stored");
                false
            }
        }
    }

    /// Whether a later segment of rendition `i` is already waiting (a backlog).
    fn more_waiting(&self, i: usize) -> bool {
        self.spool.as_ref().is_some_and(|s| s.has_segment_of(i))
    }

    /// A segment dropped from the full spool: its time passes, and the next stored segment
    /// of the rendition starts with a discontinuity. The init segment it brought (first
    /// segment of an fMP4 run) is still stored: the run's next segments need it.
    pub async fn skip(&mut self, segment: &SegmentReady) {
        let i = segment.rendition;
        if i >= self.outputs.len() {
            return;
        }
        if let Some(init) = &segment.init {
            self.publish_init(i, segment.run, init).await;
        }
        let output = &mut self.outputs[i];
        output.program_date_time(segment);
        output.discontinuity_pending = true;
    }

    /// Stores an fMP4 init segment (before the run's first segment); its `avcC` gives the
    /// codecs when the segments carry no SPS.
    async fn publish_init(&mut self, i: usize, run: u32, path: &Path) {
        let name = self.outputs[i].name.clone();
        let body = match tokio::fs::read(path).await {
            Ok(body) => Bytes::from(body),
            Err(source) => {
                error!(?path, error = %source, "init segment lost: this run's segments will not play");
                metrics::object_lost();
                return;
            }
        };
        let key =
            keys::init_segment_of_run(&self.settings.channel, &self.settings.stream_id, &name, run);
        let stored = self.put(&key, body.clone()).await;
        remove_local(path).await;
        let output = &mut self.outputs[i];
        output.map_uri = Some(keys::init_segment_name(run));
        if output.init_codecs.is_none() {
            output.init_codecs = avc_codec_from_avcc(&body);
        }
        if stored {
            output.inits.push(key);
        }
    }

    /// Stores one segment and updates the playlists that name it.
    pub async fn publish(&mut self, segment: SegmentReady) {
        let i = segment.rendition;
        if i >= self.outputs.len() {
            error!(rendition = i, "segment of an unknown rendition");
            return;
        }
        self.upload_time = Duration::ZERO;
        if let Some(init) = &segment.init {
            self.publish_init(i, segment.run, init).await;
        }
        let program_date_time_ms = self.outputs[i].program_date_time(&segment);
        let name = self.outputs[i].name.clone();
        let key = self.segment_key(&name, segment.index);
        let body = match tokio::fs::read(&segment.path).await {
            Ok(body) => Bytes::from(body),
            Err(source) => {
                let err = PublishError::ReadSegment {
                    path: segment.path.clone(),
                    source,
                };
                error!(error = %err, "segment lost");
                metrics::object_lost();
                self.outputs[i].discontinuity_pending = true;
                return;
            }
        };
        let stored = self.put(&key, body.clone()).await;
        remove_local(&segment.path).await;
        let output = &mut self.outputs[i];
        if !stored {
            output.discontinuity_pending = true;
            return;
        }

        if output.codecs.is_none() {
            output.codecs = avc_codec_from_annex_b(&body).or_else(|| output.init_codecs.clone());
            if output.codecs.is_none() {
                warn!(rendition = %name, "no H.264 SPS in the first segment: using {FALLBACK_AVC}");
                output.codecs = Some(FALLBACK_AVC.to_owned());
            }
        }
        let bits = body.len() as u64 * 8;
        output.bytes += body.len() as u64;
        output.seconds += segment.duration;
        // A short (last) segment holds a keyframe in little time: not a representative peak.
        if segment.duration >= self.settings.hls_time / 2.0 {
            let bps = (bits as f64 / segment.duration).round() as u64;
            output.peak_bps = output.peak_bps.max(bps);
        }
        output.durations.push(segment.duration);

        let entry = SegmentEntry {
            index: segment.index,
            duration: segment.duration,
            program_date_time_ms,
            discontinuity: segment.discontinuity || output.discontinuity_pending,
            uri: format!(
                "{}.{}",
                segment.index,
                self.settings.segment_type.extension()
            ),
            map_uri: output.map_uri.clone(),
        };
        output.discontinuity_pending = false;
        let evicted = output.live.push(entry.clone());
        let stored_count = output.durations.len() as u64;
        if let Some(deleter) = &self.deleter {
            for old in evicted {
                deleter.schedule(self.segment_key(&name, old.index));
            }
        }
        // During a backlog, the playlists are written once the rendition's last waiting
        // segment is stored (but the first master waits for nobody).
        let write_now = !self.more_waiting(i) || self.announced.is_none();
        if self.settings.record {
            self.add_to_vod(i, entry).await;
        }
        if write_now {
            self.write_playlists(i).await;
        } else {
            self.outputs[i].playlists_behind = true;
        }
        if stored_count >= self.settings.fragment_count_limit && !self.limit_reached {
            self.limit_reached = true;
            warn!(
                limit = self.settings.fragment_count_limit,
                "fragment count limit reached: stopping the stream"
            );
            self.stop.cancel();
        }
        self.update_master().await;
        if let Some(average) = self.pace.record(self.upload_time) {
            metrics::slow_uploads();
            warn!(
                ?average,
                segment_seconds = self.settings.hls_time,
                "uploads take longer than half a segment on average: the store or the link is too slow for this stream"
            );
        }
    }

    /// Writes rendition `i`'s live playlist, then its VOD part when recording.
    async fn write_playlists(&mut self, i: usize) {
        let name = self.outputs[i].name.clone();
        let live_text = self.outputs[i].live.render();
        let live_key = self.live_key(&name);
        if self.put(&live_key, live_text).await {
            self.outputs[i].live_written = true;
        }
        self.outputs[i].playlists_behind = false;
        self.write_vod(i).await;
    }

    async fn write_vod(&mut self, i: usize) {
        let name = self.outputs[i].name.clone();
        let Some(vod) = &self.outputs[i].vod else {
            return;
        };
        if vod.playlist.is_empty() {
            return;
        }
        let (part, text) = (vod.part, vod.playlist.render());
        let key = self.vod_key(&name, part);
        if self.put(&key, text).await {
            self.announce_vod(i);
        }
    }

    /// Adds a stored segment to the current VOD part, starting a new part (and writing the
    /// finished one, complete) every `HLS_VOD_MAX_SIZE` segments.
    async fn add_to_vod(&mut self, i: usize, entry: SegmentEntry) {
        let name = self.outputs[i].name.clone();
        let max = self.settings.vod_max_size;
        let header = Self::header(&self.settings);
        let hls_time = self.settings.hls_time;
        let Some(vod) = self.outputs[i].vod.as_mut() else {
            return;
        };
        let mut finished = None;
        if vod.playlist.len() as u64 >= max {
            vod.playlist.end();
            finished = Some((vod.part, vod.playlist.render()));
            let next = VodPart {
                part: vod.part + 1,
                playlist: VodPlaylist::new(header, hls_time),
                start_time: vod.start_time + vod.playlist.duration(),
                announced: false,
            };
            *vod = next;
        }
        vod.playlist.push(entry);
        if let Some((old_part, old_text)) = finished {
            // A complete part is final: written at once, even during a backlog.
            let key = self.vod_key(&name, old_part);
            self.put(&key, old_text).await;
        }
    }

    fn announce_vod(&mut self, i: usize) {
        let output = &self.outputs[i];
        let Some(vod) = &output.vod else { return };
        if vod.announced {
            return;
        }
        let event = EncoderEvent::Available {
            stream_id: self.settings.stream_id.clone(),
            channel: self.settings.channel.clone(),
            stream_type: StreamType::HlsVod,
            resolution: output.name.clone(),
            index_file: self.vod_key(&output.name, vod.part),
            master_index_file: None,
            start_time: (vod.part > 0).then_some(vod.start_time),
        };
        if let Some(vod) = self.outputs[i].vod.as_mut() {
            vod.announced = true;
        }
        self.announce_later(event);
    }

    /// VOD parts and previews are announced after the live playlists (once the master is out).
    fn announce_later(&mut self, event: EncoderEvent) {
        if self.announced.is_some() {
            self.events.send(event);
        } else {
            self.pending_events.push(event);
        }
    }

    /// Stores a preview image as the next `{I}.jpg`, then `index.json` (once the backlog of
    /// images is stored), and announces the previews once both are stored.
    pub async fn publish_preview(&mut self, image: PreviewReady) {
        let Some(spec) = self.settings.preview else {
            remove_local(&image.path).await;
            return;
        };
        let name = spec.name();
        let body = match tokio::fs::read(&image.path).await {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                error!(path = ?image.path, error = %err, "preview image lost");
                metrics::object_lost();
                return;
            }
        };
        let key = keys::preview_image(
            &self.settings.channel,
            &self.settings.stream_id,
            &name,
            self.previews.stored,
        );
        let stored = self.put(&key, body).await;
        remove_local(&image.path).await;
        if !stored {
            return;
        }
        self.previews.stored += 1;
        let backlog = self.spool.as_ref().is_some_and(Spool::has_preview);
        if !backlog || self.previews.indexed == 0 {
            self.write_preview_index().await;
        }
    }

    async fn write_preview_index(&mut self) {
        let Some(spec) = self.settings.preview else {
            return;
        };
        let count = self.previews.stored;
        if count == 0 || count == self.previews.indexed {
            return;
        }
        let key = keys::preview_index(
            &self.settings.channel,
            &self.settings.stream_id,
            &spec.name(),
        );
        let index = serde_json::json!({"index_start": 0, "count": count, "pattern": "%d.jpg"});
        if !self.put(&key, index.to_string()).await {
            return;
        }
        self.previews.indexed = count;
        if !self.previews.announced {
            self.previews.announced = true;
            info!(preview = %spec.name(), "previews available");
            self.announce_later(EncoderEvent::Available {
                stream_id: self.settings.stream_id.clone(),
                channel: self.settings.channel.clone(),
                stream_type: StreamType::ImgPreview,
                resolution: spec.name(),
                index_file: key,
                master_index_file: None,
                start_time: None,
            });
        }
    }

    fn variants(&self, outputs: &[usize]) -> Vec<Variant> {
        outputs
            .iter()
            .map(|&i| {
                let o = &self.outputs[i];
                Variant {
                    uri: format!("{}/live.m3u8", o.name),
                    bandwidth: o.bandwidth(),
                    average_bandwidth: o.average_bps(),
                    codecs: codecs_attribute(
                        o.codecs.as_deref().unwrap_or(FALLBACK_AVC),
                        self.settings.has_audio,
                    ),
                    width: o.rendition.width,
                    height: o.rendition.height,
                    frame_rate: o.rendition.fps,
                }
            })
            .collect()
    }

    async fn write_master(&mut self, outputs: &[usize]) -> bool {
        let variants = self.variants(outputs);
        let key = self.master_key();
        let fmp4 = self.settings.segment_type == SegmentType::Fmp4;
        if !self.put(&key, render_master(&variants, fmp4)).await {
            return false;
        }
        let first_time = self.announced.is_none();
        self.announced = Some(self.outputs.iter().map(Output::bandwidth).collect());
        if first_time {
            info!(
                variants = outputs.len(),
                "stream available: master playlist written"
            );
            for &i in outputs {
                let name = self.outputs[i].name.clone();
                self.events.send(EncoderEvent::Available {
                    stream_id: self.settings.stream_id.clone(),
                    channel: self.settings.channel.clone(),
                    stream_type: StreamType::HlsLive,
                    resolution: name.clone(),
                    index_file: self.live_key(&name),
                    master_index_file: Some(key.clone()),
                    start_time: None,
                });
            }
            for event in std::mem::take(&mut self.pending_events) {
                self.events.send(event);
            }
        }
        true
    }

    /// Writes the master once every live playlist is stored; rewrites it when a peak grew.
    async fn update_master(&mut self) {
        let all: Vec<usize> = (0..self.outputs.len()).collect();
        match &self.announced {
            None if self.outputs.iter().all(|o| o.live_written) => {
                self.write_master(&all).await;
            }
            None => {}
            Some(announced) => {
                let grew = self
                    .outputs
                    .iter()
                    .zip(announced)
                    .any(|(o, &before)| o.bandwidth() as f64 > before as f64 * PEAK_GROWTH);
                if grew {
                    debug!("a variant's peak bit rate grew: rewriting the master");
                    self.write_master(&all).await;
                }
            }
        }
    }

    /// The end of the stream: every playlist gets `EXT-X-ENDLIST`, `index.json` counts every
    /// image.
    pub async fn finish(mut self) -> PublishSummary {
        self.write_preview_index().await;
        for i in 0..self.outputs.len() {
            let name = self.outputs[i].name.clone();
            if !self.outputs[i].live.is_empty() {
                self.outputs[i].live.end();
                let text = self.outputs[i].live.render();
                let key = self.live_key(&name);
                if self.put(&key, text).await {
                    self.outputs[i].live_written = true;
                }
            }
            let final_vod = self.outputs[i].vod.as_mut().and_then(|vod| {
                (!vod.playlist.is_empty()).then(|| {
                    vod.playlist.end();
                    (vod.part, vod.playlist.render())
                })
            });
            if let Some((part, text)) = final_vod {
                let key = self.vod_key(&name, part);
                if self.put(&key, text).await {
                    self.announce_vod(i);
                }
            }
        }
        if self.announced.is_none() {
            // Some rendition never got a segment stored: announce the others.
            let ready: Vec<usize> = (0..self.outputs.len())
                .filter(|&i| self.outputs[i].live_written)
                .collect();
            if !ready.is_empty() {
                warn!(
                    ready = ready.len(),
                    renditions = self.outputs.len(),
                    "not every rendition has a segment: master lists the others"
                );
                self.write_master(&ready).await;
            }
        }
        for event in std::mem::take(&mut self.pending_events) {
            self.events.send(event);
        }
        let leftovers = if self.settings.record {
            Leftovers::default()
        } else {
            self.leftovers()
        };
        PublishSummary {
            renditions: self
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.durations.clone()))
                .collect(),
            master_written: self.announced.is_some(),
            previews: self.previews.stored,
            leftovers,
        }
    }

    /// Every object of the stream still in the store (segments that left the live window are
    /// the deleter's).
    fn leftovers(&self) -> Leftovers {
        let mut keys = Vec::new();
        for output in &self.outputs {
            keys.extend(
                output
                    .live
                    .segments()
                    .map(|s| self.segment_key(&output.name, s.index)),
            );
            keys.extend(output.inits.iter().cloned());
            if output.live_written {
                keys.push(self.live_key(&output.name));
            }
        }
        if self.announced.is_some() {
            keys.push(self.master_key());
        }
        let mut preview_images = None;
        if let Some(spec) = self.settings.preview.filter(|_| self.previews.stored > 0) {
            let name = spec.name();
            if self.previews.indexed > 0 {
                keys.push(keys::preview_index(
                    &self.settings.channel,
                    &self.settings.stream_id,
                    &name,
                ));
            }
            preview_images = Some((
                keys::preview_prefix(&self.settings.channel, &self.settings.stream_id, &name),
                self.previews.stored,
            ));
        }
        Leftovers {
            keys,
            preview_images,
        }
    }
}

async fn remove_local(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(?path, error = %err, "could not remove an uploaded file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::spawn_event_task;
    use crate::store::FilesystemStore;
    use async_trait::async_trait;
    use contract::control::{
        ControlError, ControlPlane, PublishGrant, PublishRefusal, PublishRequest,
    };
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<EncoderEvent>>);

    #[async_trait]
    impl ControlPlane for Recorder {
        async fn publish(&self, _: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
            Err(PublishRefusal::NoCapacity)
        }
        async fn publish_ended(&self, _: &str, _: &StreamId) -> Result<(), ControlError> {
            Ok(())
        }
        async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
            self.0.lock().expect("lock").push(event);
            Ok(())
        }
    }

    fn rendition(width: u32, height: u32, kbps: Option<u32>) -> Rendition {
        Rendition {
            width,
            height,
            fps: 30.0,
            fps_capped: false,
            kbps,
            original: false,
        }
    }

    /// A fake segment: an SPS then filler.
    fn segment_bytes(size: usize) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac];
        bytes.resize(size, 0xff);
        bytes
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        scratch: PathBuf,
        control: Arc<Recorder>,
        stream_id: StreamId,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("store");
            let scratch = dir.path().join("scratch");
            std::fs::create_dir_all(&scratch).expect("mkdir");
            Fixture {
                _dir: dir,
                root,
                scratch,
                control: Arc::new(Recorder::default()),
                stream_id: StreamId::generate(),
            }
        }

        fn segment(
            &self,
            rendition: usize,
            index: u64,
            duration: f64,
            size: usize,
        ) -> SegmentReady {
            let path = self.scratch.join(format!("{rendition}-{index}.ts"));
            std::fs::write(&path, segment_bytes(size)).expect("write");
            SegmentReady {
                rendition,
                index,
                duration,
                path,
                discontinuity: false,
                timeline_start_ms: 1_700_000_000_000,
                run: 0,
                init: None,
            }
        }

        fn exists(&self, key: &str) -> bool {
            self.root.join(key).is_file()
        }

        fn read(&self, key: &str) -> Option<String> {
            std::fs::read_to_string(self.root.join(key)).ok()
        }
    }

    fn settings(f: &Fixture, record: bool, vod_max_size: u64) -> PublishSettings {
        PublishSettings {
            channel: "demo".into(),
            stream_id: f.stream_id.clone(),
            hls_time: 2.0,
            live_window: 3,
            vod_max_size,
            record,
            has_audio: true,
            fragment_count_limit: 1000,
            segment_type: SegmentType::MpegTs,
            preview: None,
        }
    }

    #[tokio::test]
    async fn master_waits_for_every_rendition_then_announces_each() {
        let f = Fixture::new();
        let store = Arc::new(FilesystemStore::new(f.root.clone()));
        let (events, task) = spawn_event_task(f.control.clone());
        let renditions = [rendition(640, 360, None), rendition(320, 180, Some(300))];
        let mut publisher = Publisher::new(
            store,
            settings(&f, false, 10),
            &renditions,
            events,
            None,
            CancellationToken::new(),
        );
        let master_key = keys::master_playlist("demo", &f.stream_id);
        publisher.publish(f.segment(0, 0, 2.0, 100_000)).await;
        assert!(f.read(&master_key).is_none(), "one rendition is not ready");
        assert!(f.exists(&keys::segment(
            "demo",
            &f.stream_id,
            "640x360-30",
            0,
            SegmentType::MpegTs
        )));
        assert!(!f.scratch.join("0-0.ts").exists(), "local file removed");
        publisher.publish(f.segment(1, 0, 2.0, 25_000)).await;
        let master = f.read(&master_key).expect("master written");
        // Measured 400 kbit/s, raised just above the smaller rendition's 428 kbit/s so that
        // players rank the larger picture higher.
        assert!(master.contains(
            "BANDWIDTH=428001,AVERAGE-BANDWIDTH=400000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30.000\n640x360-30/live.m3u8"
        ), "{master}");
        // Nominal 300 kbit/s + 128 kbit/s audio exceeds the measured 100 kbit/s.
        assert!(
            master.contains("BANDWIDTH=428000,AVERAGE-BANDWIDTH=100000"),
            "{master}"
        );
        let summary = publisher.finish().await;
        assert!(summary.master_written);
        task.finish().await;
        let events = f.control.0.lock().expect("lock").clone();
        let names: Vec<_> = events
            .iter()
            .map(|e| match e {
                EncoderEvent::Available {
                    resolution,
                    stream_type,
                    master_index_file,
                    ..
                } => {
                    assert_eq!(*stream_type, StreamType::HlsLive);
                    assert_eq!(master_index_file.as_deref(), Some(master_key.as_str()));
                    resolution.clone()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(names, ["640x360-30", "320x180-30~300"]);
        let live = f
            .read(&keys::live_playlist("demo", &f.stream_id, "640x360-30"))
            .expect("live");
        assert!(live.ends_with("#EXT-X-ENDLIST\n"), "{live}");
        assert!(live.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"));
    }

    #[tokio::test]
    async fn vod_parts_split_and_carry_their_start_time() {
        let f = Fixture::new();
        let store = Arc::new(FilesystemStore::new(f.root.clone()));
        let (events, task) = spawn_event_task(f.control.clone());
        let mut publisher = Publisher::new(
            store,
            settings(&f, true, 2),
            &[rendition(320, 180, None)],
            events,
            None,
            CancellationToken::new(),
        );
        for (index, duration) in [(0, 2.0), (1, 2.5), (2, 2.0), (3, 1.0), (4, 2.0)] {
            publisher.publish(f.segment(0, index, duration, 1000)).await;
        }
        publisher.finish().await;
        task.finish().await;
        let vod = |part| {
            f.read(&keys::vod_playlist(
                "demo",
                &f.stream_id,
                "320x180-30",
                part,
            ))
            .expect("vod part")
        };
        assert!(vod(0).contains("0.ts") && vod(0).contains("1.ts") && !vod(0).contains("2.ts"));
        assert!(vod(0).ends_with("#EXT-X-ENDLIST\n"));
        assert!(vod(1).contains("#EXT-X-MEDIA-SEQUENCE:2"));
        assert!(vod(2).ends_with("4.ts\n#EXT-X-ENDLIST\n"));
        let starts: Vec<_> = f
            .control
            .0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                EncoderEvent::Available {
                    stream_type: StreamType::HlsVod,
                    start_time,
                    ..
                } => Some(*start_time),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [None, Some(4.5), Some(7.5)]);
    }

    #[tokio::test]
    async fn segments_leaving_the_window_are_deleted_one_window_later() {
        let f = Fixture::new();
        let store = Arc::new(FilesystemStore::new(f.root.clone()));
        let (events, task) = spawn_event_task(f.control.clone());
        let tracker = TaskTracker::new();
        let deleter = DelayedDeleter::spawn(
            store.clone(),
            Duration::from_millis(400),
            CancellationToken::new(),
            &tracker,
        );
        let mut publisher = Publisher::new(
            store,
            settings(&f, false, 10),
            &[rendition(320, 180, None)],
            events,
            Some(deleter),
            CancellationToken::new(),
        );
        for index in 0..5 {
            publisher.publish(f.segment(0, index, 2.0, 1000)).await;
        }
        let key = |i| keys::segment("demo", &f.stream_id, "320x180-30", i, SegmentType::MpegTs);
        publisher.finish().await;
        task.finish().await;
        assert!(f.exists(&key(0)), "kept for one more window");
        tokio::time::sleep(Duration::from_millis(800)).await;
        tracker.close();
        tracker.wait().await;
        assert!(!f.exists(&key(0)));
        assert!(!f.exists(&key(1)));
        assert!(f.exists(&key(2)), "still in the window");
    }

    use crate::store::testing::MemoryStore;

    fn parse(text: &str) -> m3u8_rs::MediaPlaylist {
        m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("media playlist")
    }

    /// Every version of every playlist names only segments stored before it was written, and
    /// every version of index.json counts only images stored before it.
    fn assert_stored_before_named(store: &MemoryStore) {
        let mut stored = std::collections::HashSet::new();
        for (key, body) in store.versions() {
            let folder = key
                .rsplit_once('/')
                .map(|(f, _)| f.to_owned())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            if key.ends_with("master.m3u8") {
                let master = match m3u8_rs::parse_playlist_res(&body) {
                    Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
                    other => panic!("{key}: {other:?}"),
                };
                for variant in master.variants {
                    let named = format!("{folder}/{}", variant.uri);
                    assert!(
                        stored.contains(&named),
                        "{key} names {named} before it exists"
                    );
                }
            } else if key.ends_with(".m3u8") {
                for segment in parse(&text).segments {
                    let named = format!("{folder}/{}", segment.uri);
                    assert!(
                        stored.contains(&named),
                        "{key} names {named} before it exists"
                    );
                    if let Some(map) = segment.map {
                        let named = format!("{folder}/{}", map.uri);
                        assert!(
                            stored.contains(&named),
                            "{key} names {named} before it exists"
                        );
                    }
                }
            } else if key.ends_with("index.json") {
                let index: serde_json::Value = serde_json::from_str(&text).expect("json");
                for i in 0..index["count"].as_u64().expect("count") {
                    let named = format!("{folder}/{i}.jpg");
                    assert!(
                        stored.contains(&named),
                        "{key} counts {named} before it exists"
                    );
                }
            }
            stored.insert(key);
        }
    }

    fn item(segment: SegmentReady) -> Produced {
        Produced::Segment(segment)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_stream_waits_for_the_store_and_loses_nothing() {
        let f = Fixture::new();
        let store = Arc::new(MemoryStore::default());
        let (events, task) = spawn_event_task(f.control.clone());
        let stop = CancellationToken::new();
        let spool = Spool::new(1 << 20, true, stop.clone());
        let publisher = Publisher::new(
            store.clone(),
            settings(&f, true, 1000),
            &[rendition(320, 180, None), rendition(160, 90, None)],
            events,
            None,
            stop.clone(),
        );
        let running = tokio::spawn(publisher.run(spool.clone()));
        for index in 0..2 {
            for r in 0..2 {
                spool.push(item(f.segment(r, index, 2.0, 1000)));
            }
        }
        let live0 = keys::live_playlist("demo", &f.stream_id, "320x180-30");
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.text(&live0).is_none_or(|t| !t.contains("1.ts")) {
            assert!(
                Instant::now() < deadline,
                "the first segments were not published"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The store goes down for a while: segments keep coming and wait in the spool.
        store.set_down(true);
        for index in 2..8 {
            for r in 0..2 {
                spool.push(item(f.segment(r, index, 2.0, 1000)));
            }
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(spool.len() >= 11, "waiting: {}", spool.len());
        assert!(!store.text(&live0).expect("live").contains("2.ts"));
        store.set_down(false);
        spool.close();
        let summary = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("the backlog drains")
            .expect("publisher");
        task.finish().await;
        assert!(!stop.is_cancelled());
        assert_eq!(summary.renditions[0].1.len(), 8);
        assert!(summary.leftovers.is_empty(), "recorded: nothing to clean");
        for name in ["320x180-30", "160x90-30"] {
            let vod = parse(
                &store
                    .text(&keys::vod_playlist("demo", &f.stream_id, name, 0))
                    .expect("vod"),
            );
            let uris: Vec<_> = vod.segments.iter().map(|s| s.uri.clone()).collect();
            let expected: Vec<_> = (0..8).map(|i| format!("{i}.ts")).collect();
            assert_eq!(uris, expected, "{name}: every segment, in order");
            assert!(vod.end_list);
            assert!(vod.segments.iter().all(|s| !s.discontinuity));
            let live = parse(
                &store
                    .text(&keys::live_playlist("demo", &f.stream_id, name))
                    .expect("live"),
            );
            assert_eq!(live.media_sequence, 5);
            assert!(live.end_list);
            // The timeline did not break: program-date-times follow each other.
            let times: Vec<_> = vod
                .segments
                .iter()
                .map(|s| s.program_date_time.expect("PDT").timestamp_millis())
                .collect();
            assert!(times.windows(2).all(|w| w[1] - w[0] == 2000), "{times:?}");
        }
        assert_stored_before_named(&store);
        let puts = store.puts();
        // The backlog's playlists were written once per rendition, not once per segment.
        let live_writes = puts.iter().filter(|k| **k == live0).count();
        assert!(live_writes < 8, "{live_writes} writes of {live0}");
        assert!(store
            .get(&keys::segment(
                "demo",
                &f.stream_id,
                "320x180-30",
                7,
                SegmentType::MpegTs
            ))
            .is_some_and(|(_, retention)| retention == Retention::Kept));
        assert_eq!(spool.bytes(), 0);
        assert!(
            std::fs::read_dir(&f.scratch)
                .expect("scratch")
                .next()
                .is_none(),
            "local files removed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_only_stream_drops_its_oldest_segments_when_the_spool_is_full() {
        let f = Fixture::new();
        let store = Arc::new(MemoryStore::default());
        let (events, task) = spawn_event_task(f.control.clone());
        let stop = CancellationToken::new();
        // Room for three segments of 1000 bytes.
        let spool = Spool::new(3000, false, stop.clone());
        let mut settings = settings(&f, false, 1000);
        settings.live_window = 10;
        let publisher = Publisher::new(
            store.clone(),
            settings,
            &[rendition(320, 180, None)],
            events,
            None,
            stop.clone(),
        );
        store.set_down(true);
        let running = tokio::spawn(publisher.run(spool.clone()));
        spool.push(item(f.segment(0, 0, 2.0, 1000)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for index in 1..6 {
            spool.push(item(f.segment(0, index, 2.0, 1000)));
        }
        // 0 is being uploaded; 1, 2 and 3 were dropped to make room for 4 and 5.
        assert!(
            !f.scratch.join("0-1.ts").exists(),
            "dropped files are deleted"
        );
        assert!(f.scratch.join("0-5.ts").exists());
        store.set_down(false);
        spool.close();
        let summary = tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("drains")
            .expect("publisher");
        task.finish().await;
        assert!(!stop.is_cancelled(), "a live-only stream goes on");
        assert_eq!(summary.renditions[0].1.len(), 3);
        let live = parse(
            &store
                .text(&keys::live_playlist("demo", &f.stream_id, "320x180-30"))
                .expect("live"),
        );
        let uris: Vec<_> = live.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["0.ts", "4.ts", "5.ts"]);
        assert_eq!(live.media_sequence, 0);
        assert!(live.segments[1].discontinuity, "the gap is marked");
        let t = |i: usize| {
            live.segments[i]
                .program_date_time
                .expect("PDT")
                .timestamp_millis()
        };
        assert_eq!(t(1) - t(0), 8000, "the dropped time passed");
        // Everything of a live-only stream is tagged, and listed for the cleanup.
        assert!(store
            .keys()
            .iter()
            .all(|k| store.get(k).is_some_and(|(_, r)| r == Retention::Live)));
        assert_stored_before_named(&store);
        let mut leftovers: Vec<String> = summary.leftovers.keys().collect();
        leftovers.sort();
        assert_eq!(leftovers, store.keys());
    }

    #[tokio::test]
    async fn previews_are_stored_indexed_and_announced_after_the_live_playlists() {
        let f = Fixture::new();
        let store = Arc::new(MemoryStore::default());
        let (events, task) = spawn_event_task(f.control.clone());
        let mut settings = settings(&f, false, 1000);
        let spec = PreviewSpec {
            width: 256,
            height: 144,
            interval_seconds: 2,
        };
        settings.preview = Some(spec);
        let mut publisher = Publisher::new(
            store.clone(),
            settings,
            &[rendition(320, 180, None)],
            events,
            None,
            CancellationToken::new(),
        );
        let image = |n: u32| {
            let path = f.scratch.join(format!("p{n}.jpg"));
            std::fs::write(&path, b"\xff\xd8jpeg").expect("write");
            PreviewReady { path }
        };
        publisher.publish_preview(image(0)).await;
        let index_key = keys::preview_index("demo", &f.stream_id, "256x144-2");
        assert_eq!(
            store.text(&index_key).as_deref(),
            Some(r#"{"count":1,"index_start":0,"pattern":"%d.jpg"}"#)
        );
        publisher.publish(f.segment(0, 0, 2.0, 1000)).await;
        publisher.publish_preview(image(1)).await;
        let summary = publisher.finish().await;
        task.finish().await;
        assert_eq!(summary.previews, 2);
        assert_stored_before_named(&store);
        let index: serde_json::Value =
            serde_json::from_str(&store.text(&index_key).expect("index")).expect("json");
        assert_eq!(index["count"], 2);
        assert!(store
            .get(&keys::preview_image("demo", &f.stream_id, "256x144-2", 1))
            .is_some());
        let events = f.control.0.lock().expect("lock").clone();
        let types: Vec<_> = events
            .iter()
            .map(|e| match e {
                EncoderEvent::Available {
                    stream_type,
                    resolution,
                    index_file,
                    ..
                } => {
                    if *stream_type == StreamType::ImgPreview {
                        assert_eq!(resolution, "256x144-2");
                        assert_eq!(*index_file, index_key);
                    }
                    *stream_type
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(types, [StreamType::HlsLive, StreamType::ImgPreview]);
        assert_eq!(
            summary.leftovers.preview_images.as_ref().map(|p| p.1),
            Some(2)
        );
    }

    #[tokio::test]
    async fn fmp4_init_segments_go_first_and_give_the_codecs() {
        let f = Fixture::new();
        let store = Arc::new(MemoryStore::default());
        let (events, task) = spawn_event_task(f.control.clone());
        let mut settings = settings(&f, true, 1000);
        settings.segment_type = SegmentType::Fmp4;
        settings.has_audio = false;
        let mut publisher = Publisher::new(
            store.clone(),
            settings,
            &[rendition(320, 180, None)],
            events,
            None,
            CancellationToken::new(),
        );
        let init = f.scratch.join("init_0.mp4");
        let mut init_bytes = b"\x00\x00\x00\x2favcC\x01\x42\xc0\x0d\xff".to_vec();
        init_bytes.resize(100, 0);
        std::fs::write(&init, &init_bytes).expect("write");
        // fMP4 media segments carry no start codes.
        let mut segment = f.segment(0, 0, 2.0, 1000);
        std::fs::write(&segment.path, vec![0xaa; 1000]).expect("write");
        segment.init = Some(init.clone());
        publisher.publish(segment).await;
        let mut restarted = f.segment(0, 1, 2.0, 1000);
        let init1 = f.scratch.join("init_1.mp4");
        std::fs::write(&init1, &init_bytes).expect("write");
        restarted.run = 1;
        restarted.discontinuity = true;
        restarted.init = Some(init1);
        publisher.publish(restarted).await;
        publisher.finish().await;
        task.finish().await;
        let name = "320x180-30";
        assert_stored_before_named(&store);
        let puts = store.puts();
        let position = |key: &str| puts.iter().position(|k| k == key).expect(key);
        let init_key = keys::init_segment("demo", &f.stream_id, name);
        assert!(position(&init_key) < position(&keys::live_playlist("demo", &f.stream_id, name)));
        assert_eq!(store.get(&init_key).map(|(_, r)| r), Some(Retention::Kept));
        assert!(!init.exists());
        let live = parse(
            &store
                .text(&keys::live_playlist("demo", &f.stream_id, name))
                .expect("live"),
        );
        assert_eq!(live.version, Some(6));
        assert_eq!(live.segments[0].uri, "0.m4s");
        assert_eq!(
            live.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init.mp4")
        );
        assert_eq!(
            live.segments[1].map.as_ref().map(|m| m.uri.as_str()),
            Some("init-1.mp4")
        );
        assert!(store
            .get(&keys::init_segment_of_run("demo", &f.stream_id, name, 1))
            .is_some());
        let master = store
            .text(&keys::master_playlist("demo", &f.stream_id))
            .expect("master");
        assert!(master.contains("CODECS=\"avc1.42c00d\""), "{master}");
        assert!(master.contains("#EXT-X-VERSION:6"), "{master}");
    }

    #[test]
    fn slow_uploads_are_reported_once_until_they_recover() {
        let mut pace = UploadPace::new(2.0);
        let ms = Duration::from_millis;
        assert_eq!(
            pace.record(ms(1500)),
            None,
            "one slow segment is not a trend"
        );
        assert_eq!(pace.record(ms(1500)), None);
        assert_eq!(pace.record(ms(1500)), Some(ms(1500)));
        assert_eq!(pace.record(ms(1500)), None, "reported once");
        for _ in 0..10 {
            pace.record(ms(100));
        }
        assert!(!pace.slow);
        for _ in 0..8 {
            pace.record(ms(1900));
        }
        assert!(pace.slow, "slow again after recovering");
    }
}
