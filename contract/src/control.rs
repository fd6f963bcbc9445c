//! Messages between ingest, encoder and coordinator, and the interfaces each side is written
//! against. In the embedded mode they are called in process; in the distributed mode the same
//! messages travel as JSON over HTTP (ingest/encoder → coordinator) and Redis pub/sub
//! (coordinator → ingest/encoder).

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::ids::StreamId;
use crate::previews::PreviewSpec;
use crate::resolution::ResolutionRequest;

/// How a publisher reached the ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    /// RTMP or RTMPS: the ingest relays FLV.
    #[serde(rename = "RTMP")]
    Rtmp,
    /// WebSocket (browser `MediaRecorder`): the ingest relays the WebM / MP4 bytes.
    #[serde(rename = "WS")]
    Ws,
}

impl SourceKind {
    /// The ffmpeg input format for the bytes the ingest relays (`None`: let ffmpeg probe).
    pub fn ffmpeg_format(self) -> Option<&'static str> {
        match self {
            SourceKind::Rtmp => Some("flv"),
            SourceKind::Ws => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Rtmp => "RTMP",
            SourceKind::Ws => "WS",
        }
    }
}

/// The options the web app chose for a stream (key verification response headers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    pub resolutions: Vec<ResolutionRequest>,
    pub record: bool,
    pub previews: Option<PreviewSpec>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            resolutions: vec![ResolutionRequest::Original],
            record: false,
            previews: None,
        }
    }
}

/// Ingest → coordinator: a publisher wants to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    pub channel: String,
    pub key: String,
    /// The publisher's IP address, passed to the web app as `x-user-ip`.
    pub user_ip: String,
    pub ingest_id: String,
    pub source: SourceKind,
}

/// Coordinator → ingest: the publish is allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishGrant {
    pub stream_id: StreamId,
    pub encoder_id: String,
}

/// Why a publish was refused. The RTMP status and HTTP code follow from the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PublishRefusal {
    /// Bad channel or key, or the web app said no (RTMP `BadName`, HTTP 403).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Another publisher holds the channel (RTMP `BadName`, HTTP 403).
    #[error("already publishing on this channel")]
    AlreadyPublishing,
    /// No encoder has free capacity (RTMP `BadConnection`, HTTP 503).
    #[error("no encoder has free capacity")]
    NoCapacity,
    /// The coordinator or the web app could not be reached (RTMP `BadConnection`, HTTP 503).
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
}

/// Coordinator → encoder: encode a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderJob {
    pub stream_id: StreamId,
    pub channel: String,
    pub ingest_id: String,
    pub source: SourceKind,
    pub options: StreamOptions,
    /// Where the encoder pulls the media from in the distributed mode (the ingest node's
    /// internal media endpoint for this stream); `None` in process.
    #[serde(default)]
    pub media_url: Option<String>,
    /// How long the encoder keeps the stream open after its media ends, waiting for a
    /// [`EncoderCommand::Resume`] (the publisher reconnecting); 0 = the stream ends with its
    /// media. Absent in jobs from older coordinators: 0.
    #[serde(default)]
    pub reconnect_window_ms: u64,
}

/// Coordinator → encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EncoderCommand {
    Start(EncoderJob),
    /// Finish the stream now (segment in progress, final playlists), as if the publisher left.
    Stop {
        stream_id: StreamId,
    },
    /// The publisher of a stream whose media ended came back within the reconnect window
    /// (possibly on another ingest node, possibly over another protocol): the stream goes on
    /// from the new media, same ID, after a discontinuity.
    Resume {
        stream_id: StreamId,
        ingest_id: String,
        source: SourceKind,
        /// As [`EncoderJob::media_url`], for the new ingest node.
        #[serde(default)]
        media_url: Option<String>,
    },
}

/// Coordinator → ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum IngestCommand {
    /// Disconnect the publisher of `channel` (of that stream only, when `stream_id` is set).
    Kill {
        channel: String,
        stream_id: Option<StreamId>,
    },
}

/// `x-stream-type` of a `stream-available` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamType {
    #[serde(rename = "HLS-LIVE")]
    HlsLive,
    #[serde(rename = "HLS-VOD")]
    HlsVod,
    #[serde(rename = "IMG-PREVIEW")]
    ImgPreview,
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::HlsLive => "HLS-LIVE",
            StreamType::HlsVod => "HLS-VOD",
            StreamType::ImgPreview => "IMG-PREVIEW",
        }
    }
}

