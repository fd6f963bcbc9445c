//! `encoder`: an encoder node of the distributed mode. Takes jobs from its Redis channel (and
//! the jobs stored for it), pulls each stream from its ingest, runs one ffmpeg per stream and
//! uploads segments and playlists; reports to the coordinator over HTTP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use contract::control::EncoderCommand;
use contract::token::Component;
use coordinator_fn::client::HttpControlPlane;
use coordinator_fn::internal::Heartbeat;
use coordinator_fn::redis_bus::{self, NodeKind};
use coordinator_fn::state::EncoderNode;
use coordinator_fn::telemetry;
use encoder::settings::{EncoderArgs, StorageArgs};
use ingest::media_http::HttpMedia;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "encoder",
    version,
    about = "Encoder node (distributed mode): one ffmpeg per stream, HLS to storage"
)]
struct Args {
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTP port for /healthz and /metrics.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    #[command(flatten)]
    node: coordinator_fn::client::NodeArgs,
    #[command(flatten)]
    log: coordinator_fn::telemetry::LogArgs,
    #[command(flatten)]
    encoder: EncoderArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let node_id = args.node.node_id("encoder").context("invalid NODE_ID")?;
    let keys = args.node.keys();
    let control = HttpControlPlane::new(
        &args.node.control_base_url,
        Component::Encoder,
        &node_id,
        keys.clone(),
    );
    let store = args.storage.build().await?;
    let encoder = encoder::Encoder::new(
        args.encoder.to_config(&node_id),
        store,
        Arc::new(HttpMedia::new(keys, &node_id)),
        Arc::new(control.clone()),
    );
    let http_addr = SocketAddr::new(args.bind_address, args.http_port);
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;

    let shutdown = CancellationToken::new();
    telemetry::handle_signals(shutdown.clone());
    let jobs_stop = CancellationToken::new();
    let stop = CancellationToken::new();

    let node = Heartbeat::Encoder(EncoderNode {
        id: node_id.clone(),
        capacity: args.encoder.server_capacity,
    });
    let heartbeat = tokio::spawn({
        let control = control.clone();
        let stop = stop.clone();
        async move { control.heartbeat_loop(node, stop).await }
    });
    let (tx, commands) = tokio::sync::mpsc::channel::<EncoderCommand>(64);
    let subscription = tokio::spawn(redis_bus::subscribe(
        args.node.redis_url(),
        args.node.redis_key_prefix.clone(),
        NodeKind::Encoder,
        node_id.clone(),
        tx,
        stop.clone(),
    ));
    let jobs = tokio::spawn({
        let encoder = encoder.clone();
        let stop = jobs_stop.clone();
        async move { encoder.run(commands, stop).await }
    });
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get({
            let encoder = encoder.clone();
            move || async move {
                format!(
                    "# HELP vstream_encoder_jobs Streams this encoder is running.\n# TYPE vstream_encoder_jobs gauge\nvstream_encoder_jobs {}\n{}",
                    encoder.active_jobs().len(),
                    encoder::render_prometheus(&encoder::storage_metrics())
                )
            }
        }),
    );
    let http_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    tracing::info!(node = %node_id, capacity = args.encoder.server_capacity, "encoder running");

    shutdown.cancelled().await;
    // Every running stream finishes: segment in progress, final playlists, Closed reported.
    jobs_stop.cancel();
    let _ = jobs.await;
    stop.cancel();
    let _ = tokio::join!(heartbeat, subscription, http_task);
    tracing::info!("stopped");
    Ok(())
}
