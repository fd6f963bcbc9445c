//! Deleting what a stream that is not recorded left in the store once it ended: the segments of
//! its last live window, its playlists, master, fMP4 init segments, preview images and
//! `index.json` (SPEC §3). Segments that left the live window while it ran are deleted by the
//! publisher's [`crate::publish::DelayedDeleter`].
//!
//! The deletion waits `HLS_CLEANUP_DELAY_SECONDS` (default [`DEFAULT_CLEANUP_DELAY`], so that
//! players still on the last window and a web app showing the last preview are not cut off;
//! 0 = never delete). It runs in a task of the encoder per stream, not in the job: the job
//! ends (and its load is released) when the stream ends. The task is cancelled when the
//! encoder shuts down: pending cleanups are lost on a restart, and the S3 lifecycle rule on
//! the `vstream-live=1` tag (infra/) removes those objects later as a backstop.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument as _};

use crate::store::ObjectStore;

/// `HLS_CLEANUP_DELAY_SECONDS` default: five minutes.
pub const DEFAULT_CLEANUP_DELAY: Duration = Duration::from_secs(300);
/// Deletions in flight at once.
const CONCURRENCY: usize = 8;
/// Passes over the keys whose deletion failed.
const PASSES: u32 = 3;
/// Pause before another pass.
const PASS_BACKOFF: Duration = Duration::from_secs(5);

/// The objects a stream left in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leftovers {
    /// Playlists, master, the segments of the last window, init segments, `index.json`.
    pub keys: Vec<String>,
    /// Preview images: their folder key (`img-preview/{channel}/{id}/{W}x{H}-{S}`) and how
    /// many (`0.jpg` to `{count-1}.jpg`); listed lazily, a long stream has many.
    pub preview_images: Option<(String, u64)>,
}

impl Leftovers {
    /// Every key, the preview images last.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        let images = self
            .preview_images
            .iter()
            .flat_map(|(folder, count)| (0..*count).map(move |i| format!("{folder}/{i}.jpg")));
        self.keys.iter().cloned().chain(images)
    }

    pub fn len(&self) -> u64 {
        self.keys.len() as u64 + self.preview_images.as_ref().map_or(0, |(_, n)| *n)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Deletes `keys`, a few at a time; returns the keys whose deletion failed.
async fn delete_all(store: &dyn ObjectStore, keys: Vec<String>) -> Vec<String> {
    futures::stream::iter(keys)
        .map(|key| async move {
            match store.delete(&key).await {
                Ok(()) => None,
                Err(err) => {
                    debug!(%key, error = %err, "cleanup: deletion failed");
                    Some(key)
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await
}

/// Deletes the leftovers now, retrying failures a few times.
pub async fn delete_leftovers(store: &dyn ObjectStore, leftovers: &Leftovers) {
    let total = leftovers.len();
    let mut keys: Vec<String> = leftovers.keys().collect();
    for pass in 1..=PASSES {
        keys = delete_all(store, keys).await;
        if keys.is_empty() {
            info!(
                objects = total,
                "stream cleaned up: its objects were deleted"
            );
            return;
        }
        if pass < PASSES {
            tokio::time::sleep(PASS_BACKOFF * pass).await;
        }
    }
    warn!(
        failed = keys.len(),
        objects = total,
        first = %keys[0],
        "stream cleanup: some objects could not be deleted (the bucket's lifecycle rule removes them later)"
    );
}

/// Schedules the deletion of a finished stream's leftovers `delay` from now, in a task of
/// `tracker` that `shutdown` cancels (nothing is deleted then). A zero delay means never:
/// nothing is scheduled and `None` is returned.
pub fn schedule(
    store: Arc<dyn ObjectStore>,
    leftovers: Leftovers,
    delay: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Option<JoinHandle<()>> {
    if delay.is_zero() || leftovers.is_empty() {
        return None;
    }
    info!(
        objects = leftovers.len(),
        after = ?delay,
        "the stream's objects will be deleted"
    );
    Some(
        tracker.spawn(
            async move {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        info!(
                            objects = leftovers.len(),
                            "shutting down: the pending cleanup of this stream is abandoned (the bucket's lifecycle rule is the backstop)"
                        );
                    }
                    _ = tokio::time::sleep(delay) => {
                        tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => {}
                            _ = delete_leftovers(store.as_ref(), &leftovers) => {}
                        }
                    }
                }
            }
            .instrument(tracing::Span::current()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::MemoryStore;
    use bytes::Bytes;

    fn leftovers() -> Leftovers {
        Leftovers {
            keys: vec!["hls/c/s/r/live.m3u8".into(), "hls/c/s/master.m3u8".into()],
            preview_images: Some(("img-preview/c/s/256x144-2".into(), 3)),
        }
    }

    async fn filled() -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::default());
        for key in leftovers()
            .keys()
            .chain(["hls/c/other/master.m3u8".to_owned()])
        {
            store
                .put(&key, Bytes::from_static(b"x"))
                .await
                .expect("put");
        }
        store
    }

    #[test]
    fn lists_every_leftover_with_the_images_last() {
        let keys: Vec<String> = leftovers().keys().collect();
        assert_eq!(
            keys,
            [
                "hls/c/s/r/live.m3u8",
                "hls/c/s/master.m3u8",
                "img-preview/c/s/256x144-2/0.jpg",
                "img-preview/c/s/256x144-2/1.jpg",
                "img-preview/c/s/256x144-2/2.jpg",
            ]
        );
        assert_eq!(leftovers().len(), 5);
        assert!(Leftovers::default().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn leftovers_are_deleted_after_the_delay_and_nothing_else() {
        let store = filled().await;
        let tracker = TaskTracker::new();
        let task = schedule(
            store.clone(),
            leftovers(),
            Duration::from_secs(300),
            CancellationToken::new(),
            &tracker,
        )
        .expect("scheduled");
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert_eq!(store.keys().len(), 6, "nothing deleted before the delay");
        task.await.expect("cleanup");
        assert_eq!(store.keys(), ["hls/c/other/master.m3u8"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_cancels_the_pending_cleanup() {
        let store = filled().await;
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let task = schedule(
            store.clone(),
            leftovers(),
            Duration::from_secs(300),
            shutdown.clone(),
            &tracker,
        )
        .expect("scheduled");
        tokio::time::sleep(Duration::from_secs(10)).await;
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("the task ends at once");
        task.await.expect("cleanup");
        assert_eq!(store.keys().len(), 6, "nothing deleted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_delay_means_never() {
        let store = filled().await;
        let tracker = TaskTracker::new();
        assert!(schedule(
            store.clone(),
            leftovers(),
            Duration::ZERO,
            CancellationToken::new(),
            &tracker
        )
        .is_none());
        assert!(tracker.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_deletions_are_tried_again() {
        let store = filled().await;
        store.fail_next(4);
        delete_leftovers(store.as_ref(), &leftovers()).await;
        assert_eq!(store.keys(), ["hls/c/other/master.m3u8"]);
    }
}
