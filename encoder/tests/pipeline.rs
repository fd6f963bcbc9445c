//! End-to-end: a real ffmpeg encodes a generated FLV stream into a directory store, and what
//! a player and the coordinator would see is checked (playlists, segments, events).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use contract::control::{
    ControlError, ControlPlane, EncoderCommand, EncoderEvent, EncoderJob, MediaError, MediaSource,
    MediaStream, PublishGrant, PublishRefusal, PublishRequest, SourceKind, StreamOptions,
    StreamType,
};
use contract::keys::{self, SegmentType};
use contract::resolution::parse_list;
use contract::StreamId;
use encoder::{Encoder, EncoderConfig, FilesystemStore};
use futures::StreamExt as _;
use m3u8_rs::{MasterPlaylist, MediaPlaylist, Playlist};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HLS_TIME: f64 = 2.0;
/// Length of the generated source.
const SOURCE_SECONDS: f64 = 8.0;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "encoder=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Generated sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixture {
    /// 8 s, 640x360 30 fps H.264 + AAC, FLV (what the ingest relays for RTMP).
    FlvAv,
    /// The same without audio.
    FlvVideoOnly,
    /// 3 s of AAC only, FLV.
    FlvAudioOnly,
    /// 4 s, 320x240 30 fps VP8 + Opus, WebM (what browsers publish).
    WebM,
    /// As `FlvAv` with a 3 s GOP: too long for 2 s segments, so nothing is copied.
    FlvLongGop,
    /// As `FlvAv` with keyframes at 0, 1, 2, 3, 4 and then 7 s only: the cadence breaks.
    FlvBrokenCadence,
}

/// The file of a fixture, generated once per test run.
fn fixture(kind: Fixture) -> &'static Path {
    static FILES: [OnceLock<PathBuf>; 6] = [const { OnceLock::new() }; 6];
    FILES[kind as usize].get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let name = format!("{kind:?}.media");
        let path = dir.join(&name);
        let partial = dir.join(format!("{name}.{}.part", std::process::id()));
        let mut command = Command::new("ffmpeg");
        command.args(["-hide_banner", "-loglevel", "error", "-y"]);
        let video = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"];
        let audio = ["-f", "lavfi", "-i", "sine"];
        match kind {
            Fixture::FlvAv => command
                .args(video)
                .args(audio)
                .args([
                    "-t",
                    "8",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-g",
                    "30",
                ])
                .args(["-c:a", "aac", "-f", "flv"]),
            Fixture::FlvVideoOnly => command
                .args(video)
                .args([
                    "-t",
                    "8",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-g",
                    "30",
                ])
                .args(["-f", "flv"]),
            Fixture::FlvAudioOnly => command
                .args(audio)
                .args(["-t", "3", "-c:a", "aac", "-f", "flv"]),
            Fixture::WebM => command
                .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
                .args(audio)
                .args([
                    "-t",
                    "4",
                    "-c:v",
                    "libvpx",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                ])
                .args(["-b:v", "500k", "-g", "30", "-c:a", "libopus", "-f", "webm"]),
            Fixture::FlvLongGop => command
                .args(video)
                .args(audio)
                .args(["-t", "8", "-c:v", "libx264", "-preset", "ultrafast"])
                .args(["-g", "90", "-keyint_min", "90", "-sc_threshold", "0"])
                .args(["-c:a", "aac", "-f", "flv"]),
            Fixture::FlvBrokenCadence => command
                .args(video)
                .args(audio)
                .args(["-t", "8", "-c:v", "libx264", "-preset", "ultrafast"])
                .args(["-g", "1000", "-sc_threshold", "0"])
                .args(["-force_key_frames", "0,1,2,3,4,7"])
                .args(["-c:a", "aac", "-f", "flv"]),
        };
        command.arg(&partial);
        let status = command.status().expect("ffmpeg runs");
        assert!(status.success(), "generating {kind:?} failed");
        std::fs::rename(&partial, &path).expect("rename fixture");
        path
    })
}

/// Streams a file's bytes in chunks, optionally paced at `speed` × real time.
struct FileSource {
    path: PathBuf,
    speed: Option<f64>,
    opens: AtomicU32,
}

impl FileSource {
    fn new(path: &Path, speed: Option<f64>) -> Arc<Self> {
        Arc::new(FileSource {
            path: path.to_path_buf(),
            speed,
            opens: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl MediaSource for FileSource {
    async fn open(&self, _job: &EncoderJob) -> Result<MediaStream, MediaError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let data = Bytes::from(
            tokio::fs::read(&self.path)
                .await
                .map_err(|e| MediaError::Unavailable(e.to_string()))?,
        );
        const CHUNK: usize = 16 * 1024;
        let pause = self.speed.map(|speed| {
            Duration::from_secs_f64(SOURCE_SECONDS / speed * CHUNK as f64 / data.len() as f64)
        });
        let chunks: Vec<Bytes> = (0..data.len())
            .step_by(CHUNK)
            .map(|start| data.slice(start..(start + CHUNK).min(data.len())))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks).then(
            move |chunk| async move {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                chunk
            },
        )))
    }
}

/// Records every event.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<EncoderEvent>>,
}

