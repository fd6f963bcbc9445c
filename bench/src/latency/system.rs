//! The system under test and what stands around it: the all-in-one `vstream` storing to
//! LocalStack S3, a web-app stub that answers key verification and records the coordinator's
//! event callbacks (with the instant each arrived), and a TCP relay in front of the RTMP port
//! that records when a publisher connects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::Notify;

use super::procs::{log_tail, Proc};
use super::s3::{LocalStack, BUCKET};
use crate::common::free_port;

/// One event callback as the web app received it.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub event_type: String,
    pub stream_type: String,
    pub resolution: String,
    pub index_file: String,
    pub master_index_file: String,
    pub stream_id: String,
    pub channel: String,
}

/// One key verification request.
#[derive(Debug, Clone)]
pub struct Verification {
    pub at: Instant,
    pub channel: String,
}

#[derive(Default)]
struct AppState {
    events: Mutex<Vec<Event>>,
    verifications: Mutex<Vec<Verification>>,
    changed: Notify,
    resolutions: String,
}

/// The customer's web app, reduced to what the benchmark needs.
pub struct WebApp {
    pub url: String,
    state: Arc<AppState>,
    task: tokio::task::JoinHandle<()>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl WebApp {
    /// Starts the stub; key verification allows every key with the ladder `resolutions`.
    pub async fn start(resolutions: &str) -> anyhow::Result<WebApp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(AppState {
            resolutions: resolutions.to_owned(),
            ..AppState::default()
        });
        let router = Router::new()
            .route(
                "/verify",
                post(
                    |State(app): State<Arc<AppState>>, headers: HeaderMap| async move {
                        let at = Instant::now();
                        if let Ok(mut list) = app.verifications.lock() {
                            list.push(Verification {
                                at,
                                channel: header(&headers, "x-streaming-channel"),
                            });
                        }
                        app.changed.notify_waiters();
                        (StatusCode::OK, [("x-resolutions", app.resolutions.clone())])
                    },
                ),
            )
            .route(
                "/events",
                post(
                    |State(app): State<Arc<AppState>>, headers: HeaderMap| async move {
                        let at = Instant::now();
                        let event = Event {
                            at,
                            event_type: header(&headers, "x-event-type"),
                            stream_type: header(&headers, "x-stream-type"),
                            resolution: header(&headers, "x-resolution"),
                            index_file: header(&headers, "x-index-file"),
                            master_index_file: header(&headers, "x-master-index-file"),
                            stream_id: header(&headers, "x-streaming-id"),
                            channel: header(&headers, "x-streaming-channel"),
                        };
                        if let Ok(mut list) = app.events.lock() {
                            list.push(event);
                        }
                        app.changed.notify_waiters();
                        StatusCode::OK
                    },
                ),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(WebApp { url, state, task })
    }

    pub fn events(&self) -> Vec<Event> {
        self.state
            .events
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn verifications(&self) -> Vec<Verification> {
        self.state
            .verifications
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Waits until `check` finds something in the events received so far.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&[Event]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = check(&self.events()) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!("timed out after {limit:?} waiting for {what}");
            }
        }
    }
}

/// The `HLS-LIVE` events of the stream on `channel`, in the order they arrived.
pub fn hls_live(events: &[Event], channel: &str) -> Vec<Event> {
    events
        .iter()
        .filter(|e| {
            e.channel == channel
                && e.event_type == "stream-available"
                && e.stream_type == "HLS-LIVE"
        })
        .cloned()
        .collect()
}

impl Drop for WebApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay to the RTMP port that records when each publisher connection was accepted.
pub struct RtmpRelay {
    pub port: u16,
    accepted: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RtmpRelay {
    pub async fn start(target: SocketAddr) -> anyhow::Result<RtmpRelay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let task = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let at = Instant::now();
                    if let Ok(mut list) = accepted.lock() {
                        list.push(at);
                    }
                    let _ = inbound.set_nodelay(true);
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                }
            }
        });
        Ok(RtmpRelay {
            port,
            accepted,
            task,
        })
    }

    /// The first connection accepted at or after `since`.
    pub fn first_accept_since(&self, since: Instant) -> Option<Instant> {
        self.accepted
            .lock()
            .ok()?
            .iter()
            .copied()
            .find(|at| *at >= since)
    }
}

