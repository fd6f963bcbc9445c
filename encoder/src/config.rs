//! Encoder settings. The binary fills them from the seed system's variables (SPEC §4); the
//! defaults here are the seed's defaults.

use std::path::PathBuf;
use std::time::Duration;

use contract::keys::SegmentType;

/// `HLS_TIME_SECONDS` default.
pub const DEFAULT_HLS_TIME: f64 = 3.0;
/// `HLS_LIVE_PLAYLIST_SIZE` default.
pub const DEFAULT_LIVE_PLAYLIST_SIZE: usize = 10;
/// `HLS_VOD_MAX_SIZE` default.
pub const DEFAULT_VOD_MAX_SIZE: u64 = 86_400;
/// `HLS_FRAGMENT_COUNT_LIMIT` default.
pub const DEFAULT_FRAGMENT_COUNT_LIMIT: u64 = 16_777_216;
/// Shortest and longest segment duration the encoder accepts; other values are clamped.
pub const HLS_TIME_RANGE: (f64, f64) = (0.5, 60.0);

/// Everything an encoder node needs to know besides its store, media source and coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// This node's ID, reported as `encoder_id` in `Closed` events (`encoder-1`).
    pub node_id: String,
    /// `FFMPEG_PATH` (default `ffmpeg`, looked up in `PATH`).
    pub ffmpeg_path: PathBuf,
    /// `FFPROBE_PATH` (default `ffprobe`).
    pub ffprobe_path: PathBuf,
    /// `HLS_TIME_SECONDS`: target segment duration (3).
    pub hls_time: f64,
    /// `HLS_LIVE_PLAYLIST_SIZE`: segments in a live playlist (10).
    pub live_playlist_size: usize,
    /// `HLS_VOD_MAX_SIZE`: segments per VOD playlist part (86400).
    pub vod_max_size: u64,
    /// `HLS_FRAGMENT_COUNT_LIMIT`: the stream is stopped after this many segments (16777216).
    pub fragment_count_limit: u64,
    /// `HLS_VIDEO_CODEC` (libx264).
    pub video_codec: String,
    /// `HLS_AUDIO_CODEC` (aac).
    pub audio_codec: String,
    /// `HLS_H264_PRESET` (veryfast).
    pub h264_preset: String,
    /// `HLS_PIXEL_FORMAT` (yuv420p).
    pub pixel_format: String,
    /// Scratch space for ffmpeg's output; each job uses `{work_dir}/{stream_id}` and removes
    /// it at the end. Must be a UTF-8 path without `%`.
    pub work_dir: PathBuf,
    /// After the input ended or a stop, how long ffmpeg may take to finish before it is killed.
    pub stop_grace: Duration,
    /// `HLS_SEGMENT_TYPE`: MPEG-TS (`.ts`, the default) or fMP4 (`init.mp4` + `.m4s`).
    pub segment_type: SegmentType,
    /// `HLS_SPOOL_MAX_BYTES`: per stream, the bytes of finished segments and images that may
    /// wait on disk while the store is unavailable (1 GiB); see [`crate::spool`].
    pub spool_max_bytes: u64,
    /// `HLS_CLEANUP_DELAY_SECONDS`: how long after a stream that is not recorded ended its
    /// remaining objects are deleted (300 s; zero = never); see [`crate::cleanup`].
    pub cleanup_delay: Duration,
    /// `HLS_ORIGINAL_PASSTHROUGH`: remux the `ORIGINAL` rendition of an H.264 RTMP source with
    /// regular keyframes instead of encoding it (true); see [`crate::gop`].
    pub passthrough: bool,
    /// `HLS_LOW_LATENCY`: encode for latency rather than compression (x264/x265
    /// `-tune zerolatency`: no B-frames, no lookahead); by default when `HLS_TIME_SECONDS`
    /// is 2 or less.
    pub low_latency: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            node_id: "encoder-1".to_owned(),
            ffmpeg_path: PathBuf::from("ffmpeg"),
            ffprobe_path: PathBuf::from("ffprobe"),
            hls_time: DEFAULT_HLS_TIME,
            live_playlist_size: DEFAULT_LIVE_PLAYLIST_SIZE,
            vod_max_size: DEFAULT_VOD_MAX_SIZE,
            fragment_count_limit: DEFAULT_FRAGMENT_COUNT_LIMIT,
            video_codec: "libx264".to_owned(),
            audio_codec: "aac".to_owned(),
            h264_preset: "veryfast".to_owned(),
            pixel_format: "yuv420p".to_owned(),
            work_dir: std::env::temp_dir().join("vstream-encoder"),
            stop_grace: Duration::from_secs(15),
            segment_type: SegmentType::MpegTs,
            spool_max_bytes: crate::spool::DEFAULT_SPOOL_MAX_BYTES,
            cleanup_delay: crate::cleanup::DEFAULT_CLEANUP_DELAY,
            passthrough: true,
            low_latency: false,
        }
    }
}

impl EncoderConfig {
    /// The same settings with out-of-range values brought into range, and a description of
    /// each change (for a warning at start).
    pub fn sanitized(mut self) -> (Self, Vec<String>) {
        let mut changes = Vec::new();
        let (min, max) = HLS_TIME_RANGE;
        if !self.hls_time.is_finite() || !(min..=max).contains(&self.hls_time) {
            let fixed = if self.hls_time.is_finite() {
                self.hls_time.clamp(min, max)
            } else {
                DEFAULT_HLS_TIME
            };
            changes.push(format!("hls_time {} -> {fixed}", self.hls_time));
            self.hls_time = fixed;
        }
        if self.live_playlist_size == 0 {
            changes.push("live_playlist_size 0 -> 1".to_owned());
            self.live_playlist_size = 1;
        }
        if self.vod_max_size == 0 {
            changes.push("vod_max_size 0 -> 1".to_owned());
            self.vod_max_size = 1;
        }
        if self.fragment_count_limit == 0 {
            changes.push("fragment_count_limit 0 -> 1".to_owned());
            self.fragment_count_limit = 1;
        }
        (self, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_defaults() {
        let config = EncoderConfig::default();
        assert_eq!(config.hls_time, 3.0);
        assert_eq!(config.live_playlist_size, 10);
        assert_eq!(config.vod_max_size, 86_400);
        assert_eq!(config.fragment_count_limit, 16_777_216);
        assert_eq!(config.video_codec, "libx264");
        assert_eq!(config.h264_preset, "veryfast");
        assert_eq!(config.stop_grace, Duration::from_secs(15));
        assert_eq!(config.segment_type, SegmentType::MpegTs);
        assert_eq!(config.spool_max_bytes, 1 << 30);
        assert_eq!(config.cleanup_delay, Duration::from_secs(300));
        let (same, changes) = config.clone().sanitized();
        assert_eq!(same, config);
        assert!(changes.is_empty());
    }

    #[test]
    fn absurd_values_are_brought_into_range() {
        let (config, changes) = EncoderConfig {
            hls_time: 0.0,
            live_playlist_size: 0,
            vod_max_size: 0,
            fragment_count_limit: 0,
            ..EncoderConfig::default()
        }
        .sanitized();
        assert_eq!(config.hls_time, 0.5);
        assert_eq!(config.live_playlist_size, 1);
        assert_eq!(config.vod_max_size, 1);
        assert_eq!(config.fragment_count_limit, 1);
        assert_eq!(changes.len(), 4);
        let (config, _) = EncoderConfig {
            hls_time: f64::NAN,
            ..EncoderConfig::default()
        }
        .sanitized();
        assert_eq!(config.hls_time, 3.0);
    }
}
