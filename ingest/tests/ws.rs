//! The WebSocket publish server on 127.0.0.1:0, without a browser: refusals before the
//! upgrade, frame limits, heartbeats, kill and shutdown, and a real WebM recording (made by
//! ffmpeg, sent in blobs cut anywhere) relayed so that ffmpeg decodes it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, IngestCommand, MediaStream, PublishGrant,
    PublishRefusal, PublishRequest, SourceKind,
};
use contract::StreamId;
use futures::{SinkExt, StreamExt};
use ingest::ws::{WsConfig, WsServer};
use ingest::{Ingest, IngestConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The coordinator as a test double: grants or refuses every publish, records calls.
struct FakeControl {
    refusal: Option<PublishRefusal>,
    publishes: Mutex<Vec<PublishRequest>>,
    ended: Mutex<Vec<(String, StreamId)>>,
}

impl FakeControl {
    fn publishes(&self) -> Vec<PublishRequest> {
        self.publishes.lock().expect("lock").clone()
    }
    fn ended(&self) -> Vec<(String, StreamId)> {
        self.ended.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ControlPlane for FakeControl {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        self.publishes.lock().expect("lock").push(request);
        match &self.refusal {
            Some(refusal) => Err(refusal.clone()),
            None => Ok(PublishGrant {
                stream_id: StreamId::generate(),
                encoder_id: "encoder-1".into(),
            }),
        }
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
    ws: WsServer,
    control: Arc<FakeControl>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("serve");
    }
}

async fn start(refusal: Option<PublishRefusal>, tweak: impl FnOnce(&mut WsConfig)) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let control = Arc::new(FakeControl {
        refusal,
        publishes: Mutex::default(),
        ended: Mutex::default(),
    });
    let ingest = Ingest::new(
        IngestConfig {
            node_id: "ingest-test".into(),
            publish_decision_timeout: Duration::from_secs(5),
            ..IngestConfig::default()
        },
        control.clone(),
    );
    let mut config = WsConfig::default();
    tweak(&mut config);
    let ws = WsServer::new(ingest.clone(), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let ws = ws.clone();
        let shutdown = shutdown.clone();
        async move { ws.serve(listener, shutdown).await }
    });
    Server {
        ingest,
        ws,
        control,
        addr,
        shutdown,
        task,
    }
}

async fn connect(url: &str) -> Result<Client, tungstenite::Error> {
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake ends in time")
        .map(|(client, _)| client)
}

