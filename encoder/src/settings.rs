//! The encoder's settings as `clap` arguments with the original system's environment variable
//! names, shared by every binary that runs an encoder (the all-in-one and `encoder`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use contract::keys::SegmentType;

use crate::config::EncoderConfig;
use crate::s3::{S3ConfigError, S3Settings, S3Store, Secret};
use crate::store::{FilesystemStore, ObjectStore};

/// `mpegts` / `ts` or `fmp4` / `mp4`, in any case.
pub fn parse_segment_type(value: &str) -> Result<SegmentType, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "mpegts" | "ts" => Ok(SegmentType::MpegTs),
        "fmp4" | "mp4" => Ok(SegmentType::Fmp4),
        other => Err(format!(
            "{other:?} is not a segment type (use mpegts or fmp4)"
        )),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct EncoderArgs {
    /// Target segment duration in seconds.
    #[arg(long, env = "HLS_TIME_SECONDS", default_value_t = crate::config::DEFAULT_HLS_TIME)]
    pub hls_time_seconds: f64,
    /// Segments in a live playlist.
    #[arg(long, env = "HLS_LIVE_PLAYLIST_SIZE", default_value_t = crate::config::DEFAULT_LIVE_PLAYLIST_SIZE)]
    pub hls_live_playlist_size: usize,
    /// Segments per VOD playlist part (vod-{K}.m3u8).
    #[arg(long, env = "HLS_VOD_MAX_SIZE", default_value_t = crate::config::DEFAULT_VOD_MAX_SIZE)]
    pub hls_vod_max_size: u64,
    /// Segments after which a stream is stopped.
    #[arg(long, env = "HLS_FRAGMENT_COUNT_LIMIT", default_value_t = crate::config::DEFAULT_FRAGMENT_COUNT_LIMIT)]
    pub hls_fragment_count_limit: u64,
    #[arg(long, env = "HLS_VIDEO_CODEC", default_value = "libx264")]
    pub hls_video_codec: String,
    #[arg(long, env = "HLS_AUDIO_CODEC", default_value = "aac")]
    pub hls_audio_codec: String,
    #[arg(long, env = "HLS_H264_PRESET", default_value = "veryfast")]
    pub hls_h264_preset: String,
    #[arg(long, env = "HLS_PIXEL_FORMAT", default_value = "yuv420p")]
    pub hls_pixel_format: String,
    /// Streams this encoder runs at once (-1 = unlimited).
    #[arg(long, env = "SERVER_CAPACITY", default_value_t = -1, allow_hyphen_values = true)]
    pub server_capacity: i64,
    #[arg(long, env = "FFMPEG_PATH", default_value = "ffmpeg")]
    pub ffmpeg_path: PathBuf,
    #[arg(long, env = "FFPROBE_PATH", default_value = "ffprobe")]
    pub ffprobe_path: PathBuf,
    /// Seconds ffmpeg may take to finish a stream after its input ended.
    #[arg(long, env = "STOP_GRACE_SECONDS", default_value_t = 15)]
    pub stop_grace_seconds: u64,
    /// Scratch directory for ffmpeg's output (default: a folder in the system's temp dir).
    #[arg(long, env = "ENCODER_WORK_DIR")]
    pub encoder_work_dir: Option<PathBuf>,
    /// Segment container: mpegts (.ts) or fmp4 (init.mp4 + .m4s).
    #[arg(long, env = "HLS_SEGMENT_TYPE", default_value = "mpegts", value_parser = parse_segment_type)]
    pub hls_segment_type: SegmentType,
    /// Per stream, bytes of finished segments that may wait on disk while the store is
    /// unavailable; beyond, a live-only stream drops its oldest segments and a recorded stream
    /// is ended (nothing recorded is dropped).
    #[arg(long, env = "HLS_SPOOL_MAX_BYTES", default_value_t = crate::spool::DEFAULT_SPOOL_MAX_BYTES)]
    pub hls_spool_max_bytes: u64,
    /// Seconds after the end of a stream that is not recorded before its remaining objects
    /// (segments, playlists, previews) are deleted; 0 = never.
    #[arg(long, env = "HLS_CLEANUP_DELAY_SECONDS", default_value_t = crate::cleanup::DEFAULT_CLEANUP_DELAY.as_secs())]
    pub hls_cleanup_delay_seconds: u64,
    /// Remux the ORIGINAL rendition of an H.264 RTMP source whose keyframes come at a regular
    /// interval fitting the segment duration, instead of encoding it (false: always encode).
    #[arg(long, env = "HLS_ORIGINAL_PASSTHROUGH", default_value = "true", action = clap::ArgAction::Set, value_parser = contract::settings::parse_bool)]
    pub hls_original_passthrough: bool,
    /// Encode for latency rather than compression (x264/x265 `-tune zerolatency`: no B-frames,
    /// no lookahead; ~0.6 s less from capture to segment); default: when HLS_TIME_SECONDS <= 2.
    #[arg(long, env = "HLS_LOW_LATENCY", action = clap::ArgAction::Set, value_parser = contract::settings::parse_bool)]
    pub hls_low_latency: Option<bool>,
}

