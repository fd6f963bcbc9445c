//! Storage object keys (SPEC §3), with the `Content-Type` and `Cache-Control` of each kind of
//! object. Keys are relative to the bucket root or configured prefix.

use crate::ids::StreamId;

/// Segment container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SegmentType {
    #[default]
    MpegTs,
    Fmp4,
}

impl SegmentType {
    pub fn extension(self) -> &'static str {
        match self {
            SegmentType::MpegTs => "ts",
            SegmentType::Fmp4 => "m4s",
        }
    }
}

/// `hls/{CHANNEL}/{STREAM_ID}`
pub fn stream_prefix(channel: &str, stream_id: &StreamId) -> String {
    format!("hls/{channel}/{stream_id}")
}

/// `hls/{CHANNEL}/{STREAM_ID}/master.m3u8`
pub fn master_playlist(channel: &str, stream_id: &StreamId) -> String {
    format!("hls/{channel}/{stream_id}/master.m3u8")
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}` (the rendition folder).
pub fn rendition_prefix(channel: &str, stream_id: &StreamId, rendition: &str) -> String {
    format!("hls/{channel}/{stream_id}/{rendition}")
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}/{N}.ts` (or `.m4s`).
pub fn segment(
    channel: &str,
    stream_id: &StreamId,
    rendition: &str,
    index: u64,
    kind: SegmentType,
) -> String {
    format!(
        "hls/{channel}/{stream_id}/{rendition}/{index}.{}",
        kind.extension()
    )
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}/init.mp4` (fMP4 only).
pub fn init_segment(channel: &str, stream_id: &StreamId, rendition: &str) -> String {
    format!("hls/{channel}/{stream_id}/{rendition}/init.mp4")
}

/// The name of the fMP4 initialization segment written by ffmpeg run `run` of a stream,
/// relative to the rendition folder: `init.mp4` for the first run, `init-{run}.mp4` after a
/// restart (objects are immutable: a new run's init segment never replaces the old one).
pub fn init_segment_name(run: u32) -> String {
    if run == 0 {
        "init.mp4".to_owned()
    } else {
        format!("init-{run}.mp4")
    }
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}/init.mp4`, or `init-{run}.mp4` after a restart.
pub fn init_segment_of_run(
    channel: &str,
    stream_id: &StreamId,
    rendition: &str,
    run: u32,
) -> String {
    format!(
        "hls/{channel}/{stream_id}/{rendition}/{}",
        init_segment_name(run)
    )
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}/live.m3u8`
pub fn live_playlist(channel: &str, stream_id: &StreamId, rendition: &str) -> String {
    format!("hls/{channel}/{stream_id}/{rendition}/live.m3u8")
}

/// `hls/{CHANNEL}/{STREAM_ID}/{RENDITION}/vod-{K}.m3u8`
pub fn vod_playlist(channel: &str, stream_id: &StreamId, rendition: &str, part: u64) -> String {
    format!("hls/{channel}/{stream_id}/{rendition}/vod-{part}.m3u8")
}

/// `img-preview/{CHANNEL}/{STREAM_ID}/{PREVIEW}`
pub fn preview_prefix(channel: &str, stream_id: &StreamId, preview: &str) -> String {
    format!("img-preview/{channel}/{stream_id}/{preview}")
}

/// `img-preview/{CHANNEL}/{STREAM_ID}/{PREVIEW}/{I}.jpg`
pub fn preview_image(channel: &str, stream_id: &StreamId, preview: &str, index: u64) -> String {
    format!("img-preview/{channel}/{stream_id}/{preview}/{index}.jpg")
}

/// `img-preview/{CHANNEL}/{STREAM_ID}/{PREVIEW}/index.json`
pub fn preview_index(channel: &str, stream_id: &StreamId, preview: &str) -> String {
    format!("img-preview/{channel}/{stream_id}/{preview}/index.json")
}

/// `Cache-Control` for playlists and `index.json`: they change every segment.
pub const CACHE_SHORT: &str = "no-cache";
/// `Cache-Control` for segments and images: never rewritten under the same key.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `Content-Type` and `Cache-Control` for an object key, by its extension.
pub fn object_headers(key: &str) -> (&'static str, &'static str) {
    let extension = key.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match extension {
        "m3u8" => ("application/vnd.apple.mpegurl", CACHE_SHORT),
        "ts" => ("video/mp2t", CACHE_IMMUTABLE),
        "m4s" => ("video/iso.segment", CACHE_IMMUTABLE),
        "mp4" => ("video/mp4", CACHE_IMMUTABLE),
        "jpg" | "jpeg" => ("image/jpeg", CACHE_IMMUTABLE),
        "json" => ("application/json", CACHE_SHORT),
        _ => ("application/octet-stream", CACHE_SHORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StreamId {
        StreamId::parse("0123456789abcdef0123456789abcdef").expect("valid")
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let id = id();
        assert_eq!(
            segment("c", &id, "640x360-30~800", 7, SegmentType::MpegTs),
            format!("hls/c/{id}/640x360-30~800/7.ts")
        );
        assert_eq!(
            live_playlist("c", &id, "640x360-30"),
            format!("hls/c/{id}/640x360-30/live.m3u8")
        );
        assert_eq!(
            vod_playlist("c", &id, "640x360-30", 2),
            format!("hls/c/{id}/640x360-30/vod-2.m3u8")
        );
        assert_eq!(master_playlist("c", &id), format!("hls/c/{id}/master.m3u8"));
        assert_eq!(
            init_segment_of_run("c", &id, "640x360-30", 0),
            init_segment("c", &id, "640x360-30")
        );
        assert_eq!(
            init_segment_of_run("c", &id, "640x360-30", 2),
            format!("hls/c/{id}/640x360-30/init-2.mp4")
        );
        assert_eq!(
            preview_image("c", &id, "256x144-2", 3),
            format!("img-preview/c/{id}/256x144-2/3.jpg")
        );
        assert_eq!(
            preview_index("c", &id, "256x144-2"),
            format!("img-preview/c/{id}/256x144-2/index.json")
        );
    }

    #[test]
    fn playlists_are_short_lived_and_media_is_immutable() {
        assert_eq!(
            object_headers("a/live.m3u8"),
            ("application/vnd.apple.mpegurl", CACHE_SHORT)
        );
        assert_eq!(object_headers("a/1.ts"), ("video/mp2t", CACHE_IMMUTABLE));
        assert_eq!(
            object_headers("a/1.m4s"),
            ("video/iso.segment", CACHE_IMMUTABLE)
        );
        assert_eq!(object_headers("a/init.mp4"), ("video/mp4", CACHE_IMMUTABLE));
        assert_eq!(object_headers("a/1.jpg"), ("image/jpeg", CACHE_IMMUTABLE));
        assert_eq!(
            object_headers("a/index.json"),
            ("application/json", CACHE_SHORT)
        );
    }
}
