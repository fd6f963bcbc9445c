//! The whole system in one process (the embedded mode): coordinator, RTMP(S) and WebSocket
//! ingest, encoder, an in-process signalling bus instead of Redis and a local directory instead
//! of S3, and a web page to publish from the browser and watch. The same components run as
//! separate services in the distributed mode; only the bus and the store differ.
//!
//! # Layout
//! - [`config`]: settings (environment variables with the original system's names).
//! - [`http`]: the HTTP server: stored objects, commands API, health and metrics.
//! - [`web`]: the web page (publish from the browser, watch) and `/api/streams`.
//! - [`run`]: wires the components together and shuts them down in order.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod http;
pub mod web;

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
    // RTMPS when a certificate and key are configured (bound here: its port is a setting).
    let rtmps = match (&config.ssl_cert, &config.ssl_key) {
        (Some(cert), Some(key)) => {
            let tls = ingest::TlsCert::load(cert, key).context("invalid SSL_CERT / SSL_KEY")?;
            let addr = std::net::SocketAddr::new(config.bind_address, config.ssl_port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for RTMPS on {addr} (SSL_PORT)"))?;
            let https_addr = std::net::SocketAddr::new(config.bind_address, config.https_port);
            let https = TcpListener::bind(https_addr)
                .await
                .with_context(|| format!("cannot listen for HTTPS on {https_addr} (HTTPS_PORT)"))?;
            Some((listener, https, tls))
        }
        (None, None) => None,
        _ => anyhow::bail!("set both SSL_CERT and SSL_KEY for RTMPS (or neither)"),
    };
    let (rtmps_addr, https_addr) = match &rtmps {
        Some((listener, https, _)) => (Some(listener.local_addr()?), Some(https.local_addr()?)),
        None => (None, None),
    };
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
    // The same node's other listeners, for /commands/report's streamingServers.
    let mut other_servers = vec![(
        format!("{INGEST_ID}-ws"),
        http_addr.port(),
        false,
        SourceKind::Ws,
    )];
    if let Some(addr) = https_addr {
        tracing::info!(
            "HTTPS on {addr}: the page at https://{host}:{}/, wss:// publishing",
            addr.port()
        );
    }
    if let Some(addr) = rtmps_addr {
        other_servers.push((
            format!("{INGEST_ID}-rtmps"),
            addr.port(),
            true,
            SourceKind::Rtmp,
        ));
    }
    for (id, port, ssl, server_type) in other_servers {
        coordinator
            .register_ingest(IngestNode {
                id,
                ip: host.clone(),
                port,
                ssl,
                server_type,
                internal_url: None,
            })
            .await?;
    }
    let control: Arc<dyn ControlPlane> = Arc::new(AnnounceStreams {
        coordinator: coordinator.clone(),
        http_base: http_base.clone(),
    });

    let mut ingest_config = ingest::IngestConfig {
        node_id: INGEST_ID.to_owned(),
        id_max_length,
        idle_timeout: Duration::from_secs(config.publish_idle_timeout_seconds.max(1)),
        ..ingest::IngestConfig::default()
    };
    config.limits.apply(&config.ws, &mut ingest_config);
    let ingest = ingest::Ingest::new(ingest_config, control.clone());
    let ws = ingest::ws::WsServer::new(ingest.clone(), config.limits.ws_config(&config.ws));
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
    let (rtmps, https) = match rtmps {
        Some((listener, https, tls)) => (Some((listener, tls.clone())), Some((https, tls))),
        None => (None, None),
    };
    let rtmps_task = rtmps.map(|(listener, tls)| {
        let ingest = ingest.clone();
        let stop = ingest_stop.clone();
        tokio::spawn(async move { ingest.serve_rtmps(listener, tls, stop).await })
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
    })
    .merge(web::router(web::WebState {
        coordinator: coordinator.clone(),
        data_dir: data_dir.clone(),
        public_base_url: config
            .coordinator
            .public_base_url
            .clone()
            .filter(|url| !url.is_empty()),
        rtmp_port: rtmp_addr.port(),
        rtmps_port: rtmps_addr.map(|a| a.port()),
    }))
    .merge(ws.router());
    let https_task = https.map(|(listener, tls)| {
        tokio::spawn(ingest::https::serve_https(
            listener,
            tls,
            app.clone(),
            ingest.http_gate(),
            http_stop.clone(),
        ))
    });
    // Served with the peer address (per-IP limits, x-user-ip), a header read timeout and
    // connection limits (see ingest::https).
    let http_task = tokio::spawn(ingest::https::serve_http(
        listeners.http,
        app,
        ingest.http_gate(),
        http_stop.clone(),
    ));

    tracing::info!("web page: {http_base}/ (publish from the browser's camera or a test pattern, watch live and recorded streams)");
    tracing::info!("RTMP ingest listening on {rtmp_addr}");
    if let Some(addr) = rtmps_addr {
        tracing::info!(
            "RTMPS ingest listening on {addr}: rtmps://{host}:{}/{{channel}}",
            addr.port()
        );
    }
    tracing::info!(
        "publish over WebSocket: ws://{host}:{}/{{channel}}/{{key}}/publish",
        http_addr.port()
    );
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
    if let Some(task) = rtmps_task {
        match task.await {
            Ok(Err(err)) => tracing::warn!(%err, "RTMPS listener ended with an error"),
            Err(err) => tracing::warn!(%err, "RTMPS listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    ws.shutdown().await;
    encoder_stop.cancel();
    if let Err(err) = encoder_task.await {
        tracing::warn!(%err, "encoder task failed");
    }
    delivery_stop.cancel();
    let _ = delivery_task.await;
    http_stop.cancel();
    let _ = http_task.await;
    if let Some(task) = https_task {
        let _ = task.await;
    }
    commands_task.abort();
    tracing::info!("stopped");
    Ok(())
}
