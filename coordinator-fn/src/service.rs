//! The `coordinator-fn` service: settings, the full router (commands API, internal API,
//! `/healthz`, `/metrics`) and how it is served (plain server or AWS Lambda).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use contract::token::TokenKeys;
use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorArgs;
use crate::coordinator::Coordinator;
use crate::redis_bus::RedisBus;
use crate::redis_state::{RedisState, RedisStateConfig};

/// Settings of the `coordinator-fn` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "coordinator-fn",
    version,
    about = "Stateless coordinator on Redis: publish decisions, web-app callbacks, commands API. Serves HTTP, or runs as an AWS Lambda function when AWS_LAMBDA_RUNTIME_API is set."
)]
pub struct ServiceArgs {
    /// Redis holding the state and carrying the signalling (`redis://` or `rediss://`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Password of Redis AUTH, when REDIS_URL carries none (ElastiCache).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "vs:")]
    pub redis_key_prefix: String,
    /// Seconds a node stays registered after its last heartbeat (nodes beat every 5 s).
    #[arg(long, env = "NODE_TTL_SECONDS", default_value_t = 15)]
    pub node_ttl_seconds: u64,
    /// Shared secret of the internal calls (HS256 JWT), at least 16 characters.
    #[arg(long, env = "CONTROL_SECRET", hide_env_values = true)]
    pub control_secret: Option<String>,
    /// ARN of a Secrets Manager secret holding secret settings by name (JSON object), read at
    /// start; values set in the environment win.
    #[arg(long, env = "SECRETS_ARN")]
    pub secrets_arn: Option<String>,
    /// Ladder used when no KEY_VERIFICATION_URL is set.
    #[arg(long, env = "DEFAULT_RESOLUTIONS", default_value = "ORIGINAL")]
    pub default_resolutions: String,
    /// Address of the HTTP listener (server mode).
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port of the HTTP listener (server mode).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    #[command(flatten)]
    pub log: crate::telemetry::LogArgs,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

async fn metrics(
    State(coordinator): State<Coordinator>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        coordinator.metrics().await,
    )
}

/// The whole HTTP surface of the coordinator.
pub fn router(coordinator: Coordinator, keys: TokenKeys, inline_delivery: bool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(coordinator.clone())
        .merge(crate::commands::router(coordinator.clone()))
        .merge(crate::internal::router(coordinator, keys, inline_delivery))
}

/// Connects to Redis and builds the coordinator.
pub async fn build(args: &ServiceArgs) -> anyhow::Result<(Coordinator, TokenKeys)> {
    let control_secret = args.control_secret.as_deref().unwrap_or("");
    if control_secret.len() < 16 {
        anyhow::bail!("CONTROL_SECRET must be set, with at least 16 characters");
    }
    let config = args
        .coordinator
        .to_config(Some(&args.default_resolutions))
        .context("invalid settings")?;
    let redis_url =
        crate::redis_state::url_with_password(&args.redis_url, args.redis_password.as_deref());
    let state = RedisState::connect(
        &redis_url,
        RedisStateConfig {
            prefix: args.redis_key_prefix.clone(),
            node_ttl: Duration::from_secs(args.node_ttl_seconds.max(2)),
        },
    )
    .await
    .context("cannot connect to REDIS_URL")?;
    let bus = Arc::new(RedisBus::new(state.clone()));
    Ok((
        Coordinator::new(config, Arc::new(state), bus),
        TokenKeys::new(control_secret),
    ))
}

/// Serves until `shutdown`, running maintenance on a timer meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: Coordinator,
    keys: TokenKeys,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let maintenance = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = shutdown.clone();
        async move { coordinator.run_maintenance(stop).await }
    });
    let app = router(coordinator, keys, false);
    tracing::info!("coordinator listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    let _ = maintenance.await;
    Ok(())
}
