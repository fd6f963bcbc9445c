//! The latency benchmark: three delays of the real system (the all-in-one `vstream` storing to
//! a local LocalStack S3, events going to a web-app stub), each over repeated samples.
//!
//! 1. **publish → first `HLS-LIVE`**: from the instant the publisher's RTMP connection is
//!    accepted (a TCP relay in front of the RTMP port records it) to the instant the web app
//!    receives the first `HLS-LIVE` event callback of the stream; one new channel per run, at
//!    the low-latency segment duration and at the default one (`HLS_TIME_SECONDS`).
//! 2. **segment closed → playlist in S3**: *closed* is the instant ffmpeg renames the finished
//!    `{N}.ts.tmp` to `{N}.ts` in the encoder's work directory (inotify, from outside the
//!    process); *readable* is the instant a GET of the rendition's `live.m3u8` from the bucket,
//!    repeated every `--poll-ms` from the close on, first returns a playlist naming `{N}.ts`.
//!    The number reported is that GET's completion (an upper bound); the previous GET, which
//!    did not name it, bounds it from below.
//! 3. **glass to glass**: the benchmark draws the frames itself, each carrying the wall-clock
//!    time (ms, a row of 32 black/white blocks and its inverse), pipes them to ffmpeg (x264
//!    zerolatency, 1 s GOP) which publishes them over RTMP as they are made; headless Chromium
//!    plays the stream's master playlist from the bucket with hls.js, reads the blocks of every
//!    displayed frame (`requestVideoFrameCallback`, canvas) and records `Date.now() - stamp`.
//!    Same machine, same clock.

mod glass;
mod procs;
mod publish;
mod s3;
mod segments;
mod startup;
mod system;
mod workdir;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use contract::resolution::{fit_renditions, parse_list};
use contract::SourceVideo;

use crate::common::{self, Bins, Report};
use system::{Vstream, WebApp};

/// The all-in-one's default ladder (`DEFAULT_RESOLUTIONS`, src/config.rs).
const DEFAULT_LADDER: &str = "ORIGINAL,854x480-30~1400,640x360-30~800";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    /// publish → first HLS-LIVE event
    Startup,
    /// segment closed → live playlist naming it readable in S3
    Segments,
    /// glass to glass with hls.js in headless Chromium
    Glass,
}

/// The options, boxed: the sub-commands' arguments stay small side by side.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Box<Options>,
}

#[derive(clap::Args)]
pub struct Options {
    /// Publishes timed per segment duration (publish → first HLS-LIVE).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Segment duration (HLS_TIME_SECONDS) of the low-latency setup all three measurements use.
    #[arg(long, default_value_t = 1.0)]
    segment_seconds: f64,
    /// publish → HLS-LIVE is timed at this segment duration too (0 = not).
    #[arg(long, default_value_t = encoder::config::DEFAULT_HLS_TIME)]
    default_segment_seconds: f64,
    /// Segments timed from close to playlist, per rendition.
    #[arg(long, default_value_t = 60)]
    segments: usize,
    /// Interval of the GETs of a live playlist while a closed segment is awaited, in ms.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Seconds of glass-to-glass samples per player session, from the first decoded frame.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Player sessions per hls.js configuration: each starts at its own point of the playlist
    /// reload cycle, which sets its latency for good (up to a segment apart between sessions).
    #[arg(long, default_value_t = 5)]
    sessions: usize,
    /// hls.js configurations played, one JSON object each (`{}` = hls.js defaults).
    #[arg(long = "hls-config", default_values = ["{}", r#"{"liveSyncDurationCount":1}"#])]
    hls_configs: Vec<String>,
    /// Picture size of the test-pattern publisher (measurements 1 and 2).
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// Picture size of the clock publisher (glass to glass); the width a multiple of 32.
    #[arg(long, default_value = "640x360")]
    clock_size: String,
    /// The ladder the web-app stub answers key verification with (`x-resolutions`).
    #[arg(long, default_value = DEFAULT_LADDER)]
    resolutions: String,
    /// Which measurements (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "startup,segments,glass"
    )]
    only: Vec<Measure>,
    /// The web/ folder: hls.js and playwright-core (`npm ci --prefix web`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))]
    web_dir: PathBuf,
    /// Chromium (headless).
    #[arg(long, env = "CHROMIUM_PATH", default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// More environment for vstream, `NAME=VALUE` (repeatable), e.g. HLS_H264_PRESET=ultrafast.
    #[arg(long = "vstream-env", value_parser = parse_env)]
    vstream_env: Vec<(String, String)>,
    /// Keep the temporary folder (logs of vstream, LocalStack, ffmpeg, Chromium).
    #[arg(long)]
    keep: bool,
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not NAME=VALUE"))
}

