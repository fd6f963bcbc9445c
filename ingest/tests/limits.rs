//! The ingest stays bounded under hostile or slow peers: a media consumer that stops reading,
//! floods of half-open RTMP connections, slowloris HTTP / WebSocket clients. Each test runs
//! the ingest in-process on 127.0.0.1 (attackers come from other loopback addresses,
//! 127.0.0.2 and up, so that per-address limits can be seen) and asserts what an operator
//! would notice: bytes held (the ingest's own gauges, and the process's RSS), connections
//! closed, limits that recover, and publishers that still get through.
//!
//! The tests take a lock so that they run one at a time: the RSS figures are the process's,
//! and the machine is small. `RUST_LOG=ingest=debug cargo test -p ingest --test limits --
//! --nocapture` shows the logs and the measured figures.

use std::net::{IpAddr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, MediaStream, PublishGrant, PublishRefusal,
    PublishRequest,
};
use contract::token::{Component, TokenKeys};
use contract::StreamId;
use futures::{SinkExt, StreamExt};
use ingest::ws::{WsConfig, WsServer};
use ingest::{Ingest, IngestConfig};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should take a few seconds, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "limits-test-secret";

/// One test at a time (RSS is per process; the machine has two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The coordinator as a test double: grants every publish and records the ends.
#[derive(Default)]
struct FakeControl {
    ended: Mutex<Vec<(String, StreamId)>>,
}

impl FakeControl {
    fn ended(&self) -> Vec<(String, StreamId)> {
        self.ended.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ControlPlane for FakeControl {
    async fn publish(&self, _request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        Ok(PublishGrant {
            stream_id: StreamId::generate(),
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

/// An ingest serving RTMP and HTTP (WebSocket publishing and the internal media endpoint)
/// the way the binaries do.
struct Server {
    ingest: Ingest,
    control: Arc<FakeControl>,
    rtmp: SocketAddr,
    http: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("stops in time")
                .expect("task")
                .expect("serve");
        }
    }

    fn live(&self, channel: &str) -> Option<ingest::PublisherInfo> {
        self.ingest
            .publishers()
            .into_iter()
            .find(|p| p.channel == channel)
    }
}

async fn start(
    tweak: impl FnOnce(&mut IngestConfig),
    ws_tweak: impl FnOnce(&mut WsConfig),
) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let control = Arc::new(FakeControl::default());
    let mut config = IngestConfig {
        node_id: "ingest-test".into(),
        idle_timeout: Duration::from_secs(5),
        publish_decision_timeout: Duration::from_secs(5),
        ..IngestConfig::default()
    };
    tweak(&mut config);
    let ingest = Ingest::new(config, control.clone());
    let mut ws_config = WsConfig::default();
    ws_tweak(&mut ws_config);
    let ws = WsServer::new(ingest.clone(), ws_config);
    let app = ws.router().merge(ingest::media_http::router(
        ingest.clone(),
        TokenKeys::new(SECRET),
    ));
    let rtmp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rtmp = rtmp_listener.local_addr().expect("addr");
    let http = http_listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let rtmp_task = tokio::spawn({
        let ingest = ingest.clone();
        let shutdown = shutdown.clone();
        async move { ingest.serve_rtmp(rtmp_listener, shutdown).await }
    });
    let http_task = tokio::spawn({
        let gate = ingest.http_gate();
        let shutdown = shutdown.clone();
        async move {
            let served = ingest::https::serve_http(http_listener, app, gate, shutdown).await;
            ws.shutdown().await;
            served
        }
    });
    Server {
        ingest,
        control,
        rtmp,
        http,
        shutdown,
        tasks: vec![rtmp_task, http_task],
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Polls `check` until it holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let from: IpAddr = from.parse().expect("address");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset); false if it stays open
/// for `PATIENCE`. Returns the bytes read meanwhile through `received`.
async fn closed_by_server<S: AsyncRead + Unpin>(socket: &mut S, received: &mut usize) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => *received += n,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_to_end).await.is_ok()
}

// ---------------------------------------------------------------------------------------
// A scripted RTMP publisher (rml_rtmp's client side), to send exactly the media a test needs.

/// A valid client handshake on `socket`.
async fn handshake(socket: &mut TcpStream) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut client = Handshake::new(PeerType::Client);
    let c0c1 = client.generate_outbound_p0_and_p1().expect("c0c1");
    socket.write_all(&c0c1).await.expect("write");
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .expect("the server answers the handshake")
            .expect("read");
        assert!(n > 0, "server closed during the handshake");
        match client.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).await.expect("write");
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).await.expect("write");
                return;
            }
        }
    }
}