/// The HTTP status and body of a refused upgrade.
async fn refusal(url: &str) -> (u16, String) {
    match connect(url).await {
        Ok(_) => panic!("{url}: the upgrade should have been refused"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("{url}: unexpected error {other}"),
    }
}

/// The next text frame (skipping heartbeats when `skip_h`), or `None` at the close.
async fn next_text(client: &mut Client, skip_h: bool) -> Option<String> {
    loop {
        let message = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(text))) if skip_h && text.as_str() == "h" => continue,
            Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Waits for the close frame; returns its code.
async fn close_code(client: &mut Client) -> Option<u16> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("the close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn live_stream_id(server: &Server, channel: &str) -> Option<StreamId> {
    server
        .ingest
        .publishers()
        .into_iter()
        .find(|p| p.channel == channel)
        .map(|p| p.stream_id)
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

/// A WebSocket client on a raw socket, to send frames no library would build (a 64 MiB
/// frame streamed without holding it in memory).
struct RawClient {
    read: OwnedReadHalf,
    write: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = socket.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (read, write) = socket.into_split();
        RawClient {
            read,
            write: Some(write),
            buf: buf[end..].to_vec(),
        }
    }

    /// A masked frame header (the mask is zero, so the payload goes as is).
    fn frame_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            header.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
        header.extend_from_slice(&[0, 0, 0, 0]);
        header
    }

    /// Reads the server's frames until the connection closes: (text frames, close code).
    async fn read_until_closed(mut self) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // Parse complete frames (the server does not mask).
            while self.buf.len() >= 2 {
                let len7 = (self.buf[1] & 0x7F) as usize;
                let (len, at) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 | 127 => break,
                    n => (n, 2),
                };
                if self.buf.len() < at + len {
                    break;
                }
                let opcode = self.buf[0] & 0x0F;
                let payload = self.buf[at..at + len].to_vec();
                self.buf.drain(..at + len);
                match opcode {
                    1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
                    8 => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        return (texts, code);
                    }
                    _ => {}
                }
            }
            match tokio::time::timeout(PATIENCE, self.read.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (texts, None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("the server neither answered nor closed"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_frame_is_refused_from_its_header_without_memory_growth() {
    let server = start(None, |_| {}).await;
    let mut reader = RawClient::connect(server.addr, "/big/key/publish").await;
    let write_half = reader.write.take().expect("write half");
    let before = rss();
    let total: u64 = 64 * 1024 * 1024;
    let sender = tokio::spawn(async move {
        let mut write_half = write_half;
        write_half
            .write_all(&RawClient::frame_header(true, 2, total))
            .await?;
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < total {
            write_half.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        Ok::<u64, std::io::Error>(sent)
    });
    let (texts, code) = reader.read_until_closed().await;
    let after = rss();
    assert_eq!(texts, ["ERROR: frame too large"]);
    assert_eq!(code, Some(1009));
    // The server never buffered the frame: far less than 64 MiB more than before.
    let growth = after.saturating_sub(before);
    assert!(growth < 16 * 1024 * 1024, "RSS grew by {growth} bytes");
    // The sender is cut off long before it could send everything.
    let sent = tokio::time::timeout(PATIENCE, sender)
        .await
        .expect("ends")
        .expect("task");
    assert!(sent.is_err(), "the server must not read the whole frame");
    // The publish that was granted ended and was reported.
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fragmented_past_the_limit_is_refused() {
    let server = start(None, |c| c.max_frame_bytes = 1024 * 1024).await;
    let mut client = RawClient::connect(server.addr, "/frag/key/publish").await;
    let piece = vec![0u8; 256 * 1024];
    let mut result = Ok(());
    for n in 0..8 {
        let opcode = if n == 0 { 2 } else { 0 };
        let mut frame = RawClient::frame_header(false, opcode, piece.len() as u64);
        frame.extend_from_slice(&piece);
        result = client
            .write
            .as_mut()
            .expect("write half")
            .write_all(&frame)
            .await;
        if result.is_err() {
            break;
        }
    }
    let _ = result;
    let (texts, code) = client.read_until_closed().await;
    assert_eq!(texts, ["ERROR: frame too large"]);
    assert_eq!(code, Some(1009));
    server.stop().await;
}

#[tokio::test]
async fn invalid_channels_keys_and_kinds_get_404_without_asking_the_coordinator() {
    let server = start(None, |_| {}).await;
    for path in [
        "/bad.channel/key/publish",
        "/demo/bad%20key/publish",
        &format!("/{}/key/publish", "c".repeat(10_000)),
        "/demo/key/receive",
        "/demo/key/probe",
    ] {
        let (status, _) = refusal(&server.url(path)).await;
        assert_eq!(status, 404, "{}", &path[..path.len().min(40)]);
    }
    assert!(server.control.publishes().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_refused_key_gets_403_invalid_key_and_nothing_is_registered() {
    let server = start(Some(PublishRefusal::InvalidKey("no".into())), |_| {}).await;
    let (status, body) = refusal(&server.url("/demo/wrong/publish")).await;
    assert_eq!((status, body.trim()), (403, "Invalid key"));
    let requests = server.control.publishes();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].source, SourceKind::Ws);
    assert_eq!(
        (requests[0].channel.as_str(), requests[0].key.as_str()),
        ("demo", "wrong")
    );
    assert_eq!(requests[0].user_ip, "127.0.0.1");
    assert!(server.ingest.publishers().is_empty());
    assert_eq!(server.ws.connections(), 0);
    // A browser only sees its WebSocket close; a plain GET of the same URL tells why.
    let (status, body) = plain_get(server.addr, "/demo/wrong/publish").await;
    assert_eq!((status, body.trim()), (403, "Invalid key"));
    let (status, _) = plain_get(server.addr, "/demo/other/publish").await;
    assert!(status == 400 || status == 426, "not an upgrade: {status}");
    server.stop().await;
}

/// A plain HTTP/1.1 GET: (status, body).
async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().expect("status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn no_capacity_and_an_unreachable_coordinator_get_503() {
    for refusal_kind in [
        PublishRefusal::NoCapacity,
        PublishRefusal::Unavailable("down".into()),
    ] {
        let server = start(Some(refusal_kind), |_| {}).await;
        let (status, _) = refusal(&server.url("/demo/key/publish")).await;
        assert_eq!(status, 503);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_second_publisher_on_a_live_channel_gets_403_until_the_first_leaves() {
    let server = start(None, |_| {}).await;
    let mut first = connect(&server.url("/demo/key/publish"))
        .await
        .expect("first");
    eventually("the first is live", || {
        live_stream_id(&server, "demo").is_some()
    })
    .await;
    let (status, body) = refusal(&server.url("/demo/key/publish")).await;
    assert_eq!((status, body.trim()), (403, "Already publishing"));

    first.close(None).await.expect("close");
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    let _third = connect(&server.url("/demo/key/publish"))
        .await
        .expect("after the end");
    server.stop().await;
}

#[tokio::test]
async fn the_fifth_connection_from_one_ip_gets_429_unless_whitelisted() {
    let server = start(None, |_| {}).await;
    let mut open = Vec::new();
    for n in 0..4 {
        open.push(
            connect(&server.url(&format!("/ch{n}/key/publish")))
                .await
                .expect("within the limit"),
        );
    }
    let (status, _) = refusal(&server.url("/ch4/key/publish")).await;
    assert_eq!(status, 429);
    assert_eq!(
        server.control.publishes().len(),
        4,
        "the coordinator was not asked"
    );
    // A slot frees when a connection ends.
    let mut last = open.pop().expect("one");
    last.close(None).await.expect("close");
    eventually("the slot is free", || server.ws.connections() == 3).await;
    let _again = connect(&server.url("/ch4/key/publish"))
        .await
        .expect("a free slot");
    server.stop().await;

    let server = start(None, |c| {
        c.whitelist = "10.0.0.0/8,127.0.0.1".parse().expect("valid")
    })
    .await;
    let mut open = Vec::new();
    for n in 0..6 {
        open.push(
            connect(&server.url(&format!("/ch{n}/key/publish")))
                .await
                .expect("whitelisted"),
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn only_allowed_origins_may_publish_when_a_list_is_set() {
    let server = start(None, |c| {
        c.allowed_origins = Some(vec!["https://app.example.com".into()]);
    })
    .await;
    let with_origin = |origin: &'static str| {
        let mut request = server
            .url("/demo/key/publish")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_static(origin));
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let (client, _) = tokio_tungstenite::connect_async(with_origin("https://APP.example.com"))
        .await
        .expect("allowed origin");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_are_answered_and_sent_and_a_silent_publisher_is_closed() {
    let server = start(None, |c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut client = connect(&server.url("/demo/key/publish"))
        .await
        .expect("open");
    client.send(Message::text("h")).await.expect("send");
    // The answer and the server's own heartbeats.
    for _ in 0..3 {
        assert_eq!(next_text(&mut client, false).await.as_deref(), Some("h"));
    }
    // Silence: closed with an error after the idle timeout, and the end reported.
    let error = next_text(&mut client, true).await;
    assert_eq!(error.as_deref(), Some("ERROR: nothing received for 2 s"));
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    assert!(server.ingest.publishers().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_kill_command_closes_the_socket_with_an_error_and_reports_the_end() {
    let server = start(None, |_| {}).await;
    let mut client = connect(&server.url("/demo/key/publish"))
        .await
        .expect("open");
    eventually("live", || live_stream_id(&server, "demo").is_some()).await;
    let id = live_stream_id(&server, "demo").expect("live");
    server.ingest.handle_command(IngestCommand::Kill {
        channel: "demo".into(),
        stream_id: Some(id.clone()),
    });
    assert_eq!(
        next_text(&mut client, true).await.as_deref(),
        Some("ERROR: stream closed")
    );
    assert_eq!(close_code(&mut client).await, Some(1000));
    eventually("the end is reported", || {
        server.control.ended() == [("demo".to_owned(), id.clone())]
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_publishers_with_going_away_and_reports_their_end() {
    let server = start(None, |_| {}).await;
    let mut client = connect(&server.url("/demo/key/publish"))
        .await
        .expect("open");
    eventually("live", || live_stream_id(&server, "demo").is_some()).await;
    server.shutdown.cancel();
    assert_eq!(close_code(&mut client).await, Some(1001));
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("stops")
        .expect("task")
        .expect("serve");
    assert_eq!(server.control.ended().len(), 1);
}

#[tokio::test]
async fn garbage_instead_of_a_recording_is_refused_with_an_error() {
    let server = start(None, |_| {}).await;
    let mut client = connect(&server.url("/demo/key/publish"))
        .await
        .expect("open");
    client
        .send(Message::binary(b"this is not a video at all".to_vec()))
        .await
        .expect("send");
    let error = next_text(&mut client, true).await.expect("an error");
    assert!(
        error.starts_with("ERROR: invalid media: unknown media format"),
        "{error}"
    );
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    server.stop().await;
}

/// A WebM (VP8 + Opus) recording of `seconds`, keyframes every second, like a browser's.
async fn webm_recording(seconds: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "300k",
            "-g",
            "30",
        ])
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

async fn read_all(stream: MediaStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = tokio::time::timeout(PATIENCE, stream.collect())
        .await
        .expect("the media stream ends after the publisher");
    chunks.concat()
}

/// Decodes `media` with ffmpeg: (frames decoded, error output).
async fn decode(media: Vec<u8>) -> (u64, String) {
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout.lines().filter(|l| !l.starts_with('#')).count() as u64;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webm_recording_sent_in_odd_blobs_is_relayed_decodable_from_the_start_and_mid_stream() {
    let server = start(None, |_| {}).await;
    let recording = webm_recording(4).await;
    let mut client = connect(&server.url("/demo/key/publish"))
        .await
        .expect("open");
    eventually("live", || live_stream_id(&server, "demo").is_some()).await;
    let id = live_stream_id(&server, "demo").expect("live");
    let early = server.ingest.open_media(&id).expect("open");

    // Blobs of awkward sizes (a prime, so cuts fall everywhere), the second half after a
    // late subscriber joined.
    let blobs: Vec<&[u8]> = recording.chunks(7919).collect();
    let half = blobs.len() / 2;
    for blob in &blobs[..half] {
        client
            .send(Message::binary(blob.to_vec()))
            .await
            .expect("send");
    }
    eventually("bytes are counted", || {
        server
            .ingest
            .publishers()
            .first()
            .is_some_and(|p| p.bytes_received >= (half * 7919) as u64)
    })
    .await;
    let late = server.ingest.open_media(&id).expect("open");
    for blob in &blobs[half..] {
        client
            .send(Message::binary(blob.to_vec()))
            .await
            .expect("send");
    }
    client.close(None).await.expect("close");

    let early = read_all(early).await;
    assert_eq!(
        early, recording,
        "an early subscriber gets the recording byte for byte"
    );
    let late = read_all(late).await;
    assert!(late.len() < recording.len());
    assert_eq!(
        &late[..4],
        &[0x1A, 0x45, 0xDF, 0xA3],
        "starts with the EBML header"
    );
    let (frames, errors) = decode(late).await;
    assert!(
        frames >= 30,
        "the late subscriber decodes from a keyframe: {frames} frames"
    );
    assert!(errors.is_empty(), "decoded without errors: {errors}");
    let (frames, _) = decode(early).await;
    assert_eq!(frames, 120);
    eventually("the end is reported", || server.control.ended().len() == 1).await;
    server.stop().await;
}

/// A browser's recording (see `testdata/README.md`): its blobs in order.
fn fixture(name: &str) -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
    let data = std::fs::read(format!("{dir}{name}")).expect("fixture");
    let sizes = std::fs::read_to_string(format!("{dir}{name}.blobs")).expect("sizes");
    let mut at = 0;
    sizes
        .split_whitespace()
        .map(|size| {
            let size: usize = size.parse().expect("size");
            at += size;
            data[at - size..at].to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_recordings_are_relayed_decodable_to_early_and_late_subscribers() {
    for name in ["chromium-vp8-opus.webm", "chromium-avc1-opus.mp4"] {
        let server = start(None, |_| {}).await;
        let blobs = fixture(name);
        let mut client = connect(&server.url("/demo/key/publish"))
            .await
            .expect("open");
        eventually("live", || live_stream_id(&server, "demo").is_some()).await;
        let id = live_stream_id(&server, "demo").expect("live");
        let early = server.ingest.open_media(&id).expect("open");
        let half = blobs.len() / 2;
        let sent_first: usize = blobs[..half].iter().map(Vec::len).sum();
        for blob in &blobs[..half] {
            client
                .send(Message::binary(blob.clone()))
                .await
                .expect("send");
        }
        eventually("the first half arrived", || {
            server
                .ingest
                .publishers()
                .first()
                .is_some_and(|p| p.bytes_received >= sent_first as u64)
        })
        .await;
        let late = server.ingest.open_media(&id).expect("open");
        for blob in &blobs[half..] {
            client
                .send(Message::binary(blob.clone()))
                .await
                .expect("send");
        }
        client.close(None).await.expect("close");

        let early = read_all(early).await;
        assert_eq!(
            early,
            blobs.concat(),
            "{name}: byte for byte from the start"
        );
        let (all_frames, _) = decode(early).await;
        let late = read_all(late).await;
        assert!(late.len() < blobs.concat().len(), "{name}");
        let (frames, errors) = decode(late).await;
        assert!(
            frames >= 10 && frames < all_frames,
            "{name}: the late subscriber decodes from a keyframe: {frames} of {all_frames} frames"
        );
        assert!(
            errors.is_empty(),
            "{name}: decoded without errors: {errors}"
        );
        server.stop().await;
    }
}
