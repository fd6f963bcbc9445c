//! Our side: a redis-server, a real `coordinator-fn`, the real `ingest` binary (started per
//! step, so its CPU and memory are its own), and this process registered as an encoder node
//! that takes the coordinator's `start` jobs and pulls each stream from the ingest's internal
//! media endpoint, as the `encoder` binary does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf as _, BytesMut};
use contract::control::{ControlPlane as _, EncoderCommand, EncoderEvent, EncoderJob};
use contract::token::{Component, TokenKeys};
use coordinator_fn::client::HttpControlPlane;
use coordinator_fn::internal::Heartbeat;
use coordinator_fn::redis_bus::{self, NodeKind};
use coordinator_fn::state::EncoderNode;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::media::{Checker, Kind, MediaFile, Position, RecvStats};
use crate::common::{
    command_line, free_port, Bins, ChildGuard, CoordinatorServer, RedisServer, BENCH_CONTROL_SECRET,
};

pub const ENCODER_ID: &str = "bench-encoder";
pub const INGEST_ID: &str = "bench-ingest";

/// The consumers of one step: which channels they are for and where they count.
pub struct Run {
    pub prefix: String,
    pub file: Arc<MediaFile>,
    pub stats: Arc<RecvStats>,
    pub positions: Vec<Arc<Position>>,
    pub stop: CancellationToken,
    /// Consumers whose media request was answered 200.
    pub connected: Arc<AtomicU64>,
    /// Consumers whose media request failed.
    pub failed: Arc<AtomicU64>,
}

