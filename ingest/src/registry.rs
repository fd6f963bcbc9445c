//! Channel → publisher map of this node: one publisher per channel, from the moment its
//! publish request is being decided until its end has been reported to the coordinator.
//!
//! An entry goes `Pending` (decision in progress) → `Live` (granted, media flowing) →
//! `Ending` (relay closed, `publish_ended` in flight) → removed. A new publisher on a channel
//! whose entry is `Ending` waits for that end to be reported before it asks the coordinator,
//! so the coordinator never sees the new publish before the old one's end; a `Pending` or
//! `Live` channel is refused locally.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use contract::control::{MediaStream, SourceKind};
use contract::StreamId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::container_relay::ContainerRelay;
use crate::relay::Relay;

/// The relay of a live stream: FLV for RTMP sources, the recorded container's bytes for
/// WebSocket (browser) sources.
#[derive(Clone)]
pub(crate) enum StreamRelay {
    Flv(Arc<Relay>),
    Container(Arc<ContainerRelay>),
}

impl StreamRelay {
    pub fn flv(&self) -> Option<&Relay> {
        match self {
            StreamRelay::Flv(relay) => Some(relay),
            StreamRelay::Container(_) => None,
        }
    }

    pub fn subscribe(&self) -> Option<MediaStream> {
        match self {
            StreamRelay::Flv(relay) => relay.subscribe(),
            StreamRelay::Container(relay) => relay.subscribe(),
        }
    }

    pub fn close(&self) {
        match self {
            StreamRelay::Flv(relay) => relay.close(),
            StreamRelay::Container(relay) => relay.close(),
        }
    }

    pub fn subscriber_count(&self) -> usize {
        match self {
            StreamRelay::Flv(relay) => relay.subscriber_count(),
            StreamRelay::Container(relay) => relay.subscriber_count(),
        }
    }

    pub fn lag_skips(&self) -> u64 {
        match self {
            StreamRelay::Flv(relay) => relay.lag_skips(),
            StreamRelay::Container(relay) => relay.lag_skips(),
        }
    }

    pub fn queued_bytes(&self) -> usize {
        match self {
            StreamRelay::Flv(relay) => relay.queued_bytes(),
            StreamRelay::Container(relay) => relay.queued_bytes(),
        }
    }
}

/// A live publisher, as reported by [`crate::Ingest::publishers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherInfo {
    pub channel: String,
    pub stream_id: StreamId,
    pub remote_addr: SocketAddr,
    pub source: SourceKind,
    pub started_at: SystemTime,
    /// Bytes received on the publisher's connection so far.
    pub bytes_received: u64,
    /// Open media subscribers (encoders) of the stream.
    pub subscribers: usize,
    /// Times a subscriber fell behind and skipped to the next keyframe.
    pub subscriber_lag_skips: u64,
    /// Bytes queued for the stream's subscribers now (bounded per subscriber by
    /// `MEDIA_QUEUE_MAX_BYTES`).
    pub subscriber_queued_bytes: usize,
}

/// What a live entry holds.
pub(crate) struct Live {
    pub stream_id: StreamId,
    pub relay: StreamRelay,
    pub remote_addr: SocketAddr,
    pub source: SourceKind,
    pub started_at: SystemTime,
    pub bytes_received: Arc<AtomicU64>,
}

enum EntryState {
    Pending,
    Live(Live),
    Ending { done: CancellationToken },
}

struct Entry {
    conn_id: u64,
    /// Cancels the owning connection.
    kill: CancellationToken,
    state: EntryState,
}

/// Result of [`Registry::reserve`].
pub(crate) enum Reservation {
    Reserved,
    /// Another publisher holds (or is being decided for) the channel.
    Busy,
    /// The previous publisher is ending; retry once `done` is cancelled.
    WaitForEnd(CancellationToken),
}

