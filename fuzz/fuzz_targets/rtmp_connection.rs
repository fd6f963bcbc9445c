//! The RTMP input path as a publisher drives it: the ingest's real connection handler
//! (handshake, `rml_rtmp` chunk stream and AMF0 commands, the hand-made command replies, the
//! publish decision, the FLV relay) over an in-memory socket, with a coordinator stub.
//!
//! Input: `[mode][split][bytes...]`.
//! - `mode & 0x07`: the coordinator's answer ([`Answer::from_bits`]).
//! - `mode & 0x08`: the harness first completes a valid handshake as a client, so `bytes` are
//!   chunks (connect, publish, media...); otherwise `bytes` start with the handshake.
//! - `mode & 0x10`: an encoder subscribes to the stream when it is granted; what it receives
//!   must be well-formed FLV starting at a keyframe.
//! - `mode & 0x20`: after the bytes, the coordinator kills the channel (instead of the peer
//!   closing its side).
//! - `split`: the bytes arrive in reads of `16 * split` bytes (0: one read), each taken in
//!   by the handler before the next.
//!
//! Checked: nothing panics outside `rml_rtmp` (whose panics the handler contains), the
//! connection ends (time is paused, so every timeout elapses), each granted publish is
//! reported ended exactly once, and the channel is free afterwards.
#![no_main]

use std::net::SocketAddr;

use contract::control::IngestCommand;
use futures::StreamExt;
use ingest::{Ingest, IngestConfig};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vstream_fuzz::{
    check_relayed_flv, contain_panics_of, debug, paused_runtime, split, Answer, StubControl,
};

/// S0 + S1 + S2.
const SERVER_HANDSHAKE_LEN: usize = 1 + 1536 + 1536;

fuzz_target!(|data: &[u8]| {
    contain_panics_of(&["rml_rtmp", "rml_amf0"]);
    debug();
    let [mode, split_size, bytes @ ..] = data else {
        return;
    };
    let answer = Answer::from_bits(mode & 0x07);
    let handshake_first = mode & 0x08 != 0;
    let subscribe = mode & 0x10 != 0;
    let kill_after = mode & 0x20 != 0;
    let pieces = split(bytes, &[*split_size]);

    let control = StubControl::new(answer);
    let rt = paused_runtime();
    rt.block_on(async {
        let ingest = Ingest::new(IngestConfig::default(), control.clone());
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = ([192, 0, 2, 7], 50_000).into();
        let kill = CancellationToken::new();
        let done = CancellationToken::new();

        let connection = {
            let ingest = ingest.clone();
            let done = done.clone();
            async move {
                ingest::fuzzing::rtmp_connection(&ingest, server, peer, kill).await;
                done.cancel();
            }
        };

        let publisher = {
            let ingest = ingest.clone();
            let control = control.clone();
            async move {
                let (mut rd, mut wr) = tokio::io::split(client);
                if handshake_first && !client_handshake(&mut rd, &mut wr).await {
                    return;
                }
                // The server's output is read (and dropped) all along, as a client would.
                let drain = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = rd.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
                for piece in pieces {
                    if wr.write_all(piece).await.is_err() {
                        break;
                    }
                    // The handler takes in each read before the next one arrives (it answers
                    // `connect` before `rml_rtmp` sees what follows, as a client that waits
                    // for the answers would have it).
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                if kill_after {
                    // Let the handler take in what was sent, then the coordinator's kill.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    for request in control.publishes() {
                        ingest.handle_command(IngestCommand::Kill {
                            channel: request.channel,
                            stream_id: None,
                        });
                    }
                }
                let _ = wr.shutdown().await;
                let _ = drain.await;
            }
        };

        let encoder = {
            let ingest = ingest.clone();
            let control = control.clone();
            let done = done.clone();
            async move {
                if !subscribe {
                    return;
                }
                tokio::select! {
                    _ = control.on_grant.notified() => {}
                    _ = done.cancelled() => return,
                }
                let Some(stream_id) = control.granted().into_iter().next() else {
                    return;
                };
                let Ok(media) = ingest.open_media(&stream_id) else {
                    return;
                };
                let chunks: Vec<bytes::Bytes> = media.collect().await;
                let flv = chunks.concat();
                if debug() {
                    eprintln!("encoder received {} bytes of FLV", flv.len());
                }
                check_relayed_flv(&flv);
            }
        };

        tokio::join!(connection, publisher, encoder);
        // Ends reported from spawned tasks (a guard dropped on a panic path) get their turn.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
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

/// Completes the handshake as an RTMP client (C0+C1, then C2 from S0+S1+S2).
async fn client_handshake(
    rd: &mut tokio::io::ReadHalf<tokio::io::DuplexStream>,
    wr: &mut tokio::io::WriteHalf<tokio::io::DuplexStream>,
) -> bool {
    let mut handshake = Handshake::new(PeerType::Client);
    let Ok(c0c1) = handshake.generate_outbound_p0_and_p1() else {
        return false;
    };
    if wr.write_all(&c0c1).await.is_err() {
        return false;
    }
    let mut s = vec![0u8; SERVER_HANDSHAKE_LEN];
    if rd.read_exact(&mut s).await.is_err() {
        return false;
    }
    match handshake.process_bytes(&s) {
        Ok(HandshakeProcessResult::Completed { response_bytes, .. })
        | Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
            wr.write_all(&response_bytes).await.is_ok()
        }
        Err(_) => false,
    }
}
