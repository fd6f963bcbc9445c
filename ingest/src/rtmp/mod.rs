//! RTMP publish connections: the accept loop and one task per connection driving
//! `rml_rtmp`'s sans-IO handshake and `ServerSession` over a `TcpStream`, or over a TLS stream
//! on top of it for RTMPS (the connection code is generic over the stream).
//!
//! A connection goes: handshake → `connect` (always accepted; the app is checked at publish)
//! → `publish` (channel and key validated, channel reserved locally, the coordinator asked
//! while reads go on) → media relayed → end. Every read has the idle timeout; a connection
//! that is not publishing is closed after the idle timeout too; writes (handshake, acks,
//! statuses: all small) have the same timeout. A refused publish gets `_error` with
//! `NetStream.Publish.BadName` or `.BadConnection`, then a FIN, and the socket is closed as
//! soon as the peer closes (or after a short grace).
//!
//! Once the publish is live, the session hands over to a lean chunk reader (`chunks`) that
//! has followed the input from the start: media goes from the read buffer to the relay
//! without the session's per-message allocations, `@setDataFrame`, `FCUnpublish`,
//! `deleteStream` / `closeStream` are handled here, and acknowledgements are sent at the
//! window the peer asked for. After the end of that publish the connection takes no other
//! publish (a second one is refused and the connection closed); a publisher reconnects.
//!
//! `rml_rtmp` may panic on some malformed input (unchecked arithmetic on header fields), so
//! every call that parses peer bytes runs under `catch_unwind`: the offending connection is
//! closed with a warning and nothing else is affected. (The default panic hook still prints
//! the panic message to stderr; a library must not replace the process's hook.)

pub(crate) mod chunks;
mod reply;

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use contract::control::{PublishGrant, PublishRefusal, PublishRequest, SourceKind};
use contract::validate_id;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent,
    ServerSessionResult, StreamMetadata,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::limits::IpSlot;
use crate::publish::{decide, report_end, Decision, EndReason, PublishGuard};
use crate::registry::{Live, StreamRelay};
use crate::relay::{Relay, RelayConfig};
use crate::tls::TlsCert;
use crate::Inner;

const BAD_NAME: &str = "NetStream.Publish.BadName";
const BAD_CONNECTION: &str = "NetStream.Publish.BadConnection";
/// How long a refused peer gets to read its refusal and close before we drop the socket.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 64 * 1024;

