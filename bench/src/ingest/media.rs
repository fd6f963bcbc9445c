//! The media the publishers replay: one FLV file (made once with ffmpeg), its tags in memory,
//! and the checker that tells a consumer's drops from what the publishers sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// The ffmpeg arguments that make the default file (after `-y`, before the output path).
pub const FFMPEG_ARGS: &[&str] = &[
    "-hide_banner",
    "-loglevel",
    "error",
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=1280x720:rate=30",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=44100",
    "-t",
    "30",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-b:v",
    "3000k",
    "-maxrate",
    "3000k",
    "-minrate",
    "3000k",
    "-bufsize",
    "3000k",
    "-x264-params",
    "nal-hrd=cbr",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-b:a",
    "128k",
    "-ac",
    "2",
    "-f",
    "flv",
];

/// The default file's name (in `bench-media/` beside the binaries).
pub const DEFAULT_NAME: &str = "testsrc2-720p30-x264-3M-g60-aac-30s.flv";

/// The ffmpeg command line that makes the default file, for the report.
pub fn ffmpeg_command(path: &Path) -> String {
    format!("ffmpeg -y {} {}", FFMPEG_ARGS.join(" "), path.display())
}

/// Makes the default file with ffmpeg unless it is already there.
pub async fn ensure_default_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(DEFAULT_NAME);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = dir.join(format!("{DEFAULT_NAME}.partial"));
    eprintln!("making the test file once: {}", ffmpeg_command(&path));
    let status = tokio::process::Command::new("ffmpeg")
        .arg("-y")
        .args(FFMPEG_ARGS)
        .arg(&partial)
        .kill_on_drop(true)
        .status()
        .await
        .context("ffmpeg is needed to make the test file (apt-get install -y ffmpeg)")?;
    anyhow::ensure!(status.success(), "ffmpeg failed ({status})");
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// One audio or video tag of the file.
#[derive(Debug, Clone)]
pub struct Tag {
    pub kind: Kind,
    pub ts: u32,
    pub data: Bytes,
    /// Decoder configuration (sent once, before the first loop only).
    pub config: bool,
}

/// Timestamps and sizes of one kind's media tags within one loop, sorted by timestamp.
#[derive(Debug, Default)]
pub struct Track {
    pub ts: Vec<u32>,
    pub size: Vec<u32>,
}

impl Track {
    fn push(&mut self, ts: u32, size: usize) -> anyhow::Result<()> {
        if let Some(&last) = self.ts.last() {
            anyhow::ensure!(
                ts > last,
                "timestamps of one track must increase ({last} then {ts})"
            );
        }
        self.ts.push(ts);
        self.size.push(size as u32);
        Ok(())
    }
}

/// The file, ready to replay.
#[derive(Debug)]
pub struct MediaFile {
    pub metadata: StreamMetadata,
    /// Audio and video tags in file order.
    pub tags: Vec<Tag>,
    /// A loop's length: timestamps of loop k are the file's plus k times this.
    pub loop_ms: u32,
    pub video: Track,
    pub audio: Track,
    /// Media bytes (tag data) per second, as sent.
    pub bitrate_bps: f64,
    /// Largest GOP (keyframe to keyframe, audio included) in FLV bytes: what a relay's
    /// keyframe cache holds at most.
    pub max_gop_bytes: usize,
}

