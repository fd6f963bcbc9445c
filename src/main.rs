//! `vstream`: the whole system in one process on embedded defaults.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use vstream::{Config, Listeners};

fn init_tracing(config: &Config) {
    let default = if config.log_debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hyper=info,reqwest=info,h2=info,rustls=info,tower_http=info"
        ))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log_format.eq_ignore_ascii_case("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn handle_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!(
                    "signal received: finishing streams (send it again to stop at once)"
                );
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: stopping at once");
                std::process::exit(130);
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config);
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
    handle_signals(shutdown.clone());
    vstream::run(config, listeners, shutdown).await
}
