//! Measurement 3: glass to glass. The clock publisher's frames carry their capture time; a page
//! served from the bucket plays the stream's master playlist with hls.js in headless Chromium
//! and decodes every displayed frame (bench/assets/latency-player.html, driven by
//! bench/assets/latency-player.mjs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::procs::{log_tail, Proc};
use super::publish::{self, read_code, unwrap_code, ClockPublisher};
use super::s3::LocalStack;
use super::segments::{playlists_summary, poll_playlist, Seen, WARM_UP_SEGMENTS};
use super::system::{hls_live, Vstream, WebApp};
use super::workdir::{Produced, WorkDirWatcher};
use super::{
    expected_renditions, parse_size, wait_closed, Clocks, Options, Row, Section, Stats, Unit,
};

const PAGE: &str = include_str!("../../assets/latency-player.html");
const SCRIPT: &str = include_str!("../../assets/latency-player.mjs");
/// Target of the measurement, p99, with 1 s segments.
const TARGET: f64 = 4.0;

/// The result file the player script writes.
#[derive(serde::Deserialize)]
struct PlayerResult {
    #[serde(default)]
    samples: Vec<(f64, f64)>,
    #[serde(default)]
    info: serde_json::Value,
    #[serde(default)]
    state: serde_json::Value,
    #[serde(default, rename = "startupMs")]
    startup_ms: Option<f64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    logs: Vec<String>,
}

/// What the glass-to-glass measurement needs besides the system: hls.js and playwright-core
/// in web/node_modules, Chromium, node.
pub fn check_prerequisites(args: &Options) -> anyhow::Result<()> {
    let hls_js = args.web_dir.join("node_modules/hls.js/dist/hls.min.js");
    anyhow::ensure!(
        hls_js.is_file() && args.web_dir.join("node_modules/playwright-core").is_dir(),
        "hls.js or playwright-core is missing in {}: run `npm ci --prefix web` first (or pass --web-dir)",
        args.web_dir.display()
    );
    anyhow::ensure!(
        args.chromium.is_file(),
        "no Chromium at {} (apt-get install chromium, or CHROMIUM_PATH)",
        args.chromium.display()
    );
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .context("node is needed for the glass-to-glass measurement")?;
    anyhow::ensure!(node.status.success(), "node --version failed");
    Ok(())
}

/// One segment of the clock stream, followed through the pipeline.
#[derive(Debug, Default, Clone)]
struct Tracked {
    /// ffmpeg renamed `{N}.ts.tmp` to `{N}.ts`.
    closed: Option<Instant>,
    /// The first GET of the live playlist naming it completed.
    listed: Option<Instant>,
    /// The segment, fetched from the bucket once listed.
    file: Option<PathBuf>,
}

/// Follows every segment of `stream_id`: its close in the work directory, its appearance in
/// the live playlist, and fetches it from the bucket (to read its first frame's time code
/// later), until `stop`.
#[allow(clippy::too_many_arguments)]
async fn track(
    mut watcher: WorkDirWatcher,
    stream_id: String,
    live_urls: Vec<String>,
    poll: Duration,
    dir: PathBuf,
    stop: CancellationToken,
) -> HashMap<(usize, u64), Tracked> {
    let client = reqwest::Client::new();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, Seen)>();
    let mut to_pollers = Vec::new();
    let mut pollers = Vec::new();
    for (variant, url) in live_urls.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        to_pollers.push(tx);
        pollers.push(tokio::spawn(poll_playlist(
            client.clone(),
            url.clone(),
            poll,
            variant,
            rx,
            seen_tx.clone(),
        )));
    }
    drop(seen_tx);
    let mut tracked: HashMap<(usize, u64), Tracked> = HashMap::new();
    let mut fetches = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = watcher.events.recv() => {
                let Some(event) = event else { break };
                if event.stream_id != stream_id || event.run != "run-0" || event.variant >= live_urls.len() {
                    continue;
                }
                if let Produced::Segment(index) = event.produced {
                    tracked.entry((event.variant, index)).or_default().closed = Some(event.at);
                    let _ = to_pollers[event.variant].send((index, event.at));
                }
            }
            seen = seen_rx.recv() => {
                let Some((variant, seen)) = seen else { break };
                tracked.entry((variant, seen.index)).or_default().listed = Some(seen.after);
                let url = live_urls[variant].replace("live.m3u8", &format!("{}.ts", seen.index));
                let path = dir.join(format!("segment-{variant}-{}.ts", seen.index));
                let client = client.clone();
                fetches.spawn(async move {
                    let body = client.get(&url).send().await.ok()?.error_for_status().ok()?.bytes().await.ok()?;
                    tokio::fs::write(&path, &body).await.ok()?;
                    Some((variant, seen.index, path))
                });
            }
        }
    }
    for poller in pollers {
        poller.abort();
    }
    while let Ok(Some(fetched)) =
        tokio::time::timeout(Duration::from_secs(10), fetches.join_next()).await
    {
        if let Ok(Some((variant, index, path))) = fetched {
            tracked.entry((variant, index)).or_default().file = Some(path);
        }
    }
    tracked
}

