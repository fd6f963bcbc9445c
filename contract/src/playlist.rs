//! Rendering of the playlists the encoder writes: live (sliding window), VOD (growing, one per
//! part) and master (multivariant). RFC 8216 rules that apply: `EXT-X-TARGETDURATION` is at
//! least every segment's duration rounded up and never decreases, `EXT-X-MEDIA-SEQUENCE` and
//! `EXT-X-DISCONTINUITY-SEQUENCE` account for the segments that left the window, the
//! `EXT-X-PLAYLIST-TYPE` of a VOD playlist never changes (`EVENT`, then `EXT-X-ENDLIST` when it is
//! complete), and `EXT-X-ENDLIST` appears only when the stream ended.
//!
//! `EXT-X-MEDIA-SEQUENCE` of a live playlist is positional (the number of segments that left the
//! window), so a segment keeps its media sequence number across reloads even when segment
//! numbers have gaps (segments dropped while the store was down, marked by a discontinuity).
//! RFC 8216 also says the target duration must not change; the encoder forces a keyframe every
//! `HLS_TIME_SECONDS`, so segments are never longer than that plus a frame and the announced
//! target rarely moves; if a longer segment comes anyway, covering it (players stall on a
//! segment longer than the target) wins over keeping the value.

use std::collections::VecDeque;
use std::fmt::Write as _;

/// One media segment as listed in a playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    /// The segment's number: its key ends in `{index}.ts`.
    pub index: u64,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of the segment's first frame, in milliseconds since the Unix epoch.
    pub program_date_time_ms: u64,
    /// The timeline breaks before this segment (publisher reconnected, source changed).
    pub discontinuity: bool,
    /// URI relative to the playlist (`{index}.ts`).
    pub uri: String,
    /// The fMP4 initialization segment this segment needs (`init.mp4`), relative to the
    /// playlist; `None` for MPEG-TS. An `EXT-X-MAP` is written before the first segment and
    /// wherever it changes (a new ffmpeg run writes a new one).
    pub map_uri: Option<String>,
}

/// Formats milliseconds since the epoch as an ISO 8601 UTC timestamp with milliseconds.
pub fn format_date_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

fn ceil_duration(duration: f64) -> u64 {
    // A few microseconds of rounding in a duration must not push the target up a second.
    (duration - 0.001).ceil().max(1.0) as u64
}

/// What every media playlist of a rendition shares.
#[derive(Debug, Clone)]
pub struct MediaPlaylistHeader {
    /// `EXT-X-MAP` URI for fMP4 renditions (`init.mp4`): selects version 6, and is the map of
    /// segments that do not name their own ([`SegmentEntry::map_uri`]).
    pub map_uri: Option<String>,
}

fn write_header(
    out: &mut String,
    header: &MediaPlaylistHeader,
    target: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    playlist_type: Option<&str>,
) {
    let version = if header.map_uri.is_some() { 6 } else { 3 };
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    if discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
        );
    }
    if let Some(kind) = playlist_type {
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{kind}");
    }
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
}

/// Writes the segments, with an `EXT-X-MAP` before the first one and wherever the map changes.
fn write_segments<'a>(
    out: &mut String,
    header: &MediaPlaylistHeader,
    segments: impl IntoIterator<Item = &'a SegmentEntry>,
) {
    let mut current: Option<&str> = None;
    for segment in segments {
        let map = segment.map_uri.as_deref().or(header.map_uri.as_deref());
        if segment.discontinuity {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if let Some(uri) = map.filter(|&uri| current != Some(uri)) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\"");
        }
        current = map;
        write_segment(out, segment);
    }
}

fn write_segment(out: &mut String, segment: &SegmentEntry) {
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        format_date_time(segment.program_date_time_ms)
    );
    let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration);
    let _ = writeln!(out, "{}", segment.uri);
}

/// The live playlist of one rendition: the last `window` segments.
#[derive(Debug, Clone)]
pub struct LivePlaylist {
    header: MediaPlaylistHeader,
    window: usize,
    segments: VecDeque<SegmentEntry>,
    target: u64,
    /// Media sequence number of the first segment in the window: the number of segments that
    /// left it (positional, so a segment keeps its number even when segment numbers have gaps).
    media_sequence: u64,
    discontinuity_sequence: u64,
    ended: bool,
}

