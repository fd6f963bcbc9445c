//! `coordinator-fn`: the stateless coordinator, as a plain HTTP server or an AWS Lambda
//! function (when `AWS_LAMBDA_RUNTIME_API` is set).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use coordinator_fn::service::{self, ServiceArgs};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = ServiceArgs::parse();
    args.log.init();
    if let Some(arn) = args.secrets_arn.clone().filter(|a| !a.is_empty()) {
        let secrets = coordinator_fn::secrets::fetch(&arn).await?;
        coordinator_fn::secrets::apply(&mut args, &secrets);
        tracing::info!(
            count = secrets.len(),
            "secret settings read from SECRETS_ARN"
        );
    }
    let (coordinator, keys) = service::build(&args).await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let router = service::router(coordinator.clone(), keys, true);
        return coordinator_fn::lambda::run(router, coordinator)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let addr = SocketAddr::new(args.bind_address, args.http_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HTTP_PORT)"))?;
    let shutdown = CancellationToken::new();
    coordinator_fn::telemetry::handle_signals(shutdown.clone());
    service::serve(listener, coordinator, keys, shutdown).await
}
