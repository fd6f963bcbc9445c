//! One behaviour suite for every `StateStore` backend: in memory, and Redis (a real
//! `redis-server` started on a free port).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use contract::control::{SourceKind, StreamOptions};
use contract::StreamId;
use coordinator_fn::coordinator::now_ms;
use coordinator_fn::redis_state::{RedisState, RedisStateConfig};
use coordinator_fn::state::{
    key_hash, EncoderNode, IngestNode, MemoryState, Resumption, StartError, StateStore,
    StreamRecord,
};
use coordinator_fn::webapp::{WebAppEvent, WebAppEventKind};

struct RedisServer {
    child: std::process::Child,
    url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis_server() -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    // Dropping the server kills and reaps the child on every path, panics included.
    let server = RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not start");
}

fn record(channel: &str) -> StreamRecord {
    StreamRecord {
        stream_id: StreamId::generate(),
        channel: channel.into(),
        ingest_id: "ingest-1".into(),
        encoder_id: String::new(),
        source: SourceKind::Rtmp,
        options: StreamOptions::default(),
        started_at_ms: 1_764_000_000_123,
        publishing: true,
        key_hash: key_hash(channel, "key"),
        publisher_left_at_ms: 0,
    }
}

async fn suite(state: Arc<dyn StateStore>) {
    state
        .register_encoder(EncoderNode {
            id: "e1".into(),
            capacity: 1,
        })
        .await
        .unwrap();
    state
        .register_encoder(EncoderNode {
            id: "e2".into(),
            capacity: 2,
        })
        .await
        .unwrap();
    state
        .register_ingest(IngestNode {
            id: "ingest-1".into(),
            ip: "198.51.100.1".into(),
            port: 1935,
            ssl: false,
            server_type: SourceKind::Rtmp,
            internal_url: None,
        })
        .await
        .unwrap();
    assert_eq!(state.ingests().await.unwrap().len(), 1);

    // Least loaded with room first; ties broken by ID; full encoders skipped.
    let a = state.start_stream(record("a")).await.unwrap();
    assert_eq!(a.encoder_id, "e1");
    assert!(a.publishing);
    let b = state.start_stream(record("b")).await.unwrap();
    assert_eq!(b.encoder_id, "e2");
    let c = state.start_stream(record("c")).await.unwrap();
    assert_eq!(c.encoder_id, "e2");
    assert!(matches!(
        state.start_stream(record("d")).await,
        Err(StartError::NoCapacity)
    ));
    assert!(
        matches!(state.start_stream(record("a")).await, Err(StartError::ChannelBusy(id)) if id == a.stream_id)
    );
    assert_eq!(
        state.channel_holder("a").await.unwrap(),
        Some(a.stream_id.clone())
    );
    let loads: Vec<_> = state
        .encoders()
        .await
        .unwrap()
        .iter()
        .map(|e| (e.id.clone(), e.load))
        .collect();
    assert_eq!(loads, [("e1".to_owned(), 1), ("e2".to_owned(), 2)]);
    assert_eq!(state.stream(&a.stream_id).await.unwrap(), Some(a.clone()));

    // The publisher leaves: the channel is free, the load stays until the stream finishes.
    let gone = state
        .publisher_gone("a", &a.stream_id, 1_764_000_000_999, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(!gone.publishing);
    assert_eq!(gone.publisher_left_at_ms, 1_764_000_000_999);
    assert_eq!(state.channel_holder("a").await.unwrap(), None);
    assert_eq!(state.encoders().await.unwrap()[0].load, 1);
    let finished = state.finish_stream(&a.stream_id).await.unwrap();
    assert_eq!(finished.map(|r| r.stream_id), Some(a.stream_id.clone()));
    assert_eq!(
        state.finish_stream(&a.stream_id).await.unwrap(),
        None,
        "finished once"
    );
    assert_eq!(state.encoders().await.unwrap()[0].load, 0);
    assert_eq!(state.streams().await.unwrap().len(), 2);

    // Finishing a stream whose publisher is still there frees its channel too.
    state.finish_stream(&b.stream_id).await.unwrap();
    assert_eq!(state.channel_holder("b").await.unwrap(), None);

    // Events: per stream in order, one in flight per stream, leased.
    let s1 = c.stream_id.clone();
    let s2 = StreamId::generate();
    let e1 = WebAppEvent::new("c", &s1, WebAppEventKind::Closed);
    let e2 = WebAppEvent::new("c", &s1, WebAppEventKind::Closed);
    let e3 = WebAppEvent::new("x", &s2, WebAppEventKind::Closed);
    for e in [&e1, &e2, &e3] {
        state.push_event(e.clone(), 1000).await.unwrap();
    }
    let due = state.lease_due_events(1000, 30_000).await.unwrap();
    let mut ids: Vec<_> = due.iter().map(|p| p.event.event_id.clone()).collect();
    ids.sort();
    let mut want = vec![e1.event_id.clone(), e3.event_id.clone()];
    want.sort();
    assert_eq!(ids, want, "the head of each stream");
    assert!(due.iter().all(|p| p.attempts == 1));
    assert!(
        state
            .lease_due_events(2000, 30_000)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert_eq!(state.event_backlog(3000).await.unwrap(), (3, 2000));

    state.event_failed(&e1, 5000).await.unwrap();
    state.event_delivered(&e3).await.unwrap();
    assert!(state
        .lease_due_events(4000, 30_000)
        .await
        .unwrap()
        .is_empty());
    let again = state.lease_due_events(5000, 30_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].event.event_id, e1.event_id,
        "the same event is retried"
    );
    assert_eq!(again[0].attempts, 2);
    state.event_delivered(&e1).await.unwrap();
    let next = state.lease_due_events(5001, 30_000).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].event.event_id, e2.event_id,
        "then the next of that stream"
    );
    state.event_delivered(&e2).await.unwrap();
    assert_eq!(state.event_backlog(6000).await.unwrap(), (0, 0));
}