impl LivePlaylist {
    /// `target_seconds` is the configured segment duration (`HLS_TIME_SECONDS`); the
    /// announced target grows if a longer segment is ever added.
    pub fn new(header: MediaPlaylistHeader, window: usize, target_seconds: f64) -> Self {
        LivePlaylist {
            header,
            window: window.max(1),
            segments: VecDeque::new(),
            target: ceil_duration(target_seconds),
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended: false,
        }
    }

    /// Adds a segment that is stored and readable. Returns the segments that left the window.
    pub fn push(&mut self, segment: SegmentEntry) -> Vec<SegmentEntry> {
        self.target = self.target.max(ceil_duration(segment.duration));
        self.segments.push_back(segment);
        let mut evicted = Vec::new();
        while self.segments.len() > self.window {
            if let Some(old) = self.segments.pop_front() {
                self.media_sequence += 1;
                evicted.push(old);
            }
            // The discontinuity tag of a segment that left is counted in the sequence.
            if self.segments.front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_sequence += 1;
                if let Some(first) = self.segments.front_mut() {
                    first.discontinuity = false;
                }
            }
        }
        evicted
    }

    /// Marks the stream as ended: the playlist gets `EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegmentEntry> {
        self.segments.iter()
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 96);
        write_header(
            &mut out,
            &self.header,
            self.target,
            self.media_sequence,
            self.discontinuity_sequence,
            None,
        );
        write_segments(&mut out, &self.header, &self.segments);
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }
}

/// One part of a recording (`vod-{K}.m3u8`): every segment from the first of the part on.
/// Typed `EVENT` while it grows; `EXT-X-ENDLIST` is added only when it is complete.
#[derive(Debug, Clone)]
pub struct VodPlaylist {
    header: MediaPlaylistHeader,
    segments: Vec<SegmentEntry>,
    target: u64,
    ended: bool,
}

impl VodPlaylist {
    pub fn new(header: MediaPlaylistHeader, target_seconds: f64) -> Self {
        VodPlaylist {
            header,
            segments: Vec::new(),
            target: ceil_duration(target_seconds),
            ended: false,
        }
    }

    pub fn push(&mut self, mut segment: SegmentEntry) {
        self.target = self.target.max(ceil_duration(segment.duration));
        if self.segments.is_empty() {
            // A part starts a new playlist: no break to mark before its first segment.
            segment.discontinuity = false;
        }
        self.segments.push(segment);
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Total duration of the part in seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 96);
        let media_sequence = self.segments.first().map_or(0, |s| s.index);
        write_header(
            &mut out,
            &self.header,
            self.target,
            media_sequence,
            0,
            Some("EVENT"),
        );
        write_segments(&mut out, &self.header, &self.segments);
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }
}

/// One variant of the master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// URI relative to the master playlist (`{rendition}/live.m3u8`).
    pub uri: String,
    /// Peak bit rate in bit/s.
    pub bandwidth: u64,
    /// Average bit rate in bit/s.
    pub average_bandwidth: u64,
    /// RFC 6381 codecs, such as `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
}

/// `BANDWIDTH` values that grow with the picture: each variant's is raised above every smaller
/// variant's. Players rank variants by `BANDWIDTH`; a measured peak can invert that order (an
/// easy source at a quality setting can cost less than a small rendition at its fixed rate), and
/// raising a value keeps it the upper bound RFC 8216 asks for.
fn ordered_bandwidths(variants: &[Variant]) -> Vec<u64> {
    let size = |v: &Variant| (u64::from(v.width) * u64::from(v.height), v.frame_rate);
    variants
        .iter()
        .map(|v| {
            let floor = variants
                .iter()
                .filter(|o| {
                    let (area, fps) = size(o);
                    let (own_area, own_fps) = size(v);
                    area < own_area || (area == own_area && fps < own_fps)
                })
                .map(|o| o.bandwidth + 1)
                .max()
                .unwrap_or(0);
            v.bandwidth.max(floor)
        })
        .collect()
}