pub(crate) struct Registry {
    channels: Mutex<HashMap<String, Entry>>,
    /// Bumped whenever a stream goes live, for `open_media` callers that wait.
    went_live: watch::Sender<u64>,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            channels: Mutex::new(HashMap::new()),
            went_live: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reserve(&self, channel: &str, conn_id: u64, kill: CancellationToken) -> Reservation {
        let mut map = self.lock();
        match map.get(channel) {
            Some(Entry {
                state: EntryState::Ending { done },
                ..
            }) => Reservation::WaitForEnd(done.clone()),
            Some(_) => Reservation::Busy,
            None => {
                map.insert(
                    channel.to_owned(),
                    Entry {
                        conn_id,
                        kill,
                        state: EntryState::Pending,
                    },
                );
                Reservation::Reserved
            }
        }
    }

    /// Drops a `Pending` reservation of `conn_id` (refused or abandoned publish).
    pub fn release(&self, channel: &str, conn_id: u64) {
        let mut map = self.lock();
        if let Some(entry) = map.get(channel) {
            if entry.conn_id == conn_id && matches!(entry.state, EntryState::Pending) {
                map.remove(channel);
            }
        }
    }

    /// `Pending` → `Live`. False if `conn_id` holds no pending reservation of `channel`.
    pub fn go_live(&self, channel: &str, conn_id: u64, live: Live) -> bool {
        let mut map = self.lock();
        match map.get_mut(channel) {
            Some(entry)
                if entry.conn_id == conn_id && matches!(entry.state, EntryState::Pending) =>
            {
                entry.state = EntryState::Live(live);
                drop(map);
                self.went_live.send_modify(|n| *n = n.wrapping_add(1));
                true
            }
            _ => false,
        }
    }