/// A publisher of `channel` with `key`, now on `ingest-2` over WebSocket.
fn back(channel: &str, key: &str) -> Resumption {
    Resumption {
        channel: channel.into(),
        key_hash: key_hash(channel, key),
        ingest_id: "ingest-2".into(),
        source: SourceKind::Ws,
    }
}

/// The reconnect window: who may continue a stream whose publisher left.
async fn resume_suite(state: Arc<dyn StateStore>) {
    const WINDOW: u64 = 5_000;
    state
        .register_encoder(EncoderNode {
            id: "e1".into(),
            capacity: -1,
        })
        .await
        .unwrap();
    // Real time: Redis expires the channel's candidate by its own clock.
    let t0 = now_ms();
    let a = state.start_stream(record("a")).await.unwrap();
    assert_eq!(a.key_hash, key_hash("a", "key"));
    assert_ne!(a.key_hash, key_hash("a", "other"));
    assert!(!a.key_hash.contains("key"), "a hash, not the key");

    // While the publisher is there, nobody resumes (the channel is busy).
    assert_eq!(
        state
            .resume_stream(&back("a", "key"), t0, WINDOW)
            .await
            .unwrap(),
        None
    );
    let gone = state
        .publisher_gone("a", &a.stream_id, t0, WINDOW)
        .await
        .unwrap()
        .unwrap();
    assert!(!gone.publishing);
    assert_eq!(gone.publisher_left_at_ms, t0);
    // A repeated report of the same leaving changes nothing.
    let again = state
        .publisher_gone("a", &a.stream_id, t0 + 1_000, WINDOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.publisher_left_at_ms, t0);

    // Another key, another channel, the window off, or its end: not resumed.
    for (who, now, window) in [
        (back("a", "other"), t0 + 100, WINDOW),
        (back("b", "key"), t0 + 100, WINDOW),
        (back("a", "key"), t0 + 100, 0),
        (back("a", "key"), t0 + WINDOW, WINDOW),
    ] {
        assert_eq!(
            state.resume_stream(&who, now, window).await.unwrap(),
            None,
            "{who:?} at +{} ms, window {window}",
            now - t0
        );
    }
    assert_eq!(state.channel_holder("a").await.unwrap(), None);

    // The same key within the window: the same stream goes on, from the new ingest.
    let resumed = state
        .resume_stream(&back("a", "key"), t0 + 1_500, WINDOW)
        .await
        .unwrap()
        .expect("resumed");
    assert_eq!(resumed.stream_id, a.stream_id);
    assert!(resumed.publishing);
    assert_eq!(resumed.publisher_left_at_ms, 0);
    assert_eq!(resumed.ingest_id, "ingest-2");
    assert_eq!(resumed.source, SourceKind::Ws);
    assert_eq!(
        (resumed.encoder_id.as_str(), resumed.started_at_ms),
        ("e1", a.started_at_ms)
    );
    assert_eq!(resumed.options, a.options);
    assert_eq!(
        state.stream(&a.stream_id).await.unwrap(),
        Some(resumed.clone())
    );
    assert_eq!(
        state.channel_holder("a").await.unwrap(),
        Some(a.stream_id.clone())
    );
    assert_eq!(state.encoders().await.unwrap()[0].load, 1, "the same load");
    assert_eq!(
        state
            .resume_stream(&back("a", "key"), t0 + 1_600, WINDOW)
            .await
            .unwrap(),
        None,
        "resumed once"
    );
    // It may leave and come back again.
    let t1 = now_ms();
    state
        .publisher_gone("a", &a.stream_id, t1, WINDOW)
        .await
        .unwrap();
    assert!(state
        .resume_stream(&back("a", "key"), t1 + 10, WINDOW)
        .await
        .unwrap()
        .is_some());

    // Left without a window: not resumable, even if a window is asked for later.
    let t2 = now_ms();
    state
        .publisher_gone("a", &a.stream_id, t2, 0)
        .await
        .unwrap();
    assert_eq!(
        state
            .resume_stream(&back("a", "key"), t2 + 10, WINDOW)
            .await
            .unwrap(),
        None
    );

    // Only the channel's last stream is a candidate: B (another key) started and left after A.
    let c = state.start_stream(record("c")).await.unwrap();
    state
        .publisher_gone("c", &c.stream_id, t2, WINDOW)
        .await
        .unwrap();
    let mut other = record("c");
    other.key_hash = key_hash("c", "other");
    let d = state.start_stream(other).await.unwrap();
    assert_eq!(
        state
            .resume_stream(&back("c", "key"), t2 + 10, WINDOW)
            .await
            .unwrap(),
        None,
        "the channel is busy"
    );
    state
        .publisher_gone("c", &d.stream_id, t2 + 20, WINDOW)
        .await
        .unwrap();
    assert_eq!(
        state
            .resume_stream(&back("c", "key"), t2 + 30, WINDOW)
            .await
            .unwrap(),
        None,
        "C is no longer the channel's candidate"
    );
    assert_eq!(
        state
            .resume_stream(&back("c", "other"), t2 + 30, WINDOW)
            .await
            .unwrap()
            .map(|r| r.stream_id),
        Some(d.stream_id.clone())
    );

    // A finished stream, or one closed by the commands API, is not resumed.
    let e = state.start_stream(record("e")).await.unwrap();
    state
        .publisher_gone("e", &e.stream_id, t2, WINDOW)
        .await
        .unwrap();
    state.finish_stream(&e.stream_id).await.unwrap();
    assert_eq!(
        state
            .resume_stream(&back("e", "key"), t2 + 10, WINDOW)
            .await
            .unwrap(),
        None
    );
    let f = state.start_stream(record("f")).await.unwrap();
    state.forbid_resume(&f.stream_id).await.unwrap();
    state
        .publisher_gone("f", &f.stream_id, t2, WINDOW)
        .await
        .unwrap();
    let g = state.start_stream(record("g")).await.unwrap();
    state
        .publisher_gone("g", &g.stream_id, t2, WINDOW)
        .await
        .unwrap();
    state.forbid_resume(&g.stream_id).await.unwrap();
    for channel in ["f", "g"] {
        assert_eq!(
            state
                .resume_stream(&back(channel, "key"), t2 + 10, WINDOW)
                .await
                .unwrap(),
            None,
            "{channel}"
        );
    }
    assert_eq!(
        state.stream(&g.stream_id).await.unwrap().unwrap().key_hash,
        ""
    );
}

