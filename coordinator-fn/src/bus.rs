//! Signalling from the coordinator to ingest and encoder nodes. In process: one bounded
//! channel per node. Distributed: Redis pub/sub, one channel per node.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use contract::control::{EncoderCommand, IngestCommand};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("node {0} is not subscribed")]
    NoSuchNode(String),
    #[error("signalling unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn to_encoder(&self, encoder_id: &str, command: EncoderCommand) -> Result<(), BusError>;
    async fn to_ingest(&self, ingest_id: &str, command: IngestCommand) -> Result<(), BusError>;
}

/// How many commands may wait for a node before senders wait.
const QUEUE: usize = 256;

/// The in-process bus of the embedded mode.
#[derive(Debug, Default)]
pub struct LocalBus {
    encoders: Mutex<HashMap<String, mpsc::Sender<EncoderCommand>>>,
    ingests: Mutex<HashMap<String, mpsc::Sender<IngestCommand>>>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes an encoder node; a later subscription under the same ID replaces this one.
    pub fn subscribe_encoder(&self, id: &str) -> mpsc::Receiver<EncoderCommand> {
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.encoders).insert(id.to_owned(), tx);
        rx
    }

    /// Subscribes an ingest node.
    pub fn subscribe_ingest(&self, id: &str) -> mpsc::Receiver<IngestCommand> {
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.ingests).insert(id.to_owned(), tx);
        rx
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Bus for LocalBus {
    async fn to_encoder(&self, encoder_id: &str, command: EncoderCommand) -> Result<(), BusError> {
        let tx = lock(&self.encoders).get(encoder_id).cloned();
        let tx = tx.ok_or_else(|| BusError::NoSuchNode(encoder_id.to_owned()))?;
        tx.send(command)
            .await
            .map_err(|_| BusError::NoSuchNode(encoder_id.to_owned()))
    }

    async fn to_ingest(&self, ingest_id: &str, command: IngestCommand) -> Result<(), BusError> {
        let tx = lock(&self.ingests).get(ingest_id).cloned();
        let tx = tx.ok_or_else(|| BusError::NoSuchNode(ingest_id.to_owned()))?;
        tx.send(command)
            .await
            .map_err(|_| BusError::NoSuchNode(ingest_id.to_owned()))
    }
}
