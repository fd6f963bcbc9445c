//! The ingest benchmark: N RTMP publishers replaying one FLV file in real time (about 3 Mbps
//! each), each stream pulled by one consumer, through our `ingest` (consumer: this process as
//! an encoder node, pulling `/internal/media/{stream_id}` after the coordinator's `start` job)
//! and through nginx-rtmp (consumer: an RTMP player), side by side for every N.
//!
//! For each relay and N: start the relay alone; measure its memory idle; connect N publishers
//! and N consumers with no media (idle publishers); start the media (starts spread over one
//! GOP); after a warm-up, measure over a steady window: CPU of the relay's process tree, its
//! memory, and every consumer's drops (each received tag is placed in the sequence the
//! publisher sent by its timestamp; a gap is a drop) and lag.

mod media;
mod nginx;
mod ours;
mod rtmp_client;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{
    self, percentile, process_cpu_seconds, tree_cpu_seconds, tree_rss_bytes, Bins, Report,
};
use media::{MediaFile, Position, RecvStats, SendStats};
use rtmp_client::{Player, Publisher};

#[derive(clap::Args)]
pub struct Args {
    /// Numbers of concurrent publishers to step through (each with one consumer).
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
    publishers: Vec<usize>,
    /// Length of the steady measurement window of each step, in seconds.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Warm-up after the media starts and before the window, in seconds.
    #[arg(long, default_value_t = 6)]
    warmup: u64,
    /// FLV file to replay (default: made once with ffmpeg in bench-media/ beside the binaries:
    /// 1280x720 testsrc2, x264 CBR 3 Mbps, keyframe every 2 s, AAC 128k, 30 s).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Which relays to run: ours, nginx or both.
    #[arg(long, value_delimiter = ',', default_value = "ours,nginx")]
    relays: Vec<RelayKind>,
    /// Keep stepping a relay up after a step with drops.
    #[arg(long)]
    keep_going: bool,
    /// Extra environment of the ingest process (KEY=VALUE, repeatable), for experiments.
    #[arg(long = "ingest-env", value_parser = parse_env)]
    ingest_env: Vec<(String, String)>,
    /// Run the ingest under this command (split at spaces), e.g. for profiling:
    /// `--ingest-wrapper "valgrind --tool=callgrind --callgrind-out-file=/tmp/ingest.cg"`.
    #[arg(long)]
    ingest_wrapper: Option<String>,
    /// The ingest binary to run (default: the one beside this binary), e.g. to compare builds.
    #[arg(long)]
    ingest_bin: Option<std::path::PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RelayKind {
    Ours,
    Nginx,
}

impl RelayKind {
    fn name(self) -> &'static str {
        match self {
            RelayKind::Ours => "ours (ingest)",
            RelayKind::Nginx => "nginx-rtmp",
        }
    }
}

/// What one step measured.
#[derive(Debug, Default, Clone)]
struct Step {
    n: usize,
    error: Option<String>,
    connect_failures: u64,
    consumers_connected: u64,
    window_s: f64,
    cpu_s: f64,
    client_cpu_s: f64,
    rss_base: u64,
    rss_idle: u64,
    rss_active: u64,
    rss_active_max: u64,
    sent_tags: u64,
    sent_bytes: u64,
    recv_tags: u64,
    recv_bytes: u64,
    dropped_tags: u64,
    dropped_bytes: u64,
    unknown: u64,
    wrong_size: u64,
    backwards: u64,
    ended_early: u64,
    publishers_failed: u64,
    lag_p50_ms: f64,
    lag_max_ms: f64,
    late_max_ms: f64,
    late_sends: u64,
}