#[tokio::test]
async fn memory_state_behaves() {
    suite(Arc::new(MemoryState::new())).await;
    resume_suite(Arc::new(MemoryState::new())).await;
}

#[tokio::test]
async fn redis_state_behaves() {
    let server = redis_server().await;
    let state = RedisState::connect(&server.url, RedisStateConfig::default())
        .await
        .unwrap();
    suite(Arc::new(state)).await;
    let state = RedisState::connect(
        &server.url,
        RedisStateConfig {
            prefix: "resume:".into(),
            ..RedisStateConfig::default()
        },
    )
    .await
    .unwrap();
    resume_suite(Arc::new(state)).await;
}

#[tokio::test]
async fn redis_forgets_the_candidate_when_the_window_ends() {
    let server = redis_server().await;
    let state = RedisState::connect(&server.url, RedisStateConfig::default())
        .await
        .unwrap();
    state
        .register_encoder(EncoderNode {
            id: "e1".into(),
            capacity: -1,
        })
        .await
        .unwrap();
    let a = state.start_stream(record("a")).await.unwrap();
    state
        .publisher_gone("a", &a.stream_id, now_ms(), 200)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The caller's clock says "within the window", but the candidate expired in Redis.
    assert_eq!(
        state
            .resume_stream(&back("a", "key"), a.started_at_ms, 5_000)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn redis_nodes_expire_and_streams_move() {
    let server = redis_server().await;
    let state = RedisState::connect(
        &server.url,
        RedisStateConfig {
            prefix: "t:".into(),
            node_ttl: Duration::from_millis(300),
        },
    )
    .await
    .unwrap();
    state
        .register_encoder(EncoderNode {
            id: "e1".into(),
            capacity: 1,
        })
        .await
        .unwrap();
    state
        .register_encoder(EncoderNode {
            id: "e2".into(),
            capacity: 1,
        })
        .await
        .unwrap();
    let a = state.start_stream(record("a")).await.unwrap();
    assert_eq!(a.encoder_id, "e1");
    // e2 keeps beating; e1 stops.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        state
            .register_encoder(EncoderNode {
                id: "e2".into(),
                capacity: 1,
            })
            .await
            .unwrap();
    }
    let (dead_encoders, dead_ingests) = state.reap_dead_nodes().await.unwrap();
    assert_eq!(dead_encoders, ["e1"]);
    assert!(dead_ingests.is_empty());
    assert_eq!(
        state.reap_dead_nodes().await.unwrap().0.len(),
        0,
        "reported once"
    );
    assert_eq!(
        state.encoder_streams("e1").await.unwrap(),
        std::slice::from_ref(&a.stream_id)
    );
    let moved = state
        .move_stream(&a.stream_id, "e1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.encoder_id, "e2");
    assert_eq!(state.encoders().await.unwrap()[0].load, 1);
    // No room left anywhere: the next move fails.
    assert!(state
        .move_stream(&a.stream_id, "e2")
        .await
        .unwrap()
        .is_none());
}
