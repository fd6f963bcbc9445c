//! Pure scanning of the byte streams browsers record with `MediaRecorder` (WebM / Matroska,
//! and fragmented MP4 on Safari), so that a stream can be relayed to decoders that join at any
//! time. No I/O.
//!
//! A browser sends its recording as a sequence of blobs whose boundaries fall anywhere (often,
//! but not always, at a cluster boundary). [`Scanner`] follows the container's top-level
//! structure without buffering media payloads and turns the blobs into:
//! - [`Output::Header`] once: the bytes a decoder needs before any media (WebM: the EBML
//!   header, the `Segment` header and every level-1 element before the first `Cluster`, i.e.
//!   `Info`, `Tracks`...; MP4: `ftyp` + `moov`). Bounded by `max_header`.
//! - [`Output::Media`]: the rest, split so that every point a decoder can start at begins a
//!   piece marked `start`. WebM: a `Cluster` whose first video block is a keyframe (every
//!   cluster when the recording has no video track). MP4: the first box of every fragment
//!   (`moof`, or `styp`/`sidx`/`prft` before it); the keyframe flags of fMP4 samples are not
//!   inspected, Safari starts its fragments on keyframes and ffmpeg skips to the next one
//!   otherwise.
//!
//! Whether a WebM cluster starts on a keyframe is only known once its first video block has
//! been seen, a few bytes later (possibly in the next blob), so the bytes from a cluster start
//! to that block are held back (bounded by `max_pending`; beyond it the cluster is assumed to
//! be a start point). The concatenation of every output is always exactly the input.
//!
//! Malformed input before the end of the header is an error (nothing can be relayed). After
//! it, the scanner reports [`Output::Degraded`] once and passes the rest through, each blob
//! marked as a start point (the "keep the header, then the current and later blobs" fallback:
//! ffmpeg's Matroska demuxer resynchronises on the next cluster and its decoders on the next
//! keyframe).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Default bound of the container header.
pub const DEFAULT_MAX_HEADER: usize = 1024 * 1024;
/// Default bound of the bytes held back while deciding whether a cluster starts on a keyframe.
pub const DEFAULT_MAX_PENDING: usize = 4 * 1024 * 1024;

/// The container of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    WebM,
    Mp4,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::WebM => "WebM",
            Format::Mp4 => "MP4",
        }
    }
}

/// What the scanner found in the input, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The container header, complete (emitted once, before any media).
    Header {
        format: Format,
        bytes: Bytes,
        /// Codec IDs of the tracks, when known (WebM `CodecID`: `V_VP8`, `A_OPUS`...).
        codecs: Vec<String>,
    },
    /// Media bytes. `start`: a decoder can start at the first byte of these bytes.
    Media { bytes: Bytes, start: bool },
    /// The structure could not be followed any more; from here on the input is passed
    /// through as is, every blob marked as a start point.
    Degraded(ContainerError),
}

/// Why a recording could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("unknown media format (WebM or MP4 expected)")]
    UnknownFormat,
    #[error("the container header is larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("MP4 must be fragmented (mdat before any moof)")]
    NotFragmented,
    #[error("invalid {format} data at byte {offset}: {what}")]
    Invalid {
        format: &'static str,
        offset: u64,
        what: &'static str,
    },
}

// Matroska element IDs (with their length marker, as written).
const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const SIMPLE_BLOCK: u32 = 0xA3;
/// Allowed anywhere in EBML.
const VOID: u32 = 0xEC;
const CRC32: u32 = 0xBF;
const BLOCK_GROUP: u32 = 0xA0;
/// Level-1 elements (children of `Segment`): their ID ends a cluster of unknown size.
const LEVEL1: [u32; 8] = [
    0x114D_9B74, // SeekHead
    0x1549_A966, // Info
    TRACKS,
    CLUSTER,
    0x1C53_BB6B, // Cues
    0x1941_A469, // Attachments
    0x1043_A770, // Chapters
    0x1254_C367, // Tags
];

/// Blobs smaller than this are appended to the last held piece when it is small too, so that
/// the held bytes stay a few pieces however the publisher cuts them (a piece per 1-byte
/// WebSocket message made every push walk a list of millions: quadratic time, and 50 bytes
/// of bookkeeping per byte held).
const COALESCE_BELOW: usize = 16 * 1024;

/// The longest element head: a 4-byte ID and an 8-byte size.
const MAX_HEAD: usize = 12;
/// Bytes of a SimpleBlock payload needed to read its flags: an 8-byte track number at most,
/// the 2-byte timecode and the flags byte.
const MAX_BLOCK_HEAD: usize = 11;

/// Incremental scanner of one recording. Feed it every blob in order with [`Scanner::push`].
pub struct Scanner {
    max_header: usize,
    max_pending: usize,
    phase: Phase,
    /// Input bytes not emitted yet, starting at absolute offset `held_start`.
    held: VecDeque<Bytes>,
    held_start: u64,
    held_len: usize,
    /// Absolute offset of the next byte the walker reads (within the held bytes).
    scan_pos: u64,
}

enum Phase {
    /// Waiting for the first bytes (they are held).
    Detect,
    /// Collecting the header (all of it is held) or following the media.
    Walking(Walker),
    /// Passing everything through.
    Passthrough,
}

