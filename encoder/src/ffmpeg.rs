//! ffmpeg: typed job parameters turned into one argument vector ([`build_args`], pure and
//! unit-tested), and the supervised child process ([`FfmpegProcess`]).
//!
//! One process per stream decodes the source once; `split` feeds one `scale` (and `fps` when
//! capped) per rendition; every rendition has keyframes forced at the same times
//! (`expr:gte(t,n_forced*HLS_TIME)`, no scene-cut keyframes), so the hls muxer cuts all of them
//! at the same instants. ffmpeg 5.1's hls muxer refuses one elementary stream in two variants
//! ("Same elementary stream found more than once"), so the audio is decoded once and encoded
//! once per variant (AAC is cheap next to video).
//!
//! Previews come from the same process: one more `split` branch, `fps=1/SECONDS`, scaled into
//! the requested box keeping the aspect ratio and padded (letterboxed) to exactly `W×H`, written
//! by a second output (`image2`) as `preview/{n}.jpg` from 0, each file through a temporary
//! file and a rename. Segments are MPEG-TS (`{n}.ts`) or fMP4 (`{n}.m4s` and an init segment
//! named in ffmpeg's playlist by `EXT-X-MAP`).
//!
//! The child: stdin is fed from a dedicated thread (the media arrives through a bounded channel,
//! so a slow ffmpeg slows the reader down instead of growing memory); stderr is read through
//! ffmpeg-sidecar's event iterator in another thread, errors are logged with the job's span and
//! the last ones kept for the exit report; the process is always reaped (killed and waited
//! for on drop if still running).

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use contract::keys::SegmentType;
use contract::{PreviewSpec, Rendition};
use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

/// Segments ffmpeg keeps in its own playlists (we keep our own windows).
pub const FFMPEG_LIST_SIZE: u32 = 8;
/// Audio bit rate of every variant.
pub const AUDIO_KBPS: u32 = 128;
/// CRF of renditions without a requested bit rate.
pub const DEFAULT_CRF: u32 = 23;
/// Cap of renditions without a requested bit rate, in bits per pixel per frame.
const CAP_BITS_PER_PIXEL: f64 = 0.1;
/// Lowest cap of renditions without a requested bit rate.
const MIN_CAP_KBPS: u32 = 200;
/// Error lines kept for the report when ffmpeg exits.
const KEPT_ERROR_LINES: usize = 12;
/// How often the child is polled for its exit.
const POLL: Duration = Duration::from_millis(50);

/// How a rendition's video bit rate is controlled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateControl {
    /// A requested bit rate (`~KBPS`): `-b:v K -maxrate K -bufsize 2K`.
    Bitrate { kbps: u32 },
    /// Constant quality with a cap derived from size × frame rate.
    Crf { crf: u32, max_kbps: u32 },
}

impl RateControl {
    pub fn for_rendition(rendition: &Rendition) -> Self {
        match rendition.kbps {
            Some(kbps) => RateControl::Bitrate { kbps },
            None => {
                let bits = f64::from(rendition.width)
                    * f64::from(rendition.height)
                    * rendition.fps.clamp(1.0, 240.0)
                    * CAP_BITS_PER_PIXEL;
                RateControl::Crf {
                    crf: DEFAULT_CRF,
                    max_kbps: ((bits / 1000.0).round() as u32).max(MIN_CAP_KBPS),
                }
            }
        }
    }

    /// The nominal peak video bit rate in kbit/s.
    pub fn max_kbps(self) -> u32 {
        match self {
            RateControl::Bitrate { kbps } => kbps,
            RateControl::Crf { max_kbps, .. } => max_kbps,
        }
    }
}