/// Why a connection could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("bad handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("RTMP protocol error: {0}")]
    Session(#[from] ServerSessionError),
    #[error("the RTMP {0} panicked on malformed input")]
    ParserPanic(&'static str),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("not publishing after {0:?}")]
    NotPublishing(Duration),
    #[error("the peer did not read for {0:?}")]
    WriteTimeout(Duration),
    #[error("RTMP chunk error: {0}")]
    Chunks(#[from] chunks::ChunkError),
}

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    PeerClosed,
    Refused,
    Killed,
    Shutdown,
}

/// Accept loop; see [`crate::Ingest::serve_rtmp`].
///
/// With `tls`, every connection first completes a TLS handshake (RTMPS) with the certificate
/// current at accept time, within the idle timeout.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<TlsCert>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let protocol = if tls.is_some() { "RTMPS" } else { "RTMP" };
    info!(addr = ?listener.local_addr().ok(), node = %inner.config.node_id, "{protocol} ingest listening");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some((permit, ip_slot)) = admit(&inner, peer, protocol) else {
                    // Dropped: closed at once.
                    continue;
                };
                let conn_id = inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
                let inner = Arc::clone(&inner);
                let cancel = shutdown.child_token();
                let shutdown = shutdown.clone();
                let acceptor = tls.as_ref().map(TlsCert::acceptor);
                tracker.spawn(async move {
                    prepare_socket(&socket, inner.config.idle_timeout);
                    match acceptor {
                        None => {
                            handle_connection(inner, socket, peer, conn_id, cancel, shutdown).await
                        }
                        Some(acceptor) => {
                            let limit = inner.config.idle_timeout;
                            let handshake = timeout(limit, acceptor.accept(socket));
                            let stream = tokio::select! {
                                _ = cancel.cancelled() => None,
                                done = handshake => match done {
                                    Ok(Ok(stream)) => Some(stream),
                                    Ok(Err(err)) => {
                                        info!(%peer, %err, "RTMPS: TLS handshake failed");
                                        None
                                    }
                                    Err(_) => {
                                        info!(%peer, ?limit, "RTMPS: TLS handshake not completed in time");
                                        None
                                    }
                                },
                            };
                            if let Some(stream) = stream {
                                handle_connection(inner, stream, peer, conn_id, cancel, shutdown)
                                    .await;
                            }
                        }
                    }
                    drop(ip_slot);
                    drop(permit);
                });
            }
            Err(err) => {
                // ECONNABORTED, EMFILE...: keep serving, without spinning.
                warn!(%err, "{protocol} accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracker.close();
    debug!(connections = tracker.len(), "{protocol} ingest stopping");
    tracker.wait().await;
    info!("{protocol} ingest stopped");
    Ok(())
}

/// A new connection from `peer`: its share of the per-IP and total limits, or `None` (the
/// connection is to be closed at once; counted, and logged at most once a second).
fn admit(
    inner: &Arc<Inner>,
    peer: SocketAddr,
    protocol: &str,
) -> Option<(OwnedSemaphorePermit, IpSlot)> {
    let limit = inner.config.max_ip_connections;
    let Some(ip_slot) = inner
        .rtmp_per_ip
        .take(peer.ip(), limit, &inner.config.ip_whitelist)
    else {
        inner.rtmp_refusals.per_ip.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = inner.rtmp_refusal_log.hit() {
            warn!(%peer, limit, refused, "too many {protocol} connections from one address; closing new ones");
        }
        return None;
    };
    let Ok(permit) = Arc::clone(&inner.connections).try_acquire_owned() else {
        inner.rtmp_refusals.total.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = inner.rtmp_refusal_log.hit() {
            warn!(%peer, limit = inner.config.max_connections, refused, "too many {protocol} connections; closing new ones");
        }
        return None;
    };
    Some((permit, ip_slot))
}

enum Publish {
    Idle { since: Instant },
    Deciding(Deciding),
    Live(PublishGuard),
}

struct Deciding {
    request_id: u32,
    channel: String,
    handle: JoinHandle<Decision>,
}

/// One RTMP connection, from accept to close.
#[tracing::instrument(
    name = "rtmp_connection",
    skip_all,
    fields(peer = %peer, conn_id = conn_id, channel = tracing::field::Empty, stream_id = tracing::field::Empty)
)]
pub(crate) async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
    inner: Arc<Inner>,
    socket: S,
    peer: SocketAddr,
    conn_id: u64,
    cancel: CancellationToken,
    shutdown: CancellationToken,
) {
    debug!("RTMP connection accepted");

    let mut publish = Publish::Idle {
        since: Instant::now(),
    };
    let outcome = {
        let mut conn = Connection {
            inner: Arc::clone(&inner),
            socket,
            peer,
            conn_id,
            cancel: cancel.clone(),
            bytes: Arc::new(AtomicU64::new(0)),
            buf: vec![0; READ_BUFFER],
            out: Vec::new(),
            session: None,
            reader: Some(chunks::ChunkReader::default()),
            live_path: false,
            publish: &mut publish,
        };
        conn.run(&cancel, &shutdown).await
        // The socket is closed here, before the end is reported.
    };
    let reason = match &outcome {
        Ok(Exit::PeerClosed) => {
            debug!("RTMP connection closed by the peer");
            EndReason::PeerClosed
        }
        Ok(Exit::Refused) => EndReason::Abandoned,
        Ok(Exit::Killed) => {
            info!("RTMP connection killed by command");
            EndReason::Killed
        }
        Ok(Exit::Shutdown) => EndReason::Shutdown,
        // The peer is repeated in these: the span may be filtered out.
        Err(err @ ConnectionError::Io(_)) => {
            info!(%peer, %err, "RTMP connection lost");
            EndReason::Error
        }
        Err(err @ ConnectionError::Idle(_)) => {
            warn!(%peer, %err, "RTMP connection dead");
            EndReason::IdleTimeout
        }
        Err(err) => {
            warn!(%peer, %err, "RTMP connection closed");
            EndReason::Error
        }
    };
    match publish {
        Publish::Idle { .. } => {}
        Publish::Live(guard) => guard.end(reason).await,
        Publish::Deciding(d) => {
            // The coordinator may still grant this publish: wait for the (bounded) decision
            // so that a grant nobody will use is reported as ended at once.
            if let Ok(Decision::Granted(grant)) = d.handle.await {
                inner.registry.begin_ending(&d.channel, conn_id);
                report_end(&inner, &d.channel, &grant.stream_id, EndReason::Abandoned).await;
                inner.registry.finish_ending(&d.channel, conn_id);
            } else {
                inner.registry.release(&d.channel, conn_id);
            }
        }
    }
}

