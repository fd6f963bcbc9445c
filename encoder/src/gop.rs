//! Pass-through of the source rendition: the source's keyframes, read from the FLV stream as
//! it goes by, decide whether `ORIGINAL` can be remuxed instead of re-encoded.
//!
//! A source qualifies when it is H.264 (4:2:0, 8 bits, even dimensions) over RTMP and its
//! keyframes come at a regular interval `g` no longer than the segment target plus half a
//! second (OBS's default of 2 s, for the default 3 s target). Each segment is then `k` whole
//! GOPs, `k = max(1, floor((HLS_TIME + 0.5) / g))`, the whole-GOP duration closest to the target
//! from below (2 s segments for a 2 s GOP and a 3 s target; 3 s for a 1 s GOP). Every encoded
//! rendition puts its keyframes where the source has them (`-force_key_frames source`), so all
//! renditions are cut at the same instants.
//!
//! [`FlvKeyframes`] finds the keyframes in the FLV byte stream, whatever the chunking, keeping
//! only tag headers (a few bytes) in memory. [`Cadence::detect`] decides from the first two
//! keyframes; [`GridCheck`] then watches every later keyframe: extra keyframes do no harm (all
//! renditions have them), but a missing or shifted one would make a segment longer than
//! promised, so the job falls back to encoding every rendition.

/// Bytes of the FLV file header plus the first `PreviousTagSize0`.
const FLV_HEADER: usize = 9 + 4;
/// Bytes of an FLV tag header.
const TAG_HEADER: usize = 11;
/// The FLV tag type of video.
const TAG_VIDEO: u8 = 9;
/// The FLV video codec ID of AVC (H.264).
const CODEC_AVC: u8 = 7;

/// Finds the timestamps (ms) of H.264 keyframes in an FLV byte stream fed in any pieces.
#[derive(Debug, Default)]
pub struct FlvKeyframes {
    /// Bytes of the file header still to skip; `None` before the header was seen.
    state: State,
    /// Header bytes of the current tag collected so far (up to 11 + 2).
    header: Vec<u8>,
    /// Bytes of the current tag body (plus its trailing size) still to skip.
    skip: usize,
    /// Whether the stream is not FLV (no `FLV` signature): nothing is found.
    broken: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 13 bytes of the file header.
    #[default]
    FileHeader,
    /// Collecting a tag header (and the first two bytes of a video tag's body).
    TagHeader,
    /// Skipping the rest of a tag.
    Body,
}

impl FlvKeyframes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `data`, appending the timestamp of every H.264 keyframe (NAL units, not the
    /// sequence header) whose tag header ends in it to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u32>) {
        while !data.is_empty() && !self.broken {
            match self.state {
                State::FileHeader => {
                    let take = (FLV_HEADER - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == FLV_HEADER {
                        if &self.header[..3] != b"FLV" {
                            self.broken = true;
                            return;
                        }
                        // The header may be longer than 9 bytes (DataOffset).
                        let offset = u32::from_be_bytes([
                            self.header[5],
                            self.header[6],
                            self.header[7],
                            self.header[8],
                        ]) as usize;
                        self.skip = offset.saturating_sub(9);
                        self.header.clear();
                        self.state = if self.skip > 0 {
                            State::Body
                        } else {
                            State::TagHeader
                        };
                    }
                }
                State::TagHeader => {
                    // 11 header bytes, then for video the frame type/codec byte and the AVC
                    // packet type: 13 bytes, or 11 when the tag is not video or is too short.
                    let want = self.tag_header_len();
                    let take = (want - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() < self.tag_header_len() {
                        continue;
                    }
                    let h = &self.header;
                    let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
                    let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                    if h[0] & 0x1f == TAG_VIDEO && h.len() == TAG_HEADER + 2 {
                        let frame_type = h[11] >> 4;
                        let codec = h[11] & 0x0f;
                        let packet_type = h[12];
                        if frame_type == 1 && codec == CODEC_AVC && packet_type == 1 {
                            out.push(timestamp);
                        }
                    }
                    let consumed = self.header.len() - TAG_HEADER;
                    // The body, then the 4-byte PreviousTagSize.
                    self.skip = size.saturating_sub(consumed) + 4;
                    self.header.clear();
                    self.state = State::Body;
                }
                State::Body => {
                    let take = self.skip.min(data.len());
                    self.skip -= take;
                    data = &data[take..];
                    if self.skip == 0 {
                        self.state = State::TagHeader;
                    }
                }
            }
        }
    }

    /// How many header bytes the current tag needs (known once its first 4 bytes are in).
    fn tag_header_len(&self) -> usize {
        if self.header.len() < 4 {
            return TAG_HEADER;
        }
        let size = u32::from_be_bytes([0, self.header[1], self.header[2], self.header[3]]);
        if self.header[0] & 0x1f == TAG_VIDEO && size >= 2 {
            TAG_HEADER + 2
        } else {
            TAG_HEADER
        }
    }
}

/// A regular keyframe interval and the segment duration it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The source's keyframe interval, in ms.
    pub gop_ms: u32,
    /// Whole GOPs per segment.
    pub gops_per_segment: u32,
}

