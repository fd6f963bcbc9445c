//! `vstream`: the whole system in one process on embedded defaults.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use vstream::{Config, Listeners};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.log.init();
    let rtmp_addr = SocketAddr::new(config.bind_address, config.rtmp_port);
    let http_addr = SocketAddr::new(config.bind_address, config.http_port);
    let listeners = Listeners {
        rtmp: tokio::net::TcpListener::bind(rtmp_addr)
            .await
            .with_context(|| format!("cannot listen for RTMP on {rtmp_addr} (RTMP_PORT)"))?,
        http: tokio::net::TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {http_addr} (HTTP_PORT)"))?,
    };
    let shutdown = CancellationToken::new();
    coordinator_fn::telemetry::handle_signals(shutdown.clone());
    vstream::run(config, listeners, shutdown).await
}
