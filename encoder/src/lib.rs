//! The encoder node: for every job the coordinator gives it, one supervised ffmpeg decodes the
//! stream once and encodes an aligned ladder of renditions; the encoder stores the segments,
//! writes its own live, VOD and master playlists after the objects they name, and reports
//! availability and the end of the stream.
//!
//! # Layout
//! - [`config`]: [`EncoderConfig`], the seed system's `HLS_*` settings and their defaults.
//! - [`settings`]: the same settings, and the storage choice, as `clap` arguments for binaries.
//! - [`store`]: the [`ObjectStore`] trait (`put` = readable when it returns) and
//!   [`FilesystemStore`] (atomic writes, validated keys).
//! - [`s3`]: [`S3Store`], the same on an S3 bucket (AWS or S3-compatible), with headers, the
//!   `vstream-live=1` tag and classified errors.
//! - [`spool`]: the bounded, ordered, on-disk backlog of a stream while the store is down.
//! - [`cleanup`]: deleting a live-only stream's objects some time after it ended.
//! - [`metrics`]: storage counters for the binaries' `/metrics`.
//! - [`probe`]: buffering the start of the media and asking `ffprobe` what it holds.
//! - [`ffmpeg`]: the argument vector of a job (one pure function) and the supervised child
//!   (stdin fed from a thread, stderr logged, always reaped).
//! - [`watch`]: finding finished segments in ffmpeg's playlists.
//! - [`codecs`]: RFC 6381 `CODECS` from the H.264 SPS of a segment.
//! - [`publish`]: segments → stored objects, live / VOD / master playlists and `Available`
//!   events, in the order SPEC §3 requires.
//! - [`events`]: the ordered, retried delivery of a job's events to the coordinator.
//! - `job`: one stream from probe to `Closed`, with ffmpeg restarts after crashes and the
//!   reconnect window (the stream waits for its publisher, then goes on from the new media).
//! - [`Encoder`] (here): the command loop (`Start` / `Stop` / `Resume`), the registry of
//!   running jobs and the graceful shutdown.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cleanup;
pub mod codecs;
pub mod config;
pub mod events;
pub mod ffmpeg;
pub mod gop;
mod job;
pub mod metrics;
pub mod probe;
pub mod publish;
pub mod s3;
pub mod settings;
pub mod spool;
pub mod store;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use contract::control::{ControlPlane, EncoderCommand, EncoderEvent, EncoderJob, MediaSource};
use contract::StreamId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument as _};

pub use config::EncoderConfig;
pub use job::{JobError, MAX_RESTARTS};
pub use metrics::{render_prometheus, storage_metrics, StorageMetrics};
pub use s3::{S3Settings, S3Store};
pub use store::{FilesystemStore, ObjectStore, Retention, StoreError};

/// Beyond `stop_grace`, how long the shutdown waits for jobs to publish their last segments
/// and playlists before it gives up on them.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(30);

/// An encoder node. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Encoder {
    inner: Arc<Inner>,
}

/// How many `Resume` commands may wait for one job (one is the normal case).
const RESUME_QUEUE: usize = 4;

/// A running job, as the command loop reaches it.
struct JobHandle {
    stop: CancellationToken,
    resume: mpsc::Sender<job::Resume>,
}

struct Inner {
    services: Arc<job::Services>,
    jobs: Mutex<HashMap<StreamId, JobHandle>>,
}