impl Drop for RtmpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The all-in-one `vstream`, storing to LocalStack.
pub struct Vstream {
    proc: Proc,
    pub rtmp: SocketAddr,
    /// `ENCODER_WORK_DIR`: where ffmpeg writes segments before they are stored.
    pub work_dir: PathBuf,
    /// The environment it was started with (for the report).
    pub env: Vec<(String, String)>,
}

impl Vstream {
    /// Starts `bin` with segments of `hls_time` seconds, events and key verification going to
    /// `app`; ready once `/healthz` answers.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        s3: &LocalStack,
        app: &WebApp,
        hls_time: f64,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Vstream> {
        let work_dir = dir.join("work");
        std::fs::create_dir_all(&work_dir)?;
        let rtmp_port = free_port()?;
        let http_port = free_port()?;
        let mut env: Vec<(String, String)> = [
            ("BIND_ADDRESS", "127.0.0.1".to_owned()),
            ("RTMP_PORT", rtmp_port.to_string()),
            ("HTTP_PORT", http_port.to_string()),
            ("HLS_TIME_SECONDS", hls_time.to_string()),
            ("HLS_STORAGE_TYPE", "S3".to_owned()),
            ("AWS_S3_BUCKET", BUCKET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL_S3", s3.endpoint.clone()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("HLS_S3_ACCESS_KEY_ID", "test".to_owned()),
            ("HLS_S3_SECRET_ACCESS_KEY", "test".to_owned()),
            ("ENCODER_WORK_DIR", work_dir.display().to_string()),
            ("KEY_VERIFICATION_URL", format!("{}/verify", app.url)),
            ("EVENT_CALLBACK_URL", format!("{}/events", app.url)),
            // Every run publishes on a new channel; a stream ends when its publisher leaves,
            // instead of waiting for a reconnect, so runs do not overlap.
            ("RECONNECT_WINDOW_SECONDS", "0".to_owned()),
            // Read by the benchmark (the start-up steps of each stream).
            ("LOG_FORMAT", "json".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra_env.iter().cloned());
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("VSTREAM_BENCH_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut proc = Proc::spawn(
            "vstream",
            &mut cmd,
            &dir.join("vstream.log"),
            false,
            Duration::from_secs(20),
        )?;
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            proc.check_alive()?;
            if let Ok(response) = client.get(format!("http://{http}/healthz")).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "vstream not healthy within 30 s:\n{}",
                log_tail(&proc.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Vstream {
            proc,
            rtmp: ([127, 0, 0, 1], rtmp_port).into(),
            work_dir,
            env,
        })
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.proc.check_alive()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The instants (ms since the epoch) of the log lines of stream `stream_id` whose message
    /// is one of `messages` (the first of each), from its JSON log.
    pub fn stream_log(&self, stream_id: &str, messages: &[&str]) -> Vec<Option<f64>> {
        let text = std::fs::read_to_string(&self.proc.log).unwrap_or_default();
        let mut found = vec![None; messages.len()];
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let of_stream = value["span"]["stream_id"] == stream_id
                || value["fields"]["stream_id"] == stream_id;
            if !of_stream {
                continue;
            }
            let Some(message) = value["fields"]["message"].as_str() else {
                continue;
            };
            if let Some(i) = messages.iter().position(|m| *m == message) {
                if found[i].is_none() {
                    found[i] = value["timestamp"].as_str().and_then(rfc3339_ms);
                }
            }
        }
        found
    }

    /// Stops it gracefully (SIGTERM; its streams are finished).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if !self.proc.terminate(Duration::from_secs(30)).await {
            eprintln!("latency: vstream did not stop within 30 s of SIGTERM: killed");
        }
        Ok(())
    }

    /// The environment, one `NAME=value` per word, secrets included (they are LocalStack's).
    pub fn env_line(&self) -> String {
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `2026-11-25T02:23:43.478661Z` as milliseconds since the Unix epoch.
pub fn rfc3339_ms(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hour, minute) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let second: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3600 + minute * 60) as f64 + second) * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_are_read() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500.0));
        let ms = rfc3339_ms("2026-11-25T02:23:43.478661Z").expect("parsed");
        assert!((ms - 1_795_573_423_478.661).abs() < 0.01, "{ms}");
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