impl Step {
    fn cpu_per_stream_pct(&self) -> f64 {
        self.cpu_s / self.window_s / self.n as f64 * 100.0
    }
    fn idle_kb_per_publisher(&self) -> f64 {
        (self.rss_idle as f64 - self.rss_base as f64) / self.n as f64 / 1024.0
    }
    fn active_kb_per_stream(&self) -> f64 {
        (self.rss_active as f64 - self.rss_base as f64) / self.n as f64 / 1024.0
    }
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.error {
            p.push(format!("error: {e}"));
        }
        for (what, v) in [
            ("connect failures", self.connect_failures),
            ("dropped tags", self.dropped_tags),
            ("unknown tags", self.unknown),
            ("wrong-size tags", self.wrong_size),
            ("repeated/out-of-order tags", self.backwards),
            ("consumer streams ended early", self.ended_early),
            ("publishers broken", self.publishers_failed),
        ] {
            if v > 0 {
                p.push(format!("{v} {what}"));
            }
        }
        if (self.consumers_connected as usize) < self.n && self.error.is_none() {
            p.push(format!(
                "{} of {} consumers connected",
                self.consumers_connected, self.n
            ));
        }
        if self.lag_max_ms > 2000.0 {
            p.push(format!("a consumer {:.0} ms behind", self.lag_max_ms));
        }
        p
    }
    fn clean(&self) -> bool {
        self.problems().is_empty()
    }
}

