//! `ingest`: a publish server node of the distributed mode. Takes RTMP and WebSocket
//! publishers, asks the
//! coordinator (`CONTROL_BASE_URL`) whether each may publish, serves the accepted streams to
//! encoders on its internal media endpoint, and obeys kill commands from Redis.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use contract::control::{IngestCommand, SourceKind};
use contract::token::Component;
use coordinator_fn::client::HttpControlPlane;
use coordinator_fn::internal::Heartbeat;
use coordinator_fn::redis_bus::{self, NodeKind};
use coordinator_fn::state::IngestNode;
use coordinator_fn::telemetry;
use ingest::{Ingest, IngestConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "ingest",
    version,
    about = "Publish server node (distributed mode): RTMP, and WebSocket on the HTTP port"
)]
struct Args {
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    #[arg(long, env = "RTMP_PORT", default_value_t = 1935)]
    rtmp_port: u16,
    /// HTTP port: WebSocket publishing (`/{channel}/{key}/publish`), /healthz, /metrics and the
    /// internal media endpoint encoders pull from.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Host publishers use to reach this node (reported in /commands/report).
    #[arg(long, env = "EXTERNAL_IP")]
    external_ip: Option<String>,
    /// Port publishers use (default: RTMP_PORT).
    #[arg(long, env = "EXTERNAL_PORT")]
    external_port: Option<u16>,
    /// Publishers connect with TLS (a load balancer terminates it).
    #[arg(long, env = "EXTERNAL_SSL", default_value = "false", action = clap::ArgAction::Set, value_parser = contract::settings::parse_bool)]
    external_ssl: bool,
    /// Base URL encoders use to reach this node's HTTP port (default: this host's address).
    #[arg(long, env = "INTERNAL_BASE_URL")]
    internal_base_url: Option<String>,
    #[arg(long, env = "ID_MAX_LENGTH", default_value_t = contract::DEFAULT_ID_MAX_LENGTH)]
    id_max_length: usize,
    /// Seconds without data after which a publisher is considered gone.
    #[arg(long, env = "PUBLISH_IDLE_TIMEOUT_SECONDS", default_value_t = 10)]
    publish_idle_timeout_seconds: u64,
    /// PEM certificate chain for RTMPS and HTTPS/wss (with SSL_KEY; reloaded when the files
    /// change). Unset: no TLS listeners (a load balancer may terminate TLS instead).
    #[arg(long, env = "SSL_CERT")]
    ssl_cert: Option<std::path::PathBuf>,
    /// PEM private key of SSL_CERT.
    #[arg(long, env = "SSL_KEY")]
    ssl_key: Option<std::path::PathBuf>,
    /// RTMPS port (when SSL_CERT and SSL_KEY are set).
    #[arg(long, env = "SSL_PORT", default_value_t = 1936)]
    ssl_port: u16,
    /// HTTPS / wss:// port (when SSL_CERT and SSL_KEY are set).
    #[arg(long, env = "HTTPS_PORT", default_value_t = 8443)]
    https_port: u16,
    #[command(flatten)]
    node: coordinator_fn::client::NodeArgs,
    #[command(flatten)]
    log: coordinator_fn::telemetry::LogArgs,
    #[command(flatten)]
    ws: ingest::ws::WsArgs,
    #[command(flatten)]
    limits: ingest::LimitArgs,
}