impl MediaFile {
    pub fn load(path: &Path) -> anyhow::Result<MediaFile> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(
            bytes.len() >= 13 && &bytes[..3] == b"FLV",
            "{} is not an FLV file",
            path.display()
        );
        let data_offset = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
        let mut at = data_offset + 4;
        let mut tags = Vec::new();
        let mut metadata = StreamMetadata::new();
        let (mut video, mut audio) = (Track::default(), Track::default());
        let (mut gop, mut max_gop) = (0usize, 0usize);
        let all = Bytes::from(bytes);
        while at + 11 <= all.len() {
            let h = &all[at..at + 11];
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let start = at + 11;
            let end = start + size;
            anyhow::ensure!(end + 4 <= all.len(), "truncated tag at byte {at}");
            let data = all.slice(start..end);
            match h[0] {
                8 | 9 if !data.is_empty() => {
                    let kind = if h[0] == 8 { Kind::Audio } else { Kind::Video };
                    let config = match kind {
                        Kind::Video => data.len() > 1 && data[1] == 0 && data[0] & 0x0F == 7,
                        Kind::Audio => data.len() > 1 && data[0] >> 4 == 10 && data[1] == 0,
                    };
                    let track = match kind {
                        Kind::Video => &video,
                        Kind::Audio => &audio,
                    };
                    if !config && track.ts.last().is_some_and(|&last| ts <= last) {
                        // Not replayed: the checker places tags by timestamp.
                        at = end + 4;
                        continue;
                    }
                    if !config {
                        let keyframe = kind == Kind::Video && data[0] >> 4 == 1;
                        if keyframe {
                            max_gop = max_gop.max(gop);
                            gop = 0;
                        }
                        gop += size + 15;
                        match kind {
                            Kind::Video => video.push(ts, size)?,
                            Kind::Audio => audio.push(ts, size)?,
                        }
                    }
                    tags.push(Tag {
                        kind,
                        ts,
                        data,
                        config,
                    });
                }
                18 => {
                    if let Ok(values) = rml_amf0::deserialize(&mut &data[..]) {
                        if let Some(props) = values.into_iter().nth(1).and_then(|v| match v {
                            Amf0Value::Object(p) => Some(p),
                            _ => None,
                        }) {
                            metadata = metadata_from(&props);
                        }
                    }
                }
                _ => {}
            }
            at = end + 4;
        }
        max_gop = max_gop.max(gop);
        anyhow::ensure!(
            !video.ts.is_empty() && !audio.ts.is_empty(),
            "{} needs both audio and video",
            path.display()
        );
        let step = |t: &Track| -> u32 {
            let mut d: Vec<u32> = t.ts.windows(2).map(|w| w[1] - w[0]).collect();
            d.sort_unstable();
            d.get(d.len() / 2).copied().unwrap_or(33)
        };
        let end_of = |t: &Track| t.ts.last().copied().unwrap_or(0) + step(t);
        let loop_ms = end_of(&video).max(end_of(&audio));
        let payload: u64 = tags
            .iter()
            .filter(|t| !t.config)
            .map(|t| t.data.len() as u64)
            .sum();
        Ok(MediaFile {
            metadata,
            tags,
            loop_ms,
            bitrate_bps: payload as f64 * 8.0 / (f64::from(loop_ms) / 1000.0),
            video,
            audio,
            max_gop_bytes: max_gop,
        })
    }

    /// The keyframe interval (ms), from the first two keyframes (2000 if there is only one).
    pub fn video_gop_ms(&self) -> u32 {
        let keys: Vec<u32> = self
            .tags
            .iter()
            .filter(|t| t.kind == Kind::Video && !t.config && t.data[0] >> 4 == 1)
            .map(|t| t.ts)
            .take(2)
            .collect();
        match keys[..] {
            [a, b] => b - a,
            _ => 2000,
        }
    }

    fn track(&self, kind: Kind) -> &Track {
        match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video,
        }
    }
}

fn metadata_from(props: &std::collections::HashMap<String, Amf0Value>) -> StreamMetadata {
    let num = |name: &str| match props.get(name) {
        Some(Amf0Value::Number(n)) => Some(*n),
        _ => None,
    };
    let mut m = StreamMetadata::new();
    m.video_width = num("width").map(|v| v as u32);
    m.video_height = num("height").map(|v| v as u32);
    m.video_codec_id = num("videocodecid").map(|v| v as u32);
    m.video_frame_rate = num("framerate").map(|v| v as f32);
    m.video_bitrate_kbps = num("videodatarate").map(|v| v as u32);
    m.audio_codec_id = num("audiocodecid").map(|v| v as u32);
    m.audio_bitrate_kbps = num("audiodatarate").map(|v| v as u32);
    m.audio_sample_rate = num("audiosamplerate").map(|v| v as u32);
    m.audio_channels = num("audiochannels").map(|v| v as u32);
    if let Some(Amf0Value::Boolean(b)) = props.get("stereo") {
        m.audio_is_stereo = Some(*b);
    }
    if let Some(Amf0Value::Utf8String(s)) = props.get("encoder") {
        m.encoder = Some(s.clone());
    }
    m
}

