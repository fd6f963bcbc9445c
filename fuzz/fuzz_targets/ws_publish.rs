//! WebSocket publishing as a browser drives it (`ingest/src/ws.rs`): the real router served
//! over an in-memory connection, an upgrade of `GET /demo/key/publish`, then either a
//! sequence of messages (binary blobs, text such as the `h` heartbeat, pings, pongs, a close,
//! pauses that let heartbeats and the idle timeout fire) sent by a WebSocket client, or raw
//! bytes after the upgrade (what a broken or hostile client sends; tungstenite does the
//! framing, the read loop what follows from it). A small frame limit makes "frame too large"
//! reachable.
//!
//! Input: `[flags][bytes...]`.
//! - `flags & 0x07`: the coordinator's answer ([`Answer::from_bits`]).
//! - `flags & 0x08`: raw mode: `bytes` are written to the socket as they are.
//! - `flags & 0x10`: an encoder subscribes to the stream when it is granted.
//! - `flags & 0x20`: the coordinator kills the channel after the last message.
//!
//! Message mode: `bytes` is a list of `[op][len: u16 BE][payload: len bytes]`; `op % 7`:
//! binary, text, ping, pong, close, pause (`len` seconds), big binary (`len * 16` bytes).
//!
//! Checked: no panic; the connection ends (paused time); each granted publish is reported
//! ended exactly once; the channel is free afterwards; an encoder's stream ends.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Extension;
use contract::control::IngestCommand;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use ingest::ws::{WsConfig, WsServer};
use ingest::{Ingest, IngestConfig};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use vstream_fuzz::{debug, paused_runtime, Answer, StubControl};

const MAX_FRAME: usize = 16 * 1024;
const UPGRADE: &[u8] = b"GET /demo/key/publish HTTP/1.1\r\n\
Host: ingest\r\n\
Connection: Upgrade\r\n\
Upgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

enum Step {
    Send(Message),
    Pause(Duration),
}

fn steps(mut bytes: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    while let [op, a, b, rest @ ..] = bytes {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        let payload = &rest[..len.min(rest.len())];
        bytes = &rest[payload.len()..];
        steps.push(match op % 7 {
            0 => Step::Send(Message::binary(payload.to_vec())),
            1 => Step::Send(Message::text(String::from_utf8_lossy(payload).into_owned())),
            2 => Step::Send(Message::Ping(payload.to_vec().into())),
            3 => Step::Send(Message::Pong(payload.to_vec().into())),
            4 => Step::Send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(len as u16),
                reason: "".into(),
            }))),
            5 => Step::Pause(Duration::from_secs(len as u64 % 600)),
            _ => {
                let mut big = vec![0u8; len * 16];
                for (d, s) in big.iter_mut().zip(payload) {
                    *d = *s;
                }
                Step::Send(Message::binary(big))
            }
        });
    }
    steps
}

fuzz_target!(|data: &[u8]| {
    let [flags, bytes @ ..] = data else {
        return;
    };
    debug();
    let answer = Answer::from_bits(flags & 0x07);
    let raw = flags & 0x08 != 0;
    let subscribe = flags & 0x10 != 0;
    let kill_after = flags & 0x20 != 0;

    let control = StubControl::new(answer);
    let rt = paused_runtime();
    rt.block_on(async {
        let ingest = Ingest::new(IngestConfig::default(), control.clone());
        let ws = WsServer::new(
            ingest.clone(),
            WsConfig {
                max_frame_bytes: MAX_FRAME,
                max_header_bytes: 64 * 1024,
                queue_max_bytes: 256 * 1024,
                ..WsConfig::default()
            },
        );
        let peer: SocketAddr = ([192, 0, 2, 9], 50_001).into();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let app = ws.router().layer(Extension(ConnectInfo(peer)));
        let http = tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(server), TowerToHyperService::new(app))
                .await;
        });

        let publisher = async {
            if raw {
                raw_client(client, bytes).await;
            } else {
                message_client(client, steps(bytes)).await;
            }
            if kill_after {
                for request in control.publishes() {
                    ingest.handle_command(IngestCommand::Kill {
                        channel: request.channel,
                        stream_id: None,
                    });
                }
            }
        };
        let encoder = async {
            if !subscribe {
                return;
            }
            tokio::select! {
                _ = control.on_grant.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(3600)) => return,
            }
            let Some(stream_id) = control.granted().into_iter().next() else {
                return;
            };
            if let Ok(media) = ingest.open_media(&stream_id) {
                let got: Vec<bytes::Bytes> = media.collect().await;
                if debug() {
                    eprintln!("encoder received {} bytes", got.concat().len());
                }
            }
        };
        tokio::join!(publisher, encoder);
        let _ = http.await;
        // Every upgraded connection has ended its publish once this returns.
        ws.shutdown().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        if debug() {
            eprintln!("{}", control.summary());
        }
        control.assert_every_grant_ended_once();
        assert!(
            ingest.publishers().is_empty(),
            "a publisher is still registered after its connection ended"
        );
    });
});

/// A WebSocket client sending `steps`, reading everything the server sends meanwhile.
async fn message_client(io: DuplexStream, steps: Vec<Step>) {
    let Ok((socket, _response)) =
        tokio_tungstenite::client_async("ws://ingest/demo/key/publish", io).await
    else {
        return; // refused before the upgrade
    };
    let (mut sink, mut stream) = socket.split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    for step in steps {
        match step {
            Step::Send(message) => {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            Step::Pause(pause) => tokio::time::sleep(pause).await,
        }
    }
    let _ = sink.close().await;
    drop(sink);
    let _ = reader.await;
}

/// The upgrade by hand, then `bytes` as they are; the server's output is read and dropped.
async fn raw_client(io: DuplexStream, bytes: &[u8]) {
    let (mut rd, mut wr) = tokio::io::split(io);
    if wr.write_all(UPGRADE).await.is_err() {
        return;
    }
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    for piece in bytes.chunks(4096) {
        if wr.write_all(piece).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = wr.shutdown().await;
    let _ = reader.await;
}
