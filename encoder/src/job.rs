//! One stream from start to end: open the media, probe it, choose the renditions, run and
//! supervise ffmpeg (restarting it after a crash, at most [`MAX_RESTARTS`] times), publish
//! what it produces, and report `Closed` once the final playlists are stored.
//!
//! Ending: when the publisher leaves (the media stream ends) or the job is stopped (a `Stop`
//! command, the fragment count limit, the encoder's shutdown), ffmpeg's stdin is closed; it
//! finishes the segment in progress and exits (killed after `stop_grace`); the last segments
//! are published, every playlist gets `EXT-X-ENDLIST`, and `Closed` is sent last. The
//! objects of a stream that is not recorded are deleted `HLS_CLEANUP_DELAY_SECONDS` later by a
//! task of the encoder ([`crate::cleanup`]).
//!
//! The reconnect window: when the media ends and the job has a `reconnect_window_ms`, the last
//! segments are published but the playlists stay open while the job waits that long (plus
//! [`RESUME_MARGIN`]) for a [`Resume`]: the publisher back, maybe on another ingest node or
//! over another protocol. The media is then re-opened and probed again, and ffmpeg runs again
//! into the same renditions (letterboxed if the source changed shape), the numbering going on
//! and the first new segment of every rendition marked as a discontinuity, as after a crash
//! (a resume is not a restart: it does not count against [`MAX_RESTARTS`]). No `Resume` in
//! time, a `Stop` or the shutdown: the stream ends as above.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use contract::control::{
    ControlPlane, EncoderEvent, EncoderJob, MediaError, MediaSource, MediaStream, SourceKind,
};
use contract::resolution::fit_renditions;
use contract::{Rendition, SourceVideo};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::cleanup;
use crate::config::EncoderConfig;
use crate::events::{spawn_event_task, EventSender};
use crate::ffmpeg::{
    build_args, exit_details, preview_dir, variant_dir, FfmpegError, FfmpegProcess, HlsJobParams,
    Passthrough,
};
use crate::gop::{Cadence, FlvKeyframes, GridCheck};
use crate::probe::{self, Prefix, PrefixLimits, ProbeError};
use crate::publish::{DelayedDeleter, PublishSettings, PublishSummary, Publisher};
use crate::spool::Spool;
use crate::store::ObjectStore;
use crate::watch::Watcher;

/// ffmpeg restarts after crashes, per stream.
pub const MAX_RESTARTS: u32 = 3;
/// Media chunks queued for ffmpeg's stdin (back-pressure on the media source beyond).
const FEED_QUEUE: usize = 64;
/// While looking for the source's second keyframe (pass-through), at most this much media is
/// held back; a source whose GOP does not fit is encoded.
const CADENCE_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Pause before a restart (times the restart number).
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// Beyond the reconnect window, how long a job still waits for its `Resume`: the coordinator
/// counts the window from the publisher's end, which comes before the end of the media here,
/// and the command takes a moment to arrive.
pub(crate) const RESUME_MARGIN: Duration = Duration::from_secs(1);

/// The publisher of a job's stream came back (`EncoderCommand::Resume`).
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub ingest_id: String,
    pub source: SourceKind,
    pub media_url: Option<String>,
}

