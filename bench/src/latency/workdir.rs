//! Watching the encoder's work directory from outside (inotify), to see the instant ffmpeg
//! finishes a segment. The layout is `{ENCODER_WORK_DIR}/{streamId}/run-{R}/{variant}/`:
//! ffmpeg's hls muxer (`-hls_flags temp_file`) writes `{N}.ts.tmp` and renames it to `{N}.ts`
//! when the segment is complete, then rewrites its own `index.m3u8` the same way (the encoder's
//! watcher reads that playlist). A segment is *closed* when `{N}.ts` appears by that rename
//! (`IN_MOVED_TO`; `IN_CLOSE_WRITE` of `{N}.ts` too, should ffmpeg ever write it in place).

use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::sync::mpsc;

/// What appeared in a variant's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// Segment `{N}.ts` / `{N}.m4s` is complete.
    Segment(u64),
    /// ffmpeg rewrote its playlist `index.m3u8`.
    Playlist,
}

#[derive(Debug, Clone)]
pub struct FileEvent {
    pub at: Instant,
    pub stream_id: String,
    /// `run-0`, `run-1`...
    pub run: String,
    pub variant: usize,
    pub produced: Produced,
}

/// An inotify watch on the work directory and every folder created below it.
pub struct WorkDirWatcher {
    pub events: mpsc::UnboundedReceiver<FileEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WorkDirWatcher {
    pub fn start(root: &Path) -> anyhow::Result<WorkDirWatcher> {
        std::fs::create_dir_all(root)?;
        let fd =
            inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).context("inotify_init1")?;
        let (tx, events) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = Watches {
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            seen: HashSet::new(),
        };
        state.add(&fd, root.to_path_buf())?;
        let thread = std::thread::Builder::new()
            .name("workdir-inotify".into())
            .spawn({
                let stop = stop.clone();
                move || state.run(fd, tx, stop)
            })?;
        Ok(WorkDirWatcher {
            events,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WorkDirWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watches {
    root: PathBuf,
    dirs: HashMap<i32, PathBuf>,
    /// Segments reported (folder, number), so each is reported once.
    seen: HashSet<(PathBuf, u64)>,
}

impl Watches {
    /// Watches `dir` and the folders already in it.
    fn add(&mut self, fd: &rustix::fd::OwnedFd, dir: PathBuf) -> anyhow::Result<()> {
        let wd = inotify::add_watch(
            fd,
            &dir,
            WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::CLOSE_WRITE,
        )
        .with_context(|| format!("inotify_add_watch {}", dir.display()))?;
        self.dirs.insert(wd, dir.clone());
        // Folders made before the watch was in place.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && !self.dirs.values().any(|d| *d == entry.path())
                {
                    let _ = self.add(fd, entry.path());
                }
            }
        }
        Ok(())
    }

    fn run(
        mut self,
        fd: rustix::fd::OwnedFd,
        tx: mpsc::UnboundedSender<FileEvent>,
        stop: Arc<AtomicBool>,
    ) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            if poll(&mut fds, Some(&timeout)).is_err() {
                continue;
            }
            let at = Instant::now();
            let mut new_dirs = Vec::new();
            let mut found = Vec::new();
            {
                let mut reader = inotify::Reader::new(&fd, &mut buf);
                while let Ok(event) = reader.next() {
                    let Some(dir) = self.dirs.get(&event.wd()) else {
                        continue;
                    };
                    let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                        continue;
                    };
                    let flags = event.events();
                    if flags.contains(ReadFlags::ISDIR) {
                        if flags.contains(ReadFlags::CREATE) {
                            new_dirs.push(dir.join(name));
                        }
                        continue;
                    }
                    if !flags.intersects(ReadFlags::MOVED_TO | ReadFlags::CLOSE_WRITE) {
                        continue;
                    }
                    found.push((dir.clone(), name.to_owned()));
                }
            }
            for dir in new_dirs {
                let _ = self.add(&fd, dir);
            }
            for (dir, name) in found {
                if let Some(event) = self.event(at, &dir, &name) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The event for file `name` in `dir`, if it is a segment or ffmpeg's playlist of a
    /// variant folder.
    fn event(&mut self, at: Instant, dir: &Path, name: &str) -> Option<FileEvent> {
        let relative = dir.strip_prefix(&self.root).ok()?;
        let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
        let [stream_id, run, variant] = parts.as_slice() else {
            return None;
        };
        let variant: usize = variant.parse().ok()?;
        let produced = if name == "index.m3u8" {
            Produced::Playlist
        } else {
            let (number, extension) = name.split_once('.')?;
            if !matches!(extension, "ts" | "m4s") {
                return None;
            }
            let n: u64 = number.parse().ok()?;
            if !self.seen.insert((dir.to_path_buf(), n)) {
                return None;
            }
            Produced::Segment(n)
        };
        Some(FileEvent {
            at,
            stream_id: (*stream_id).to_owned(),
            run: (*run).to_owned(),
            variant,
            produced,
        })
    }
}
