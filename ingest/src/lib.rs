//! The ingest node: takes publishers over RTMP, RTMPS and WebSocket (browsers), asks the
//! coordinator whether each publish may start, holds the accepted streams and relays them to the
//! encoders (FLV for RTMP, the recorded WebM / MP4 bytes for browsers).
//!
//! # Layout
//! - [`config`]: [`IngestConfig`], the node's settings and their defaults.
//! - `rtmp`: the accept loop and the per-connection state machine over `rml_rtmp`'s sans-IO
//!   handshake and `ServerSession` (the only module that touches sockets), with the hand-made
//!   replies to the OBS commands `rml_rtmp` leaves unanswered, and a lean chunk reader that
//!   takes over the input once a publish is live (media to the relay without per-message
//!   allocations). The same code serves RTMPS over a TLS stream.
//! - [`tls`]: [`TlsCert`], the RTMPS certificate and key, reloaded when their files change.
//! - [`ws`]: the WebSocket publish server ([`ws::WsServer`], settings [`ws::WsArgs`]).
//! - `publish`: the publish lifecycle both servers share (channel reservation, decision, the
//!   end reported once).
//! - [`media_http`]: the internal media endpoint encoders pull a stream from in the
//!   distributed mode, and [`media_http::HttpMedia`], the encoder's side of it.
//! - [`https`]: serving the HTTP router (page, WebSocket publishing, media endpoint) over
//!   plain HTTP and over TLS with the same reloadable certificate as RTMPS, with a header
//!   read timeout and connection limits ([`https::HttpGate`]).
//! - [`metrics`]: the gauges and counters of the ingest's bounds ([`Ingest::metrics`]).
//! - [`flv`]: pure FLV encoding (file header, tags, `onMetaData`) and codec-header checks.
//! - [`relay`]: per-stream fan-out to subscribers with a bounded GOP cache, bounded queues and
//!   keyframe resynchronisation of lagging subscribers.
//! - [`container`]: pure scanning of browser recordings (WebM, fragmented MP4): the header, and
//!   the points a decoder can start at; [`container_relay`]: their fan-out, bounded in bytes.
//! - [`registry`]: channel → publisher map (one publisher per channel on this node), the
//!   source of [`Ingest::publishers`] and of kill commands.
//!
//! [`Ingest`] ties them together: [`Ingest::serve_rtmp`] / [`Ingest::serve_rtmps`] run a
//! listener, [`ws::WsServer`] the WebSocket route,
//! [`Ingest::open_media`] (or [`LocalMedia`] as a `MediaSource`) gives an encoder a stream's
//! media, [`Ingest::handle_command`] executes the coordinator's kill commands.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod container;
pub mod container_relay;
pub mod flv;
#[doc(hidden)]
pub mod fuzzing;
pub mod https;
mod limits;
pub mod media_http;
pub mod metrics;
mod publish;
pub mod registry;
pub mod relay;
mod rtmp;
pub mod tls;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use contract::control::{
    ControlPlane, EncoderJob, IngestCommand, MediaError, MediaSource, MediaStream,
};
use contract::StreamId;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::{IngestConfig, LimitArgs};
pub use registry::PublisherInfo;
pub use tls::TlsCert;

use https::HttpGate;
use limits::PerIp;
use metrics::{IngestMetrics, RelayGauges, RtmpRefusals, Throttle};
use registry::Registry;

/// An ingest node. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: IngestConfig,
    pub(crate) control: Arc<dyn ControlPlane>,
    pub(crate) registry: Registry,
    pub(crate) next_conn_id: AtomicU64,
    /// Publish connections (RTMP, RTMPS, WebSocket): at most `config.max_connections`.
    pub(crate) connections: Arc<Semaphore>,
    /// RTMP(S) connections per address: at most `config.max_ip_connections`.
    pub(crate) rtmp_per_ip: Arc<PerIp>,
    pub(crate) rtmp_refusals: RtmpRefusals,
    pub(crate) rtmp_refusal_log: Throttle,
    /// Bytes held by the relays of this node.
    pub(crate) gauges: RelayGauges,
    pub(crate) http: HttpGate,
}

