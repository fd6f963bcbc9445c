//! A lean RTMP chunk reader for the live part of a publish.
//!
//! `rml_rtmp`'s `ServerSession` runs the connection up to the accepted publish (handshake,
//! `connect`, `createStream`, `publish`, the replies). Once the stream is live, nearly every
//! message is audio or video, and the session's path for them (a buffer copy and an
//! allocation per message, a map update per chunk, two `String` clones and two `Vec`s per
//! message) was the largest part of the relay's own CPU. This reader takes over from then:
//! it parses the chunks itself and hands each complete message to the connection as a slice,
//! without allocating per message.
//!
//! To take over mid-stream it must know the chunk streams' state, so it reads every byte of
//! the connection from the first one (after the handshake), alongside the session, and keeps
//! the state only (what it assembles before the switch is dropped). If it finds the input
//! malformed before the switch it is marked broken and the connection stays on the session.
//!
//! Bounds: a chunk is at most [`MAX_CHUNK_SIZE`], a message at most 16 MiB (its 24-bit
//! length), messages being assembled at once at most [`MAX_IN_PROGRESS`] bytes in total, and
//! at most [`MAX_CHUNK_STREAMS`] chunk streams.

/// Largest chunk size a peer may announce (nginx-rtmp and SRS use far less).
pub(crate) const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// Bytes of messages being assembled at once (announced lengths), over all chunk streams.
pub(crate) const MAX_IN_PROGRESS: usize = 32 * 1024 * 1024;
/// Chunk streams a peer may use.
pub(crate) const MAX_CHUNK_STREAMS: usize = 64;
/// An assembly buffer larger than this is freed after its message instead of kept.
const KEEP_BUFFER: usize = 1024 * 1024;

pub(crate) const SET_CHUNK_SIZE: u8 = 1;
pub(crate) const ABORT: u8 = 2;
pub(crate) const WINDOW_ACK_SIZE: u8 = 5;

/// Why the input is not valid RTMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("chunk size {0} out of range")]
    ChunkSize(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyStreams,
    #[error("more than {MAX_IN_PROGRESS} bytes of messages in progress")]
    TooMuchInProgress,
    #[error("a new message header in the middle of a message on chunk stream {0}")]
    HeaderMidMessage(u32),
    #[error("malformed control message (type {0})")]
    Control(u8),
}

/// One complete message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Default)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    /// Added to the timestamp at the start of a message with a type 1, 2 or 3 header.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last type 0-2 header carried an extended timestamp (so type 3 headers do too).
    extended: bool,
    /// A message is being assembled (`payload` holds its first bytes).
    assembling: bool,
    payload: Vec<u8>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    chunk_size: usize,
    streams: Vec<ChunkStream>,
    /// The start of a chunk that is not complete yet.
    partial: Vec<u8>,
    in_progress: usize,
    /// Window acknowledgement size the peer asked for (0: none).
    peer_window: u32,
    received: u32,
    unacked: u64,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader {
            chunk_size: 128,
            streams: Vec::new(),
            partial: Vec::new(),
            in_progress: 0,
            peer_window: 0,
            received: 0,
            unacked: 0,
        }
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

