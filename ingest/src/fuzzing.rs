//! Entry points for the fuzz targets in `fuzz/`: not part of the crate's API.
//!
//! The RTMP connection handler is private to the crate (the accept loop owns it); this runs
//! one connection over any byte stream (an in-memory `tokio::io::duplex` in the fuzzer),
//! exactly as [`crate::Ingest::serve_rtmp`] runs it over a TCP socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::Ingest;

/// Runs one plain-RTMP publish connection from `peer` over `socket` until it ends (the peer
/// closes, an error, the idle timeout, or `kill`), including the report of a publish's end.
pub async fn rtmp_connection<S>(
    ingest: &Ingest,
    socket: S,
    peer: SocketAddr,
    kill: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let inner = Arc::clone(&ingest.inner);
    let conn_id = inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
    crate::rtmp::handle_connection(inner, socket, peer, conn_id, kill.clone(), kill).await;
}

/// What the lean RTMP chunk reader (the live part of a publish, `rtmp/chunks.rs`) made of
/// some input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkReadout {
    /// The complete messages, in order: (type ID, message stream ID, timestamp, payload).
    pub messages: Vec<(u8, u32, u32, Vec<u8>)>,
    /// The error that stopped the reader, if any.
    pub error: Option<String>,
}

/// Runs a fresh chunk reader over `reads`, one `push` each, up to the first error.
pub fn rtmp_chunk_reader<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> ChunkReadout {
    let mut reader = crate::rtmp::chunks::ChunkReader::default();
    let mut out = ChunkReadout::default();
    for read in reads {
        let pushed = reader.push(read, |m| {
            out.messages
                .push((m.type_id, m.stream_id, m.timestamp, m.payload.to_vec()));
        });
        if let Err(err) = pushed {
            out.error = Some(err.to_string());
            break;
        }
        let _ = reader.take_ack();
    }
    out
}
