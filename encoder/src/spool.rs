//! The bounded local spool of one stream: what ffmpeg finished (segments, preview images)
//! waits here, on disk where ffmpeg wrote it, until the publisher has stored it. Items leave in
//! the order they came, so while the store is down nothing overtakes anything, and when it is
//! back the backlog goes up in order.
//!
//! The bound (`HLS_SPOOL_MAX_BYTES`, per stream) counts the bytes of the files waiting,
//! including the one being uploaded. Beyond it:
//! - a stream that is **not recorded** drops its oldest waiting segments, a whole time slot
//!   (segment `N` of every rendition) at a time so the renditions stay aligned, never a slot of
//!   which a segment was already taken for upload; the files are deleted, a log line and a
//!   metric say so, and the publisher marks a discontinuity where they are missing;
//! - a **recorded** stream never drops anything: the stream is ended instead (as
//!   `HLS_FRAGMENT_COUNT_LIMIT` ends it), so ffmpeg stops producing, the recording so far
//!   stays complete and goes up when the store returns, and the web app gets `stream-closed`
//!   once the final playlists are stored. Holding ffmpeg's input back instead would only move
//!   the loss upstream: the ingest's queues are bounded and skip to the next keyframe.
//!
//! The spool lives as long as the job: pending items are lost if the encoder process dies
//! (the segments are in its work directory, which a new process does not pick up).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::metrics;
use crate::watch::{Produced, SegmentReady};

/// `HLS_SPOOL_MAX_BYTES` default: 1 GiB per stream.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Dropped time slots remembered, so late segments of a dropped slot are dropped too.
const REMEMBERED_DROPS: usize = 64;

/// What the publisher takes out of the spool.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Something to store; `bytes` are released with [`Spool::release`] once it is done.
    Item { produced: Produced, bytes: u64 },
    /// A segment dropped from the full spool (its file is gone), in the place it had.
    Dropped(SegmentReady),
}

#[derive(Debug)]
enum Entry {
    Pending { produced: Produced, bytes: u64 },
    Dropped(SegmentReady),
}

/// The result of a push.
#[derive(Debug, Default, PartialEq)]
pub struct PushOutcome {
    /// Segments dropped to make room (their files must be deleted).
    pub dropped: Vec<SegmentReady>,
    /// The spool of a stream that cannot drop went over its bound (reported once).
    pub full: bool,
}

/// The spool's bookkeeping, without I/O.
#[derive(Debug)]
pub struct SpoolQueue {
    entries: VecDeque<Entry>,
    /// Bytes of the pending entries and of the taken ones not released yet.
    bytes: u64,
    /// Entries pending or taken and not released.
    items: u64,
    max_bytes: u64,
    droppable: bool,
    /// The highest segment number taken so far: slots at or below it are never dropped.
    taken_max_index: Option<u64>,
    dropped_slots: BTreeSet<u64>,
    full_reported: bool,
}

