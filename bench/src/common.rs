//! Shared pieces: locating binaries, CPU and memory of process trees, free ports, the report.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The project's binaries the benchmarks start.
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()
                .context("cannot find this executable")?
                .parent()
                .map(Path::to_path_buf)
                .context("this executable has no directory")?,
        };
        Ok(Self { dir })
    }

    /// The path of one binary (`vstream`, `ingest`, `encoder`, `coordinator-fn`).
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        anyhow::ensure!(
            p.is_file(),
            "{} not found: run `cargo build --release --workspace --bins` first, or pass --bin-dir",
            p.display()
        );
        Ok(p)
    }
}

/// What a sub-benchmark prints: a Markdown section for doc/benchmarks.md.
pub struct Report {
    pub title: String,
    /// The exact commands run (ours and the peer's), shown verbatim.
    pub commands: Vec<String>,
    /// A Markdown table (header row first).
    pub table: Vec<Vec<String>>,
    /// Raw numbers and remarks, shown in a code block.
    pub raw: String,
}

pub fn print_report(r: &Report) {
    let mut out = String::new();
    out.push_str(&format!("### {}\n\n", r.title));
    if !r.commands.is_empty() {
        out.push_str("```sh\n");
        for c in &r.commands {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("```\n\n");
    }
    for (i, row) in r.table.iter().enumerate() {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
        if i == 0 {
            out.push_str(&format!("|{}\n", "---|".repeat(row.len())));
        }
    }
    if !r.raw.is_empty() {
        out.push_str(&format!("\nRaw:\n\n```text\n{}\n```\n", r.raw.trim_end()));
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Clock ticks per second for `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) used so far by a process and every live descendant, read from
/// /proc. Descendants that already exited and were reaped by their parent are counted through
/// the parent's cutime/cstime.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = 0.0;
    for p in tree_pids(pid) {
        if let Some(s) = stat_fields(p) {
            // utime, stime, cutime, cstime are fields 14..=17 (1-based).
            let sum: f64 = s[11..15].iter().filter_map(|v| v.parse::<f64>().ok()).sum();
            total += sum / TICKS;
        }
    }
    total
}

/// Resident memory (bytes) of a process and its live descendants.
pub fn tree_rss_bytes(pid: u32) -> u64 {
    tree_pids(pid)
        .into_iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .sum()
}

/// A process and all its live descendants.
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|s| s.get(1)?.parse::<u32>().ok()) {
                all.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// `/proc/<pid>/stat` fields after the command name: index 0 is the state (field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The p-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A short description of this machine for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

// ---------------------------------------------------------------------------------------------
// Child processes, Redis and the coordinator (used by the ingest and coordinator benchmarks).

/// CPU seconds (user + system) of one process alone (not its children).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_fields(pid)
        .and_then(|s| {
            let sum: f64 = s
                .get(11..13)?
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum();
            Some(sum / TICKS)
        })
        .unwrap_or(0.0)
}

/// A child process started in its own process group, whose output goes to a log file. Dropping
/// it kills the whole group (SIGKILL) and reaps the child, so nothing outlives the benchmark
/// even on an error path.
pub struct ChildGuard {
    pub name: String,
    child: std::process::Child,
    pub log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        cmd: &mut std::process::Command,
        log: &Path,
    ) -> anyhow::Result<ChildGuard> {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the end of its log when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!(
                "{} exited ({status}); end of its log:\n{}",
                self.name,
                log_tail(&self.log, 30)
            ),
            Err(err) => anyhow::bail!("{}: cannot check the process: {err}", self.name),
        }
    }

    /// Waits until `addr` accepts TCP connections (or the process dies, or `limit` passes).
    pub async fn wait_for_tcp(
        &mut self,
        addr: std::net::SocketAddr,
        limit: std::time::Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} does not listen on {addr} after {limit:?}; end of its log:\n{}",
                    self.name,
                    log_tail(&self.log, 30)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if let Ok(None) = self.child.try_wait() {
            // The whole group: nginx's workers, ffmpeg children and the like.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A command line as shown in a report: environment, program and arguments.
pub fn command_line(env: &[(&str, String)], program: &str, args: &[String]) -> String {
    let mut parts: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.push(program.to_owned());
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// A redis-server of our own on a free port, keeping nothing on disk.
pub struct RedisServer {
    pub guard: ChildGuard,
    pub port: u16,
    pub command: String,
}

impl RedisServer {
    pub async fn start(dir: &Path) -> anyhow::Result<RedisServer> {
        let port = free_port()?;
        let args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(&args);
        let mut guard = ChildGuard::spawn("redis-server", &mut cmd, &dir.join("redis.log"))
            .context("redis-server is needed (apt-get install -y redis-server)")?;
        guard
            .wait_for_tcp(
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::time::Duration::from_secs(10),
            )
            .await?;
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.is_empty() {
                    "''".to_owned()
                } else {
                    a.clone()
                }
            })
            .collect();
        Ok(RedisServer {
            guard,
            port,
            command: command_line(&[], "redis-server", &shown),
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A `coordinator-fn` process (server mode) on a free port.
pub struct CoordinatorServer {
    pub guard: ChildGuard,
    pub base_url: String,
    pub command: String,
}

/// Shared secret of the internal calls in the benchmarks.
pub const BENCH_CONTROL_SECRET: &str = "vstream-bench-control-secret";

impl CoordinatorServer {
    /// Starts `coordinator-fn` on Redis `redis_url`, with `extra` environment settings.
    pub async fn start(
        bins: &Bins,
        dir: &Path,
        redis_url: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<CoordinatorServer> {
        let program = bins.path("coordinator-fn")?;
        let port = free_port()?;
        let mut env: Vec<(&str, String)> = vec![
            ("REDIS_URL", redis_url.to_owned()),
            ("CONTROL_SECRET", BENCH_CONTROL_SECRET.to_owned()),
            ("BIND_ADDRESS", "127.0.0.1".to_owned()),
            ("HTTP_PORT", port.to_string()),
        ];
        env.extend(extra.iter().cloned());
        let mut cmd = std::process::Command::new(&program);
        cmd.env_remove("RUST_LOG");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut guard =
            ChildGuard::spawn("coordinator-fn", &mut cmd, &dir.join("coordinator.log"))?;
        guard
            .wait_for_tcp(
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::time::Duration::from_secs(20),
            )
            .await?;
        Ok(CoordinatorServer {
            guard,
            base_url: format!("http://127.0.0.1:{port}"),
            command: command_line(&env, "coordinator-fn", &[]),
        })
    }
}