pub async fn run(bins: &Bins, args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(!args.publishers.is_empty(), "--publishers is empty");
    let media_dir = bins.dir.join("bench-media");
    let path = match &args.file {
        Some(p) => p.clone(),
        None => media::ensure_default_file(&media_dir).await?,
    };
    let file = Arc::new(MediaFile::load(&path)?);
    eprintln!(
        "ingest bench: {} ({:.2} Mbps of tag data, loop {} ms, largest GOP {} KiB), steps {:?}, window {} s",
        path.display(),
        file.bitrate_bps / 1e6,
        file.loop_ms,
        file.max_gop_bytes / 1024,
        args.publishers,
        args.seconds
    );
    let dir = tempfile::Builder::new()
        .prefix("vstream-bench-ingest-")
        .tempdir()?;
    let backend = if args.relays.contains(&RelayKind::Ours) {
        Some(ours::Backend::start(bins, dir.path()).await?)
    } else {
        None
    };
    let mut results: Vec<(RelayKind, Step)> = Vec::new();
    let mut commands = Vec::new();
    let mut stopped: Vec<RelayKind> = Vec::new();
    let mut nginx_config = String::new();
    let outcome: anyhow::Result<()> = async {
        for (step_no, &n) in args.publishers.iter().enumerate() {
            for &relay in &args.relays {
                if stopped.contains(&relay) {
                    eprintln!(
                        "{}: N={n} skipped (a smaller N already had drops)",
                        relay.name()
                    );
                    continue;
                }
                let step_dir = dir.path().join(format!("step{step_no}-{relay:?}"));
                std::fs::create_dir_all(&step_dir)?;
                eprintln!("{}: N={n} ...", relay.name());
                let step = match relay {
                    RelayKind::Ours => {
                        let backend = backend.as_ref().context("no backend")?;
                        let ingest = ours::Ingest::start(
                            bins,
                            &step_dir,
                            backend,
                            &args.ingest_env,
                            args.ingest_wrapper.as_deref(),
                            args.ingest_bin.as_deref(),
                        )
                        .await?;
                        if commands.len() < 4
                            && !commands.iter().any(|c: &String| c.contains("ingest"))
                        {
                            commands.push(format!("# ours: {}", backend.redis.command));
                            commands.push(format!("# ours: {}", backend.coordinator.command));
                            commands.push(format!("# ours: {}", ingest.command));
                        }
                        let prefix = format!("s{step_no}-");
                        let result = run_step(
                            n,
                            &file,
                            &args,
                            ingest.guard.pid(),
                            StepTarget::Ours {
                                addr: ingest.rtmp,
                                backend,
                                prefix,
                            },
                        )
                        .await;
                        backend.set_run(None);
                        drop(ingest);
                        result
                    }
                    RelayKind::Nginx => {
                        let nginx = nginx::Nginx::start(&step_dir).await?;
                        if nginx_config.is_empty() {
                            commands.push(format!("# peer: {}", nginx.command));
                            nginx_config = nginx.config.clone();
                        }
                        let result = run_step(
                            n,
                            &file,
                            &args,
                            nginx.guard.pid(),
                            StepTarget::Nginx { addr: nginx.rtmp },
                        )
                        .await;
                        drop(nginx);
                        result
                    }
                };
                let step = step.unwrap_or_else(|err| Step {
                    n,
                    error: Some(format!("{err:#}")),
                    ..Step::default()
                });
                eprintln!("{}: N={n}: {}", relay.name(), summary(&step));
                if !step.clean() && !args.keep_going {
                    stopped.push(relay);
                }
                results.push((relay, step));
                // Let sockets in TIME_WAIT and the coordinator's cleanup settle.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok(())
    }
    .await;
    if let Some(backend) = backend {
        backend.shutdown().await;
    }
    outcome?;
    Ok(report(
        &args,
        &file,
        &path,
        commands,
        &nginx_config,
        &results,
    ))
}

enum StepTarget<'a> {
    Ours {
        addr: SocketAddr,
        backend: &'a ours::Backend,
        prefix: String,
    },
    Nginx {
        addr: SocketAddr,
    },
}

async fn run_step(
    n: usize,
    file: &Arc<MediaFile>,
    args: &Args,
    relay_pid: u32,
    target: StepTarget<'_>,
) -> anyhow::Result<Step> {
    let mut step = Step {
        n,
        ..Step::default()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    step.rss_base = tree_rss_bytes(relay_pid);

    let recv = Arc::new(RecvStats::default());
    let sent = Arc::new(SendStats::default());
    let positions: Vec<Arc<Position>> = (0..n).map(|_| Arc::default()).collect();
    let stop = CancellationToken::new();
    let start = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Everything this step started stops when this function returns, even on an error.
    let _stop_guard = stop.clone().drop_guard();
    let connected = Arc::new(AtomicU64::new(0));
    let consumer_failed = Arc::new(AtomicU64::new(0));

    // Where publisher `i` publishes: `rtmp://addr/{app}/{key}`.
    type Name = Box<dyn Fn(usize) -> String>;
    let (addr, app_of, key_of): (SocketAddr, Name, Name) = match &target {
        StepTarget::Ours {
            addr,
            backend,
            prefix,
        } => {
            backend.set_run(Some(Arc::new(ours::Run {
                prefix: prefix.clone(),
                file: Arc::clone(file),
                stats: Arc::clone(&recv),
                positions: positions.clone(),
                stop: stop.clone(),
                connected: Arc::clone(&connected),
                failed: Arc::clone(&consumer_failed),
            })));
            let prefix = prefix.clone();
            (
                *addr,
                Box::new(move |i| format!("{prefix}{i}")),
                Box::new(|_| "key".to_owned()),
            )
        }
        StepTarget::Nginx { addr } => (
            *addr,
            Box::new(|_| "live".to_owned()),
            Box::new(|i| format!("stream{i}")),
        ),
    };

    // Publishers (and, for nginx, their players), 16 connection setups at a time.
    let setups = futures::stream::iter(0..n)
        .map(|i| {
            let (app, key) = (app_of(i), key_of(i));
            async move { (i, Publisher::connect(addr, &app, &key).await) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let stagger_ms = u64::from(file.video_gop_ms());
    for (i, publisher) in setups {
        match publisher {
            Ok(publisher) => {
                let offset = Duration::from_millis(stagger_ms * i as u64 / n.max(1) as u64);
                let (file, start, stop, sent, position) = (
                    Arc::clone(file),
                    start.clone(),
                    stop.clone(),
                    Arc::clone(&sent),
                    Arc::clone(&positions[i]),
                );
                tasks.spawn(async move {
                    let stats = Arc::clone(&sent);
                    if let Err(err) = publisher
                        .run(file, start, offset, stop.clone(), sent, position)
                        .await
                    {
                        if !stop.is_cancelled() {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(publisher = i, %err, "publisher broke");
                        }
                    }
                });
            }
            Err(err) => {
                step.connect_failures += 1;
                if step.connect_failures <= 3 {
                    eprintln!("  publisher {i}: {err:#}");
                }
            }
        }
    }
    if let StepTarget::Nginx { addr } = &target {
        let players = futures::stream::iter(0..n)
            .map(|i| {
                let name = key_of(i);
                let addr = *addr;
                async move { (i, Player::connect(addr, "live", &name).await) }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for (i, player) in players {
            match player {
                Ok(player) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    let (file, stop, recv, position) = (
                        Arc::clone(file),
                        stop.clone(),
                        Arc::clone(&recv),
                        Arc::clone(&positions[i]),
                    );
                    tasks.spawn(async move {
                        let stats = Arc::clone(&recv);
                        if let Err(err) = player.run(file, stop.clone(), recv, position).await {
                            if !stop.is_cancelled() {
                                stats.ended_early.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(player = i, %err, "player broke");
                            }
                        }
                    });
                }
                Err(err) => {
                    consumer_failed.fetch_add(1, Ordering::Relaxed);
                    if consumer_failed.load(Ordering::Relaxed) <= 3 {
                        eprintln!("  player {i}: {err:#}");
                    }
                }
            }
        }
    }
    let expected = n as u64 - step.connect_failures;
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected.load(Ordering::Relaxed) + consumer_failed.load(Ordering::Relaxed) < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step.consumers_connected = connected.load(Ordering::Relaxed);
    eprintln!(
        "  {} publishers, {} consumers connected; idle",
        expected, step.consumers_connected
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    step.rss_idle = tree_rss_bytes(relay_pid);

    start.cancel();
    tokio::time::sleep(Duration::from_secs(args.warmup.max(1)) + Duration::from_millis(stagger_ms))
        .await;

    sent.max_late_us.store(0, Ordering::Relaxed);
    sent.late_sends.store(0, Ordering::Relaxed);
    let snap = |s: &SendStats, r: &RecvStats| {
        [
            s.tags.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
            r.tags.load(Ordering::Relaxed),
            r.bytes.load(Ordering::Relaxed),
            r.dropped_tags.load(Ordering::Relaxed),
            r.dropped_bytes.load(Ordering::Relaxed),
            r.unknown.load(Ordering::Relaxed),
            r.wrong_size.load(Ordering::Relaxed),
            r.backwards.load(Ordering::Relaxed),
        ]
    };
    let before = snap(&sent, &recv);
    let cpu0 = tree_cpu_seconds(relay_pid);
    let me = std::process::id();
    let client0 = process_cpu_seconds(me);
    let t0 = Instant::now();
    eprintln!("  media flowing; measuring {} s", args.seconds);
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(tree_rss_bytes(relay_pid));
    }
    let after = snap(&sent, &recv);
    step.cpu_s = tree_cpu_seconds(relay_pid) - cpu0;
    step.client_cpu_s = process_cpu_seconds(me) - client0;
    step.window_s = t0.elapsed().as_secs_f64();
    step.rss_active = tree_rss_bytes(relay_pid);
    step.rss_active_max = rss_max.max(step.rss_active);
    let d: Vec<u64> = after
        .iter()
        .zip(before.iter())
        .map(|(a, b)| a - b)
        .collect();
    [
        step.sent_tags,
        step.sent_bytes,
        step.recv_tags,
        step.recv_bytes,
        step.dropped_tags,
        step.dropped_bytes,
        step.unknown,
        step.wrong_size,
        step.backwards,
    ] = [d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]];
    let mut lags: Vec<f64> = positions
        .iter()
        .filter_map(|p| {
            let s = p.sent_ts.load(Ordering::Relaxed);
            let r = p.recv_ts.load(Ordering::Relaxed);
            (s > 0).then(|| {
                if r == 0 {
                    f64::INFINITY
                } else {
                    s.saturating_sub(r) as f64
                }
            })
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    step.lag_p50_ms = percentile(&lags, 50.0);
    step.lag_max_ms = lags.last().copied().unwrap_or(f64::NAN);
    step.late_max_ms = sent.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0;
    step.late_sends = sent.late_sends.load(Ordering::Relaxed);
    step.ended_early = recv.ended_early.load(Ordering::Relaxed);
    step.publishers_failed = sent.failed.load(Ordering::Relaxed);
    step.connect_failures += consumer_failed.load(Ordering::Relaxed);

    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        eprintln!("  some clients did not stop within 10 s");
    }
    Ok(step)
}

fn summary(s: &Step) -> String {
    if let Some(e) = &s.error {
        return format!("FAILED: {e}");
    }
    let cores = (s.cpu_s + s.client_cpu_s) / s.window_s;
    let machine = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let saturation = if cores > 0.8 * machine || s.late_sends > 0 {
        format!(
            " [relay + client used {cores:.2} of {machine:.0} cores, {} sends more than 100 ms late: the machine or the client is near saturation]",
            s.late_sends
        )
    } else {
        String::new()
    };
    format!(
        "CPU {:.2}% of a core per stream ({:.1}% total), RSS idle +{:.0} KiB/publisher, active +{:.0} KiB/stream, recv/sent {:.4}, lag p50 {:.0} ms max {:.0} ms, client CPU {:.0}%, publisher lateness max {:.0} ms{}{saturation}",
        s.cpu_per_stream_pct(),
        s.cpu_s / s.window_s * 100.0,
        s.idle_kb_per_publisher(),
        s.active_kb_per_stream(),
        s.recv_bytes as f64 / s.sent_bytes.max(1) as f64,
        s.lag_p50_ms,
        s.lag_max_ms,
        s.client_cpu_s / s.window_s * 100.0,
        s.late_max_ms,
        if s.clean() {
            ", no drops".to_owned()
        } else {
            format!("; PROBLEMS: {}", s.problems().join(", "))
        }
    )
}

fn report(
    args: &Args,
    file: &MediaFile,
    path: &std::path::Path,
    mut commands: Vec<String>,
    nginx_config: &str,
    results: &[(RelayKind, Step)],
) -> Report {
    let mut cmd = format!(
        "cargo run --release -p vstream-bench -- ingest --publishers {} --seconds {} --warmup {}",
        args.publishers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.seconds,
        args.warmup
    );
    if let Some(f) = &args.file {
        cmd.push_str(&format!(" --file {}", f.display()));
    }
    if args.relays != [RelayKind::Ours, RelayKind::Nginx] {
        let relays: Vec<&str> = args
            .relays
            .iter()
            .map(|r| match r {
                RelayKind::Ours => "ours",
                RelayKind::Nginx => "nginx",
            })
            .collect();
        cmd.push_str(&format!(" --relays {}", relays.join(",")));
    }
    if args.keep_going {
        cmd.push_str(" --keep-going");
    }
    for (k, v) in &args.ingest_env {
        cmd.push_str(&format!(" --ingest-env {k}={v}"));
    }
    if let Some(w) = &args.ingest_wrapper {
        cmd.push_str(&format!(" --ingest-wrapper {w:?}"));
    }
    if let Some(b) = &args.ingest_bin {
        cmd.push_str(&format!(" --ingest-bin {}", b.display()));
    }
    commands.insert(0, cmd);
    if args.file.is_none() {
        commands.insert(1, format!("# the file: {}", media::ffmpeg_command(path)));
    }
    let get = |relay: RelayKind, n: usize| {
        results
            .iter()
            .find(|(r, s)| *r == relay && s.n == n && s.error.is_none())
            .map(|(_, s)| s)
    };
    let f = |v: Option<f64>, digits: usize| {
        v.filter(|v| v.is_finite())
            .map_or("–".to_owned(), |v| format!("{v:.digits$}"))
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    };
    let drops = |s: Option<&Step>| {
        s.map_or("–".to_owned(), |s| {
            if s.clean() {
                "none".to_owned()
            } else {
                s.problems().join("; ")
            }
        })
    };
    let mut table = vec![vec![
        "N".to_owned(),
        "CPU/stream ours (% core)".to_owned(),
        "CPU/stream nginx-rtmp".to_owned(),
        "ratio".to_owned(),
        "RSS/idle publisher ours (KiB)".to_owned(),
        "nginx-rtmp".to_owned(),
        "RSS/active stream ours (KiB)".to_owned(),
        "nginx-rtmp".to_owned(),
        "drops ours".to_owned(),
        "drops nginx-rtmp".to_owned(),
    ]];
    for &n in &args.publishers {
        let (o, p) = (get(RelayKind::Ours, n), get(RelayKind::Nginx, n));
        let cpu = |s: Option<&Step>| s.map(Step::cpu_per_stream_pct);
        let idle = |s: Option<&Step>| s.map(Step::idle_kb_per_publisher);
        let active = |s: Option<&Step>| s.map(Step::active_kb_per_stream);
        let any = |relay| {
            results
                .iter()
                .find(|(r, s)| *r == relay && s.n == n)
                .map(|(_, s)| s)
        };
        table.push(vec![
            n.to_string(),
            f(cpu(o), 3),
            f(cpu(p), 3),
            ratio(cpu(o), cpu(p)),
            f(idle(o), 0),
            f(idle(p), 0),
            f(active(o), 0),
            f(active(p), 0),
            drops(any(RelayKind::Ours)),
            drops(any(RelayKind::Nginx)),
        ]);
    }
    let largest = |relay: RelayKind| {
        results
            .iter()
            .filter(|(r, s)| *r == relay && s.clean())
            .map(|(_, s)| s.n)
            .max()
            .map_or("none".to_owned(), |n| n.to_string())
    };
    let mut raw = format!(
        "machine: {}\nload average at the end: {}\nfile: {} ({:.2} Mbps of tag data, {} video + {} audio tags per {} ms loop, largest GOP {} KiB)\n\
         each step: relay started alone; RSS base after 1 s; N publishers + N consumers connected, idle 3 s (RSS idle); media started (spread over {} ms); warm-up {} s; window {} s\n\
         CPU = user+system of the relay's process tree (ours: the ingest process; nginx: master + 1 worker) over the window; the bench client, redis-server and coordinator-fn are not counted\n\
         RSS per idle publisher = (RSS idle - RSS base) / N; per active stream = (RSS at the end of the window - RSS base) / N; target: <= 1024 KiB per idle publisher, plus the GOP cache when active\n\
         drops: every received tag is placed in the sent sequence by its timestamp; a gap counts its tags; a consumer more than 2 s behind counts too\n\
         largest N without drops: ours {}, nginx-rtmp {}\n\n",
        common::machine(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        path.display(),
        file.bitrate_bps / 1e6,
        file.video.ts.len(),
        file.audio.ts.len(),
        file.loop_ms,
        file.max_gop_bytes / 1024,
        file.video_gop_ms(),
        args.warmup,
        args.seconds,
        largest(RelayKind::Ours),
        largest(RelayKind::Nginx),
    );
    for (relay, s) in results {
        raw.push_str(&format!(
            "{} N={}: {}\n    window {:.1} s, relay CPU {:.2} s, RSS base {} KiB, idle {} KiB, active {} KiB (max {} KiB), sent {} tags / {} bytes, received {} tags / {} bytes, dropped {} tags / {} bytes, client CPU {:.2} s, late sends (>100 ms) {}\n",
            relay.name(),
            s.n,
            summary(s),
            s.window_s,
            s.cpu_s,
            s.rss_base / 1024,
            s.rss_idle / 1024,
            s.rss_active / 1024,
            s.rss_active_max / 1024,
            s.sent_tags,
            s.sent_bytes,
            s.recv_tags,
            s.recv_bytes,
            s.dropped_tags,
            s.dropped_bytes,
            s.client_cpu_s,
            s.late_sends,
        ));
    }
    if !nginx_config.is_empty() {
        raw.push_str("\nnginx.conf of the peer:\n");
        raw.push_str(nginx_config);
    }
    Report {
        title: "Ingest: RTMP relay of N publishers, ours against nginx-rtmp".to_owned(),
        commands,
        table,
        raw,
    }
}