/// The time code of the first frame of a segment file, scaled to `width`×`height`.
async fn first_frame_code(path: &Path, width: u32, height: u32) -> Option<u32> {
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-vf"])
        .arg(format!("scale={width}:{height}"))
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"])
        .output()
        .await
        .ok()?;
    read_code(&output.stdout, width, height)
}

pub async fn run(
    sys: &mut Vstream,
    app: &WebApp,
    s3: &LocalStack,
    args: &Options,
    hls_time: f64,
    dir: &Path,
) -> anyhow::Result<Section> {
    check_prerequisites(args)?;
    let hls_js = args.web_dir.join("node_modules/hls.js/dist/hls.min.js");
    let hls_js =
        std::fs::read(&hls_js).with_context(|| format!("cannot read {}", hls_js.display()))?;
    // The page and hls.js in the bucket: same origin as the playlists.
    s3.put(
        "bench/latency-player.html",
        PAGE.as_bytes().to_vec(),
        "text/html; charset=utf-8",
    )
    .await?;
    s3.put("bench/hls.min.js", hls_js, "text/javascript")
        .await?;
    let script = dir.join("latency-player.mjs");
    std::fs::write(&script, SCRIPT)?;
    let web_dir = std::fs::canonicalize(&args.web_dir)?;

    let (width, height) = parse_size(&args.clock_size)?;
    let channel = "glass";
    let url = format!("rtmp://{}/{channel}/bench-key", sys.rtmp);
    let watcher = WorkDirWatcher::start(&sys.work_dir)?;
    let expected = expected_renditions(&args.resolutions, &args.clock_size)?;
    let mut publisher =
        ClockPublisher::start(width, height, &url, dir, &dir.join("publisher-glass.log"))?;
    eprintln!("latency: glass: publishing the clock picture ({width}x{height})");
    let live = app
        .wait_for(
            Duration::from_secs(60),
            "an HLS-LIVE event per rendition",
            |events| {
                let live = hls_live(events, channel);
                (live.len() >= expected.len()).then_some(live)
            },
        )
        .await;
    sys.check_alive()?;
    publisher.check_alive()?;
    let live = live?;
    let first = live[0].clone();
    let master = s3.path(&first.master_index_file);
    // Variant i of ffmpeg's output is rendition expected[i] (contract::fit_renditions order).
    let mut live_urls = Vec::new();
    let mut named_urls = Vec::new();
    for name in &expected {
        let event = live
            .iter()
            .find(|e| e.resolution == *name)
            .ok_or_else(|| anyhow::anyhow!("no HLS-LIVE event for {name} (got {live:?})"))?;
        live_urls.push(s3.url(&event.index_file));
        named_urls.push((name.clone(), s3.url(&event.index_file)));
    }
    let segments_dir = dir.join("glass-segments");
    std::fs::create_dir_all(&segments_dir)?;
    let clocks = Clocks::now();
    let stop_tracking = CancellationToken::new();
    let tracker = tokio::spawn(track(
        watcher,
        first.stream_id.clone(),
        live_urls,
        Duration::from_millis(args.poll_ms),
        segments_dir,
        stop_tracking.clone(),
    ));
    // The tracker stops on every way out of this function, errors included.
    let stop_tracking = stop_tracking.drop_guard();

    let mut rows = Vec::new();
    let mut raw = format!(
        "glass to glass ({width}x{height} clock picture, x264 ultrafast zerolatency 1 s GOP, AAC silence; \
         hls.js in headless Chromium from {}, samples = Date.now() - capture time of every displayed frame, \
         per session {} s from the first decoded frame, each session a new browser):\n",
        s3.endpoint, args.seconds
    );
    for (i, config) in args.hls_configs.iter().enumerate() {
        serde_json::from_str::<serde_json::Value>(config)
            .with_context(|| format!("--hls-config {config:?} is not JSON"))?;
        let described = if config.trim() == "{}" {
            "hls.js defaults".to_owned()
        } else {
            format!("hls.js {config}")
        };
        let page = format!(
            "{}?src={}&config={}",
            s3.url("bench/latency-player.html"),
            urlencode(&master),
            urlencode(config)
        );
        let mut all = Vec::new();
        let mut lines = String::new();
        let mut effective = serde_json::Value::Null;
        for session in 0..args.sessions {
            eprintln!(
                "latency: glass: {described}: session {}/{}, {} s",
                session + 1,
                args.sessions,
                args.seconds
            );
            let name = format!("player-{i}-{session}");
            let result = play(&script, &web_dir, args, &page, dir, &name).await;
            sys.check_alive()?;
            let result = result?;
            let start = result.samples.first().map_or(0.0, |s| s.0);
            let window: Vec<f64> = result
                .samples
                .iter()
                .filter(|s| s.0 - start <= args.seconds as f64 * 1000.0)
                .map(|s| s.1 / 1000.0)
                .collect();
            let stats = Stats::of(&window);
            all.extend(window);
            effective = result.info["config"].clone();
            lines.push_str(&format!(
                "    session {session}: p50 {:.3} s, p99 {:.3} s, min {:.3} s, max {:.3} s over {} frames; first frame {} ms after opening; \
                 {} unreadable, {} waiting events, target duration {}, levels {}, errors {}; hls.js at the end: latency {:.3}, targetLatency {}, buffered {:.3}\n",
                stats.p50,
                stats.p99,
                stats.min,
                stats.max,
                stats.n,
                result.startup_ms.map_or("-".to_owned(), |v| format!("{v:.0}")),
                result.info["undecodable"],
                result.info["waiting"],
                result.info["targetDuration"],
                result.info["levels"],
                result.info["errors"],
                result.state["latency"].as_f64().unwrap_or(f64::NAN),
                result.state["targetLatency"],
                result.state["buffered"].as_f64().unwrap_or(f64::NAN),
            ));
        }
        let stats = Stats::of(&all);
        eprintln!(
            "latency: glass: {described}: p50 {:.2} s, p99 {:.2} s over {} frames",
            stats.p50, stats.p99, stats.n
        );
        rows.push(Row {
            measurement: format!("glass to glass, {described}, {hls_time} s segments"),
            stats,
            unit: Unit::S,
            target: ((hls_time - 1.0).abs() < 1e-9).then_some(TARGET),
        });
        raw.push_str(&format!(
            "  {described}, effective config {effective}:\n{lines}"
        ));
    }
    raw.push_str(&playlists_summary(&named_urls).await);
    drop(stop_tracking);
    let tracked = tracker.await.unwrap_or_default();
    drop(publisher);
    if let Err(err) = wait_closed(app, &first.stream_id, Duration::from_secs(30)).await {
        eprintln!("latency: glass: {err}");
    }
    eprintln!(
        "latency: glass: reading the time codes of {} segments",
        tracked.len()
    );
    let (pipeline_rows, pipeline_raw) = pipeline(&tracked, &expected, width, height, clocks).await;
    rows.extend(pipeline_rows);
    raw.push_str(&pipeline_raw);
    Ok(Section {
        rows,
        raw,
        commands: vec![
            format!(
                "# clock publisher (measurement 3): the bench writes {width}x{height} gray frames to its stdin, 30 a second, and 20 ms of silence every 20 ms to the FIFO\nffmpeg {}",
                publish::clock_args(width, height, "clock-audio.fifo", "rtmp://127.0.0.1:$RTMP_PORT/glass/bench-key").join(" ")
            ),
            "# player: node bench/assets/latency-player.mjs (headless Chromium, hls.js of web/node_modules) on bench/assets/latency-player.html served from the bucket".to_owned(),
        ],
    })
}

