//! LocalStack S3 in host mode (no Docker), as the test suite runs it (tests/common/s3.rs): the
//! virtualenv `scripts/test` installs (`${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools/localstack`,
//! or `VSTREAM_LOCALSTACK_PYTHON`), a free port, a directory of its own, one bucket; stopped
//! (SIGTERM, then SIGKILL) when dropped. Objects are read over plain HTTP, path-style, as a CDN
//! or a player reads them (LocalStack checks no signatures).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::procs::{log_tail, Proc};
use crate::common::free_port;

/// The bucket the benchmark creates.
pub const BUCKET: &str = "vstream-bench";

/// The Python of the LocalStack virtualenv.
fn localstack_python() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os("VSTREAM_LOCALSTACK_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(python.into());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let tools = std::env::var_os("VSTREAM_TOOLS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| cache.join("vstream-tools"), PathBuf::from);
    let python = tools.join("localstack/bin/python");
    anyhow::ensure!(
        python.exists(),
        "LocalStack is not installed at {}: run scripts/test once (it creates that virtualenv), \
         or bench/assets/latency-setup.sh, or set VSTREAM_LOCALSTACK_PYTHON",
        python.display()
    );
    Ok(python)
}

/// A running LocalStack S3 with [`BUCKET`].
pub struct LocalStack {
    pub endpoint: String,
    proc: Proc,
    http: reqwest::Client,
}

impl LocalStack {
    /// Starts LocalStack on a free port with its files under `dir`; ready once the bucket is
    /// created (within 60 s).
    pub async fn start(dir: &Path) -> anyhow::Result<LocalStack> {
        let python = localstack_python()?;
        let port = free_port()?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "s3")
            .env("DNS_ADDRESS", "0")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DISABLE_EVENTS", "1")
            .env("LOCALSTACK_TELEMETRY_DISABLED", "1")
            // Its own directories: LocalStack wipes them at start and stop.
            .env("FILESYSTEM_ROOT", dir.join("fs"))
            .env("TMPDIR", &tmp)
            .current_dir(dir);
        let proc = Proc::spawn(
            "LocalStack",
            &mut cmd,
            &dir.join("localstack.log"),
            false,
            Duration::from_secs(5),
        )?;
        let mut s3 = LocalStack {
            endpoint: format!("http://127.0.0.1:{port}"),
            proc,
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            // Creating the bucket is the readiness check: it works once S3 answers.
            let url = format!("{}/{BUCKET}", s3.endpoint);
            if let Ok(response) = s3.http.put(&url).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            s3.proc.check_alive()?;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "LocalStack not ready within 60 s:\n{}",
                log_tail(&s3.proc.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "latency: LocalStack S3 ready on {} in {:.1} s",
            s3.endpoint,
            started.elapsed().as_secs_f64()
        );
        Ok(s3)
    }

    /// The plain HTTP URL of an object (path-style).
    pub fn url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.endpoint)
    }

    /// The URL path of an object (for a page served from the same bucket).
    pub fn path(&self, key: &str) -> String {
        format!("/{BUCKET}/{key}")
    }

    /// Stores an object with its `Content-Type` (unsigned: LocalStack accepts it).
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .put(self.url(key))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT {key}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "PUT {key}: {}",
            response.status()
        );
        Ok(())
    }

    /// Stops LocalStack (it removes its files on SIGTERM).
    pub async fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(5)).await;
    }
}