/// Redis, the coordinator and this process as an encoder node, for the whole benchmark.
pub struct Backend {
    pub redis: RedisServer,
    pub coordinator: CoordinatorServer,
    run: Arc<Mutex<Option<Arc<Run>>>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Backend {
    pub async fn start(bins: &Bins, dir: &Path) -> anyhow::Result<Backend> {
        let redis = RedisServer::start(dir).await?;
        let coordinator = CoordinatorServer::start(bins, dir, &redis.url(), &[]).await?;
        let keys = TokenKeys::new(BENCH_CONTROL_SECRET);
        let control = HttpControlPlane::new(
            &coordinator.base_url,
            Component::Encoder,
            ENCODER_ID,
            keys.clone(),
        );
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let run: Arc<Mutex<Option<Arc<Run>>>> = Arc::default();
        tasks.spawn({
            let control = control.clone();
            let stop = stop.clone();
            let node = Heartbeat::Encoder(EncoderNode {
                id: ENCODER_ID.to_owned(),
                capacity: -1,
            });
            async move { control.heartbeat_loop(node, stop).await }
        });
        let (tx, mut commands) = tokio::sync::mpsc::channel::<EncoderCommand>(1024);
        tasks.spawn(redis_bus::subscribe(
            redis.url(),
            "vs:".to_owned(),
            NodeKind::Encoder,
            ENCODER_ID.to_owned(),
            tx,
            stop.clone(),
        ));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .context("HTTP client")?;
        tasks.spawn({
            let run = Arc::clone(&run);
            let keys = keys.clone();
            let tasks = tasks.clone();
            async move {
                let mut seen = HashSet::new();
                while let Some(command) = commands.recv().await {
                    let EncoderCommand::Start(job) = command else {
                        continue;
                    };
                    if !seen.insert(job.stream_id.clone()) {
                        continue;
                    }
                    let current = run.lock().ok().and_then(|r| r.clone());
                    let Some(current) = current else { continue };
                    let Some(index) = job
                        .channel
                        .strip_prefix(current.prefix.as_str())
                        .and_then(|i| i.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let Some(position) = current.positions.get(index).cloned() else {
                        continue;
                    };
                    tasks.spawn(consume(
                        http.clone(),
                        keys.clone(),
                        control.clone(),
                        job,
                        Arc::clone(&current),
                        position,
                    ));
                }
            }
        });
        Ok(Backend {
            redis,
            coordinator,
            run,
            stop,
            tasks,
        })
    }

    /// Routes the jobs of channels `{prefix}{index}` to `run`'s consumers.
    pub fn set_run(&self, run: Option<Arc<Run>>) {
        if let Ok(mut current) = self.run.lock() {
            *current = run;
        }
    }

    /// Whether the coordinator knows ingest `INGEST_ID` (its heartbeat arrived).
    pub async fn ingest_registered(&self) -> bool {
        let url = format!("{}/commands/report", self.coordinator.base_url);
        let Ok(response) = reqwest::get(&url).await else {
            return false;
        };
        let Ok(report) = response.json::<serde_json::Value>().await else {
            return false;
        };
        report["streamingServers"]
            .as_array()
            .is_some_and(|s| s.iter().any(|n| n["id"] == INGEST_ID))
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

/// Pulls one stream's FLV from the ingest and checks it; reports the stream closed at the end.
async fn consume(
    http: reqwest::Client,
    keys: TokenKeys,
    control: HttpControlPlane,
    job: EncoderJob,
    run: Arc<Run>,
    position: Arc<Position>,
) {
    let Some(url) = job.media_url.clone() else {
        run.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(channel = %job.channel, "job without a media URL");
        return;
    };
    let response = http
        .get(&url)
        .bearer_auth(keys.sign(Component::Encoder, ENCODER_ID))
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => {
            run.connected.fetch_add(1, Ordering::Relaxed);
            let mut checker = Checker::new(&run.file);
            let mut parser = FlvParser::default();
            let mut body = response.bytes_stream();
            let ended = loop {
                let chunk = tokio::select! {
                    _ = run.stop.cancelled() => break false,
                    chunk = body.next() => chunk,
                };
                match chunk {
                    Some(Ok(bytes)) => parser.push(&bytes, |kind, ts, data| {
                        checker.on_tag(kind, ts, data, &run.stats, &position)
                    }),
                    Some(Err(err)) => {
                        tracing::warn!(channel = %job.channel, %err, "media pull broke");
                        break true;
                    }
                    None => break true,
                }
            };
            if ended && !run.stop.is_cancelled() {
                run.stats.ended_early.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(response) => {
            run.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %job.channel, status = %response.status(), "media pull refused");
        }
        Err(err) => {
            run.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %job.channel, %err, "media pull failed");
        }
    }
    // As an encoder does when its stream is done: frees the coordinator's state.
    let _ = control
        .encoder_event(EncoderEvent::Closed {
            stream_id: job.stream_id,
            channel: job.channel,
            encoder_id: ENCODER_ID.to_owned(),
        })
        .await;
}

/// Incremental FLV reader: file header, then tags.
#[derive(Default)]
struct FlvParser {
    buf: BytesMut,
    header_done: bool,
}

impl FlvParser {
    fn push(&mut self, chunk: &[u8], mut on_tag: impl FnMut(Kind, u32, &[u8])) {
        self.buf.extend_from_slice(chunk);
        if !self.header_done {
            if self.buf.len() < 13 {
                return;
            }
            self.buf.advance(13);
            self.header_done = true;
        }
        loop {
            if self.buf.len() < 11 {
                return;
            }
            let h = &self.buf[..11];
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if self.buf.len() < 11 + size + 4 {
                return;
            }
            let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let kind = match h[0] {
                8 => Some(Kind::Audio),
                9 => Some(Kind::Video),
                _ => None,
            };
            if let Some(kind) = kind {
                on_tag(kind, ts, &self.buf[11..11 + size]);
            }
            self.buf.advance(11 + size + 4);
        }
    }
}

/// One `ingest` process.
pub struct Ingest {
    pub guard: ChildGuard,
    pub rtmp: SocketAddr,
    pub command: String,
}

impl Ingest {
    pub async fn start(
        bins: &Bins,
        dir: &Path,
        backend: &Backend,
        extra_env: &[(String, String)],
        wrapper: Option<&str>,
        program: Option<&Path>,
    ) -> anyhow::Result<Ingest> {
        let program = match program {
            Some(p) => p.to_owned(),
            None => bins.path("ingest")?,
        };
        let rtmp_port = free_port()?;
        let http_port = free_port()?;
        let mut env: Vec<(&str, String)> = vec![
            ("NODE_ID", INGEST_ID.to_owned()),
            ("CONTROL_BASE_URL", backend.coordinator.base_url.clone()),
            ("CONTROL_SECRET", BENCH_CONTROL_SECRET.to_owned()),
            ("REDIS_URL", backend.redis.url()),
            ("BIND_ADDRESS", "127.0.0.1".to_owned()),
            ("RTMP_PORT", rtmp_port.to_string()),
            ("HTTP_PORT", http_port.to_string()),
            // Idle publishers (connected, published, sending nothing) are part of the test.
            ("PUBLISH_IDLE_TIMEOUT_SECONDS", "300".to_owned()),
            // Every publisher of the benchmark comes from 127.0.0.1: the per-address limit
            // would refuse all but a few; the total is raised above the largest step.
            ("CONCURRENT_LIMIT_WHITELIST", "127.0.0.0/8".to_owned()),
            ("MAX_PUBLISH_CONNECTIONS", "10000".to_owned()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let mut wrapper = wrapper.unwrap_or("").split_whitespace();
        let mut cmd = match wrapper.next() {
            Some(first) => {
                let mut cmd = std::process::Command::new(first);
                cmd.args(wrapper).arg(&program);
                cmd
            }
            None => std::process::Command::new(&program),
        };
        cmd.env_remove("RUST_LOG");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut guard = ChildGuard::spawn("ingest", &mut cmd, &dir.join("ingest.log"))?;
        let rtmp = SocketAddr::from(([127, 0, 0, 1], rtmp_port));
        guard.wait_for_tcp(rtmp, Duration::from_secs(60)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !backend.ingest_registered().await {
            guard.check_alive()?;
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the ingest did not register with the coordinator"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Ingest {
            guard,
            rtmp,
            command: command_line(&env, "ingest", &[]),
        })
    }
}
