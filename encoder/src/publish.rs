//! From finished segments to stored objects, playlists and events, in the order SPEC §3
//! requires: a segment is stored before the live (and VOD) playlist that names it is written,
//! every live playlist is written before the master that names it, and a playlist is
//! announced (`Available`) only once it is stored.
//!
//! Per rendition: our own numbering (`{N}.ts`, from 0, continued across ffmpeg restarts), a
//! [`LivePlaylist`] window, a [`VodPlaylist`] per part when recording, bit-rate statistics for
//! the master's `BANDWIDTH` / `AVERAGE-BANDWIDTH`, and the `CODECS` read from the first
//! segment's SPS. Segments that leave the live window of a stream that is not recorded are
//! deleted one window later by a [`DelayedDeleter`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use contract::control::{EncoderEvent, StreamType};
use contract::keys::{self, SegmentType};
use contract::playlist::{
    render_master, LivePlaylist, MediaPlaylistHeader, SegmentEntry, Variant, VodPlaylist,
};
use contract::{Rendition, StreamId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::codecs::{avc_codec_from_annex_b, codecs_attribute, FALLBACK_AVC};
use crate::events::EventSender;
use crate::ffmpeg::{RateControl, AUDIO_KBPS};
use crate::store::{ObjectStore, StoreError};
use crate::watch::SegmentReady;

/// Upload attempts per object.
const PUT_ATTEMPTS: u32 = 6;
/// Delay before the second upload attempt; doubled for each following one.
const PUT_FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The master is rewritten when a variant's peak grows by more than this factor.
const PEAK_GROWTH: f64 = 1.10;

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

/// Stores an object, retrying retryable failures with backoff (about 8 s in all).
pub async fn put_with_retry(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
) -> Result<(), PublishError> {
    let mut backoff = PUT_FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match store.put(key, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(source) if source.is_retryable() && attempt < PUT_ATTEMPTS => {
                warn!(%key, attempt, error = %source, "upload failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(source) => {
                return Err(PublishError::UploadFailed {
                    key: key.to_owned(),
                    source,
                })
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
}

/// What was published, for the end-of-stream log and the tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishSummary {
    /// Per rendition (in variant order): its name and the durations of its stored segments.
    pub renditions: Vec<(String, Vec<f64>)>,
    pub master_written: bool,
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

/// Publishes the segments of one stream.
pub struct Publisher {
    store: Arc<dyn ObjectStore>,
    settings: PublishSettings,
    outputs: Vec<Output>,
    /// The bandwidths in the master as last written (`None`: not written yet).
    announced: Option<Vec<u64>>,
    pending_vod_events: Vec<EncoderEvent>,
    events: EventSender,
    deleter: Option<DelayedDeleter>,
    stop: CancellationToken,
    limit_reached: bool,
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
        let header = || MediaPlaylistHeader { map_uri: None };
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
            })
            .collect();
        Publisher {
            store,
            settings,
            outputs,
            announced: None,
            pending_vod_events: Vec::new(),
            events,
            deleter,
            stop,
            limit_reached: false,
        }
    }

    /// Publishes every segment received, then the final playlists.
    pub async fn run(
        mut self,
        mut segments: mpsc::UnboundedReceiver<SegmentReady>,
    ) -> PublishSummary {
        while let Some(segment) = segments.recv().await {
            self.publish(segment).await;
        }
        self.finish().await
    }

    fn segment_key(&self, rendition: &str, index: u64) -> String {
        keys::segment(
            &self.settings.channel,
            &self.settings.stream_id,
            rendition,
            index,
            SegmentType::MpegTs,
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

    async fn put(&self, key: &str, body: impl Into<Bytes>) -> bool {
        match put_with_retry(self.store.as_ref(), key, body.into()).await {
            Ok(()) => true,
            Err(err) => {
                error!(error = %err, "object not stored");
                false
            }
        }
    }

    /// Stores one segment and updates the playlists that name it.
    pub async fn publish(&mut self, segment: SegmentReady) {
        let i = segment.rendition;
        let Some(output) = self.outputs.get_mut(i) else {
            error!(rendition = i, "segment of an unknown rendition");
            return;
        };
        let program_date_time_ms = output.program_date_time(&segment);
        let name = output.name.clone();
        let key = self.segment_key(&name, segment.index);
        let body = match tokio::fs::read(&segment.path).await {
            Ok(body) => Bytes::from(body),
            Err(source) => {
                let err = PublishError::ReadSegment {
                    path: segment.path.clone(),
                    source,
                };
                error!(error = %err, "segment lost");
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
            output.codecs = avc_codec_from_annex_b(&body);
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
            uri: format!("{}.ts", segment.index),
        };
        output.discontinuity_pending = false;
        let evicted = output.live.push(entry.clone());
        let live_text = output.live.render();
        let stored_count = output.durations.len() as u64;
        if let Some(deleter) = &self.deleter {
            for old in evicted {
                deleter.schedule(self.segment_key(&name, old.index));
            }
        }
        let live_key = self.live_key(&name);
        if self.put(&live_key, live_text).await {
            self.outputs[i].live_written = true;
        }
        if self.settings.record {
            self.publish_vod(i, entry).await;
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
    }

    async fn publish_vod(&mut self, i: usize, entry: SegmentEntry) {
        let name = self.outputs[i].name.clone();
        let max = self.settings.vod_max_size;
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
                playlist: VodPlaylist::new(MediaPlaylistHeader { map_uri: None }, hls_time),
                start_time: vod.start_time + vod.playlist.duration(),
                announced: false,
            };
            *vod = next;
        }
        vod.playlist.push(entry);
        let (part, text) = (vod.part, vod.playlist.render());
        if let Some((old_part, old_text)) = finished {
            let key = self.vod_key(&name, old_part);
            self.put(&key, old_text).await;
        }
        let key = self.vod_key(&name, part);
        if self.put(&key, text).await {
            self.announce_vod(i);
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
        // VOD parts are announced after the live playlists (once the master is out).
        if self.announced.is_some() {
            self.events.send(event);
        } else {
            self.pending_vod_events.push(event);
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
        let key = keys::master_playlist(&self.settings.channel, &self.settings.stream_id);
        if !self.put(&key, render_master(&variants, false)).await {
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
            for event in std::mem::take(&mut self.pending_vod_events) {
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

    /// The end of the stream: every playlist gets `EXT-X-ENDLIST`.
    pub async fn finish(mut self) -> PublishSummary {
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
        for event in std::mem::take(&mut self.pending_vod_events) {
            self.events.send(event);
        }
        PublishSummary {
            renditions: self
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.durations.clone()))
                .collect(),
            master_written: self.announced.is_some(),
        }
    }
}

async fn remove_local(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(?path, error = %err, "could not remove an uploaded segment file");
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
        assert!(master.contains(
            "BANDWIDTH=400000,AVERAGE-BANDWIDTH=400000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30.000\n640x360-30/live.m3u8"
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
}
