//! Signalling over Redis: the coordinator publishes commands on a channel per node
//! (`{prefix}bus:encoder:{id}`, `{prefix}bus:ingest:{id}`); jobs are also stored
//! (`{prefix}jobs:{encoder}`) so an encoder that was not subscribed when a job was published
//! (restart, Redis failover) finds it when it subscribes again.

use std::time::Duration;

use async_trait::async_trait;
use contract::control::{EncoderCommand, IngestCommand};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError};
use crate::redis_state::RedisState;

/// The coordinator's side: publishes commands.
#[derive(Clone)]
pub struct RedisBus {
    state: RedisState,
}

impl RedisBus {
    pub fn new(state: RedisState) -> Self {
        RedisBus { state }
    }
}

fn unavailable(err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(err.to_string())
}

#[async_trait]
impl Bus for RedisBus {
    async fn to_encoder(&self, encoder_id: &str, command: EncoderCommand) -> Result<(), BusError> {
        let json = serde_json::to_string(&command).map_err(unavailable)?;
        if let EncoderCommand::Start(job) = &command {
            // Stored first: the job survives a missed message.
            self.state
                .store_job(encoder_id, &job.stream_id, &json)
                .await
                .map_err(unavailable)?;
        }
        let receivers = self
            .state
            .publish(&format!("bus:encoder:{encoder_id}"), &json)
            .await
            .map_err(unavailable)?;
        if receivers == 0 {
            match &command {
                EncoderCommand::Start(_) => tracing::warn!(
                    encoder = encoder_id,
                    "no encoder subscribed to its channel; it will find the job when it subscribes"
                ),
                // Not stored: the stream waiting for it ends, and the publisher gets a new one.
                EncoderCommand::Resume { .. } => {
                    return Err(BusError::NoSuchNode(encoder_id.to_owned()))
                }
                EncoderCommand::Stop { .. } => tracing::warn!(
                    encoder = encoder_id,
                    "no encoder subscribed to its channel: stop not delivered"
                ),
            }
        }
        Ok(())
    }

    async fn to_ingest(&self, ingest_id: &str, command: IngestCommand) -> Result<(), BusError> {
        let json = serde_json::to_string(&command).map_err(unavailable)?;
        let receivers = self
            .state
            .publish(&format!("bus:ingest:{ingest_id}"), &json)
            .await
            .map_err(unavailable)?;
        if receivers == 0 {
            return Err(BusError::NoSuchNode(ingest_id.to_owned()));
        }
        Ok(())
    }
}

/// Which kind of node subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Ingest,
    Encoder,
}

impl NodeKind {
    fn as_str(self) -> &'static str {
        match self {
            NodeKind::Ingest => "ingest",
            NodeKind::Encoder => "encoder",
        }
    }
}

/// The node's side: subscribes to its channel and forwards each command to `tx`, reconnecting
/// after any failure. An encoder also receives its stored jobs after every (re)subscription, so
/// it must ignore a `Start` for a stream it already runs. Returns when `shutdown` is cancelled or
/// `tx` is closed.
pub async fn subscribe<T: DeserializeOwned + Send + 'static>(
    redis_url: String,
    prefix: String,
    kind: NodeKind,
    node_id: String,
    tx: mpsc::Sender<T>,
    shutdown: CancellationToken,
) {
    let channel = format!("{prefix}bus:{}:{node_id}", kind.as_str());
    let mut delay = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = subscribe_once(&redis_url, &prefix, kind, &node_id, &channel, &tx) => result,
        };
        if tx.is_closed() {
            return;
        }
        match result {
            Ok(()) => delay = Duration::from_millis(250),
            Err(err) => {
                tracing::warn!(%channel, %err, retry_in_ms = delay.as_millis() as u64, "signalling subscription lost")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once<T: DeserializeOwned>(
    redis_url: &str,
    prefix: &str,
    kind: NodeKind,
    node_id: &str,
    channel: &str,
    tx: &mpsc::Sender<T>,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    tracing::info!(%channel, "subscribed to signalling");
    if kind == NodeKind::Encoder {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let jobs: Vec<String> = redis::cmd("HVALS")
            .arg(format!("{prefix}jobs:{node_id}"))
            .query_async(&mut conn)
            .await?;
        for job in jobs {
            forward(channel, job.as_bytes(), tx).await;
        }
    }
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        forward(channel, message.get_payload_bytes(), tx).await;
        if tx.is_closed() {
            return Ok(());
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "subscription closed",
    )))
}

async fn forward<T: DeserializeOwned>(channel: &str, payload: &[u8], tx: &mpsc::Sender<T>) {
    match serde_json::from_slice::<T>(payload) {
        Ok(command) => {
            let _ = tx.send(command).await;
        }
        Err(err) => tracing::warn!(%channel, %err, "ignoring a malformed signalling message"),
    }
}