/// n, min, p50, p99, max of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Stats {
            n: sorted.len(),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            p50: common::percentile(&sorted, 50.0),
            p99: common::percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// One row of the report's table.
pub struct Row {
    pub measurement: String,
    pub stats: Stats,
    /// Unit for display: values are seconds, shown in `ms` or `s`.
    pub unit: Unit,
    /// The target on p99 in seconds, if any.
    pub target: Option<f64>,
}

#[derive(Clone, Copy)]
pub enum Unit {
    Ms,
    S,
}

impl Unit {
    pub fn show(self, seconds: f64) -> String {
        if seconds.is_nan() {
            return "-".to_owned();
        }
        match self {
            Unit::Ms => format!("{:.0} ms", seconds * 1000.0),
            Unit::S => format!("{seconds:.2} s"),
        }
    }
}

/// What one measurement adds to the report.
#[derive(Default)]
pub struct Section {
    pub rows: Vec<Row>,
    pub raw: String,
    pub commands: Vec<String>,
}

/// The renditions of a source of `size` under `ladder`, in the encoder's variant order.
pub fn expected_renditions(ladder: &str, size: &str) -> anyhow::Result<Vec<String>> {
    let (w, h) = parse_size(size)?;
    let (requests, _) = parse_list(Some(ladder));
    let source = SourceVideo {
        width: w,
        height: h,
        fps: 30.0,
    };
    Ok(fit_renditions(&requests, source)
        .iter()
        .map(contract::Rendition::name)
        .collect())
}

pub fn parse_size(size: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    parsed.ok_or_else(|| anyhow::anyhow!("{size:?} is not WIDTHxHEIGHT"))
}

/// Busy and total jiffies of all CPUs so far (/proc/stat).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU seconds (user + system) of one process alone, without its children.
fn own_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // utime and stime are fields 14 and 15; after the command name, 12 and 13 (1-based).
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// CPU use during one measurement: the whole machine's and vstream's (with its ffmpeg
/// children).
struct CpuWindow {
    machine: (u64, u64),
    vstream: f64,
    own: f64,
    at: Instant,
    pid: u32,
}

impl CpuWindow {
    fn start(pid: u32) -> Self {
        CpuWindow {
            machine: cpu_jiffies(),
            vstream: common::tree_cpu_seconds(pid),
            own: own_cpu_seconds(pid),
            at: Instant::now(),
            pid,
        }
    }

