//! The coordinator's decisions: who may publish, which encoder runs a stream, what the web app
//! is told and when. Stateless itself: everything lives in the [`StateStore`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use contract::control::{
    ControlError, ControlPlane, EncoderCommand, EncoderEvent, EncoderJob, IngestCommand,
    PublishGrant, PublishRefusal, PublishRequest,
};
use contract::{validate_id, StreamId};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::CoordinatorConfig;
use crate::state::{
    key_hash, EncoderNode, IngestNode, Resumption, StartError, StateError, StateStore, StreamRecord,
};
use crate::webapp::{Verification, WebApp, WebAppEvent, WebAppEventKind};

/// How long a delivery attempt keeps an event from being picked up by another round.
const DELIVERY_LEASE_MS: u64 = 30_000;
/// Longest pause between two attempts to deliver an event.
const MAX_RETRY_DELAY_MS: u64 = 15_000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `GET /commands/capacity`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    pub load: u64,
    /// -1 when any encoder is unlimited.
    pub capacity: i64,
    pub encoder_count: usize,
}

/// `GET /commands/report`
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub active_streams: Vec<ReportStream>,
    pub streaming_servers: Vec<ReportServer>,
    pub encoders: Vec<ReportEncoder>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportStream {
    pub channel: String,
    pub stream_id: String,
    pub stream_server: String,
    pub encoder: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportServer {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub ssl: bool,
    pub server_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportEncoder {
    pub id: String,
    pub capacity: i64,
    pub load: u64,
}

/// What one maintenance call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceReport {
    pub dead_nodes: usize,
    pub streams_ended: usize,
    pub publishers_released: usize,
    pub events_delivered: usize,
    pub event_attempts_failed: usize,
}

#[derive(Debug, Default)]
struct Counters {
    publishes_accepted: AtomicU64,
    publishes_refused: AtomicU64,
    publishes_resumed: AtomicU64,
    events_delivered: AtomicU64,
    event_attempts_failed: AtomicU64,
}

struct Inner {
    config: CoordinatorConfig,
    state: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    webapp: WebApp,
    wake: Notify,
    counters: Counters,
}

/// The coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

/// A `close` command that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error(transparent)]
    State(#[from] StateError),
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig, state: Arc<dyn StateStore>, bus: Arc<dyn Bus>) -> Self {
        if config.key_verification_url.is_none() {
            tracing::warn!(
                "KEY_VERIFICATION_URL is not set: every channel and key may publish (resolutions {})",
                config
                    .default_options
                    .resolutions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        if config.commands_auth.is_none() {
            tracing::warn!(
                "COMMANDS_API_AUTH is not set: the commands API is open to anyone who can reach it"
            );
        }
        Coordinator {
            inner: Arc::new(Inner {
                config,
                state,
                bus,
                webapp: WebApp::new(),
                wake: Notify::new(),
                counters: Counters::default(),
            }),
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    pub async fn register_encoder(&self, node: EncoderNode) -> Result<(), StateError> {
        self.inner.state.register_encoder(node).await
    }

    pub async fn register_ingest(&self, node: IngestNode) -> Result<(), StateError> {
        self.inner.state.register_ingest(node).await
    }

    pub async fn capacity(&self) -> Result<Capacity, StateError> {
        let encoders = self.inner.state.encoders().await?;
        let unlimited = encoders.iter().any(|e| e.capacity < 0);
        Ok(Capacity {
            load: encoders.iter().map(|e| e.load).sum(),
            capacity: if unlimited {
                -1
            } else {
                encoders.iter().map(|e| e.capacity).sum()
            },
            encoder_count: encoders.len(),
        })
    }

    pub async fn report(&self) -> Result<Report, StateError> {
        let streams = self.inner.state.streams().await?;
        let ingests = self.inner.state.ingests().await?;
        let encoders = self.inner.state.encoders().await?;
        Ok(Report {
            active_streams: streams
                .into_iter()
                .map(|s| ReportStream {
                    channel: s.channel,
                    stream_id: s.stream_id.to_string(),
                    stream_server: s.ingest_id,
                    encoder: s.encoder_id,
                })
                .collect(),
            streaming_servers: ingests
                .into_iter()
                .map(|i| ReportServer {
                    id: i.id,
                    ip: i.ip,
                    port: i.port,
                    ssl: i.ssl,
                    server_type: i.server_type.as_str().to_owned(),
                })
                .collect(),
            encoders: encoders
                .into_iter()
                .map(|e| ReportEncoder {
                    id: e.id,
                    capacity: e.capacity,
                    load: e.load,
                })
                .collect(),
        })
    }

    /// Disconnects the publisher of `channel` (only stream `stream_id` when given); the stream
    /// then ends normally. A closed stream is not resumed by a reconnect, and one whose
    /// publisher already left (waiting in its reconnect window) ends at once. Returns how many
    /// streams were asked to end.
    pub async fn close(
        &self,
        channel: &str,
        stream_id: Option<&StreamId>,
    ) -> Result<usize, CloseError> {
        let streams = self.inner.state.streams().await?;
        let mut count = 0;
        for stream in streams
            .iter()
            .filter(|s| s.channel == channel && stream_id.is_none_or(|id| *id == s.stream_id))
        {
            if !stream.publishing && stream.key_hash.is_empty() {
                // Already closed, or ending without a reconnect window.
                continue;
            }
            // First, so that the publisher's end (which follows the kill) does not open a
            // reconnect window.
            self.inner.state.forbid_resume(&stream.stream_id).await?;
            let mut asked = false;
            if stream.publishing {
                let command = IngestCommand::Kill {
                    channel: channel.to_owned(),
                    stream_id: Some(stream.stream_id.clone()),
                };
                match self.inner.bus.to_ingest(&stream.ingest_id, command).await {
                    Ok(()) => asked = true,
                    Err(err) => {
                        tracing::warn!(channel, stream_id = %stream.stream_id, ingest = %stream.ingest_id, %err, "close: the ingest node did not take the command");
                    }
                }
            }
            if self.inner.config.reconnect_window > Duration::ZERO {
                // The encoder would otherwise wait out the reconnect window after the media
                // ends before it closes the playlists.
                let stop = EncoderCommand::Stop {
                    stream_id: stream.stream_id.clone(),
                };
                match self.inner.bus.to_encoder(&stream.encoder_id, stop).await {
                    Ok(()) => asked = true,
                    Err(err) => {
                        tracing::warn!(channel, stream_id = %stream.stream_id, encoder = %stream.encoder_id, %err, "close: the encoder did not take the stop command");
                    }
                }
            }
            if asked {
                count += 1;
            }
        }
        tracing::info!(channel, stream_id = ?stream_id.map(ToString::to_string), count, "close command");
        Ok(count)
    }

    /// The internal media URL of `stream_id` on ingest node `ingest_id` (distributed mode).
    async fn media_url(&self, ingest_id: &str, stream_id: &StreamId) -> Option<String> {
        match self.inner.state.ingests().await {
            Ok(ingests) => ingests
                .into_iter()
                .find(|i| i.id == ingest_id)
                .and_then(|i| i.internal_url)
                .map(|base| {
                    format!(
                        "{}/internal/media/{}",
                        base.trim_end_matches('/'),
                        stream_id
                    )
                }),
            Err(_) => None,
        }
    }

    fn reconnect_window_ms(&self) -> u64 {
        u64::try_from(self.inner.config.reconnect_window.as_millis()).unwrap_or(u64::MAX)
    }

    /// The reconnect window: continues the channel's last stream if this publisher left it
    /// moments ago with the same key. `None`: start a new stream.
    async fn try_resume(
        &self,
        request: &PublishRequest,
        key_hash: &str,
    ) -> Result<Option<PublishGrant>, StateError> {
        let window_ms = self.reconnect_window_ms();
        if window_ms == 0 {
            return Ok(None);
        }
        let who = Resumption {
            channel: request.channel.clone(),
            key_hash: key_hash.to_owned(),
            ingest_id: request.ingest_id.clone(),
            source: request.source,
        };
        let Some(record) = self
            .inner
            .state
            .resume_stream(&who, now_ms(), window_ms)
            .await?
        else {
            return Ok(None);
        };
        let resume = EncoderCommand::Resume {
            stream_id: record.stream_id.clone(),
            ingest_id: record.ingest_id.clone(),
            source: record.source,
            media_url: self.media_url(&record.ingest_id, &record.stream_id).await,
        };
        if let Err(err) = self.inner.bus.to_encoder(&record.encoder_id, resume).await {
            // Its encoder is gone: that stream is over, and this publisher starts a new one.
            tracing::warn!(
                channel = %record.channel, stream_id = %record.stream_id, encoder = %record.encoder_id, %err,
                "could not hand the reconnected publisher to its stream's encoder: ending that stream, starting a new one"
            );
            if self
                .inner
                .state
                .finish_stream(&record.stream_id)
                .await?
                .is_some()
            {
                self.push_event(&record.channel, &record.stream_id, WebAppEventKind::Closed)
                    .await
                    .map_err(|e| StateError::Unavailable(e.to_string()))?;
            }
            return Ok(None);
        }
        self.inner
            .counters
            .publishes_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .counters
            .publishes_resumed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            channel = %record.channel, stream_id = %record.stream_id, encoder = %record.encoder_id,
            ingest = %record.ingest_id, user_ip = %request.user_ip,
            "publish accepted: the publisher reconnected within the window, the stream goes on"
        );
        Ok(Some(PublishGrant {
            stream_id: record.stream_id,
            encoder_id: record.encoder_id,
        }))
    }

    async fn push_event(
        &self,
        channel: &str,
        stream_id: &StreamId,
        kind: WebAppEventKind,
    ) -> Result<(), ControlError> {
        let event = WebAppEvent::new(channel, stream_id, kind);
        self.inner
            .state
            .push_event(event, now_ms())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// One delivery round: every stream's first due event is sent; failures are rescheduled
    /// with exponential backoff. Returns (delivered, failed).
    pub async fn deliver_due_events(&self) -> Result<(usize, usize), StateError> {
        let due = self
            .inner
            .state
            .lease_due_events(now_ms(), DELIVERY_LEASE_MS)
            .await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        let attempts = due.into_iter().map(|pending| async move {
            let result = self
                .inner
                .webapp
                .deliver(&self.inner.config, &pending.event)
                .await;
            (pending, result)
        });
        let mut delivered = 0;
        let mut failed = 0;
        for (pending, result) in futures::future::join_all(attempts).await {
            let event = &pending.event;
            match result {
                Ok(()) => {
                    delivered += 1;
                    self.inner
                        .counters
                        .events_delivered
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(event_id = %event.event_id, stream_id = %event.stream_id, "event delivered");
                    self.inner.state.event_delivered(event).await?;
                }
                Err(err) => {
                    failed += 1;
                    self.inner
                        .counters
                        .event_attempts_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let exponent = pending.attempts.saturating_sub(1).min(16);
                    let delay =
                        (1000u64 << exponent).min(MAX_RETRY_DELAY_MS) + rand::random::<u64>() % 250;
                    tracing::warn!(
                        event_id = %event.event_id, stream_id = %event.stream_id, channel = %event.channel,
                        attempts = pending.attempts, retry_in_ms = delay, %err,
                        "event callback failed; will retry"
                    );
                    self.inner
                        .state
                        .event_failed(event, now_ms() + delay)
                        .await?;
                }
            }
        }
        if delivered > 0 {
            // The next event of a stream may be due right away.
            self.inner.wake.notify_one();
        }
        Ok((delivered, failed))
    }

    /// The periodic maintenance call (an EventBridge schedule on AWS, a timer in server mode):
    /// streams of dead nodes are ended and reported, then due events are delivered.
    pub async fn maintenance(&self) -> Result<MaintenanceReport, StateError> {
        let mut report = MaintenanceReport::default();
        let (dead_encoders, dead_ingests) = self.inner.state.reap_dead_nodes().await?;
        if !dead_encoders.is_empty() || !dead_ingests.is_empty() {
            let streams = self.inner.state.streams().await?;
            for encoder in &dead_encoders {
                tracing::warn!(encoder = %encoder, "encoder heartbeat expired");
                for stream in streams.iter().filter(|s| &s.encoder_id == encoder) {
                    self.end_orphaned_stream(stream, "its encoder died").await?;
                    report.streams_ended += 1;
                }
            }
            for ingest in &dead_ingests {
                tracing::warn!(ingest = %ingest, "ingest heartbeat expired");
                for stream in streams
                    .iter()
                    .filter(|s| &s.ingest_id == ingest && s.publishing)
                {
                    // The encoder sees its media end and finishes the stream as usual.
                    self.inner
                        .state
                        .publisher_gone(
                            &stream.channel,
                            &stream.stream_id,
                            now_ms(),
                            self.reconnect_window_ms(),
                        )
                        .await?;
                    report.publishers_released += 1;
                }
            }
        }
        report.dead_nodes = dead_encoders.len() + dead_ingests.len();
        let (delivered, failed) = self.deliver_due_events().await?;
        report.events_delivered = delivered;
        report.event_attempts_failed = failed;
        Ok(report)
    }

    /// Ends a stream that nothing will finish any more: the publisher is disconnected, the load
    /// released, `stream-closed` queued.
    async fn end_orphaned_stream(
        &self,
        stream: &StreamRecord,
        why: &str,
    ) -> Result<(), StateError> {
        tracing::warn!(channel = %stream.channel, stream_id = %stream.stream_id, encoder = %stream.encoder_id, "ending the stream: {why}");
        if stream.publishing {
            let kill = IngestCommand::Kill {
                channel: stream.channel.clone(),
                stream_id: Some(stream.stream_id.clone()),
            };
            if let Err(err) = self.inner.bus.to_ingest(&stream.ingest_id, kill).await {
                tracing::warn!(stream_id = %stream.stream_id, %err, "could not disconnect the publisher");
            }
        }
        if self
            .inner
            .state
            .finish_stream(&stream.stream_id)
            .await?
            .is_some()
        {
            self.push_event(&stream.channel, &stream.stream_id, WebAppEventKind::Closed)
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Runs maintenance until `shutdown`: on every new event and on a short timer (for
    /// retries). The server mode's stand-in for the scheduled maintenance call.
    pub async fn run_maintenance(&self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.maintenance().await {
                tracing::warn!(%err, "maintenance round failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        // A last chance for what is due (for example stream-closed of streams just ended).
        let _ = tokio::time::timeout(Duration::from_secs(3), self.deliver_due_events()).await;
    }

    /// Prometheus text exposition of the coordinator's gauges and counters.
    pub async fn metrics(&self) -> String {
        let mut out = String::new();
        let c = &self.inner.counters;
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "vstream_publishes_accepted_total",
            "counter",
            "Publishes accepted.",
            c.publishes_accepted.load(Ordering::Relaxed),
        );
        metric(
            "vstream_publishes_refused_total",
            "counter",
            "Publishes refused.",
            c.publishes_refused.load(Ordering::Relaxed),
        );
        metric(
            "vstream_publishes_resumed_total",
            "counter",
            "Publishes that continued a stream within the reconnect window.",
            c.publishes_resumed.load(Ordering::Relaxed),
        );
        metric(
            "vstream_events_delivered_total",
            "counter",
            "Web-app events delivered.",
            c.events_delivered.load(Ordering::Relaxed),
        );
        metric(
            "vstream_event_attempts_failed_total",
            "counter",
            "Failed web-app event delivery attempts.",
            c.event_attempts_failed.load(Ordering::Relaxed),
        );
        if let Ok(streams) = self.inner.state.streams().await {
            metric(
                "vstream_streams",
                "gauge",
                "Streams from accepted publish to encoder done.",
                streams.len() as u64,
            );
        }
        if let Ok(capacity) = self.capacity().await {
            metric(
                "vstream_encoder_load",
                "gauge",
                "Streams assigned to encoders.",
                capacity.load,
            );
        }
        if let Ok((depth, age)) = self.inner.state.event_backlog(now_ms()).await {
            metric(
                "vstream_event_queue_depth",
                "gauge",
                "Web-app events waiting for delivery.",
                depth as u64,
            );
            metric(
                "vstream_event_queue_oldest_ms",
                "gauge",
                "Age of the oldest waiting web-app event.",
                age,
            );
        }
        out
    }

    fn refuse(
        &self,
        request: &PublishRequest,
        refusal: PublishRefusal,
    ) -> Result<PublishGrant, PublishRefusal> {
        self.inner
            .counters
            .publishes_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(channel = %request.channel, user_ip = %request.user_ip, ingest = %request.ingest_id, %refusal, "publish refused");
        Err(refusal)
    }
}

#[async_trait]
impl ControlPlane for Coordinator {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        let config = &self.inner.config;
        for (what, value) in [("channel", &request.channel), ("key", &request.key)] {
            if let Err(err) = validate_id(what, value, config.id_max_length) {
                return self.refuse(&request, PublishRefusal::InvalidKey(err.to_string()));
            }
        }
        match self.inner.state.channel_holder(&request.channel).await {
            Ok(Some(_)) => return self.refuse(&request, PublishRefusal::AlreadyPublishing),
            Ok(None) => {}
            Err(err) => return self.refuse(&request, PublishRefusal::Unavailable(err.to_string())),
        }
        let options = match self
            .inner
            .webapp
            .verify_key(config, &request.channel, &request.key, &request.user_ip)
            .await
        {
            Verification::Allowed(options) => options,
            Verification::Denied { status } => {
                return self.refuse(
                    &request,
                    PublishRefusal::InvalidKey(format!("the web app answered {status}")),
                );
            }
            Verification::Unreachable(err) => {
                return self.refuse(
                    &request,
                    PublishRefusal::Unavailable(format!("key verification failed: {err}")),
                );
            }
        };
        let key_hash = key_hash(&request.channel, &request.key);
        match self.try_resume(&request, &key_hash).await {
            Ok(Some(grant)) => return Ok(grant),
            Ok(None) => {}
            Err(err) => return self.refuse(&request, PublishRefusal::Unavailable(err.to_string())),
        }
        let record = StreamRecord {
            stream_id: StreamId::generate(),
            channel: request.channel.clone(),
            ingest_id: request.ingest_id.clone(),
            encoder_id: String::new(),
            source: request.source,
            options,
            started_at_ms: now_ms(),
            publishing: true,
            key_hash,
            publisher_left_at_ms: 0,
        };
        let record = match self.inner.state.start_stream(record).await {
            Ok(record) => record,
            Err(StartError::ChannelBusy(_)) => {
                return self.refuse(&request, PublishRefusal::AlreadyPublishing)
            }
            Err(StartError::NoCapacity) => {
                return self.refuse(&request, PublishRefusal::NoCapacity)
            }
            Err(StartError::State(err)) => {
                return self.refuse(&request, PublishRefusal::Unavailable(err.to_string()))
            }
        };
        let media_url = self.media_url(&record.ingest_id, &record.stream_id).await;
        let job = EncoderJob {
            stream_id: record.stream_id.clone(),
            channel: record.channel.clone(),
            ingest_id: record.ingest_id.clone(),
            source: record.source,
            options: record.options.clone(),
            media_url,
            reconnect_window_ms: self.reconnect_window_ms(),
        };
        if let Err(err) = self
            .inner
            .bus
            .to_encoder(&record.encoder_id, EncoderCommand::Start(job))
            .await
        {
            tracing::error!(stream_id = %record.stream_id, encoder = %record.encoder_id, %err, "could not hand the job to its encoder");
            let _ = self.inner.state.finish_stream(&record.stream_id).await;
            return self.refuse(&request, PublishRefusal::Unavailable(err.to_string()));
        }
        self.inner
            .counters
            .publishes_accepted
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            channel = %record.channel, stream_id = %record.stream_id, encoder = %record.encoder_id,
            ingest = %record.ingest_id, user_ip = %request.user_ip, "publish accepted"
        );
        Ok(PublishGrant {
            stream_id: record.stream_id,
            encoder_id: record.encoder_id,
        })
    }

    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError> {
        let record = self
            .inner
            .state
            .publisher_gone(channel, stream_id, now_ms(), self.reconnect_window_ms())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        tracing::info!(channel, %stream_id, known = record.is_some(), "publisher ended");
        Ok(())
    }

    async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
        match event {
            EncoderEvent::Available {
                stream_id,
                channel,
                stream_type,
                resolution,
                index_file,
                master_index_file,
                start_time,
            } => {
                tracing::info!(%channel, %stream_id, stream_type = stream_type.as_str(), %resolution, %index_file, "stream available");
                self.push_event(
                    &channel,
                    &stream_id,
                    WebAppEventKind::Available {
                        stream_type,
                        resolution,
                        index_file,
                        master_index_file,
                        start_time,
                    },
                )
                .await
            }
            EncoderEvent::Closed {
                stream_id,
                channel,
                encoder_id,
            } => {
                let finished = self
                    .inner
                    .state
                    .finish_stream(&stream_id)
                    .await
                    .map_err(|e| ControlError::Unavailable(e.to_string()))?;
                if finished.is_none() {
                    // Either a retried report (stream-closed was queued the first time) or the
                    // state was lost (Redis restarted empty). The web app must still hear of
                    // the end, and a duplicate is harmless under at-least-once delivery.
                    tracing::warn!(%channel, %stream_id, encoder = %encoder_id, "closed report for an unknown stream; sending stream-closed anyway");
                }
                if let Some(record) = finished.as_ref().filter(|r| r.publishing) {
                    // The encoder ended first (shut down, gave up): the publisher would otherwise
                    // go on publishing into nothing. It may reconnect and get a new stream.
                    let kill = IngestCommand::Kill {
                        channel: channel.clone(),
                        stream_id: Some(stream_id.clone()),
                    };
                    if let Err(err) = self.inner.bus.to_ingest(&record.ingest_id, kill).await {
                        tracing::warn!(%channel, %stream_id, %err, "could not disconnect the publisher of a closed stream");
                    }
                }
                tracing::info!(%channel, %stream_id, encoder = %encoder_id, "stream closed");
                self.push_event(&channel, &stream_id, WebAppEventKind::Closed)
                    .await
            }
        }
    }
}