fn outbound(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for result in results {
        match result {
            ClientSessionResult::OutboundResponse(packet) => out.extend(packet.bytes),
            ClientSessionResult::RaisedEvent(event) => events.push(event),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

struct Publisher {
    socket: TcpStream,
    session: ClientSession,
    sent_bytes: u64,
}

impl Publisher {
    /// Connects, publishes `app/key` and waits for the server's acceptance.
    async fn start(addr: SocketAddr, app: &str, key: &str) -> Publisher {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        handshake(&mut socket).await;
        let (mut session, initial) =
            ClientSession::new(ClientSessionConfig::new()).expect("client");
        let mut out = Vec::new();
        outbound(initial, &mut out);
        outbound(
            vec![session.request_connection(app.into()).expect("connect")],
            &mut out,
        );
        socket.write_all(&out).await.expect("write");
        let mut buf = vec![0u8; 65536];
        let mut requested = false;
        loop {
            let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
                .await
                .expect("server answers")
                .expect("read");
            assert!(n > 0, "server closed");
            let mut out = Vec::new();
            let events = outbound(session.handle_input(&buf[..n]).expect("input"), &mut out);
            for event in events {
                match event {
                    ClientSessionEvent::ConnectionRequestAccepted if !requested => {
                        requested = true;
                        let request = session
                            .request_publishing(key.into(), PublishRequestType::Live)
                            .expect("publish");
                        outbound(vec![request], &mut out);
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        socket.write_all(&out).await.expect("write");
                        return Publisher {
                            socket,
                            session,
                            sent_bytes: 0,
                        };
                    }
                    _ => {}
                }
            }
            socket.write_all(&out).await.expect("write");
        }
    }

    async fn video(&mut self, timestamp: u32, data: Vec<u8>) {
        let packet = self
            .session
            .publish_video_data(Bytes::from(data), RtmpTimestamp::new(timestamp), false)
            .expect("video");
        let mut out = Vec::new();
        outbound(vec![packet], &mut out);
        self.socket
            .write_all(&out)
            .await
            .expect("the server takes the media");
        self.sent_bytes += out.len() as u64;
    }

    /// An AVC sequence header, then `frames` H.264-looking frames of `size` bytes, a
    /// keyframe every 30, 33 ms apart; with `pause` between frames.
    async fn frames(&mut self, frames: u32, size: usize, pause: Option<Duration>) {
        self.video(0, vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F])
            .await;
        for n in 0..frames {
            let mut data = vec![(n % 251) as u8; size];
            data[..5].copy_from_slice(&[if n % 30 == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
            self.video(n * 33, data).await;
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Reads an FLV media stream to its end; returns the timestamps of its video frames
/// (sequence headers excluded), holding nothing else.
fn count_video_frames(stream: MediaStream) -> tokio::task::JoinHandle<Vec<u32>> {
    tokio::spawn(async move {
        let mut stream = stream;
        let mut frames = Vec::new();
        // Every item is the FLV file header or one complete tag.
        while let Some(chunk) = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("media flows until the end")
        {
            if chunk.starts_with(b"FLV") || chunk.len() < 13 || chunk[0] != 9 {
                continue;
            }
            let ts = u32::from_be_bytes([chunk[7], chunk[4], chunk[5], chunk[6]]);
            if chunk[12] == 1 {
                frames.push(ts);
            }
        }
        frames
    })
}

// ---------------------------------------------------------------------------------------
// 1. A slow media consumer.

/// The encoder's HTTP pull of a stream (`/internal/media/{id}`) that reads the response head
/// and then nothing more.
async fn stalled_media_pull(http: SocketAddr, stream_id: &StreamId) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    // A small receive window, so that the stall reaches the ingest quickly.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut socket = socket.connect(http).await.expect("connect");
    let token = TokenKeys::new(SECRET).sign(Component::Encoder, "encoder-1");
    let request = format!(
        "GET /internal/media/{stream_id} HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut byte))
            .await
            .expect("the response head in time")
            .expect("read");
        assert!(n == 1, "closed before the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_media_pull_holds_a_bounded_queue_and_affects_neither_its_publisher_nor_other_streams(
) {
    let _serial = SERIAL.lock().await;
    const BOUND: usize = 1024 * 1024;
    const FRAME: usize = 64 * 1024;
    const FRAMES: u32 = 1200; // 75 MiB
    let server = start(|c| c.relay_queue_max_bytes = BOUND, |_| {}).await;

    // Stream A: a heavy publisher whose only consumer, the encoder's HTTP pull, stops
    // reading after the response head.
    let mut heavy = Publisher::start(server.rtmp, "heavy", "key").await;
    eventually("heavy is live", || server.live("heavy").is_some()).await;
    let heavy_id = server.live("heavy").expect("live").stream_id;
    let mut stalled = stalled_media_pull(server.http, &heavy_id).await;
    eventually("the pull subscribed", || {
        server.live("heavy").is_some_and(|p| p.subscribers == 1)
    })
    .await;

    // Stream B, at the same time: a light publisher at a steady rate, whose consumer keeps
    // up.
    let mut light = Publisher::start(server.rtmp, "light", "key").await;
    eventually("light is live", || server.live("light").is_some()).await;
    let light_id = server.live("light").expect("live").stream_id;
    let light_frames = count_video_frames(server.ingest.open_media(&light_id).expect("open"));
    let light_task = tokio::spawn(async move {
        light
            .frames(300, 1024, Some(Duration::from_millis(5)))
            .await;
        light
    });

    let before = rss();
    let mut peak_rss = before;
    let mut peak_queued = 0usize;
    let mut peak_gauge = 0usize;
    heavy
        .video(0, vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F])
        .await;
    for n in 0..FRAMES {
        let mut data = vec![(n % 251) as u8; FRAME];
        data[..5].copy_from_slice(&[if n % 30 == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
        heavy.video(n * 33, data).await;
        if n % 20 == 0 {
            if let Some(p) = server.live("heavy") {
                peak_queued = peak_queued.max(p.subscriber_queued_bytes);
            }
            peak_gauge = peak_gauge.max(server.ingest.metrics().relay_queued_bytes);
            peak_rss = peak_rss.max(rss());
        }
    }
    // Everything sent reached the ingest: the publisher was never held back.
    eventually("the ingest read all the heavy publisher sent", || {
        server
            .live("heavy")
            .is_some_and(|p| p.bytes_received >= heavy.sent_bytes)
    })
    .await;
    let info = server.live("heavy").expect("still live");
    peak_queued = peak_queued.max(info.subscriber_queued_bytes);
    peak_rss = peak_rss.max(rss());
    eprintln!(
        "stalled pull: {} MiB published; stream queue peak {} KiB (bound {} KiB), all queues \
         peak {} KiB, keyframe skips {}; RSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB)",
        (u64::from(FRAMES) * FRAME as u64) >> 20,
        peak_queued >> 10,
        BOUND >> 10,
        peak_gauge >> 10,
        info.subscriber_lag_skips,
        mib(before),
        mib(peak_rss),
        mib(peak_rss.saturating_sub(before)),
    );
    assert!(
        peak_queued <= BOUND + FRAME + 64,
        "the stalled consumer's queue stays within its bound: {peak_queued}"
    );
    assert!(
        peak_queued >= BOUND / 2,
        "the consumer really stalled (the queue filled): {peak_queued}"
    );
    assert!(
        info.subscriber_lag_skips >= 1,
        "the lagging consumer skips ahead"
    );
    assert_eq!(info.subscribers, 1, "the stalled consumer is still served");
    // Before the byte bound this input held 1024 frames (64 MiB) for the stalled consumer.
    assert!(
        peak_rss.saturating_sub(before) < 32 * 1024 * 1024,
        "the process did not grow with the backlog: +{:.1} MiB",
        mib(peak_rss.saturating_sub(before))
    );

    // The other stream lost nothing.
    let light = light_task.await.expect("light publisher");
    drop(light);
    let frames = light_frames.await.expect("light consumer");
    assert_eq!(
        frames,
        (0..300).map(|n| n * 33).collect::<Vec<u32>>(),
        "a consumer that keeps up gets every frame of its stream"
    );

    // The heavy publisher ends normally; the stalled pull then gets its end.
    drop(heavy);
    eventually("both ends reported", || server.control.ended().len() == 2).await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
            if rest.ends_with(b"0\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled pull's body ends");
    assert!(
        rest.windows(3).any(|w| w == b"FLV"),
        "the pull got an FLV stream"
    );
    eventually("nothing left queued", || {
        server.ingest.metrics().relay_queued_bytes == 0
    })
    .await;
    let ids: Vec<StreamId> = server
        .control
        .ended()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert!(ids.contains(&heavy_id) && ids.contains(&light_id));
    server.stop().await;
}

/// A WebM (VP8 + Opus) recording of `seconds`, keyframes every second, like a browser's.
async fn webm_recording(seconds: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
        .args(["-b:v", "300k", "-g", "30"])
        .args(["-c:a", "libopus", "-f", "webm", "pipe:1"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decodes `media` with ffmpeg; the number of video frames decoded.
async fn decoded_frames(media: Vec<u8>) -> u64 {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", "pipe:0"])
        .args(["-map", "0:v", "-f", "framemd5", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&media).await;
    });
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("in time")
        .expect("output");
    let _ = writer.await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_of_a_browser_stream_is_bounded_in_bytes_and_resumes_at_a_keyframe() {
    let _serial = SERIAL.lock().await;
    const BOUND: usize = 32 * 1024;
    let server = start(|_| {}, |ws| ws.queue_max_bytes = BOUND).await;
    let recording = webm_recording(4).await;
    let (mut client, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{}/browser/key/publish", server.http)),
    )
    .await
    .expect("in time")
    .expect("upgrade");
    eventually("live", || server.live("browser").is_some()).await;
    let id = server.live("browser").expect("live").stream_id;
    let stalled = server.ingest.open_media(&id).expect("open");

    // Most of the recording, in 4 KiB blobs, while the consumer reads nothing.
    let blobs: Vec<&[u8]> = recording.chunks(4096).collect();
    let stall_until = blobs.len() * 3 / 5;
    let mut peak = 0usize;
    for blob in &blobs[..stall_until] {
        client
            .send(Message::binary(blob.to_vec()))
            .await
            .expect("the publisher is never held back");
        if let Some(p) = server.live("browser") {
            peak = peak.max(p.subscriber_queued_bytes);
        }
    }
    let sent: usize = blobs[..stall_until].iter().map(|b| b.len()).sum();
    eventually("every blob arrived", || {
        server
            .live("browser")
            .is_some_and(|p| p.bytes_received == sent as u64)
    })
    .await;
    let info = server.live("browser").expect("live");
    peak = peak.max(info.subscriber_queued_bytes);
    eprintln!(
        "stalled browser-stream consumer: {} KiB published while it read nothing, queue peak \
         {} KiB (bound {} KiB), keyframe skips {}",
        sent >> 10,
        peak >> 10,
        BOUND >> 10,
        info.subscriber_lag_skips
    );
    assert!(peak <= BOUND, "the queue stays within its bound: {peak}");
    assert!(info.subscriber_lag_skips >= 1, "the consumer skipped ahead");

    // The consumer reads again: it gets what fitted, then the stream from a keyframe on.
    let reader = tokio::spawn(async move {
        let chunks: Vec<Bytes> = tokio::time::timeout(PATIENCE, stalled.collect())
            .await
            .expect("ends after the publisher");
        chunks.concat()
    });
    for blob in &blobs[stall_until..] {
        client
            .send(Message::binary(blob.to_vec()))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.close(None).await.expect("close");
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    let media = reader.await.expect("reader");
    assert!(media.len() < recording.len(), "a part was skipped");
    assert_eq!(
        &media[..4],
        &[0x1A, 0x45, 0xDF, 0xA3],
        "the EBML header first"
    );
    let frames = decoded_frames(media).await;
    eprintln!("stalled browser-stream consumer: {frames} of 120 frames decoded after the skip");
    // 120 frames in all; the last 40 % (48 frames) were sent after the consumer came back
    // and it resumed at a keyframe (one per 30 frames) at the latest.
    assert!(
        (30..120).contains(&frames),
        "decodable, with a part skipped: {frames} frames"
    );
    assert_eq!(server.ingest.metrics().relay_queued_bytes, 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Half-open RTMP connections.

/// ffmpeg publishing `seconds` of test pattern + tone, H.264 + AAC, to `path` (`CHANNEL/KEY`).
fn ffmpeg_publish(addr: SocketAddr, path: &str, seconds: u32) -> Child {
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

/// What a half-open connection sends before going silent.
#[derive(Debug, Clone, Copy)]
enum HalfOpen {
    Nothing,
    /// C0 only.
    Version,
    /// C0 and half of C1.
    HalfC1,
}

async fn half_open(from: &str, to: SocketAddr, kind: HalfOpen) -> TcpStream {
    let mut socket = connect_from(from, to).await;
    let bytes: Vec<u8> = match kind {
        HalfOpen::Nothing => Vec::new(),
        HalfOpen::Version => vec![3],
        HalfOpen::HalfC1 => std::iter::once(3).chain([7u8; 768]).collect(),
    };
    // A connection closed at once may refuse the write: that is fine.
    let _ = socket.write_all(&bytes).await;
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_rtmp_flood_is_cut_at_the_handshake_timeout_and_publishers_still_get_through() {
    let _serial = SERIAL.lock().await;
    let server = start(
        |c| {
            c.idle_timeout = Duration::from_secs(5);
            c.max_connections = 32;
            c.max_ip_connections = 4;
        },
        |_| {},
    )
    .await;
    let before = rss();

    // 100 connections from one address that never finish the handshake, and 4 from another
    // that finish it and then say nothing.
    let kinds = [HalfOpen::Nothing, HalfOpen::Version, HalfOpen::HalfC1];
    let mut flood = Vec::new();
    for n in 0..100 {
        flood.push(half_open("127.0.0.2", server.rtmp, kinds[n % 3]).await);
    }
    for _ in 0..4 {
        let mut socket = connect_from("127.0.0.3", server.rtmp).await;
        handshake(&mut socket).await;
        flood.push(socket);
    }
    eventually("the flood beyond the per-address limit is refused", || {
        server.ingest.metrics().rtmp_refused_ip_limit == 96
    })
    .await;
    assert_eq!(server.ingest.publish_connections(), 8, "4 per address held");
    let flood_rss = rss();

    // A publisher during the flood.
    let mut publisher = Publisher::start(server.rtmp, "during", "key").await;
    eventually("the publisher is live", || server.live("during").is_some()).await;
    assert_eq!(
        server.ingest.publish_connections(),
        9,
        "it went live while the flood was held"
    );
    publisher.frames(60, 2048, None).await;
    drop(publisher);

    // Every flood connection is closed by the server, at once or at the handshake timeout;
    // none got more than the server's handshake (S0 S1 S2: 3073 bytes).
    for (n, socket) in flood.iter_mut().enumerate() {
        let mut received = 0;
        assert!(
            closed_by_server(socket, &mut received).await,
            "flood connection {n} closed"
        );
        assert!(received <= 3073, "connection {n} got {received} bytes");
    }
    eventually("no connection left", || {
        server.ingest.publish_connections() == 0
    })
    .await;
    eprintln!(
        "RTMP flood: 104 half-open connections, 96 refused at once, 8 cut at the handshake \
         timeout; RSS {:.1} MiB before, {:.1} MiB during (+{:.2} MiB)",
        mib(before),
        mib(flood_rss),
        mib(flood_rss.saturating_sub(before))
    );
    assert!(
        flood_rss.saturating_sub(before) < 16 * 1024 * 1024,
        "the flood took little memory"
    );

    // After the flood, the attacking address can connect again, and ffmpeg publishes.
    let mut again = connect_from("127.0.0.2", server.rtmp).await;
    handshake(&mut again).await;
    drop(again);
    let (status, stderr) = exit_of(ffmpeg_publish(server.rtmp, "after/key", 2)).await;
    assert!(status.success(), "a publisher after the flood: {stderr}");
    eventually("both publishes ended", || server.control.ended().len() == 2).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_connection_limit_comes_back_after_the_handshake_timeout() {
    let _serial = SERIAL.lock().await;
    // No per-address limit: the flood takes every publish connection.
    let server = start(
        |c| {
            c.idle_timeout = Duration::from_secs(2);
            c.max_connections = 8;
            c.max_ip_connections = 0;
        },
        |_| {},
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(half_open("127.0.0.2", server.rtmp, HalfOpen::Version).await);
    }
    eventually("the flood beyond the limit is refused", || {
        server.ingest.metrics().rtmp_refused_total_limit == 12
    })
    .await;
    assert_eq!(server.ingest.publish_connections(), 8);
    // Meanwhile a publisher is turned away at once (that is what the per-address limit is
    // for)...
    let mut refused = TcpStream::connect(server.rtmp).await.expect("connect");
    let mut received = 0;
    let _ = refused.write_all(&[3]).await;
    assert!(closed_by_server(&mut refused, &mut received).await);
    assert_eq!(received, 0, "no handshake for a connection over the limit");
    // ... but not for long: the half-open connections are cut at the handshake timeout.
    for socket in &mut flood {
        assert!(closed_by_server(socket, &mut received).await);
    }
    eventually("the limit is free again", || {
        server.ingest.publish_connections() == 0
    })
    .await;
    let mut publisher = Publisher::start(server.rtmp, "after", "key").await;
    publisher.frames(30, 2048, None).await;
    drop(publisher);
    eventually("the publish ended", || server.control.ended().len() == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_connections_from_one_address_are_limited_unless_whitelisted() {
    let _serial = SERIAL.lock().await;
    let server = start(
        |c| {
            c.idle_timeout = Duration::from_secs(20);
            c.max_ip_connections = 2;
            c.ip_whitelist = "127.0.0.5".parse().expect("whitelist");
        },
        |_| {},
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = connect_from("127.0.0.4", server.rtmp).await;
        handshake(&mut socket).await;
        held.push(socket);
    }
    let mut third = connect_from("127.0.0.4", server.rtmp).await;
    let _ = third.write_all(&[3]).await;
    let mut received = 0;
    assert!(closed_by_server(&mut third, &mut received).await);
    assert_eq!(received, 0, "the third connection is closed at once");
    assert_eq!(server.ingest.metrics().rtmp_refused_ip_limit, 1);
    // Another address is not affected, nor a whitelisted one.
    let mut other = connect_from("127.0.0.6", server.rtmp).await;
    handshake(&mut other).await;
    for _ in 0..5 {
        let mut socket = connect_from("127.0.0.5", server.rtmp).await;
        handshake(&mut socket).await;
        held.push(socket);
    }
    // A slot comes back when a connection ends.
    drop(held.remove(0));
    eventually("the slot is free", || {
        server.ingest.publish_connections() == 1 + 1 + 5
    })
    .await;
    let mut fourth = connect_from("127.0.0.4", server.rtmp).await;
    handshake(&mut fourth).await;
    assert!(server
        .ingest
        .render_metrics()
        .contains("vstream_ingest_connections_refused_total{protocol=\"rtmp\",limit=\"ip\"} 1\n"));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. Slowloris HTTP / WebSocket upgrades.

const UPGRADE_REQUEST: &[u8] = b"GET /slow/key/publish HTTP/1.1\r\nHost: ingest\r\n\
    Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n";

/// Sends `UPGRADE_REQUEST` one byte every `pause` until the server closes the connection;
/// returns how many bytes it could send.
async fn dribble(mut socket: TcpStream, pause: Duration) -> usize {
    let mut sent = 0;
    for byte in UPGRADE_REQUEST {
        if socket.write_all(&[*byte]).await.is_err() {
            return sent;
        }
        sent += 1;
        // Stop as soon as the server closes (a write into a closed socket may still succeed).
        let mut buf = [0u8; 64];
        // (An answer to an incomplete request could only be an error status: cut too.)
        if tokio::time::timeout(pause, socket.read(&mut buf))
            .await
            .is_ok()
        {
            return sent;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_upgrades_are_cut_at_the_header_timeout_and_do_not_starve_publishers() {
    let _serial = SERIAL.lock().await;
    let server = start(
        |c| {
            c.http_header_read_timeout = Duration::from_secs(3);
            c.http_max_connections = 64;
            c.http_max_ip_pending = 8;
        },
        |_| {},
    )
    .await;
    let before = rss();

    // Five addresses, each with 4 silent connections and 4 that dribble an upgrade request
    // one byte every 200 ms (the whole request would take 40 s); then 20 more from the
    // first address, over its limit.
    let mut silent = Vec::new();
    let mut dribblers = Vec::new();
    for a in 2..7 {
        let from = format!("127.0.0.{a}");
        for _ in 0..4 {
            silent.push(connect_from(&from, server.http).await);
            let socket = connect_from(&from, server.http).await;
            dribblers.push(tokio::spawn(dribble(socket, Duration::from_millis(200))));
        }
    }
    for _ in 0..20 {
        silent.push(connect_from("127.0.0.2", server.http).await);
    }
    eventually(
        "the connections over the per-address limit are refused",
        || server.ingest.metrics().http_refused_ip_limit == 20,
    )
    .await;
    eventually("the attack is held", || {
        server.ingest.http_gate().connections() == 40
    })
    .await;
    let attack_rss = rss();

    // A browser publishes meanwhile.
    let (mut client, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{}/real/key/publish", server.http)),
    )
    .await
    .expect("in time")
    .expect("a real publisher's upgrade");
    eventually("it is live", || server.live("real").is_some()).await;
    assert!(
        server.ingest.http_gate().connections() >= 35,
        "while the attack was held"
    );

    // Every attacking connection is cut at the header timeout, long before its request is
    // complete.
    for (n, socket) in silent.iter_mut().enumerate() {
        let mut received = 0;
        assert!(
            closed_by_server(socket, &mut received).await,
            "silent connection {n} closed"
        );
        assert_eq!(received, 0, "no answer to a connection that sent nothing");
    }
    for dribbler in dribblers {
        let sent = tokio::time::timeout(PATIENCE, dribbler)
            .await
            .expect("cut in time")
            .expect("dribbler");
        assert!(
            sent < UPGRADE_REQUEST.len() / 2,
            "cut after {sent} of {} bytes",
            UPGRADE_REQUEST.len()
        );
    }
    eventually("no HTTP connection left", || {
        server.ingest.http_gate().connections() == 0
    })
    .await;
    let metrics = server.ingest.metrics();
    assert!(metrics.http_header_timeouts >= 40, "{metrics:?}");
    eprintln!(
        "slowloris: 60 connections (40 held, 20 refused at once), {} cut at the header timeout; \
         RSS {:.1} MiB before, {:.1} MiB during (+{:.2} MiB)",
        metrics.http_header_timeouts,
        mib(before),
        mib(attack_rss),
        mib(attack_rss.saturating_sub(before))
    );
    assert!(
        attack_rss.saturating_sub(before) < 16 * 1024 * 1024,
        "the attack took little memory"
    );

    // The upgraded publisher is not subject to the header timeout: still live, and a
    // heartbeat still gets its answer.
    client.send(Message::text("h")).await.expect("send");
    let answer = tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("an answer")
        .expect("open")
        .expect("a frame");
    assert_eq!(answer, Message::text("h"));
    assert!(server.live("real").is_some());
    client.close(None).await.expect("close");
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_connection_limit_comes_back_and_idle_keepalive_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let server = start(
        |c| {
            c.http_header_read_timeout = Duration::from_secs(2);
            c.http_max_connections = 8;
            c.http_max_ip_pending = 0;
        },
        |_| {},
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect_from("127.0.0.2", server.http).await);
    }
    eventually("the limit is taken", || {
        server.ingest.http_gate().connections() == 8
    })
    .await;
    let mut over = TcpStream::connect(server.http).await.expect("connect");
    let mut received = 0;
    assert!(closed_by_server(&mut over, &mut received).await);
    assert_eq!(received, 0, "closed at once");
    assert_eq!(server.ingest.metrics().http_refused_total_limit, 1);
    for socket in &mut silent {
        assert!(closed_by_server(socket, &mut received).await);
    }
    eventually("the limit is free again", || {
        server.ingest.http_gate().connections() == 0
    })
    .await;

    // A kept-alive connection gets its answer, then is closed when no next request comes.
    let mut client = TcpStream::connect(server.http).await.expect("connect");
    client
        .write_all(b"GET /no/such/thing HTTP/1.1\r\nHost: ingest\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, client.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut received = 0;
    assert!(
        closed_by_server(&mut client, &mut received).await,
        "an idle kept-alive connection is closed"
    );
    eventually("no HTTP connection left", || {
        server.ingest.http_gate().connections() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_that_stall_before_or_after_the_tls_handshake_are_cut() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write");
    let tls = ingest::TlsCert::load(&cert, &key).expect("load");
    let config = IngestConfig {
        http_header_read_timeout: Duration::from_secs(2),
        ..IngestConfig::default()
    };
    let gate = ingest::https::HttpGate::new(&config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::https::serve_https(
        listener,
        tls,
        axum::Router::new(),
        gate.clone(),
        shutdown.clone(),
    ));

    // Never starts TLS.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    // Finishes the TLS handshake, then sends nothing; and one that sends half a request.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            certified.cert.der().to_vec(),
        ))
        .expect("root");
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut silent = connector.connect(name.clone(), tcp).await.expect("tls");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut half = connector.connect(name, tcp).await.expect("tls");
    half.write_all(b"GET / HTTP/1.1\r\nHost: local")
        .await
        .expect("write");
    half.flush().await.expect("flush");

    let mut received = 0;
    assert!(
        closed_by_server(&mut plain, &mut received).await,
        "no TLS: cut"
    );
    assert!(
        closed_by_server(&mut silent, &mut received).await,
        "silent after TLS: cut"
    );
    assert!(
        closed_by_server(&mut half, &mut received).await,
        "half a request: cut"
    );
    eventually("no connection left", || gate.connections() == 0).await;
    assert!(gate.header_timeouts() >= 3, "{}", gate.header_timeouts());
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("stops")
        .expect("task");
}