/// Encoder → coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EncoderEvent {
    /// A playlist or preview index is stored and readable.
    Available {
        stream_id: StreamId,
        channel: String,
        stream_type: StreamType,
        /// `x-resolution`: the rendition or preview name.
        resolution: String,
        /// `x-index-file`: the storage key of the playlist or `index.json`.
        index_file: String,
        /// `x-master-index-file` (on `HLS-LIVE`).
        master_index_file: Option<String>,
        /// `x-start-time` in seconds (VOD parts after the first).
        start_time: Option<f64>,
    },
    /// The encoder is done with the stream: final playlists are stored and its load is free.
    Closed {
        stream_id: StreamId,
        channel: String,
        encoder_id: String,
    },
}

/// Failure to reach the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    #[error("refused by the coordinator: {0}")]
    Refused(String),
}

/// The coordinator as ingest and encoder nodes see it.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Asks whether a publish may start; on success the stream has an ID and an encoder.
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal>;
    /// The publisher of a granted stream is gone (ended, killed or dead).
    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError>;
    /// An encoder reports progress or the end of a stream.
    async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError>;
}

/// Failure of the media path between ingest and encoder.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("stream {0} is not held by this ingest")]
    UnknownStream(StreamId),
    #[error("media source unavailable: {0}")]
    Unavailable(String),
}

/// The relayed media of one stream, from a point a decoder can start at (container header,
/// codec configuration, a keyframe). Ends when the publisher ends.
pub type MediaStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Where an encoder gets the media of a job from.
#[async_trait]
pub trait MediaSource: Send + Sync + 'static {
    async fn open(&self, job: &EncoderJob) -> Result<MediaStream, MediaError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let job = EncoderCommand::Start(EncoderJob {
            stream_id: StreamId::generate(),
            channel: "demo".into(),
            ingest_id: "ingest-1".into(),
            source: SourceKind::Rtmp,
            options: StreamOptions::default(),
            media_url: None,
            reconnect_window_ms: 5000,
        });
        let json = serde_json::to_string(&job).expect("serialize");
        assert!(json.contains("\"type\":\"start\""), "{json}");
        assert_eq!(
            serde_json::from_str::<EncoderCommand>(&json).ok(),
            Some(job)
        );
    }

    #[test]
    fn resume_round_trips_and_old_jobs_have_no_reconnect_window() {
        let resume = EncoderCommand::Resume {
            stream_id: StreamId::generate(),
            ingest_id: "ingest-2".into(),
            source: SourceKind::Ws,
            media_url: Some("http://10.0.0.2:8080/internal/media/x".into()),
        };
        let json = serde_json::to_string(&resume).expect("serialize");
        assert!(json.contains("\"type\":\"resume\""), "{json}");
        assert_eq!(
            serde_json::from_str::<EncoderCommand>(&json).ok(),
            Some(resume)
        );
        let mut old = serde_json::to_value(EncoderCommand::Start(EncoderJob {
            stream_id: StreamId::generate(),
            channel: "c".into(),
            ingest_id: "i".into(),
            source: SourceKind::Rtmp,
            options: StreamOptions::default(),
            media_url: None,
            reconnect_window_ms: 7,
        }))
        .expect("serialize");
        if let Some(fields) = old.as_object_mut() {
            fields.remove("reconnect_window_ms");
        }
        match serde_json::from_value::<EncoderCommand>(old) {
            Ok(EncoderCommand::Start(job)) => assert_eq!(job.reconnect_window_ms, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn float_fields_survive_every_hop_unchanged() {
        // Found by fuzzing: without serde_json's exact float parsing, the shortest decimal
        // form of this start time parsed back one ulp off.
        let event = EncoderEvent::Available {
            stream_id: StreamId::generate(),
            channel: "demo".into(),
            stream_type: StreamType::HlsVod,
            resolution: "640x360-30".into(),
            index_file: "hls/demo/x/640x360-30/vod-1.m3u8".into(),
            master_index_file: None,
            start_time: Some(29.555555555555546),
        };
        let json = serde_json::to_string(&event).expect("serialize");
        assert!(json.contains("29.555555555555546"), "{json}");
        assert_eq!(
            serde_json::from_str::<EncoderEvent>(&json).ok(),
            Some(event)
        );
    }

    #[test]
    fn a_message_with_a_bad_stream_id_is_refused() {
        let json = r#"{"type":"stop","stream_id":"../../etc"}"#;
        assert!(serde_json::from_str::<EncoderCommand>(json).is_err());
    }
}