/// The position of the scan inside the container's structure.
struct Walker {
    format: Format,
    /// False while collecting the header: the walk stops at the first cluster / fragment.
    media: bool,
    state: State,
    level: Level,
    /// Where the header ends (set by the header walk).
    header_end: Option<u64>,
    /// WebM: the video track's number (`None`: no video; every cluster is a start point).
    video_track: Option<u64>,
    /// Start points found and decided, in order: (absolute offset, start).
    marks: VecDeque<(u64, bool)>,
    /// A cluster whose start-point status is not known yet (its absolute offset).
    undecided: Option<u64>,
    /// MP4: the previous top-level box was `mdat` (or the header just ended): the next
    /// non-`mdat` box starts a fragment.
    fragment_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// WebM: before the Segment (the EBML header element).
    Top,
    /// WebM: children of the Segment. MP4: top-level boxes.
    Segment,
    /// WebM: children of a Cluster; `remaining` when its size is known.
    Cluster { remaining: Option<u64> },
}

enum State {
    /// Reading an element head (WebM: ID + size; MP4: size + type [+ largesize]).
    Head { buf: [u8; 16], len: usize },
    /// Skipping `left` payload bytes.
    Skip { left: u64 },
    /// Reading the first bytes of a SimpleBlock payload of `size` bytes.
    BlockHead {
        buf: [u8; MAX_BLOCK_HEAD],
        len: usize,
        size: u64,
    },
    /// MP4: the last box runs to the end of the stream.
    ToEnd,
}

const EMPTY_HEAD: State = State::Head {
    buf: [0; 16],
    len: 0,
};

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new(DEFAULT_MAX_HEADER, DEFAULT_MAX_PENDING)
    }
}

impl Scanner {
    pub fn new(max_header: usize, max_pending: usize) -> Self {
        Scanner {
            max_header,
            max_pending,
            phase: Phase::Detect,
            held: VecDeque::new(),
            held_start: 0,
            held_len: 0,
            scan_pos: 0,
        }
    }

    /// The format, once detected.
    pub fn format(&self) -> Option<Format> {
        match &self.phase {
            Phase::Walking(w) => Some(w.format),
            _ => None,
        }
    }

    /// Scans the next blob. An error is final: the recording cannot be relayed.
    pub fn push(&mut self, data: Bytes) -> Result<Vec<Output>, ContainerError> {
        let mut out = Vec::new();
        if data.is_empty() {
            return Ok(out);
        }
        if let Phase::Passthrough = self.phase {
            out.push(Output::Media {
                bytes: data,
                start: true,
            });
            return Ok(out);
        }
        self.hold(data);
        if let Phase::Detect = self.phase {
            let mut sniff = [0u8; 8];
            let n = self.copy_held(0, &mut sniff);
            let format = if n >= 4 && sniff[..4] == EBML.to_be_bytes() {
                Format::WebM
            } else if n >= 8 && &sniff[4..8] == b"ftyp" {
                Format::Mp4
            } else if n >= 8 || (n >= 4 && sniff[0] == 0x1A) {
                return Err(ContainerError::UnknownFormat);
            } else {
                return Ok(out);
            };
            self.phase = Phase::Walking(Walker::new(format));
        }
        self.advance(&mut out)?;
        Ok(out)
    }