    fn describe(&self) -> String {
        let (busy, total) = cpu_jiffies();
        let machine = (busy.saturating_sub(self.machine.0)) as f64
            / (total.saturating_sub(self.machine.1)).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let vstream = (common::tree_cpu_seconds(self.pid) - self.vstream) / seconds;
        let own = (own_cpu_seconds(self.pid) - self.own) / seconds;
        format!(
            "  CPU over these {seconds:.0} s: machine {:.0} % busy ({cores} cores, everything running on it); \
             vstream with its ffmpeg children {vstream:.3} cores, vstream alone {own:.3}; vstream's resident memory {:.0} MiB\n",
            machine * 100.0,
            common::tree_rss_bytes(self.pid) as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Load averages (1, 5, 15 min) and the number of cores, for the report.
pub fn load() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let parts: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("load average {}", parts.join(" "))
}

pub async fn run(bins: &Bins, args: Args) -> anyhow::Result<Report> {
    let args = *args.options;
    let vstream = bins.path("vstream")?;
    parse_size(&args.size)?;
    parse_size(&args.clock_size)?;
    let mut tmp = tempfile::Builder::new()
        .prefix("vstream-latency-")
        .tempdir()?;
    if args.keep {
        tmp.disable_cleanup(true);
    }
    eprintln!("latency: working in {}", tmp.path().display());
    let result = tokio::select! {
        result = measure(&vstream, &args, tmp.path()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if result.is_err() && !args.keep {
        eprintln!("latency: failed; run with --keep to keep the logs");
    }
    result
}

async fn measure(
    vstream: &std::path::Path,
    args: &Options,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    if args.only.contains(&Measure::Glass) {
        glass::check_prerequisites(args)?;
    }
    let load_before = load();
    let s3 = s3::LocalStack::start(&dir.join("localstack")).await?;
    let app = WebApp::start(&args.resolutions).await?;
    let mut sections: Vec<Section> = Vec::new();
    let mut commands = vec![format!(
        "cargo build --release --workspace --bins && target/release/bench latency{}",
        std::env::args()
            .skip_while(|a| a != "latency")
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    )];

    let fast = args.segment_seconds;
    let mut durations = vec![fast];
    if args.only.contains(&Measure::Startup)
        && args.default_segment_seconds > 0.0
        && (args.default_segment_seconds - fast).abs() > 1e-9
    {
        durations.push(args.default_segment_seconds);
    }
    for (i, &hls_time) in durations.iter().enumerate() {
        let sys_dir = dir.join(format!("vstream-{i}"));
        std::fs::create_dir_all(&sys_dir)?;
        eprintln!("latency: starting vstream with {hls_time} s segments");
        let mut sys =
            Vstream::start(vstream, &sys_dir, &s3, &app, hls_time, &args.vstream_env).await?;
        commands.push(format!("# system under test\n{} vstream", sys.env_line()));
        if args.only.contains(&Measure::Startup) {
            let cpu = CpuWindow::start(sys.pid());
            let mut section = startup::run(&mut sys, &app, args, hls_time, &sys_dir).await?;
            section.raw.push_str(&cpu.describe());
            sections.push(section);
        }
        if i == 0 && args.only.contains(&Measure::Segments) {
            let cpu = CpuWindow::start(sys.pid());
            let mut section = segments::run(&mut sys, &app, &s3, args, hls_time, &sys_dir).await?;
            section.raw.push_str(&cpu.describe());
            sections.push(section);
        }
        if i == 0 && args.only.contains(&Measure::Glass) {
            let cpu = CpuWindow::start(sys.pid());
            let mut section = glass::run(&mut sys, &app, &s3, args, hls_time, &sys_dir).await?;
            section.raw.push_str(&cpu.describe());
            sections.push(section);
        }
        sys.stop().await?;
    }
    s3.stop().await;
    let load_after = load();

    let mut table = vec![[
        "measurement",
        "p50",
        "p99",
        "n",
        "min",
        "max",
        "target",
        "met?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    let mut raw = format!(
        "machine: {}\nbefore: {load_before}\nafter: {load_after}\n",
        common::machine()
    );
    for section in &sections {
        for row in &section.rows {
            let s = row.stats;
            let (target, met) = match row.target {
                Some(t) => (
                    format!("≤ {} p99", row.unit.show(t)),
                    if s.n == 0 {
                        "-".to_owned()
                    } else if s.p99 <= t {
                        "yes".to_owned()
                    } else {
                        "**no**".to_owned()
                    },
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            table.push(vec![
                row.measurement.clone(),
                row.unit.show(s.p50),
                row.unit.show(s.p99),
                s.n.to_string(),
                row.unit.show(s.min),
                row.unit.show(s.max),
                target,
                met,
            ]);
        }
        commands.extend(section.commands.iter().cloned());
        raw.push('\n');
        raw.push_str(&section.raw);
    }
    Ok(Report {
        title: format!(
            "Latency: publish to HLS-LIVE, segment to playlist, glass to glass ({} s segments, LocalStack S3)",
            args.segment_seconds
        ),
        commands,
        table,
        raw,
    })
}

/// Wall-clock milliseconds of an `Instant`, from one reading of both clocks.
#[derive(Clone, Copy)]
pub struct Clocks {
    instant: Instant,
    wall_ms: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Clocks {
            instant: Instant::now(),
            wall_ms: publish::now_ms(),
        }
    }

    pub fn wall(self, at: Instant) -> f64 {
        if at >= self.instant {
            self.wall_ms as f64 + (at - self.instant).as_secs_f64() * 1000.0
        } else {
            self.wall_ms as f64 - (self.instant - at).as_secs_f64() * 1000.0
        }
    }
}

/// Waits up to `limit` for the `stream-closed` event of `stream_id`.
pub async fn wait_closed(app: &WebApp, stream_id: &str, limit: Duration) -> anyhow::Result<()> {
    app.wait_for(limit, "stream-closed", |events| {
        events
            .iter()
            .any(|e| e.stream_id == stream_id && e.event_type == "stream-closed")
            .then_some(())
    })
    .await
}