/// Keepalive (a dead peer is noticed even while nothing is sent) and no Nagle delay.
fn prepare_socket(socket: &TcpStream, idle: Duration) {
    if let Err(err) = set_keepalive(socket, idle) {
        debug!(%err, "TCP keepalive not set");
    }
    let _ = socket.set_nodelay(true);
}

fn set_keepalive(socket: &TcpStream, idle: Duration) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(idle.max(Duration::from_secs(1)));
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    let keepalive = keepalive
        .with_interval((idle / 4).max(Duration::from_secs(1)))
        .with_retries(3);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// Runs `f` (which parses peer bytes) and turns a panic into an error.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, ConnectionError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| ConnectionError::ParserPanic(what))
}

/// The channel or key as used: anything from a `?` on is dropped.
fn strip_query(value: &str) -> &str {
    value.split_once('?').map_or(value, |(name, _)| name)
}

/// The RTMP status code for a refusal.
fn refusal_code(refusal: &PublishRefusal) -> &'static str {
    match refusal {
        PublishRefusal::InvalidKey(_) | PublishRefusal::AlreadyPublishing => BAD_NAME,
        PublishRefusal::NoCapacity | PublishRefusal::Unavailable(_) => BAD_CONNECTION,
    }
}

struct Connection<'a, S> {
    inner: Arc<Inner>,
    socket: S,
    peer: SocketAddr,
    conn_id: u64,
    /// Cancelled to kill this connection (command or shutdown).
    cancel: CancellationToken,
    bytes: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// Bytes to send, in order (session packets and our replies).
    out: Vec<u8>,
    session: Option<ServerSession>,
    /// Reads every byte alongside the session until the publish is live, then instead of it
    /// (`live_path`); `None` if it found the input malformed (the session then stays).
    reader: Option<chunks::ChunkReader>,
    /// The session has handed over to `reader`: it sees no more input and sends nothing.
    live_path: bool,
    publish: &'a mut Publish,
}

/// What woke the main loop.
enum Wake {
    Cancelled,
    Read(Result<usize, io::Error>),
    /// The idle timer fired: nothing was read for the read limit, unless a read since it was
    /// armed pushed the deadline on (then it is armed again).
    IdleTimer,
    Decided(Result<Decision, JoinError>),
    NotPublishing,
}

