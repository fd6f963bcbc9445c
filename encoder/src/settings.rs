//! The encoder's settings as `clap` arguments with the original system's environment variable
//! names, shared by every binary that runs an encoder (the all-in-one and `encoder`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::EncoderConfig;
use crate::store::{FilesystemStore, ObjectStore};

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
}

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
}

/// A storage setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    #[error("HLS_STORAGE_TYPE={0} is not supported (use FILESYSTEM or S3)")]
    UnknownType(String),
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

    /// Opens the configured store.
    pub async fn build(&self) -> Result<Arc<dyn ObjectStore>, StorageConfigError> {
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
