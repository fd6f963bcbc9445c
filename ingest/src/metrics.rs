//! Gauges of what the ingest holds for media subscribers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
}