enum Flow {
    Continue,
    Close(Exit),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    async fn run(
        &mut self,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<Exit, ConnectionError> {
        let exit = self.run_inner(cancel).await;
        match exit {
            Ok(Exit::Killed) if shutdown.is_cancelled() => Ok(Exit::Shutdown),
            other => other,
        }
    }

    async fn run_inner(&mut self, cancel: &CancellationToken) -> Result<Exit, ConnectionError> {
        let idle = self.inner.config.idle_timeout;
        let leftover = match self.handshake(cancel).await? {
            Ok(leftover) => leftover,
            Err(exit) => return Ok(exit),
        };
        let (session, initial) = ServerSession::new(ServerSessionConfig::new())?;
        self.session = Some(session);
        let mut flow = self.process(initial).await?;
        if !leftover.is_empty() && matches!(flow, Flow::Continue) {
            let results = self.feed(&leftover)?;
            flow = self.process(results).await?;
        }
        self.flush().await?;
        if let Flow::Close(exit) = flow {
            return self.close(exit).await;
        }

        let decision_limit = self.inner.config.publish_decision_timeout;
        // While the coordinator decides, a client legitimately sends nothing; the decision
        // (a wait for the previous publisher's end, then the call) is bounded by itself.
        let read_limit = |publish: &Publish| match publish {
            Publish::Deciding(_) => idle + decision_limit * 2,
            _ => idle,
        };
        // One cancellation future and one idle timer for the whole connection, not one of each
        // per read: a publisher's connection does a read per media message, and registering
        // and removing a timer and a cancellation waiter every time was a visible part of the
        // relay's CPU. A read only notes its time; when the timer fires, it is armed again
        // for the deadline that follows from the last read.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let mut last_read = Instant::now();
        let idle_timer = tokio::time::sleep_until(last_read + read_limit(self.publish));
        tokio::pin!(idle_timer);
        loop {
            let wake = {
                let publish_wake = publish_wake(self.publish, idle);
                tokio::select! {
                    biased;
                    _ = &mut cancelled => Wake::Cancelled,
                    wake = publish_wake => wake,
                    read = self.socket.read(&mut self.buf) => Wake::Read(read),
                    () = &mut idle_timer => Wake::IdleTimer,
                }
            };
            let flow = match wake {
                Wake::Cancelled => return Ok(Exit::Killed),
                Wake::NotPublishing => return Err(ConnectionError::NotPublishing(idle)),
                Wake::IdleTimer => {
                    let limit = read_limit(self.publish);
                    let deadline = last_read + limit;
                    if Instant::now() >= deadline {
                        return Err(ConnectionError::Idle(limit));
                    }
                    idle_timer.as_mut().reset(deadline);
                    Flow::Continue
                }
                Wake::Read(Err(err)) => return Err(err.into()),
                Wake::Read(Ok(0)) => return Ok(Exit::PeerClosed),
                Wake::Read(Ok(n)) => {
                    last_read = Instant::now();
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if self.live_path {
                        self.feed_live(n).await?
                    } else {
                        let buf = std::mem::take(&mut self.buf);
                        let results = self.feed(&buf[..n]);
                        self.buf = buf;
                        self.process(results?).await?
                    }
                }
                Wake::Decided(decision) => {
                    let flow = self.on_decision(decision).await?;
                    // The read limit may have become shorter: the timer fires at the new
                    // deadline if nothing is read before.
                    idle_timer
                        .as_mut()
                        .reset(last_read + read_limit(self.publish));
                    flow
                }
            };
            self.flush().await?;
            if let Flow::Close(exit) = flow {
                return self.close(exit).await;
            }
        }
    }

    /// Runs the handshake. `Ok(Err(exit))`: the peer left or we were cancelled.
    async fn handshake(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Result<Vec<u8>, Exit>, ConnectionError> {
        let limit = self.inner.config.idle_timeout;
        let deadline = Instant::now() + limit;
        let mut handshake = Handshake::new(PeerType::Server);
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return Ok(Err(Exit::Killed)),
                read = tokio::time::timeout_at(deadline, self.socket.read(&mut self.buf)) => {
                    read.map_err(|_| ConnectionError::HandshakeTimeout(limit))??
                }
            };
            if n == 0 {
                return Ok(Err(Exit::PeerClosed));
            }
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let input = &self.buf[..n];
            let result = guarded("handshake", || handshake.process_bytes(input))??;
            match result {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.out.extend_from_slice(&response_bytes);
                    self.flush().await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.out.extend_from_slice(&response_bytes);
                    self.flush().await?;
                    debug!("RTMP handshake completed");
                    return Ok(Ok(remaining_bytes));
                }
            }
        }
    }

    fn session(&mut self) -> Result<&mut ServerSession, ConnectionError> {
        self.session.as_mut().ok_or(ConnectionError::ParserPanic(
            "session (used before the handshake)",
        ))
    }

    fn feed(&mut self, input: &[u8]) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        if let Some(reader) = &mut self.reader {
            // Only its state matters until the publish is live.
            if let Err(err) = reader.push(input, |_| {}) {
                debug!(%err, "the live-path chunk reader gave up; the session goes on alone");
                self.reader = None;
            }
        }
        let session = self.session()?;
        Ok(guarded("chunk parser", || session.handle_input(input))??)
    }

    /// Input once the publish is live (`live_path`): media straight to the relay, the few
    /// commands that matter then answered here.
    async fn feed_live(&mut self, n: usize) -> Result<Flow, ConnectionError> {
        let Some(reader) = self.reader.as_mut() else {
            return Err(ConnectionError::ParserPanic("live path without its reader"));
        };
        let relay = match &*self.publish {
            Publish::Live(guard) => guard.relay.flv(),
            _ => None,
        };
        let mut commands: Vec<LiveCommand> = Vec::new();
        reader
            .push(&self.buf[..n], |m| match m.type_id {
                VIDEO => {
                    if let Some(relay) = relay {
                        relay.push_video(m.timestamp, m.payload);
                    }
                }
                AUDIO => {
                    if let Some(relay) = relay {
                        relay.push_audio(m.timestamp, m.payload);
                    }
                }
                AMF0_DATA => {
                    if let (Some(relay), Some(metadata)) = (relay, metadata(m.payload)) {
                        relay.set_metadata(&metadata);
                    }
                }
                AMF0_COMMAND => {
                    if let Some(command) = LiveCommand::parse(m.payload, m.stream_id) {
                        commands.push(command);
                    }
                }
                _ => {}
            })
            .map_err(ConnectionError::Chunks)?;
        if let Some(sequence) = reader.take_ack() {
            self.out
                .extend_from_slice(&chunks::acknowledgement(sequence));
        }
        for command in commands {
            match command {
                LiveCommand::FcUnpublish { transaction_id } => {
                    self.queue_reply(reply::notification(
                        "onFCUnpublish",
                        "NetStream.Unpublish.Success",
                        "FCUnpublish",
                    ));
                    self.queue_reply(reply::result(transaction_id));
                    self.end_publish(EndReason::Unpublished).await;
                }
                LiveCommand::DeleteStream => self.end_publish(EndReason::Unpublished).await,
                LiveCommand::Publish { stream_id } => {
                    // While live, as before: the second request is refused, the first
                    // publish goes on. After its end, the session that could take a new
                    // publish has handed over: refused, and the connection closed.
                    let live = matches!(self.publish, Publish::Live(_));
                    info!(
                        live,
                        "another publish on a connection that published already refused"
                    );
                    self.queue_reply(reply::command(
                        stream_id,
                        &[
                            Amf0Value::Utf8String("onStatus".into()),
                            Amf0Value::Number(0.0),
                            Amf0Value::Null,
                            reply_status("error", BAD_NAME, "one publish per connection"),
                        ],
                    ));
                    if !live {
                        return Ok(Flow::Close(Exit::Refused));
                    }
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.inner.config.idle_timeout;
        timeout(limit, self.socket.write_all(&self.out))
            .await
            .map_err(|_| ConnectionError::WriteTimeout(limit))??;
        self.out.clear();
        Ok(())
    }

    /// After a refusal: the status is flushed; send FIN and let the peer read it and close.
    async fn close(&mut self, exit: Exit) -> Result<Exit, ConnectionError> {
        if exit == Exit::Refused {
            let _ = self.socket.shutdown().await;
            let drain = async {
                while let Ok(n) = self.socket.read(&mut self.buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = timeout(REFUSAL_GRACE, drain).await;
        }
        Ok(exit)
    }

    fn queue(&mut self, results: Vec<ServerSessionResult>) {
        for result in results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                self.out.extend_from_slice(&packet.bytes);
            }
        }
    }

    fn queue_reply(&mut self, reply: Option<Vec<u8>>) {
        if let Some(bytes) = reply {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// Refuses the outstanding publish `request_id` with `code`.
    fn refuse(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Flow, ConnectionError> {
        let session = self.session()?;
        let packets = session.reject_request(request_id, code, description)?;
        self.queue(packets);
        Ok(Flow::Close(Exit::Refused))
    }

    async fn process(
        &mut self,
        results: Vec<ServerSessionResult>,
    ) -> Result<Flow, ConnectionError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes);
                }
                ServerSessionResult::RaisedEvent(event) => {
                    if let Flow::Close(exit) = self.on_event(event).await? {
                        return Ok(Flow::Close(exit));
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    debug!(type_id = payload.type_id, "RTMP message ignored");
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_event(&mut self, event: ServerSessionEvent) -> Result<Flow, ConnectionError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                // The app (channel) is checked at publish, where the refusal has a status code
                // encoders show.
                debug!(app = %app_name, "RTMP connect");
                let packets = self.session()?.accept_request(request_id)?;
                self.queue(packets);
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => return self.on_publish(request_id, &app_name, &stream_key),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.end_publish(EndReason::Unpublished).await;
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Some(relay) = self.live_relay() {
                    relay.set_metadata(&metadata);
                }
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                if let Some(relay) = self.live_relay() {
                    relay.push_video(timestamp.value, &data);
                }
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                if let Some(relay) = self.live_relay() {
                    relay.push_audio(timestamp.value, &data);
                }
            }
            ServerSessionEvent::UnhandleableAmf0Command {
                command_name,
                transaction_id,
                ..
            } => match command_name.as_str() {
                // OBS and ffmpeg send these around createStream/publish and at the end; FMS
                // answers them and some clients wait for the answers.
                "releaseStream" => self.queue_reply(reply::result(transaction_id)),
                "FCPublish" => {
                    self.queue_reply(reply::notification(
                        "onFCPublish",
                        "NetStream.Publish.Start",
                        "FCPublish",
                    ));
                    self.queue_reply(reply::result(transaction_id));
                }
                "FCUnpublish" => {
                    self.queue_reply(reply::notification(
                        "onFCUnpublish",
                        "NetStream.Unpublish.Success",
                        "FCUnpublish",
                    ));
                    self.queue_reply(reply::result(transaction_id));
                    self.end_publish(EndReason::Unpublished).await;
                }
                other => debug!(command = other, "RTMP command ignored"),
            },
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                info!("RTMP play refused: this server only takes publishers");
                let packets = self.session()?.reject_request(
                    request_id,
                    "NetStream.Play.Failed",
                    "playback is not offered here",
                )?;
                self.queue(packets);
                return Ok(Flow::Close(Exit::Refused));
            }
            ServerSessionEvent::ClientChunkSizeChanged { .. }
            | ServerSessionEvent::ReleaseStreamRequested { .. }
            | ServerSessionEvent::PlayStreamFinished { .. }
            | ServerSessionEvent::AcknowledgementReceived { .. }
            | ServerSessionEvent::PingResponseReceived { .. } => {}
        }
        Ok(Flow::Continue)
    }

    fn on_publish(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
    ) -> Result<Flow, ConnectionError> {
        if !matches!(self.publish, Publish::Idle { .. }) {
            // Refuse the second request only; the first publish goes on.
            info!("second publish on one connection refused");
            let packets = self.session()?.reject_request(
                request_id,
                BAD_NAME,
                "already publishing on this connection",
            )?;
            self.queue(packets);
            return Ok(Flow::Continue);
        }
        let channel = strip_query(app);
        let key = strip_query(key);
        let max = self.inner.config.id_max_length;
        if let Err(err) =
            validate_id("channel", channel, max).and_then(|()| validate_id("key", key, max))
        {
            info!(%err, "publish refused");
            return self.refuse(request_id, BAD_NAME, &err.to_string());
        }
        tracing::Span::current().record("channel", channel);
        let request = PublishRequest {
            channel: channel.to_owned(),
            key: key.to_owned(),
            user_ip: self.peer.ip().to_string(),
            ingest_id: self.inner.config.node_id.clone(),
            source: SourceKind::Rtmp,
        };
        let handle = tokio::spawn(
            decide(
                Arc::clone(&self.inner),
                request,
                self.conn_id,
                self.cancel.clone(),
            )
            .in_current_span(),
        );
        *self.publish = Publish::Deciding(Deciding {
            request_id,
            channel: channel.to_owned(),
            handle,
        });
        Ok(Flow::Continue)
    }

    async fn on_decision(
        &mut self,
        decision: Result<Decision, JoinError>,
    ) -> Result<Flow, ConnectionError> {
        let state = std::mem::replace(
            self.publish,
            Publish::Idle {
                since: Instant::now(),
            },
        );
        let Publish::Deciding(Deciding {
            request_id,
            channel,
            ..
        }) = state
        else {
            *self.publish = state;
            return Ok(Flow::Continue);
        };
        let (code, description) = match decision {
            Ok(Decision::Granted(grant)) => return self.go_live(request_id, channel, grant).await,
            Ok(Decision::Refused(refusal)) => {
                info!(%refusal, "publish refused");
                (refusal_code(&refusal), refusal.to_string())
            }
            Ok(Decision::TimedOut) => {
                warn!(
                    timeout = ?self.inner.config.publish_decision_timeout,
                    "publish refused: no decision from the coordinator in time"
                );
                (BAD_CONNECTION, "coordinator timeout".to_owned())
            }
            Err(err) => {
                warn!(%err, "publish refused: the decision task failed");
                (BAD_CONNECTION, "internal error".to_owned())
            }
        };
        self.inner.registry.release(&channel, self.conn_id);
        self.refuse(request_id, code, &description)
    }

    async fn go_live(
        &mut self,
        request_id: u32,
        channel: String,
        grant: PublishGrant,
    ) -> Result<Flow, ConnectionError> {
        let inner = Arc::clone(&self.inner);
        let relay = Relay::bounded(
            grant.stream_id.clone(),
            RelayConfig {
                gop_cache_max_bytes: inner.config.gop_cache_max_bytes,
                queue_len: inner.config.relay_queue_len,
            },
            inner.config.relay_queue_max_bytes,
            inner.gauges.clone(),
        );
        let relay = StreamRelay::Flv(relay);
        let live = Live {
            stream_id: grant.stream_id.clone(),
            relay: relay.clone(),
            remote_addr: self.peer,
            source: SourceKind::Rtmp,
            started_at: SystemTime::now(),
            bytes_received: Arc::clone(&self.bytes),
        };
        tracing::Span::current().record("stream_id", grant.stream_id.as_str());
        if !inner.registry.go_live(&channel, self.conn_id, live) {
            // Our reservation is gone (cannot happen while this connection lives).
            warn!("publish granted but the channel reservation was lost");
            report_end(&inner, &channel, &grant.stream_id, EndReason::Abandoned).await;
            return self.refuse(request_id, BAD_CONNECTION, "internal error");
        }
        let guard = PublishGuard {
            inner: Arc::clone(&inner),
            channel,
            stream_id: grant.stream_id.clone(),
            conn_id: self.conn_id,
            relay,
            ended: false,
        };
        let accepted = match self.session() {
            Ok(session) => session
                .accept_request(request_id)
                .map_err(ConnectionError::from),
            Err(err) => Err(err),
        };
        match accepted {
            Ok(packets) => {
                self.queue(packets);
                info!(encoder_id = %grant.encoder_id, "publish started");
                *self.publish = Publish::Live(guard);
                // From here on the lean reader takes the input (when it could follow).
                self.live_path = self.reader.is_some();
                Ok(Flow::Continue)
            }
            Err(err) => {
                // E.g. the client deleted its stream while we were deciding.
                guard.end(EndReason::Error).await;
                Err(err)
            }
        }
    }

    /// The FLV relay of the live publish, if any.
    fn live_relay(&self) -> Option<&Relay> {
        match &*self.publish {
            Publish::Live(guard) => guard.relay.flv(),
            _ => None,
        }
    }

    async fn end_publish(&mut self, reason: EndReason) {
        if let Publish::Live(_) = self.publish {
            let state = std::mem::replace(
                self.publish,
                Publish::Idle {
                    since: Instant::now(),
                },
            );
            if let Publish::Live(guard) = state {
                guard.end(reason).await;
            }
        }
    }
}

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

/// The commands a live publisher may send that matter.
#[derive(Debug, Clone, PartialEq)]
enum LiveCommand {
    FcUnpublish { transaction_id: f64 },
    DeleteStream,
    Publish { stream_id: u32 },
}

impl LiveCommand {
    fn parse(payload: &[u8], stream_id: u32) -> Option<LiveCommand> {
        let mut values = rml_amf0::deserialize(&mut &payload[..]).ok()?.into_iter();
        let name = values.next()?.get_string()?;
        let transaction_id = values.next().and_then(|v| v.get_number()).unwrap_or(0.0);
        match name.as_str() {
            "FCUnpublish" => Some(LiveCommand::FcUnpublish { transaction_id }),
            "deleteStream" | "closeStream" => Some(LiveCommand::DeleteStream),
            "publish" => Some(LiveCommand::Publish { stream_id }),
            other => {
                debug!(command = other, "RTMP command ignored");
                None
            }
        }
    }
}

/// `onMetaData` from an AMF0 data message (`@setDataFrame`, `onMetaData`, properties), as
/// `rml_rtmp`'s session reads it.
fn metadata(payload: &[u8]) -> Option<StreamMetadata> {
    let values = rml_amf0::deserialize(&mut &payload[..]).ok()?;
    let mut values = values.into_iter();
    if values.next()?.get_string()? != "@setDataFrame" {
        return None;
    }
    if values.next()?.get_string()? != "onMetaData" {
        return None;
    }
    let mut metadata = StreamMetadata::new();
    metadata.apply_metadata_values(values.next()?.get_object_properties()?);
    Some(metadata)
}

/// An `onStatus` information object.
fn reply_status(level: &str, code: &str, description: &str) -> Amf0Value {
    let mut status = std::collections::HashMap::new();
    status.insert("level".to_owned(), Amf0Value::Utf8String(level.into()));
    status.insert("code".to_owned(), Amf0Value::Utf8String(code.into()));
    status.insert(
        "description".to_owned(),
        Amf0Value::Utf8String(description.into()),
    );
    Amf0Value::Object(status)
}

/// Waits for what the publish state can produce: the decision, or the end of the time a
/// connection may stay without publishing.
async fn publish_wake(publish: &mut Publish, idle: Duration) -> Wake {
    match publish {
        Publish::Idle { since } => {
            tokio::time::sleep_until(*since + idle).await;
            Wake::NotPublishing
        }
        Publish::Deciding(d) => Wake::Decided((&mut d.handle).await),
        Publish::Live(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_stripped_from_channel_and_key() {
        assert_eq!(strip_query("key?token=1"), "key");
        assert_eq!(strip_query("demo"), "demo");
        assert_eq!(strip_query("?x"), "");
    }

    #[test]
    fn refusals_map_to_rtmp_status_codes() {
        assert_eq!(
            refusal_code(&PublishRefusal::InvalidKey("x".into())),
            BAD_NAME
        );
        assert_eq!(refusal_code(&PublishRefusal::AlreadyPublishing), BAD_NAME);
        assert_eq!(refusal_code(&PublishRefusal::NoCapacity), BAD_CONNECTION);
        assert_eq!(
            refusal_code(&PublishRefusal::Unavailable("down".into())),
            BAD_CONNECTION
        );
    }

    #[test]
    fn live_commands_and_metadata_are_read_from_amf0() {
        let amf = |values: Vec<Amf0Value>| rml_amf0::serialize(&values).expect("amf0");
        let s = |v: &str| Amf0Value::Utf8String(v.into());
        let fc = amf(vec![
            s("FCUnpublish"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
        ]);
        assert_eq!(
            LiveCommand::parse(&fc, 0),
            Some(LiveCommand::FcUnpublish {
                transaction_id: 5.0
            })
        );
        let delete = amf(vec![
            s("deleteStream"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
        ]);
        assert_eq!(
            LiveCommand::parse(&delete, 0),
            Some(LiveCommand::DeleteStream)
        );
        let publish = amf(vec![s("publish"), Amf0Value::Number(6.0), Amf0Value::Null]);
        assert_eq!(
            LiveCommand::parse(&publish, 1),
            Some(LiveCommand::Publish { stream_id: 1 })
        );
        assert_eq!(LiveCommand::parse(&amf(vec![s("releaseStream")]), 0), None);
        // The refusal of another publish fits one reply chunk.
        assert!(reply::command(
            1,
            &[
                s("onStatus"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                reply_status("error", BAD_NAME, "one publish per connection"),
            ],
        )
        .is_some());
        assert_eq!(LiveCommand::parse(&[0xFF, 0, 1], 0), None);

        let mut props = std::collections::HashMap::new();
        props.insert("width".to_owned(), Amf0Value::Number(1280.0));
        props.insert("videocodecid".to_owned(), Amf0Value::Number(7.0));
        props.insert("stereo".to_owned(), Amf0Value::Boolean(true));
        let data = amf(vec![
            s("@setDataFrame"),
            s("onMetaData"),
            Amf0Value::Object(props.clone()),
        ]);
        let m = metadata(&data).expect("metadata");
        assert_eq!(m.video_width, Some(1280));
        assert_eq!(m.video_codec_id, Some(7));
        assert_eq!(m.audio_is_stereo, Some(true));
        assert!(metadata(&amf(vec![s("onMetaData"), Amf0Value::Object(props)])).is_none());
        assert!(metadata(&[1, 2, 3]).is_none());
    }

    #[test]
    fn a_panic_in_a_parser_becomes_an_error() {
        let r: Result<(), _> = guarded("test parser", || panic!("boom"));
        assert!(matches!(
            r,
            Err(ConnectionError::ParserPanic("test parser"))
        ));
    }
}
