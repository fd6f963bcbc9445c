//! Settings of an ingest node.

use std::time::Duration;

use contract::DEFAULT_ID_MAX_LENGTH;

/// Default bound of each media subscriber's queue: 32 MiB.
pub const DEFAULT_MEDIA_QUEUE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Settings of an ingest node. Build it with struct update syntax
/// (`IngestConfig { node_id: "ingest-1".into(), ..Default::default() }`) so that new fields
/// keep their defaults.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// This node's ID, sent as `PublishRequest::ingest_id` (e.g. `ingest-1`).
    pub node_id: String,
    /// `ID_MAX_LENGTH`: the longest channel or key accepted (default 128).
    pub id_max_length: usize,
    /// A connection that sends nothing for this long is dead and is closed; a connection that
    /// is not publishing (handshake, connect, after the end of a publish) is closed after this
    /// long too. Default 10 s.
    pub idle_timeout: Duration,
    /// Longest wait for `ControlPlane::publish` (and for `publish_ended`); a publish whose
    /// decision takes longer is refused with `NetStream.Publish.BadConnection`. Default 10 s.
    pub publish_decision_timeout: Duration,
    /// Bound of a stream's keyframe (GOP) cache, in bytes of FLV tags. A GOP larger than this
    /// is not cached: new subscribers wait for the next keyframe. Default 16 MiB.
    pub gop_cache_max_bytes: usize,
    /// Bound of each subscriber's queue, in FLV tags. A subscriber that falls this far behind
    /// skips ahead to the next keyframe. Default 1024 (about 13 s of 30 fps video + AAC).
    pub relay_queue_len: usize,
    /// Bound of each subscriber's queue of an RTMP stream, in bytes (the WebSocket server has
    /// its own, `WsConfig::queue_max_bytes`). A subscriber (an encoder) that falls this far
    /// behind skips ahead to the next keyframe; the publisher never waits for it. Default
    /// 32 MiB.
    pub relay_queue_max_bytes: usize,
    /// Most RTMP connections held at once (handshaking, deciding or publishing); further
    /// connections are closed at once with a warning. Each connection may buffer up to about
    /// 32 MiB in the worst case (one 16 MiB RTMP message being reassembled), so this bounds the
    /// memory a flood of bad clients can take. Default 256.
    pub max_connections: usize,
    /// How often the RTMPS certificate and key files are checked for changes. Default 5 s.
    pub tls_reload_interval: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            node_id: "ingest-1".to_owned(),
            id_max_length: DEFAULT_ID_MAX_LENGTH,
            idle_timeout: Duration::from_secs(10),
            publish_decision_timeout: Duration::from_secs(10),
            gop_cache_max_bytes: 16 * 1024 * 1024,
            relay_queue_len: 1024,
            relay_queue_max_bytes: DEFAULT_MEDIA_QUEUE_MAX_BYTES,
            max_connections: 256,
            tls_reload_interval: Duration::from_secs(5),
        }
    }
}
