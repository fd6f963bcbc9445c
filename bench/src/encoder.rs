//! The encoder benchmark: total CPU time of our system encoding a live stream into a ladder,
//! next to one bare ffmpeg command making the same renditions from the same file, both in real
//! time (`-re`); and the same with the `ORIGINAL` rendition passed through (remuxed).
//!
//! Ours is the all-in-one `vstream` (RTMP ingest, coordinator, encoder, filesystem storage)
//! fed by `ffmpeg -re -c copy` over RTMP (the publisher is not counted). Its CPU time is read
//! from `/proc/<pid>/stat` once its ffmpeg and ffprobe children have exited and been reaped:
//! `utime + stime + cutime + cstime`, so everything the process and its children used is in.
//! The bare ffmpeg runs under `sh`, which prints its own `/proc/self/stat` after ffmpeg exits
//! (the same four fields). Its arguments are the ones our encoder gives ffmpeg (built by the
//! same function), reading the file instead of a pipe.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use contract::keys::SegmentType;
use contract::resolution::{fit_renditions, parse_list};
use contract::SourceVideo;
use encoder::ffmpeg::{build_args, HlsJobParams, Passthrough};

use crate::common::{self, Bins, ChildGuard, Report};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of source (1920x1080, 30 fps, H.264 ~6 Mbit/s, 2 s GOP, AAC).
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// The ladder (`x-resolutions` grammar); default: the all-in-one's default ladder.
    #[arg(long, default_value = "ORIGINAL,854x480-30~1400,640x360-30~800")]
    ladder: String,
    /// x264 preset of every encoded rendition.
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Segment target in seconds (HLS_TIME_SECONDS).
    #[arg(long, default_value_t = 3.0)]
    hls_time: f64,
    /// Where the generated source is kept between runs.
    #[arg(long, default_value = "target/bench-media")]
    media_dir: PathBuf,
}

/// One measured run.
struct Run {
    label: String,
    cpu_seconds: f64,
    wall_seconds: f64,
    /// Per rendition: segment durations.
    segments: Vec<(String, Vec<f64>)>,
}

pub async fn run(bins: &Bins, args: Args) -> anyhow::Result<Report> {
    let vstream = bins.path("vstream")?;
    let source = make_source(&args)?;
    let (requests, _) = parse_list(Some(&args.ladder));
    let video = SourceVideo {
        width: 1920,
        height: 1080,
        fps: 30.0,
    };
    let renditions = fit_renditions(&requests, video);
    // The source has a 2 s GOP: with pass-through, segments are whole GOPs (see encoder::gop).
    let copied_segment = encoder::gop::Cadence::for_interval(2000, args.hls_time)
        .map(encoder::gop::Cadence::segment_seconds);

    let tmp = tempfile::Builder::new()
        .prefix("vstream-bench-")
        .tempdir()?;
    let mut runs = Vec::new();
    let mut commands = Vec::new();

    for (label, copy) in [("bare ffmpeg", false), ("vstream", false)]
        .into_iter()
        .chain(
            copied_segment
                .is_some()
                .then_some([
                    ("bare ffmpeg, ORIGINAL copied", true),
                    ("vstream, ORIGINAL copied", true),
                ])
                .into_iter()
                .flatten(),
        )
    {
        let dir = tmp.path().join(label.replace([' ', ','], "-"));
        std::fs::create_dir_all(&dir)?;
        eprintln!("encoder bench: {label} ({} s of source)...", args.seconds);
        let run = if label.starts_with("bare") {
            let segment = if copy {
                copied_segment.unwrap_or(args.hls_time)
            } else {
                args.hls_time
            };
            let argv = bare_args(&renditions, &source, &dir, &args.preset, segment, copy);
            commands.push(format!("# {label}\n{}", shell_line("ffmpeg", &argv)));
            bare_run(label, &argv, &dir)?
        } else {
            let env = vstream_env(&args, &dir, copy)?;
            commands.push(format!(
                "# {label}\n{}\nffmpeg -re -i {} -c copy -f flv rtmp://127.0.0.1:$RTMP_PORT/bench/key",
                common::command_line(&env, "vstream", &[]),
                source.display()
            ));
            ours_run(label, &vstream, &env, &source, &dir).await?
        };
        eprintln!(
            "  {:.1} CPU s in {:.1} s ({:.2} cores)",
            run.cpu_seconds,
            run.wall_seconds,
            run.cpu_seconds / run.wall_seconds
        );
        runs.push(run);
    }

    let mut table = vec![vec![
        "run".to_owned(),
        "CPU s".to_owned(),
        "cores".to_owned(),
        "vs bare ffmpeg".to_owned(),
        "vs fully encoded".to_owned(),
        "segments (first rendition)".to_owned(),
        "aligned".to_owned(),
    ]];
    let bare = |copy: bool| {
        runs.iter()
            .find(|r| r.label.starts_with("bare") && r.label.contains("copied") == copy)
            .map(|r| r.cpu_seconds)
    };
    let ours_encoded = runs
        .iter()
        .find(|r| r.label == "vstream")
        .map(|r| r.cpu_seconds);
    let mut raw = format!(
        "machine: {}\nsource: {} ({} s, 1920x1080 30 fps H.264 6 Mbit/s, 2 s GOP, AAC)\nladder: {}\n",
        common::machine(),
        source.display(),
        args.seconds,
        args.ladder
    );
    for r in &runs {
        let copy = r.label.contains("copied");
        let vs_bare = if r.label.starts_with("bare") {
            "-".to_owned()
        } else {
            bare(copy).map_or("-".into(), |b| format!("{:.3}", r.cpu_seconds / b))
        };
        let vs_encoded = match (r.label.as_str(), ours_encoded, bare(false)) {
            ("vstream, ORIGINAL copied", Some(full), _) => format!("{:.3}", r.cpu_seconds / full),
            ("bare ffmpeg, ORIGINAL copied", _, Some(full)) => {
                format!("{:.3}", r.cpu_seconds / full)
            }
            _ => "-".to_owned(),
        };
        let first = r
            .segments
            .first()
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        table.push(vec![
            r.label.clone(),
            format!("{:.1}", r.cpu_seconds),
            format!("{:.2}", r.cpu_seconds / r.wall_seconds),
            vs_bare,
            vs_encoded,
            summarize(&first),
            aligned(&r.segments).to_owned(),
        ]);
        raw.push_str(&format!(
            "{}: cpu {:.2} s, wall {:.2} s\n",
            r.label, r.cpu_seconds, r.wall_seconds
        ));
        for (name, d) in &r.segments {
            raw.push_str(&format!("  {name}: {d:?}\n"));
        }
    }
    Ok(Report {
        title: format!(
            "Encoder: {} s of 1080p30 into {} (x264 {})",
            args.seconds, args.ladder, args.preset
        ),
        commands,
        table,
        raw,
    })
}

