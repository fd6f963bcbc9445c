//! The whole system in one process (the embedded mode): coordinator, RTMP ingest, encoder, an
//! in-process signalling bus instead of Redis and a local directory instead of S3. The same
//! components run as separate services in the distributed mode; only the bus and the store
//! differ.
//!
//! # Layout
//! - [`config`]: settings (environment variables with the original system's names).
//! - [`http`]: the HTTP server: stored objects, commands API, health and metrics.
//! - [`run`]: wires the components together and shuts them down in order.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, PublishGrant, PublishRefusal, PublishRequest,
    SourceKind, StreamType,
};
use contract::StreamId;
use coordinator_fn::bus::LocalBus;
use coordinator_fn::state::{EncoderNode, IngestNode, MemoryState};
use coordinator_fn::Coordinator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The node IDs of the embedded mode.
pub const INGEST_ID: &str = "ingest-1";
pub const ENCODER_ID: &str = "encoder-1";

/// The listeners the system serves; bound by the caller (port 0 in tests).
pub struct Listeners {
    pub rtmp: TcpListener,
    pub http: TcpListener,
}

/// Tells the operator where to watch a stream as soon as its master playlist exists.
struct AnnounceStreams {
    coordinator: Coordinator,
    http_base: String,
}

#[async_trait]
impl ControlPlane for AnnounceStreams {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        self.coordinator.publish(request).await
    }

    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError> {
        self.coordinator.publish_ended(channel, stream_id).await
    }

    async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
        if let EncoderEvent::Available {
            stream_type: StreamType::HlsLive,
            master_index_file: Some(master),
            stream_id,
            channel,
            ..
        } = &event
        {
            tracing::info!(%channel, %stream_id, "watch: {}/{master}", self.http_base);
        }
        self.coordinator.encoder_event(event).await
    }
}

/// Runs the system until `shutdown` is cancelled, then ends it in order: publishers get a clean
/// end, the encoder finishes every stream (last segment, final playlists), pending events get a
/// last delivery attempt, and the HTTP server stops.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let coordinator_config = config
        .coordinator
        .to_config(Some(&config.default_resolutions))
        .context("invalid coordinator settings")?;
    let id_max_length = coordinator_config.id_max_length;
    let store = config.storage.build().await?;
    // Served over HTTP when the objects are local (FILESYSTEM storage).
    let data_dir = match config.storage.filesystem_root() {
        Some(dir) => Some(tokio::fs::canonicalize(dir).await?),
        None => None,
    };

    let rtmp_addr = listeners.rtmp.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let host = config.public_host();
    let http_base = format!("http://{host}:{}", http_addr.port());

    let bus = Arc::new(LocalBus::new());
    let coordinator = Coordinator::new(
        coordinator_config,
        Arc::new(MemoryState::new()),
        bus.clone(),
    );
    coordinator
        .register_encoder(EncoderNode {
            id: ENCODER_ID.to_owned(),
            capacity: config.encoder.server_capacity,
        })
        .await?;
    coordinator
        .register_ingest(IngestNode {
            id: INGEST_ID.to_owned(),
            ip: host.clone(),
            port: rtmp_addr.port(),
            ssl: false,
            server_type: SourceKind::Rtmp,
            internal_url: None,
        })
        .await?;
    let control: Arc<dyn ControlPlane> = Arc::new(AnnounceStreams {
        coordinator: coordinator.clone(),
        http_base: http_base.clone(),
    });

    let ingest = ingest::Ingest::new(
        ingest::IngestConfig {
            node_id: INGEST_ID.to_owned(),
            id_max_length,
            idle_timeout: Duration::from_secs(config.publish_idle_timeout_seconds.max(1)),
            ..ingest::IngestConfig::default()
        },
        control.clone(),
    );
    let mut encoder_config = config.encoder.to_config(ENCODER_ID);
    if let (None, Some(dir)) = (&config.encoder.encoder_work_dir, &data_dir) {
        // Keep ffmpeg's scratch files on the same disk as the output.
        encoder_config.work_dir = dir.join(".work");
    }
    let encoder = encoder::Encoder::new(
        encoder_config,
        store,
        Arc::new(ingest::LocalMedia(ingest.clone())),
        control,
    );

    let ingest_stop = CancellationToken::new();
    let encoder_stop = CancellationToken::new();
    let delivery_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();

    let mut ingest_commands = bus.subscribe_ingest(INGEST_ID);
    let commands_task = tokio::spawn({
        let ingest = ingest.clone();
        async move {
            while let Some(command) = ingest_commands.recv().await {
                ingest.handle_command(command);
            }
        }
    });
    let rtmp_task = tokio::spawn({
        let ingest = ingest.clone();
        let stop = ingest_stop.clone();
        async move { ingest.serve_rtmp(listeners.rtmp, stop).await }
    });
    let encoder_task = tokio::spawn({
        let encoder = encoder.clone();
        let commands = bus.subscribe_encoder(ENCODER_ID);
        let stop = encoder_stop.clone();
        async move { encoder.run(commands, stop).await }
    });
    let delivery_task = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = delivery_stop.clone();
        async move { coordinator.run_maintenance(stop).await }
    });
    let app = http::router(http::HttpState {
        coordinator: coordinator.clone(),
        data_dir: Arc::new(data_dir.clone()),
        ingest: ingest.clone(),
        encoder: encoder.clone(),
    });
    let http_task = tokio::spawn({
        let stop = http_stop.clone();
        async move {
            axum::serve(listeners.http, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    tracing::info!("RTMP ingest listening on {rtmp_addr}");
    tracing::info!(
        "publish from OBS: Server rtmp://{host}:{}/{{channel}}, Stream Key {{key}} (for example Server rtmp://{host}:{}/demo, Stream Key key)",
        rtmp_addr.port(),
        rtmp_addr.port()
    );
    tracing::info!(
        "publish with ffmpeg: ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -c:v libx264 -g 60 -c:a aac -t 60 -f flv rtmp://{host}:{}/demo/key",
        rtmp_addr.port()
    );
    tracing::info!("HTTP listening on {http_addr}: live streams at {http_base}/commands/report, playback at {http_base}/hls/{{channel}}/{{streamId}}/master.m3u8");
    match &data_dir {
        Some(dir) => tracing::info!("HLS files are written to {}", dir.display()),
        None => tracing::info!(
            "HLS files are uploaded to {}",
            config.storage.hls_storage_type
        ),
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: ending publishers, finishing streams");
    ingest_stop.cancel();
    match rtmp_task.await {
        Ok(Err(err)) => tracing::warn!(%err, "RTMP listener ended with an error"),
        Err(err) => tracing::warn!(%err, "RTMP listener task failed"),
        Ok(Ok(())) => {}
    }
    encoder_stop.cancel();
    if let Err(err) = encoder_task.await {
        tracing::warn!(%err, "encoder task failed");
    }
    delivery_stop.cancel();
    let _ = delivery_task.await;
    http_stop.cancel();
    let _ = http_task.await;
    commands_task.abort();
    tracing::info!("stopped");
    Ok(())
}