impl Recorder {
    fn events(&self) -> Vec<EncoderEvent> {
        self.events.lock().expect("lock").clone()
    }

    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[EncoderEvent]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.events()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {:#?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl ControlPlane for Recorder {
    async fn publish(&self, _: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        Err(PublishRefusal::NoCapacity)
    }
    async fn publish_ended(&self, _: &str, _: &StreamId) -> Result<(), ControlError> {
        Ok(())
    }
    async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
        self.events.lock().expect("lock").push(event);
        Ok(())
    }
}

fn is_closed(events: &[EncoderEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, EncoderEvent::Closed { .. }))
}

fn is_live(events: &[EncoderEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            EncoderEvent::Available {
                stream_type: StreamType::HlsLive,
                ..
            }
        )
    })
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    encoder: Encoder,
    control: Arc<Recorder>,
    commands: mpsc::Sender<EncoderCommand>,
    shutdown: CancellationToken,
    running: JoinHandle<()>,
}

impl Harness {
    fn start(media: Arc<dyn MediaSource>, tweak: impl FnOnce(&mut EncoderConfig)) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        let mut config = EncoderConfig {
            node_id: "encoder-test".into(),
            hls_time: HLS_TIME,
            h264_preset: "ultrafast".into(),
            work_dir: work.clone(),
            stop_grace: Duration::from_secs(10),
            ..EncoderConfig::default()
        };
        tweak(&mut config);
        let control = Arc::new(Recorder::default());
        let encoder = Encoder::new(
            config,
            Arc::new(FilesystemStore::new(root.clone())),
            media,
            control.clone(),
        );
        let (commands, receiver) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let encoder = encoder.clone();
            let shutdown = shutdown.clone();
            async move { encoder.run(receiver, shutdown).await }
        });
        Harness {
            _dir: dir,
            root,
            work,
            encoder,
            control,
            commands,
            shutdown,
            running,
        }
    }

    async fn send(&self, command: EncoderCommand) {
        self.commands.send(command).await.expect("encoder runs");
    }

    async fn stop_encoder(self) -> Self {
        self.shutdown.cancel();
        let Harness {
            _dir,
            root,
            work,
            encoder,
            control,
            commands,
            shutdown,
            running,
        } = self;
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("run returns after the shutdown")
            .expect("run does not panic");
        Harness {
            _dir,
            root,
            work,
            encoder,
            control,
            commands,
            shutdown,
            running: tokio::spawn(async {}),
        }
    }

    fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.root.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn media_playlist(&self, key: &str) -> MediaPlaylist {
        match m3u8_rs::parse_playlist_res(&self.read(key)) {
            Ok(Playlist::MediaPlaylist(p)) => p,
            other => panic!("{key} is not a media playlist: {other:?}"),
        }
    }

    fn master_playlist(&self, key: &str) -> MasterPlaylist {
        match m3u8_rs::parse_playlist_res(&self.read(key)) {
            Ok(Playlist::MasterPlaylist(p)) => p,
            other => panic!("{key} is not a master playlist: {other:?}"),
        }
    }
}

fn job(resolutions: &str, record: bool) -> EncoderJob {
    job_from(SourceKind::Rtmp, resolutions, record)
}

fn job_from(source: SourceKind, resolutions: &str, record: bool) -> EncoderJob {
    EncoderJob {
        stream_id: StreamId::generate(),
        channel: "demo".into(),
        ingest_id: "ingest-test".into(),
        source,
        options: StreamOptions {
            resolutions: parse_list(Some(resolutions)).0,
            record,
            previews: None,
        },
        media_url: None,
        reconnect_window_ms: 0,
    }
}

fn probe_size(path: &Path) -> (u32, u32) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(output.status.success(), "ffprobe cannot read {path:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    // The stream is listed under its program and on its own: the first line is enough.
    let (w, h) = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .split_once(',')
        .unwrap_or_else(|| panic!("ffprobe said {text:?}"));
    (w.parse().expect("width"), h.parse().expect("height"))
}

/// What a stream looks like in the store once it ended.
struct Published {
    /// Per rendition (as in the master): name and segment durations.
    renditions: Vec<(String, Vec<f64>)>,
    master: MasterPlaylist,
}