impl Ingest {
    pub fn new(config: IngestConfig, control: Arc<dyn ControlPlane>) -> Self {
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let http = HttpGate::new(&config);
        Ingest {
            inner: Arc::new(Inner {
                config,
                control,
                registry: Registry::new(),
                next_conn_id: AtomicU64::new(1),
                connections,
                rtmp_per_ip: Arc::default(),
                rtmp_refusals: RtmpRefusals::default(),
                rtmp_refusal_log: Throttle::new(std::time::Duration::from_secs(1)),
                gauges: RelayGauges::default(),
                http,
            }),
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    /// The limits and counters of this node's HTTP listeners, for
    /// [`https::serve_http`] / [`https::serve_https`].
    pub fn http_gate(&self) -> HttpGate {
        self.inner.http.clone()
    }

    /// Publish connections open now (RTMP and RTMPS from their accept, WebSocket from the
    /// upgrade request).
    pub fn publish_connections(&self) -> usize {
        self.inner.config.max_connections.max(1) - self.inner.connections.available_permits()
    }

    /// A snapshot of this node's gauges and counters.
    pub fn metrics(&self) -> IngestMetrics {
        let inner = &self.inner;
        let (http_refused_total, http_refused_ip) = inner.http.refused();
        IngestMetrics {
            relay_queued_bytes: inner.gauges.queued.get(),
            relay_cached_bytes: inner.gauges.cached.get(),
            relay_lag_skips: self
                .publishers()
                .iter()
                .map(|p| p.subscriber_lag_skips)
                .sum(),
            publish_connections: self.publish_connections(),
            http_connections: inner.http.connections(),
            rtmp_refused_total_limit: inner.rtmp_refusals.total.load(Ordering::Relaxed),
            rtmp_refused_ip_limit: inner.rtmp_refusals.per_ip.load(Ordering::Relaxed),
            http_refused_total_limit: http_refused_total,
            http_refused_ip_limit: http_refused_ip,
            http_header_timeouts: inner.http.header_timeouts(),
        }
    }

    /// [`Ingest::metrics`] in the Prometheus text format, for `/metrics`.
    pub fn render_metrics(&self) -> String {
        self.metrics().render()
    }

    /// Accepts RTMP publishers on `listener` until `shutdown` is cancelled; then ends every
    /// connection of this listener (a live publish is ended and reported with
    /// `publish_ended`) and returns once they are all gone. Accept errors are logged and
    /// retried, so this only returns at shutdown.
    pub async fn serve_rtmp(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        rtmp::serve(Arc::clone(&self.inner), listener, shutdown, None).await
    }

    /// Like [`Ingest::serve_rtmp`], for RTMPS: every connection starts with a TLS handshake
    /// with `cert`, whose files are polled every `IngestConfig::tls_reload_interval` and
    /// reloaded when they change (new connections use the new pair; a broken pair is logged
    /// and the previous one kept).
    pub async fn serve_rtmps(
        &self,
        listener: TcpListener,
        cert: TlsCert,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let watch = tokio::spawn({
            let cert = cert.clone();
            let every = self.inner.config.tls_reload_interval;
            let shutdown = shutdown.clone();
            async move { cert.watch(every, shutdown).await }
        });
        let served = rtmp::serve(Arc::clone(&self.inner), listener, shutdown, Some(cert)).await;
        watch.abort();
        served
    }

    /// The media of a stream held here, as an FLV byte stream that a decoder can start on:
    /// header, `onMetaData`, sequence headers, the GOP from the last keyframe, then live. It
    /// ends (after what is queued) when the publisher ends.
    ///
    /// A stream whose publish decision is still in flight on this node (the coordinator
    /// sends the encoder its job before the ingest hears the grant) is waited for, up to
    /// `publish_decision_timeout`; the returned stream is then empty if it never goes live.
    pub fn open_media(&self, stream_id: &StreamId) -> Result<MediaStream, MediaError> {
        let registry = &self.inner.registry;
        if let Some(relay) = registry.relay(stream_id) {
            return relay
                .subscribe()
                .ok_or_else(|| MediaError::UnknownStream(stream_id.clone()));
        }
        if !registry.any_pending() {
            return Err(MediaError::UnknownStream(stream_id.clone()));
        }
        tracing::debug!(%stream_id, "media requested for a stream not live yet; waiting for it");
        let inner = Arc::clone(&self.inner);
        let stream_id = stream_id.clone();
        let wait = async move {
            let mut went_live = inner.registry.watch_went_live();
            let deadline = tokio::time::Instant::now() + inner.config.publish_decision_timeout;
            loop {
                if let Some(stream) = inner
                    .registry
                    .relay(&stream_id)
                    .and_then(|relay| relay.subscribe())
                {
                    return stream;
                }
                match tokio::time::timeout_at(deadline, went_live.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => {
                        tracing::warn!(%stream_id, "media requested for a stream that never went live here");
                        let empty: MediaStream = Box::pin(futures::stream::empty());
                        return empty;
                    }
                }
            }
        };
        Ok(Box::pin(futures::stream::once(wait).flatten()))
    }

    /// Executes a coordinator command: `Kill` disconnects the publisher of the channel (of
    /// that stream only, when `stream_id` is set); its end follows the normal path
    /// (`publish_ended` is reported).
    pub fn handle_command(&self, command: IngestCommand) {
        match command {
            IngestCommand::Kill { channel, stream_id } => {
                let found = self.inner.registry.kill(&channel, stream_id.as_ref());
                if found {
                    tracing::info!(%channel, stream_id = ?stream_id.as_ref().map(StreamId::as_str), "kill: disconnecting the publisher");
                } else {
                    tracing::debug!(%channel, stream_id = ?stream_id.as_ref().map(StreamId::as_str), "kill: no such publisher here");
                }
            }
        }
    }

    /// The live publishers of this node, sorted by channel.
    pub fn publishers(&self) -> Vec<PublisherInfo> {
        self.inner.registry.publishers()
    }
}

/// The ingest as a [`MediaSource`] for an encoder in the same process (embedded mode).
#[derive(Clone)]
pub struct LocalMedia(pub Ingest);

#[async_trait]
impl MediaSource for LocalMedia {
    async fn open(&self, job: &EncoderJob) -> Result<MediaStream, MediaError> {
        self.0.open_media(&job.stream_id)
    }
}
