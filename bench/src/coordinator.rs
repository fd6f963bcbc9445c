//! The coordinator benchmark: publish-decision latency and throughput of a real
//! `coordinator-fn` process on a real redis-server, driven as the ingest drives it
//! (`POST /internal/publish` with a fresh ingest JWT, through `coordinator_fn::client`), with a
//! web-app stub (in this process) that answers key verification and event callbacks at once,
//! and this process registered as the encoder node (subscribed to its jobs) and as the ingest.
//!
//! Every publish is on a new channel, so each is a real grant (key verification, encoder
//! choice, job stored and published). Each granted stream is then ended as in production:
//! `publish-ended` from the ingest, then the encoder's `closed` event (which queues
//! `stream-closed` for the web app), so the state does not grow. Only the publish call is
//! timed; the coordinator serves the other calls meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use contract::control::{
    ControlPlane as _, EncoderCommand, EncoderEvent, PublishRequest, SourceKind,
};
use contract::token::{Component, TokenKeys};
use coordinator_fn::client::HttpControlPlane;
use coordinator_fn::internal::Heartbeat;
use coordinator_fn::redis_bus::{self, NodeKind};
use coordinator_fn::state::{EncoderNode, IngestNode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{
    self, percentile, process_cpu_seconds, tree_cpu_seconds, Bins, CoordinatorServer, RedisServer,
    Report, BENCH_CONTROL_SECRET,
};

const ENCODER_ID: &str = "bench-encoder";
const INGEST_ID: &str = "bench-ingest";

#[derive(clap::Args)]
pub struct Args {
    /// Publish requests per second of the open-loop run.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Length of the open-loop run, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients of the closed-loop run (0: skip it).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the closed-loop run, in seconds.
    #[arg(long, default_value_t = 10)]
    closed_seconds: u64,
    /// End each granted stream (publish-ended, then the encoder's closed event).
    #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
    end_streams: bool,
    /// The p99 target of the open-loop run, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    target_p99_ms: f64,
}

/// Latencies and outcomes of one run.
#[derive(Debug, Default)]
struct Outcome {
    /// Publish latencies (ms) of granted requests.
    latencies: Vec<f64>,
    refused: u64,
    failed_ends: u64,
    first_error: Option<String>,
}

struct Measured {
    name: String,
    requests: usize,
    seconds: f64,
    outcome: Outcome,
    coordinator_cpu_s: f64,
    redis_cpu_s: f64,
    client_cpu_s: f64,
    /// Calls the web-app stub answered during the run (verifications, events).
    webapp_calls: u64,
}

impl Measured {
    fn sorted(&self) -> Vec<f64> {
        let mut l = self.outcome.latencies.clone();
        l.sort_by(f64::total_cmp);
        l
    }
}

#[derive(Default)]
struct Stub {
    verifications: AtomicU64,
    events: AtomicU64,
}

async fn webapp_stub(stub: Arc<Stub>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/verify",
            post({
                let stub = Arc::clone(&stub);
                move || async move {
                    stub.verifications.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        )
        .route(
            "/events",
            post({
                let stub = Arc::clone(&stub);
                move || async move {
                    stub.events.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), task))
}

pub async fn run(bins: &Bins, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let dir = tempfile::Builder::new()
        .prefix("vstream-bench-coordinator-")
        .tempdir()?;
    let redis = RedisServer::start(dir.path()).await?;
    let stub = Arc::new(Stub::default());
    let (webapp, stub_task) = webapp_stub(Arc::clone(&stub)).await?;
    let coordinator = CoordinatorServer::start(
        bins,
        dir.path(),
        &redis.url(),
        &[
            ("KEY_VERIFICATION_URL", format!("{webapp}/verify")),
            ("EVENT_CALLBACK_URL", format!("{webapp}/events")),
        ],
    )
    .await?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let result = bench(&args, &redis, &coordinator, &stub, &stop, &tasks).await;
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    stub_task.abort();
    let measured = result?;
    Ok(report(&args, &redis, &coordinator, &measured))
}

async fn bench(
    args: &Args,
    redis: &RedisServer,
    coordinator: &CoordinatorServer,
    stub: &Arc<Stub>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Vec<Measured>> {
    let keys = TokenKeys::new(BENCH_CONTROL_SECRET);
    let ingest = HttpControlPlane::new(
        &coordinator.base_url,
        Component::Ingest,
        INGEST_ID,
        keys.clone(),
    );
    let encoder = HttpControlPlane::new(
        &coordinator.base_url,
        Component::Encoder,
        ENCODER_ID,
        keys.clone(),
    );
    // The nodes: an encoder with unlimited capacity (subscribed to its jobs, as the encoder
    // binary is) and an ingest.
    for (control, node) in [
        (
            encoder.clone(),
            Heartbeat::Encoder(EncoderNode {
                id: ENCODER_ID.to_owned(),
                capacity: -1,
            }),
        ),
        (
            ingest.clone(),
            Heartbeat::Ingest(IngestNode {
                id: INGEST_ID.to_owned(),
                ip: "127.0.0.1".to_owned(),
                port: 1935,
                ssl: false,
                server_type: SourceKind::Rtmp,
                internal_url: Some("http://127.0.0.1:9".to_owned()),
            }),
        ),
    ] {
        let stop = stop.clone();
        tasks.spawn(async move { control.heartbeat_loop(node, stop).await });
    }
    let jobs = Arc::new(AtomicU64::new(0));
    let (tx, mut commands) = tokio::sync::mpsc::channel::<EncoderCommand>(4096);
    tasks.spawn(redis_bus::subscribe(
        redis.url(),
        "vs:".to_owned(),
        NodeKind::Encoder,
        ENCODER_ID.to_owned(),
        tx,
        stop.clone(),
    ));
    tasks.spawn({
        let jobs = Arc::clone(&jobs);
        async move {
            while let Some(command) = commands.recv().await {
                if matches!(command, EncoderCommand::Start(_)) {
                    jobs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    // Wait for both registrations and the subscription.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report: Option<serde_json::Value> = async {
            http.get(format!("{}/commands/report", coordinator.base_url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        let ready = report.is_some_and(|r| {
            r["encoders"].as_array().is_some_and(|e| !e.is_empty())
                && r["streamingServers"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
        });
        if ready {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not register with the coordinator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ctx = Ctx {
        ingest,
        encoder,
        end_streams: args.end_streams,
        coordinator_pid: coordinator.guard.pid(),
        redis_pid: redis.guard.pid(),
        stub: Arc::clone(stub),
    };
    let mut out = Vec::new();
    eprintln!("coordinator bench: warm-up (1 s at {} req/s)", args.rate);
    open_loop(&ctx, "warm-up", args.rate, 1.0).await;
    eprintln!(
        "coordinator bench: open loop, {} req/s for {} s",
        args.rate, args.seconds
    );
    let m = open_loop(
        &ctx,
        &format!("open loop {} req/s", args.rate),
        args.rate,
        args.seconds as f64,
    )
    .await;
    eprintln!("  {}", line(&m));
    out.push(m);
    if args.concurrency > 0 {
        eprintln!(
            "coordinator bench: closed loop, {} concurrent for {} s",
            args.concurrency, args.closed_seconds
        );
        let m = closed_loop(&ctx, args.concurrency, args.closed_seconds as f64).await;
        eprintln!("  {}", line(&m));
        out.push(m);
    }
    eprintln!(
        "coordinator bench: {} start jobs received by the encoder node",
        jobs.load(Ordering::Relaxed)
    );
    Ok(out)
}

#[derive(Clone)]
struct Ctx {
    ingest: HttpControlPlane,
    encoder: HttpControlPlane,
    end_streams: bool,
    coordinator_pid: u32,
    redis_pid: u32,
    stub: Arc<Stub>,
}

static CHANNEL: AtomicU64 = AtomicU64::new(0);

/// One publish (timed from `due`), then the stream's end when asked.
async fn cycle(ctx: &Ctx, due: Instant, outcome: &Mutex<Outcome>) {
    let channel = format!("bench-{}", CHANNEL.fetch_add(1, Ordering::Relaxed));
    let request = PublishRequest {
        channel: channel.clone(),
        key: "key".to_owned(),
        user_ip: "127.0.0.1".to_owned(),
        ingest_id: INGEST_ID.to_owned(),
        source: SourceKind::Rtmp,
    };
    let answer = ctx.ingest.publish(request).await;
    let ms = due.elapsed().as_secs_f64() * 1000.0;
    let grant = match answer {
        Ok(grant) => {
            if let Ok(mut o) = outcome.lock() {
                o.latencies.push(ms);
            }
            grant
        }
        Err(refusal) => {
            if let Ok(mut o) = outcome.lock() {
                o.refused += 1;
                o.first_error.get_or_insert_with(|| refusal.to_string());
            }
            return;
        }
    };
    if !ctx.end_streams {
        return;
    }
    let ended = ctx.ingest.publish_ended(&channel, &grant.stream_id).await;
    let closed = ctx
        .encoder
        .encoder_event(EncoderEvent::Closed {
            stream_id: grant.stream_id,
            channel,
            encoder_id: ENCODER_ID.to_owned(),
        })
        .await;
    if ended.is_err() || closed.is_err() {
        if let Ok(mut o) = outcome.lock() {
            o.failed_ends += 1;
        }
    }
}

struct Meter {
    t0: Instant,
    coordinator: f64,
    redis: f64,
    client: f64,
    webapp: u64,
}

impl Meter {
    fn start(ctx: &Ctx) -> Meter {
        Meter {
            t0: Instant::now(),
            coordinator: tree_cpu_seconds(ctx.coordinator_pid),
            redis: tree_cpu_seconds(ctx.redis_pid),
            client: process_cpu_seconds(std::process::id()),
            webapp: webapp_calls(ctx),
        }
    }

    fn finish(self, ctx: &Ctx, name: String, requests: usize, outcome: Outcome) -> Measured {
        Measured {
            name,
            requests,
            seconds: self.t0.elapsed().as_secs_f64(),
            outcome,
            coordinator_cpu_s: tree_cpu_seconds(ctx.coordinator_pid) - self.coordinator,
            redis_cpu_s: tree_cpu_seconds(ctx.redis_pid) - self.redis,
            client_cpu_s: process_cpu_seconds(std::process::id()) - self.client,
            webapp_calls: webapp_calls(ctx) - self.webapp,
        }
    }
}

fn webapp_calls(ctx: &Ctx) -> u64 {
    ctx.stub.verifications.load(Ordering::Relaxed) + ctx.stub.events.load(Ordering::Relaxed)
}

/// Requests at a fixed rate, each timed from when it was due (no coordinated omission).
async fn open_loop(ctx: &Ctx, name: &str, rate: f64, seconds: f64) -> Measured {
    let count = (rate * seconds).round() as usize;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let tasks = TaskTracker::new();
    let meter = Meter::start(ctx);
    let t0 = meter.t0;
    for i in 0..count {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (ctx, outcome) = (ctx.clone(), Arc::clone(&outcome));
        tasks.spawn(async move { cycle(&ctx, due, &outcome).await });
    }
    tasks.close();
    tasks.wait().await;
    let outcome = take(&outcome);
    meter.finish(ctx, name.to_owned(), count, outcome)
}

/// `concurrency` clients, each starting its next cycle when the previous one is done.
async fn closed_loop(ctx: &Ctx, concurrency: usize, seconds: f64) -> Measured {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let done = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(ctx);
    let end = meter.t0 + Duration::from_secs_f64(seconds);
    let tasks = TaskTracker::new();
    for _ in 0..concurrency {
        let (ctx, outcome, done) = (ctx.clone(), Arc::clone(&outcome), Arc::clone(&done));
        tasks.spawn(async move {
            while Instant::now() < end {
                cycle(&ctx, Instant::now(), &outcome).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    let outcome = take(&outcome);
    meter.finish(
        ctx,
        format!("closed loop, {concurrency} concurrent"),
        done.load(Ordering::Relaxed) as usize,
        outcome,
    )
}

fn take(outcome: &Mutex<Outcome>) -> Outcome {
    outcome
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default()
}

fn line(m: &Measured) -> String {
    let l = m.sorted();
    format!(
        "{}: {} publishes in {:.1} s ({:.0}/s), {} refused, {} failed ends; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; coordinator CPU {:.2} s ({:.3} ms per publish cycle), redis {:.2} s, client {:.2} s",
        m.name,
        m.requests,
        m.seconds,
        m.requests as f64 / m.seconds,
        m.outcome.refused,
        m.outcome.failed_ends,
        percentile(&l, 50.0),
        percentile(&l, 90.0),
        percentile(&l, 99.0),
        l.last().copied().unwrap_or(f64::NAN),
        m.coordinator_cpu_s,
        m.coordinator_cpu_s * 1000.0 / m.requests.max(1) as f64,
        m.redis_cpu_s,
        m.client_cpu_s,
    )
}

fn report(
    args: &Args,
    redis: &RedisServer,
    coordinator: &CoordinatorServer,
    measured: &[Measured],
) -> Report {
    let commands = vec![
        format!(
            "cargo run --release -p vstream-bench -- coordinator --rate {} --seconds {} --concurrency {} --closed-seconds {} --end-streams {}",
            args.rate, args.seconds, args.concurrency, args.closed_seconds, args.end_streams
        ),
        format!("# {}", redis.command),
        format!(
            "# {}  (the web-app stub is in the bench process)",
            coordinator.command
        ),
    ];
    let mut table = vec![[
        "run",
        "publishes/s",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "target p99",
        "p99 / target",
        "coordinator CPU per publish cycle (ms)",
    ]
    .map(str::to_owned)
    .to_vec()];
    for m in measured {
        let l = m.sorted();
        let p99 = percentile(&l, 99.0);
        let open = m.name.starts_with("open");
        table.push(vec![
            m.name.clone(),
            format!("{:.0}", m.requests as f64 / m.seconds),
            (m.outcome.refused + m.outcome.failed_ends).to_string(),
            format!("{:.2}", percentile(&l, 50.0)),
            format!("{:.2}", percentile(&l, 90.0)),
            format!("{p99:.2}"),
            format!("{:.2}", l.last().copied().unwrap_or(f64::NAN)),
            if open {
                format!("≤ {} ms", args.target_p99_ms)
            } else {
                "–".to_owned()
            },
            if open {
                format!("{:.2}", p99 / args.target_p99_ms)
            } else {
                "–".to_owned()
            },
            format!(
                "{:.3}",
                m.coordinator_cpu_s * 1000.0 / m.requests.max(1) as f64
            ),
        ]);
    }
    let calls = if args.end_streams { 3 } else { 1 };
    let mut raw = format!(
        "machine: {}\nload average at the end: {}\n\
         a publish cycle = POST /internal/publish (timed; key verification at the stub, encoder choice, job stored and published){}\n\
         open-loop latencies are measured from when each request was due; CPU = user+system over the run\n\n",
        common::machine(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        if args.end_streams {
            ", then POST /internal/publish-ended and the encoder's POST /internal/encoder-event closed (not timed; stream-closed delivered to the stub)"
        } else {
            ""
        },
    );
    for m in measured {
        raw.push_str(&line(m));
        raw.push_str(&format!(
            "\n    internal calls: {} ({} per cycle), web-app stub calls: {}, coordinator CPU per internal call {:.3} ms{}\n",
            m.requests * calls,
            calls,
            m.webapp_calls,
            m.coordinator_cpu_s * 1000.0 / (m.requests * calls).max(1) as f64,
            m.outcome
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!(", first error: {e}")),
        ));
    }
    Report {
        title: "Coordinator: publish-decision latency and throughput (real Redis)".to_owned(),
        commands,
        table,
        raw,
    }
}