/// Segments this short ask for low latency unless `HLS_LOW_LATENCY` says otherwise.
pub const LOW_LATENCY_SEGMENT_SECONDS: f64 = 2.0;

impl EncoderArgs {
    pub fn to_config(&self, node_id: &str) -> EncoderConfig {
        let defaults = EncoderConfig::default();
        EncoderConfig {
            node_id: node_id.to_owned(),
            ffmpeg_path: self.ffmpeg_path.clone(),
            ffprobe_path: self.ffprobe_path.clone(),
            hls_time: self.hls_time_seconds,
            live_playlist_size: self.hls_live_playlist_size,
            vod_max_size: self.hls_vod_max_size,
            fragment_count_limit: self.hls_fragment_count_limit,
            video_codec: self.hls_video_codec.clone(),
            audio_codec: self.hls_audio_codec.clone(),
            h264_preset: self.hls_h264_preset.clone(),
            pixel_format: self.hls_pixel_format.clone(),
            work_dir: self.encoder_work_dir.clone().unwrap_or(defaults.work_dir),
            stop_grace: Duration::from_secs(self.stop_grace_seconds),
            segment_type: self.hls_segment_type,
            spool_max_bytes: self.hls_spool_max_bytes,
            cleanup_delay: Duration::from_secs(self.hls_cleanup_delay_seconds),
            passthrough: self.hls_original_passthrough,
            low_latency: self
                .hls_low_latency
                .unwrap_or(self.hls_time_seconds <= LOW_LATENCY_SEGMENT_SECONDS),
        }
    }
}

/// Where segments, playlists and images go.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// FILESYSTEM (a local directory) or S3.
    #[arg(long, env = "HLS_STORAGE_TYPE", default_value = "FILESYSTEM")]
    pub hls_storage_type: String,
    /// Directory of the FILESYSTEM storage.
    #[arg(long, env = "HLS_FILESYSTEM_PATH", default_value = "./data")]
    pub hls_filesystem_path: PathBuf,
    /// Bucket of the S3 storage.
    #[arg(long, env = "AWS_S3_BUCKET")]
    pub aws_s3_bucket: Option<String>,
    /// Region of the bucket (default: the AWS SDK's chain, else us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, LocalStack, Ceph, R2); the SDK also reads
    /// AWS_ENDPOINT_URL. Unset: AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub aws_endpoint_url_s3: Option<String>,
    /// Path-style addressing (http://host/bucket/key), needed by most S3-compatible servers.
    #[arg(long, env = "AWS_S3_FORCE_PATH_STYLE", default_value = "false", action = clap::ArgAction::Set, value_parser = contract::settings::parse_bool)]
    pub aws_s3_force_path_style: bool,
    /// Prefix of every object key in the bucket (empty: the bucket root).
    #[arg(long, env = "HLS_S3_PREFIX", default_value = "")]
    pub hls_s3_prefix: String,
    /// Static access key for the bucket (default: the AWS credential chain: environment,
    /// profile, web identity, ECS task role, instance profile).
    #[arg(long, env = "HLS_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub hls_s3_access_key_id: Option<String>,
    /// Secret of HLS_S3_ACCESS_KEY_ID.
    #[arg(long, env = "HLS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub hls_s3_secret_access_key: Option<Secret>,
}

