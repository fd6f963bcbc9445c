//! Settings of the all-in-one binary: environment variables with the original system's names,
//! each also a command-line flag (`--help` lists them with their defaults).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use coordinator_fn::config::CoordinatorArgs;

/// The ladder of the embedded mode when no web app chooses one: the original plus two smaller
/// renditions, so adaptive playback can be seen at work.
pub const DEFAULT_EMBEDDED_RESOLUTIONS: &str = "ORIGINAL,854x480-30~1400,640x360-30~800";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "vstream",
    version,
    about = "Live streaming in one process: RTMP ingest, ffmpeg ABR ladder, HLS from a local directory"
)]
pub struct Config {
    /// Address the RTMP and HTTP listeners bind to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// RTMP listener port.
    #[arg(long, env = "RTMP_PORT", default_value_t = 1935)]
    pub rtmp_port: u16,
    /// HTTP port: the web page, WebSocket publishing, HLS files, previews, commands API,
    /// /healthz, /metrics.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Host name or IP address publishers and players use to reach this server (for the log
    /// lines and /commands/report; default: the bind address, or 127.0.0.1 when it is 0.0.0.0).
    #[arg(long, env = "EXTERNAL_IP")]
    pub external_ip: Option<String>,

    /// Ladder used when no KEY_VERIFICATION_URL is set.
    #[arg(long, env = "DEFAULT_RESOLUTIONS", default_value = DEFAULT_EMBEDDED_RESOLUTIONS)]
    pub default_resolutions: String,
    /// PEM certificate chain for RTMPS and HTTPS/wss (with SSL_KEY; both files are reloaded
    /// when they change). Unset: no TLS listeners.
    #[arg(long, env = "SSL_CERT")]
    pub ssl_cert: Option<PathBuf>,
    /// PEM private key of SSL_CERT.
    #[arg(long, env = "SSL_KEY")]
    pub ssl_key: Option<PathBuf>,
    /// RTMPS listener port (when SSL_CERT and SSL_KEY are set).
    #[arg(long, env = "SSL_PORT", default_value_t = 1936)]
    pub ssl_port: u16,
    /// HTTPS port (the page, the files and wss:// publishing) when SSL_CERT and SSL_KEY are set.
    #[arg(long, env = "HTTPS_PORT", default_value_t = 8443)]
    pub https_port: u16,
    #[command(flatten)]
    pub log: coordinator_fn::telemetry::LogArgs,
    /// WebSocket publishing (on HTTP_PORT): per-IP limit, origins, frame size.
    #[command(flatten)]
    pub ws: ingest::ws::WsArgs,
    /// The ingest's bounds: media queues, connection limits, HTTP header read timeout.
    #[command(flatten)]
    pub limits: ingest::LimitArgs,

    /// Seconds without data after which a publisher is considered gone.
    #[arg(long, env = "PUBLISH_IDLE_TIMEOUT_SECONDS", default_value_t = 10)]
    pub publish_idle_timeout_seconds: u64,

    #[command(flatten)]
    pub storage: encoder::settings::StorageArgs,
    #[command(flatten)]
    pub encoder: encoder::settings::EncoderArgs,

    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

impl Config {
    /// The host name players and publishers use in the URLs that are logged.
    pub fn public_host(&self) -> String {
        match &self.external_ip {
            Some(host) if !host.is_empty() => host.clone(),
            _ if self.bind_address.is_unspecified() => "127.0.0.1".to_owned(),
            _ => self.bind_address.to_string(),
        }
    }
}
