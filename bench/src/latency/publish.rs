//! Publishers: ffmpeg sending a test pattern over RTMP in real time, and a clock source — frames
//! the benchmark draws itself, each carrying the wall-clock time it was made, piped to ffmpeg as
//! raw video and published over RTMP as they are made.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::procs::Proc;

/// Blocks per row of the time code: bit 31 (left) to bit 0 (right).
pub const CODE_BITS: u32 = 32;

/// The publisher's x264 settings: what a low-latency encoder (OBS "zerolatency") sends, a
/// keyframe every second.
pub const X264_ARGS: [&str; 10] = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-g",
    "30",
    "-pix_fmt",
    "yuv420p",
];

/// The command line of the test-pattern publisher (for the report and to run it).
pub fn pattern_args(size: &str, url: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "-i".to_owned(),
        format!("testsrc2=size={size}:rate=30"),
        "-re".to_owned(),
        "-f".to_owned(),
        "lavfi".to_owned(),
        "-i".to_owned(),
        "sine=frequency=440:sample_rate=48000".to_owned(),
    ]);
    args.extend(X264_ARGS.iter().map(|s| s.to_string()));
    args.extend(
        ["-c:a", "aac", "-b:a", "128k", "-f", "flv", url]
            .iter()
            .map(|s| s.to_string()),
    );
    args
}

/// ffmpeg publishing `testsrc2` of `size` with a sine tone, in real time (`-re`).
pub fn pattern(size: &str, url: &str, log: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(pattern_args(size, url));
    Proc::spawn("ffmpeg (publisher)", &mut cmd, log, false, Duration::ZERO)
}

/// Audio of the clock publisher: 16-bit stereo PCM at 48 kHz, in chunks of 20 ms.
const AUDIO_RATE: u32 = 48_000;
const AUDIO_CHUNK_MS: u64 = 20;

/// The command line of the clock publisher's ffmpeg: raw gray frames on stdin, raw PCM
/// (silence) from the FIFO `audio`, both written by the benchmark on one clock, so audio and
/// video are in step as a capture device's are.
pub fn clock_args(width: u32, height: u32, audio: &str, url: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-thread_queue_size",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-f".to_owned(),
        "rawvideo".to_owned(),
        "-pix_fmt".to_owned(),
        "gray".to_owned(),
        "-s".to_owned(),
        format!("{width}x{height}"),
        "-r".to_owned(),
        "30".to_owned(),
        "-i".to_owned(),
        "pipe:0".to_owned(),
        "-thread_queue_size".to_owned(),
        "64".to_owned(),
        "-f".to_owned(),
        "s16le".to_owned(),
        "-ar".to_owned(),
        AUDIO_RATE.to_string(),
        "-ac".to_owned(),
        "2".to_owned(),
        "-i".to_owned(),
        audio.to_owned(),
        "-map".to_owned(),
        "0:v".to_owned(),
        "-map".to_owned(),
        "1:a".to_owned(),
    ]);
    args.extend(X264_ARGS.iter().map(|s| s.to_string()));
    args.extend(
        ["-c:a", "aac", "-b:a", "64k", "-f", "flv", url]
            .iter()
            .map(|s| s.to_string()),
    );
    args
}

/// Draws frame `n` of `width`×`height` (8-bit gray) carrying `stamp` (ms since the epoch,
/// modulo 2³²): block row 1 (y from B to 2B, B = width / 32) holds its 32 bits, most
/// significant on the left, white = 1; row 2 holds the inverted bits, so a reader can tell a
/// clean decode from a smeared one. Below, a white bar moves so the picture is not still.
pub fn draw_frame(frame: &mut [u8], width: u32, height: u32, n: u64, stamp: u32) {
    let (w, h) = (width as usize, height as usize);
    let block = w / CODE_BITS as usize;
    frame.fill(96);
    for bit in 0..CODE_BITS as usize {
        let one = (stamp >> (CODE_BITS as usize - 1 - bit)) & 1 == 1;
        for (row, value) in [(1, one), (2, !one)] {
            let shade = if value { 255 } else { 0 };
            for y in row * block..((row + 1) * block).min(h) {
                let start = y * w + bit * block;
                frame[start..start + block].fill(shade);
            }
        }
    }
    let bar = 16usize;
    let x0 = (n as usize * 8) % w.saturating_sub(bar).max(1);
    for y in (4 * block).min(h)..h {
        let start = y * w + x0;
        frame[start..(start + bar).min((y + 1) * w)].fill(255);
    }
}

