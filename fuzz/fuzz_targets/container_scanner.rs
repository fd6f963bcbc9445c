//! What a browser's WebSocket binary frames feed: the WebM / fragmented-MP4 scanner
//! (`ingest/src/container.rs`, `Scanner::push` then `finish`) with the blobs cut anywhere and
//! small bounds, and the container relay (`ingest/src/container_relay.rs`) it feeds, with
//! subscribers joining early and late.
//!
//! Input: `[flags][n][n × u16 blob sizes, big-endian][bytes...]`; the bytes are pushed in
//! blobs of those sizes in turn (0: the rest at once).
//! - `flags & 0x03`: header bound (1 MiB default, 4096, 256, 64 bytes).
//! - `flags & 0x0c`: held-back bound (4 MiB default, 4096, 256, 32 bytes).
//! - `flags & 0x10`: a subscriber joins before the first blob; `0x20`: one joins midway.
//! - `flags & 0x40`: subscriber queues bounded at 4096 bytes (else 32 MiB).
//!
//! Checked (the module's promises): the concatenation of every output is exactly the input
//! (or a prefix of it, up to an error); one header, before any media; after `Degraded` every
//! piece is a start point; before it, every start point is at a cluster (WebM) or a fragment
//! box (MP4); the bytes held back stay within the bounds; a relay subscriber's bytes are the
//! header followed by media from a start point.
#![no_main]

use bytes::Bytes;
use contract::StreamId;
use futures::StreamExt;
use ingest::container::{Format, Output, Scanner, DEFAULT_MAX_HEADER, DEFAULT_MAX_PENDING};
use ingest::container_relay::{ContainerRelay, ContainerRelayConfig};
use libfuzzer_sys::fuzz_target;
use vstream_fuzz::paused_runtime;

const CLUSTER: [u8; 4] = [0x1F, 0x43, 0xB6, 0x75];
/// The longest element / box head the scanner may hold back while reading it.
const MAX_HEAD: usize = 16;

fuzz_target!(|data: &[u8]| {
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n);
    let Some(size_bytes) = rest.get(..2 * n) else {
        return;
    };
    let input = &rest[2 * n..];
    let sizes: Vec<usize> = size_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])))
        .collect();
    let max_header = [DEFAULT_MAX_HEADER, 4096, 256, 64][usize::from(flags & 0x03)];
    let max_pending = [DEFAULT_MAX_PENDING, 4096, 256, 32][usize::from((flags >> 2) & 0x03)];
    let early = flags & 0x10 != 0;
    let midway = flags & 0x20 != 0;
    let queue_max_bytes = if flags & 0x40 != 0 { 4096 } else { 32 << 20 };

    let mut blobs = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) if s > 0 => s,
            _ => input.len() - at,
        };
        let end = (at + size).min(input.len());
        blobs.push(Bytes::copy_from_slice(&input[at..end]));
        at = end;
        i += 1;
    }

    let rt = paused_runtime();
    rt.block_on(async move {
        let relay = ContainerRelay::new(
            StreamId::generate(),
            ContainerRelayConfig {
                gop_cache_max_bytes: 64 * 1024,
                queue_max_bytes,
            },
        );
        let mut subscribers = Vec::new();
        if early {
            subscribers.extend(relay.subscribe());
        }
        let mut scanner = Scanner::new(max_header, max_pending);
        let mut pushed: Vec<u8> = Vec::new();
        let mut emitted: Vec<u8> = Vec::new();
        let mut header: Option<(Format, Bytes)> = None;
        let mut media_seen = false;
        let mut degraded = false;
        let mut starts: Vec<Bytes> = Vec::new();
        let mut failed = false;
        let half = blobs.len() / 2;
        for (i, blob) in blobs.into_iter().enumerate() {
            if midway && i == half {
                subscribers.extend(relay.subscribe());
            }
            pushed.extend_from_slice(&blob);
            let outputs = match scanner.push(blob) {
                Ok(outputs) => outputs,
                Err(_) => {
                    failed = true;
                    break;
                }
            };
            for output in outputs {
                check_output(
                    &output,
                    &mut header,
                    &mut media_seen,
                    &mut degraded,
                    &mut emitted,
                    &mut starts,
                );
                feed(&relay, output);
            }
            // What is held back is bounded (header bound while collecting it, held-back bound
            // after), give or take one element head being read.
            let held = pushed.len() - emitted.len();
            if header.is_some() || degraded {
                assert!(
                    held <= max_pending + MAX_HEAD,
                    "{held} bytes held back (bound {max_pending})"
                );
            } else {
                assert!(
                    held <= max_header,
                    "{held} header bytes held (bound {max_header})"
                );
            }
        }
        if !failed {
            for output in scanner.finish() {
                check_output(
                    &output,
                    &mut header,
                    &mut media_seen,
                    &mut degraded,
                    &mut emitted,
                    &mut starts,
                );
                feed(&relay, output);
            }
        }
        assert!(
            pushed.starts_with(&emitted),
            "the outputs are not the input ({} bytes out of {})",
            emitted.len(),
            pushed.len()
        );
        if !failed && header.is_some() {
            assert_eq!(emitted.len(), pushed.len(), "bytes lost after the header");
        }
        if header.is_none() {
            assert!(emitted.is_empty(), "media before any header");
        }

        relay.close();
        for subscriber in subscribers {
            let got: Vec<Bytes> = subscriber.collect().await;
            let got = got.concat();
            if got.is_empty() {
                continue;
            }
            let (_, header) = header.as_ref().expect("media relayed without a header");
            assert!(
                got.starts_with(header),
                "a subscriber's bytes do not start with the header"
            );
            let media = &got[header.len()..];
            assert!(
                starts.iter().any(|s| media.starts_with(s)),
                "a subscriber's media does not begin at a start point"
            );
        }
    });
});

