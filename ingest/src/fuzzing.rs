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