/// Why a stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("media source: {0}")]
    Media(#[from] MediaError),
    #[error("probe: {0}")]
    Probe(#[from] ProbeError),
    #[error("the source has no video")]
    NoVideo,
    #[error("no rendition to encode")]
    NoRenditions,
    #[error("work directory {path:?}: {reason}")]
    WorkDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Ffmpeg(#[from] FfmpegError),
    #[error("ffmpeg crashed {crashes} times, giving up; last time: {last}")]
    GaveUp {
        crashes: u32,
        #[source]
        last: FfmpegError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What every job of an encoder shares.
pub(crate) struct Services {
    pub config: EncoderConfig,
    pub store: Arc<dyn ObjectStore>,
    pub media: Arc<dyn MediaSource>,
    pub control: Arc<dyn ControlPlane>,
    pub tracker: TaskTracker,
}

/// Runs one job to its end and reports `Closed`; `release` is called just before (the job no
/// longer counts as active). Never panics: a panic inside is logged and still ends in `Closed`.
pub(crate) async fn run_job(
    services: Arc<Services>,
    job: EncoderJob,
    mut resumes: mpsc::Receiver<Resume>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    release: impl FnOnce(),
) {
    let (events, event_task) = spawn_event_task(services.control.clone());
    let work = services.config.work_dir.join(job.stream_id.as_str());
    let mut summary = None;
    let outcome = std::panic::AssertUnwindSafe(encode(
        &services,
        &job,
        &mut resumes,
        &stop,
        &shutdown,
        &events,
        &work,
        &mut summary,
    ))
    .catch_unwind()
    .await;
    // From now on a `Resume` is refused (and logged) by the command loop.
    resumes.close();
    match outcome {
        Ok(Ok(())) => {
            let counts: Vec<String> = summary
                .iter()
                .flat_map(|s| &s.renditions)
                .map(|(name, durations)| format!("{name}: {}", durations.len()))
                .collect();
            let previews = summary.as_ref().map_or(0, |s| s.previews);
            info!(segments = ?counts, previews, "stream finished");
        }
        Ok(Err(err)) => error!(error = %err, "stream ended with an error"),
        Err(_) => error!("stream job panicked"),
    }
    if let Err(err) = tokio::fs::remove_dir_all(&work).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(path = ?work, error = %err, "could not clean the work directory");
        }
    }
    if let Some(summary) = summary.filter(|_| !job.options.record) {
        // A task of the encoder, not of the job: the job ends now.
        cleanup::schedule(
            services.store.clone(),
            summary.leftovers,
            services.config.cleanup_delay,
            shutdown.clone(),
            &services.tracker,
        );
    }
    release();
    events.send(EncoderEvent::Closed {
        stream_id: job.stream_id.clone(),
        channel: job.channel.clone(),
        encoder_id: services.config.node_id.clone(),
    });
    drop(events);
    event_task.finish().await;
}

/// Encodes and publishes the stream; `summary` is what was published (also when the stream
/// ended with an error after publishing began).
#[allow(clippy::too_many_arguments)]
async fn encode(
    services: &Services,
    job: &EncoderJob,
    resumes: &mut mpsc::Receiver<Resume>,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
    events: &EventSender,
    work: &Path,
    summary: &mut Option<PublishSummary>,
) -> Result<(), JobError> {
    let config = &services.config;
    let work_text = work
        .to_str()
        .filter(|text| !text.contains('%'))
        .ok_or_else(|| JobError::WorkDir {
            path: work.to_path_buf(),
            reason: "not UTF-8 or contains '%'".into(),
        })?
        .to_owned();
    let _ = tokio::fs::remove_dir_all(work).await;

    let Some(mut media) = open_media(services, job, stop).await? else {
        info!("stopped before the media was opened");
        return Ok(());
    };
    let prefix = match probe::read_prefix(&mut media, PrefixLimits::PROBE, stop).await {
        Err(ProbeError::Stopped) => {
            info!("stopped before any media arrived");
            return Ok(());
        }
        other => other?,
    };
    let probed = probe::ffprobe(
        &config.ffprobe_path,
        job.source.ffmpeg_format(),
        prefix.bytes.clone(),
    )
    .await?;
    let video = probed.video.ok_or(JobError::NoVideo)?;
    let renditions = fit_renditions(&job.options.resolutions, video);
    if renditions.is_empty() {
        return Err(JobError::NoRenditions);
    }
    let copyable = config.passthrough && can_copy(job.source, &probed, video, &renditions);
    let (prefix, cadence) = if copyable {
        match detect_cadence(&mut media, prefix, config.hls_time, stop).await {
            Some(found) => found,
            None => {
                info!("stopped before the source's keyframes were seen");
                return Ok(());
            }
        }
    } else {
        (prefix, None)
    };
    // With a copied ORIGINAL, segments are whole GOPs for the whole stream.
    let segment_seconds = cadence.map_or(config.hls_time, Cadence::segment_seconds);
    info!(
        width = video.width,
        height = video.height,
        fps = video.fps,
        video_codec = probed.video_codec.as_deref().unwrap_or("?"),
        audio_codec = probed.audio_codec.as_deref().unwrap_or("none"),
        renditions = ?renditions.iter().map(Rendition::name).collect::<Vec<_>>(),
        record = job.options.record,
        previews = job.options.previews.map(|p| p.name()),
        segment_type = config.segment_type.extension(),
        segment_seconds,
        original_copied = cadence.is_some(),
        source_gop_ms = cadence.map(|c| c.gop_ms),
        "encoding"
    );

    let spool = Spool::new(config.spool_max_bytes, job.options.record, stop.clone());
    let deleter = (!job.options.record).then(|| {
        DelayedDeleter::spawn(
            services.store.clone(),
            Duration::from_secs_f64(config.live_playlist_size as f64 * segment_seconds),
            shutdown.clone(),
            &services.tracker,
        )
    });
    let publisher = Publisher::new(
        services.store.clone(),
        PublishSettings {
            channel: job.channel.clone(),
            stream_id: job.stream_id.clone(),
            hls_time: segment_seconds,
            live_window: config.live_playlist_size,
            vod_max_size: config.vod_max_size,
            record: job.options.record,
            has_audio: probed.has_audio,
            fragment_count_limit: config.fragment_count_limit,
            segment_type: config.segment_type,
            preview: job.options.previews,
        },
        &renditions,
        events.clone(),
        deleter,
        stop.clone(),
    );
    let publishing = tokio::spawn(
        publisher
            .run(spool.clone())
            .instrument(tracing::Span::current()),
    );

    let mut plan = Plan {
        job: job.clone(),
        renditions: &renditions,
        has_audio: probed.has_audio,
        first_video: video,
        first_has_audio: probed.has_audio,
        letterbox: false,
        work,
        work_text: &work_text,
        cadence,
        copy_audio: copyable && probed.audio_codec.as_deref() == Some("aac"),
        segment_seconds,
    };
    let supervised = supervise(services, &mut plan, stop, resumes, media, prefix, &spool).await;
    // Everything ffmpeg produced is in the spool: the publisher drains it and finishes.
    spool.close();
    *summary = Some(
        publishing
            .await
            .map_err(|err| JobError::Internal(format!("publisher failed: {err}")))?,
    );
    supervised
}

/// Opens the job's media; `None` when stopped first.
async fn open_media(
    services: &Services,
    job: &EncoderJob,
    stop: &CancellationToken,
) -> Result<Option<MediaStream>, MediaError> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Ok(None),
        media = services.media.open(job) => media.map(Some),
    }
}