/// Where the time goes before the player: per rendition, from the capture of the first frame
/// of segment N+1 (the keyframe whose arrival ends segment N) to the close of N, from the
/// close to the playlist naming it, and from the capture of N's first frame to that playlist.
async fn pipeline(
    tracked: &HashMap<(usize, u64), Tracked>,
    renditions: &[String],
    width: u32,
    height: u32,
    clocks: Clocks,
) -> (Vec<Row>, String) {
    let mut codes: HashMap<(usize, u64), u64> = HashMap::new();
    for (&(variant, index), t) in tracked {
        let (Some(file), Some(closed)) = (&t.file, t.closed) else {
            continue;
        };
        if let Some(code) = first_frame_code(file, width, height).await {
            codes.insert(
                (variant, index),
                unwrap_code(code, clocks.wall(closed) as u64),
            );
        }
    }
    let mut rows = Vec::new();
    let mut raw = String::from(
        "  pipeline of the clock stream (per rendition; capture = the time code of a segment's first frame, \
         read from the segment fetched from the bucket; closed and listed as in the segment measurement; \
         segments 0..1 not counted):\n",
    );
    for (variant, name) in renditions.iter().enumerate() {
        let mut to_close = Vec::new();
        let mut to_listed = Vec::new();
        let mut capture_to_listed = Vec::new();
        let mut durations = Vec::new();
        for (&(v, index), t) in tracked {
            if v != variant || index < WARM_UP_SEGMENTS {
                continue;
            }
            let (Some(closed), Some(listed)) = (t.closed, t.listed) else {
                continue;
            };
            to_listed.push((listed - closed).as_secs_f64());
            if let Some(&next) = codes.get(&(variant, index + 1)) {
                to_close.push((clocks.wall(closed) - next as f64) / 1000.0);
                if let Some(&this) = codes.get(&(variant, index)) {
                    durations.push((next as f64 - this as f64) / 1000.0);
                }
            }
            if let Some(&this) = codes.get(&(variant, index)) {
                capture_to_listed.push((clocks.wall(listed) - this as f64) / 1000.0);
            }
        }
        let label = |what: &str| format!("… {what}, rendition {variant} ({name})");
        for (what, samples, unit) in [
            (
                "capture of segment N+1's first frame → segment N closed",
                &to_close,
                Unit::Ms,
            ),
            ("segment closed → listed in live.m3u8", &to_listed, Unit::Ms),
            (
                "capture of segment N's first frame → N listed",
                &capture_to_listed,
                Unit::S,
            ),
        ] {
            rows.push(Row {
                measurement: label(what),
                stats: Stats::of(samples),
                unit,
                target: None,
            });
        }
        let d = Stats::of(&durations);
        raw.push_str(&format!(
            "    rendition {variant} ({name}): {} segments tracked, {} time codes read, segment length from the codes p50 {:.3} s (min {:.3}, max {:.3})\n",
            tracked.keys().filter(|(v, _)| *v == variant).count(),
            codes.keys().filter(|(v, _)| *v == variant).count(),
            d.p50,
            d.min,
            d.max
        ));
    }
    (rows, raw)
}

