//! The FLV side of the ingest (`ingest/src/flv.rs`, `ingest/src/relay.rs`): a publisher's
//! audio/video/metadata messages with arbitrary bodies and timestamps, in any order, pushed
//! into a relay with small bounds while encoders subscribe, read slowly or not at all, and
//! leave.
//!
//! Checked: every subscriber's bytes are strict FLV (header, tag sizes, previous tag sizes)
//! whose first media tag is a start point; every tag a subscriber gets carries the body of a
//! message the publisher sent (or the metadata re-encoded); `encode_tag` output parses back
//! to its input; `onMetaData` bodies decode as AMF0 with the values given.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use bytes::Bytes;
use contract::control::MediaStream;
use contract::StreamId;
use futures::{FutureExt, StreamExt};
use ingest::flv::{self, TagKind};
use ingest::relay::{Relay, RelayConfig};
use libfuzzer_sys::fuzz_target;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use vstream_fuzz::{check_relayed_flv, parse_flv, paused_runtime};

#[derive(Debug, Arbitrary)]
struct Metadata {
    video_width: Option<u32>,
    video_height: Option<u32>,
    video_codec_id: Option<u32>,
    video_frame_rate: Option<f32>,
    video_bitrate_kbps: Option<u32>,
    audio_codec_id: Option<u32>,
    audio_bitrate_kbps: Option<u32>,
    audio_sample_rate: Option<u32>,
    audio_channels: Option<u32>,
    audio_is_stereo: Option<bool>,
    encoder: Option<String>,
}