/// What every ffmpeg run of a job shares.
struct Plan<'a> {
    /// The job, with the ingest, source and media URL of the current publisher.
    job: EncoderJob,
    renditions: &'a [Rendition],
    /// Whether this run encodes audio.
    has_audio: bool,
    /// The source the renditions were fitted to.
    first_video: SourceVideo,
    /// Whether the first source had audio (the master's `CODECS` say so).
    first_has_audio: bool,
    /// The current source has another shape than the first: letterboxed into the renditions.
    letterbox: bool,
    work: &'a Path,
    work_text: &'a str,
    /// The current source's keyframe cadence when its rendition is copied (see [`crate::gop`]);
    /// `None`: every rendition is encoded.
    cadence: Option<Cadence>,
    /// The copied rendition's audio is copied too (AAC).
    copy_audio: bool,
    /// The stream's segment duration: `HLS_TIME_SECONDS`, or whole GOPs of the first source.
    segment_seconds: f64,
}

/// How one ffmpeg run ended.
enum RunEnd {
    /// The input ended (`stopped`: the job was stopped), and ffmpeg finished (or was killed).
    Finished { stopped: bool },
    /// The source's keyframes left their regular cadence: ffmpeg finished what it had, the
    /// stream goes on with every rendition encoded.
    CadenceLost,
    /// ffmpeg exited while the input went on.
    Crashed {
        code: Option<i32>,
        signal: Option<i32>,
        errors: Vec<String>,
    },
}

