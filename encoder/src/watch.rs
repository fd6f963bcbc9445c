//! Finding finished segments: ffmpeg's own playlist of each rendition is polled (every 50 ms,
//! parsed only when the file changed); a segment listed there is complete. ffmpeg writes its
//! playlists through a temporary file and a rename (`temp_file`), so a read never sees half a
//! playlist.
//!
//! The watcher runs apart from the uploads, so a slow store never lets a segment leave
//! ffmpeg's short window unseen: found segments wait in a queue (their data stays on disk).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use m3u8_rs::MediaPlaylist;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ffmpeg::{variant_dir, variant_playlist};

/// How often the playlists are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A complete segment, numbered in the stream's own sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentReady {
    /// Index of the rendition (variant) it belongs to.
    pub rendition: usize,
    /// Its number in the stream (`{index}.ts`), continuing across ffmpeg restarts.
    pub index: u64,
    /// Duration in seconds (from `EXTINF`).
    pub duration: f64,
    /// The file ffmpeg wrote.
    pub path: PathBuf,
    /// The first segment after an ffmpeg restart: the timeline breaks before it.
    pub discontinuity: bool,
    /// Wall clock (ms since the epoch) when this ffmpeg run's first media byte arrived.
    pub timeline_start_ms: u64,
}

/// A segment as listed in ffmpeg's playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSegment {
    /// ffmpeg's media sequence number of the segment.
    pub seq: u64,
    pub duration: f64,
    pub uri: String,
}

/// The segments of `playlist` numbered `next_seq` or later, and how many before them were
/// never seen (they left ffmpeg's window between two reads).
pub fn new_segments(playlist: &MediaPlaylist, next_seq: u64) -> (Vec<FoundSegment>, u64) {
    let first = playlist.media_sequence;
    let skipped = first.saturating_sub(next_seq);
    let found = playlist
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| FoundSegment {
            seq: first + i as u64,
            // EXTINF is parsed as f32: round away its noise.
            duration: (f64::from(s.duration) * 1e6).round() / 1e6,
            uri: s.uri.clone(),
        })
        .filter(|s| s.seq >= next_seq)
        .collect();
    (found, skipped)
}

/// At the end of a run, a rendition may have one more, very short segment than the others
/// (the last frame fell just after a keyframe time in one frame rate, not in another). Such
/// extra tails, no longer than `max_tail` seconds, are removed so every rendition has the
/// same segments. `next_seq[i]` is the first sequence number not yet emitted for rendition
/// `i`. Returns the removed segments with their rendition.
pub fn trim_unaligned_tails(
    found: &mut [Vec<FoundSegment>],
    next_seq: &[u64],
    max_tail: f64,
) -> Vec<(usize, FoundSegment)> {
    let total = |i: usize, list: &[FoundSegment]| list.last().map_or(next_seq[i], |s| s.seq + 1);
    let Some(shortest) = found.iter().enumerate().map(|(i, l)| total(i, l)).min() else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for (i, list) in found.iter_mut().enumerate() {
        while list
            .last()
            .is_some_and(|s| s.seq >= shortest && s.duration <= max_tail)
        {
            if let Some(segment) = list.pop() {
                removed.push((i, segment));
            }
        }
    }
    removed
}

/// What tells a rewritten playlist apart: ffmpeg renames a new file over the old one, so the
/// inode changes even when the modification time (jiffy-coarse on Linux) and length do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl Signature {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Signature {
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: metadata.len(),
            inode,
        }
    }
}

struct WatchedRendition {
    dir: PathBuf,
    playlist: PathBuf,
    signature: Option<Signature>,
    next_seq: u64,
    emitted_any: bool,
    parse_warned: bool,
}

/// Watches the playlists of one ffmpeg run.
pub struct Watcher {
    renditions: Vec<WatchedRendition>,
    base: u64,
    discontinuity: bool,
    timeline_start_ms: u64,
    max_tail: f64,
}