/// Everything [`build_args`] needs.
#[derive(Debug, Clone)]
pub struct HlsJobParams<'a> {
    /// `-f` of the input (`flv` for RTMP); `None` lets ffmpeg probe (browser WebM / MP4).
    pub input_format: Option<&'a str>,
    /// Output renditions, in variant order (`%v` = the index).
    pub renditions: &'a [Rendition],
    pub has_audio: bool,
    pub video_codec: &'a str,
    pub audio_codec: &'a str,
    pub h264_preset: &'a str,
    pub pixel_format: &'a str,
    /// Target segment duration in seconds.
    pub hls_time: f64,
    /// Directory of this run's output: `{out_dir}/{v}/index.m3u8` and `{out_dir}/{v}/{n}.ts`
    /// (`.m4s`), previews in `{out_dir}/preview/{n}.jpg`.
    pub out_dir: &'a str,
    pub segment_type: SegmentType,
    /// A JPEG of `W×H` every `SECONDS` seconds.
    pub preview: Option<PreviewSpec>,
    /// Fit the source into each rendition's size keeping its aspect ratio, with black bars,
    /// instead of scaling to it: for a source that changed shape after a reconnect (the
    /// renditions were fitted to the first source).
    pub letterbox: bool,
    /// The `ORIGINAL` rendition is remuxed from the source instead of encoded (see
    /// [`crate::gop`]); the others get their keyframes where the source has them.
    pub passthrough: Option<Passthrough>,
    /// `-tune zerolatency` (x264 and x265 only): no B-frames, no lookahead.
    pub low_latency: bool,
}

/// How the `ORIGINAL` rendition is passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passthrough {
    /// Its audio is copied too (the source's audio is AAC); otherwise encoded as elsewhere.
    pub copy_audio: bool,
}

impl HlsJobParams<'_> {
    /// The index of the rendition remuxed from the source, if any.
    pub fn copied(&self) -> Option<usize> {
        self.passthrough?;
        self.renditions.iter().position(|r| r.original)
    }
}

/// JPEG quality of previews (`-q:v`, 2 = best, 31 = worst).
pub const PREVIEW_QUALITY: u32 = 5;
/// Name of the initialization segment ffmpeg writes in fMP4 mode (it adds `_{v}` when there are
/// several variants; the watcher reads the real name from `EXT-X-MAP`).
pub const FFMPEG_INIT_NAME: &str = "init.mp4";

/// The directory ffmpeg writes preview images to under `out_dir`.
pub fn preview_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("preview")
}

/// The playlist ffmpeg writes for variant `index` under `out_dir`.
pub fn variant_playlist(out_dir: &Path, index: usize) -> PathBuf {
    out_dir.join(index.to_string()).join("index.m3u8")
}

/// The directory of variant `index` under `out_dir`.
pub fn variant_dir(out_dir: &Path, index: usize) -> PathBuf {
    out_dir.join(index.to_string())
}

/// A number as ffmpeg reads it: `2`, `2.5`, `29.97`.
fn number(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

/// The filter graph: one decode, `split`, then per rendition `scale` (and `fps` when capped),
/// and for previews a branch `[pv]` of one frame every `SECONDS`, letterboxed to `W×H`. With
/// `letterbox`, the renditions are letterboxed too. The rendition at index `copied` (remuxed
/// from the source) has no branch, and capped frame rates keep the source's keyframes;
/// `None` when nothing is left to filter.
pub fn filter_graph(
    renditions: &[Rendition],
    preview: Option<&PreviewSpec>,
    letterbox: bool,
    copied: Option<usize>,
) -> Option<String> {
    let encoded: Vec<(usize, &Rendition)> = renditions
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != copied)
        .collect();
    let branches = encoded.len() + usize::from(preview.is_some());
    if branches == 0 {
        return None;
    }
    let mut graph = format!("[0:v:0]split={branches}");
    for (i, _) in &encoded {
        graph.push_str(&format!("[s{i}]"));
    }
    if preview.is_some() {
        graph.push_str("[sp]");
    }
    for (i, r) in encoded {
        if letterbox {
            let (w, h) = (r.width, r.height);
            graph.push_str(&format!(
                ";[s{i}]scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1"
            ));
        } else {
            graph.push_str(&format!(";[s{i}]scale={}:{}", r.width, r.height));
        }
        if r.fps_capped && copied.is_some() {
            // The `fps` filter may drop the source's keyframes (which `-force_key_frames
            // source` then misses): keep every keyframe and as many other frames as the rate
            // allows.
            graph.push_str(&format!(
                ",select='key+lte(selected_n\\,t*{}+0.001)'",
                number(r.fps)
            ));
        } else if r.fps_capped {
            graph.push_str(&format!(",fps={}", number(r.fps)));
        }
        graph.push_str(&format!("[v{i}]"));
    }
    if let Some(p) = preview {
        graph.push_str(&format!(";[sp]{}[pv]", preview_filter(p)));
    }
    Some(graph)
}