/// Runs ffmpeg until the stream ends, restarting it after crashes and after the publisher
/// came back within the reconnect window.
async fn supervise(
    services: &Services,
    plan: &mut Plan<'_>,
    stop: &CancellationToken,
    resumes: &mut mpsc::Receiver<Resume>,
    mut media: MediaStream,
    mut prefix: Prefix,
    spool: &Spool,
) -> Result<(), JobError> {
    let mut base = 0;
    // ffmpeg runs so far: names the run's folder and init segments; runs after the first
    // start with a discontinuity.
    let mut run = 0;
    let mut restarts = 0;
    loop {
        let (end, next_base) =
            run_ffmpeg(services, plan, run, base, &mut media, prefix, stop, spool).await?;
        base = next_base;
        run += 1;
        match end {
            RunEnd::Finished { stopped: true } => return Ok(()),
            RunEnd::CadenceLost => {
                info!(
                    run,
                    "the source's keyframes are no longer regular: encoding every rendition from now on"
                );
                plan.cadence = None;
                drop(media);
                media = match open_media(services, &plan.job, stop).await? {
                    Some(media) => media,
                    None => return Ok(()),
                };
                prefix = match probe::read_prefix(&mut media, PrefixLimits::FIRST_CHUNK, stop).await
                {
                    Ok(prefix) => prefix,
                    Err(ProbeError::Stopped) => return Ok(()),
                    Err(err) => {
                        info!(reason = %err, "no more media");
                        drop(media);
                        match wait_for_publisher(services, plan, stop, resumes).await? {
                            Some((next_media, next_prefix)) => {
                                media = next_media;
                                next_prefix
                            }
                            None => return Ok(()),
                        }
                    }
                };
            }
            RunEnd::Finished { stopped: false } => {
                drop(media);
                match wait_for_publisher(services, plan, stop, resumes).await? {
                    Some((next_media, next_prefix)) => {
                        (media, prefix) = (next_media, next_prefix);
                        info!(
                            run,
                            "resuming the stream on the reconnected publisher's media"
                        );
                    }
                    None => return Ok(()),
                }
            }
            RunEnd::Crashed {
                code,
                signal,
                errors,
            } => {
                error!(
                    exit_code = ?code,
                    signal = ?signal,
                    last_errors = ?errors,
                    restarts,
                    "ffmpeg died while the input continued"
                );
                if restarts >= MAX_RESTARTS {
                    return Err(JobError::GaveUp {
                        crashes: restarts + 1,
                        last: FfmpegError::FfmpegExited { code, signal },
                    });
                }
                restarts += 1;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(RESTART_BACKOFF * restarts) => {}
                }
                drop(media);
                media = match open_media(services, &plan.job, stop).await? {
                    Some(media) => media,
                    None => return Ok(()),
                };
                prefix = match probe::read_prefix(&mut media, PrefixLimits::FIRST_CHUNK, stop).await
                {
                    Ok(prefix) => prefix,
                    Err(ProbeError::Stopped) => return Ok(()),
                    Err(err) => {
                        info!(reason = %err, "no more media after the crash");
                        drop(media);
                        match wait_for_publisher(services, plan, stop, resumes).await? {
                            Some((next_media, next_prefix)) => {
                                media = next_media;
                                next_prefix
                            }
                            None => return Ok(()),
                        }
                    }
                };
                warn!(
                    run,
                    restarts, "restarting ffmpeg on the re-opened media stream"
                );
                crate::metrics::ffmpeg_restarted();
            }
        }
    }
}

