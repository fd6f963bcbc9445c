//! The ingest's own RTMP chunk reader (`ingest/src/rtmp/chunks.rs`), which parses a live
//! publish's chunks instead of `rml_rtmp` once the publish is accepted.
//!
//! Input: `[mode][rest...]`. An even `mode` is raw bytes, `rest` = `[n][n × u16 BE read
//! sizes][bytes...]`; an odd one is serialized messages, `rest` decoded with `arbitrary`.
//!
//! - Serialized: messages (any type, message stream, timestamp, size; compressed or full
//!   headers) and chunk size changes written by `rml_rtmp`'s `ChunkSerializer` (what the
//!   reader was written against: ffmpeg and OBS write the same format), read in reads of any
//!   size. The reader must give back exactly the messages written, in order, without error.
//! - Raw: any bytes, in reads of any size. The reader must not panic, and what it gives
//!   (messages and error) must not depend on how the bytes are cut into reads.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use ingest::fuzzing::{rtmp_chunk_reader, ChunkReadout};
use libfuzzer_sys::fuzz_target;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

#[derive(Debug, Arbitrary)]
enum Op {
    Message {
        type_id: u8,
        stream_id: u8,
        timestamp: u32,
        len: u16,
        fill: u8,
        full_header: bool,
    },
    ChunkSize(u16),
}

#[derive(Debug, Arbitrary)]
struct Serialized {
    ops: Vec<Op>,
    reads: Vec<u16>,
}

enum Input {
    Serialized(Serialized),
    Raw { bytes: Vec<u8>, reads: Vec<u16> },
}

impl Input {
    fn parse(data: &[u8]) -> Option<Self> {
        let (&mode, rest) = data.split_first()?;
        if mode % 2 == 1 {
            return Serialized::arbitrary_take_rest(arbitrary::Unstructured::new(rest))
                .ok()
                .map(Input::Serialized);
        }
        let (&n, rest) = rest.split_first()?;
        let (sizes, bytes) = rest.split_at_checked(2 * usize::from(n))?;
        let reads = sizes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        Some(Input::Raw {
            bytes: bytes.to_vec(),
            reads,
        })
    }
}

/// `data` cut into reads of the sizes in `reads`, in turn (0 or none: the rest at once).
fn cut<'a>(data: &'a [u8], reads: &[u16]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let size = match reads.get(i % reads.len().max(1)) {
            Some(&n) if n > 0 => usize::from(n),
            _ => data.len() - at,
        };
        let end = (at + size).min(data.len());
        out.push(&data[at..end]);
        at = end;
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| match Input::parse(data) {
    None => {}
    Some(Input::Serialized(Serialized { ops, reads })) => {
        let mut serializer = ChunkSerializer::new();
        let mut chunk_size = 128;
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for op in ops {
            match op {
                Op::Message {
                    type_id,
                    stream_id,
                    timestamp,
                    len,
                    fill,
                    full_header,
                } => {
                    // Set chunk size, abort and window acknowledgement size on stream 0 change
                    // how chunks are read: they are written with `ChunkSize` only.
                    let type_id = if stream_id == 0 && matches!(type_id, 1 | 2 | 5) {
                        9
                    } else {
                        type_id
                    };
                    // rml_rtmp writes nothing for an empty message (no chunk at all).
                    let data: Vec<u8> = (0..usize::from(len.max(1)))
                        .map(|i| fill.wrapping_add(i as u8))
                        .collect();
                    let message = MessagePayload {
                        timestamp: RtmpTimestamp::new(timestamp),
                        message_stream_id: u32::from(stream_id),
                        type_id,
                        data: Bytes::from(data.clone()),
                    };
                    // With `force_uncompressed`, rml_rtmp gives every chunk of the message a full
                    // header, continuations included (encoders use type 3 headers for those).
                    let full_header = full_header && data.len() <= chunk_size;
                    let Ok(packet) = serializer.serialize(&message, full_header, false) else {
                        return;
                    };
                    wire.extend_from_slice(&packet.bytes);
                    expected.push((type_id, u32::from(stream_id), timestamp, data));
                }
                Op::ChunkSize(size) => {
                    // At least 4 bytes: rml_rtmp writes this message with full headers, so the
                    // next change must fit in one chunk (see above).
                    let size = u32::from(size.max(4));
                    chunk_size = size as usize;
                    let Ok(packet) = serializer.set_max_chunk_size(size, RtmpTimestamp::new(0))
                    else {
                        return;
                    };
                    wire.extend_from_slice(&packet.bytes);
                    expected.push((1, 0, 0, size.to_be_bytes().to_vec()));
                }
            }
        }
        let got = rtmp_chunk_reader(cut(&wire, &reads));
        if vstream_fuzz::debug() {
            eprintln!("wire {:02x?}\nexpected {expected:?}\ngot {got:?}", wire);
        }
        assert_eq!(got.error, None, "an error on what rml_rtmp wrote");
        assert_eq!(got.messages.len(), expected.len(), "message count");
        for (i, (g, e)) in got.messages.iter().zip(&expected).enumerate() {
            assert_eq!(
                (g.0, g.1, g.2, g.3.len()),
                (e.0, e.1, e.2, e.3.len()),
                "message {i}: (type, stream, timestamp, length)"
            );
            assert!(g.3 == e.3, "message {i}: payload differs");
        }
    }
    Some(Input::Raw { bytes, reads }) => {
        let whole: ChunkReadout = rtmp_chunk_reader([&bytes[..]]);
        let pieces = rtmp_chunk_reader(cut(&bytes, &reads));
        assert_eq!(
            (pieces.messages.len(), &pieces.error),
            (whole.messages.len(), &whole.error),
            "the reads' boundaries changed the result"
        );
        assert!(
            pieces.messages == whole.messages,
            "the reads' boundaries changed a message"
        );
    }
});