/// Count, and min/max of every segment but the last.
fn summarize(durations: &[f64]) -> String {
    if durations.len() < 2 {
        return format!("{durations:?}");
    }
    let body = &durations[..durations.len() - 1];
    let min = body.iter().copied().fold(f64::INFINITY, f64::min);
    let max = body.iter().copied().fold(0.0, f64::max);
    format!("{} × {min:.3}–{max:.3} s", durations.len())
}

/// Whether every rendition has the same segment durations (±0.1 s, the last excepted).
fn aligned(segments: &[(String, Vec<f64>)]) -> &'static str {
    let Some((_, reference)) = segments.first() else {
        return "no segments";
    };
    let ok = segments.iter().all(|(_, d)| {
        d.len() == reference.len()
            && d.iter()
                .zip(reference)
                .take(reference.len().saturating_sub(1))
                .all(|(a, b)| (a - b).abs() <= 0.1)
    });
    if ok {
        "yes"
    } else {
        "NO"
    }
}

/// The source file, generated once: 1080p30 test pattern with temporal noise (hard to encode),
/// x264 veryfast at 6 Mbit/s CBR-ish, keyframes every 2 s (OBS's default), AAC 160 kbit/s.
fn make_source(args: &Args) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&args.media_dir)?;
    let path = args
        .media_dir
        .join(format!("source-1080p30-6M-gop2-{}s.flv", args.seconds));
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("encoder bench: generating {} (once)...", path.display());
    let partial = path.with_extension("part.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-vf", "noise=alls=12:allf=t"])
        .args(["-t", &args.seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-b:v", "6M", "-maxrate", "6M", "-bufsize", "12M"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "160k", "-f", "flv"])
        .arg(&partial)
        .status()
        .context("ffmpeg is needed")?;
    anyhow::ensure!(status.success(), "generating the source failed");
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Our encoder's ffmpeg arguments for this ladder, reading `source` in real time.
fn bare_args(
    renditions: &[contract::Rendition],
    source: &Path,
    dir: &Path,
    preset: &str,
    hls_time: f64,
    copy: bool,
) -> Vec<String> {
    let out = dir.display().to_string();
    for i in 0..renditions.len() {
        let _ = std::fs::create_dir_all(dir.join(i.to_string()));
    }
    let mut argv = build_args(&HlsJobParams {
        input_format: Some("flv"),
        renditions,
        has_audio: true,
        video_codec: "libx264",
        audio_codec: "aac",
        h264_preset: preset,
        pixel_format: "yuv420p",
        hls_time,
        out_dir: &out,
        segment_type: SegmentType::MpegTs,
        preview: None,
        letterbox: false,
        passthrough: copy.then_some(Passthrough { copy_audio: true }),
        low_latency: false,
    });
    if let Some(i) = argv.iter().position(|a| a == "pipe:0") {
        argv[i] = source.display().to_string();
        argv.insert(i - 3, "-re".to_owned());
    }
    // Keep every segment in ffmpeg's playlists (the durations are compared).
    if let Some(i) = argv.iter().position(|a| a == "-hls_list_size") {
        argv[i + 1] = "0".to_owned();
    }
    argv
}

fn shell_line(program: &str, argv: &[String]) -> String {
    let mut line = program.to_owned();
    for a in argv {
        line.push(' ');
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,%".contains(c))
        {
            line.push_str(a);
        } else {
            line.push_str(&format!("'{}'", a.replace('\'', r"'\''")));
        }
    }
    line
}

/// `utime + stime + cutime + cstime` from a `/proc/<pid>/stat` line, in seconds.
fn stat_cpu(stat: &str) -> Option<f64> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Some(ticks / 100.0)
}

fn bare_run(label: &str, argv: &[String], dir: &Path) -> anyhow::Result<Run> {
    let started = Instant::now();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            r#"ffmpeg -hide_banner -loglevel error -nostats "$@" >&2 || exit 1; cat /proc/$$/stat"#,
        )
        .arg("sh")
        .args(argv)
        .stderr(std::fs::File::create(dir.join("ffmpeg.log"))?)
        .output()
        .context("cannot run sh/ffmpeg")?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.success(),
        "bare ffmpeg failed: {}",
        common::log_tail(&dir.join("ffmpeg.log"), 20)
    );
    let cpu = stat_cpu(&String::from_utf8_lossy(&output.stdout))
        .context("unreadable /proc stat from sh")?;
    let mut segments = Vec::new();
    for i in 0.. {
        let playlist = dir.join(i.to_string()).join("index.m3u8");
        if !playlist.is_file() {
            break;
        }
        segments.push((format!("variant {i}"), durations(&playlist)?));
    }
    Ok(Run {
        label: label.to_owned(),
        cpu_seconds: cpu,
        wall_seconds: wall,
        segments,
    })
}