/// Checks what every finished stream must satisfy and returns what was published.
fn check_finished_stream(
    h: &Harness,
    job: &EncoderJob,
    expected: &[(&str, (u32, u32))],
    audio: bool,
) -> Published {
    let master_key = keys::master_playlist(&job.channel, &job.stream_id);
    let master = h.master_playlist(&master_key);
    assert_eq!(master.variants.len(), expected.len());
    let mut renditions = Vec::new();
    for (variant, (name, size)) in master.variants.iter().zip(expected) {
        assert_eq!(variant.uri, format!("{name}/live.m3u8"));
        let resolution = variant.resolution.expect("RESOLUTION");
        assert_eq!((resolution.width as u32, resolution.height as u32), *size);
        assert!(
            variant.bandwidth > 50_000,
            "BANDWIDTH {}",
            variant.bandwidth
        );
        assert!(variant
            .average_bandwidth
            .is_some_and(|a| a <= variant.bandwidth));
        assert!(variant.frame_rate.is_some());
        let codecs = variant.codecs.as_deref().expect("CODECS");
        // ultrafast encodes Constrained Baseline: the SPS was read (not the fallback).
        assert!(codecs.starts_with("avc1.42c0"), "CODECS {codecs}");
        assert_eq!(codecs.contains(",mp4a.40.2"), audio, "CODECS {codecs}");

        let live = h.media_playlist(&keys::live_playlist(&job.channel, &job.stream_id, name));
        assert!(live.end_list, "{name}: live playlist without ENDLIST");
        assert!(live.independent_segments);
        assert!(!live.segments.is_empty());
        for (i, segment) in live.segments.iter().enumerate() {
            let index = live.media_sequence + i as u64;
            assert_eq!(segment.uri, format!("{index}.ts"));
            assert!(segment.program_date_time.is_some());
        }
        let count = live.media_sequence + live.segments.len() as u64;
        for index in 0..count {
            let key = keys::segment(
                &job.channel,
                &job.stream_id,
                name,
                index,
                SegmentType::MpegTs,
            );
            assert!(h.root.join(&key).is_file(), "{key} missing");
        }
        let first = keys::segment(&job.channel, &job.stream_id, name, 0, SegmentType::MpegTs);
        assert_eq!(probe_size(&h.root.join(first)), *size);
        let durations = live
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .collect();
        renditions.push((name.to_string(), durations));
    }
    let events = h.control.events();
    let closed_at = events
        .iter()
        .position(|e| matches!(e, EncoderEvent::Closed { .. }))
        .expect("Closed sent");
    assert_eq!(closed_at, events.len() - 1, "Closed is the last event");
    assert!(matches!(
        &events[closed_at],
        EncoderEvent::Closed { stream_id, encoder_id, .. }
            if *stream_id == job.stream_id && encoder_id == "encoder-test"
    ));
    for (name, _) in expected {
        assert!(
            events[..closed_at].iter().any(|e| matches!(e,
                EncoderEvent::Available {
                    stream_type: StreamType::HlsLive,
                    resolution,
                    index_file,
                    master_index_file: Some(master),
                    start_time: None,
                    ..
                } if resolution == name
                    && *index_file == keys::live_playlist(&job.channel, &job.stream_id, name)
                    && *master == master_key)),
            "no HLS-LIVE event for {name}: {events:#?}"
        );
    }
    assert!(h.encoder.active_jobs().is_empty());
    assert!(
        !h.work.join(job.stream_id.as_str()).exists(),
        "work directory cleaned"
    );
    Published { renditions, master }
}

/// Same count, same durations (±0.1 s) but the last, each within 0.5 s of the target but the
/// last. (ffmpeg sums the frame durations of the source's frame rate for the last segment of
/// a rendition whose rate is capped with `select`, as when the ORIGINAL is copied.)
fn assert_aligned(published: &Published) {
    let (first_name, reference) = &published.renditions[0];
    for (name, durations) in &published.renditions[1..] {
        assert_eq!(
            durations.len(),
            reference.len(),
            "{name} vs {first_name}: {durations:?} vs {reference:?}"
        );
        let body = reference.len() - 1;
        for (a, b) in durations[..body].iter().zip(&reference[..body]) {
            assert!(
                (a - b).abs() <= 0.1,
                "{name}: {durations:?} vs {reference:?}"
            );
        }
    }
    for (name, durations) in &published.renditions {
        for d in &durations[..durations.len() - 1] {
            assert!((d - HLS_TIME).abs() <= 0.5, "{name}: {durations:?}");
        }
    }
}

