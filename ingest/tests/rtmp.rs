//! End-to-end tests: the RTMP server on 127.0.0.1:0, real ffmpeg publishers, a test double of
//! the coordinator, and ffprobe/ffmpeg decoding what `open_media` relays.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, IngestCommand, MediaStream, PublishGrant,
    PublishRefusal, PublishRequest, SourceKind,
};
use contract::StreamId;
use futures::StreamExt;
use ingest::{Ingest, IngestConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should take a few seconds, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Answer {
    Grant,
    /// Grant, but only after this long (the stream ID is recorded at once).
    GrantAfter(Duration),
    Refuse(PublishRefusal),
    /// Never answer.
    Hang,
}

/// The coordinator as a test double: answers every publish the same way and records calls.
struct FakeControl {
    answer: Answer,
    publishes: Mutex<Vec<PublishRequest>>,
    granted: Mutex<Vec<StreamId>>,
    ended: Mutex<Vec<(String, StreamId)>>,
}

impl FakeControl {
    fn new(answer: Answer) -> Arc<Self> {
        Arc::new(FakeControl {
            answer,
            publishes: Mutex::default(),
            granted: Mutex::default(),
            ended: Mutex::default(),
        })
    }
    fn publishes(&self) -> Vec<PublishRequest> {
        self.publishes.lock().expect("lock").clone()
    }
    fn granted(&self) -> Vec<StreamId> {
        self.granted.lock().expect("lock").clone()
    }
    fn ended(&self) -> Vec<(String, StreamId)> {
        self.ended.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ControlPlane for FakeControl {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        self.publishes.lock().expect("lock").push(request);
        let delay = match &self.answer {
            Answer::Grant => Duration::ZERO,
            Answer::GrantAfter(delay) => *delay,
            Answer::Refuse(refusal) => return Err(refusal.clone()),
            Answer::Hang => std::future::pending().await,
        };
        let stream_id = StreamId::generate();
        self.granted.lock().expect("lock").push(stream_id.clone());
        tokio::time::sleep(delay).await;
        Ok(PublishGrant {
            stream_id,
            encoder_id: "encoder-1".into(),
        })
    }
    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError> {
        self.ended
            .lock()
            .expect("lock")
            .push((channel.to_owned(), stream_id.clone()));
        Ok(())
    }
    async fn encoder_event(&self, _event: EncoderEvent) -> Result<(), ControlError> {
        Ok(())
    }
}

struct Server {
    ingest: Ingest,
    control: Arc<FakeControl>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(answer: Answer) -> Server {
    start_with(answer, |_| {}).await
}

async fn start_with(answer: Answer, tweak: impl FnOnce(&mut IngestConfig)) -> Server {
    // Logs with `RUST_LOG=ingest=debug cargo test -p ingest -- --nocapture`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let control = FakeControl::new(answer);
    let mut config = IngestConfig {
        node_id: "ingest-test".into(),
        idle_timeout: Duration::from_secs(5),
        publish_decision_timeout: Duration::from_secs(5),
        ..IngestConfig::default()
    };
    tweak(&mut config);
    let ingest = Ingest::new(config, control.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let ingest = ingest.clone();
        let shutdown = shutdown.clone();
        async move { ingest.serve_rtmp(listener, shutdown).await }
    });
    Server {
        ingest,
        control,
        addr,
        shutdown,
        task,
    }
}

/// ffmpeg publishing `seconds` of test pattern + tone, H.264 + AAC, to `path` (`CHANNEL/KEY`).
fn publish(addr: SocketAddr, path: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
        .args(["-c:a", "aac", "-t", &seconds.to_string(), "-f", "flv"])
        .arg(format!("rtmp://{addr}/{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs")
}

/// Waits for ffmpeg; returns its exit status and error output.
async fn exit_of(child: Child) -> (ExitStatus, String) {
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("ffmpeg exits in time")
        .expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn assert_succeeds(child: Child, what: &str) {
    let (status, stderr) = exit_of(child).await;
    assert!(
        status.success(),
        "{what}: ffmpeg failed ({status}): {stderr}"
    );
}

async fn assert_fails(child: Child, what: &str) -> String {
    let (status, stderr) = exit_of(child).await;
    assert!(!status.success(), "{what}: ffmpeg should have failed");
    stderr
}

/// Polls `check` until it holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_stream(server: &Server, channel: &str) -> StreamId {
    eventually("the publisher goes live", || {
        server
            .ingest
            .publishers()
            .iter()
            .any(|p| p.channel == channel)
    })
    .await;
    server
        .ingest
        .publishers()
        .into_iter()
        .find(|p| p.channel == channel)
        .map(|p| p.stream_id)
        .expect("live")
}

/// Reads a media stream to its end (the publisher ends).
async fn read_all(stream: MediaStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = tokio::time::timeout(PATIENCE, stream.collect())
        .await
        .expect("the media stream ends after the publisher");
    chunks.concat()
}

/// Runs `program args` with `input` on stdin; returns (success, stdout, stderr).
async fn run_with_input(program: &str, args: &[&str], input: Vec<u8>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        // The reader may stop early (ffprobe has what it needs): ignore broken pipes.
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("finishes in time")
        .expect("output");
    let _ = writer.await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn probe_streams(flv: Vec<u8>) -> Vec<serde_json::Value> {
    let (ok, stdout, stderr) = run_with_input(
        "ffprobe",
        &[
            "-v",
            "error",
            "-f",
            "flv",
            "-show_streams",
            "-of",
            "json",
            "-i",
            "pipe:0",
        ],
        flv,
    )
    .await;
    assert!(ok, "ffprobe failed: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("ffprobe json");
    json["streams"].as_array().cloned().unwrap_or_default()
}

/// Decodes the whole FLV; returns ffmpeg's error output (empty = clean).
async fn decode_errors(flv: Vec<u8>) -> String {
    let (ok, _, stderr) = run_with_input(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "flv",
            "-i",
            "pipe:0",
            "-f",
            "null",
            "-",
        ],
        flv,
    )
    .await;
    assert!(ok, "ffmpeg could not decode the relayed FLV: {stderr}");
    stderr
}

/// The (type, timestamp, data) of each tag of an FLV file.
fn flv_tags(flv: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    assert_eq!(&flv[..3], b"FLV");
    let mut tags = Vec::new();
    let mut at = 13;
    while at + 11 <= flv.len() {
        let h = &flv[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        tags.push((h[0], ts, flv[at + 11..at + 11 + size].to_vec()));
        at += 11 + size + 4;
    }
    assert_eq!(at, flv.len(), "whole tags only");
    tags
}

fn assert_h264_320x180_and_aac(streams: &[serde_json::Value]) {
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 320);
    assert_eq!(video["height"], 180);
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    assert_eq!(audio["codec_name"], "aac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_publish_is_relayed_as_decodable_flv_and_its_end_reported_once() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "demo/key?token=abc", 4);
    let stream_id = live_stream(&server, "demo").await;

    eventually("bytes are counted", || {
        server
            .ingest
            .publishers()
            .first()
            .is_some_and(|p| p.bytes_received > 0)
    })
    .await;
    let info = server.ingest.publishers();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].source, SourceKind::Rtmp);
    assert_eq!(info[0].remote_addr.ip(), server.addr.ip());
    let request = &server.control.publishes()[0];
    assert_eq!(request.channel, "demo");
    assert_eq!(request.key, "key", "the ?query is not part of the key");
    assert_eq!(request.ingest_id, "ingest-test");
    assert_eq!(request.user_ip, "127.0.0.1");
    assert_eq!(request.source, SourceKind::Rtmp);

    let media = server.ingest.open_media(&stream_id).expect("open media");
    let flv = read_all(media).await;
    assert_succeeds(ffmpeg, "the publisher ends cleanly").await;

    assert_h264_320x180_and_aac(&probe_streams(flv.clone()).await);
    let errors = decode_errors(flv).await;
    assert!(errors.trim().is_empty(), "decode errors: {errors}");

    eventually("publish_ended is called", || {
        !server.control.ended().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.control.ended(),
        vec![("demo".to_owned(), stream_id.clone())]
    );
    assert!(server.ingest.publishers().is_empty());
    assert!(server.ingest.open_media(&stream_id).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_joining_mid_stream_gets_decodable_flv() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "mid/key", 5);
    let stream_id = live_stream(&server, "mid").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let media = server.ingest.open_media(&stream_id).expect("open media");
    let flv = read_all(media).await;
    assert_succeeds(ffmpeg, "publisher").await;
    assert!(
        flv.len() > 10_000,
        "a couple of seconds of media: {} bytes",
        flv.len()
    );
    let tags = flv_tags(&flv);
    let (first_ts, first_video) = tags
        .iter()
        .find(|(kind, _, data)| *kind == 9 && data.get(1) == Some(&1))
        .map(|(_, ts, data)| (*ts, data[0]))
        .expect("video frames");
    assert!(first_ts >= 1000, "starts mid-stream, at {first_ts} ms");
    assert_eq!(
        first_video, 0x17,
        "the first video frame is an H.264 keyframe"
    );

    assert_h264_320x180_and_aac(&probe_streams(flv.clone()).await);
    let errors = decode_errors(flv).await;
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publisher_fails_fast_and_nothing_is_registered() {
    let server = start(Answer::Refuse(PublishRefusal::InvalidKey("nope".into()))).await;
    let started = tokio::time::Instant::now();
    let ffmpeg = publish(server.addr, "demo/wrong", 10);
    let stderr = assert_fails(ffmpeg, "refused publisher").await;
    assert!(
        stderr.contains("BadName") || stderr.contains("nope"),
        "{stderr}"
    );
    // ffmpeg's own start-up is part of this; the refusal itself is immediate.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusal took {:?}",
        started.elapsed()
    );
    assert_eq!(server.control.publishes().len(), 1);
    assert!(server.ingest.publishers().is_empty());
    assert!(server.control.ended().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_channel_is_refused_without_asking_the_coordinator() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "bad.channel/key", 10);
    assert_fails(ffmpeg, "invalid channel").await;
    let long_key = "k".repeat(129);
    let ffmpeg = publish(server.addr, &format!("demo/{long_key}"), 10);
    assert_fails(ffmpeg, "key too long").await;
    assert!(server.control.publishes().is_empty());
    assert!(server.ingest.publishers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_on_a_live_channel_is_refused_and_a_third_after_the_end_accepted() {
    let server = start(Answer::Grant).await;
    let first = publish(server.addr, "one/key", 4);
    let first_id = live_stream(&server, "one").await;

    let second = publish(server.addr, "one/key2", 10);
    assert_fails(second, "second publisher").await;
    assert_eq!(server.control.publishes().len(), 1, "refused locally");
    assert_eq!(server.ingest.publishers().len(), 1);
    assert_eq!(server.ingest.publishers()[0].stream_id, first_id);

    assert_succeeds(first, "first publisher").await;
    eventually("the first publish ends", || {
        server.control.ended().len() == 1
    })
    .await;

    let third = publish(server.addr, "one/key", 1);
    assert_succeeds(third, "third publisher").await;
    assert_eq!(server.control.publishes().len(), 2);
    eventually("the third publish ends", || {
        server.control.ended().len() == 2
    })
    .await;
    let granted = server.control.granted();
    assert_eq!(
        server.control.ended(),
        vec![
            ("one".to_owned(), granted[0].clone()),
            ("one".to_owned(), granted[1].clone())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_command_disconnects_the_publisher_and_reports_the_end() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "victim/key", 30);
    let stream_id = live_stream(&server, "victim").await;
    let media = server.ingest.open_media(&stream_id).expect("open media");

    // A kill for another stream of the channel is ignored.
    server.ingest.handle_command(IngestCommand::Kill {
        channel: "victim".into(),
        stream_id: Some(StreamId::generate()),
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.ingest.publishers().len(), 1);

    server.ingest.handle_command(IngestCommand::Kill {
        channel: "victim".into(),
        stream_id: None,
    });
    let _ = exit_of(ffmpeg).await; // disconnected long before its 30 s
    eventually("publish_ended is called", || {
        !server.control.ended().is_empty()
    })
    .await;
    assert_eq!(
        server.control.ended(),
        vec![("victim".to_owned(), stream_id)]
    );
    assert!(server.ingest.publishers().is_empty());
    read_all(media).await; // and the subscriber's stream ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_publisher_cleanly() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "live/key", 30);
    let stream_id = live_stream(&server, "live").await;
    server.shutdown.cancel();
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve_rtmp returns")
        .expect("join")
        .expect("serve_rtmp ok");
    assert_eq!(server.control.ended(), vec![("live".to_owned(), stream_id)]);
    assert!(server.ingest.publishers().is_empty());
    let _ = exit_of(ffmpeg).await;
}

/// Reads until the server closes the connection (EOF or reset).
async fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_to_end).await.is_ok()
}

/// Pseudo-random bytes (xorshift), never starting with the RTMP version byte 3.
fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    out[0] = 0xEE;
    out
}

/// A valid client handshake (rml_rtmp's client side); returns the connected socket.
async fn handshaken(addr: SocketAddr) -> TcpStream {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut client = Handshake::new(PeerType::Client);
    let c0c1 = client.generate_outbound_p0_and_p1().expect("c0c1");
    socket.write_all(&c0c1).await.expect("write");
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed during the handshake");
        match client.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await.expect("write");
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).await.expect("write");
                return socket;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_the_connection_that_sent_it() {
    let server = start(Answer::Grant).await;
    let ffmpeg = publish(server.addr, "good/key", 4);
    let stream_id = live_stream(&server, "good").await;

    // Random junk instead of a handshake.
    let mut raw = TcpStream::connect(server.addr).await.expect("connect");
    let _ = raw.write_all(&junk(5000, 1)).await;
    assert!(closed_by_server(&mut raw).await, "junk connection closed");

    // A valid handshake followed by junk chunks, a few seeds.
    for seed in 2..6 {
        let mut socket = handshaken(server.addr).await;
        let mut bytes = junk(20_000, seed);
        bytes[0] = 0x03; // a chunk on csid 3 with a full header, then nonsense
        let _ = socket.write_all(&bytes).await;
        assert!(
            closed_by_server(&mut socket).await,
            "junk after handshake closed"
        );
    }

    // Chunks that make rml_rtmp's deserializer do unchecked arithmetic: a 300-byte message
    // cut after its first 128-byte chunk, then a 10-byte message on another chunk stream.
    let mut socket = handshaken(server.addr).await;
    let mut bytes = vec![0x03, 0, 0, 0, 0, 0x01, 0x2C, 20, 0, 0, 0, 0];
    bytes.extend([0u8; 128]);
    bytes.extend([0x04, 0, 0, 0, 0, 0, 10, 20, 0, 0, 0, 0]);
    bytes.extend([0u8; 10]);
    let _ = socket.write_all(&bytes).await;
    assert!(
        closed_by_server(&mut socket).await,
        "bad chunk sequence closed"
    );

    // A connection that never completes its handshake is closed after the idle timeout.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let _ = silent.write_all(&[3]).await;
    assert!(
        closed_by_server(&mut silent).await,
        "silent connection closed"
    );

    assert_succeeds(ffmpeg, "the good publisher is unaffected").await;
    eventually("the good publish ends", || {
        !server.control.ended().is_empty()
    })
    .await;
    assert_eq!(server.control.ended(), vec![("good".to_owned(), stream_id)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_does_not_answer_gets_the_publisher_refused() {
    let server = start_with(Answer::Hang, |c| {
        c.publish_decision_timeout = Duration::from_secs(1);
    })
    .await;
    let ffmpeg = publish(server.addr, "slow/key", 10);
    let stderr = assert_fails(ffmpeg, "undecided publisher").await;
    assert!(
        stderr.contains("BadConnection") || stderr.contains("timeout"),
        "{stderr}"
    );
    assert_eq!(server.control.publishes().len(), 1);
    assert!(server.ingest.publishers().is_empty());
    // The reservation is gone: the next publisher is asked about, not refused locally.
    let ffmpeg = publish(server.addr, "slow/key", 10);
    assert_fails(ffmpeg, "undecided publisher").await;
    assert_eq!(server.control.publishes().len(), 2);
    assert!(server.control.ended().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_can_be_opened_while_the_grant_is_on_its_way() {
    // The coordinator hands the encoder its job before the ingest hears the grant.
    let server = start(Answer::GrantAfter(Duration::from_millis(700))).await;
    let ffmpeg = publish(server.addr, "race/key", 3);
    eventually("the coordinator chose a stream ID", || {
        !server.control.granted().is_empty()
    })
    .await;
    let stream_id = server.control.granted()[0].clone();
    assert!(server.ingest.publishers().is_empty(), "not live yet");
    let media = server
        .ingest
        .open_media(&stream_id)
        .expect("open media early");
    let flv = read_all(media).await;
    assert_succeeds(ffmpeg, "publisher").await;
    assert_h264_320x180_and_aac(&probe_streams(flv).await);

    // Without any decision in flight, an unknown stream is an error at once.
    eventually("publish ended", || !server.control.ended().is_empty()).await;
    assert!(server.ingest.open_media(&StreamId::generate()).is_err());
}

/// Publishes on a raw connection with rml_rtmp's client session, then sends nothing.
async fn silent_publisher(addr: SocketAddr, app: &str, key: &str) -> TcpStream {
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };
    fn send(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) -> Vec<ClientSessionEvent> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        events
    }
    let mut socket = handshaken(addr).await;
    let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let mut out = Vec::new();
    send(initial, &mut out);
    send(
        vec![client.request_connection(app.into()).expect("connect")],
        &mut out,
    );
    socket.write_all(&out).await.expect("write");
    let mut buf = vec![0u8; 65536];
    let mut publishing_requested = false;
    loop {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .expect("server answers")
            .expect("read");
        assert!(n > 0, "server closed");
        let mut out = Vec::new();
        let events = send(client.handle_input(&buf[..n]).expect("input"), &mut out);
        for event in events {
            match event {
                ClientSessionEvent::ConnectionRequestAccepted if !publishing_requested => {
                    publishing_requested = true;
                    let r = client
                        .request_publishing(key.into(), PublishRequestType::Live)
                        .expect("publish");
                    send(vec![r], &mut out);
                }
                ClientSessionEvent::PublishRequestAccepted => {
                    socket.write_all(&out).await.expect("write");
                    return socket;
                }
                _ => {}
            }
        }
        socket.write_all(&out).await.expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_is_dropped_after_the_idle_timeout_and_its_channel_freed() {
    let server = start_with(Answer::Grant, |c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut socket = silent_publisher(server.addr, "quiet", "key").await;
    let stream_id = live_stream(&server, "quiet").await;
    assert!(closed_by_server(&mut socket).await, "closed for silence");
    eventually("publish_ended is called", || {
        !server.control.ended().is_empty()
    })
    .await;
    assert_eq!(
        server.control.ended(),
        vec![("quiet".to_owned(), stream_id)]
    );
    assert!(server.ingest.publishers().is_empty());
    let ffmpeg = publish(server.addr, "quiet/key", 1);
    assert_succeeds(ffmpeg, "a new publisher on the freed channel").await;
}
