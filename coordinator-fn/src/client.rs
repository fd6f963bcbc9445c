//! The coordinator as ingest and encoder nodes reach it over HTTP: a [`ControlPlane`] that
//! calls `/internal/*` with a fresh JWT per request.

use std::time::Duration;

use async_trait::async_trait;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, PublishGrant, PublishRefusal, PublishRequest,
};
use contract::token::{Component, TokenKeys};
use contract::StreamId;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::internal::{Heartbeat, PublishAnswer, PublishEnded};

/// How often nodes refresh their registration (the registration lives three times as long).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HttpControlPlane {
    base_url: String,
    component: Component,
    node_id: String,
    keys: TokenKeys,
    http: reqwest::Client,
}

impl HttpControlPlane {
    /// `base_url` is `CONTROL_BASE_URL` (the coordinator's HTTP base URL).
    pub fn new(base_url: &str, component: Component, node_id: &str, keys: TokenKeys) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        HttpControlPlane {
            base_url: base_url.trim_end_matches('/').to_owned(),
            component,
            node_id: node_id.to_owned(),
            keys,
            http,
        }
    }

    async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ControlError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.keys.sign(self.component, &self.node_id))
            .json(body)
            .send()
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else if status.is_client_error() {
            Err(ControlError::Refused(format!("{path} answered {status}")))
        } else {
            Err(ControlError::Unavailable(format!(
                "{path} answered {status}"
            )))
        }
    }

    /// Like `post`, retried with backoff while the coordinator is unavailable (at most
    /// `attempts` times).
    async fn post_retried<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        attempts: u32,
    ) -> Result<(), ControlError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.post(path, body).await {
                Ok(_) => return Ok(()),
                Err(ControlError::Unavailable(err)) if attempt < attempts => {
                    tracing::warn!(path, attempt, %err, "coordinator unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Registers the node now and every [`HEARTBEAT_INTERVAL`] until `shutdown`.
    pub async fn heartbeat_loop(&self, node: Heartbeat, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            match self.post("/internal/heartbeat", &node).await {
                Ok(_) if failing => {
                    tracing::info!("registered with the coordinator again");
                    failing = false;
                }
                Ok(_) => {}
                Err(err) if !failing => {
                    tracing::warn!(%err, "heartbeat failed; running streams go on");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            }
        }
    }
}

#[async_trait]
impl ControlPlane for HttpControlPlane {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        let response = self
            .post("/internal/publish", &request)
            .await
            .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
        match response.json::<PublishAnswer>().await {
            Ok(PublishAnswer::Granted(grant)) => Ok(grant),
            Ok(PublishAnswer::Refused(refusal)) => Err(refusal),
            Err(err) => Err(PublishRefusal::Unavailable(format!(
                "unreadable answer: {err}"
            ))),
        }
    }

    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError> {
        let body = PublishEnded {
            channel: channel.to_owned(),
            stream_id: stream_id.clone(),
        };
        self.post_retried("/internal/publish-ended", &body, 8).await
    }

    async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
        self.post_retried("/internal/encoder-event", &event, 8)
            .await
    }
}

/// What every ingest and encoder node is told about itself and the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// This node's ID (default: {kind}-{hostname}-{pid}).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// The coordinator's HTTP base URL.
    #[arg(long, env = "CONTROL_BASE_URL")]
    pub control_base_url: String,
    /// Shared secret of the internal calls.
    #[arg(long, env = "CONTROL_SECRET", hide_env_values = true)]
    pub control_secret: String,
    /// Redis carrying the coordinator's commands.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Password of Redis AUTH, when REDIS_URL carries none (ElastiCache).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "vs:")]
    pub redis_key_prefix: String,
}

impl NodeArgs {
    /// The configured node ID, or a default one for a node of `kind`; checked like a channel.
    pub fn node_id(&self, kind: &str) -> Result<String, contract::IdError> {
        let id = self
            .node_id
            .clone()
            .unwrap_or_else(|| crate::telemetry::default_node_id(kind));
        contract::validate_id("NODE_ID", &id, 128)?;
        Ok(id)
    }

    /// `REDIS_URL` with `REDIS_PASSWORD` in it.
    pub fn redis_url(&self) -> String {
        crate::redis_state::url_with_password(&self.redis_url, self.redis_password.as_deref())
    }

    pub fn keys(&self) -> TokenKeys {
        TokenKeys::new(&self.control_secret)
    }
}
