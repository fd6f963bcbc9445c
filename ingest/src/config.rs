//! Settings of an ingest node.

use std::time::Duration;

use contract::DEFAULT_ID_MAX_LENGTH;

use crate::ws::IpWhitelist;

/// `MEDIA_QUEUE_MAX_BYTES` default: 32 MiB per media subscriber.
pub const DEFAULT_MEDIA_QUEUE_MAX_BYTES: usize = 32 * 1024 * 1024;
/// `MAX_PUBLISH_CONNECTIONS` default.
pub const DEFAULT_MAX_PUBLISH_CONNECTIONS: usize = 256;
/// `MAX_IP_CONCURRENT_CONNECTIONS` default.
pub const DEFAULT_MAX_IP_CONNECTIONS: usize = 4;
/// `HTTP_HEADER_READ_TIMEOUT_SECONDS` default.
pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// `HTTP_MAX_CONNECTIONS` default.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;
/// `HTTP_MAX_IP_PENDING_CONNECTIONS` default.
pub const DEFAULT_HTTP_MAX_IP_PENDING_CONNECTIONS: usize = 16;

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
    /// long too: the RTMP handshake, `connect` and `publish` must all be done within this
    /// time of the accept (RTMPS: of the end of the TLS handshake, itself bounded by this).
    /// Default 10 s.
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
    /// Bound of each subscriber's queue of an RTMP stream, in bytes (`MEDIA_QUEUE_MAX_BYTES`;
    /// the WebSocket server has its own, `WsConfig::queue_max_bytes`, set from the same
    /// variable by the binaries). A subscriber (an encoder) that falls this far behind skips
    /// ahead to the next keyframe; the publisher never waits for it. Default 32 MiB.
    pub relay_queue_max_bytes: usize,
    /// Most publish connections held at once (`MAX_PUBLISH_CONNECTIONS`): RTMP and RTMPS
    /// connections from their accept (handshaking, deciding or publishing), WebSocket
    /// connections from their upgrade request; further connections are closed at once (a
    /// WebSocket upgrade gets `503`). Each RTMP connection may buffer up to about 32 MiB in the
    /// worst case (one 16 MiB RTMP message being reassembled), so this bounds the memory a
    /// flood of bad clients can take. Default 256.
    pub max_connections: usize,
    /// Most RTMP(S) connections open at once from one IP address, handshaking ones included
    /// (`MAX_IP_CONCURRENT_CONNECTIONS`, as for WebSocket; 0 = no limit); further ones are
    /// closed at once. Keeps one address from taking all of `max_connections`. Default 4.
    pub max_ip_connections: usize,
    /// Addresses exempt from `max_ip_connections` and `http_max_ip_pending`
    /// (`CONCURRENT_LIMIT_WHITELIST`).
    pub ip_whitelist: IpWhitelist,
    /// Time an HTTP(S) client has to send complete request headers
    /// (`HTTP_HEADER_READ_TIMEOUT_SECONDS`), from the connection's accept (after the TLS
    /// handshake) or from the end of its previous response; a connection that has not is
    /// closed. Default 10 s.
    pub http_header_read_timeout: Duration,
    /// Most HTTP(S) connections open at once (`HTTP_MAX_CONNECTIONS`), upgraded WebSockets not
    /// counted (they count in `max_connections`); further ones are closed at once. Default
    /// 1024.
    pub http_max_connections: usize,
    /// Most HTTP(S) connections from one IP address that have not sent their first request
    /// yet (`HTTP_MAX_IP_PENDING_CONNECTIONS`, 0 = no limit); further ones are closed at once.
    /// Keeps one address that opens connections and sends nothing (or dribbles its headers)
    /// from taking all of `http_max_connections`. Default 16.
    pub http_max_ip_pending: usize,
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
            max_connections: DEFAULT_MAX_PUBLISH_CONNECTIONS,
            max_ip_connections: DEFAULT_MAX_IP_CONNECTIONS,
            ip_whitelist: IpWhitelist::default(),
            http_header_read_timeout: Duration::from_secs(DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS),
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            http_max_ip_pending: DEFAULT_HTTP_MAX_IP_PENDING_CONNECTIONS,
            tls_reload_interval: Duration::from_secs(5),
        }
    }
}