/// This host's address as other hosts see it: the bind address when it is specific, else the
/// first non-loopback address the host name resolves to.
async fn host_address(bind: IpAddr, port: u16) -> String {
    if !bind.is_unspecified() {
        return bind.to_string();
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    if let Ok(addrs) = tokio::net::lookup_host((host.trim(), port)).await {
        if let Some(addr) = addrs.map(|a| a.ip()).find(|ip| !ip.is_loopback()) {
            return addr.to_string();
        }
    }
    "127.0.0.1".to_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let node_id = args.node.node_id("ingest").context("invalid NODE_ID")?;
    let keys = args.node.keys();
    let control = HttpControlPlane::new(
        &args.node.control_base_url,
        Component::Ingest,
        &node_id,
        keys.clone(),
    );
    let mut ingest_config = IngestConfig {
        node_id: node_id.clone(),
        id_max_length: args.id_max_length,
        idle_timeout: Duration::from_secs(args.publish_idle_timeout_seconds.max(1)),
        ..IngestConfig::default()
    };
    args.limits.apply(&args.ws, &mut ingest_config);
    let ingest = Ingest::new(ingest_config, Arc::new(control.clone()));

    let rtmp_addr = SocketAddr::new(args.bind_address, args.rtmp_port);
    let http_addr = SocketAddr::new(args.bind_address, args.http_port);
    let rtmp = tokio::net::TcpListener::bind(rtmp_addr)
        .await
        .with_context(|| format!("cannot listen for RTMP on {rtmp_addr}"))?;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    let tls = match (&args.ssl_cert, &args.ssl_key) {
        (Some(cert), Some(key)) => {
            let tls = ingest::TlsCert::load(cert, key).context("invalid SSL_CERT / SSL_KEY")?;
            let rtmps_addr = SocketAddr::new(args.bind_address, args.ssl_port);
            let https_addr = SocketAddr::new(args.bind_address, args.https_port);
            let rtmps = tokio::net::TcpListener::bind(rtmps_addr)
                .await
                .with_context(|| format!("cannot listen for RTMPS on {rtmps_addr}"))?;
            let https = tokio::net::TcpListener::bind(https_addr)
                .await
                .with_context(|| format!("cannot listen for HTTPS on {https_addr}"))?;
            Some((tls, rtmps, https))
        }
        (None, None) => None,
        _ => anyhow::bail!("set both SSL_CERT and SSL_KEY (or neither)"),
    };
    let host = host_address(args.bind_address, args.http_port).await;
    let internal_url = args.internal_base_url.clone().unwrap_or_else(|| {
        format!(
            "http://{host}:{}",
            http.local_addr()
                .map(|a| a.port())
                .unwrap_or(args.http_port)
        )
    });

    let shutdown = CancellationToken::new();
    telemetry::handle_signals(shutdown.clone());
    let rtmp_stop = CancellationToken::new();
    let stop = CancellationToken::new();

    // Two publish servers: RTMP, and WebSocket on the HTTP port (its own entry in the report).
    // Both share this node's ID for publishes and kill commands.
    let public_ip = args.external_ip.clone().unwrap_or_else(|| host.clone());
    let rtmp_node = Heartbeat::Ingest(IngestNode {
        id: node_id.clone(),
        ip: public_ip.clone(),
        port: args.external_port.unwrap_or(args.rtmp_port),
        ssl: args.external_ssl,
        server_type: SourceKind::Rtmp,
        internal_url: Some(internal_url.clone()),
    });
    let ws_node = Heartbeat::Ingest(IngestNode {
        id: format!("{node_id}-ws"),
        ip: public_ip,
        port: args.http_port,
        ssl: false,
        server_type: SourceKind::Ws,
        internal_url: None,
    });
    // Each registration speaks for itself: the coordinator only accepts a node's own heartbeat.
    let ws_control = HttpControlPlane::new(
        &args.node.control_base_url,
        Component::Ingest,
        &format!("{node_id}-ws"),
        keys.clone(),
    );
    let heartbeats =
        [(control.clone(), rtmp_node), (ws_control, ws_node)].map(|(control, node)| {
            let stop = stop.clone();
            tokio::spawn(async move { control.heartbeat_loop(node, stop).await })
        });
    let (tx, mut commands) = tokio::sync::mpsc::channel::<IngestCommand>(64);
    let subscription = tokio::spawn(redis_bus::subscribe(
        args.node.redis_url(),
        args.node.redis_key_prefix.clone(),
        NodeKind::Ingest,
        node_id.clone(),
        tx,
        stop.clone(),
    ));
    tokio::spawn({
        let ingest = ingest.clone();
        async move {
            while let Some(command) = commands.recv().await {
                ingest.handle_command(command);
            }
        }
    });
    let rtmp_task = tokio::spawn({
        let ingest = ingest.clone();
        let stop = rtmp_stop.clone();
        async move { ingest.serve_rtmp(rtmp, stop).await }
    });
    let ws = ingest::ws::WsServer::new(ingest.clone(), args.limits.ws_config(&args.ws));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get({
                let ingest = ingest.clone();
                move || async move {
                    format!(
                        "# HELP vstream_publishers Publishers connected to this ingest.\n# TYPE vstream_publishers gauge\nvstream_publishers {}\n{}",
                        ingest.publishers().len(),
                        ingest.render_metrics()
                    )
                }
            }),
        )
        .merge(ingest::media_http::router(ingest.clone(), keys))
        .merge(ws.router());
    let tls_tasks = tls.map(|(tls, rtmps, https)| {
        tracing::info!(rtmps = ?rtmps.local_addr().ok(), https = ?https.local_addr().ok(), "TLS listeners");
        let rtmps_task = tokio::spawn({
            let ingest = ingest.clone();
            let tls = tls.clone();
            let stop = rtmp_stop.clone();
            async move { ingest.serve_rtmps(rtmps, tls, stop).await }
        });
        let https_task = tokio::spawn(ingest::https::serve_https(
            https,
            tls,
            app.clone(),
            ingest.http_gate(),
            stop.clone(),
        ));
        (rtmps_task, https_task)
    });
    // Served with a header read timeout and connection limits (see ingest::https).
    let http_task = tokio::spawn(ingest::https::serve_http(
        http,
        app,
        ingest.http_gate(),
        stop.clone(),
    ));
    tracing::info!(node = %node_id, %rtmp_addr, %http_addr, internal_url = %internal_url, "ingest running");

    shutdown.cancelled().await;
    // Publishers get a clean end (publish_ended reaches the coordinator), then the rest stops.
    rtmp_stop.cancel();
    if let Ok(Err(err)) = rtmp_task.await {
        tracing::warn!(%err, "RTMP listener ended with an error");
    }
    ws.shutdown().await;
    stop.cancel();
    if let Some((rtmps_task, https_task)) = tls_tasks {
        let _ = tokio::join!(rtmps_task, https_task);
    }
    let [rtmp_beat, ws_beat] = heartbeats;
    let _ = tokio::join!(rtmp_beat, ws_beat, subscription, http_task);
    tracing::info!("stopped");
    Ok(())
}