/// Renders the multivariant playlist. `fmp4` selects version 6 (as the media playlists use).
pub fn render_master(variants: &[Variant], fmp4: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if fmp4 { 6 } else { 3 });
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    for (v, bandwidth) in variants.iter().zip(ordered_bandwidths(variants)) {
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\",RESOLUTION={}x{},FRAME-RATE={:.3}",
            bandwidth, v.average_bandwidth, v.codecs, v.width, v.height, v.frame_rate
        );
        let _ = writeln!(out, "{}", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use m3u8_rs::Playlist;

    fn seg(index: u64, duration: f64, discontinuity: bool) -> SegmentEntry {
        SegmentEntry {
            index,
            duration,
            program_date_time_ms: 1_764_000_000_000 + index * 3000,
            discontinuity,
            uri: format!("{index}.ts"),
            map_uri: None,
        }
    }

    fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MediaPlaylist(p)) => p,
            other => panic!("not a media playlist: {other:?}\n{text}"),
        }
    }

    #[test]
    fn formats_program_date_time_in_utc() {
        assert_eq!(format_date_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_date_time(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_date_time(1_795_996_800_000),
            "2026-11-30T00:00:00.000Z"
        );
    }

    #[test]
    fn live_window_slides_and_counts_media_sequence() {
        let mut live = LivePlaylist::new(MediaPlaylistHeader { map_uri: None }, 3, 3.0);
        for i in 0..5 {
            live.push(seg(i, 3.0, false));
        }
        let p = parse_media(&live.render());
        assert_eq!(p.media_sequence, 2);
        assert_eq!(p.target_duration, 3);
        assert!(!p.end_list);
        let uris: Vec<_> = p.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["2.ts", "3.ts", "4.ts"]);
        assert!(p.segments.iter().all(|s| s.program_date_time.is_some()));
        assert!(p.independent_segments);
        live.end();
        assert!(parse_media(&live.render()).end_list);
    }

    #[test]
    fn target_duration_covers_the_longest_segment_rounded_up_and_never_shrinks() {
        let mut live = LivePlaylist::new(MediaPlaylistHeader { map_uri: None }, 2, 3.0);
        live.push(seg(0, 3.0000001, false));
        assert_eq!(parse_media(&live.render()).target_duration, 3);
        live.push(seg(1, 4.2, false));
        live.push(seg(2, 3.0, false));
        live.push(seg(3, 3.0, false));
        assert_eq!(parse_media(&live.render()).target_duration, 5);
    }

    #[test]
    fn discontinuities_are_tagged_and_counted_when_they_leave_the_window() {
        let mut live = LivePlaylist::new(MediaPlaylistHeader { map_uri: None }, 2, 3.0);
        live.push(seg(0, 3.0, false));
        live.push(seg(1, 3.0, true));
        let p = parse_media(&live.render());
        assert!(p.segments[1].discontinuity);
        assert_eq!(p.discontinuity_sequence, 0);
        live.push(seg(2, 3.0, false));
        live.push(seg(3, 3.0, false));
        let text = live.render();
        let p = parse_media(&text);
        assert_eq!(p.discontinuity_sequence, 1, "{text}");
        assert!(p.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn vod_is_an_event_playlist_until_complete() {
        let mut vod = VodPlaylist::new(MediaPlaylistHeader { map_uri: None }, 3.0);
        vod.push(seg(4, 3.0, true));
        vod.push(seg(5, 2.5, false));
        let p = parse_media(&vod.render());
        assert_eq!(p.media_sequence, 4);
        assert_eq!(p.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event));
        assert!(!p.end_list);
        assert!(!p.segments[0].discontinuity);
        assert!((vod.duration() - 5.5).abs() < 1e-9);
        vod.end();
        assert!(parse_media(&vod.render()).end_list);
    }

    #[test]
    fn fmp4_playlists_name_their_init_segment() {
        let mut live = LivePlaylist::new(
            MediaPlaylistHeader {
                map_uri: Some("init.mp4".into()),
            },
            3,
            3.0,
        );
        live.push(seg(0, 3.0, false));
        let p = parse_media(&live.render());
        assert_eq!(p.version, Some(6));
        assert_eq!(
            p.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init.mp4")
        );
    }

    #[test]
    fn media_sequence_is_positional_when_segment_numbers_have_gaps() {
        // Segments 2 and 3 were never stored (dropped while the store was down).
        let mut live = LivePlaylist::new(MediaPlaylistHeader { map_uri: None }, 2, 3.0);
        for (index, discontinuity) in [(0, false), (1, false), (4, true)] {
            live.push(seg(index, 3.0, discontinuity));
        }
        let p = parse_media(&live.render());
        assert_eq!(p.media_sequence, 1);
        assert!(p.segments[1].discontinuity);
        live.push(seg(5, 3.0, false));
        let p = parse_media(&live.render());
        // 4.ts is the third segment ever listed: its media sequence number is 2, and stays 2.
        assert_eq!(p.media_sequence, 2);
        assert_eq!(p.segments[0].uri, "4.ts");
        // Its break is now counted in the discontinuity sequence.
        assert_eq!(p.discontinuity_sequence, 1);
        live.push(seg(6, 3.0, false));
        let p = parse_media(&live.render());
        assert_eq!((p.media_sequence, p.discontinuity_sequence), (3, 1));
        assert_eq!(p.segments[0].uri, "5.ts");
    }

    #[test]
    fn a_new_init_segment_gets_its_own_map_after_the_break() {
        let header = MediaPlaylistHeader {
            map_uri: Some("init.mp4".into()),
        };
        let fmp4 = |index: u64, discontinuity: bool, map: &str| SegmentEntry {
            uri: format!("{index}.m4s"),
            map_uri: Some(map.into()),
            ..seg(index, 3.0, discontinuity)
        };
        let mut live = LivePlaylist::new(header, 3, 3.0);
        live.push(fmp4(0, false, "init.mp4"));
        live.push(fmp4(1, false, "init.mp4"));
        live.push(fmp4(2, true, "init-1.mp4"));
        let text = live.render();
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2, "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"));
        let p = parse_media(&text);
        let maps: Vec<_> = p
            .segments
            .iter()
            .map(|s| s.map.as_ref().map(|m| m.uri.clone()))
            .collect();
        assert_eq!(
            maps,
            [Some("init.mp4".into()), None, Some("init-1.mp4".into())]
        );
        // Once the window slid past the break, the first segment names the new map.
        live.push(fmp4(3, false, "init-1.mp4"));
        live.push(fmp4(4, false, "init-1.mp4"));
        let text = live.render();
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1, "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init-1.mp4\""));
    }

    #[test]
    fn a_larger_picture_never_announces_less_bandwidth_than_a_smaller_one() {
        let variant = |w: u32, h: u32, bandwidth: u64| Variant {
            uri: format!("{w}x{h}/live.m3u8"),
            bandwidth,
            average_bandwidth: bandwidth / 2,
            codecs: "avc1.64001f".into(),
            width: w,
            height: h,
            frame_rate: 30.0,
        };
        let text = render_master(
            &[variant(640, 360, 287_000), variant(320, 180, 428_000)],
            false,
        );
        let master = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MasterPlaylist(m)) => m,
            other => panic!("not a master playlist: {other:?}"),
        };
        assert_eq!(
            master.variants[0].bandwidth, 428_001,
            "raised above the smaller picture"
        );
        assert_eq!(master.variants[1].bandwidth, 428_000, "unchanged");
        assert_eq!(
            master.variants[0].average_bandwidth,
            Some(143_500),
            "the measured average stays"
        );
    }

    #[test]
    fn master_lists_every_variant_with_its_attributes() {
        let text = render_master(
            &[
                Variant {
                    uri: "1280x720-30/live.m3u8".into(),
                    bandwidth: 3_000_000,
                    average_bandwidth: 2_500_000,
                    codecs: "avc1.64001f,mp4a.40.2".into(),
                    width: 1280,
                    height: 720,
                    frame_rate: 30.0,
                },
                Variant {
                    uri: "640x360-30~800/live.m3u8".into(),
                    bandwidth: 1_000_000,
                    average_bandwidth: 900_000,
                    codecs: "avc1.64001e,mp4a.40.2".into(),
                    width: 640,
                    height: 360,
                    frame_rate: 29.97,
                },
            ],
            false,
        );
        let master = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MasterPlaylist(m)) => m,
            other => panic!("not a master playlist: {other:?}"),
        };
        assert_eq!(master.variants.len(), 2);
        let v = &master.variants[1];
        assert_eq!(v.uri, "640x360-30~800/live.m3u8");
        assert_eq!(v.bandwidth, 1_000_000);
        assert_eq!(v.average_bandwidth, Some(900_000));
        assert_eq!(v.codecs.as_deref(), Some("avc1.64001e,mp4a.40.2"));
        assert_eq!(v.resolution.map(|r| (r.width, r.height)), Some((640, 360)));
        assert!(v.frame_rate.is_some_and(|f| (f - 29.97).abs() < 1e-6));
    }
}
