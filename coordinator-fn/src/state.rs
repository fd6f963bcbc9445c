//! The coordinator's state, behind one interface: in memory for the embedded mode, in Redis
//! when distributed. Every operation that must be atomic (channel lock + encoder choice, load
//! release, event leasing) is one call here, so each backend can make it atomic its own way.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use contract::control::{SourceKind, StreamOptions};
use contract::StreamId;
use serde::{Deserialize, Serialize};

use crate::webapp::WebAppEvent;

/// An encoder node and how many streams it may run (-1 = unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderNode {
    pub id: String,
    pub capacity: i64,
}

/// An encoder with its current load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderStatus {
    pub id: String,
    pub capacity: i64,
    pub load: u64,
}

impl EncoderStatus {
    pub fn has_room(&self) -> bool {
        self.capacity < 0 || (self.load as i64) < self.capacity
    }
}

/// A publish server (one per protocol listener of an ingest node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestNode {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub ssl: bool,
    pub server_type: SourceKind,
    /// Base URL of the node's internal media endpoint, reachable by encoders (distributed mode).
    #[serde(default)]
    pub internal_url: Option<String>,
}

/// A stream from its accepted publish until its encoder is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub stream_id: StreamId,
    pub channel: String,
    pub ingest_id: String,
    pub encoder_id: String,
    pub source: SourceKind,
    pub options: StreamOptions,
    pub started_at_ms: u64,
    /// The publisher is still connected (holds the channel).
    pub publishing: bool,
    /// SHA-256 (hex) of the publisher's channel and key ([`key_hash`]), never the key itself:
    /// a reconnect with the same key may resume the stream. Empty: the stream may not be
    /// resumed (closed by the commands API, or a record from an older version).
    #[serde(default)]
    pub key_hash: String,
    /// When the publisher left (ms since the epoch); 0 while it is there.
    #[serde(default)]
    pub publisher_left_at_ms: u64,
}

