//! A light RTMP client on `rml_rtmp`'s sans-IO handshake and `ClientSession`: publishers that
//! replay the file's tags in real time (looping), and play consumers (for nginx-rtmp).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::media::{Checker, Kind, MediaFile, Position, RecvStats, SendStats};

const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
const READ_BUFFER: usize = 64 * 1024;

/// A connected RTMP client session.
pub struct Connection {
    socket: TcpStream,
    session: ClientSession,
    buf: Vec<u8>,
}

/// Splits session results into bytes to send and events.
fn split(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

impl Connection {
    /// TCP connect, handshake, `connect` to `app`. Returns once the connection is accepted.
    async fn open(addr: SocketAddr, app: &str) -> anyhow::Result<(Connection, Vec<u8>)> {
        let mut socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let _ = socket.set_nodelay(true);
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| anyhow::anyhow!("handshake: {e:?}"))?;
        socket.write_all(&c0c1).await?;
        let mut buf = vec![0u8; READ_BUFFER];
        let leftover = loop {
            let n = socket.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "the server closed during the handshake");
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| anyhow::anyhow!("handshake: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{addr}/{app}"));
        let (session, initial) =
            ClientSession::new(config).map_err(|e| anyhow::anyhow!("session: {e:?}"))?;
        let mut conn = Connection {
            socket,
            session,
            buf,
        };
        let mut out = Vec::new();
        split(initial, &mut out);
        let request = conn
            .session
            .request_connection(app.to_owned())
            .map_err(|e| anyhow::anyhow!("connect: {e:?}"))?;
        split(vec![request], &mut out);
        conn.socket.write_all(&out).await?;
        Ok((conn, leftover))
    }

    /// Reads until an event `done` accepts (or a refusal).
    async fn until(
        &mut self,
        mut input: Vec<u8>,
        mut on_event: impl FnMut(
            &mut ClientSession,
            ClientSessionEvent,
            &mut Vec<u8>,
        ) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        loop {
            let mut out = Vec::new();
            let mut done = false;
            if !input.is_empty() {
                let results = self
                    .session
                    .handle_input(&input)
                    .map_err(|e| anyhow::anyhow!("input: {e:?}"))?;
                for event in split(results, &mut out) {
                    if let ClientSessionEvent::ConnectionRequestRejected { description } = &event {
                        anyhow::bail!("connection refused: {description}");
                    }
                    if let ClientSessionEvent::UnhandleableOnStatusCode { code } = &event {
                        if code.contains("BadName")
                            || code.contains("BadConnection")
                            || code.contains("Failed")
                        {
                            anyhow::bail!("refused: {code}");
                        }
                    }
                    done |= on_event(&mut self.session, event, &mut out)?;
                }
            }
            if !out.is_empty() {
                self.socket.write_all(&out).await?;
            }
            if done {
                return Ok(());
            }
            let n = self.socket.read(&mut self.buf).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            input = self.buf[..n].to_vec();
        }
    }

    /// Feeds what the server sent and answers it (acknowledgements, pings).
    async fn answer(&mut self, n: usize) -> anyhow::Result<Vec<ClientSessionEvent>> {
        let results = self
            .session
            .handle_input(&self.buf[..n])
            .map_err(|e| anyhow::anyhow!("input: {e:?}"))?;
        let mut out = Vec::new();
        let events = split(results, &mut out);
        if !out.is_empty() {
            self.socket.write_all(&out).await?;
        }
        Ok(events)
    }
}

/// A publisher whose publish was accepted, sending nothing yet.
pub struct Publisher {
    conn: Connection,
}

impl Publisher {
    /// Connects to `app` and publishes `key` (`rtmp://addr/app/key`).
    pub async fn connect(addr: SocketAddr, app: &str, key: &str) -> anyhow::Result<Publisher> {
        let setup = async {
            let (mut conn, leftover) = Connection::open(addr, app).await?;
            let mut requested = false;
            conn.until(leftover, |session, event, out| match event {
                ClientSessionEvent::ConnectionRequestAccepted if !requested => {
                    requested = true;
                    let r = session
                        .request_publishing(key.to_owned(), PublishRequestType::Live)
                        .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
                    split(vec![r], out);
                    Ok(false)
                }
                ClientSessionEvent::PublishRequestAccepted => Ok(true),
                _ => Ok(false),
            })
            .await?;
            Ok::<_, anyhow::Error>(Publisher { conn })
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| anyhow::anyhow!("publish not accepted within {SETUP_TIMEOUT:?}"))?
    }