fn check_output(
    output: &Output,
    header: &mut Option<(Format, Bytes)>,
    media_seen: &mut bool,
    degraded: &mut bool,
    emitted: &mut Vec<u8>,
    starts: &mut Vec<Bytes>,
) {
    match output {
        Output::Header { format, bytes, .. } => {
            assert!(header.is_none(), "a second header");
            assert!(!*media_seen, "a header after media");
            assert!(emitted.is_empty());
            match format {
                Format::WebM => assert!(bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])),
                Format::Mp4 => assert_eq!(bytes.get(4..8), Some(&b"ftyp"[..])),
            }
            *header = Some((*format, bytes.clone()));
            emitted.extend_from_slice(bytes);
        }
        Output::Media { bytes, start } => {
            let (format, _) = header.as_ref().expect("media before the header");
            assert!(!bytes.is_empty(), "an empty media piece");
            if *degraded {
                assert!(*start, "after Degraded every piece is a start point");
            } else if *start {
                match format {
                    Format::WebM => assert!(
                        bytes.starts_with(&CLUSTER),
                        "a WebM start point that is not a cluster: {:02x?}",
                        &bytes[..bytes.len().min(8)]
                    ),
                    Format::Mp4 => assert!(
                        matches!(
                            bytes.get(4..8),
                            Some(b"moof" | b"styp" | b"sidx" | b"prft" | b"emsg")
                        ),
                        "an MP4 start point that is not a fragment box: {:02x?}",
                        &bytes[..bytes.len().min(8)]
                    ),
                }
            }
            if *start {
                starts.push(bytes.clone());
            }
            *media_seen = true;
            emitted.extend_from_slice(bytes);
        }
        Output::Degraded(_) => {
            assert!(
                header.is_some(),
                "Degraded before the header (must be an error)"
            );
            assert!(!*degraded, "Degraded twice");
            *degraded = true;
        }
    }
}

fn feed(relay: &ContainerRelay, output: Output) {
    match output {
        Output::Header { format, bytes, .. } => relay.set_header(format, bytes),
        Output::Media { bytes, start } => relay.push(bytes, start),
        Output::Degraded(_) => {}
    }
}