/// What a [`StreamRecord`] keeps of a publisher's key: SHA-256 of the channel and the key,
/// lowercase hex.
pub fn key_hash(channel: &str, key: &str) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"vstream-publish-key\0");
    hasher.update(channel.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A publisher that asks to continue a stream of its channel (the reconnect window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumption {
    pub channel: String,
    /// [`key_hash`] of the publisher's channel and key.
    pub key_hash: String,
    /// The ingest node (and protocol) the publisher is on now.
    pub ingest_id: String,
    pub source: SourceKind,
}

/// An event waiting for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub event: WebAppEvent,
    pub attempts: u32,
    pub queued_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("channel is held by stream {0}")]
    ChannelBusy(StreamId),
    #[error("no encoder has free capacity")]
    NoCapacity,
    #[error(transparent)]
    State(#[from] StateError),
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn register_encoder(&self, node: EncoderNode) -> Result<(), StateError>;
    async fn register_ingest(&self, node: IngestNode) -> Result<(), StateError>;
    async fn encoders(&self) -> Result<Vec<EncoderStatus>, StateError>;
    async fn ingests(&self) -> Result<Vec<IngestNode>, StateError>;

    /// The stream whose publisher holds `channel`, if any.
    async fn channel_holder(&self, channel: &str) -> Result<Option<StreamId>, StateError>;
    /// Atomically: takes the channel, picks the least loaded encoder with room, counts the
    /// load and stores the stream. `record.encoder_id` is filled in.
    async fn start_stream(&self, record: StreamRecord) -> Result<StreamRecord, StartError>;
    /// The publisher left: frees the channel (if that stream holds it), marks the stream not
    /// publishing and notes when it left (`now_ms`). With `linger_ms` > 0 the stream is the
    /// channel's candidate for [`StateStore::resume_stream`] during that time (unless its
    /// record has no key hash). Only the first report of a leaving counts.
    async fn publisher_gone(
        &self,
        channel: &str,
        stream_id: &StreamId,
        now_ms: u64,
        linger_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError>;
    /// Atomically: if the channel is free and the last stream whose publisher left it is
    /// still there (its encoder has not finished it), is not publishing, has the same key hash
    /// and its publisher left less than `window_ms` before `now_ms`, that stream is publishing
    /// again from `who.ingest_id` / `who.source` and holds the channel. Returns it, or `None`
    /// (then the caller starts a new stream).
    async fn resume_stream(
        &self,
        who: &Resumption,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError>;
    /// The stream may not be resumed any more (it is being closed): its key hash is
    /// cleared and it is no longer its channel's candidate.
    async fn forbid_resume(&self, stream_id: &StreamId) -> Result<(), StateError>;
    /// The stream is over: releases its encoder load and forgets it. Returns it the first time.
    async fn finish_stream(&self, stream_id: &StreamId)
        -> Result<Option<StreamRecord>, StateError>;
    async fn streams(&self) -> Result<Vec<StreamRecord>, StateError>;
    async fn stream(&self, stream_id: &StreamId) -> Result<Option<StreamRecord>, StateError>;

    /// Appends an event to its stream's queue.
    async fn push_event(&self, event: WebAppEvent, now_ms: u64) -> Result<(), StateError>;
    /// The first event of every stream queue that is due, leased until `now_ms + lease_ms` so
    /// that no other copy delivers it meanwhile.
    async fn lease_due_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<PendingEvent>, StateError>;
    /// Removes a delivered event (the next of its stream becomes due).
    async fn event_delivered(&self, event: &WebAppEvent) -> Result<(), StateError>;
    /// Schedules the next attempt of a failed delivery.
    async fn event_failed(
        &self,
        event: &WebAppEvent,
        next_attempt_ms: u64,
    ) -> Result<(), StateError>;
    /// Number of queued events and the age of the oldest, for metrics.
    async fn event_backlog(&self, now_ms: u64) -> Result<(usize, u64), StateError>;

    /// Nodes whose heartbeat expired, removed from the registry: (encoders, ingests). Each
    /// dead node is returned to one caller only. In process, nodes never expire.
    async fn reap_dead_nodes(&self) -> Result<(Vec<String>, Vec<String>), StateError> {
        Ok((Vec::new(), Vec::new()))
    }

    /// Moves a stream off encoder `from` to the least loaded other encoder with room.
    async fn move_stream(
        &self,
        stream_id: &StreamId,
        from: &str,
    ) -> Result<Option<StreamRecord>, StateError> {
        let _ = (stream_id, from);
        Ok(None)
    }
}

#[derive(Debug, Default)]
struct EventQueue {
    events: VecDeque<PendingEvent>,
    next_attempt_ms: u64,
}

#[derive(Debug, Default)]
struct Memory {
    encoders: BTreeMap<String, EncoderStatus>,
    ingests: BTreeMap<String, IngestNode>,
    channels: HashMap<String, StreamId>,
    /// Channel → the last stream whose publisher left it, and until when it may be resumed.
    lingering: HashMap<String, (StreamId, u64)>,
    streams: BTreeMap<StreamId, StreamRecord>,
    events: BTreeMap<StreamId, EventQueue>,
}

/// State in process memory: the embedded mode's backend.
#[derive(Debug, Default)]
pub struct MemoryState {
    inner: Mutex<Memory>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the whole coordinator would.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn register_encoder(&self, node: EncoderNode) -> Result<(), StateError> {
        let mut m = self.lock();
        let load = m
            .streams
            .values()
            .filter(|s| s.encoder_id == node.id)
            .count() as u64;
        m.encoders.insert(
            node.id.clone(),
            EncoderStatus {
                id: node.id,
                capacity: node.capacity,
                load,
            },
        );
        Ok(())
    }

    async fn register_ingest(&self, node: IngestNode) -> Result<(), StateError> {
        self.lock().ingests.insert(node.id.clone(), node);
        Ok(())
    }

    async fn encoders(&self) -> Result<Vec<EncoderStatus>, StateError> {
        Ok(self.lock().encoders.values().cloned().collect())
    }

    async fn ingests(&self) -> Result<Vec<IngestNode>, StateError> {
        Ok(self.lock().ingests.values().cloned().collect())
    }

    async fn channel_holder(&self, channel: &str) -> Result<Option<StreamId>, StateError> {
        Ok(self.lock().channels.get(channel).cloned())
    }

    async fn start_stream(&self, mut record: StreamRecord) -> Result<StreamRecord, StartError> {
        let mut m = self.lock();
        if let Some(holder) = m.channels.get(&record.channel) {
            return Err(StartError::ChannelBusy(holder.clone()));
        }
        let encoder = m
            .encoders
            .values_mut()
            .filter(|e| e.has_room())
            .min_by_key(|e| e.load)
            .ok_or(StartError::NoCapacity)?;
        encoder.load += 1;
        record.encoder_id = encoder.id.clone();
        record.publishing = true;
        record.publisher_left_at_ms = 0;
        m.channels
            .insert(record.channel.clone(), record.stream_id.clone());
        m.streams.insert(record.stream_id.clone(), record.clone());
        Ok(record)
    }

    async fn publisher_gone(
        &self,
        channel: &str,
        stream_id: &StreamId,
        now_ms: u64,
        linger_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut m = self.lock();
        if m.channels.get(channel) == Some(stream_id) {
            m.channels.remove(channel);
        }
        let Some(record) = m.streams.get_mut(stream_id) else {
            return Ok(None);
        };
        if !record.publishing {
            return Ok(Some(record.clone()));
        }
        record.publishing = false;
        record.publisher_left_at_ms = now_ms;
        let record = record.clone();
        if linger_ms > 0 && !record.key_hash.is_empty() {
            m.lingering.insert(
                channel.to_owned(),
                (stream_id.clone(), now_ms.saturating_add(linger_ms)),
            );
        }
        Ok(Some(record))
    }

    async fn resume_stream(
        &self,
        who: &Resumption,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut m = self.lock();
        if window_ms == 0 || who.key_hash.is_empty() || m.channels.contains_key(&who.channel) {
            return Ok(None);
        }
        let Some((stream_id, until)) = m.lingering.get(&who.channel).cloned() else {
            return Ok(None);
        };
        if now_ms >= until {
            return Ok(None);
        }
        let Some(record) = m.streams.get_mut(&stream_id) else {
            return Ok(None);
        };
        let resumable = !record.publishing
            && record.channel == who.channel
            && record.key_hash == who.key_hash
            && now_ms.saturating_sub(record.publisher_left_at_ms) < window_ms;
        if !resumable {
            return Ok(None);
        }
        record.publishing = true;
        record.publisher_left_at_ms = 0;
        record.ingest_id = who.ingest_id.clone();
        record.source = who.source;
        let record = record.clone();
        m.lingering.remove(&who.channel);
        m.channels.insert(who.channel.clone(), stream_id);
        Ok(Some(record))
    }

    async fn forbid_resume(&self, stream_id: &StreamId) -> Result<(), StateError> {
        let mut m = self.lock();
        let Some(record) = m.streams.get_mut(stream_id) else {
            return Ok(());
        };
        record.key_hash.clear();
        let channel = record.channel.clone();
        if m.lingering
            .get(&channel)
            .is_some_and(|(id, _)| id == stream_id)
        {
            m.lingering.remove(&channel);
        }
        Ok(())
    }

    async fn finish_stream(
        &self,
        stream_id: &StreamId,
    ) -> Result<Option<StreamRecord>, StateError> {
        let mut m = self.lock();
        let Some(record) = m.streams.remove(stream_id) else {
            return Ok(None);
        };
        if m.channels.get(&record.channel) == Some(stream_id) {
            m.channels.remove(&record.channel);
        }
        if m.lingering
            .get(&record.channel)
            .is_some_and(|(id, _)| id == stream_id)
        {
            m.lingering.remove(&record.channel);
        }
        if let Some(encoder) = m.encoders.get_mut(&record.encoder_id) {
            encoder.load = encoder.load.saturating_sub(1);
        }
        Ok(Some(record))
    }

    async fn streams(&self) -> Result<Vec<StreamRecord>, StateError> {
        Ok(self.lock().streams.values().cloned().collect())
    }

    async fn stream(&self, stream_id: &StreamId) -> Result<Option<StreamRecord>, StateError> {
        Ok(self.lock().streams.get(stream_id).cloned())
    }

    async fn push_event(&self, event: WebAppEvent, now_ms: u64) -> Result<(), StateError> {
        let mut m = self.lock();
        let queue = m.events.entry(event.stream_id.clone()).or_default();
        queue.events.push_back(PendingEvent {
            event,
            attempts: 0,
            queued_at_ms: now_ms,
        });
        Ok(())
    }

    async fn lease_due_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<PendingEvent>, StateError> {
        let mut m = self.lock();
        let mut due = Vec::new();
        for queue in m.events.values_mut() {
            if queue.next_attempt_ms <= now_ms {
                if let Some(head) = queue.events.front_mut() {
                    head.attempts += 1;
                    due.push(head.clone());
                    queue.next_attempt_ms = now_ms + lease_ms;
                }
            }
        }
        Ok(due)
    }

    async fn event_delivered(&self, event: &WebAppEvent) -> Result<(), StateError> {
        let mut m = self.lock();
        if let Some(queue) = m.events.get_mut(&event.stream_id) {
            if queue
                .events
                .front()
                .is_some_and(|p| p.event.event_id == event.event_id)
            {
                queue.events.pop_front();
                queue.next_attempt_ms = 0;
            }
            if queue.events.is_empty() {
                m.events.remove(&event.stream_id);
            }
        }
        Ok(())
    }

    async fn event_failed(
        &self,
        event: &WebAppEvent,
        next_attempt_ms: u64,
    ) -> Result<(), StateError> {
        if let Some(queue) = self.lock().events.get_mut(&event.stream_id) {
            queue.next_attempt_ms = next_attempt_ms;
        }
        Ok(())
    }

    async fn event_backlog(&self, now_ms: u64) -> Result<(usize, u64), StateError> {
        let m = self.lock();
        let depth = m.events.values().map(|q| q.events.len()).sum();
        let oldest = m
            .events
            .values()
            .filter_map(|q| q.events.front())
            .map(|p| now_ms.saturating_sub(p.queued_at_ms))
            .max()
            .unwrap_or(0);
        Ok((depth, oldest))
    }
}
