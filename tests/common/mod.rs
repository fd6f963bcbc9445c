//! Test harness: the whole system in process on free loopback ports, a recording web app, and
//! real ffmpeg publishers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod procs;
pub mod s3;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use clap::Parser as _;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Tests that run encoders take this lock, so that two ladders never compete for the 2 cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,hyper=warn,reqwest=warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

pub struct System {
    pub rtmp: String,
    pub http: String,
    pub data: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl System {
    /// Starts the system with `args` (command-line flags) on top of fast test settings.
    pub async fn start(args: &[&str]) -> System {
        init_logs();
        let data = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = vec![
            "vstream".into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--hls-filesystem-path".into(),
            data.path().display().to_string(),
            "--hls-time-seconds".into(),
            "2".into(),
            "--hls-h264-preset".into(),
            "ultrafast".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let config = vstream::Config::try_parse_from(argv).unwrap();
        let rtmp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rtmp_url = format!("rtmp://{}", rtmp.local_addr().unwrap());
        let http_url = format!("http://{}", http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(vstream::run(
            config,
            vstream::Listeners { rtmp, http },
            shutdown.clone(),
        ));
        System {
            rtmp: rtmp_url,
            http: http_url,
            data,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the system stops within 60 s")
            .unwrap()
            .unwrap();
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.data.path().join(key)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .unwrap()
    }

    pub async fn report(&self) -> serde_json::Value {
        self.get("/commands/report").await.json().await.unwrap()
    }

    pub async fn capacity(&self) -> serde_json::Value {
        self.get("/commands/capacity").await.json().await.unwrap()
    }

    /// Waits until `/commands/report` lists a stream on `channel`; returns its stream ID.
    pub async fn wait_for_stream(&self, channel: &str) -> String {
        wait_for(
            Duration::from_secs(20),
            "the stream is listed in /commands/report",
            || async {
                let report = self.report().await;
                report["activeStreams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["channel"] == channel)
                    .map(|s| s["streamId"].as_str().unwrap().to_owned())
            },
        )
        .await
    }
}

/// Polls `check` every 200 ms until it returns true; panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(limit, what, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

/// Polls `check` every 200 ms until it returns a value; panics after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Status and headers the test web app answers key verification with.
pub type VerifyAnswer = (u16, Vec<(String, String)>);

/// A web app that records what the coordinator sends it.
#[derive(Clone)]
pub struct WebApp {
    pub url: String,
    pub verifications: Arc<Mutex<Vec<HeaderMap>>>,
    pub events: Arc<Mutex<Vec<HeaderMap>>>,
    /// Status and headers of the key verification answer.
    pub verify_answer: Arc<Mutex<VerifyAnswer>>,
    /// Status event callbacks are answered with (200 unless a test makes the app fail).
    pub event_status: Arc<Mutex<u16>>,
    /// The status each recorded event callback was answered with.
    pub event_answers: Arc<Mutex<Vec<u16>>>,
}

impl WebApp {
    pub async fn start() -> WebApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = WebApp {
            url: format!("http://{}", listener.local_addr().unwrap()),
            verifications: Arc::default(),
            events: Arc::default(),
            verify_answer: Arc::new(Mutex::new((200, Vec::new()))),
            event_status: Arc::new(Mutex::new(200)),
            event_answers: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/verify",
                post(
                    |axum::extract::State(app): axum::extract::State<WebApp>,
                     headers: HeaderMap| async move {
                        app.verifications.lock().unwrap().push(headers);
                        let (status, headers) = app.verify_answer.lock().unwrap().clone();
                        let mut response = axum::response::Response::new(axum::body::Body::empty());
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        for (name, value) in headers {
                            response.headers_mut().insert(
                                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                                value.parse().unwrap(),
                            );
                        }
                        response
                    },
                ),
            )
            .route(
                "/events",
                post(
                    |axum::extract::State(app): axum::extract::State<WebApp>,
                     headers: HeaderMap| async move {
                        let status = *app.event_status.lock().unwrap();
                        // Both lists are pushed under the events lock, so their indexes match.
                        let mut events = app.events.lock().unwrap();
                        events.push(headers);
                        app.event_answers.lock().unwrap().push(status);
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        app
    }

    pub fn answer(&self, status: u16, headers: &[(&str, &str)]) {
        *self.verify_answer.lock().unwrap() = (
            status,
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Waits until the last event received for `stream_id` is `stream-closed`.
    pub async fn wait_closed(&self, stream_id: &str, limit: Duration) {
        wait_until(limit, "stream-closed is delivered", || async {
            self.event_summary(stream_id)
                .last()
                .is_some_and(|e| e.0 == "stream-closed")
        })
        .await
    }

    /// `(x-event-type, x-stream-type, x-resolution)` of every event received, in order.
    pub fn event_summary(&self, stream_id: &str) -> Vec<(String, String, String)> {
        let get = |h: &HeaderMap, n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|h| get(h, "x-streaming-id") == stream_id)
            .map(|h| {
                (
                    get(h, "x-event-type"),
                    get(h, "x-stream-type"),
                    get(h, "x-resolution"),
                )
            })
            .collect()
    }
}

/// Starts an ffmpeg that publishes a test pattern and a tone over RTMP.
pub fn publish(url: &str, size: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-t", &seconds.to_string(), "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg is installed")
}

/// ffprobe's JSON description of a file or URL's streams.
pub async fn ffprobe(input: &str) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_format",
            input,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe {input} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn parse_media(path: &Path) -> m3u8_rs::MediaPlaylist {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match m3u8_rs::parse_playlist_res(&bytes) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("{} is not a media playlist: {other:?}", path.display()),
    }
}

pub fn parse_master(bytes: &[u8]) -> m3u8_rs::MasterPlaylist {
    match m3u8_rs::parse_playlist_res(bytes) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a master playlist: {other:?}"),
    }
}

/// The rendition folders of a stream, sorted.
pub fn renditions(system: &System, channel: &str, stream_id: &str) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(system.path(&format!("hls/{channel}/{stream_id}")))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    names.sort();
    names
}

/// `test-artifacts/` at the repository root (gitignored), created if needed: screenshots.
pub fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Regular files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Runs a scenario of `web/tests/browser.mjs` (headless Chromium driven by playwright-core)
/// and returns its result. Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`) and
/// `npm ci --prefix web`; `scripts/test` installs both.
pub async fn browser(scenario: &str, options: serde_json::Value) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (or run scripts/test)"
    );
    assert!(
        root.join("web/node_modules/playwright-core").exists(),
        "web/node_modules is missing: npm ci --prefix web (or run scripts/test)"
    );
    let started = std::time::Instant::now();
    let child = Command::new("node")
        .arg(root.join("web/tests/browser.mjs"))
        .arg(scenario)
        .arg(options.to_string())
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let output = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("the browser scenario ends within 240 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario {scenario} failed:\n{stderr}\n{stdout}"
    );
    let result = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT from {scenario}:\n{stdout}\n{stderr}"));
    tracing::info!(
        scenario,
        seconds = started.elapsed().as_secs_f64(),
        "browser scenario done"
    );
    serde_json::from_str(result).unwrap()
}