/// The media ended: within the job's reconnect window, waits for its publisher to come back
/// (a [`Resume`]), then opens and probes the new media. `None`: the stream ends (no window, no
/// publisher in time, stopped, or the new media unusable).
async fn wait_for_publisher(
    services: &Services,
    plan: &mut Plan<'_>,
    stop: &CancellationToken,
    resumes: &mut mpsc::Receiver<Resume>,
) -> Result<Option<(MediaStream, Prefix)>, JobError> {
    let window = Duration::from_millis(plan.job.reconnect_window_ms);
    if window.is_zero() {
        return Ok(None);
    }
    loop {
        info!(
            ?window,
            "the media ended: waiting for the publisher to reconnect"
        );
        let deadline = tokio::time::Instant::now() + window + RESUME_MARGIN;
        let resume = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                info!("stopped while waiting for the publisher");
                return Ok(None);
            }
            resume = resumes.recv() => match resume {
                Some(resume) => resume,
                None => return Ok(None),
            },
            _ = tokio::time::sleep_until(deadline) => {
                // A late `Resume` is refused from now on; the coordinator then ends the
                // reconnected publisher when this stream's `Closed` arrives.
                resumes.close();
                info!("the publisher did not reconnect within the window: ending the stream");
                return Ok(None);
            }
        };
        info!(
            ingest_id = %resume.ingest_id,
            source = resume.source.as_str(),
            "the publisher reconnected"
        );
        plan.job.ingest_id = resume.ingest_id;
        plan.job.source = resume.source;
        plan.job.media_url = resume.media_url;
        let mut media = match open_media(services, &plan.job, stop).await {
            Ok(Some(media)) => media,
            Ok(None) => return Ok(None),
            Err(err) => {
                warn!(error = %err, "the reconnected publisher's media cannot be opened: ending the stream");
                return Ok(None);
            }
        };
        let prefix = match probe::read_prefix(&mut media, PrefixLimits::PROBE, stop).await {
            Ok(prefix) => prefix,
            Err(ProbeError::Stopped) => return Ok(None),
            Err(err) => {
                warn!(reason = %err, "no media from the reconnected publisher: waiting again");
                continue;
            }
        };
        let probed = match probe::ffprobe(
            &services.config.ffprobe_path,
            plan.job.source.ffmpeg_format(),
            prefix.bytes.clone(),
        )
        .await
        {
            Ok(probed) => probed,
            Err(err) => {
                warn!(error = %err, "the reconnected publisher's media cannot be probed: ending the stream");
                return Ok(None);
            }
        };
        let Some(video) = probed.video else {
            warn!("the reconnected publisher sends no video: ending the stream");
            return Ok(None);
        };
        // The master announced the first source's audio (or none): keep to it when possible.
        plan.has_audio = plan.first_has_audio && probed.has_audio;
        if plan.first_has_audio != probed.has_audio {
            warn!(
                audio_before = plan.first_has_audio,
                audio_now = probed.has_audio,
                "the reconnected source {} audio: the renditions go on {}",
                if probed.has_audio { "has" } else { "has no" },
                if plan.has_audio {
                    "with audio"
                } else {
                    "without audio"
                },
            );
        }
        let first = plan.first_video;
        plan.letterbox = u64::from(video.width) * u64::from(first.height)
            != u64::from(first.width) * u64::from(video.height);
        // The copied rendition goes on only for a source of the same size whose whole GOPs
        // make the stream's segment duration.
        plan.cadence = None;
        plan.copy_audio = false;
        let mut prefix = prefix;
        if services.config.passthrough
            && video.width == first.width
            && video.height == first.height
            && can_copy(plan.job.source, &probed, video, plan.renditions)
        {
            let Some((more, cadence)) =
                detect_cadence(&mut media, prefix, services.config.hls_time, stop).await
            else {
                return Ok(None);
            };
            prefix = more;
            plan.cadence =
                cadence.filter(|c| (c.segment_seconds() - plan.segment_seconds).abs() < 0.001);
            plan.copy_audio = probed.audio_codec.as_deref() == Some("aac");
        }
        info!(
            width = video.width,
            height = video.height,
            fps = video.fps,
            original_copied = plan.cadence.is_some(),
            letterbox = plan.letterbox,
            video_codec = probed.video_codec.as_deref().unwrap_or("?"),
            audio_codec = probed.audio_codec.as_deref().unwrap_or("none"),
            "the reconnected source, encoded into the stream's renditions"
        );
        return Ok(Some((media, prefix)));
    }
}

/// How the media pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    InputEnded,
    Stopped,
    FfmpegGone,
    /// A keyframe came off the copied rendition's cadence (its chunk was not fed).
    CadenceLost,
}

/// Watches the keyframes of an FLV source whose rendition is copied.
struct CadenceWatch {
    keyframes: FlvKeyframes,
    grid: GridCheck,
    found: Vec<u32>,
}

impl CadenceWatch {
    fn new(cadence: Cadence) -> Self {
        CadenceWatch {
            keyframes: FlvKeyframes::new(),
            grid: GridCheck::new(cadence),
            found: Vec::new(),
        }
    }

    /// Whether the keyframes in `chunk` are still on the cadence.
    fn regular(&mut self, chunk: &[u8]) -> bool {
        self.found.clear();
        self.keyframes.push(chunk, &mut self.found);
        let mut regular = true;
        for &t in &self.found {
            if !self.grid.keyframe(t) {
                warn!(
                    keyframe_ms = t,
                    "a keyframe of the copied source is off its cadence"
                );
                regular = false;
            }
        }
        regular
    }
}

