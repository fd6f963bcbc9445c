//! What the source is: the first bytes of the media stream are buffered ([`read_prefix`]) and
//! given to `ffprobe` on its stdin ([`ffprobe`]); the same bytes are then fed to ffmpeg ahead
//! of the rest of the stream, so nothing is lost.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use contract::control::MediaStream;
use contract::SourceVideo;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

/// How much of the stream is buffered before probing.
#[derive(Debug, Clone, Copy)]
pub struct PrefixLimits {
    /// Stop buffering at this many bytes.
    pub max_bytes: usize,
    /// Stop buffering this long after the first byte.
    pub max_wait: Duration,
    /// Give up when no byte at all arrives within this time.
    pub first_byte_timeout: Duration,
}

impl PrefixLimits {
    /// For probing a new stream: ~512 KiB or ~2 s, whichever first.
    pub const PROBE: PrefixLimits = PrefixLimits {
        max_bytes: 512 * 1024,
        max_wait: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(20),
    };
    /// For a restart: only the first chunk (its arrival time starts the new timeline).
    pub const FIRST_CHUNK: PrefixLimits = PrefixLimits {
        max_bytes: 1,
        max_wait: Duration::ZERO,
        first_byte_timeout: Duration::from_secs(20),
    };
}

/// The buffered start of a media stream.
#[derive(Debug, Clone)]
pub struct Prefix {
    pub bytes: Bytes,
    /// The stream ended within the prefix.
    pub ended: bool,
    /// Wall clock (ms since the Unix epoch) when the first byte arrived.
    pub first_byte_ms: u64,
}

/// Why the source could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no media arrived within {0:?}")]
    NoMedia(Duration),
    #[error("the media stream ended before any byte arrived")]
    EmptyStream,
    #[error("stopped before the media could be probed")]
    Stopped,
    #[error("could not run ffprobe {path:?}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ffprobe did not finish within {0:?}")]
    Timeout(Duration),
    #[error("ffprobe failed with exit code {code:?}: {stderr}")]
    Failed { code: Option<i32>, stderr: String },
    #[error("unreadable ffprobe output: {0}")]
    BadOutput(#[from] serde_json::Error),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Buffers the start of `stream` within `limits`. Returns when the limits are reached or the
/// stream ends; fails when nothing arrives, or `stop` is cancelled first.
pub async fn read_prefix(
    stream: &mut MediaStream,
    limits: PrefixLimits,
    stop: &CancellationToken,
) -> Result<Prefix, ProbeError> {
    let first = tokio::select! {
        biased;
        _ = stop.cancelled() => return Err(ProbeError::Stopped),
        chunk = tokio::time::timeout(limits.first_byte_timeout, next_non_empty(stream)) => chunk,
    };
    let first = match first {
        Err(_) => return Err(ProbeError::NoMedia(limits.first_byte_timeout)),
        Ok(None) => return Err(ProbeError::EmptyStream),
        Ok(Some(chunk)) => chunk,
    };
    let first_byte_ms = now_ms();
    let deadline = tokio::time::Instant::now() + limits.max_wait;
    let mut buffer = BytesMut::from(&first[..]);
    let mut ended = false;
    while buffer.len() < limits.max_bytes {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            chunk = stream.next() => chunk,
        };
        match next {
            Some(chunk) => buffer.extend_from_slice(&chunk),
            None => {
                ended = true;
                break;
            }
        }
    }
    Ok(Prefix {
        bytes: buffer.freeze(),
        ended,
        first_byte_ms,
    })
}

async fn next_non_empty(stream: &mut MediaStream) -> Option<Bytes> {
    loop {
        let chunk = stream.next().await?;
        if !chunk.is_empty() {
            return Some(chunk);
        }
    }
}

/// What the encoder needs to know about a source.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbedSource {
    /// The first video stream (cover art excluded); `None` = no video.
    pub video: Option<SourceVideo>,
    pub video_codec: Option<String>,
    /// The first video stream's pixel format (`yuv420p`).
    pub video_pix_fmt: Option<String>,
    pub has_audio: bool,
    pub audio_codec: Option<String>,
}