    /// `Live` → `Ending`.
    pub fn begin_ending(&self, channel: &str, conn_id: u64) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(channel) {
            if entry.conn_id == conn_id {
                entry.state = EntryState::Ending {
                    done: CancellationToken::new(),
                };
            }
        }
    }

    /// Removes `conn_id`'s entry of `channel`; whoever waits for its end proceeds.
    pub fn finish_ending(&self, channel: &str, conn_id: u64) {
        let mut map = self.lock();
        let owned = map.get(channel).is_some_and(|e| e.conn_id == conn_id);
        if owned {
            if let Some(Entry {
                state: EntryState::Ending { done },
                ..
            }) = map.remove(channel)
            {
                done.cancel();
            }
        }
    }

    pub fn relay(&self, stream_id: &StreamId) -> Option<StreamRelay> {
        self.lock().values().find_map(|e| match &e.state {
            EntryState::Live(live) if &live.stream_id == stream_id => Some(live.relay.clone()),
            _ => None,
        })
    }

    /// Whether some publish decision is in progress (its stream may be about to go live).
    pub fn any_pending(&self) -> bool {
        self.lock()
            .values()
            .any(|e| matches!(e.state, EntryState::Pending))
    }

    pub fn watch_went_live(&self) -> watch::Receiver<u64> {
        self.went_live.subscribe()
    }

    /// Cancels the connection holding `channel` (only if it publishes `stream_id`, when
    /// given). Returns whether a connection was found.
    pub fn kill(&self, channel: &str, stream_id: Option<&StreamId>) -> bool {
        let map = self.lock();
        let Some(entry) = map.get(channel) else {
            return false;
        };
        let matches = match (&entry.state, stream_id) {
            (EntryState::Ending { .. }, _) => false,
            (_, None) => true,
            (EntryState::Live(live), Some(id)) => &live.stream_id == id,
            (EntryState::Pending, Some(_)) => false,
        };
        if matches {
            entry.kill.cancel();
        }
        matches
    }

    pub fn publishers(&self) -> Vec<PublisherInfo> {
        let mut list: Vec<PublisherInfo> = self
            .lock()
            .iter()
            .filter_map(|(channel, e)| match &e.state {
                EntryState::Live(live) => Some(PublisherInfo {
                    channel: channel.clone(),
                    stream_id: live.stream_id.clone(),
                    remote_addr: live.remote_addr,
                    source: live.source,
                    started_at: live.started_at,
                    bytes_received: live.bytes_received.load(Ordering::Relaxed),
                    subscribers: live.relay.subscriber_count(),
                    subscriber_lag_skips: live.relay.lag_skips(),
                    subscriber_queued_bytes: live.relay.queued_bytes(),
                }),
                _ => None,
            })
            .collect();
        list.sort_by(|a, b| a.channel.cmp(&b.channel));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayConfig;

    fn live(stream_id: &StreamId) -> Live {
        Live {
            stream_id: stream_id.clone(),
            relay: StreamRelay::Flv(Relay::new(
                stream_id.clone(),
                RelayConfig {
                    gop_cache_max_bytes: 1024,
                    queue_len: 4,
                },
            )),
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            source: SourceKind::Rtmp,
            started_at: SystemTime::now(),
            bytes_received: Arc::default(),
        }
    }

    #[test]
    fn a_channel_has_one_publisher_until_its_end_is_reported() {
        let reg = Registry::new();
        let id = StreamId::generate();
        assert!(matches!(
            reg.reserve("demo", 1, CancellationToken::new()),
            Reservation::Reserved
        ));
        assert!(matches!(
            reg.reserve("demo", 2, CancellationToken::new()),
            Reservation::Busy
        ));
        assert!(reg.go_live("demo", 1, live(&id)));
        assert!(reg.relay(&id).is_some());
        assert_eq!(reg.publishers().len(), 1);
        assert!(matches!(
            reg.reserve("demo", 2, CancellationToken::new()),
            Reservation::Busy
        ));

        reg.begin_ending("demo", 1);
        assert!(reg.relay(&id).is_none());
        assert!(reg.publishers().is_empty());
        let Reservation::WaitForEnd(done) = reg.reserve("demo", 2, CancellationToken::new()) else {
            panic!("expected to wait for the end");
        };
        reg.finish_ending("demo", 1);
        assert!(done.is_cancelled());
        assert!(matches!(
            reg.reserve("demo", 2, CancellationToken::new()),
            Reservation::Reserved
        ));
    }

    #[test]
    fn a_resumed_stream_id_serves_the_new_publishers_relay() {
        // The reconnect window: the coordinator grants the second publisher the first one's
        // stream ID.
        let reg = Registry::new();
        let id = StreamId::generate();
        reg.reserve("demo", 1, CancellationToken::new());
        let first = live(&id);
        let StreamRelay::Flv(first_relay) = first.relay.clone() else {
            panic!("an FLV relay")
        };
        assert!(reg.go_live("demo", 1, first));
        reg.begin_ending("demo", 1);
        first_relay.close();
        reg.finish_ending("demo", 1);
        assert!(reg.relay(&id).is_none());

        assert!(matches!(
            reg.reserve("demo", 2, CancellationToken::new()),
            Reservation::Reserved
        ));
        let second = live(&id);
        let StreamRelay::Flv(second_relay) = second.relay.clone() else {
            panic!("an FLV relay")
        };
        assert!(reg.go_live("demo", 2, second));
        let StreamRelay::Flv(found) = reg.relay(&id).expect("the new relay") else {
            panic!("an FLV relay")
        };
        assert!(Arc::ptr_eq(&found, &second_relay));
        assert!(!Arc::ptr_eq(&found, &first_relay));
        assert_eq!(reg.publishers().len(), 1);
    }

    #[test]
    fn release_only_drops_the_callers_pending_reservation() {
        let reg = Registry::new();
        assert!(matches!(
            reg.reserve("demo", 1, CancellationToken::new()),
            Reservation::Reserved
        ));
        reg.release("demo", 2);
        assert!(reg.any_pending());
        reg.release("demo", 1);
        assert!(!reg.any_pending());
    }

    #[test]
    fn kill_with_a_stream_id_only_hits_that_stream() {
        let reg = Registry::new();
        let id = StreamId::generate();
        let token = CancellationToken::new();
        reg.reserve("demo", 1, token.clone());
        reg.go_live("demo", 1, live(&id));
        assert!(!reg.kill("demo", Some(&StreamId::generate())));
        assert!(!token.is_cancelled());
        assert!(!reg.kill("other", None));
        assert!(reg.kill("demo", Some(&id)));
        assert!(token.is_cancelled());
    }
}