/// A storage setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    #[error("HLS_STORAGE_TYPE={0} is not supported (use FILESYSTEM or S3)")]
    UnknownType(String),
    #[error(transparent)]
    S3(#[from] S3ConfigError),
    #[error("HLS_S3_ACCESS_KEY_ID and HLS_S3_SECRET_ACCESS_KEY go together")]
    HalfCredentials,
    #[error("cannot use HLS_FILESYSTEM_PATH {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StorageArgs {
    /// The local directory objects are written to, when the storage is FILESYSTEM.
    pub fn filesystem_root(&self) -> Option<&std::path::Path> {
        self.hls_storage_type
            .eq_ignore_ascii_case("FILESYSTEM")
            .then_some(self.hls_filesystem_path.as_path())
    }

    /// The S3 settings, when the storage is S3.
    pub fn s3_settings(&self) -> Result<Option<S3Settings>, StorageConfigError> {
        if !self.hls_storage_type.eq_ignore_ascii_case("S3") {
            return Ok(None);
        }
        let credentials = match (&self.hls_s3_access_key_id, &self.hls_s3_secret_access_key) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => None,
            _ => return Err(StorageConfigError::HalfCredentials),
        };
        Ok(Some(S3Settings {
            bucket: self.aws_s3_bucket.clone().unwrap_or_default(),
            region: self.aws_region.clone(),
            endpoint_url: self.aws_endpoint_url_s3.clone(),
            force_path_style: self.aws_s3_force_path_style,
            prefix: self.hls_s3_prefix.clone(),
            credentials,
        }))
    }

    /// Opens the configured store (for S3: loads the AWS configuration, once).
    pub async fn build(&self) -> Result<Arc<dyn ObjectStore>, StorageConfigError> {
        if let Some(settings) = self.s3_settings()? {
            return Ok(Arc::new(S3Store::connect(&settings).await?));
        }
        if self.hls_storage_type.eq_ignore_ascii_case("FILESYSTEM") {
            let dir = &self.hls_filesystem_path;
            let io = |source| StorageConfigError::Directory {
                path: dir.clone(),
                source,
            };
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
            let root = tokio::fs::canonicalize(dir).await.map_err(io)?;
            return Ok(Arc::new(FilesystemStore::new(root)));
        }
        Err(StorageConfigError::UnknownType(
            self.hls_storage_type.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        encoder: EncoderArgs,
        #[command(flatten)]
        storage: StorageArgs,
    }

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("test").chain(args.iter().copied())).expect("parse")
    }

    #[test]
    fn short_segments_ask_for_low_latency_unless_told_otherwise() {
        let config = |args: &[&str]| parse(args).encoder.to_config("e");
        assert!(!config(&[]).low_latency);
        assert!(config(&[]).passthrough);
        assert!(config(&["--hls-time-seconds", "2"]).low_latency);
        assert!(!config(&["--hls-time-seconds", "1", "--hls-low-latency", "false"]).low_latency);
        assert!(config(&["--hls-low-latency", "true"]).low_latency);
        assert!(!config(&["--hls-original-passthrough", "false"]).passthrough);
    }

    #[test]
    fn defaults_are_a_directory_and_mpegts() {
        let args = parse(&[]);
        assert_eq!(args.storage.hls_storage_type, "FILESYSTEM");
        assert!(args.storage.s3_settings().expect("settings").is_none());
        let config = args.encoder.to_config("e");
        assert_eq!(config.segment_type, SegmentType::MpegTs);
        assert_eq!(config.spool_max_bytes, 1 << 30);
        assert_eq!(config.cleanup_delay, Duration::from_secs(300));
    }

    #[test]
    fn s3_settings_come_from_the_flags() {
        let args = parse(&[
            "--hls-storage-type",
            "s3",
            "--aws-s3-bucket",
            "media",
            "--aws-region",
            "eu-west-3",
            "--aws-endpoint-url-s3",
            "http://127.0.0.1:4566",
            "--aws-s3-force-path-style",
            "TRUE",
            "--hls-s3-prefix",
            "live/",
            "--hls-s3-access-key-id",
            "id",
            "--hls-s3-secret-access-key",
            "secret",
            "--hls-segment-type",
            "FMP4",
            "--hls-cleanup-delay-seconds",
            "0",
        ]);
        let s3 = args.storage.s3_settings().expect("valid").expect("S3");
        assert_eq!(s3.bucket, "media");
        assert_eq!(s3.region.as_deref(), Some("eu-west-3"));
        assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert!(s3.force_path_style);
        assert_eq!(s3.prefix, "live/");
        assert_eq!(
            s3.credentials
                .map(|(id, secret)| (id, secret.expose().to_owned())),
            Some(("id".into(), "secret".into()))
        );
        let config = args.encoder.to_config("e");
        assert_eq!(config.segment_type, SegmentType::Fmp4);
        assert!(config.cleanup_delay.is_zero());
    }

    #[test]
    fn half_credentials_and_unknown_values_are_refused() {
        let args = parse(&["--hls-storage-type", "S3", "--hls-s3-access-key-id", "id"]);
        assert!(matches!(
            args.storage.s3_settings(),
            Err(StorageConfigError::HalfCredentials)
        ));
        assert!(parse_segment_type("webm").is_err());
        assert_eq!(parse_segment_type(" TS "), Ok(SegmentType::MpegTs));
    }

    #[tokio::test]
    async fn s3_without_a_bucket_is_refused() {
        let args = parse(&["--hls-storage-type", "S3"]);
        let err = args.storage.build().await.err().expect("refused");
        assert!(err.to_string().contains("AWS_S3_BUCKET"), "{err}");
    }
}
