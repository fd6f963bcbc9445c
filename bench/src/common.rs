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

/// Clock ticks per second for /proc/<pid>/stat (USER_HZ: 100 on Linux).
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

/// /proc/<pid>/stat fields after the command name: index 0 is the state (field 3).
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