impl Inner {
    fn jobs(&self) -> MutexGuard<'_, HashMap<StreamId, JobHandle>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Encoder {
    pub fn new(
        config: EncoderConfig,
        store: Arc<dyn ObjectStore>,
        media: Arc<dyn MediaSource>,
        control: Arc<dyn ControlPlane>,
    ) -> Self {
        let (config, changes) = config.sanitized();
        if !changes.is_empty() {
            warn!(?changes, "encoder settings out of range were adjusted");
        }
        Encoder {
            inner: Arc::new(Inner {
                services: Arc::new(job::Services {
                    config,
                    store,
                    media,
                    control,
                    tracker: TaskTracker::new(),
                }),
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Handles `Start` / `Stop` / `Resume` commands until `shutdown` is cancelled; on shutdown every
    /// running job finishes cleanly (segment in progress, final playlists, `Closed` event),
    /// ffmpeg being killed after `stop_grace`. If `commands` closes, running jobs go on until
    /// they end or `shutdown`.
    pub async fn run(
        &self,
        mut commands: mpsc::Receiver<EncoderCommand>,
        shutdown: CancellationToken,
    ) {
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                command = commands.recv(), if open => match command {
                    Some(command) => self.handle(command, &shutdown),
                    None => {
                        debug!("command channel closed");
                        open = false;
                    }
                },
            }
        }
        let running = self.active_jobs().len();
        info!(
            running,
            "encoder shutting down: finishing the running streams"
        );
        let tracker = &self.inner.services.tracker;
        tracker.close();
        let limit = self.inner.services.config.stop_grace + SHUTDOWN_MARGIN;
        if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
            error!(
                still_running = ?self.active_jobs(),
                "streams did not finish within {limit:?} of the shutdown"
            );
        }
    }

    /// The streams being encoded.
    pub fn active_jobs(&self) -> Vec<StreamId> {
        let mut jobs: Vec<StreamId> = self.inner.jobs().keys().cloned().collect();
        jobs.sort();
        jobs
    }

    fn handle(&self, command: EncoderCommand, shutdown: &CancellationToken) {
        match command {
            EncoderCommand::Start(job) => self.start(job, shutdown),
            EncoderCommand::Stop { stream_id } => match self.inner.jobs().get(&stream_id) {
                Some(job) => {
                    info!(%stream_id, "stop requested");
                    job.stop.cancel();
                }
                None => debug!(%stream_id, "stop for a stream that is not running here"),
            },
            EncoderCommand::Resume {
                stream_id,
                ingest_id,
                source,
                media_url,
            } => {
                let resume = job::Resume {
                    ingest_id,
                    source,
                    media_url,
                };
                let sent = self
                    .inner
                    .jobs()
                    .get(&stream_id)
                    .map(|job| job.resume.try_send(resume));
                match sent {
                    Some(Ok(())) => info!(%stream_id, "resume: the stream's publisher is back"),
                    Some(Err(_)) => warn!(
                        %stream_id,
                        "resume for a stream that is already ending here: ignored"
                    ),
                    None => {
                        warn!(%stream_id, "resume for a stream that is not running here: ignored")
                    }
                }
            }
        }
    }

    fn start(&self, job: EncoderJob, shutdown: &CancellationToken) {
        // An error-level span: its fields (stream_id, channel) stay on every line of the job
        // whatever the level filter lets through.
        let span = tracing::error_span!(
            "job",
            stream_id = %job.stream_id,
            channel = %job.channel,
            encoder_id = %self.inner.services.config.node_id,
        );
        let services = self.inner.services.clone();
        if let Err(err) =
            contract::validate_id("channel", &job.channel, contract::DEFAULT_ID_MAX_LENGTH)
        {
            // The channel becomes part of object keys: refuse it, but free the coordinator's
            // load for the stream.
            span.in_scope(|| error!(error = %err, "job refused: invalid channel"));
            let control = services.control.clone();
            let closed = EncoderEvent::Closed {
                stream_id: job.stream_id,
                channel: job.channel,
                encoder_id: services.config.node_id.clone(),
            };
            services.tracker.spawn(
                async move {
                    let (events, task) = events::spawn_event_task(control);
                    events.send(closed);
                    drop(events);
                    task.finish().await;
                }
                .instrument(span),
            );
            return;
        }
        let stop = shutdown.child_token();
        let (resume, resumes) = mpsc::channel(RESUME_QUEUE);
        {
            let mut jobs = self.inner.jobs();
            if jobs.contains_key(&job.stream_id) {
                span.in_scope(|| warn!("the stream is already running here: start ignored"));
                return;
            }
            jobs.insert(
                job.stream_id.clone(),
                JobHandle {
                    stop: stop.clone(),
                    resume,
                },
            );
        }
        span.in_scope(|| {
            info!(
                source = job.source.as_str(),
                reconnect_window_ms = job.reconnect_window_ms,
                "job started"
            )
        });
        let inner = self.inner.clone();
        let stream_id = job.stream_id.clone();
        let release = move || {
            inner.jobs().remove(&stream_id);
        };
        services.tracker.spawn(
            job::run_job(
                services.clone(),
                job,
                resumes,
                stop,
                shutdown.clone(),
                release,
            )
            .instrument(span),
        );
    }
}