/// How far the segment duration may stray from the target when GOPs are whole.
const SLACK_SECONDS: f64 = 0.5;

impl Cadence {
    /// The cadence for a keyframe interval, if it fits the segment target: `None` when the
    /// interval is zero or longer than `hls_time + 0.5 s`.
    pub fn for_interval(gop_ms: u32, hls_time: f64) -> Option<Cadence> {
        if gop_ms == 0 {
            return None;
        }
        let gop = f64::from(gop_ms) / 1000.0;
        let per_segment = ((hls_time + SLACK_SECONDS) / gop).floor();
        (per_segment >= 1.0).then_some(Cadence {
            gop_ms,
            gops_per_segment: per_segment.min(1000.0) as u32,
        })
    }

    /// The cadence from the first keyframes seen: the interval between the first two.
    pub fn detect(keyframes_ms: &[u32], hls_time: f64) -> Option<Cadence> {
        match keyframes_ms {
            [first, second, ..] => {
                Self::for_interval(second.checked_sub(*first).unwrap_or(0), hls_time)
            }
            _ => None,
        }
    }

    /// The segment duration in seconds (what ffmpeg's `-hls_time` is set to).
    pub fn segment_seconds(self) -> f64 {
        f64::from(self.gop_ms) * f64::from(self.gops_per_segment) / 1000.0
    }

    /// How far a keyframe may be from its place on the grid: a segment of `k` GOPs then stays
    /// within half a second of `k × g`.
    pub fn tolerance_ms(self) -> u32 {
        ((SLACK_SECONDS * 1000.0) / f64::from(self.gops_per_segment)).floor() as u32
    }
}

/// Checks that keyframes keep coming on the grid `first + n × g` (within the tolerance):
/// extra keyframes in between are fine, a missing one is not.
#[derive(Debug, Clone)]
pub struct GridCheck {
    cadence: Cadence,
    /// The time (ms, wrapping) of the next keyframe expected on the grid; `None` before the
    /// first keyframe.
    next: Option<u64>,
}

impl GridCheck {
    pub fn new(cadence: Cadence) -> Self {
        GridCheck {
            cadence,
            next: None,
        }
    }