impl Metadata {
    fn to_rml(&self) -> StreamMetadata {
        let mut m = StreamMetadata::new();
        m.video_width = self.video_width;
        m.video_height = self.video_height;
        m.video_codec_id = self.video_codec_id;
        m.video_frame_rate = self.video_frame_rate;
        m.video_bitrate_kbps = self.video_bitrate_kbps;
        m.audio_codec_id = self.audio_codec_id;
        m.audio_bitrate_kbps = self.audio_bitrate_kbps;
        m.audio_sample_rate = self.audio_sample_rate;
        m.audio_channels = self.audio_channels;
        m.audio_is_stereo = self.audio_is_stereo;
        m.encoder = self.encoder.clone();
        m
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Video {
        timestamp: u32,
        data: Vec<u8>,
    },
    Audio {
        timestamp: u32,
        data: Vec<u8>,
    },
    /// A video message of `len` bytes (large bodies without large inputs).
    BigVideo {
        timestamp: u32,
        first: [u8; 2],
        len: u16,
    },
    Metadata(Metadata),
    Subscribe,
    /// Reads up to `n` chunks from subscriber `which` (no waiting).
    Read {
        which: u8,
        n: u8,
    },
    /// Drops subscriber `which` (an encoder going away).
    Leave {
        which: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    gop_cache_max_bytes: u16,
    queue_len: u8,
    ops: Vec<Op>,
}

struct Sub {
    stream: Option<MediaStream>,
    got: Vec<u8>,
}

fn read_ready(sub: &mut Sub, n: usize) {
    let Some(stream) = sub.stream.as_mut() else {
        return;
    };
    for _ in 0..n {
        match stream.next().now_or_never() {
            Some(Some(chunk)) => sub.got.extend_from_slice(&chunk),
            Some(None) => {
                sub.stream = None;
                return;
            }
            None => return,
        }
    }
}

fuzz_target!(|input: Input| {
    let rt = paused_runtime();
    rt.block_on(async move {
        let relay = Relay::new(
            StreamId::generate(),
            RelayConfig {
                gop_cache_max_bytes: usize::from(input.gop_cache_max_bytes),
                queue_len: usize::from(input.queue_len),
            },
        );
        let mut subs: Vec<Sub> = Vec::new();
        // Bodies a subscriber may legitimately receive, by tag type.
        let mut sent: HashSet<(u8, Vec<u8>)> = HashSet::new();
        for op in input.ops {
            match op {
                Op::Video { timestamp, data } => {
                    check_tag(TagKind::Video, timestamp, &data);
                    relay.push_video(timestamp, &data);
                    sent.insert((9, data));
                }
                Op::Audio { timestamp, data } => {
                    check_tag(TagKind::Audio, timestamp, &data);
                    relay.push_audio(timestamp, &data);
                    sent.insert((8, data));
                }
                Op::BigVideo {
                    timestamp,
                    first,
                    len,
                } => {
                    let mut data = vec![0u8; usize::from(len) * 16];
                    for (d, f) in data.iter_mut().zip(first) {
                        *d = f;
                    }
                    relay.push_video(timestamp, &data);
                    sent.insert((9, data));
                }
                Op::Metadata(meta) => {
                    let meta = meta.to_rml();
                    check_metadata(&meta);
                    relay.set_metadata(&meta);
                    if let Ok(body) = flv::metadata_body(&meta) {
                        sent.insert((18, canonical_script(&body)));
                    }
                }
                Op::Subscribe => {
                    if subs.len() < 8 {
                        subs.push(Sub {
                            stream: relay.subscribe(),
                            got: Vec::new(),
                        });
                    }
                }
                Op::Read { which, n } => {
                    let which = usize::from(which) % subs.len().max(1);
                    if let Some(sub) = subs.get_mut(which) {
                        read_ready(sub, usize::from(n));
                    }
                }
                Op::Leave { which } => {
                    let which = usize::from(which) % subs.len().max(1);
                    if let Some(sub) = subs.get_mut(which) {
                        sub.stream = None;
                    }
                }
            }
            tokio::task::yield_now().await;
        }
        relay.close();
        assert!(
            relay.subscribe().is_none(),
            "a closed relay took a subscriber"
        );
        for mut sub in subs {
            // A subscriber that left mid-stream got a prefix: only whole streams are checked.
            if sub.stream.is_none() && !sub.got.is_empty() {
                continue;
            }
            if let Some(stream) = sub.stream.take() {
                let rest: Vec<Bytes> = stream.collect().await;
                for chunk in rest {
                    sub.got.extend_from_slice(&chunk);
                }
            }
            check_relayed_flv(&sub.got);
            if let Ok(parsed) = parse_flv(&sub.got) {
                for tag in parsed.tags {
                    let data = match tag.kind {
                        18 => canonical_script(&tag.data),
                        _ => tag.data.clone(),
                    };
                    assert!(
                        sent.contains(&(tag.kind, data)),
                        "a subscriber got a tag of type {} that was never sent ({} bytes)",
                        tag.kind,
                        tag.data.len()
                    );
                }
            }
        }
    });
});

/// A script tag's AMF0 values in a form that compares equal whatever the order of the object's
/// properties (`onMetaData` is built from a `HashMap`) and with NaN equal to itself.
fn canonical_script(body: &[u8]) -> Vec<u8> {
    let values = rml_amf0::deserialize(&mut &body[..]).expect("script data decodes");
    let mut out = String::new();
    for value in values {
        match value {
            Amf0Value::Object(props) => {
                let mut props: Vec<_> = props
                    .into_iter()
                    .map(|(k, v)| format!("{k:?}={v:?}"))
                    .collect();
                props.sort();
                out.push_str(&format!("{{{}}}", props.join(",")));
            }
            other => out.push_str(&format!("{other:?};")),
        }
    }
    out.into_bytes()
}

/// `encode_tag` output is one strict FLV tag carrying `data` and `timestamp`.
fn check_tag(kind: TagKind, timestamp: u32, data: &[u8]) {
    let Ok(tag) = flv::encode_tag(kind, timestamp, data) else {
        assert!(data.len() > flv::MAX_TAG_DATA_LEN);
        return;
    };
    let mut file = flv::file_header(true, true).to_vec();
    file.extend_from_slice(&tag);
    let parsed = parse_flv(&file).unwrap_or_else(|err| panic!("encode_tag output: {err}"));
    assert_eq!(parsed.tags.len(), 1);
    assert_eq!(parsed.tags[0].kind, kind.type_byte());
    assert_eq!(parsed.tags[0].timestamp, timestamp);
    assert_eq!(parsed.tags[0].data, data);
    // The classifiers look at the first bytes only and never panic.
    let info = flv::video_info(data);
    assert!(!(info.is_keyframe && info.is_sequence_header));
    let _ = flv::is_audio_sequence_header(data);
}

/// `onMetaData` decodes back to the announced values.
fn check_metadata(meta: &StreamMetadata) {
    let Ok(body) = flv::metadata_body(meta) else {
        // Only an AMF0 string longer than 65535 bytes cannot be encoded.
        assert!(meta.encoder.as_ref().is_some_and(|e| e.len() > 0xFFFF));
        return;
    };
    let values = rml_amf0::deserialize(&mut &body[..])
        .unwrap_or_else(|err| panic!("onMetaData does not decode: {err:?}"));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
    let props = values[1]
        .clone()
        .get_object_properties()
        .expect("onMetaData carries an object");
    let number = |name: &str| match props.get(name) {
        Some(Amf0Value::Number(n)) => Some(*n),
        None => None,
        Some(other) => panic!("{name} is {other:?}"),
    };
    assert_eq!(number("width"), meta.video_width.map(f64::from));
    assert_eq!(number("audiochannels"), meta.audio_channels.map(f64::from));
    let rate = number("framerate");
    match meta.video_frame_rate {
        Some(r) if r.is_nan() => assert!(rate.is_some_and(f64::is_nan)),
        other => assert_eq!(rate, other.map(f64::from)),
    }
    match (&meta.encoder, props.get("encoder")) {
        (Some(e), Some(Amf0Value::Utf8String(got))) => assert_eq!(e, got),
        (None, None) => {}
        (want, got) => panic!("encoder {want:?} came back as {got:?}"),
    }
}