impl SpoolQueue {
    /// `droppable`: whether segments may be dropped when full (streams that are not recorded).
    pub fn new(max_bytes: u64, droppable: bool) -> Self {
        SpoolQueue {
            entries: VecDeque::new(),
            bytes: 0,
            items: 0,
            max_bytes,
            droppable,
            taken_max_index: None,
            dropped_slots: BTreeSet::new(),
            full_reported: false,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries waiting (dropped markers included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn droppable_slot(&self, index: u64) -> bool {
        self.taken_max_index.is_none_or(|taken| index > taken)
    }

    /// Queues an item of `bytes` bytes; makes room if needed and allowed.
    pub fn push(&mut self, produced: Produced, bytes: u64) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        if let Produced::Segment(segment) = &produced {
            if self.dropped_slots.contains(&segment.index) {
                // The rest of its slot is gone already (none of it was taken).
                self.entries.push_back(Entry::Dropped(segment.clone()));
                outcome.dropped.push(segment.clone());
                return outcome;
            }
        }
        self.entries.push_back(Entry::Pending { produced, bytes });
        self.bytes += bytes;
        self.items += 1;
        while self.bytes > self.max_bytes {
            if !self.droppable {
                if !self.full_reported {
                    self.full_reported = true;
                    outcome.full = true;
                }
                break;
            }
            let slot = self.entries.iter().find_map(|entry| match entry {
                Entry::Pending {
                    produced: Produced::Segment(s),
                    ..
                } if self.droppable_slot(s.index) => Some(s.index),
                _ => None,
            });
            let Some(slot) = slot else { break };
            self.drop_slot(slot, &mut outcome.dropped);
        }
        outcome
    }

    fn drop_slot(&mut self, slot: u64, dropped: &mut Vec<SegmentReady>) {
        for entry in self.entries.iter_mut() {
            let Entry::Pending {
                produced: Produced::Segment(segment),
                bytes,
            } = entry
            else {
                continue;
            };
            if segment.index != slot {
                continue;
            }
            self.bytes -= *bytes;
            self.items -= 1;
            let segment = segment.clone();
            dropped.push(segment.clone());
            *entry = Entry::Dropped(segment);
        }
        self.dropped_slots.insert(slot);
        while self.dropped_slots.len() > REMEMBERED_DROPS {
            self.dropped_slots.pop_first();
        }
    }

    /// The oldest entry. An item's bytes stay counted until [`SpoolQueue::release`].
    pub fn take(&mut self) -> Option<Taken> {
        Some(match self.entries.pop_front()? {
            Entry::Pending { produced, bytes } => {
                if let Produced::Segment(segment) = &produced {
                    self.taken_max_index = Some(
                        self.taken_max_index
                            .map_or(segment.index, |m| m.max(segment.index)),
                    );
                }
                Taken::Item { produced, bytes }
            }
            Entry::Dropped(segment) => Taken::Dropped(segment),
        })
    }

    /// A taken item is done (stored or given up): its bytes no longer count.
    pub fn release(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_sub(bytes);
        self.items = self.items.saturating_sub(1);
    }

    /// Whether a segment of `rendition` is waiting.
    pub fn has_segment_of(&self, rendition: usize) -> bool {
        self.entries.iter().any(|entry| {
            matches!(entry, Entry::Pending { produced: Produced::Segment(s), .. } if s.rendition == rendition)
        })
    }

    /// Whether a preview image is waiting.
    pub fn has_preview(&self) -> bool {
        self.entries.iter().any(|entry| {
            matches!(
                entry,
                Entry::Pending {
                    produced: Produced::Preview(_),
                    ..
                }
            )
        })
    }
}

struct Shared {
    queue: Mutex<SpoolQueue>,
    notify: Notify,
    closed: AtomicBool,
    /// Cancelled when a spool that cannot drop is full: the stream ends.
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let queue = self
            .queue
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        metrics::spooled(-(queue.bytes as i64), -(queue.items as i64));
    }
}

/// The spool of one stream: the watcher pushes, the publisher takes. Clones share it.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

impl Spool {
    /// `record`: the stream is recorded (never drop; end the stream via `stop` when full).
    pub fn new(max_bytes: u64, record: bool, stop: CancellationToken) -> Self {
        Spool {
            shared: Arc::new(Shared {
                queue: Mutex::new(SpoolQueue::new(max_bytes.max(1), !record)),
                notify: Notify::new(),
                closed: AtomicBool::new(false),
                stop,
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, SpoolQueue> {
        // A panic while holding the lock cannot leave the counters inconsistent enough to
        // matter: carry on.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues what ffmpeg finished (never waits).
    pub fn push(&self, produced: Produced) {
        let path = match &produced {
            Produced::Segment(s) => &s.path,
            Produced::Preview(p) => &p.path,
        };
        let mut bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if let Produced::Segment(SegmentReady {
            init: Some(init), ..
        }) = &produced
        {
            bytes += std::fs::metadata(init).map(|m| m.len()).unwrap_or(0);
        }
        let (outcome, total, max) = {
            let mut queue = self.queue();
            let before = (queue.bytes, queue.items);
            let outcome = queue.push(produced, bytes);
            metrics::spooled(
                queue.bytes as i64 - before.0 as i64,
                queue.items as i64 - before.1 as i64,
            );
            (outcome, queue.bytes, queue.max_bytes)
        };
        if !outcome.dropped.is_empty() {
            let slots: BTreeSet<u64> = outcome.dropped.iter().map(|s| s.index).collect();
            warn!(
                segments = ?slots,
                spooled_bytes = total,
                max_bytes = max,
                "spool full while the store is unavailable: oldest segments of this live-only stream dropped"
            );
            metrics::segments_dropped(outcome.dropped.len() as u64);
            for segment in &outcome.dropped {
                let _ = std::fs::remove_file(&segment.path);
            }
        }
        if outcome.full {
            error!(
                spooled_bytes = total,
                max_bytes = max,
                "spool full while the store is unavailable: ending this recorded stream so that nothing recorded is lost (the backlog goes up when the store returns)"
            );
            metrics::spool_full_stop();
            self.shared.stop.cancel();
        }
        self.shared.notify.notify_one();
    }

    /// No more pushes: [`Spool::next`] returns `None` once the spool is empty.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }

    /// The oldest entry, waiting for one; `None` when closed and empty. One consumer only.
    pub async fn next(&self) -> Option<Taken> {
        loop {
            {
                let mut queue = self.queue();
                if let Some(taken) = queue.take() {
                    return Some(taken);
                }
                if self.shared.closed.load(Ordering::SeqCst) {
                    return None;
                }
            }
            // notify_one keeps a permit when nobody waits: a push between the check and here
            // is not missed.
            self.shared.notify.notified().await;
        }
    }

    /// A taken item is done: its bytes leave the spool.
    pub fn release(&self, bytes: u64) {
        self.queue().release(bytes);
        metrics::spooled(-(bytes as i64), -1);
    }

    pub fn has_segment_of(&self, rendition: usize) -> bool {
        self.queue().has_segment_of(rendition)
    }

    pub fn has_preview(&self) -> bool {
        self.queue().has_preview()
    }

    /// Bytes waiting (including the item being uploaded).
    pub fn bytes(&self) -> u64 {
        self.queue().bytes()
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::PreviewReady;
    use std::path::PathBuf;

    fn segment(rendition: usize, index: u64) -> Produced {
        Produced::Segment(SegmentReady {
            rendition,
            index,
            duration: 2.0,
            path: PathBuf::from(format!("{rendition}/{index}.ts")),
            discontinuity: false,
            timeline_start_ms: 0,
            run: 0,
            init: None,
        })
    }

    fn order(queue: &mut SpoolQueue) -> Vec<String> {
        let mut taken = Vec::new();
        while let Some(t) = queue.take() {
            taken.push(match t {
                Taken::Item {
                    produced: Produced::Segment(s),
                    bytes,
                } => {
                    queue.release(bytes);
                    format!("{}:{}", s.rendition, s.index)
                }
                Taken::Item { bytes, .. } => {
                    queue.release(bytes);
                    "preview".into()
                }
                Taken::Dropped(s) => format!("dropped {}:{}", s.rendition, s.index),
            });
        }
        taken
    }

    #[test]
    fn items_leave_in_the_order_they_came() {
        let mut queue = SpoolQueue::new(1000, true);
        for index in 0..3 {
            queue.push(segment(0, index), 10);
            queue.push(segment(1, index), 10);
        }
        queue.push(
            Produced::Preview(PreviewReady {
                path: "p/0.jpg".into(),
            }),
            1,
        );
        assert_eq!(queue.bytes(), 61);
        assert!(queue.has_segment_of(1) && queue.has_preview());
        assert_eq!(
            order(&mut queue),
            ["0:0", "1:0", "0:1", "1:1", "0:2", "1:2", "preview"]
        );
        assert_eq!(queue.bytes(), 0);
        assert!(!queue.has_segment_of(0));
    }

    #[test]
    fn a_full_live_spool_drops_the_oldest_whole_slot_it_has_not_started() {
        let mut queue = SpoolQueue::new(45, true);
        queue.push(segment(0, 0), 10);
        queue.push(segment(1, 0), 10);
        // 0:0 is being uploaded (taken, still counted).
        let Some(Taken::Item { bytes: taken, .. }) = queue.take() else {
            panic!("an item")
        };
        queue.push(segment(0, 1), 10);
        queue.push(segment(1, 1), 10);
        assert_eq!(queue.bytes(), 40);
        // Over the bound: slot 0 is partly taken, so slot 1 goes.
        let outcome = queue.push(segment(0, 2), 10);
        let dropped: Vec<_> = outcome
            .dropped
            .iter()
            .map(|s| (s.rendition, s.index))
            .collect();
        assert_eq!(dropped, [(0, 1), (1, 1)]);
        assert!(!outcome.full);
        assert_eq!(queue.bytes(), 30);
        // A late segment of a dropped slot is dropped on arrival.
        let late = queue.push(segment(2, 1), 10);
        assert_eq!(late.dropped.len(), 1);
        queue.release(taken);
        assert_eq!(
            order(&mut queue),
            ["1:0", "dropped 0:1", "dropped 1:1", "0:2", "dropped 2:1"]
        );
    }

    #[test]
    fn a_recorded_spool_never_drops_and_reports_full_once() {
        let mut queue = SpoolQueue::new(25, false);
        assert!(!queue.push(segment(0, 0), 10).full);
        assert!(!queue.push(segment(0, 1), 10).full);
        let outcome = queue.push(segment(0, 2), 10);
        assert!(outcome.full && outcome.dropped.is_empty());
        assert!(!queue.push(segment(0, 3), 10).full, "reported once");
        assert_eq!(queue.bytes(), 40);
        assert_eq!(order(&mut queue), ["0:0", "0:1", "0:2", "0:3"]);
    }

    #[tokio::test]
    async fn the_publisher_waits_for_items_and_ends_when_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.ts");
        std::fs::write(&path, vec![0u8; 100]).expect("write");
        let stop = CancellationToken::new();
        let spool = Spool::new(150, true, stop.clone());
        let consumer = tokio::spawn({
            let spool = spool.clone();
            async move {
                let mut sizes = Vec::new();
                while let Some(taken) = spool.next().await {
                    if let Taken::Item { bytes, .. } = taken {
                        sizes.push(bytes);
                        spool.release(bytes);
                    }
                }
                sizes
            }
        });
        let produced = |index| {
            Produced::Segment(SegmentReady {
                rendition: 0,
                index,
                duration: 2.0,
                path: path.clone(),
                discontinuity: false,
                timeline_start_ms: 0,
                run: 0,
                init: None,
            })
        };
        spool.push(produced(0));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        spool.push(produced(1));
        spool.close();
        assert_eq!(consumer.await.expect("consumer"), [100, 100]);
        assert!(!stop.is_cancelled());
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn a_full_recorded_spool_ends_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.ts");
        std::fs::write(&path, vec![0u8; 100]).expect("write");
        let stop = CancellationToken::new();
        let spool = Spool::new(150, true, stop.clone());
        for index in 0..2 {
            spool.push(Produced::Segment(SegmentReady {
                rendition: 0,
                index,
                duration: 2.0,
                path: path.clone(),
                discontinuity: false,
                timeline_start_ms: 0,
                run: 0,
                init: None,
            }));
        }
        assert!(stop.is_cancelled());
        assert_eq!(spool.len(), 2);
        assert!(path.exists(), "nothing recorded is deleted");
    }
}