    /// Takes the next keyframe's timestamp; `false` once the grid is broken (a grid keyframe
    /// missing or shifted past the tolerance, or time going backwards past it).
    pub fn keyframe(&mut self, timestamp_ms: u32) -> bool {
        let t = u64::from(timestamp_ms);
        let g = u64::from(self.cadence.gop_ms);
        let tol = u64::from(self.cadence.tolerance_ms());
        let Some(expected) = self.next else {
            self.next = Some(t + g);
            return true;
        };
        if t + tol < expected {
            // An extra keyframe between two grid points (or a small step back): harmless
            // unless time went back by more than a GOP.
            return t + g + tol >= expected;
        }
        if t <= expected + tol {
            self.next = Some(expected + g);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An FLV stream: header, AVC sequence header, then video (key or not) and audio tags.
    fn flv(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut out = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
        for (kind, ts, body) in tags {
            let size = body.len() as u32;
            out.push(*kind);
            out.extend_from_slice(&size.to_be_bytes()[1..]);
            out.extend_from_slice(&ts.to_be_bytes()[1..]);
            out.push((ts >> 24) as u8);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(body);
            out.extend_from_slice(&(size + 11).to_be_bytes());
        }
        out
    }

    fn sample() -> Vec<u8> {
        flv(&[
            (18, 0, b"\x02\x00\x0aonMetaData"),
            (9, 0, &[0x17, 0, 0, 0, 0, 1, 2, 3]), // sequence header
            (8, 0, &[0xaf, 0, 0x12, 0x10]),       // AAC config
            (9, 0, &[0x17, 1, 0, 0, 0, 9, 9, 9]), // keyframe at 0
            (9, 33, &[0x27, 1, 0, 0, 0, 9, 9, 9]), // inter frame
            (8, 40, &[0xaf, 1, 5, 5]),
            (9, 2000, &[0x17, 1, 0, 0, 0, 9]), // keyframe at 2000
            (9, 0x0100_0000 + 5, &[0x17, 1, 0, 0, 0]), // extended timestamp
            (9, 4000, &[0x12, 1]),             // a keyframe of another codec (Sorenson)
            (9, 4001, &[0x17]),                // a video tag too short for a packet type
        ])
    }

    #[test]
    fn finds_avc_keyframes_in_any_chunking() {
        let data = sample();
        let mut whole = Vec::new();
        FlvKeyframes::new().push(&data, &mut whole);
        assert_eq!(whole, vec![0, 2000, 0x0100_0005]);
        for size in [1, 2, 3, 7, 12, 13, 14, 50] {
            let mut scanner = FlvKeyframes::new();
            let mut found = Vec::new();
            for piece in data.chunks(size) {
                scanner.push(piece, &mut found);
            }
            assert_eq!(found, whole, "chunks of {size}");
        }
    }

    #[test]
    fn ignores_what_is_not_flv() {
        let mut found = Vec::new();
        let mut scanner = FlvKeyframes::new();
        scanner.push(b"\x1aE\xdf\xa3 this is webm, not flv at all", &mut found);
        scanner.push(&sample(), &mut found);
        assert!(found.is_empty());
    }

    #[test]
    fn cadence_takes_whole_gops_up_to_the_target_plus_half_a_second() {
        let c = Cadence::for_interval(2000, 3.0).expect("2 s fits 3 s");
        assert_eq!(c.gops_per_segment, 1);
        assert_eq!(c.segment_seconds(), 2.0);
        assert_eq!(c.tolerance_ms(), 500);
        let c = Cadence::for_interval(1000, 3.0).expect("1 s fits");
        assert_eq!((c.gops_per_segment, c.segment_seconds()), (3, 3.0));
        assert_eq!(c.tolerance_ms(), 166);
        assert_eq!(
            Cadence::for_interval(3500, 3.0).map(Cadence::segment_seconds),
            Some(3.5)
        );
        assert_eq!(Cadence::for_interval(3501, 3.0), None);
        assert_eq!(Cadence::for_interval(8333, 3.0), None);
        assert_eq!(Cadence::for_interval(0, 3.0), None);
        assert_eq!(
            Cadence::detect(&[100, 2100, 4100], 3.0).map(|c| c.gop_ms),
            Some(2000)
        );
        assert_eq!(Cadence::detect(&[100], 3.0), None);
        assert_eq!(Cadence::detect(&[2100, 100], 3.0), None);
    }

    #[test]
    fn grid_accepts_jitter_and_extra_keyframes_but_not_a_missing_one() {
        let cadence = Cadence::for_interval(2002, 3.0).expect("fits");
        let mut grid = GridCheck::new(cadence);
        for t in [0, 2002, 4004, 6007, 7000, 8008, 10010] {
            assert!(grid.keyframe(t), "keyframe at {t}");
        }
        // The keyframe due at 12012 never comes: the next one is at 14014.
        assert!(!grid.keyframe(14014));

        let mut grid = GridCheck::new(cadence);
        assert!(grid.keyframe(1000));
        assert!(grid.keyframe(3002));
        // Shifted by more than the tolerance (500 ms for one GOP per segment).
        assert!(!grid.keyframe(5600));

        let mut grid = GridCheck::new(cadence);
        assert!(grid.keyframe(50_000));
        // Time jumping far back (a new timeline) breaks the grid.
        assert!(!grid.keyframe(10));
    }
}
