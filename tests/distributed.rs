//! The distributed mode as it is deployed: real `redis-server`, two `coordinator-fn` copies,
//! two `ingest` and two `encoder` processes (capacity 1 each), a test web app, real ffmpeg.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::procs::{binary, free_port, redis, wait_healthy, Proc};
use common::{publish, wait_for, wait_until, WebApp, HEAVY};
use contract::token::{Component, TokenKeys};
use serde_json::Value;

const SECRET: &str = "a-test-secret-of-enough-length";

struct Cluster {
    dir: tempfile::TempDir,
    redis: Proc,
    coordinators: Vec<(Proc, String)>,
    /// (process, RTMP URL, HTTP base URL)
    ingests: Vec<(Proc, String, String)>,
    encoders: Vec<Proc>,
    app: WebApp,
}

impl Cluster {
    async fn start() -> Cluster {
        common::init_logs();
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&logs).unwrap();
        let (redis_proc, redis_port) = redis(&logs);
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let app = WebApp::start().await;

        let mut coordinators = Vec::new();
        for name in ["coordinator-a", "coordinator-b"] {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let proc = Proc::start(
                name,
                &binary("coordinator-fn"),
                &[],
                &[
                    ("REDIS_URL", redis_url.clone()),
                    ("CONTROL_SECRET", SECRET.into()),
                    ("BIND_ADDRESS", "127.0.0.1".into()),
                    ("HTTP_PORT", port.to_string()),
                    ("EVENT_CALLBACK_URL", format!("{}/events", app.url)),
                ],
                &logs,
            );
            coordinators.push((proc, url));
        }
        for (proc, url) in &coordinators {
            wait_healthy(&format!("{url}/healthz"), proc).await;
        }
        let mut ingests = Vec::new();
        for (i, name) in ["ingest-a", "ingest-b"].into_iter().enumerate() {
            let rtmp = free_port();
            let http = free_port();
            let proc = Proc::start(
                name,
                &binary("ingest"),
                &[],
                &[
                    ("NODE_ID", name.into()),
                    ("BIND_ADDRESS", "127.0.0.1".into()),
                    ("RTMP_PORT", rtmp.to_string()),
                    ("HTTP_PORT", http.to_string()),
                    ("CONTROL_BASE_URL", coordinators[i].1.clone()),
                    ("CONTROL_SECRET", SECRET.into()),
                    ("REDIS_URL", redis_url.clone()),
                ],
                &logs,
            );
            wait_healthy(&format!("http://127.0.0.1:{http}/healthz"), &proc).await;
            ingests.push((
                proc,
                format!("rtmp://127.0.0.1:{rtmp}"),
                format!("http://127.0.0.1:{http}"),
            ));
        }
        let mut encoders = Vec::new();
        for (i, name) in ["encoder-a", "encoder-b"].into_iter().enumerate() {
            let http = free_port();
            let proc = Proc::start(
                name,
                &binary("encoder"),
                &[],
                &[
                    ("NODE_ID", name.into()),
                    ("BIND_ADDRESS", "127.0.0.1".into()),
                    ("HTTP_PORT", http.to_string()),
                    ("CONTROL_BASE_URL", coordinators[i].1.clone()),
                    ("CONTROL_SECRET", SECRET.into()),
                    ("REDIS_URL", redis_url.clone()),
                    ("SERVER_CAPACITY", "1".into()),
                    ("HLS_FILESYSTEM_PATH", data.display().to_string()),
                    ("HLS_TIME_SECONDS", "2".into()),
                    ("HLS_H264_PRESET", "ultrafast".into()),
                ],
                &logs,
            );
            wait_healthy(&format!("http://127.0.0.1:{http}/healthz"), &proc).await;
            encoders.push(proc);
        }
        let cluster = Cluster {
            dir,
            redis: redis_proc,
            coordinators,
            ingests,
            encoders,
            app,
        };
        wait_until(
            Duration::from_secs(20),
            "every node is registered",
            || async {
                let Some(report) = cluster.try_report().await else {
                    return false;
                };
                report["encoders"].as_array().map(Vec::len) == Some(2)
                    // RTMP and WebSocket on each ingest node.
                && report["streamingServers"].as_array().map(Vec::len) == Some(4)
            },
        )
        .await;
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Any coordinator copy answers the web app the same.
    async fn get(&self, copy: usize, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.coordinators[copy].1))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The report, or `None` while the coordinator cannot answer (503 while Redis restarts).
    async fn try_report(&self) -> Option<Value> {
        let response = reqwest::get(format!("{}/commands/report", self.coordinators[0].1))
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    async fn report(&self) -> Value {
        self.get(0, "/commands/report").await
    }

    async fn capacity(&self) -> Value {
        let capacity = self.get(0, "/commands/capacity").await;
        assert_eq!(
            capacity,
            self.get(1, "/commands/capacity").await,
            "both copies agree"
        );
        capacity
    }

    async fn stream_on(&self, channel: &str) -> Value {
        wait_for(
            Duration::from_secs(20),
            "the stream is reported",
            || async {
                self.report().await["activeStreams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["channel"] == channel)
                    .cloned()
            },
        )
        .await
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for proc in self
            .coordinators
            .iter()
            .map(|c| &c.0)
            .chain(self.ingests.iter().map(|i| &i.0))
            .chain(&self.encoders)
        {
            all.push_str(&format!("===== {}\n{}\n", proc.name, proc.logs()));
        }
        all
    }
}

fn master(data: &Path, channel: &str, stream_id: &str) -> PathBuf {
    data.join(format!("hls/{channel}/{stream_id}/master.m3u8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_spread_over_encoders_and_capacity_is_exact() {
    let _heavy = HEAVY.lock().await;
    let cluster = Cluster::start().await;
    assert_eq!(
        cluster.capacity().await,
        serde_json::json!({"load": 0, "capacity": 2, "encoderCount": 2})
    );

    let mut one = publish(&format!("{}/one/key", cluster.ingests[0].1), "320x180", 60);
    let first = cluster.stream_on("one").await;
    let mut two = publish(&format!("{}/two/key", cluster.ingests[1].1), "320x180", 60);
    let second = cluster.stream_on("two").await;
    assert_ne!(
        first["encoder"], second["encoder"],
        "one stream per encoder"
    );
    assert_eq!(first["streamServer"], "ingest-a");
    assert_eq!(second["streamServer"], "ingest-b");
    assert_eq!(cluster.capacity().await["load"], 2);
    for stream in [&first, &second] {
        let path = master(
            &cluster.data(),
            stream["channel"].as_str().unwrap(),
            stream["streamId"].as_str().unwrap(),
        );
        wait_until(
            Duration::from_secs(40),
            "both streams are playable",
            || async { path.exists() },
        )
        .await;
    }

    // No capacity left: a third publisher is refused at once, with the reason.
    let started = Instant::now();
    let third = publish(
        &format!("{}/three/key", cluster.ingests[0].1),
        "320x180",
        10,
    )
    .wait_with_output()
    .await
    .unwrap();
    assert!(!third.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refused in {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(stderr.contains("capacity"), "ffmpeg says why: {stderr}");
    assert_eq!(cluster.capacity().await["load"], 2);

    // The web app closes both through either copy; everything is released.
    for (copy, channel) in [(0, "one"), (1, "two")] {
        let response = reqwest::Client::new()
            .post(format!("{}/commands/close", cluster.coordinators[copy].1))
            .header("x-streaming-channel", channel)
            .header("x-streaming-id", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for publisher in [&mut one, &mut two] {
        tokio::time::timeout(Duration::from_secs(15), publisher.wait())
            .await
            .expect("closed publishers are disconnected")
            .unwrap();
    }
    wait_until(Duration::from_secs(30), "both streams end", || async {
        cluster.report().await["activeStreams"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        cluster.capacity().await,
        serde_json::json!({"load": 0, "capacity": 2, "encoderCount": 2})
    );
    for stream in [&first, &second] {
        let id = stream["streamId"].as_str().unwrap();
        cluster.app.wait_closed(id, Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_encoder_ends_its_streams_and_releases_its_load() {
    let _heavy = HEAVY.lock().await;
    let mut cluster = Cluster::start().await;
    let mut publisher = publish(
        &format!("{}/live/key", cluster.ingests[0].1),
        "320x180",
        120,
    );
    let stream = cluster.stream_on("live").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    let path = master(&cluster.data(), "live", &id);
    wait_until(
        Duration::from_secs(40),
        "the stream is playable",
        || async { path.exists() },
    )
    .await;

    let victim = cluster
        .encoders
        .iter()
        .position(|e| e.name == stream["encoder"].as_str().unwrap())
        .unwrap();
    cluster.encoders[victim].kill();
    let killed = Instant::now();

    // Within 30 s: the publisher is disconnected, stream-closed delivered, the load released.
    tokio::time::timeout(Duration::from_secs(30), publisher.wait())
        .await
        .unwrap_or_else(|_| panic!("the publisher was not disconnected\n{}", cluster.logs()))
        .unwrap();
    cluster.app.wait_closed(&id, Duration::from_secs(30)).await;
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "outcome after {:?}",
        killed.elapsed()
    );
    assert_eq!(
        cluster.capacity().await,
        serde_json::json!({"load": 0, "capacity": 1, "encoderCount": 1})
    );
    assert!(cluster.report().await["activeStreams"]
        .as_array()
        .unwrap()
        .is_empty());

    // The channel is free again and the surviving encoder takes the next stream.
    let mut again = publish(&format!("{}/live/key", cluster.ingests[0].1), "320x180", 4);
    let next = cluster.stream_on("live").await;
    assert_ne!(next["streamId"], stream["streamId"]);
    assert_ne!(next["encoder"], stream["encoder"]);
    again.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_failing_web_app_in_order_with_stable_ids() {
    let _heavy = HEAVY.lock().await;
    let cluster = Cluster::start().await;
    *cluster.app.event_status.lock().unwrap() = 500;
    let failing_since = Instant::now();
    let mut publisher = publish(&format!("{}/ev/key", cluster.ingests[1].1), "320x180", 8);
    let stream = cluster.stream_on("ev").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    publisher.wait().await.unwrap();
    wait_until(Duration::from_secs(30), "the stream ends", || async {
        cluster.report().await["activeStreams"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let remaining = Duration::from_secs(20).saturating_sub(failing_since.elapsed());
    tokio::time::sleep(remaining).await;
    *cluster.app.event_status.lock().unwrap() = 200;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = cluster.app.events.lock().unwrap().clone();
        let answers = cluster.app.event_answers.lock().unwrap().clone();
        let done = events.iter().zip(&answers).any(|(h, status)| {
            *status == 200
                && h["x-event-type"] == "stream-closed"
                && h["x-streaming-id"] == id.as_str()
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream-closed not delivered; received {:?} answered {answers:?}\n{}",
            events
                .iter()
                .map(|h| (
                    h["x-event-type"].to_str().unwrap().to_owned(),
                    h["x-streaming-id"].to_str().unwrap().to_owned()
                ))
                .collect::<Vec<_>>(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = cluster.app.events.lock().unwrap().clone();
    let answers = cluster.app.event_answers.lock().unwrap().clone();
    let mine: Vec<_> = events
        .iter()
        .zip(&answers)
        .filter(|(h, _)| h["x-streaming-id"] == id.as_str())
        .map(|(h, status)| {
            (
                h["x-event-id"].to_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    h["x-event-type"].to_str().unwrap(),
                    h.get("x-resolution")
                        .map(|v| v.to_str().unwrap())
                        .unwrap_or("")
                ),
                *status,
            )
        })
        .collect();
    assert!(
        mine.iter().filter(|e| e.2 == 500).count() >= 2,
        "it was retried: {mine:?}"
    );
    // The same ID always carries the same event.
    for (event_id, what, _) in &mine {
        assert!(mine
            .iter()
            .filter(|e| &e.0 == event_id)
            .all(|e| &e.1 == what));
    }
    // Delivered (200) in order: every stream-available, then stream-closed, each once.
    let delivered: Vec<_> = mine.iter().filter(|e| e.2 == 200).collect();
    assert_eq!(delivered.last().unwrap().1.trim(), "stream-closed");
    assert!(delivered[..delivered.len() - 1]
        .iter()
        .all(|e| e.1.starts_with("stream-available")));
    assert_eq!(
        delivered.len(),
        2,
        "HLS-LIVE for the one rendition, then closed: {delivered:?}"
    );
    // Nothing was delivered before the web app recovered, and nothing out of order after.
    let first_success = mine.iter().position(|e| e.2 == 200).unwrap();
    assert!(mine[first_success..].iter().all(|e| e.2 == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_does_not_cut_a_stream() {
    let _heavy = HEAVY.lock().await;
    let mut cluster = Cluster::start().await;
    let mut publisher = publish(&format!("{}/keep/key", cluster.ingests[0].1), "320x180", 16);
    let stream = cluster.stream_on("keep").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    let live = cluster
        .data()
        .join(format!("hls/keep/{id}/320x180-30/live.m3u8"));
    wait_until(Duration::from_secs(40), "the stream is live", || async {
        live.exists()
    })
    .await;

    // The copy both ingest-a and encoder-a talk to dies and comes back.
    cluster.coordinators[0].0.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.coordinators[0].0.restart();
    wait_healthy(
        &format!("{}/healthz", cluster.coordinators[0].1),
        &cluster.coordinators[0].0,
    )
    .await;

    let status = publisher.wait().await.unwrap();
    assert!(status.success(), "the publisher was never cut");
    cluster.app.wait_closed(&id, Duration::from_secs(40)).await;
    let playlist = common::parse_media(&live);
    assert!(playlist.end_list);
    let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(total > 12.0, "the whole publish was encoded: {total} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_need_a_valid_token_of_the_right_component() {
    let cluster = Cluster::start().await;
    let url = format!("{}/internal/heartbeat", cluster.coordinators[0].1);
    let body = serde_json::json!({"kind": "encoder", "id": "encoder-x", "capacity": 1});
    let keys = TokenKeys::new(SECRET);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases = [
        ("no token", None, 401),
        (
            "wrong secret",
            Some(TokenKeys::new("another-secret-entirely").sign(Component::Encoder, "encoder-x")),
            401,
        ),
        (
            "wrong subject",
            Some(keys.sign(Component::Coordinator, "encoder-x")),
            401,
        ),
        (
            "expired",
            Some(keys.sign_at(Component::Encoder, "encoder-x", now - 3600)),
            401,
        ),
        (
            "another node",
            Some(keys.sign(Component::Encoder, "encoder-y")),
            403,
        ),
        (
            "valid",
            Some(keys.sign(Component::Encoder, "encoder-x")),
            204,
        ),
    ];
    for (what, token, expected) in cases {
        let mut request = reqwest::Client::new().post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, expected, "{what}");
    }
    // An ingest token cannot report encoder events.
    let status = reqwest::Client::new()
        .post(format!("{}/internal/encoder-event", cluster.coordinators[1].1))
        .bearer_auth(keys.sign(Component::Ingest, "ingest-a"))
        .json(&serde_json::json!({"type": "closed", "stream_id": "0123456789abcdef0123456789abcdef", "channel": "x", "encoder_id": "encoder-a"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    // Media can only be pulled by encoders.
    let media = format!(
        "{}/internal/media/0123456789abcdef0123456789abcdef",
        cluster.ingests[0].2
    );
    for (token, expected) in [
        (keys.sign(Component::Ingest, "ingest-b"), 401),
        (
            TokenKeys::new("another-secret-entirely").sign(Component::Encoder, "encoder-a"),
            401,
        ),
        (keys.sign(Component::Encoder, "encoder-a"), 404),
    ] {
        let status = reqwest::Client::new()
            .get(&media)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), expected);
    }
    let logs = cluster.coordinators[0].0.logs();
    assert!(
        logs.contains("internal call refused"),
        "refusals are logged"
    );
    assert!(logs.contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_to_another_ingest_continues_its_stream() {
    let _heavy = HEAVY.lock().await;
    let cluster = Cluster::start().await;
    // The coordinators run with the default RECONNECT_WINDOW_SECONDS (5).
    let mut first = publish(&format!("{}/live/key", cluster.ingests[0].1), "320x180", 5);
    let stream = cluster.stream_on("live").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    assert_eq!(stream["streamServer"], "ingest-a");
    assert!(first.wait().await.unwrap().success());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Back within the window, on the other ingest node (another coordinator copy too).
    let mut second = publish(&format!("{}/live/key", cluster.ingests[1].1), "320x180", 5);
    wait_until(
        Duration::from_secs(20),
        "the stream moves to ingest-b",
        || async {
            let streams: Vec<Value> = cluster.report().await["activeStreams"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["channel"] == "live")
                .cloned()
                .collect();
            streams.len() == 1
                && streams[0]["streamId"] == id.as_str()
                && streams[0]["streamServer"] == "ingest-b"
        },
    )
    .await;
    assert!(
        second.wait().await.unwrap().success(),
        "the reconnect was accepted\n{}",
        cluster.logs()
    );
    assert!(!cluster
        .app
        .event_summary(&id)
        .iter()
        .any(|e| e.0 == "stream-closed"));

    let live = cluster
        .data()
        .join(format!("hls/live/{id}/320x180-30/live.m3u8"));
    cluster.app.wait_closed(&id, Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&live).unwrap();
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let playlist = common::parse_media(&live);
    for (i, segment) in playlist.segments.iter().enumerate() {
        assert_eq!(segment.uri, format!("{i}.ts"));
    }
    let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(total > 7.0, "both publishers' media: {total} s");
    let summary = cluster.app.event_summary(&id);
    assert_eq!(
        summary.iter().filter(|e| e.0 == "stream-available").count(),
        1,
        "{summary:?}"
    );
    assert_eq!(summary.iter().filter(|e| e.0 == "stream-closed").count(), 1);
    assert_eq!(cluster.capacity().await["load"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_ends_its_streams_and_they_are_reported() {
    let _heavy = HEAVY.lock().await;
    let mut cluster = Cluster::start().await;
    let mut publisher = publish(
        &format!("{}/gone/key", cluster.ingests[1].1),
        "320x180",
        120,
    );
    let stream = cluster.stream_on("gone").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    let live = cluster
        .data()
        .join(format!("hls/gone/{id}/320x180-30/live.m3u8"));
    wait_until(Duration::from_secs(40), "the stream is live", || async {
        live.exists()
    })
    .await;

    cluster.ingests[1].0.kill();
    // The publisher lost its server; the encoder finishes what it had and reports the end.
    tokio::time::timeout(Duration::from_secs(10), publisher.wait())
        .await
        .expect("the publisher's connection ended")
        .unwrap();
    cluster.app.wait_closed(&id, Duration::from_secs(45)).await;
    assert!(
        common::parse_media(&live).end_list,
        "the playlists are closed"
    );
    wait_until(Duration::from_secs(30), "the load is released", || async {
        cluster.capacity().await["load"] == 0
    })
    .await;
    // The channel can be published again, on the surviving ingest.
    let mut again = publish(&format!("{}/gone/key", cluster.ingests[0].1), "320x180", 4);
    let next = cluster.stream_on("gone").await;
    assert_ne!(next["streamId"].as_str(), Some(id.as_str()));
    again.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_does_not_cut_a_running_stream() {
    let _heavy = HEAVY.lock().await;
    let mut cluster = Cluster::start().await;
    let mut publisher = publish(
        &format!("{}/steady/key", cluster.ingests[0].1),
        "320x180",
        20,
    );
    let stream = cluster.stream_on("steady").await;
    let id = stream["streamId"].as_str().unwrap().to_owned();
    let live = cluster
        .data()
        .join(format!("hls/steady/{id}/320x180-30/live.m3u8"));
    wait_until(Duration::from_secs(40), "the stream is live", || async {
        live.exists()
    })
    .await;

    // Redis comes back empty (no persistence), as a node replacement would.
    cluster.redis.restart();
    wait_until(
        Duration::from_secs(30),
        "every node registered again",
        || async {
            let Some(report) = cluster.try_report().await else {
                return false;
            };
            report["encoders"].as_array().map(Vec::len) == Some(2)
                && report["streamingServers"].as_array().map(Vec::len) == Some(4)
        },
    )
    .await;

    let status = publisher.wait().await.unwrap();
    assert!(status.success(), "the publisher was never cut");
    // The stream's record went with Redis; the web app still hears of the end.
    cluster.app.wait_closed(&id, Duration::from_secs(40)).await;
    let playlist = common::parse_media(&live);
    assert!(playlist.end_list);
    let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(total > 16.0, "the whole publish was encoded: {total} s");
}