async fn run_to_end(h: &Harness, job: &EncoderJob) {
    h.send(EncoderCommand::Start(job.clone())).await;
    h.control
        .wait_for("Closed", Duration::from_secs(60), is_closed)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_stream_becomes_an_aligned_two_rendition_ladder() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), None), |_| {});
    let job = job("ORIGINAL,320x180-30~300", false);
    run_to_end(&h, &job).await;
    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-30~300", (320, 180))],
        true,
    );
    assert_aligned(&published);
    let total: f64 = published.renditions[0].1.iter().sum();
    assert!((total - SOURCE_SECONDS).abs() < 0.5, "total {total}");
    // The requested 300 kbit/s + 128 kbit/s of audio is the floor of BANDWIDTH.
    assert!(published.master.variants[1].bandwidth >= 428_000);
    eprintln!("durations: {:?}", published.renditions);
    let h = h.stop_encoder().await;
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_audio_is_encoded_video_only_and_capped_frame_rates_stay_aligned() {
    let h = Harness::start(
        FileSource::new(fixture(Fixture::FlvVideoOnly), None),
        |_| {},
    );
    let job = job("ORIGINAL,320x180-15", false);
    run_to_end(&h, &job).await;
    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-15", (320, 180))],
        false,
    );
    assert_aligned(&published);
    let rates: Vec<f64> = published
        .master
        .variants
        .iter()
        .map(|v| v.frame_rate.expect("FRAME-RATE"))
        .collect();
    assert_eq!(rates, [30.0, 15.0]);
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_stream_gets_a_complete_vod_playlist() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), None), |_| {});
    let job = job("ORIGINAL,320x180-30~300", true);
    run_to_end(&h, &job).await;
    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-30~300", (320, 180))],
        true,
    );
    for (name, durations) in &published.renditions {
        let vod_key = keys::vod_playlist(&job.channel, &job.stream_id, name, 0);
        let vod = h.media_playlist(&vod_key);
        assert!(vod.end_list, "{name}: VOD without ENDLIST");
        assert_eq!(vod.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event));
        assert_eq!(vod.media_sequence, 0);
        let uris: Vec<_> = vod.segments.iter().map(|s| s.uri.clone()).collect();
        let expected: Vec<_> = (0..durations.len()).map(|i| format!("{i}.ts")).collect();
        assert_eq!(uris, expected, "{name}: every segment is in the recording");
        let events = h.control.events();
        assert!(events.iter().any(|e| matches!(e,
            EncoderEvent::Available { stream_type: StreamType::HlsVod, resolution, index_file, start_time: None, .. }
                if resolution == name && *index_file == vod_key)));
    }
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_command_ends_the_stream_cleanly_before_the_publisher_does() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), Some(1.0)), |_| {});
    let job = job("ORIGINAL,320x180-30~300", false);
    let started = Instant::now();
    h.send(EncoderCommand::Start(job.clone())).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.encoder.active_jobs().is_empty() {
        assert!(Instant::now() < deadline, "the job never became active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.encoder.active_jobs(), vec![job.stream_id.clone()]);
    h.control
        .wait_for("the stream to be live", Duration::from_secs(30), is_live)
        .await;
    let stop_sent = Instant::now();
    h.send(EncoderCommand::Stop {
        stream_id: job.stream_id.clone(),
    })
    .await;
    h.control
        .wait_for("Closed", Duration::from_secs(20), is_closed)
        .await;
    let stopping = stop_sent.elapsed();
    assert!(stopping < Duration::from_secs(5), "stop took {stopping:?}");
    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-30~300", (320, 180))],
        true,
    );
    let total: f64 = published.renditions[0].1.iter().sum();
    eprintln!("stopped after {stopping:?}: {:?}", published.renditions);
    assert!(
        total < SOURCE_SECONDS - 1.0,
        "the stream was cut short: {total} s in {:?}",
        started.elapsed()
    );
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_streams_with_final_playlists() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), Some(1.0)), |_| {});
    let job = job("320x180-30~300", false);
    h.send(EncoderCommand::Start(job.clone())).await;
    h.control
        .wait_for("the stream to be live", Duration::from_secs(30), is_live)
        .await;
    let h = h.stop_encoder().await;
    assert!(is_closed(&h.control.events()), "run returned before Closed");
    check_finished_stream(&h, &job, &[("320x180-30~300", (320, 180))], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_ffmpeg_is_restarted_and_the_playlist_marks_the_break() {
    // An ffmpeg whose first run is killed after 2.5 s, as a crash would end it.
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("crashed-once");
    let wrapper = dir.path().join("ffmpeg-crashing-once");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ ! -e '{m}' ]; then : > '{m}'; exec timeout -s KILL 2.5 ffmpeg \"$@\"; fi\nexec ffmpeg \"$@\"\n",
            m = marker.display()
        ),
    )
    .expect("write wrapper");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let media = FileSource::new(fixture(Fixture::FlvAv), Some(2.0));
    let h = Harness::start(media.clone(), |config| config.ffmpeg_path = wrapper.clone());
    let job = job("ORIGINAL,320x180-30~300", false);
    run_to_end(&h, &job).await;
    assert!(marker.exists());
    assert_eq!(
        media.opens.load(Ordering::SeqCst),
        2,
        "media re-opened once"
    );
    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-30~300", (320, 180))],
        true,
    );
    for (name, durations) in &published.renditions {
        let live = h.media_playlist(&keys::live_playlist(&job.channel, &job.stream_id, name));
        let breaks: Vec<usize> = live
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.discontinuity)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            breaks.len(),
            1,
            "{name}: one discontinuity expected: {breaks:?}"
        );
        assert!(
            breaks[0] > 0,
            "{name}: the break follows the first run's segments"
        );
        // The second run encodes the whole source again.
        eprintln!("{name}: {durations:?}, break before {}", breaks[0]);
        if std::env::var_os("SHOW_PLAYLISTS").is_some() {
            let master = keys::master_playlist(&job.channel, &job.stream_id);
            eprintln!("{}", String::from_utf8_lossy(&h.read(&master)));
            let live = keys::live_playlist(&job.channel, &job.stream_id, name);
            eprintln!("{}", String::from_utf8_lossy(&h.read(&live)));
        }
        let after: f64 = durations[breaks[0]..].iter().sum();
        assert!(
            (after - SOURCE_SECONDS).abs() < 0.5,
            "{name}: {durations:?}"
        );
    }
    h.stop_encoder().await;
}

/// The H.264 profile of a segment's video.
fn video_profile(path: &Path) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=profile", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(output.status.success(), "ffprobe cannot read {path:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Segment durations and profiles of one rendition, with the indexes of discontinuities.
fn rendition_segments(
    h: &Harness,
    job: &EncoderJob,
    name: &str,
) -> (Vec<f64>, Vec<String>, Vec<usize>) {
    let live = h.media_playlist(&keys::live_playlist(&job.channel, &job.stream_id, name));
    assert!(live.end_list, "{name}: not ended");
    let durations = live
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .collect();
    let profiles = (0..live.segments.len() as u64)
        .map(|i| {
            let key = keys::segment(
                &job.channel,
                &job.stream_id,
                name,
                live.media_sequence + i,
                SegmentType::MpegTs,
            );
            video_profile(&h.root.join(key))
        })
        .collect();
    let breaks = live
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.discontinuity)
        .map(|(i, _)| i)
        .collect();
    (durations, profiles, breaks)
}