/// One player session: a new headless Chromium opens the page, plays until the first decoded
/// frame and `--seconds` more.
async fn play(
    script: &Path,
    web_dir: &Path,
    args: &Options,
    page: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<PlayerResult> {
    let out = dir.join(format!("{name}.json"));
    let log = dir.join(format!("{name}.log"));
    let options = serde_json::json!({
        "webDir": web_dir,
        "chromium": args.chromium,
        "url": page,
        "seconds": args.seconds,
        "timeoutMs": 90_000,
        "out": out,
    });
    let mut cmd = Command::new("node");
    cmd.arg(script).arg(options.to_string());
    let mut player = Proc::spawn(
        "node (player)",
        &mut cmd,
        &log,
        false,
        Duration::from_secs(2),
    )?;
    let status = player.wait(Duration::from_secs(args.seconds + 150)).await;
    drop(player);
    let text = std::fs::read_to_string(&out).with_context(|| {
        format!(
            "the player wrote no result ({status:?}); its log:\n{}",
            log_tail(&log, 30)
        )
    })?;
    let result: PlayerResult = serde_json::from_str(&text)?;
    if let Some(error) = result.error {
        anyhow::bail!("the player failed: {error}\n{}", result.logs.join("\n"));
    }
    Ok(result)
}

/// Percent-encoding of a query value.
fn urlencode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