/// How long ffprobe may take on a prefix.
pub const FFPROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `ffprobe -of json -show_streams` on `prefix` (given on stdin) and reads the result.
pub async fn ffprobe(
    ffprobe_path: &Path,
    format: Option<&str>,
    prefix: Bytes,
) -> Result<ProbedSource, ProbeError> {
    let mut command = tokio::process::Command::new(ffprobe_path);
    command.args([
        "-hide_banner",
        "-v",
        "error",
        "-of",
        "json",
        "-show_streams",
    ]);
    if let Some(format) = format {
        command.args(["-f", format]);
    }
    command
        .args(["-i", "pipe:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ProbeError::Spawn {
        path: ffprobe_path.to_path_buf(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // ffprobe may stop reading as soon as it knows enough: a broken pipe is expected.
        tokio::spawn(async move {
            let _ = stdin.write_all(&prefix).await;
            let _ = stdin.shutdown().await;
        });
    }
    let output = tokio::time::timeout(FFPROBE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ProbeError::Timeout(FFPROBE_TIMEOUT))?
        .map_err(|source| ProbeError::Spawn {
            path: ffprobe_path.to_path_buf(),
            source,
        })?;
    let parsed = parse_ffprobe_output(&output.stdout);
    match parsed {
        Ok(probed) if probed.video.is_some() || probed.has_audio || output.status.success() => {
            Ok(probed)
        }
        _ if !output.status.success() => Err(ProbeError::Failed {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(1000)
                .collect(),
        }),
        other => other.map_err(ProbeError::from),
    }
}

#[derive(Deserialize)]
struct FfprobeOutput {
    #[serde(default)]
    streams: Vec<FfprobeStream>,
}

#[derive(Deserialize)]
struct FfprobeStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    disposition: Option<FfprobeDisposition>,
}

#[derive(Deserialize)]
struct FfprobeDisposition {
    #[serde(default)]
    attached_pic: u8,
}

/// A frame rate as ffprobe writes it (`30/1`, `30000/1001`); `None` for `0/0` and nonsense.
pub fn parse_rate(text: &str) -> Option<f64> {
    let (num, den) = match text.split_once('/') {
        Some((num, den)) => (
            num.trim().parse::<f64>().ok()?,
            den.trim().parse::<f64>().ok()?,
        ),
        None => (text.trim().parse::<f64>().ok()?, 1.0),
    };
    let rate = num / den;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// Reads `ffprobe -of json -show_streams` output.
pub fn parse_ffprobe_output(json: &[u8]) -> Result<ProbedSource, serde_json::Error> {
    let output: FfprobeOutput = serde_json::from_slice(json)?;
    let is_type = |s: &FfprobeStream, kind: &str| s.codec_type.as_deref() == Some(kind);
    let video = output.streams.iter().find(|s| {
        is_type(s, "video")
            && s.disposition.as_ref().is_none_or(|d| d.attached_pic == 0)
            && s.width.unwrap_or(0) > 0
            && s.height.unwrap_or(0) > 0
    });
    let audio = output.streams.iter().find(|s| is_type(s, "audio"));
    Ok(ProbedSource {
        video: video.map(|s| SourceVideo {
            width: s.width.unwrap_or(0),
            height: s.height.unwrap_or(0),
            // The average is what players see; r_frame_rate when the prefix was too short.
            fps: s
                .avg_frame_rate
                .as_deref()
                .and_then(parse_rate)
                .or_else(|| s.r_frame_rate.as_deref().and_then(parse_rate))
                .unwrap_or(0.0),
        }),
        video_codec: video.and_then(|s| s.codec_name.clone()),
        video_pix_fmt: video.and_then(|s| s.pix_fmt.clone()),
        has_audio: audio.is_some(),
        audio_codec: audio.and_then(|s| s.codec_name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_size_rate_and_audio_from_ffprobe_json() {
        let json = br#"{"streams":[
            {"index":0,"codec_name":"h264","codec_type":"video","width":1280,"height":720,
             "r_frame_rate":"60/1","avg_frame_rate":"30000/1001","pix_fmt":"yuv420p",
             "disposition":{"attached_pic":0}},
            {"index":1,"codec_name":"aac","codec_type":"audio","r_frame_rate":"0/0"}]}"#;
        let probed = parse_ffprobe_output(json).expect("parse");
        let video = probed.video.expect("video");
        assert_eq!((video.width, video.height), (1280, 720));
        assert!((video.fps - 29.97).abs() < 0.01);
        assert_eq!(probed.video_codec.as_deref(), Some("h264"));
        assert_eq!(probed.video_pix_fmt.as_deref(), Some("yuv420p"));
        assert!(probed.has_audio);
        assert_eq!(probed.audio_codec.as_deref(), Some("aac"));
    }

    #[test]
    fn falls_back_to_r_frame_rate_and_ignores_cover_art() {
        let json = br#"{"streams":[
            {"codec_name":"mjpeg","codec_type":"video","width":300,"height":300,
             "avg_frame_rate":"0/0","r_frame_rate":"90000/1","disposition":{"attached_pic":1}},
            {"codec_name":"vp8","codec_type":"video","width":640,"height":480,
             "avg_frame_rate":"0/0","r_frame_rate":"25/1"}]}"#;
        let probed = parse_ffprobe_output(json).expect("parse");
        assert_eq!(
            probed.video,
            Some(SourceVideo {
                width: 640,
                height: 480,
                fps: 25.0
            })
        );
        assert!(!probed.has_audio);
    }

    #[test]
    fn audio_only_and_empty_outputs_have_no_video() {
        let probed =
            parse_ffprobe_output(br#"{"streams":[{"codec_type":"audio","codec_name":"opus"}]}"#)
                .expect("parse");
        assert_eq!(probed.video, None);
        assert!(probed.has_audio);
        assert_eq!(parse_ffprobe_output(b"{}").expect("parse").video, None);
        assert!(parse_ffprobe_output(b"not json").is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("30/1"), Some(30.0));
        assert_eq!(parse_rate("25"), Some(25.0));
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("1/0"), None);
        assert_eq!(parse_rate("x/1"), None);
    }

    fn stream_of(chunks: Vec<&'static [u8]>) -> MediaStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(Bytes::from_static),
        ))
    }

    #[tokio::test]
    async fn prefix_stops_at_the_byte_limit_and_keeps_the_rest_in_the_stream() {
        let mut stream = stream_of(vec![b"", b"abc", b"def", b"ghi"]);
        let limits = PrefixLimits {
            max_bytes: 5,
            ..PrefixLimits::PROBE
        };
        let prefix = read_prefix(&mut stream, limits, &CancellationToken::new())
            .await
            .expect("prefix");
        assert_eq!(&prefix.bytes[..], b"abcdef");
        assert!(!prefix.ended);
        assert!(prefix.first_byte_ms > 0);
        assert_eq!(stream.next().await.as_deref(), Some(&b"ghi"[..]));
    }

    #[tokio::test]
    async fn prefix_of_a_short_stream_says_it_ended() {
        let mut stream = stream_of(vec![b"abc"]);
        let prefix = read_prefix(&mut stream, PrefixLimits::PROBE, &CancellationToken::new())
            .await
            .expect("prefix");
        assert!(prefix.ended);
        let mut empty = stream_of(vec![]);
        assert!(matches!(
            read_prefix(&mut empty, PrefixLimits::PROBE, &CancellationToken::new()).await,
            Err(ProbeError::EmptyStream)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn prefix_stops_after_the_time_limit() {
        let mut stream: MediaStream = Box::pin(
            futures::stream::iter([Bytes::from_static(b"a")]).chain(futures::stream::pending()),
        );
        let prefix = read_prefix(&mut stream, PrefixLimits::PROBE, &CancellationToken::new())
            .await
            .expect("prefix");
        assert_eq!(&prefix.bytes[..], b"a");
        assert!(!prefix.ended);
        let mut silent: MediaStream = Box::pin(futures::stream::pending());
        assert!(matches!(
            read_prefix(&mut silent, PrefixLimits::PROBE, &CancellationToken::new()).await,
            Err(ProbeError::NoMedia(_))
        ));
    }
}