/// The ingest's bounds as command-line flags / environment variables, for binaries to
/// `#[command(flatten)]` next to [`crate::ws::WsArgs`] (whose `MAX_IP_CONCURRENT_CONNECTIONS`
/// and `CONCURRENT_LIMIT_WHITELIST` apply to RTMP too).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Bytes queued for each media subscriber (encoder) of a stream; one that falls this far
    /// behind skips to the next keyframe, the publisher never waits.
    #[arg(long, env = "MEDIA_QUEUE_MAX_BYTES", default_value_t = DEFAULT_MEDIA_QUEUE_MAX_BYTES)]
    pub media_queue_max_bytes: usize,
    /// Most publish connections open at once (RTMP, RTMPS, WebSocket), handshaking ones
    /// included; further ones are closed at once.
    #[arg(long, env = "MAX_PUBLISH_CONNECTIONS", default_value_t = DEFAULT_MAX_PUBLISH_CONNECTIONS)]
    pub max_publish_connections: usize,
    /// Seconds an HTTP(S) client has to send complete request headers (from the connection,
    /// or from the end of its previous response); then the connection is closed.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS)]
    pub http_header_read_timeout_seconds: u64,
    /// Most HTTP(S) connections open at once (upgraded WebSockets not counted).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Most HTTP(S) connections from one IP that have not sent a request yet (0 = no limit;
    /// CONCURRENT_LIMIT_WHITELIST is exempt).
    #[arg(long, env = "HTTP_MAX_IP_PENDING_CONNECTIONS", default_value_t = DEFAULT_HTTP_MAX_IP_PENDING_CONNECTIONS)]
    pub http_max_ip_pending_connections: usize,
}

impl LimitArgs {
    /// Sets the bounds of `config` from these flags and from the per-IP flags of `ws`.
    pub fn apply(&self, ws: &crate::ws::WsArgs, config: &mut IngestConfig) {
        config.relay_queue_max_bytes = self.media_queue_max_bytes.max(64 * 1024);
        config.max_connections = self.max_publish_connections.max(1);
        config.max_ip_connections = ws.max_ip_concurrent_connections;
        config.ip_whitelist = ws.concurrent_limit_whitelist.clone();
        config.http_header_read_timeout =
            Duration::from_secs(self.http_header_read_timeout_seconds.max(1));
        config.http_max_connections = self.http_max_connections.max(1);
        config.http_max_ip_pending = self.http_max_ip_pending_connections;
    }

    /// The WebSocket server's settings: `ws`'s, with the media queue bound of these.
    pub fn ws_config(&self, ws: &crate::ws::WsArgs) -> crate::ws::WsConfig {
        crate::ws::WsConfig {
            queue_max_bytes: self.media_queue_max_bytes.max(64 * 1024),
            ..ws.to_config()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        ws: crate::ws::WsArgs,
    }

    #[test]
    fn the_flags_default_to_the_config_defaults_and_reach_the_config() {
        let args = Args::try_parse_from(["ingest"]).expect("defaults");
        let mut config = IngestConfig::default();
        args.limits.apply(&args.ws, &mut config);
        let defaults = IngestConfig::default();
        assert_eq!(config.relay_queue_max_bytes, defaults.relay_queue_max_bytes);
        assert_eq!(config.max_connections, defaults.max_connections);
        assert_eq!(config.max_ip_connections, defaults.max_ip_connections);
        assert_eq!(
            config.http_header_read_timeout,
            defaults.http_header_read_timeout
        );
        assert_eq!(config.http_max_connections, defaults.http_max_connections);
        assert_eq!(config.http_max_ip_pending, defaults.http_max_ip_pending);
        assert_eq!(
            args.limits.ws_config(&args.ws).queue_max_bytes,
            crate::ws::WsConfig::default().queue_max_bytes
        );

        let args = Args::try_parse_from([
            "ingest",
            "--media-queue-max-bytes",
            "1048576",
            "--http-header-read-timeout-seconds",
            "3",
            "--max-ip-concurrent-connections",
            "2",
            "--concurrent-limit-whitelist",
            "10.0.0.0/8",
        ])
        .expect("flags");
        args.limits.apply(&args.ws, &mut config);
        assert_eq!(config.relay_queue_max_bytes, 1 << 20);
        assert_eq!(config.http_header_read_timeout, Duration::from_secs(3));
        assert_eq!(config.max_ip_connections, 2);
        assert!(config
            .ip_whitelist
            .contains("10.1.1.1".parse().expect("ip")));
        assert_eq!(args.limits.ws_config(&args.ws).queue_max_bytes, 1 << 20);
    }
}