fn vstream_env(args: &Args, dir: &Path, copy: bool) -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("BIND_ADDRESS", "127.0.0.1".to_owned()),
        ("RTMP_PORT", common::free_port()?.to_string()),
        ("HTTP_PORT", common::free_port()?.to_string()),
        ("HTTPS_PORT", common::free_port()?.to_string()),
        ("SSL_PORT", common::free_port()?.to_string()),
        ("HLS_STORAGE_TYPE", "FILESYSTEM".to_owned()),
        (
            "HLS_FILESYSTEM_PATH",
            dir.join("store").display().to_string(),
        ),
        ("ENCODER_WORK_DIR", dir.join("work").display().to_string()),
        ("DEFAULT_RESOLUTIONS", args.ladder.clone()),
        ("HLS_H264_PRESET", args.preset.clone()),
        ("HLS_TIME_SECONDS", args.hls_time.to_string()),
        ("HLS_LIVE_PLAYLIST_SIZE", "1000".to_owned()),
        ("HLS_ORIGINAL_PASSTHROUGH", copy.to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ])
}

async fn ours_run(
    label: &str,
    vstream: &Path,
    env: &[(&'static str, String)],
    source: &Path,
    dir: &Path,
) -> anyhow::Result<Run> {
    let mut cmd = std::process::Command::new(vstream);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut server = ChildGuard::spawn("vstream", &mut cmd, &dir.join("vstream.log"))?;
    let rtmp_port: u16 = env
        .iter()
        .find(|(k, _)| *k == "RTMP_PORT")
        .and_then(|(_, v)| v.parse().ok())
        .context("no RTMP_PORT")?;
    server
        .wait_for_tcp(([127, 0, 0, 1], rtmp_port).into(), Duration::from_secs(30))
        .await?;
    let pid = server.pid();
    // Idle for a moment: the start-up cost is not the encoder's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = own_cpu(pid)?;
    let started = Instant::now();
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(source)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{rtmp_port}/bench/key"))
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .context("cannot run the publishing ffmpeg")?;
    anyhow::ensure!(status.success(), "the publishing ffmpeg failed");
    // The stream is done when vstream has no child left (ffmpeg finished and was reaped).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        server.check_alive()?;
        if common::tree_pids(pid).len() == 1 && started.elapsed() > Duration::from_secs(2) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stream did not finish within a minute of the publisher's end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu(pid)? - before;
    drop(server);
    let mut segments = Vec::new();
    for playlist in find_named(&dir.join("store"), "live.m3u8") {
        let name = playlist
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        segments.push((name, durations(&playlist)?));
    }
    // The master's order: largest first.
    segments.sort_by_key(|(name, _)| {
        std::cmp::Reverse(
            name.split('x')
                .next()
                .and_then(|w| w.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    Ok(Run {
        label: label.to_owned(),
        cpu_seconds: cpu,
        wall_seconds: wall,
        segments,
    })
}

fn own_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu(&stat).context("unreadable /proc stat")
}

fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
    found
}

fn durations(playlist: &Path) -> anyhow::Result<Vec<f64>> {
    let text = std::fs::read_to_string(playlist)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        .collect())
}