/// Counters shared by every consumer of one run.
#[derive(Debug, Default)]
pub struct RecvStats {
    /// Media tags and their data bytes received.
    pub tags: AtomicU64,
    pub bytes: AtomicU64,
    /// Tags missing between two received ones, and their bytes.
    pub dropped_tags: AtomicU64,
    pub dropped_bytes: AtomicU64,
    /// Tags whose timestamp is not one the publishers sent, whose size differs from the sent
    /// one, or that came again or out of order.
    pub unknown: AtomicU64,
    pub wrong_size: AtomicU64,
    pub backwards: AtomicU64,
    /// Consumers whose stream ended or broke before the end of the run.
    pub ended_early: AtomicU64,
}

/// Counters shared by every publisher of one run.
#[derive(Debug, Default)]
pub struct SendStats {
    pub tags: AtomicU64,
    /// Tag data bytes (what a consumer counts) and bytes on the wire.
    pub bytes: AtomicU64,
    pub wire_bytes: AtomicU64,
    /// Largest delay of a send after its due time (µs), since the last reset.
    pub max_late_us: AtomicU64,
    /// Sends more than 100 ms late, since the last reset.
    pub late_sends: AtomicU64,
    /// Publishers whose connection broke.
    pub failed: AtomicU64,
}

/// Per-stream position, to tell how far behind a consumer is.
#[derive(Debug, Default)]
pub struct Position {
    /// Last video timestamp sent by the publisher, and received by the consumer (+1; 0 = none).
    pub sent_ts: AtomicU64,
    pub recv_ts: AtomicU64,
}

/// Checks one consumer's tags against the file: each received tag is placed in the sequence
/// the publisher sent (loop number and index from its timestamp); a gap is a drop.
pub struct Checker<'a> {
    file: &'a MediaFile,
    last: [Option<u64>; 2],
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a MediaFile) -> Self {
        Checker {
            file,
            last: [None, None],
        }
    }

    /// One received tag (`data` is the FLV tag data / RTMP message body).
    pub fn on_tag(
        &mut self,
        kind: Kind,
        ts: u32,
        data: &[u8],
        stats: &RecvStats,
        position: &Position,
    ) {
        stats.tags.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let config = match kind {
            Kind::Video => data.len() > 1 && data[1] == 0 && data[0] & 0x0F == 7,
            Kind::Audio => data.len() > 1 && data[0] >> 4 == 10 && data[1] == 0,
        };
        if config {
            return;
        }
        let track = self.file.track(kind);
        let loop_ms = self.file.loop_ms.max(1);
        let (round, within) = (ts / loop_ms, ts % loop_ms);
        let Ok(index) = track.ts.binary_search(&within) else {
            stats.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if track.size[index] as usize != data.len() {
            stats.wrong_size.fetch_add(1, Ordering::Relaxed);
        }
        let n = track.ts.len() as u64;
        let global = u64::from(round) * n + index as u64;
        let slot = usize::from(kind == Kind::Video);
        if let Some(prev) = self.last[slot] {
            if global <= prev {
                stats.backwards.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let missing = global - prev - 1;
            if missing > 0 {
                stats.dropped_tags.fetch_add(missing, Ordering::Relaxed);
                let bytes: u64 = (prev + 1..global)
                    .take(100_000)
                    .map(|g| u64::from(track.size[(g % n) as usize]))
                    .sum();
                stats.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        self.last[slot] = Some(global);
        if kind == Kind::Video {
            position.recv_ts.store(u64::from(ts) + 1, Ordering::Relaxed);
        }
    }
}