impl ChunkReader {
    /// Parses `input` (what follows the bytes given before) and calls `on_message` with each
    /// complete message. Control messages that shape the chunk stream (set chunk size,
    /// abort, window acknowledgement size) are applied here and passed on too.
    pub fn push(
        &mut self,
        input: &[u8],
        mut on_message: impl FnMut(Message<'_>),
    ) -> Result<(), ChunkError> {
        self.received = self.received.wrapping_add(input.len() as u32);
        self.unacked += input.len() as u64;
        if self.partial.is_empty() {
            let used = self.parse(input, &mut on_message)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            let mut data = std::mem::take(&mut self.partial);
            data.extend_from_slice(input);
            let used = self.parse(&data, &mut on_message);
            let used = used?;
            data.drain(..used);
            self.partial = data;
        }
        Ok(())
    }

    /// The sequence number to acknowledge, when the peer's window has been received since
    /// the last acknowledgement.
    pub fn take_ack(&mut self) -> Option<u32> {
        if self.peer_window > 0 && self.unacked >= u64::from(self.peer_window) {
            self.unacked = 0;
            Some(self.received)
        } else {
            None
        }
    }

    /// Parses whole chunks from `data`; returns how many bytes were used.
    fn parse(
        &mut self,
        data: &[u8],
        on_message: &mut impl FnMut(Message<'_>),
    ) -> Result<usize, ChunkError> {
        let mut at = 0;
        while let Some(used) = self.chunk(&data[at..], on_message)? {
            at += used;
        }
        Ok(at)
    }

    /// One chunk from the start of `data`: `None` if it is not complete.
    fn chunk(
        &mut self,
        data: &[u8],
        on_message: &mut impl FnMut(Message<'_>),
    ) -> Result<Option<usize>, ChunkError> {
        let Some(&b0) = data.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut at) = match b0 & 0x3F {
            0 => match data.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match data.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(h) = data.get(at..at + header_len) else {
            return Ok(None);
        };
        at += header_len;
        let index = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None => {
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooManyStreams);
                }
                self.streams.push(ChunkStream {
                    csid,
                    ..ChunkStream::default()
                });
                self.streams.len() - 1
            }
        };
        let st = &self.streams[index];
        let field = if fmt < 3 { u24(&h[0..3]) } else { 0 };
        let extended = if fmt < 3 {
            field == 0xFF_FFFF
        } else {
            st.extended
        };
        let mut time = field;
        if extended {
            let Some(e) = data.get(at..at + 4) else {
                return Ok(None);
            };
            time = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            at += 4;
        }
        let length = if fmt < 2 { u24(&h[3..6]) } else { st.length };
        let type_id = if fmt < 2 { h[6] } else { st.type_id };
        let stream_id = if fmt == 0 {
            u32::from_le_bytes([h[7], h[8], h[9], h[10]])
        } else {
            st.stream_id
        };
        if st.assembling && fmt != 3 {
            return Err(ChunkError::HeaderMidMessage(csid));
        }
        let received = if st.assembling { st.payload.len() } else { 0 };
        let chunk_len = (length as usize - received).min(self.chunk_size);
        let Some(chunk) = data.get(at..at + chunk_len) else {
            return Ok(None);
        };
        at += chunk_len;
        // The chunk is complete: apply its header.
        let starting = !self.streams[index].assembling;
        if starting && length as usize > MAX_IN_PROGRESS.saturating_sub(self.in_progress) {
            return Err(ChunkError::TooMuchInProgress);
        }
        let st = &mut self.streams[index];
        if fmt < 3 {
            st.extended = extended;
        }
        match fmt {
            0 => {
                // "If a Type 3 chunk follows a Type 0 chunk, then the timestamp delta for this
                // Type 3 chunk is the same as the timestamp of the Type 0 chunk" (RTMP 1.0,
                // 5.3.1.2.4), as rml_rtmp and ffmpeg read and write it.
                st.delta = time;
                st.timestamp = time;
            }
            1 | 2 => st.delta = time,
            _ => {}
        }
        if starting && fmt != 0 {
            st.timestamp = st.timestamp.wrapping_add(st.delta);
        }
        st.length = length;
        st.type_id = type_id;
        st.stream_id = stream_id;
        if starting && chunk_len == length as usize {
            // A message in one chunk: no copy.
            let message = Message {
                type_id,
                stream_id,
                timestamp: st.timestamp,
                payload: chunk,
            };
            self.control(message)?;
            on_message(message);
            return Ok(Some(at));
        }
        if starting {
            st.assembling = true;
            st.payload.clear();
            st.payload.reserve(length as usize);
            self.in_progress += length as usize;
        }
        st.payload.extend_from_slice(chunk);
        if st.payload.len() < length as usize {
            return Ok(Some(at));
        }
        st.assembling = false;
        self.in_progress -= length as usize;
        let payload = std::mem::take(&mut self.streams[index].payload);
        let st = &self.streams[index];
        let message = Message {
            type_id,
            stream_id,
            timestamp: st.timestamp,
            payload: &payload,
        };
        let applied = self.control(message);
        on_message(message);
        if payload.capacity() <= KEEP_BUFFER {
            self.streams[index].payload = payload;
        }
        applied?;
        Ok(Some(at))
    }