/// One frame every `SECONDS`, scaled to fit inside `W×H` (aspect ratio kept), padded to exactly
/// `W×H` with black bars centred, square pixels.
pub fn preview_filter(p: &PreviewSpec) -> String {
    let (w, h) = (p.width, p.height);
    format!(
        "fps=1/{},scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1",
        p.interval_seconds
    )
}

/// The `-var_stream_map` value: variant `i` is video `i` with audio `i` when there is audio.
pub fn var_stream_map(count: usize, has_audio: bool) -> String {
    (0..count)
        .map(|i| {
            if has_audio {
                format!("v:{i},a:{i}")
            } else {
                format!("v:{i}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ffmpeg arguments for one stream (ffmpeg-sidecar adds `-loglevel level+info` before).
///
/// `-nostdin` only stops ffmpeg from reading keyboard commands; `-i pipe:0` still reads the
/// media from stdin (ffmpeg also turns interaction off by itself for `pipe:` inputs). `-y`
/// keeps ffmpeg-sidecar from adding `-n`. `-fps_mode vfr` passes the source timestamps through
/// instead of duplicating frames to a guessed constant rate (browser sources report rates
/// such as 1000 fps); capped renditions get a real `fps` filter.
pub fn build_args(p: &HlsJobParams<'_>) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
    push(&["-hide_banner", "-nostdin", "-y"]);
    if let Some(format) = p.input_format {
        push(&["-f", format]);
    }
    push(&["-i", "pipe:0"]);
    let copied = p.copied();
    if let Some(graph) = filter_graph(p.renditions, p.preview.as_ref(), p.letterbox, copied) {
        push(&["-filter_complex", &graph]);
    }
    for i in 0..p.renditions.len() {
        if Some(i) == copied {
            push(&["-map", "0:v:0"]);
        } else {
            push(&["-map", &format!("[v{i}]")]);
        }
    }
    if p.has_audio {
        for _ in p.renditions {
            push(&["-map", "0:a:0"]);
        }
    }
    let hls_time = number(p.hls_time);
    // Keyframes every segment, or where the source has them when its rendition is copied.
    let keyframes = match copied {
        Some(_) => "source".to_owned(),
        None => format!("expr:gte(t,n_forced*{hls_time})"),
    };
    push(&[
        "-c:v",
        p.video_codec,
        "-preset:v",
        p.h264_preset,
        "-pix_fmt:v",
        p.pixel_format,
        "-fps_mode:v",
        "vfr",
        "-sc_threshold:v",
        "0",
        "-force_key_frames:v",
        &keyframes,
    ]);
    if p.low_latency && matches!(p.video_codec, "libx264" | "libx265") {
        push(&["-tune:v", "zerolatency"]);
    }
    if let Some(i) = copied {
        // The last -c matching a stream wins (ffmpeg warns that it saw several).
        push(&[&format!("-c:v:{i}"), "copy"]);
    }
    for (i, rendition) in p.renditions.iter().enumerate() {
        if Some(i) == copied {
            continue;
        }
        match RateControl::for_rendition(rendition) {
            RateControl::Bitrate { kbps } => push(&[
                &format!("-b:v:{i}"),
                &format!("{kbps}k"),
                &format!("-maxrate:v:{i}"),
                &format!("{kbps}k"),
                &format!("-bufsize:v:{i}"),
                &format!("{}k", kbps * 2),
            ]),
            RateControl::Crf { crf, max_kbps } => push(&[
                &format!("-crf:v:{i}"),
                &crf.to_string(),
                &format!("-maxrate:v:{i}"),
                &format!("{max_kbps}k"),
                &format!("-bufsize:v:{i}"),
                &format!("{}k", max_kbps * 2),
            ]),
        }
    }
    if p.has_audio {
        push(&[
            "-c:a",
            p.audio_codec,
            "-b:a",
            &format!("{AUDIO_KBPS}k"),
            "-ac",
            "2",
        ]);
        if let (Some(i), Some(Passthrough { copy_audio: true })) = (copied, p.passthrough) {
            push(&[&format!("-c:a:{i}"), "copy"]);
        }
    }
    push(&[
        "-f",
        "hls",
        "-hls_time",
        &hls_time,
        "-hls_list_size",
        &FFMPEG_LIST_SIZE.to_string(),
        "-hls_flags",
        "independent_segments+temp_file",
    ]);
    match p.segment_type {
        SegmentType::MpegTs => push(&["-hls_segment_type", "mpegts"]),
        SegmentType::Fmp4 => push(&[
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            FFMPEG_INIT_NAME,
        ]),
    }
    push(&[
        "-var_stream_map",
        &var_stream_map(p.renditions.len(), p.has_audio),
        "-hls_segment_filename",
        &format!("{}/%v/%d.{}", p.out_dir, p.segment_type.extension()),
        &format!("{}/%v/index.m3u8", p.out_dir),
    ]);
    if p.preview.is_some() {
        push(&[
            "-map",
            "[pv]",
            "-f",
            "image2",
            "-update",
            "0",
            "-start_number",
            "0",
            "-atomic_writing",
            "1",
            "-q:v",
            &PREVIEW_QUALITY.to_string(),
            &format!("{}/preview/%d.jpg", p.out_dir),
        ]);
    }
    args
}

/// What went wrong with the ffmpeg process.
#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("could not start ffmpeg {path:?}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ffmpeg's {0} is not available")]
    Pipe(&'static str),
    #[error("could not start a thread for ffmpeg: {0}")]
    Thread(#[source] std::io::Error),
    #[error("could not wait for ffmpeg: {0}")]
    Wait(#[source] std::io::Error),
    #[error("ffmpeg exited with code {code:?} (signal {signal:?})")]
    FfmpegExited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// The exit code and terminating signal of a process.
pub fn exit_details(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    (status.code(), signal)
}

/// A running ffmpeg, fed from a channel, its stderr logged, always reaped.
pub struct FfmpegProcess {
    child: FfmpegChild,
    status: Option<ExitStatus>,
    errors: Arc<Mutex<VecDeque<String>>>,
    input_cut: Arc<AtomicBool>,
    log_thread: Option<JoinHandle<()>>,
}

impl FfmpegProcess {
    /// Starts `program args`; every chunk received on `input` is written to its stdin, which
    /// is closed when the channel closes (ffmpeg then finishes and exits). The threads log in
    /// the current tracing span.
    pub fn spawn(
        program: &Path,
        args: &[String],
        input: mpsc::Receiver<Bytes>,
    ) -> Result<Self, FfmpegError> {
        let mut command = FfmpegCommand::new_with_path(program);
        command.args(args);
        let child = command.spawn().map_err(|source| FfmpegError::Spawn {
            path: program.to_path_buf(),
            source,
        })?;
        let mut process = FfmpegProcess {
            child,
            status: None,
            errors: Arc::new(Mutex::new(VecDeque::new())),
            input_cut: Arc::new(AtomicBool::new(false)),
            log_thread: None,
        };
        // Nothing is written to stdout (the output is files): close our end.
        drop(process.child.take_stdout());
        let stdin = process
            .child
            .take_stdin()
            .ok_or(FfmpegError::Pipe("stdin"))?;
        let events = process
            .child
            .iter()
            .map_err(|_| FfmpegError::Pipe("stderr"))?;
        let span = tracing::Span::current();
        let feeder_span = span.clone();
        std::thread::Builder::new()
            .name("ffmpeg-stdin".into())
            .spawn(move || feed(stdin, input, feeder_span))
            .map_err(FfmpegError::Thread)?;
        let errors = process.errors.clone();
        let input_cut = process.input_cut.clone();
        process.log_thread = Some(
            std::thread::Builder::new()
                .name("ffmpeg-log".into())
                .spawn(move || log_events(events, errors, input_cut, span))
                .map_err(FfmpegError::Thread)?,
        );
        Ok(process)
    }

    pub fn id(&mut self) -> u32 {
        self.child.as_inner().id()
    }

    /// The exit status if ffmpeg has exited (reaping it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, FfmpegError> {
        if self.status.is_none() {
            self.status = self
                .child
                .as_inner_mut()
                .try_wait()
                .map_err(FfmpegError::Wait)?;
        }
        Ok(self.status)
    }

    /// Waits for ffmpeg to exit (cancel-safe), then for its last log lines.
    pub async fn wait(&mut self) -> Result<ExitStatus, FfmpegError> {
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            tokio::time::sleep(POLL).await;
        };
        // stderr closes with the process: give the log thread a moment to drain it.
        if let Some(thread) = &self.log_thread {
            for _ in 0..40 {
                if thread.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(status)
    }

    /// Kills ffmpeg and waits for it.
    pub async fn kill(&mut self) -> Result<ExitStatus, FfmpegError> {
        if self.try_wait()?.is_none() {
            if let Err(err) = self.child.kill() {
                // It may have exited in between; try_wait below tells.
                debug!(error = %err, "kill failed");
            }
        }
        self.wait().await
    }

    /// Says that the input was cut on purpose (a stop in the middle of a container tag):
    /// the decoding errors that follow are expected and logged at debug level only.
    pub fn input_cut(&self) {
        self.input_cut.store(true, Ordering::Relaxed);
    }

    /// The last error lines ffmpeg logged.
    pub fn last_errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for FfmpegProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            // After SIGKILL the wait is immediate.
            let _ = self.child.as_inner_mut().wait();
        }
    }
}

fn feed(
    mut stdin: std::process::ChildStdin,
    mut input: mpsc::Receiver<Bytes>,
    span: tracing::Span,
) {
    let _entered = span.enter();
    while let Some(chunk) = input.blocking_recv() {
        if let Err(err) = stdin.write_all(&chunk) {
            // ffmpeg exited (broken pipe): dropping `input` tells the sender.
            debug!(error = %err, "ffmpeg stopped reading its input");
            return;
        }
    }
    trace!("input ended: closing ffmpeg's stdin");
}

fn log_events(
    events: ffmpeg_sidecar::iter::FfmpegIterator,
    errors: Arc<Mutex<VecDeque<String>>>,
    input_cut: Arc<AtomicBool>,
    span: tracing::Span,
) {
    let _entered = span.enter();
    let keep = |line: &str| {
        if let Ok(mut lines) = errors.lock() {
            if lines.len() == KEPT_ERROR_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
    };
    for event in events {
        match event {
            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) => {
                if input_cut.load(Ordering::Relaxed) {
                    debug!(ffmpeg = %line, "ffmpeg error after the input was cut");
                } else {
                    warn!(ffmpeg = %line, "ffmpeg error");
                }
                keep(&line);
            }
            FfmpegEvent::Log(LogLevel::Warning, line) => debug!(ffmpeg = %line, "ffmpeg warning"),
            FfmpegEvent::Error(message) => {
                // Raised by ffmpeg-sidecar itself (parsing), not by ffmpeg.
                debug!(error = %message, "ffmpeg-sidecar");
            }
            FfmpegEvent::Progress(progress) => trace!(
                frame = progress.frame,
                time = %progress.time,
                speed = progress.speed,
                "ffmpeg progress"
            ),
            FfmpegEvent::Log(_, line) => trace!(ffmpeg = %line),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition(width: u32, height: u32, fps: f64, capped: bool, kbps: Option<u32>) -> Rendition {
        Rendition {
            width,
            height,
            fps,
            fps_capped: capped,
            kbps,
            original: false,
        }
    }

    fn params<'a>(renditions: &'a [Rendition], has_audio: bool) -> HlsJobParams<'a> {
        HlsJobParams {
            input_format: Some("flv"),
            renditions,
            has_audio,
            video_codec: "libx264",
            audio_codec: "aac",
            h264_preset: "veryfast",
            pixel_format: "yuv420p",
            hls_time: 3.0,
            out_dir: "/work/s1/attempt-0",
            segment_type: SegmentType::MpegTs,
            preview: None,
            letterbox: false,
            passthrough: None,
            low_latency: false,
        }
    }

    #[test]
    fn a_resumed_source_of_another_shape_is_letterboxed_into_the_renditions() {
        let renditions = two_renditions();
        assert_eq!(
            filter_graph(&renditions, None, true, None).expect("graph"),
            "[0:v:0]split=2[s0][s1];\
             [s0]scale=1280:720:force_original_aspect_ratio=decrease:force_divisible_by=2,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1[v0];\
             [s1]scale=640:360:force_original_aspect_ratio=decrease:force_divisible_by=2,pad=640:360:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=15[v1]"
        );
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn two_renditions() -> [Rendition; 2] {
        [
            rendition(1280, 720, 30.0, false, None),
            rendition(640, 360, 15.0, true, Some(800)),
        ]
    }

    #[test]
    fn two_renditions_with_audio() {
        let renditions = two_renditions();
        let mut expected = words(
            "-hide_banner -nostdin -y -f flv -i pipe:0 -filter_complex GRAPH \
             -map [v0] -map [v1] -map 0:a:0 -map 0:a:0 \
             -c:v libx264 -preset:v veryfast -pix_fmt:v yuv420p -fps_mode:v vfr \
             -sc_threshold:v 0 -force_key_frames:v expr:gte(t,n_forced*3) \
             -crf:v:0 23 -maxrate:v:0 2765k -bufsize:v:0 5530k \
             -b:v:1 800k -maxrate:v:1 800k -bufsize:v:1 1600k \
             -c:a aac -b:a 128k -ac 2 \
             -f hls -hls_time 3 -hls_list_size 8 -hls_flags independent_segments+temp_file \
             -hls_segment_type mpegts -var_stream_map MAP \
             -hls_segment_filename /work/s1/attempt-0/%v/%d.ts /work/s1/attempt-0/%v/index.m3u8",
        );
        for arg in &mut expected {
            if arg == "GRAPH" {
                *arg = "[0:v:0]split=2[s0][s1];[s0]scale=1280:720[v0];[s1]scale=640:360,fps=15[v1]"
                    .into();
            } else if arg == "MAP" {
                *arg = "v:0,a:0 v:1,a:1".into();
            }
        }
        assert_eq!(build_args(&params(&renditions, true)), expected);
    }

    #[test]
    fn two_renditions_without_audio() {
        let renditions = two_renditions();
        let mut expected = words(
            "-hide_banner -nostdin -y -f flv -i pipe:0 -filter_complex GRAPH \
             -map [v0] -map [v1] \
             -c:v libx264 -preset:v veryfast -pix_fmt:v yuv420p -fps_mode:v vfr \
             -sc_threshold:v 0 -force_key_frames:v expr:gte(t,n_forced*3) \
             -crf:v:0 23 -maxrate:v:0 2765k -bufsize:v:0 5530k \
             -b:v:1 800k -maxrate:v:1 800k -bufsize:v:1 1600k \
             -f hls -hls_time 3 -hls_list_size 8 -hls_flags independent_segments+temp_file \
             -hls_segment_type mpegts -var_stream_map MAP \
             -hls_segment_filename /work/s1/attempt-0/%v/%d.ts /work/s1/attempt-0/%v/index.m3u8",
        );
        for arg in &mut expected {
            if arg == "GRAPH" {
                *arg = "[0:v:0]split=2[s0][s1];[s0]scale=1280:720[v0];[s1]scale=640:360,fps=15[v1]"
                    .into();
            } else if arg == "MAP" {
                *arg = "v:0 v:1".into();
            }
        }
        assert_eq!(build_args(&params(&renditions, false)), expected);
    }

    #[test]
    fn browser_sources_are_probed_and_fractional_values_are_written_as_decimals() {
        let renditions = [rendition(640, 360, 12.5, true, None)];
        let mut p = params(&renditions, false);
        p.input_format = None;
        p.hls_time = 2.5;
        let args = build_args(&p);
        assert_eq!(args[3..5], ["-i", "pipe:0"]);
        assert!(args.contains(&"[0:v:0]split=1[s0];[s0]scale=640:360,fps=12.5[v0]".to_owned()));
        assert!(args.contains(&"expr:gte(t,n_forced*2.5)".to_owned()));
        assert!(args.contains(&"2.5".to_owned()));
    }

    #[test]
    fn previews_are_one_more_branch_and_a_second_output_of_the_same_process() {
        let renditions = [rendition(640, 360, 30.0, false, None)];
        let mut p = params(&renditions, true);
        p.preview = Some(PreviewSpec {
            width: 256,
            height: 144,
            interval_seconds: 2,
        });
        let args = build_args(&p);
        let graph = &args[args
            .iter()
            .position(|a| a == "-filter_complex")
            .expect("graph")
            + 1];
        assert_eq!(
            graph,
            "[0:v:0]split=2[s0][sp];[s0]scale=640:360[v0];\
             [sp]fps=1/2,scale=256:144:force_original_aspect_ratio=decrease,\
             pad=256:144:(ow-iw)/2:(oh-ih)/2,setsar=1[pv]"
        );
        // The HLS output keeps only the renditions; the preview output comes after it.
        let hls_end = args
            .iter()
            .position(|a| a == "/work/s1/attempt-0/%v/index.m3u8")
            .expect("hls output");
        assert_eq!(
            args[hls_end + 1..],
            words(
                "-map [pv] -f image2 -update 0 -start_number 0 -atomic_writing 1 -q:v 5 \
                 /work/s1/attempt-0/preview/%d.jpg"
            )
        );
        assert_eq!(args.iter().filter(|a| *a == "[pv]").count(), 1);
    }

    #[test]
    fn fmp4_segments_and_an_init_segment() {
        let renditions = two_renditions();
        let mut p = params(&renditions, true);
        p.segment_type = SegmentType::Fmp4;
        let args = build_args(&p);
        let text = args.join(" ");
        assert!(
            text.contains("-hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 "),
            "{text}"
        );
        assert!(text.ends_with(
            "-hls_segment_filename /work/s1/attempt-0/%v/%d.m4s /work/s1/attempt-0/%v/index.m3u8"
        ));
        assert!(!text.contains("image2"));
    }

    #[test]
    fn the_original_rendition_is_copied_and_the_others_keyframe_with_the_source() {
        let renditions = [
            Rendition {
                original: true,
                ..rendition(1920, 1080, 30.0, false, None)
            },
            rendition(640, 360, 30.0, false, None),
            rendition(320, 180, 15.0, true, None),
        ];
        let mut p = params(&renditions, true);
        p.hls_time = 2.0;
        p.passthrough = Some(Passthrough { copy_audio: true });
        let text = build_args(&p).join(" ");
        assert!(
            text.contains(
                "-filter_complex [0:v:0]split=2[s1][s2];[s1]scale=640:360[v1];\
                 [s2]scale=320:180,select='key+lte(selected_n\\,t*15+0.001)'[v2] \
                 -map 0:v:0 -map [v1] -map [v2] -map 0:a:0 -map 0:a:0 -map 0:a:0 "
            ),
            "{text}"
        );
        assert!(
            text.contains("-force_key_frames:v source -c:v:0 copy -crf:v:1 23 "),
            "{text}"
        );
        assert!(!text.contains("-crf:v:0"), "{text}");
        assert!(
            text.contains("-ac 2 -c:a:0 copy -f hls -hls_time 2 "),
            "{text}"
        );

        // Audio that is not AAC is encoded; a lone ORIGINAL without previews needs no graph.
        let mut p = params(&renditions[..1], true);
        p.passthrough = Some(Passthrough { copy_audio: false });
        let text = build_args(&p).join(" ");
        assert!(!text.contains("-filter_complex"), "{text}");
        assert!(text.contains("-map 0:v:0 -map 0:a:0 "), "{text}");
        assert!(!text.contains("-c:a:0 copy"), "{text}");
    }

    #[test]
    fn low_latency_tunes_x264_only() {
        let renditions = two_renditions();
        let mut p = params(&renditions, true);
        assert!(!build_args(&p).contains(&"zerolatency".to_owned()));
        p.low_latency = true;
        let text = build_args(&p).join(" ");
        assert!(
            text.contains("-force_key_frames:v expr:gte(t,n_forced*3) -tune:v zerolatency "),
            "{text}"
        );
        p.video_codec = "h264_nvenc";
        assert!(!build_args(&p).contains(&"zerolatency".to_owned()));
    }

    #[test]
    fn uncapped_renditions_get_a_size_derived_cap() {
        let small = RateControl::for_rendition(&rendition(320, 180, 30.0, false, None));
        assert_eq!(
            small,
            RateControl::Crf {
                crf: 23,
                max_kbps: 200
            }
        );
        let hd = RateControl::for_rendition(&rendition(1920, 1080, 30.0, false, None));
        assert_eq!(hd.max_kbps(), 6221);
        let fixed = RateControl::for_rendition(&rendition(1920, 1080, 30.0, false, Some(4500)));
        assert_eq!(fixed, RateControl::Bitrate { kbps: 4500 });
    }
}