    /// The recording ended: everything still held back is released (a cluster that never
    /// showed its first video block is not a start point; an incomplete header is dropped).
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if let Phase::Walking(walker) = &mut self.phase {
            if walker.media {
                walker.decide(false);
                walker.state = EMPTY_HEAD;
                self.emit_ready(&mut out);
            }
        }
        self.held.clear();
        self.held_len = 0;
        out
    }

    /// Appends `data` to the held bytes, to the last piece when both are small: without
    /// copying it when that piece is ours alone, else with one copy of it.
    fn hold(&mut self, data: Bytes) {
        self.held_len += data.len();
        if data.len() < COALESCE_BELOW {
            if let Some(last) = self.held.back_mut().filter(|l| l.len() < COALESCE_BELOW) {
                let mut merged = std::mem::take(last)
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                merged.extend_from_slice(&data);
                *last = merged.freeze();
                return;
            }
        }
        self.held.push_back(data);
    }

    /// Copies held bytes from `offset` (relative to `held_start`) into `dest`.
    fn copy_held(&self, offset: usize, dest: &mut [u8]) -> usize {
        let mut skip = offset;
        let mut n = 0;
        for piece in &self.held {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            let take = (piece.len() - skip).min(dest.len() - n);
            dest[n..n + take].copy_from_slice(&piece[skip..skip + take]);
            n += take;
            skip = 0;
            if n == dest.len() {
                break;
            }
        }
        n
    }

    /// The held bytes from absolute offset `at` to the end of the piece that contains it.
    fn held_from(&self, at: u64) -> Option<Bytes> {
        let mut start = self.held_start;
        for piece in &self.held {
            let end = start + piece.len() as u64;
            if at < end {
                return Some(piece.slice((at - start) as usize..));
            }
            start = end;
        }
        None
    }

    /// Walks the held bytes not walked yet and emits what became ready.
    fn advance(&mut self, out: &mut Vec<Output>) -> Result<(), ContainerError> {
        loop {
            let Some(input) = self.held_from(self.scan_pos) else {
                break;
            };
            let Phase::Walking(walker) = &mut self.phase else {
                return Ok(());
            };
            match walker.walk(&input, self.scan_pos) {
                Ok(consumed) => self.scan_pos += consumed as u64,
                Err(err) if walker.media => {
                    self.degrade(err, out);
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
            if let (false, Some(end)) = (walker.media, walker.header_end) {
                self.finish_header(end, out)?;
            }
        }
        let Phase::Walking(walker) = &mut self.phase else {
            return Ok(());
        };
        if !walker.media {
            if self.held_len > self.max_header {
                return Err(ContainerError::HeaderTooLarge(self.max_header));
            }
            return Ok(());
        }
        if let Some(at) = walker.undecided {
            if self.scan_pos.saturating_sub(at) > self.max_pending as u64 {
                walker.decide(true);
            }
        }
        self.emit_ready(out);
        Ok(())
    }

    /// The header walk found the first cluster / fragment at `end`.
    fn finish_header(&mut self, end: u64, out: &mut Vec<Output>) -> Result<(), ContainerError> {
        if end > self.max_header as u64 {
            return Err(ContainerError::HeaderTooLarge(self.max_header));
        }
        let header = concat(self.take_held(end));
        let Phase::Walking(walker) = &mut self.phase else {
            return Ok(());
        };
        let mut codecs = Vec::new();
        if walker.format == Format::WebM {
            let tracks = webm_tracks(&header);
            walker.video_track = tracks.video;
            codecs = tracks.codecs;
        }
        out.push(Output::Header {
            format: walker.format,
            bytes: header,
            codecs,
        });
        // Walk again from the first cluster / fragment, as media.
        walker.media = true;
        walker.header_end = None;
        walker.state = EMPTY_HEAD;
        walker.level = Level::Segment;
        self.scan_pos = end;
        Ok(())
    }

    /// The structure was lost: emit what was decided, then pass everything through.
    fn degrade(&mut self, err: ContainerError, out: &mut Vec<Output>) {
        if let Phase::Walking(walker) = &mut self.phase {
            walker.undecided = None;
            walker.state = EMPTY_HEAD;
        }
        self.scan_pos = self.held_start + self.held_len as u64;
        self.emit_ready(out);
        out.push(Output::Degraded(err));
        let rest = self.take_held(u64::MAX);
        if !rest.is_empty() {
            out.push(Output::Media {
                bytes: concat(rest),
                start: true,
            });
        }
        self.phase = Phase::Passthrough;
    }

    /// Emits the held bytes that are settled, split at the start points.
    fn emit_ready(&mut self, out: &mut Vec<Output>) {
        let Phase::Walking(walker) = &mut self.phase else {
            return;
        };
        let safe = walker.safe_offset(self.scan_pos);
        let mut marks = std::mem::take(&mut walker.marks);
        while self.held_start < safe {
            let (end, start) = match marks.front().copied() {
                Some((at, start)) if at <= self.held_start => {
                    marks.pop_front();
                    let end = marks.front().map_or(safe, |m| m.0.min(safe));
                    (end, start)
                }
                Some((at, _)) if at < safe => (at, false),
                _ => (safe, false),
            };
            if end > self.held_start {
                let bytes = concat(self.take_held(end));
                out.push(Output::Media { bytes, start });
            }
        }
        if let Phase::Walking(walker) = &mut self.phase {
            walker.marks = marks;
        }
    }

    /// Removes and returns the held bytes up to absolute offset `end`.
    fn take_held(&mut self, end: u64) -> Vec<Bytes> {
        let mut taken = Vec::new();
        while self.held_start < end {
            let Some(front) = self.held.front_mut() else {
                break;
            };
            let want = (end - self.held_start).min(front.len() as u64) as usize;
            let piece = if want == front.len() {
                self.held.pop_front().unwrap_or_default()
            } else {
                front.split_to(want)
            };
            self.held_start += piece.len() as u64;
            self.held_len -= piece.len();
            taken.push(piece);
        }
        taken
    }
}

fn concat(pieces: Vec<Bytes>) -> Bytes {
    if pieces.len() == 1 {
        return pieces.into_iter().next().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in pieces {
        all.extend_from_slice(&piece);
    }
    all.freeze()
}

impl Walker {
    fn new(format: Format) -> Self {
        Walker {
            format,
            media: false,
            state: EMPTY_HEAD,
            level: match format {
                Format::WebM => Level::Top,
                Format::Mp4 => Level::Segment,
            },
            header_end: None,
            video_track: None,
            marks: VecDeque::new(),
            undecided: None,
            fragment_open: true,
        }
    }

    fn invalid(&self, offset: u64, what: &'static str) -> ContainerError {
        ContainerError::Invalid {
            format: self.format.as_str(),
            offset,
            what,
        }
    }

    /// Up to where the bytes walked are settled: not inside an element head being read (it
    /// may be a cluster start) nor after an undecided cluster start.
    fn safe_offset(&self, scan_pos: u64) -> u64 {
        let mut safe = scan_pos;
        if let State::Head { len, .. } = self.state {
            safe = safe.saturating_sub(len as u64);
        }
        if let Some(at) = self.undecided {
            safe = safe.min(at);
        }
        safe
    }

    fn cluster_starts(&mut self, at: u64) {
        // A previous cluster that never showed a video block is not a start point.
        self.decide(false);
        if self.video_track.is_none() {
            self.marks.push_back((at, true));
        } else {
            self.undecided = Some(at);
        }
    }

    fn decide(&mut self, start: bool) {
        if let Some(at) = self.undecided.take() {
            self.marks.push_back((at, start));
        }
    }

    /// Walks `input`, whose first byte is at absolute offset `base`; returns the number of
    /// bytes consumed (all of them, unless the header walk reached the first cluster).
    fn walk(&mut self, input: &[u8], base: u64) -> Result<usize, ContainerError> {
        let mut pos = 0usize;
        while pos < input.len() {
            if self.header_end.is_some() {
                break;
            }
            match &mut self.state {
                State::ToEnd => return Ok(input.len()),
                State::Skip { left } => {
                    let n = (*left).min((input.len() - pos) as u64);
                    *left -= n;
                    pos += n as usize;
                    if *left == 0 {
                        self.state = EMPTY_HEAD;
                    }
                }
                State::BlockHead { buf, len, size } => {
                    let want = (MAX_BLOCK_HEAD as u64).min(*size) as usize;
                    let n = (want - *len).min(input.len() - pos);
                    buf[*len..*len + n].copy_from_slice(&input[pos..pos + n]);
                    *len += n;
                    pos += n;
                    if *len == want {
                        let (buf, len, size) = (*buf, *len, *size);
                        self.on_block_head(&buf[..len]);
                        self.skip(size - len as u64);
                    }
                }
                State::Head { buf, len } => {
                    buf[*len] = input[pos];
                    *len += 1;
                    pos += 1;
                    let head_len = *len;
                    let head_start = base + pos as u64 - head_len as u64;
                    let head = *buf;
                    let head = &head[..head_len];
                    match self.format {
                        Format::WebM => {
                            let parsed =
                                parse_ebml_head(head).map_err(|w| self.invalid(head_start, w))?;
                            if let Some((id, size)) = parsed {
                                self.on_element(id, size, head_start, head_len)?;
                            }
                        }
                        Format::Mp4 => {
                            let parsed =
                                parse_box_head(head).map_err(|w| self.invalid(head_start, w))?;
                            if let Some((kind, size)) = parsed {
                                self.on_box(kind, size, head_start, head_len)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(pos)
    }

    /// A complete WebM element head at `at`.
    fn on_element(
        &mut self,
        id: u32,
        size: Option<u64>,
        at: u64,
        head_len: usize,
    ) -> Result<(), ContainerError> {
        // A cluster of unknown size ends at the next level-1 element.
        if let Level::Cluster { remaining: None } = self.level {
            if LEVEL1.contains(&id) || id == EBML || id == SEGMENT {
                self.level = Level::Segment;
            }
        }
        match self.level {
            Level::Top => match (id, size) {
                (EBML | VOID | CRC32, Some(size)) => self.skip(size),
                (SEGMENT, _) => {
                    self.level = Level::Segment;
                    self.state = EMPTY_HEAD;
                }
                _ => return Err(self.invalid(at, "EBML header or Segment expected")),
            },
            Level::Segment => {
                if id == CLUSTER {
                    if !self.media {
                        self.header_end = Some(at);
                        return Ok(());
                    }
                    self.cluster_starts(at);
                    self.level = Level::Cluster { remaining: size };
                    self.state = EMPTY_HEAD;
                    if size == Some(0) {
                        self.level = Level::Segment;
                    }
                } else if id == EBML || id == SEGMENT {
                    return Err(self.invalid(at, "a second recording in one stream"));
                } else {
                    match size {
                        Some(size) => self.skip(size),
                        None => return Err(self.invalid(at, "element of unknown size")),
                    }
                }
            }
            Level::Cluster { remaining } => {
                let Some(size) = size else {
                    return Err(self.invalid(at, "cluster child of unknown size"));
                };
                if let Some(remaining) = remaining {
                    let total = (head_len as u64).saturating_add(size);
                    if total > remaining {
                        return Err(self.invalid(at, "cluster child larger than its cluster"));
                    }
                    let remaining = remaining - total;
                    self.level = if remaining == 0 {
                        Level::Segment
                    } else {
                        Level::Cluster {
                            remaining: Some(remaining),
                        }
                    };
                }
                match id {
                    SIMPLE_BLOCK if self.undecided.is_some() && size > 0 => {
                        self.state = State::BlockHead {
                            buf: [0; MAX_BLOCK_HEAD],
                            len: 0,
                            size,
                        };
                        return Ok(());
                    }
                    // A block group tells whether it is a keyframe at its end: assume it is.
                    BLOCK_GROUP => self.decide(true),
                    _ => {}
                }
                self.skip(size);
            }
        }
        Ok(())
    }

    fn on_block_head(&mut self, head: &[u8]) {
        let Some((track, n)) = read_vint(head, false) else {
            return;
        };
        let Some(flags) = head.get(n + 2) else {
            return;
        };
        if Some(track) == self.video_track {
            self.decide(flags & 0x80 != 0);
        }
    }

    /// A complete MP4 box head at `at`.
    fn on_box(
        &mut self,
        kind: [u8; 4],
        size: Option<u64>,
        at: u64,
        head_len: usize,
    ) -> Result<(), ContainerError> {
        let fragment_box = matches!(&kind, b"moof" | b"styp" | b"sidx" | b"prft" | b"emsg");
        if &kind == b"mdat" {
            if !self.media {
                return Err(ContainerError::NotFragmented);
            }
            self.fragment_open = true;
        } else if fragment_box {
            if !self.media {
                self.header_end = Some(at);
                return Ok(());
            }
            if self.fragment_open {
                self.marks.push_back((at, true));
                self.fragment_open = false;
            }
        }
        match size {
            Some(size) => {
                let Some(payload) = size.checked_sub(head_len as u64) else {
                    return Err(self.invalid(at, "box smaller than its header"));
                };
                self.skip(payload);
            }
            None => self.state = State::ToEnd,
        }
        Ok(())
    }

    fn skip(&mut self, size: u64) {
        self.state = if size == 0 {
            EMPTY_HEAD
        } else {
            State::Skip { left: size }
        };
    }
}

/// Reads an EBML variable-length integer. `keep_marker`: for IDs, the length marker is part of
/// the value. `None`: more bytes are needed (or the first byte is invalid: see the caller).
fn read_vint(bytes: &[u8], keep_marker: bool) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    if first == 0 {
        return None;
    }
    let len = first.leading_zeros() as usize + 1;
    if bytes.len() < len {
        return None;
    }
    let mut value = if keep_marker {
        u64::from(first)
    } else {
        u64::from(first) & (0xFF >> len)
    };
    for b in &bytes[1..len] {
        value = (value << 8) | u64::from(*b);
    }
    Some((value, len))
}

/// Parses an element head (ID + size). `Ok(None)`: more bytes needed.
#[allow(clippy::type_complexity)]
fn parse_ebml_head(head: &[u8]) -> Result<Option<(u32, Option<u64>)>, &'static str> {
    let first = head[0];
    if first < 0x10 {
        return Err("invalid element ID");
    }
    let id_len = first.leading_zeros() as usize + 1;
    if head.len() <= id_len {
        return Ok(None);
    }
    let size_first = head[id_len];
    if size_first == 0 {
        return Err("invalid element size");
    }
    let size_len = size_first.leading_zeros() as usize + 1;
    if head.len() < id_len + size_len {
        return Ok(None);
    }
    let Some((id, _)) = read_vint(&head[..id_len], true) else {
        return Err("invalid element ID");
    };
    let Some((size, _)) = read_vint(&head[id_len..], false) else {
        return Err("invalid element size");
    };
    // All value bits set: unknown size.
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    Ok(Some((id as u32, (!unknown).then_some(size))))
}

/// Parses an MP4 box head (size + type [+ 64-bit size]). `Ok(None)`: more bytes needed.
/// A size of `None` means "to the end of the stream".
#[allow(clippy::type_complexity)]
fn parse_box_head(head: &[u8]) -> Result<Option<([u8; 4], Option<u64>)>, &'static str> {
    if head.len() < 8 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err("invalid box type");
    }
    match size {
        0 => Ok(Some((kind, None))),
        1 => {
            if head.len() < 16 {
                return Ok(None);
            }
            let mut large = [0u8; 8];
            large.copy_from_slice(&head[8..16]);
            let large = u64::from_be_bytes(large);
            if large < 16 {
                return Err("box smaller than its header");
            }
            Ok(Some((kind, Some(large))))
        }
        2..=7 => Err("box smaller than its header"),
        n => Ok(Some((kind, Some(u64::from(n))))),
    }
}

/// What the header says about the tracks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tracks {
    video: Option<u64>,
    codecs: Vec<String>,
}

/// Finds the video track number and the codec IDs in a complete WebM header.
fn webm_tracks(header: &[u8]) -> Tracks {
    let mut tracks = Tracks::default();
    // Top level: EBML, then the Segment head (its size may be unknown: descend).
    let mut pos = 0;
    while let Some((id, size, head)) = element_at(header, pos) {
        pos += head;
        if id == SEGMENT {
            break;
        }
        pos += size.unwrap_or(0) as usize;
    }
    while let Some((id, size, head)) = element_at(header, pos) {
        let Some(size) = size else { break };
        let body = pos + head;
        let end = body.saturating_add(size as usize).min(header.len());
        if id == TRACKS {
            let mut entry = body;
            while let Some((id, size, head)) = element_at(&header[..end], entry) {
                let Some(size) = size else { break };
                let inner = entry + head;
                let inner_end = inner.saturating_add(size as usize).min(end);
                if id == TRACK_ENTRY {
                    read_track_entry(&header[inner..inner_end], &mut tracks);
                }
                entry = inner_end;
            }
        }
        pos = end;
    }
    tracks
}

fn read_track_entry(entry: &[u8], tracks: &mut Tracks) {
    let (mut number, mut kind, mut codec) = (None, None, None);
    let mut pos = 0;
    while let Some((id, Some(size), head)) = element_at(entry, pos) {
        let body = pos + head;
        let end = body.saturating_add(size as usize).min(entry.len());
        let value = &entry[body..end];
        match id {
            TRACK_NUMBER => number = Some(uint(value)),
            TRACK_TYPE => kind = Some(uint(value)),
            CODEC_ID => {
                codec = Some(
                    String::from_utf8_lossy(value)
                        .trim_end_matches('\0')
                        .to_owned(),
                )
            }
            _ => {}
        }
        pos = end;
    }
    if kind == Some(1) && tracks.video.is_none() {
        tracks.video = number;
    }
    if let Some(codec) = codec {
        tracks.codecs.push(codec);
    }
}

fn uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The element at `pos` of a complete buffer: (ID, size, head length).
fn element_at(buf: &[u8], pos: usize) -> Option<(u32, Option<u64>, usize)> {
    let rest = buf.get(pos..)?;
    let end = rest.len().min(MAX_HEAD);
    for len in 2..=end {
        match parse_ebml_head(&rest[..len]) {
            Ok(Some((id, size))) => return Some((id, size, len)),
            Ok(None) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element with a known size (1-byte ID or multi-byte ID as given, 8-byte size).
    fn el(id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = id_bytes(id);
        out.push(0x01);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    /// An element with the "unknown" size.
    fn el_unknown(id: u32) -> Vec<u8> {
        let mut out = id_bytes(id);
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        out
    }

    fn id_bytes(id: u32) -> Vec<u8> {
        let bytes = id.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes[skip..].to_vec()
    }

    fn track(number: u8, kind: u8, codec: &str) -> Vec<u8> {
        let mut body = el(TRACK_NUMBER, &[number]);
        body.extend(el(TRACK_TYPE, &[kind]));
        body.extend(el(CODEC_ID, codec.as_bytes()));
        el(TRACK_ENTRY, &body)
    }

    fn webm_header(with_video: bool) -> Vec<u8> {
        let mut out = el(EBML, &el(0x4282, b"webm"));
        out.extend(el_unknown(SEGMENT));
        out.extend(el(0x1549_A966, &el(0x2AD7B1, &[0x0F, 0x42, 0x40])));
        let mut tracks = Vec::new();
        if with_video {
            tracks.extend(track(1, 1, "V_VP8"));
        }
        tracks.extend(track(2, 2, "A_OPUS"));
        out.extend(el(TRACKS, &tracks));
        out
    }

    fn block(track: u8, key: bool, payload_len: usize) -> Vec<u8> {
        let mut body = vec![0x80 | track, 0, 0, if key { 0x80 } else { 0 }];
        body.extend(std::iter::repeat_n(0x55, payload_len));
        el(SIMPLE_BLOCK, &body)
    }

    /// A cluster of unknown size: timecode, then the blocks.
    fn cluster(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = el_unknown(CLUSTER);
        out.extend(el(0xE7, &[0]));
        for b in blocks {
            out.extend_from_slice(b);
        }
        out
    }

    fn sized_cluster(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut body = el(0xE7, &[0]);
        for b in blocks {
            body.extend_from_slice(b);
        }
        el(CLUSTER, &body)
    }

    /// Scans `input` cut into pieces at `cuts`; returns the outputs.
    fn scan(input: &[u8], cuts: &[usize]) -> Result<Vec<Output>, ContainerError> {
        let mut scanner = Scanner::new(1 << 16, 1 << 16);
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            out.extend(scanner.push(Bytes::copy_from_slice(&input[last..cut]))?);
            last = cut;
        }
        Ok(out)
    }

    /// (header, [(offset, start)] of the start-marked media pieces, all bytes concatenated).
    fn summary(outputs: &[Output]) -> (Vec<u8>, Vec<(usize, bool)>, Vec<u8>) {
        let mut header = Vec::new();
        let mut marks = Vec::new();
        let mut all = Vec::new();
        for o in outputs {
            match o {
                Output::Header { bytes, .. } => {
                    header = bytes.to_vec();
                    all.extend_from_slice(bytes);
                }
                Output::Media { bytes, start } => {
                    if *start {
                        marks.push((all.len(), true));
                    }
                    all.extend_from_slice(bytes);
                }
                Output::Degraded(_) => marks.push((all.len(), false)),
            }
        }
        (header, marks, all)
    }

    #[test]
    fn tiny_blobs_are_held_as_a_few_pieces() {
        // Found by fuzzing: a cluster held back while its first video block is awaited, sent
        // one byte per WebSocket message, took time quadratic in its length (every push
        // walked one piece per byte held).
        let mut input = webm_header(true);
        let audio: Vec<Vec<u8>> = (0..20_000).map(|_| block(2, true, 3)).collect();
        input.extend(cluster(&audio));
        let mut scanner = Scanner::new(1 << 20, 1 << 20);
        let mut out = Vec::new();
        for byte in &input {
            out.extend(
                scanner
                    .push(Bytes::copy_from_slice(&[*byte]))
                    .expect("scan"),
            );
            assert!(
                scanner.held.len() <= scanner.held_len / COALESCE_BELOW + 2,
                "{} pieces for {} bytes",
                scanner.held.len(),
                scanner.held_len
            );
        }
        assert!(scanner.held_len > 100_000, "the cluster is held back");
        out.extend(scanner.finish());
        assert_eq!(summary(&out).2, input, "the outputs are the input");
    }

    #[test]
    fn webm_is_split_into_header_and_keyframe_clusters_wherever_the_blobs_are_cut() {
        let header = webm_header(true);
        let c1 = cluster(&[block(2, true, 20), block(1, true, 300), block(1, false, 50)]);
        let c2 = cluster(&[block(1, false, 40), block(2, true, 10)]);
        let c3 = sized_cluster(&[block(1, true, 70), block(2, true, 10)]);
        let c4 = cluster(&[block(2, true, 10)]);
        let c5 = cluster(&[block(1, true, 5)]);
        let mut input = header.clone();
        let mut starts = Vec::new();
        for (c, key) in [
            (&c1, true),
            (&c2, false),
            (&c3, true),
            (&c4, false),
            (&c5, true),
        ] {
            if key {
                starts.push((input.len(), true));
            }
            input.extend_from_slice(c);
        }
        // Every single cut point, and a few multi-cut patterns.
        let mut patterns: Vec<Vec<usize>> = (1..input.len()).map(|c| vec![c]).collect();
        patterns.push((1..input.len()).collect());
        patterns.push((1..input.len()).step_by(7).collect());
        patterns.push(vec![]);
        for cuts in patterns {
            let outputs = scan(&input, &cuts).expect("valid");
            let (h, marks, all) = summary(&outputs);
            assert_eq!(h, header, "cuts {cuts:?}");
            assert_eq!(all, input, "the output is the input, cuts {cuts:?}");
            assert_eq!(marks, starts, "cuts {cuts:?}");
        }
    }

    #[test]
    fn the_header_names_the_codecs() {
        let mut input = webm_header(true);
        input.extend(cluster(&[block(1, true, 5)]));
        let outputs = scan(&input, &[]).expect("valid");
        let Output::Header { format, codecs, .. } = &outputs[0] else {
            panic!("header first: {outputs:?}");
        };
        assert_eq!(*format, Format::WebM);
        assert_eq!(codecs, &["V_VP8", "A_OPUS"]);
    }

    #[test]
    fn every_cluster_of_an_audio_only_recording_is_a_start_point() {
        let mut input = webm_header(false);
        let mut starts = Vec::new();
        for _ in 0..3 {
            starts.push((input.len(), true));
            input.extend(cluster(&[block(2, true, 30), block(2, true, 30)]));
        }
        let (_, marks, all) = summary(&scan(&input, &[100, 101, 150]).expect("valid"));
        assert_eq!(all, input);
        assert_eq!(marks, starts);
    }

    #[test]
    fn bytes_are_released_as_soon_as_the_cluster_is_decided() {
        let mut input = webm_header(true);
        let header_len = input.len();
        input.extend(cluster(&[block(1, true, 1000)]));
        // Cut inside the keyframe's payload: everything up to the cut is out already.
        let cut = input.len() - 500;
        let mut scanner = Scanner::default();
        let first = scanner
            .push(Bytes::copy_from_slice(&input[..cut]))
            .expect("valid");
        let (_, marks, all) = summary(&first);
        assert_eq!(all.len(), cut);
        assert_eq!(marks, vec![(header_len, true)]);
    }

    #[test]
    fn a_cluster_start_is_held_until_its_first_video_block_is_seen() {
        let mut input = webm_header(true);
        input.extend(cluster(&[block(1, true, 10)]));
        let second = input.len();
        input.extend(cluster(&[block(2, true, 10), block(1, false, 10)]));
        // Cut after the audio block of the second cluster: its status is not known yet.
        let cut = second + 40;
        let mut scanner = Scanner::default();
        let (_, _, all) = summary(
            &scanner
                .push(Bytes::copy_from_slice(&input[..cut]))
                .expect("valid"),
        );
        assert_eq!(all.len(), second, "the undecided cluster is held back");
        let rest = scanner
            .push(Bytes::copy_from_slice(&input[cut..]))
            .expect("valid");
        assert!(
            matches!(&rest[0], Output::Media { start: false, bytes } if bytes.len() == input.len() - second)
        );
    }

    #[test]
    fn finish_releases_a_cluster_held_back_at_the_end() {
        let mut input = webm_header(true);
        input.extend(cluster(&[block(1, true, 10)]));
        input.extend(cluster(&[block(2, true, 10)]));
        let mut scanner = Scanner::default();
        let mut outputs = scanner.push(Bytes::copy_from_slice(&input)).expect("valid");
        let (_, _, all) = summary(&outputs);
        assert!(all.len() < input.len());
        outputs.extend(scanner.finish());
        let (_, marks, all) = summary(&outputs);
        assert_eq!(all, input);
        assert_eq!(marks.len(), 1);
    }

    #[test]
    fn unknown_formats_and_huge_headers_are_refused() {
        assert_eq!(
            scan(b"GIF89a-not-a-video", &[]),
            Err(ContainerError::UnknownFormat)
        );
        let mut input = el(EBML, &[]);
        input.extend(el_unknown(SEGMENT));
        input.extend(el(0x1549_A966, &vec![0; 1 << 17]));
        assert_eq!(
            scan(&input, &[1000, 5000]),
            Err(ContainerError::HeaderTooLarge(1 << 16))
        );
        // Nothing is buffered beyond the bound even when the input keeps coming.
        let mut scanner = Scanner::new(1024, 1024);
        assert!(scanner
            .push(Bytes::copy_from_slice(&input[..2000]))
            .is_err());
    }

    #[test]
    fn garbage_in_the_header_is_an_error_and_after_it_a_passthrough() {
        let mut input = el(EBML, &[]);
        input.extend([0x00, 0x00, 0x00]);
        assert!(matches!(
            scan(&input, &[]),
            Err(ContainerError::Invalid { .. })
        ));

        let mut input = webm_header(true);
        input.extend(cluster(&[block(1, true, 10)]));
        let garbage_at = input.len();
        input.extend([0x00, 0x01, 0x02]);
        let outputs = scan(&input, &[garbage_at]).expect("passthrough");
        assert!(outputs.iter().any(|o| matches!(o, Output::Degraded(_))));
        let (_, _, all) = summary(&outputs);
        assert_eq!(all, input);
        // Later blobs go through whole, each a start point.
        let mut scanner = Scanner::default();
        scanner
            .push(Bytes::copy_from_slice(&input))
            .expect("passthrough");
        assert_eq!(
            scanner
                .push(Bytes::from_static(b"xyz"))
                .expect("passthrough"),
            vec![Output::Media {
                bytes: Bytes::from_static(b"xyz"),
                start: true
            }]
        );
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn fragmented_mp4_is_split_into_ftyp_moov_and_fragments() {
        let mut input = mp4_box(b"ftyp", b"iso5\0\0\0\x01iso5");
        input.extend(mp4_box(b"moov", &[7; 300]));
        let header_len = input.len();
        let mut starts = Vec::new();
        for n in 0..3 {
            starts.push((input.len(), true));
            if n == 1 {
                input.extend(mp4_box(b"styp", b"msdh"));
            }
            input.extend(mp4_box(b"moof", &[1; 50]));
            input.extend(mp4_box(b"mdat", &[2; 500]));
        }
        for cuts in [
            vec![],
            vec![3],
            vec![header_len - 1, header_len + 3],
            (1..input.len()).collect(),
        ] {
            let outputs = scan(&input, &cuts).expect("valid");
            let (h, marks, all) = summary(&outputs);
            assert_eq!(h.len(), header_len);
            assert_eq!(all, input);
            assert_eq!(marks, starts, "cuts {cuts:?}");
        }
    }

    #[test]
    fn unfragmented_mp4_is_refused() {
        let mut input = mp4_box(b"ftyp", b"isom");
        input.extend(mp4_box(b"mdat", &[0; 10]));
        assert_eq!(scan(&input, &[]), Err(ContainerError::NotFragmented));
    }

    /// A browser's recording as it arrived: the blobs in order.
    fn fixture(name: &str) -> Vec<Bytes> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
        let data = std::fs::read(format!("{dir}{name}")).expect("fixture");
        let sizes = std::fs::read_to_string(format!("{dir}{name}.blobs")).expect("blob sizes");
        let mut blobs = Vec::new();
        let mut at = 0;
        for size in sizes.split_whitespace() {
            let size: usize = size.parse().expect("size");
            blobs.push(Bytes::copy_from_slice(&data[at..at + size]));
            at += size;
        }
        assert_eq!(at, data.len());
        blobs
    }

    /// The keyframe flag of the first block of `video_track` in a cluster.
    fn first_video_block_is_key(cluster: &[u8], video_track: u8) -> bool {
        let (id, _, head) = element_at(cluster, 0).expect("element");
        assert_eq!(id, CLUSTER);
        let mut pos = head;
        while let Some((id, Some(size), head)) = element_at(cluster, pos) {
            if id == SIMPLE_BLOCK && cluster[pos + head] & 0x7F == video_track {
                return cluster[pos + head + 3] & 0x80 != 0;
            }
            pos += head + size as usize;
        }
        panic!("no video block in the cluster");
    }

    #[test]
    fn chromium_webm_blobs_give_the_header_and_keyframe_clusters_only() {
        let blobs = fixture("chromium-vp8-opus.webm");
        let input: Vec<u8> = blobs.concat();
        let mut scanner = Scanner::default();
        let mut outputs = Vec::new();
        for blob in &blobs {
            outputs.extend(scanner.push(blob.clone()).expect("valid"));
        }
        outputs.extend(scanner.finish());
        let Output::Header { codecs, bytes, .. } = &outputs[0] else {
            panic!("header first");
        };
        // Chromium numbers the audio track 1 and the video track 2.
        assert_eq!(codecs, &["A_OPUS", "V_VP8"]);
        assert_eq!(webm_tracks(bytes).video, Some(2));
        assert_eq!(&input[bytes.len()..bytes.len() + 4], &CLUSTER.to_be_bytes());
        let (_, marks, all) = summary(&outputs);
        assert_eq!(all, input);
        // A start point every second (4 s recorded, keyframe interval 1 s), each a cluster
        // whose first video frame is a keyframe.
        assert!((4..=6).contains(&marks.len()), "{marks:?}");
        for (at, _) in &marks {
            assert!(first_video_block_is_key(&input[*at..], 2), "start at {at}");
        }
        assert!(!outputs.iter().any(|o| matches!(o, Output::Degraded(_))));
    }

    #[test]
    fn chromium_mp4_blobs_give_ftyp_moov_and_fragments() {
        let blobs = fixture("chromium-avc1-opus.mp4");
        let input: Vec<u8> = blobs.concat();
        let mut scanner = Scanner::default();
        let mut outputs = Vec::new();
        for blob in &blobs {
            outputs.extend(scanner.push(blob.clone()).expect("valid"));
        }
        let (header, marks, all) = summary(&outputs);
        assert_eq!(&header[4..8], b"ftyp");
        assert_eq!(&input[header.len() + 4..header.len() + 8], b"moof");
        assert_eq!(all, input);
        assert!(marks.len() >= 3, "{marks:?}");
        for (at, _) in &marks {
            assert_eq!(&input[at + 4..at + 8], b"moof");
        }
    }

    #[test]
    fn vints_and_heads_parse() {
        assert_eq!(read_vint(&[0x81], false), Some((1, 1)));
        assert_eq!(read_vint(&[0x40, 0x02], false), Some((2, 2)));
        assert_eq!(
            read_vint(&[0x1A, 0x45, 0xDF, 0xA3], true),
            Some((0x1A45_DFA3, 4))
        );
        assert_eq!(read_vint(&[0x00], false), None);
        assert_eq!(parse_ebml_head(&[0xA3, 0x85]), Ok(Some((0xA3, Some(5)))));
        assert_eq!(parse_ebml_head(&[0xA3, 0xFF]), Ok(Some((0xA3, None))));
        assert_eq!(parse_ebml_head(&[0xA3]), Ok(None));
        assert!(parse_ebml_head(&[0x05]).is_err());
        assert!(parse_ebml_head(&[0xA3, 0x00]).is_err());
        assert_eq!(
            parse_box_head(b"\0\0\0\x08free"),
            Ok(Some((*b"free", Some(8))))
        );
        assert!(parse_box_head(b"\0\0\0\x04free").is_err());
    }
}