/// Reads the time code of a `width`×`height` gray frame drawn by [`draw_frame`] (scaled to
/// that size); `None` when a block and its inverse do not disagree.
pub fn read_code(frame: &[u8], width: u32, height: u32) -> Option<u32> {
    let (w, h) = (width as usize, height as usize);
    let block = w / CODE_BITS as usize;
    if frame.len() < w * h || 3 * block > h {
        return None;
    }
    let at = |x: usize, y: usize| frame[y * w + x] > 128;
    let mut value = 0u32;
    for bit in 0..CODE_BITS as usize {
        let x = bit * block + block / 2;
        let (one, inverse) = (at(x, block + block / 2), at(x, 2 * block + block / 2));
        if one == inverse {
            return None;
        }
        value = (value << 1) | u32::from(one);
    }
    Some(value)
}

/// The full time (ms since the epoch) of a time code, taken as the one closest before or at
/// `near` (a wall-clock time in ms shortly after the capture).
pub fn unwrap_code(code: u32, near: u64) -> u64 {
    let back = (near as u32).wrapping_sub(code);
    near.saturating_sub(u64::from(back))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A publisher of time-stamped frames: one thread draws 30 frames a second and writes them to
/// ffmpeg's stdin, another writes 20 ms of silence every 20 ms to a FIFO ffmpeg reads, both
/// scheduled from the same instant. A frame carries the time it was due (its capture time).
pub struct ClockPublisher {
    proc: Proc,
    stop: Arc<AtomicBool>,
    fifo: std::path::PathBuf,
    threads: Vec<JoinHandle<()>>,
}

impl ClockPublisher {
    pub fn start(
        width: u32,
        height: u32,
        url: &str,
        dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            width.is_multiple_of(CODE_BITS) && width >= 4 * CODE_BITS && height >= width / 4,
            "the clock picture must be a multiple of {CODE_BITS} pixels wide"
        );
        let fifo = dir.join("clock-audio.fifo");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .with_context(|| format!("mkfifo {}", fifo.display()))?;
        let mut cmd = Command::new("ffmpeg");
        cmd.args(clock_args(width, height, &fifo.display().to_string(), url));
        let mut proc = Proc::spawn(
            "ffmpeg (clock publisher)",
            &mut cmd,
            log,
            true,
            Duration::ZERO,
        )?;
        let mut stdin = proc.take_stdin().context("no stdin for ffmpeg")?;
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let start_ms = now_ms();
        let video = std::thread::Builder::new()
            .name("clock-video".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let mut frame = vec![0u8; width as usize * height as usize];
                    for n in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let offset = Duration::from_micros(n * 1_000_000 / 30);
                        if let Some(wait) = (start + offset).checked_duration_since(Instant::now())
                        {
                            std::thread::sleep(wait);
                        }
                        let due_ms = start_ms + offset.as_millis() as u64;
                        draw_frame(&mut frame, width, height, n, due_ms as u32);
                        if stdin.write_all(&frame).is_err() {
                            break;
                        }
                    }
                }
            })?;
        let audio = std::thread::Builder::new()
            .name("clock-audio".into())
            .spawn({
                let (stop, fifo) = (stop.clone(), fifo.clone());
                move || {
                    // Blocks until ffmpeg opens its second input.
                    let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                        return;
                    };
                    let chunk = vec![0u8; (AUDIO_RATE as u64 * AUDIO_CHUNK_MS / 1000 * 4) as usize];
                    for k in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let due = start + Duration::from_millis(k * AUDIO_CHUNK_MS);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        if out.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(ClockPublisher {
            proc,
            stop,
            fifo,
            threads: vec![video, audio],
        })
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.proc.check_alive()
    }
}

impl Drop for ClockPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Killing ffmpeg breaks the pipes of threads blocked writing.
        if let Some(pid) = rustix::process::Pid::from_raw(self.proc.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        // An audio thread still waiting for ffmpeg to open the FIFO: open it (and close it).
        let _ = rustix::fs::open(
            &self.fifo,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        );
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.fifo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_code_reads_back() {
        let (w, h) = (640u32, 360u32);
        let mut frame = vec![0u8; (w * h) as usize];
        let stamp = 0xA5C3_0F01u32;
        draw_frame(&mut frame, w, h, 7, stamp);
        assert_eq!(read_code(&frame, w, h), Some(stamp));
        // A smeared code (a block equal to its inverse) is refused.
        let block = (w / CODE_BITS) as usize;
        for y in 2 * block..3 * block {
            let start = y * w as usize;
            frame[start..start + block].copy_from_slice(&[0; 40][..block]);
            let start = (y - block) * w as usize;
            frame[start..start + block].copy_from_slice(&[0; 40][..block]);
        }
        assert_eq!(read_code(&frame, w, h), None);
    }

    #[test]
    fn a_time_code_unwraps_to_the_time_just_before() {
        let now = 1_790_000_123_456u64;
        assert_eq!(unwrap_code(now as u32, now), now);
        assert_eq!(unwrap_code((now - 4_000) as u32, now), now - 4_000);
    }
}
