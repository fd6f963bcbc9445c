//! Child processes of the latency benchmark: each in its own process group, its output in a log
//! file, and the whole group ended when the guard is dropped (SIGTERM, a grace period, then
//! SIGKILL), so nothing outlives the benchmark, on an error path too.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{kill_process_group, Pid, Signal};

/// A child process in its own process group.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Time the group gets between SIGTERM and SIGKILL when dropped.
    grace: Duration,
}

impl Proc {
    /// Starts `cmd` in a new process group, stdout and stderr appended to `log`, stdin closed
    /// unless `stdin` (then [`Proc::take_stdin`] gives it).
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        stdin: bool,
        grace: Duration,
    ) -> anyhow::Result<Proc> {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            grace,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
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

    /// Waits up to `limit` for the process to exit by itself.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM to the process (not its group) and waits up to `limit` for it to exit.
    /// Returns whether it exited.
    pub async fn terminate(&mut self, limit: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The process is not reaped before the group is signalled, so its ID (the group's)
        // cannot have been reused by then.
        let Some(group) = Pid::from_raw(self.child.id() as i32) else {
            return;
        };
        let alive = |child: &mut Child| matches!(child.try_wait(), Ok(None));
        if !self.grace.is_zero() && alive(&mut self.child) {
            let _ = kill_process_group(group, Signal::TERM);
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline && alive(&mut self.child) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (ffmpeg children, Chromium, LocalStack's workers).
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