// The fixtures are x264 `ultrafast` (Constrained Baseline); the encoder runs `veryfast`
// (High) in these tests, so a segment's profile tells a copy from an encode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_of_a_regular_h264_source_is_copied_and_the_ladder_stays_aligned() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), None), |config| {
        config.h264_preset = "veryfast".into();
    });
    let job = job("ORIGINAL,320x180-15,160x90-30", false);
    run_to_end(&h, &job).await;
    let master = h.master_playlist(&keys::master_playlist(&job.channel, &job.stream_id));
    let codecs: Vec<&str> = master
        .variants
        .iter()
        .map(|v| v.codecs.as_deref().unwrap_or(""))
        .collect();
    assert!(codecs[0].starts_with("avc1.42c0"), "copied: {codecs:?}");
    assert!(codecs[1].starts_with("avc1.64"), "encoded: {codecs:?}");
    // A 1 s GOP and a 2 s target: segments of two GOPs, cut at the same instants everywhere.
    let mut reference: Option<Vec<f64>> = None;
    for name in ["640x360-30", "320x180-15", "160x90-30"] {
        let (durations, profiles, breaks) = rendition_segments(&h, &job, name);
        assert!(breaks.is_empty(), "{name}: {breaks:?}");
        let expected = if name == "640x360-30" {
            "Constrained Baseline"
        } else {
            "High"
        };
        assert!(
            profiles.iter().all(|p| p == expected),
            "{name}: {profiles:?}"
        );
        assert_eq!(durations.len(), 4, "{name}: {durations:?}");
        for d in &durations[..3] {
            assert!((d - 2.0).abs() < 0.01, "{name}: {durations:?}");
        }
        if let Some(reference) = &reference {
            assert_eq!(durations[..3], reference[..3], "{name}");
        }
        reference.get_or_insert(durations);
    }
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gop_or_a_disabled_pass_through_encodes_the_original() {
    for (fixture_kind, enabled) in [(Fixture::FlvLongGop, true), (Fixture::FlvAv, false)] {
        let h = Harness::start(FileSource::new(fixture(fixture_kind), None), |config| {
            config.h264_preset = "veryfast".into();
            config.passthrough = enabled;
        });
        let job = job("ORIGINAL,320x180-30", false);
        run_to_end(&h, &job).await;
        for name in ["640x360-30", "320x180-30"] {
            let (durations, profiles, _) = rendition_segments(&h, &job, name);
            assert!(
                profiles.iter().all(|p| p == "High"),
                "{fixture_kind:?}: {name}: {profiles:?}"
            );
            // Segments of HLS_TIME_SECONDS, as without pass-through.
            assert!(
                (durations[0] - HLS_TIME).abs() < 0.01,
                "{name}: {durations:?}"
            );
        }
        h.stop_encoder().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_loses_its_keyframe_cadence_goes_on_fully_encoded() {
    let media = FileSource::new(fixture(Fixture::FlvBrokenCadence), None);
    let h = Harness::start(media.clone(), |config| {
        config.h264_preset = "veryfast".into();
    });
    let job = job("ORIGINAL,320x180-30", false);
    run_to_end(&h, &job).await;
    // The keyframe at 7 s (5 and 6 are missing) ends the copying run; the media is opened
    // again (the file source starts over) and everything is encoded from then on.
    assert_eq!(media.opens.load(Ordering::SeqCst), 2);
    let mut first_runs = Vec::new();
    for name in ["640x360-30", "320x180-30"] {
        let (durations, profiles, breaks) = rendition_segments(&h, &job, name);
        assert_eq!(breaks.len(), 1, "{name}: {breaks:?} {durations:?}");
        let split = breaks[0];
        if name == "640x360-30" {
            assert!(
                profiles[..split]
                    .iter()
                    .all(|p| p == "Constrained Baseline"),
                "{profiles:?}"
            );
        }
        assert!(
            profiles[split..].iter().all(|p| p == "High"),
            "{name}: {profiles:?}"
        );
        // The encoded run keeps the stream's segment duration (two 1 s GOPs).
        for d in &durations[split..durations.len() - 1] {
            assert!((d - 2.0).abs() < 0.01, "{name}: {durations:?}");
        }
        let after: f64 = durations[split..].iter().sum();
        assert!(
            (after - SOURCE_SECONDS).abs() < 0.5,
            "{name}: {durations:?}"
        );
        first_runs.push(durations[..split].to_vec());
    }
    assert_eq!(first_runs[0].len(), first_runs[1].len(), "{first_runs:?}");
    h.stop_encoder().await;
}

/// A media source that cannot be reached.
struct Unreachable;

#[async_trait]
impl MediaSource for Unreachable {
    async fn open(&self, job: &EncoderJob) -> Result<MediaStream, MediaError> {
        Err(MediaError::UnknownStream(job.stream_id.clone()))
    }
}

/// Only `Closed` was sent, and nothing was published.
fn assert_closed_without_output(h: &Harness, job: &EncoderJob) {
    let events = h.control.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(is_closed(&events));
    assert!(!h
        .root
        .join(keys::stream_prefix(&job.channel, &job.stream_id))
        .exists());
    assert!(h.encoder.active_jobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_video_is_closed_without_output() {
    let h = Harness::start(
        FileSource::new(fixture(Fixture::FlvAudioOnly), None),
        |_| {},
    );
    let job = job("ORIGINAL", false);
    run_to_end(&h, &job).await;
    assert_closed_without_output(&h, &job);
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_media_cannot_be_opened_is_closed() {
    let h = Harness::start(Arc::new(Unreachable), |_| {});
    let job = job("ORIGINAL", false);
    run_to_end(&h, &job).await;
    assert_closed_without_output(&h, &job);
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_webm_source_is_probed_and_encoded() {
    let h = Harness::start(FileSource::new(fixture(Fixture::WebM), None), |_| {});
    let job = job_from(SourceKind::Ws, "ORIGINAL,160x120", false);
    run_to_end(&h, &job).await;
    let published = check_finished_stream(
        &h,
        &job,
        &[("320x240-30", (320, 240)), ("160x120-30", (160, 120))],
        true,
    );
    assert_aligned(&published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fragment_count_limit_stops_the_stream() {
    let h = Harness::start(
        FileSource::new(fixture(Fixture::FlvAv), Some(2.0)),
        |config| {
            config.fragment_count_limit = 2;
        },
    );
    let job = job("320x180-30~300", false);
    run_to_end(&h, &job).await;
    let published = check_finished_stream(&h, &job, &[("320x180-30~300", (320, 180))], true);
    let count = published.renditions[0].1.len();
    // The limit stops the input; the segment in progress is still finished.
    assert!((2..=3).contains(&count), "{:?}", published.renditions);
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_that_does_not_exit_is_killed_after_the_grace_period() {
    // ffmpeg runs normally, then the process lingers (as a hung ffmpeg would).
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("ffmpeg-lingering");
    std::fs::write(&wrapper, "#!/bin/sh\nffmpeg \"$@\"\nsleep 20\n").expect("write wrapper");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), None), |config| {
        config.ffmpeg_path = wrapper.clone();
        config.stop_grace = Duration::from_millis(1500);
    });
    let job = job("320x180-30~300", false);
    let started = Instant::now();
    h.send(EncoderCommand::Start(job.clone())).await;
    // Without the kill, Closed would wait for the 20 s of lingering.
    h.control
        .wait_for("Closed", Duration::from_secs(12), is_closed)
        .await;
    let published = check_finished_stream(&h, &job, &[("320x180-30~300", (320, 180))], true);
    assert_eq!(
        published.renditions[0].1.len(),
        4,
        "{:?}",
        published.renditions
    );
    eprintln!("closed {:?} after the start", started.elapsed());
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_segments_and_letterboxed_previews_come_from_the_same_ffmpeg() {
    let h = Harness::start(FileSource::new(fixture(Fixture::FlvAv), None), |config| {
        config.segment_type = SegmentType::Fmp4;
    });
    let mut job = job("ORIGINAL,320x180-30~300", true);
    // 640x360 into a 4:3 box: letterboxed.
    job.options.previews = Some(contract::PreviewSpec {
        width: 200,
        height: 150,
        interval_seconds: 2,
    });
    run_to_end(&h, &job).await;
    let master = h.master_playlist(&keys::master_playlist(&job.channel, &job.stream_id));
    assert_eq!(master.variants.len(), 2);
    for (variant, name) in master.variants.iter().zip(["640x360-30", "320x180-30~300"]) {
        let codecs = variant.codecs.as_deref().expect("CODECS");
        assert!(codecs.starts_with("avc1.42c0"), "from avcC: {codecs}");
        let live = h.media_playlist(&keys::live_playlist(&job.channel, &job.stream_id, name));
        assert!(live.end_list);
        assert_eq!(live.version, Some(6));
        assert_eq!(
            live.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init.mp4")
        );
        assert!(live.segments.iter().all(|s| s.uri.ends_with(".m4s")));
        let init = h
            .root
            .join(keys::init_segment(&job.channel, &job.stream_id, name));
        assert!(init.is_file(), "{init:?}");
        let vod = h.media_playlist(&keys::vod_playlist(&job.channel, &job.stream_id, name, 0));
        assert_eq!(vod.segments.len(), live.segments.len());
        // A player reads the fMP4 rendition from its playlist.
        let playlist = h
            .root
            .join(keys::live_playlist(&job.channel, &job.stream_id, name));
        assert!(probe_size(&playlist).0 > 0);
    }
    // 8 s at one image every 2 s: 0, 2, 4, 6 s.
    let folder = "200x150-2";
    let index: serde_json::Value =
        serde_json::from_slice(&h.read(&keys::preview_index(&job.channel, &job.stream_id, folder)))
            .expect("index.json");
    assert_eq!(index["index_start"], 0);
    assert_eq!(index["pattern"], "%d.jpg");
    let count = index["count"].as_u64().expect("count");
    assert!((4..=5).contains(&count), "{count} images");
    for i in 0..count {
        let image = h
            .root
            .join(keys::preview_image(&job.channel, &job.stream_id, folder, i));
        assert_eq!(probe_size(&image), (200, 150), "image {i}");
    }
    let events = h.control.events();
    assert!(events.iter().any(|e| matches!(e,
        EncoderEvent::Available { stream_type: StreamType::ImgPreview, resolution, .. }
            if resolution == folder)));
    h.stop_encoder().await;
}

/// Serves one file per opening, in order (the last one again when they run out), and notes
/// when each stream ended: a publisher that leaves and comes back.
struct SequenceSource {
    files: Vec<PathBuf>,
    opens: AtomicU32,
    ended: Arc<Mutex<Vec<Instant>>>,
}

impl SequenceSource {
    fn new(files: &[&Path]) -> Arc<Self> {
        Arc::new(SequenceSource {
            files: files.iter().map(|f| f.to_path_buf()).collect(),
            opens: AtomicU32::new(0),
            ended: Arc::default(),
        })
    }

    fn ended(&self) -> Vec<Instant> {
        self.ended.lock().expect("lock").clone()
    }

    async fn wait_for_end(&self, count: usize) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.ended().get(count - 1) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "media stream {count} never ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl MediaSource for SequenceSource {
    async fn open(&self, _job: &EncoderJob) -> Result<MediaStream, MediaError> {
        let n = self.opens.fetch_add(1, Ordering::SeqCst) as usize;
        let path = &self.files[n.min(self.files.len() - 1)];
        let data = Bytes::from(
            tokio::fs::read(path)
                .await
                .map_err(|e| MediaError::Unavailable(e.to_string()))?,
        );
        const CHUNK: usize = 16 * 1024;
        let chunks: Vec<Bytes> = (0..data.len())
            .step_by(CHUNK)
            .map(|start| data.slice(start..(start + CHUNK).min(data.len())))
            .collect();
        let ended = self.ended.clone();
        let end = futures::stream::once(async move {
            ended.lock().expect("lock").push(Instant::now());
            Bytes::new()
        });
        Ok(Box::pin(futures::stream::iter(chunks).chain(end)))
    }
}

fn resume(job: &EncoderJob, source: SourceKind) -> EncoderCommand {
    EncoderCommand::Resume {
        stream_id: job.stream_id.clone(),
        ingest_id: "ingest-2".into(),
        source,
        media_url: None,
    }
}

/// Waits until every rendition's live playlist lists `count` segments.
async fn wait_for_segments(h: &Harness, job: &EncoderJob, names: &[&str], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed: Vec<usize> = names
            .iter()
            .map(|name| {
                let key = keys::live_playlist(&job.channel, &job.stream_id, name);
                match std::fs::read(h.root.join(key)) {
                    Ok(bytes) => match m3u8_rs::parse_media_playlist_res(&bytes) {
                        Ok(p) => p.segments.len(),
                        Err(_) => 0,
                    },
                    Err(_) => 0,
                }
            })
            .collect();
        if listed.iter().all(|n| *n >= count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "segments listed: {listed:?}, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_back_within_the_window_continues_the_stream_after_a_discontinuity() {
    // The publisher leaves after 8 s of RTMP (16:9) and comes back from a browser (WebM, 4:3).
    let media = SequenceSource::new(&[fixture(Fixture::FlvAv), fixture(Fixture::WebM)]);
    let h = Harness::start(media.clone(), |_| {});
    let mut job = job("ORIGINAL,320x180-30~300", true);
    job.reconnect_window_ms = 3_000;
    let names = ["640x360-30", "320x180-30~300"];
    h.send(EncoderCommand::Start(job.clone())).await;
    media.wait_for_end(1).await;
    wait_for_segments(&h, &job, &names, 4).await;
    // The first run is published; the stream waits for its publisher.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!is_closed(&h.control.events()), "closed without waiting");
    for name in names {
        let live = h.media_playlist(&keys::live_playlist(&job.channel, &job.stream_id, name));
        assert!(!live.end_list, "{name}: ended while waiting");
        assert_eq!(live.segments.len(), 4, "{name}");
    }
    assert_eq!(h.encoder.active_jobs(), vec![job.stream_id.clone()]);
    h.send(resume(&job, SourceKind::Ws)).await;
    let ended = media.wait_for_end(2).await;
    h.control
        .wait_for("Closed", Duration::from_secs(60), is_closed)
        .await;
    let closed_after = ended.elapsed();
    assert_eq!(media.opens.load(Ordering::SeqCst), 2);

    let published = check_finished_stream(
        &h,
        &job,
        &[("640x360-30", (640, 360)), ("320x180-30~300", (320, 180))],
        true,
    );
    assert_aligned(&published);
    for (name, durations) in &published.renditions {
        let key = keys::live_playlist(&job.channel, &job.stream_id, name);
        let text = String::from_utf8_lossy(&h.read(&key)).into_owned();
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert_eq!(text.matches("#EXT-X-ENDLIST").count(), 1, "{text}");
        let live = h.media_playlist(&key);
        assert_eq!(live.media_sequence, 0);
        let breaks: Vec<usize> = live
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.discontinuity)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            breaks,
            [4],
            "{name}: the break follows the first publisher's 8 s"
        );
        let before: f64 = durations[..4].iter().sum();
        let after: f64 = durations[4..].iter().sum();
        assert!(
            (before - SOURCE_SECONDS).abs() < 0.5,
            "{name}: {durations:?}"
        );
        assert!((after - 4.0).abs() < 0.5, "{name}: {durations:?}");
        // The numbering goes on: the first new segment is 4.ts (checked contiguous above).
        assert_eq!(live.segments[4].uri, "4.ts");
        // The browser's 4:3 picture is letterboxed into the stream's 16:9 renditions.
        let size = if name.starts_with("640") {
            (640, 360)
        } else {
            (320, 180)
        };
        let resumed = keys::segment(&job.channel, &job.stream_id, name, 4, SegmentType::MpegTs);
        assert_eq!(probe_size(&h.root.join(resumed)), size, "{name}");
        // The recording has both parts, with the same break.
        let vod = h.media_playlist(&keys::vod_playlist(&job.channel, &job.stream_id, name, 0));
        assert!(vod.end_list);
        assert_eq!(vod.segments.len(), live.segments.len());
        let vod_breaks: Vec<usize> = vod
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.discontinuity)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(vod_breaks, [4], "{name}");
    }
    let events = h.control.events();
    let live_events = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                EncoderEvent::Available {
                    stream_type: StreamType::HlsLive,
                    ..
                }
            )
        })
        .count();
    assert_eq!(live_events, names.len(), "HLS-LIVE once per rendition");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, EncoderEvent::Closed { .. }))
            .count(),
        1
    );
    assert!(events.iter().all(|e| match e {
        EncoderEvent::Available { stream_id, .. } | EncoderEvent::Closed { stream_id, .. } =>
            *stream_id == job.stream_id,
    }));
    // After the second publisher left, the stream waited for it again before it ended.
    assert!(
        closed_after >= Duration::from_secs(3),
        "closed {closed_after:?} after the media ended"
    );
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reconnect_the_stream_ends_after_the_window() {
    let media = SequenceSource::new(&[fixture(Fixture::FlvVideoOnly)]);
    let h = Harness::start(media.clone(), |_| {});
    let mut job = job("320x180-30~300", false);
    job.reconnect_window_ms = 2_000;
    h.send(EncoderCommand::Start(job.clone())).await;
    let ended = media.wait_for_end(1).await;
    // A resume for a stream that does not run here changes nothing.
    let mut stranger = job.clone();
    stranger.stream_id = StreamId::generate();
    h.send(resume(&stranger, SourceKind::Rtmp)).await;
    h.control
        .wait_for("Closed", Duration::from_secs(60), is_closed)
        .await;
    let waited = ended.elapsed();
    assert!(
        waited >= Duration::from_millis(3_000),
        "the window and its margin: closed {waited:?} after the media ended"
    );
    assert!(
        waited < Duration::from_secs(15),
        "closed {waited:?} after the media ended"
    );
    assert_eq!(media.opens.load(Ordering::SeqCst), 1);
    check_finished_stream(&h, &job, &[("320x180-30~300", (320, 180))], false);
    let live = h.media_playlist(&keys::live_playlist(
        &job.channel,
        &job.stream_id,
        "320x180-30~300",
    ));
    assert!(live.segments.iter().all(|s| !s.discontinuity));
    assert_eq!(live.segments.len(), 4);
    h.stop_encoder().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_waiting_for_the_publisher_ends_the_stream_at_once() {
    let media = SequenceSource::new(&[fixture(Fixture::FlvVideoOnly)]);
    let h = Harness::start(media.clone(), |_| {});
    let mut job = job("320x180-30~300", false);
    job.reconnect_window_ms = 60_000;
    h.send(EncoderCommand::Start(job.clone())).await;
    media.wait_for_end(1).await;
    wait_for_segments(&h, &job, &["320x180-30~300"], 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!is_closed(&h.control.events()));
    let stopped = Instant::now();
    h.send(EncoderCommand::Stop {
        stream_id: job.stream_id.clone(),
    })
    .await;
    h.control
        .wait_for("Closed", Duration::from_secs(5), is_closed)
        .await;
    assert!(stopped.elapsed() < Duration::from_secs(5));
    check_finished_stream(&h, &job, &[("320x180-30~300", (320, 180))], false);
    // A resume after the end is ignored.
    h.send(resume(&job, SourceKind::Rtmp)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(media.opens.load(Ordering::SeqCst), 1);
    h.stop_encoder().await;
}

/// A browser stream whose picture size changes mid-stream (a resized screen share): VP8 can
/// change size at a keyframe inside one WebM track.
fn resizing_webm() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("resize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, size) in [("a", "320x240"), ("b", "640x360")] {
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=30"),
            ])
            .args(["-f", "lavfi", "-i", "sine"])
            .args([
                "-t",
                "3",
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
            ])
            .args(["-b:v", "500k", "-g", "30", "-c:a", "libopus", "-f", "webm"])
            .arg(dir.join(format!("{name}.webm")))
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
    }
    std::fs::write(dir.join("list.txt"), "file 'a.webm'\nfile 'b.webm'\n").expect("list");
    let out = dir.join("resizing.webm");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
        ])
        .arg(dir.join("list.txt"))
        .args(["-c", "copy", "-f", "webm"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_stream_that_changes_size_mid_stream_goes_on() {
    let source = resizing_webm();
    let h = Harness::start(FileSource::new(&source, Some(2.0)), |_| {});
    let job = job_from(SourceKind::Ws, "ORIGINAL,160x120", false);
    run_to_end(&h, &job).await;
    // The renditions keep the sizes announced from the first picture, and the whole 6 s of
    // media is in them: the change of size did not end the stream.
    let published = check_finished_stream(
        &h,
        &job,
        &[("320x240-30", (320, 240)), ("160x120-30", (160, 120))],
        true,
    );
    for (name, durations) in &published.renditions {
        let total: f64 = durations.iter().sum();
        assert!(
            total > 5.0,
            "{name}: only {total} s of the 6 s were encoded: {durations:?}"
        );
    }
    h.stop_encoder().await;
}
