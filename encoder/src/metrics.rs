//! Process-wide counters of the storage path, for the binaries' `/metrics`
//! ([`storage_metrics`], [`render_prometheus`]). Counters only grow; gauges are sums over the
//! running streams.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

static OBJECTS_STORED: AtomicU64 = AtomicU64::new(0);
static UPLOAD_RETRIES: AtomicU64 = AtomicU64::new(0);
static OBJECTS_LOST: AtomicU64 = AtomicU64::new(0);
static SLOW_UPLOAD_WARNINGS: AtomicU64 = AtomicU64::new(0);
static SEGMENTS_DROPPED: AtomicU64 = AtomicU64::new(0);
static STREAMS_STOPPED_SPOOL_FULL: AtomicU64 = AtomicU64::new(0);
static FFMPEG_RESTARTS: AtomicU64 = AtomicU64::new(0);
static SPOOLED_BYTES: AtomicI64 = AtomicI64::new(0);
static SPOOLED_ITEMS: AtomicI64 = AtomicI64::new(0);

/// A snapshot of the storage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageMetrics {
    /// Objects stored (segments, playlists, images, indexes).
    pub objects_stored: u64,
    /// Failed upload attempts that were retried.
    pub upload_retries: u64,
    /// Objects given up (refused by the store for good, or their file unreadable).
    pub objects_lost: u64,
    /// Times a stream's uploads took longer than half a segment on average.
    pub slow_upload_warnings: u64,
    /// Segments dropped from a full spool (streams that are not recorded only).
    pub segments_dropped: u64,
    /// Recorded streams ended because their spool was full.
    pub streams_stopped_spool_full: u64,
    /// ffmpeg processes restarted after a crash.
    pub ffmpeg_restarts: u64,
    /// Bytes waiting in the spools of the running streams.
    pub spooled_bytes: u64,
    /// Segments and images waiting in the spools of the running streams.
    pub spooled_items: u64,
}

/// The current counters.
pub fn storage_metrics() -> StorageMetrics {
    let gauge = |g: &AtomicI64| g.load(Ordering::Relaxed).max(0) as u64;
    StorageMetrics {
        objects_stored: OBJECTS_STORED.load(Ordering::Relaxed),
        upload_retries: UPLOAD_RETRIES.load(Ordering::Relaxed),
        objects_lost: OBJECTS_LOST.load(Ordering::Relaxed),
        slow_upload_warnings: SLOW_UPLOAD_WARNINGS.load(Ordering::Relaxed),
        segments_dropped: SEGMENTS_DROPPED.load(Ordering::Relaxed),
        streams_stopped_spool_full: STREAMS_STOPPED_SPOOL_FULL.load(Ordering::Relaxed),
        ffmpeg_restarts: FFMPEG_RESTARTS.load(Ordering::Relaxed),
        spooled_bytes: gauge(&SPOOLED_BYTES),
        spooled_items: gauge(&SPOOLED_ITEMS),
    }
}

/// The counters in the Prometheus text format (`vstream_encoder_*`).
pub fn render_prometheus(metrics: &StorageMetrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP vstream_encoder_{name} {help}");
        let _ = writeln!(out, "# TYPE vstream_encoder_{name} {kind}");
        let _ = writeln!(out, "vstream_encoder_{name} {value}");
    };
    metric(
        "objects_stored_total",
        "counter",
        "Objects stored (segments, playlists, images, indexes).",
        metrics.objects_stored,
    );
    metric(
        "ffmpeg_restarts_total",
        "counter",
        "ffmpeg processes restarted after a crash.",
        metrics.ffmpeg_restarts,
    );
    metric(
        "upload_retries_total",
        "counter",
        "Failed upload attempts that were retried.",
        metrics.upload_retries,
    );
    metric(
        "objects_lost_total",
        "counter",
        "Objects given up (refused by the store for good or unreadable).",
        metrics.objects_lost,
    );
    metric(
        "slow_upload_warnings_total",
        "counter",
        "Times a stream's uploads took longer than half a segment on average.",
        metrics.slow_upload_warnings,
    );
    metric(
        "spool_segments_dropped_total",
        "counter",
        "Segments of live-only streams dropped from a full spool.",
        metrics.segments_dropped,
    );
    metric(
        "spool_full_stops_total",
        "counter",
        "Recorded streams ended because their spool was full.",
        metrics.streams_stopped_spool_full,
    );
    metric(
        "spool_bytes",
        "gauge",
        "Bytes waiting for the store.",
        metrics.spooled_bytes,
    );
    metric(
        "spool_items",
        "gauge",
        "Segments and images waiting for the store.",
        metrics.spooled_items,
    );
    out
}

pub(crate) fn object_stored() {
    OBJECTS_STORED.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn upload_retried() {
    UPLOAD_RETRIES.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn object_lost() {
    OBJECTS_LOST.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn slow_uploads() {
    SLOW_UPLOAD_WARNINGS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn segments_dropped(count: u64) {
    SEGMENTS_DROPPED.fetch_add(count, Ordering::Relaxed);
}

pub(crate) fn spool_full_stop() {
    STREAMS_STOPPED_SPOOL_FULL.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn spooled(bytes: i64, items: i64) {
    SPOOLED_BYTES.fetch_add(bytes, Ordering::Relaxed);
    SPOOLED_ITEMS.fetch_add(items, Ordering::Relaxed);
}

/// Counts an ffmpeg restart after a crash.
pub(crate) fn ffmpeg_restarted() {
    FFMPEG_RESTARTS.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_in_prometheus_text() {
        let text = render_prometheus(&StorageMetrics {
            slow_upload_warnings: 3,
            spooled_bytes: 1024,
            ..StorageMetrics::default()
        });
        assert!(text.contains("# TYPE vstream_encoder_slow_upload_warnings_total counter\n"));
        assert!(text.contains("vstream_encoder_slow_upload_warnings_total 3\n"));
        assert!(text.contains("vstream_encoder_spool_bytes 1024\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 9);
    }
}