    /// Answers the server until `start` is cancelled, then sends metadata and the file's tags
    /// at their pace (first tag `offset` after the start), looping, until `stop`.
    pub async fn run(
        mut self,
        file: Arc<MediaFile>,
        start: CancellationToken,
        offset: Duration,
        stop: CancellationToken,
        stats: Arc<SendStats>,
        position: Arc<Position>,
    ) -> anyhow::Result<()> {
        // Idle: published, sending nothing.
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = start.cancelled() => break,
                read = self.conn.socket.read(&mut self.conn.buf) => {
                    let n = read?;
                    anyhow::ensure!(n > 0, "the server closed the connection");
                    self.conn.answer(n).await?;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(offset) => {}
        }
        let t0 = Instant::now();
        let meta = self
            .conn
            .session
            .publish_metadata(&file.metadata)
            .map_err(|e| anyhow::anyhow!("metadata: {e:?}"))?;
        let mut out = Vec::new();
        split(vec![meta], &mut out);
        self.conn.socket.write_all(&out).await?;
        let first_ts = file.tags.first().map_or(0, |t| t.ts);
        for round in 0u32.. {
            let base = round * file.loop_ms;
            for tag in file.tags.iter().filter(|t| round == 0 || !t.config) {
                let ts = base + tag.ts;
                let due = t0 + Duration::from_millis(u64::from(ts - first_ts));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep_until(due) => break,
                        read = self.conn.socket.read(&mut self.conn.buf) => {
                            let n = read?;
                            anyhow::ensure!(n > 0, "the server closed the connection");
                            self.conn.answer(n).await?;
                        }
                    }
                }
                let late = Instant::now().saturating_duration_since(due);
                let late_us = late.as_micros() as u64;
                stats.max_late_us.fetch_max(late_us, Ordering::Relaxed);
                if late > Duration::from_millis(100) {
                    stats.late_sends.fetch_add(1, Ordering::Relaxed);
                }
                let stamp = RtmpTimestamp::new(ts);
                let result = match tag.kind {
                    Kind::Video => {
                        self.conn
                            .session
                            .publish_video_data(tag.data.clone(), stamp, false)
                    }
                    Kind::Audio => {
                        self.conn
                            .session
                            .publish_audio_data(tag.data.clone(), stamp, false)
                    }
                }
                .map_err(|e| anyhow::anyhow!("media: {e:?}"))?;
                let ClientSessionResult::OutboundResponse(packet) = result else {
                    continue;
                };
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    written = self.conn.socket.write_all(&packet.bytes) => written?,
                }
                stats.tags.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(tag.data.len() as u64, Ordering::Relaxed);
                stats
                    .wire_bytes
                    .fetch_add(packet.bytes.len() as u64, Ordering::Relaxed);
                if tag.kind == Kind::Video {
                    position.sent_ts.store(u64::from(ts) + 1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

/// A play consumer whose play was accepted.
pub struct Player {
    conn: Connection,
    /// Media events that came with the acceptance.
    early: Vec<ClientSessionEvent>,
}

impl Player {
    /// Connects to `app` and plays `name`.
    pub async fn connect(addr: SocketAddr, app: &str, name: &str) -> anyhow::Result<Player> {
        let setup = async {
            let (mut conn, leftover) = Connection::open(addr, app).await?;
            let mut requested = false;
            let mut early = Vec::new();
            conn.until(leftover, |session, event, out| match event {
                ClientSessionEvent::ConnectionRequestAccepted if !requested => {
                    requested = true;
                    let r = session
                        .request_playback(name.to_owned())
                        .map_err(|e| anyhow::anyhow!("play: {e:?}"))?;
                    split(vec![r], out);
                    Ok(false)
                }
                ClientSessionEvent::PlaybackRequestAccepted => Ok(true),
                e @ (ClientSessionEvent::VideoDataReceived { .. }
                | ClientSessionEvent::AudioDataReceived { .. }) => {
                    early.push(e);
                    Ok(false)
                }
                _ => Ok(false),
            })
            .await?;
            Ok::<_, anyhow::Error>(Player { conn, early })
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| anyhow::anyhow!("play not accepted within {SETUP_TIMEOUT:?}"))?
    }

    /// Receives and checks media until `stop` (or the server ends the stream).
    pub async fn run(
        mut self,
        file: Arc<MediaFile>,
        stop: CancellationToken,
        stats: Arc<RecvStats>,
        position: Arc<Position>,
    ) -> anyhow::Result<()> {
        let mut checker = Checker::new(&file);
        let on = |event: ClientSessionEvent, checker: &mut Checker<'_>| match event {
            ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                checker.on_tag(Kind::Video, timestamp.value, &data, &stats, &position);
            }
            ClientSessionEvent::AudioDataReceived { timestamp, data } => {
                checker.on_tag(Kind::Audio, timestamp.value, &data, &stats, &position);
            }
            _ => {}
        };
        for event in std::mem::take(&mut self.early) {
            on(event, &mut checker);
        }
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                read = self.conn.socket.read(&mut self.conn.buf) => read?,
            };
            anyhow::ensure!(n > 0, "the server ended the stream");
            for event in self.conn.answer(n).await? {
                on(event, &mut checker);
            }
        }
    }
}