/// Feeds the prefix and then the stream to ffmpeg until the stream ends, the job stops, or
/// ffmpeg stops reading (or, with `watch`, the source's keyframes leave their cadence).
/// Dropping the sender on return closes ffmpeg's stdin.
async fn pump(
    media: &mut MediaStream,
    prefix: Prefix,
    feed: mpsc::Sender<Bytes>,
    stop: &CancellationToken,
    mut watch: Option<CadenceWatch>,
) -> PumpEnd {
    if let Some(watch) = &mut watch {
        if !watch.regular(&prefix.bytes) {
            return PumpEnd::CadenceLost;
        }
    }
    if !prefix.bytes.is_empty() && feed.send(prefix.bytes).await.is_err() {
        return PumpEnd::FfmpegGone;
    }
    if prefix.ended {
        return PumpEnd::InputEnded;
    }
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.cancelled() => return PumpEnd::Stopped,
            chunk = media.next() => chunk,
        };
        let Some(chunk) = chunk else {
            return PumpEnd::InputEnded;
        };
        if chunk.is_empty() {
            continue;
        }
        if let Some(watch) = &mut watch {
            if !watch.regular(&chunk) {
                return PumpEnd::CadenceLost;
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return PumpEnd::Stopped,
            sent = feed.send(chunk) => if sent.is_err() {
                return PumpEnd::FfmpegGone;
            },
        }
    }
}

/// One ffmpeg run: returns how it ended and the stream index after its last segment.
#[allow(clippy::too_many_arguments)]
async fn run_ffmpeg(
    services: &Services,
    plan: &Plan<'_>,
    run: u32,
    base: u64,
    media: &mut MediaStream,
    prefix: Prefix,
    stop: &CancellationToken,
    spool: &Spool,
) -> Result<(RunEnd, u64), JobError> {
    let config = &services.config;
    let out_dir = plan.work.join(format!("run-{run}"));
    let previews = plan.job.options.previews;
    let mut dirs: Vec<PathBuf> = (0..plan.renditions.len())
        .map(|i| variant_dir(&out_dir, i))
        .collect();
    if previews.is_some() {
        dirs.push(preview_dir(&out_dir));
    }
    for dir in dirs {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| JobError::WorkDir {
                path: dir,
                reason: err.to_string(),
            })?;
    }
    let out_text = format!("{}/run-{run}", plan.work_text);
    let args = build_args(&HlsJobParams {
        letterbox: plan.letterbox,
        input_format: plan.job.source.ffmpeg_format(),
        renditions: plan.renditions,
        has_audio: plan.has_audio,
        video_codec: &config.video_codec,
        audio_codec: &config.audio_codec,
        h264_preset: &config.h264_preset,
        pixel_format: &config.pixel_format,
        hls_time: plan.segment_seconds,
        out_dir: &out_text,
        segment_type: config.segment_type,
        preview: previews,
        passthrough: plan.cadence.map(|_| Passthrough {
            copy_audio: plan.copy_audio && plan.has_audio,
        }),
        low_latency: config.low_latency,
    });
    let (feed, input) = mpsc::channel(FEED_QUEUE);
    let mut process = FfmpegProcess::spawn(&config.ffmpeg_path, &args, input)?;
    info!(pid = process.id(), run, "ffmpeg started");
    debug!(args = %args.join(" "), "ffmpeg arguments");

    let done = CancellationToken::new();
    let watcher = Watcher::new(
        &out_dir,
        plan.renditions.len(),
        base,
        run,
        prefix.first_byte_ms,
        plan.segment_seconds,
        previews.is_some(),
    );
    let watching = tokio::spawn(
        watcher
            .run(spool.clone(), done.clone())
            .instrument(tracing::Span::current()),
    );

    // Whichever comes first: the end of the input, or the end of ffmpeg (a crash).
    enum First {
        InputClosed(PumpEnd),
        Exited(Result<std::process::ExitStatus, FfmpegError>),
    }
    let watch = plan.cadence.map(CadenceWatch::new);
    let mut pumping = Box::pin(pump(media, prefix, feed, stop, watch));
    let first = tokio::select! {
        end = &mut pumping => First::InputClosed(end),
        status = process.wait() => First::Exited(status),
    };
    // Closes ffmpeg's stdin if the input is still open.
    drop(pumping);
    let mut killed = false;
    let (status, input) = match first {
        First::InputClosed(input) => {
            if matches!(input, PumpEnd::Stopped | PumpEnd::CadenceLost) {
                process.input_cut();
            }
            debug!(?input, "input closed: waiting for ffmpeg to finish");
            let status = match tokio::time::timeout(config.stop_grace, process.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    warn!(grace = ?config.stop_grace, "ffmpeg did not finish in time: killing it");
                    killed = true;
                    process.kill().await
                }
            };
            (status, Some(input))
        }
        First::Exited(status) => (status, None),
    };
    done.cancel();
    let next_base = watching
        .await
        .map_err(|err| JobError::Internal(format!("watcher failed: {err}")))?;
    let status = status?;
    let (code, signal) = exit_details(status);
    let end = match input {
        Some(ended @ (PumpEnd::InputEnded | PumpEnd::Stopped)) => {
            if status.success() {
                info!(run, "ffmpeg finished");
            } else if !killed {
                warn!(
                    exit_code = ?code,
                    signal = ?signal,
                    last_errors = ?process.last_errors(),
                    "ffmpeg exited with an error after the input ended"
                );
            }
            RunEnd::Finished {
                stopped: ended == PumpEnd::Stopped,
            }
        }
        Some(PumpEnd::CadenceLost) => RunEnd::CadenceLost,
        Some(PumpEnd::FfmpegGone) | None => RunEnd::Crashed {
            code,
            signal,
            errors: process.last_errors(),
        },
    };
    Ok((end, next_base))
}

