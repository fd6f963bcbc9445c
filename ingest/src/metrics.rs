//! What an operator sees of the ingest's bounds: bytes held for media subscribers, open
//! connections, connections refused by a limit. Rendered in the Prometheus text format by
//! [`crate::Ingest::render_metrics`], which both binaries append to `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;

/// A gauge of bytes, shared by the relays of one ingest: every subscriber queue adds what it
/// holds and subtracts what it hands out or drops.
#[derive(Debug, Clone, Default)]
pub struct BufferGauge(Arc<AtomicUsize>);

impl BufferGauge {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        // Never below zero, even if a bug made the books disagree.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

/// The gauges every relay of an ingest reports to.
#[derive(Debug, Clone, Default)]
pub struct RelayGauges {
    /// Bytes queued for media subscribers (all streams, all subscribers).
    pub queued: BufferGauge,
    /// Bytes held in the keyframe (GOP) caches of all streams.
    pub cached: BufferGauge,
}

/// Counters of RTMP(S) connections refused by a limit.
#[derive(Debug, Default)]
pub(crate) struct RtmpRefusals {
    /// Over `max_connections`.
    pub total: AtomicU64,
    /// Over `max_ip_connections`.
    pub per_ip: AtomicU64,
}

/// A warning that may fire thousands of times a second under a flood: logged at most once
/// per `every`, with the number of occurrences since the last line.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; `Some(n)`: log now, `n` occurrences since the last line
    /// (this one included).
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 += 1;
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => None,
            _ => {
                let count = state.1;
                *state = (Some(now), 0);
                Some(count)
            }
        }
    }
}

/// A snapshot of the ingest's gauges and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestMetrics {
    /// Bytes queued for media subscribers.
    pub relay_queued_bytes: usize,
    /// Bytes in keyframe caches (largely the same memory as the queues: shared buffers).
    pub relay_cached_bytes: usize,
    /// Times a media subscriber fell behind and skipped to the next keyframe, live streams.
    pub relay_lag_skips: u64,
    /// Publish connections open (RTMP, RTMPS, upgraded WebSockets).
    pub publish_connections: usize,
    /// HTTP(S) connections open (not counting upgraded WebSockets).
    pub http_connections: usize,
    pub rtmp_refused_total_limit: u64,
    pub rtmp_refused_ip_limit: u64,
    pub http_refused_total_limit: u64,
    pub http_refused_ip_limit: u64,
    pub http_header_timeouts: u64,
}

impl IngestMetrics {
    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "vstream_ingest_relay_queued_bytes",
            "gauge",
            "Bytes queued for media subscribers (encoders), all streams.",
            self.relay_queued_bytes.to_string(),
        );
        metric(
            "vstream_ingest_relay_cached_bytes",
            "gauge",
            "Bytes in the keyframe caches of the streams (shared with the queues).",
            self.relay_cached_bytes.to_string(),
        );
        metric(
            "vstream_ingest_relay_lag_skips",
            "gauge",
            "Times a media subscriber of a live stream fell behind and skipped to the next keyframe.",
            self.relay_lag_skips.to_string(),
        );
        metric(
            "vstream_ingest_publish_connections",
            "gauge",
            "Publish connections open (RTMP, RTMPS, WebSocket).",
            self.publish_connections.to_string(),
        );
        metric(
            "vstream_ingest_http_connections",
            "gauge",
            "HTTP(S) connections open, upgraded WebSockets not included.",
            self.http_connections.to_string(),
        );
        let _ = write!(
            out,
            "# HELP vstream_ingest_connections_refused_total Connections closed at once by a limit.\n\
             # TYPE vstream_ingest_connections_refused_total counter\n\
             vstream_ingest_connections_refused_total{{protocol=\"rtmp\",limit=\"total\"}} {}\n\
             vstream_ingest_connections_refused_total{{protocol=\"rtmp\",limit=\"ip\"}} {}\n\
             vstream_ingest_connections_refused_total{{protocol=\"http\",limit=\"total\"}} {}\n\
             vstream_ingest_connections_refused_total{{protocol=\"http\",limit=\"ip\"}} {}\n",
            self.rtmp_refused_total_limit,
            self.rtmp_refused_ip_limit,
            self.http_refused_total_limit,
            self.http_refused_ip_limit,
        );
        let _ = write!(
            out,
            "# HELP vstream_ingest_http_header_timeouts_total HTTP connections closed for not sending their request headers in time.\n\
             # TYPE vstream_ingest_http_header_timeouts_total counter\n\
             vstream_ingest_http_header_timeouts_total {}\n",
            self.http_header_timeouts,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_never_goes_below_zero() {
        let gauge = BufferGauge::default();
        gauge.add(10);
        gauge.sub(4);
        assert_eq!(gauge.get(), 6);
        gauge.sub(100);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_throttle_logs_the_first_hit_then_counts() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.hit(), Some(1));
        assert_eq!(throttle.hit(), None);
        assert_eq!(throttle.hit(), None);
        let fast = Throttle::new(Duration::ZERO);
        assert_eq!(fast.hit(), Some(1));
        assert_eq!(fast.hit(), Some(1));
    }

    #[test]
    fn metrics_render_in_the_prometheus_format() {
        let text = IngestMetrics {
            relay_queued_bytes: 42,
            http_refused_ip_limit: 3,
            ..IngestMetrics::default()
        }
        .render();
        assert!(
            text.contains("\nvstream_ingest_relay_queued_bytes 42\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "vstream_ingest_connections_refused_total{protocol=\"http\",limit=\"ip\"} 3\n"
            ),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }
}