    /// Applies the control messages that change how chunks are read.
    fn control(&mut self, message: Message<'_>) -> Result<(), ChunkError> {
        if message.stream_id != 0 && message.type_id <= WINDOW_ACK_SIZE {
            return Ok(());
        }
        let value = || {
            message
                .payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(ChunkError::Control(message.type_id))
        };
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size = value()? & 0x7FFF_FFFF;
                if size == 0 || size as usize > MAX_CHUNK_SIZE {
                    return Err(ChunkError::ChunkSize(size));
                }
                self.chunk_size = size as usize;
            }
            ABORT => {
                let csid = value()?;
                if let Some(st) = self.streams.iter_mut().find(|s| s.csid == csid) {
                    if st.assembling {
                        st.assembling = false;
                        self.in_progress -= st.length as usize;
                        st.payload.clear();
                    }
                }
            }
            WINDOW_ACK_SIZE => self.peer_window = value()?,
            _ => {}
        }
        Ok(())
    }
}

/// An acknowledgement of `sequence` bytes: one chunk with a full header on chunk stream 2.
pub(crate) fn acknowledgement(sequence: u32) -> [u8; 16] {
    let mut chunk = [0u8; 16];
    chunk[0] = 2;
    chunk[6] = 4; // length
    chunk[7] = 3; // Acknowledgement
    chunk[12..16].copy_from_slice(&sequence.to_be_bytes());
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    type Owned = (u8, u32, u32, Vec<u8>);

    fn read_all(reader: &mut ChunkReader, input: &[u8], step: usize) -> Vec<Owned> {
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            reader
                .push(piece, |m| {
                    out.push((m.type_id, m.stream_id, m.timestamp, m.payload.to_vec()))
                })
                .expect("valid input");
        }
        out
    }

    fn payload(type_id: u8, stream_id: u32, ts: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            message_stream_id: stream_id,
            type_id,
            data: Bytes::from(data),
        }
    }

    /// Messages serialized by rml_rtmp (compressed headers, chunk size changes, extended
    /// timestamps) read back the same, whatever the read boundaries.
    #[test]
    fn reads_what_rml_rtmp_writes() {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let add = |s: &mut ChunkSerializer,
                   m: MessagePayload,
                   wire: &mut Vec<u8>,
                   expected: &mut Vec<Owned>| {
            expected.push((
                m.type_id,
                m.message_stream_id,
                m.timestamp.value,
                m.data.to_vec(),
            ));
            wire.extend(s.serialize(&m, false, false).expect("serialize").bytes);
        };
        add(
            &mut serializer,
            payload(20, 0, 0, vec![2; 300]),
            &mut wire,
            &mut expected,
        );
        // Chunk size 4096 from here on (the message itself travels at the old size).
        let packet = serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .expect("chunk size");
        wire.extend(packet.bytes);
        expected.push((1, 0, 0, 4096u32.to_be_bytes().to_vec()));
        for i in 0..40u32 {
            let video: Vec<u8> = (0..(9000 + i * 37)).map(|b| (b % 251) as u8).collect();
            add(
                &mut serializer,
                payload(9, 1, i * 33, video),
                &mut wire,
                &mut expected,
            );
            add(
                &mut serializer,
                payload(8, 1, i * 23, vec![0xAF, 1, i as u8]),
                &mut wire,
                &mut expected,
            );
        }
        // Extended timestamps.
        for ts in [0x00FF_FFFE, 0x0100_0000, 0x0100_0021] {
            add(
                &mut serializer,
                payload(9, 1, ts, vec![0x27; 5000]),
                &mut wire,
                &mut expected,
            );
        }
        for step in [1, 7, 128, 4096, 65536] {
            let mut reader = ChunkReader::default();
            assert_eq!(read_all(&mut reader, &wire, step), expected, "step {step}");
        }
    }

    /// Found by fuzzing against rml_rtmp's serializer: a message with a type 3 header right
    /// after a type 0 one is at the type 0's timestamp plus that timestamp, not at the same
    /// time (ffmpeg writes this when the second delta equals the first timestamp).
    #[test]
    fn a_type_3_message_after_a_type_0_one_repeats_its_timestamp_as_delta() {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        for ts in [40, 80, 120] {
            wire.extend(
                serializer
                    .serialize(&payload(8, 1, ts, vec![0xAF, 1, 7]), false, false)
                    .expect("serialize")
                    .bytes,
            );
        }
        // 12 + 3 bytes, then 1 + 3 bytes twice.
        assert_eq!(wire.len(), 23);
        assert_eq!(wire[0] >> 6, 0, "a type 0 header first");
        assert_eq!(
            (wire[15] >> 6, wire[19] >> 6),
            (3, 3),
            "then type 3 headers"
        );
        let mut reader = ChunkReader::default();
        let times: Vec<u32> = read_all(&mut reader, &wire, wire.len())
            .iter()
            .map(|m| m.2)
            .collect();
        assert_eq!(times, [40, 80, 120]);
        // And what rml_rtmp's own reader (the session's, before the switch) makes of it.
        let mut deserializer = rml_rtmp::chunk_io::ChunkDeserializer::new();
        let mut rml_times = Vec::new();
        let mut input = &wire[..];
        while let Ok(Some(message)) = deserializer.get_next_message(input) {
            rml_times.push(message.timestamp.value);
            input = &[];
        }
        assert_eq!(rml_times, [40, 80, 120]);
    }

    #[test]
    fn acknowledges_the_window_the_peer_asked_for() {
        let mut serializer = ChunkSerializer::new();
        let mut wire = serializer
            .serialize(
                &payload(5, 0, 0, 1000u32.to_be_bytes().to_vec()),
                false,
                false,
            )
            .expect("serialize")
            .bytes;
        wire.extend(
            serializer
                .serialize(&payload(9, 1, 0, vec![0; 2000]), false, false)
                .expect("serialize")
                .bytes,
        );
        let mut reader = ChunkReader::default();
        assert_eq!(reader.take_ack(), None);
        read_all(&mut reader, &wire, 100_000);
        assert_eq!(reader.take_ack(), Some(wire.len() as u32));
        assert_eq!(reader.take_ack(), None);
        let ack = acknowledgement(wire.len() as u32);
        assert_eq!(&ack[..8], &[2, 0, 0, 0, 0, 0, 4, 3]);
    }

    #[test]
    fn bad_input_is_refused_and_bounded() {
        // Chunk size 0.
        let mut reader = ChunkReader::default();
        let wire = [2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(reader.push(&wire, |_| {}), Err(ChunkError::ChunkSize(0)));
        // A type 0 header where a continuation was due.
        let mut reader = ChunkReader::default();
        let mut wire = vec![4, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0];
        wire.extend([0u8; 128]);
        wire.extend([4, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 7]);
        assert_eq!(
            reader.push(&wire, |_| {}),
            Err(ChunkError::HeaderMidMessage(4))
        );
        // Many chunk streams, each starting a 16 MiB message.
        let mut reader = ChunkReader::default();
        let mut result = Ok(());
        for csid in 3..63u8 {
            let header = [csid, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
            let mut chunk = header.to_vec();
            chunk.extend([0u8; 128]);
            result = reader.push(&chunk, |_| {});
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooMuchInProgress));
        // Too many chunk streams.
        let mut reader = ChunkReader::default();
        let mut result = Ok(());
        for csid in 0..=255u8 {
            result = reader.push(&[0, csid, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0], |_| {});
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooManyStreams));
    }
}