/// Whether the `ORIGINAL` rendition of this source could be copied: H.264 4:2:0 8-bit over
/// RTMP (FLV, whose keyframes [`FlvKeyframes`] reads), exactly the rendition's size.
fn can_copy(
    source: SourceKind,
    probed: &probe::ProbedSource,
    video: SourceVideo,
    renditions: &[Rendition],
) -> bool {
    source.ffmpeg_format() == Some("flv")
        && probed.video_codec.as_deref() == Some("h264")
        && matches!(
            probed.video_pix_fmt.as_deref(),
            Some("yuv420p" | "yuvj420p")
        )
        && renditions
            .iter()
            .any(|r| r.original && r.width == video.width && r.height == video.height)
}

/// Reads on until the source's second keyframe (the first two give its GOP), holding back at
/// most [`CADENCE_MAX_BYTES`] and no longer than the segment target plus 0.75 s after the
/// first byte: the cadence when the GOP fits `hls_time`, else `None` (encode). The media read
/// is added to the prefix. `None` overall when stopped.
async fn detect_cadence(
    media: &mut MediaStream,
    prefix: Prefix,
    hls_time: f64,
    stop: &CancellationToken,
) -> Option<(Prefix, Option<Cadence>)> {
    let mut scanner = FlvKeyframes::new();
    let mut keyframes = Vec::new();
    scanner.push(&prefix.bytes, &mut keyframes);
    let mut bytes = bytes::BytesMut::from(&prefix.bytes[..]);
    let mut ended = prefix.ended;
    let waited = Duration::from_millis(probe::now_ms().saturating_sub(prefix.first_byte_ms));
    let limit = Duration::from_secs_f64(hls_time + 0.75).saturating_sub(waited);
    let deadline = tokio::time::Instant::now() + limit;
    while keyframes.len() < 2 && !ended && bytes.len() < CADENCE_MAX_BYTES {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep_until(deadline) => break,
            chunk = media.next() => chunk,
        };
        match next {
            Some(chunk) => {
                scanner.push(&chunk, &mut keyframes);
                bytes.extend_from_slice(&chunk);
            }
            None => ended = true,
        }
    }
    let cadence = Cadence::detect(&keyframes, hls_time);
    debug!(keyframes = ?keyframes, ?cadence, "source keyframes");
    Some((
        Prefix {
            bytes: bytes.freeze(),
            ended,
            first_byte_ms: prefix.first_byte_ms,
        },
        cadence,
    ))
}
