//! An S3-compatible server for the tests, started without Docker: LocalStack in host mode
//! (Python ≥ 3.12; the virtualenv `scripts/test` creates, named by `VSTREAM_LOCALSTACK_PYTHON`
//! or found in `${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools/localstack`), else moto
//! (`VSTREAM_MOTO_SERVER`, the path of `moto_server`). Each server gets a free port and a
//! temporary directory of its own, a bucket, and is stopped (SIGTERM, then SIGKILL) and
//! reaped when dropped. Objects are read back over plain HTTP, the way a CDN or a player reads
//! them (neither server checks signatures; moto wants an `Authorization` header of some kind
//! before it serves a private object, so reads to moto carry a dummy one).
//!
//! [`TcpProxy`] sits between the system and the server to make the store unreachable for a
//! while (connections are cut and refused) without losing its data.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A free TCP port on 127.0.0.1 (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bucket every test server gets.
pub const BUCKET: &str = "vstream-test";

/// Which server runs.
#[derive(Debug, Clone)]
enum Server {
    LocalStack { python: PathBuf },
    Moto { program: PathBuf },
}

fn find_server() -> Server {
    if let Some(python) = std::env::var_os("VSTREAM_LOCALSTACK_PYTHON").filter(|p| !p.is_empty()) {
        return Server::LocalStack {
            python: python.into(),
        };
    }
    if let Some(program) = std::env::var_os("VSTREAM_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return Server::Moto {
            program: program.into(),
        };
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let tools = cache.join("vstream-tools");
    let python = tools.join("localstack/bin/python");
    if python.exists() {
        return Server::LocalStack { python };
    }
    let moto = tools.join("moto/bin/moto_server");
    if moto.exists() {
        return Server::Moto { program: moto };
    }
    panic!(
        "no S3-compatible server for the tests: run scripts/test (it installs LocalStack, or moto \
         without Python >= 3.12), or set VSTREAM_LOCALSTACK_PYTHON to a Python with localstack-core \
         or VSTREAM_MOTO_SERVER to moto_server"
    );
}

/// An `Authorization` header moto accepts without checking it.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A running S3-compatible server with a bucket.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    pub bucket: String,
    pub name: &'static str,
    /// The header reads carry (moto only).
    auth: Option<&'static str>,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free port and creates [`BUCKET`]; panics with the server's log if
    /// it is not ready within 30 s.
    pub async fn start() -> S3Server {
        let server = find_server();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let port = free_port();
        let out = std::fs::File::create(&log).unwrap();
        let mut command = match &server {
            Server::LocalStack { python } => {
                let tmp = dir.path().join("tmp");
                std::fs::create_dir_all(&tmp).unwrap();
                let mut command = Command::new(python);
                command
                    .args(["-m", "localstack.runtime.main"])
                    .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
                    .env("SERVICES", "s3")
                    .env("DNS_ADDRESS", "0")
                    .env("SKIP_SSL_CERT_DOWNLOAD", "1")
                    .env("DISABLE_EVENTS", "1")
                    .env("LOCALSTACK_TELEMETRY_DISABLED", "1")
                    // Its own directories: LocalStack wipes them at start and stop.
                    .env("FILESYSTEM_ROOT", dir.path().join("fs"))
                    .env("TMPDIR", &tmp);
                command
            }
            Server::Moto { program } => {
                let mut command = Command::new(program);
                command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                command
            }
        };
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server:?}: {e}"));
        let mut s3 = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            bucket: BUCKET.to_owned(),
            name: match server {
                Server::LocalStack { .. } => "LocalStack",
                Server::Moto { .. } => "moto",
            },
            auth: match server {
                Server::LocalStack { .. } => None,
                Server::Moto { .. } => Some(DUMMY_AUTHORIZATION),
            },
            child: Some(child),
            log,
            _dir: dir,
        };
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            // Creating the bucket is the readiness check: it works once S3 answers.
            let url = format!("{}/{}", s3.endpoint, s3.bucket);
            if let Ok(response) = client.put(&url).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            if let Some(child) = s3.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited with {status}:\n{}", s3.name, s3.logs());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not ready within 30 s:\n{}",
                s3.name,
                s3.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "{} ready on {} in {:?}",
            s3.name,
            s3.endpoint,
            started.elapsed()
        );
        s3
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The flags that point the system at this server (through `endpoint`, a proxy, if given).
    pub fn system_args(&self, endpoint: Option<&str>) -> Vec<String> {
        [
            "--hls-storage-type",
            "S3",
            "--aws-s3-bucket",
            &self.bucket,
            "--aws-region",
            "us-east-1",
            "--aws-endpoint-url-s3",
            endpoint.unwrap_or(&self.endpoint),
            "--aws-s3-force-path-style",
            "true",
            "--hls-s3-access-key-id",
            "test",
            "--hls-s3-secret-access-key",
            "test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The plain HTTP URL of an object (path-style).
    pub fn url(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.bucket)
    }

    /// A GET as a CDN would make it.
    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().get(url);
        match self.auth {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
    }

    pub async fn get(&self, key: &str) -> reqwest::Response {
        self.request(&self.url(key)).send().await.unwrap()
    }

    /// ffprobe's JSON description of the object at `key`, read over HTTP (an HLS playlist is
    /// followed to its segments).
    pub async fn ffprobe(&self, key: &str) -> serde_json::Value {
        let mut command = tokio::process::Command::new("ffprobe");
        command.args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_format",
        ]);
        if let Some(auth) = self.auth {
            command.args(["-headers", &format!("Authorization: {auth}\r\n")]);
        }
        let output = command.arg(self.url(key)).output().await.unwrap();
        assert!(
            output.status.success(),
            "ffprobe {key} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The object's bytes, if it exists.
    pub async fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        let response = self.get(key).await;
        if response.status() == 404 {
            return None;
        }
        assert!(
            response.status().is_success(),
            "GET {key}: {}",
            response.status()
        );
        Some(response.bytes().await.unwrap().to_vec())
    }

    pub async fn text(&self, key: &str) -> Option<String> {
        self.bytes(key)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The keys under `prefix`, sorted (ListObjectsV2, every page).
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".to_owned(), token.clone()));
            }
            let xml = self
                .request(&format!("{}/{}", self.endpoint, self.bucket))
                .query(&query)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// The object's tags.
    pub async fn tags(&self, key: &str) -> Vec<(String, String)> {
        let xml = self
            .request(&format!("{}?tagging", self.url(key)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml_values(&xml, "Key")
            .into_iter()
            .zip(xml_values(&xml, "Value"))
            .collect()
    }
}

/// The texts of every `<tag>…</tag>` in `xml` (enough for S3's flat answers).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        values.push(
            rest[..end]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &rest[end + close.len()..];
    }
    values
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets LocalStack clean its directory; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A TCP proxy on a free loopback port to `target`, which can be made to refuse service.
pub struct TcpProxy {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    down: Arc<AtomicBool>,
    /// Cancelled to cut every open connection (a new one per epoch).
    epoch: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl TcpProxy {
    pub async fn start(target_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn({
            let (down, epoch, stop) = (down.clone(), epoch.clone(), stop.clone());
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut inbound, _)) = accepted else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        // Refused: closed at once.
                        drop(inbound);
                        continue;
                    }
                    let cut = epoch.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = cut.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    });
                }
            }
        });
        TcpProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            down,
            epoch,
            stop,
        }
    }

    /// Down: open connections are cut and new ones closed at once. Up: forwarded again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let mut epoch = self.epoch.lock().unwrap();
            epoch.cancel();
            *epoch = CancellationToken::new();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.epoch.lock().unwrap().cancel();
    }
}