impl Watcher {
    /// `out_dir` is the run's output directory, `base` the stream index of the run's first
    /// segment, `discontinuity` whether the run follows another one.
    pub fn new(
        out_dir: &Path,
        renditions: usize,
        base: u64,
        discontinuity: bool,
        timeline_start_ms: u64,
        hls_time: f64,
    ) -> Self {
        Watcher {
            renditions: (0..renditions)
                .map(|i| WatchedRendition {
                    dir: variant_dir(out_dir, i),
                    playlist: variant_playlist(out_dir, i),
                    signature: None,
                    next_seq: 0,
                    emitted_any: false,
                    parse_warned: false,
                })
                .collect(),
            base,
            discontinuity,
            timeline_start_ms,
            max_tail: (hls_time / 2.0).min(0.5),
        }
    }

    /// The stream index after the last segment of this run (the next run's `base`).
    pub fn next_base(&self) -> u64 {
        self.base
            + self
                .renditions
                .iter()
                .map(|r| r.next_seq)
                .max()
                .unwrap_or(0)
    }

    async fn read(&mut self, i: usize, force: bool) -> Option<MediaPlaylist> {
        let watched = &mut self.renditions[i];
        let metadata = match tokio::fs::metadata(&watched.playlist).await {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                warn!(path = ?watched.playlist, error = %err, "cannot read ffmpeg's playlist");
                return None;
            }
        };
        let signature = Signature::of(&metadata);
        if !force && watched.signature == Some(signature) {
            return None;
        }
        let bytes = match tokio::fs::read(&watched.playlist).await {
            Ok(bytes) => bytes,
            Err(err) => {
                debug!(path = ?watched.playlist, error = %err, "playlist vanished while read");
                return None;
            }
        };
        watched.signature = Some(signature);
        match m3u8_rs::parse_media_playlist_res(&bytes) {
            Ok(playlist) => Some(playlist),
            Err(err) => {
                if !watched.parse_warned {
                    warn!(path = ?watched.playlist, error = %err, "unreadable ffmpeg playlist");
                    watched.parse_warned = true;
                }
                None
            }
        }
    }

    fn found(&mut self, i: usize, playlist: &MediaPlaylist) -> Vec<FoundSegment> {
        let watched = &mut self.renditions[i];
        let (found, skipped) = new_segments(playlist, watched.next_seq);
        if skipped > 0 {
            warn!(
                rendition = i,
                skipped, "segments left ffmpeg's playlist before they were seen"
            );
        }
        found
    }

    fn emit(&mut self, i: usize, found: Vec<FoundSegment>) -> Vec<SegmentReady> {
        let watched = &mut self.renditions[i];
        let mut ready = Vec::with_capacity(found.len());
        for segment in found {
            watched.next_seq = segment.seq + 1;
            if segment.uri.contains(['/', '\\']) || segment.uri.starts_with('.') {
                warn!(uri = %segment.uri, "unexpected segment name in ffmpeg's playlist");
                continue;
            }
            ready.push(SegmentReady {
                rendition: i,
                index: self.base + segment.seq,
                duration: segment.duration,
                path: watched.dir.join(&segment.uri),
                discontinuity: self.discontinuity && !watched.emitted_any,
                timeline_start_ms: self.timeline_start_ms,
            });
            watched.emitted_any = true;
        }
        ready
    }

    /// One look at every playlist that changed.
    pub async fn poll(&mut self) -> Vec<SegmentReady> {
        let mut ready = Vec::new();
        for i in 0..self.renditions.len() {
            if let Some(playlist) = self.read(i, false).await {
                let found = self.found(i, &playlist);
                ready.extend(self.emit(i, found));
            }
        }
        ready
    }

    /// The last look, after ffmpeg exited: every playlist is read again, and unaligned tails
    /// are dropped (their files deleted).
    pub async fn finish(&mut self) -> Vec<SegmentReady> {
        let mut found = Vec::with_capacity(self.renditions.len());
        for i in 0..self.renditions.len() {
            let list = match self.read(i, true).await {
                Some(playlist) => self.found(i, &playlist),
                None => Vec::new(),
            };
            found.push(list);
        }
        let next: Vec<u64> = self.renditions.iter().map(|r| r.next_seq).collect();
        for (i, segment) in trim_unaligned_tails(&mut found, &next, self.max_tail) {
            debug!(
                rendition = i,
                duration = segment.duration,
                "dropping a final segment the other renditions do not have"
            );
            let _ = tokio::fs::remove_file(self.renditions[i].dir.join(&segment.uri)).await;
        }
        let mut ready = Vec::new();
        for (i, list) in found.into_iter().enumerate() {
            ready.extend(self.emit(i, list));
        }
        ready
    }

    /// Polls until `done` (ffmpeg exited), then takes the last look; sends every segment to
    /// `ready` in order. Returns [`Watcher::next_base`].
    pub async fn run(
        mut self,
        ready: mpsc::UnboundedSender<SegmentReady>,
        done: CancellationToken,
    ) -> u64 {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = done.cancelled() => break,
                _ = ticker.tick() => {
                    for segment in self.poll().await {
                        if ready.send(segment).is_err() {
                            return self.next_base();
                        }
                    }
                }
            }
        }
        for segment in self.finish().await {
            let _ = ready.send(segment);
        }
        self.next_base()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(text: &str) -> MediaPlaylist {
        m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("playlist")
    }

    const FFMPEG_PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
        #EXTINF:2.000000,\n3.ts\n#EXTINF:2.033333,\n4.ts\n#EXTINF:1.966667,\n5.ts\n";

    #[test]
    fn lists_only_segments_not_yet_seen() {
        let p = playlist(FFMPEG_PLAYLIST);
        let (found, skipped) = new_segments(&p, 4);
        assert_eq!(skipped, 0);
        assert_eq!(
            found,
            vec![
                FoundSegment {
                    seq: 4,
                    duration: 2.033333,
                    uri: "4.ts".into()
                },
                FoundSegment {
                    seq: 5,
                    duration: 1.966667,
                    uri: "5.ts".into()
                }
            ]
        );
        let (found, skipped) = new_segments(&p, 1);
        assert_eq!((found.len(), skipped), (3, 2));
        assert!(new_segments(&p, 6).0.is_empty());
    }

    fn seg(seq: u64, duration: f64) -> FoundSegment {
        FoundSegment {
            seq,
            duration,
            uri: format!("{seq}.ts"),
        }
    }

    #[test]
    fn a_tiny_extra_last_segment_is_trimmed_but_a_real_one_is_kept() {
        let mut found = vec![vec![seg(3, 2.0), seg(4, 0.033)], vec![seg(3, 2.0)], vec![]];
        // The third rendition already emitted up to 3.
        let removed = trim_unaligned_tails(&mut found, &[3, 3, 4], 0.5);
        assert_eq!(removed, vec![(0, seg(4, 0.033))]);
        assert_eq!(found[0], vec![seg(3, 2.0)]);

        let mut found = vec![vec![seg(0, 2.0), seg(1, 1.5)], vec![seg(0, 2.0)]];
        assert!(trim_unaligned_tails(&mut found, &[0, 0], 0.5).is_empty());
        assert_eq!(found[0].len(), 2);
    }

    #[tokio::test]
    async fn watcher_emits_each_segment_once_with_stream_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..2 {
            std::fs::create_dir_all(variant_dir(dir.path(), i)).expect("mkdir");
        }
        let mut watcher = Watcher::new(dir.path(), 2, 10, true, 1_000, 2.0);
        assert!(watcher.poll().await.is_empty(), "no playlist yet");
        let write = |i: usize, text: &str| {
            std::fs::write(variant_playlist(dir.path(), i), text).expect("write")
        };
        write(0, FFMPEG_PLAYLIST);
        let ready = watcher.poll().await;
        assert_eq!(ready.len(), 3);
        assert_eq!(ready[0].index, 13);
        assert!(ready[0].discontinuity);
        assert!(!ready[1].discontinuity);
        assert_eq!(ready[2].path, variant_dir(dir.path(), 0).join("5.ts"));
        assert!(watcher.poll().await.is_empty(), "unchanged playlist");
        write(1, FFMPEG_PLAYLIST);
        let ready = watcher.finish().await;
        assert_eq!(ready.len(), 3);
        assert!(ready.iter().all(|s| s.rendition == 1));
        assert_eq!(watcher.next_base(), 16);
    }
}
