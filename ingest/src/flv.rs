//! FLV encoding (file header, tags, `onMetaData`) and the few codec-header checks the relay
//! needs (sequence headers, keyframes). Pure functions, no I/O.
//!
//! An FLV file is a 9-byte header, a 4-byte "previous tag size" of 0, then tags: an 11-byte
//! tag header (type, 24-bit data size, 24-bit timestamp + 8-bit extension, 24-bit stream ID 0),
//! the data (the RTMP audio/video/data message body as is) and the 4-byte size of the tag
//! (header + data).

use bytes::{BufMut, Bytes, BytesMut};
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;
use std::collections::HashMap;

/// Size of an FLV tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// Size of the "previous tag size" field after each tag.
pub const PREVIOUS_TAG_SIZE_LEN: usize = 4;
/// Largest tag data (24-bit size field).
pub const MAX_TAG_DATA_LEN: usize = 0xFF_FFFF;
/// Size of the file header including the first (zero) previous tag size.
pub const FILE_HEADER_LEN: usize = 13;

/// The kind of an FLV tag (its type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

impl TagKind {
    pub fn type_byte(self) -> u8 {
        match self {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        }
    }
}

/// Why a tag could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum FlvError {
    #[error("tag data of {len} bytes does not fit FLV's 24-bit size field")]
    TagTooLarge { len: usize },
    #[error("AMF0 encoding of onMetaData failed: {0}")]
    Amf0(#[from] rml_amf0::Amf0SerializationError),
}

/// The FLV file header followed by the first previous-tag-size (0).
pub fn file_header(has_audio: bool, has_video: bool) -> Bytes {
    let mut flags = 0u8;
    if has_audio {
        flags |= 0x04;
    }
    if has_video {
        flags |= 0x01;
    }
    let mut b = BytesMut::with_capacity(FILE_HEADER_LEN);
    b.put_slice(b"FLV");
    b.put_u8(1);
    b.put_u8(flags);
    b.put_u32(9);
    b.put_u32(0);
    b.freeze()
}

/// One complete FLV tag: header, `data`, previous tag size. `timestamp` is in milliseconds
/// (the RTMP timestamp); its top 8 bits go to the extension byte.
pub fn encode_tag(kind: TagKind, timestamp: u32, data: &[u8]) -> Result<Bytes, FlvError> {
    if data.len() > MAX_TAG_DATA_LEN {
        return Err(FlvError::TagTooLarge { len: data.len() });
    }
    let mut b = BytesMut::with_capacity(TAG_HEADER_LEN + data.len() + PREVIOUS_TAG_SIZE_LEN);
    put_tag(&mut b, kind, timestamp, data);
    Ok(b.freeze())
}

/// Where a relay encodes its tags: consecutive tags share blocks of [`TagArena::BLOCK`]
/// bytes instead of taking one allocation each (a video frame is tens of kilobytes, and an
/// allocation and a free per tag was a visible part of the relay's CPU). A block is freed when
/// the last tag in it is dropped, so what a block keeps alive is bounded by one block per
/// tag still held (GOP cache, subscriber queues).
#[derive(Debug, Default)]
pub struct TagArena {
    /// The free rest of the current block (always empty: written tags are split off).
    block: BytesMut,
}

impl TagArena {
    /// Size of a block (a larger tag gets a block of its own size).
    pub const BLOCK: usize = 64 * 1024;

    /// Like [`encode_tag`], written into the current block.
    pub fn encode(
        &mut self,
        kind: TagKind,
        timestamp: u32,
        data: &[u8],
    ) -> Result<Bytes, FlvError> {
        if data.len() > MAX_TAG_DATA_LEN {
            return Err(FlvError::TagTooLarge { len: data.len() });
        }
        let len = TAG_HEADER_LEN + data.len() + PREVIOUS_TAG_SIZE_LEN;
        if self.block.capacity() < len {
            self.block = BytesMut::with_capacity(len.max(Self::BLOCK));
        }
        put_tag(&mut self.block, kind, timestamp, data);
        Ok(self.block.split().freeze())
    }
}

/// Writes one complete tag (header, data, previous tag size); `data` fits the size field.
fn put_tag(b: &mut BytesMut, kind: TagKind, timestamp: u32, data: &[u8]) {
    let len = data.len() as u32;
    b.put_u8(kind.type_byte());
    put_u24(b, len);
    put_u24(b, timestamp & 0xFF_FFFF);
    b.put_u8((timestamp >> 24) as u8);
    put_u24(b, 0);
    b.put_slice(data);
    b.put_u32(TAG_HEADER_LEN as u32 + len);
}

fn put_u24(b: &mut BytesMut, v: u32) {
    b.put_u8((v >> 16) as u8);
    b.put_u8((v >> 8) as u8);
    b.put_u8(v as u8);
}

/// The data of an `onMetaData` script tag for what the publisher announced. `rml_rtmp` hands
/// the parsed subset of `@setDataFrame`, so this re-encodes those fields (the original
/// message is not available).
pub fn metadata_body(metadata: &StreamMetadata) -> Result<Bytes, FlvError> {
    let mut p: HashMap<String, Amf0Value> = HashMap::with_capacity(11);
    let mut num = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            p.insert(name.to_owned(), Amf0Value::Number(v));
        }
    };
    num("width", metadata.video_width.map(f64::from));
    num("height", metadata.video_height.map(f64::from));
    num("videocodecid", metadata.video_codec_id.map(f64::from));
    num("videodatarate", metadata.video_bitrate_kbps.map(f64::from));
    num("framerate", metadata.video_frame_rate.map(f64::from));
    num("audiocodecid", metadata.audio_codec_id.map(f64::from));
    num("audiodatarate", metadata.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", metadata.audio_sample_rate.map(f64::from));
    num("audiochannels", metadata.audio_channels.map(f64::from));
    if let Some(stereo) = metadata.audio_is_stereo {
        p.insert("stereo".to_owned(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &metadata.encoder {
        p.insert("encoder".to_owned(), Amf0Value::Utf8String(encoder.clone()));
    }
    let values = vec![
        Amf0Value::Utf8String("onMetaData".to_owned()),
        Amf0Value::Object(p),
    ];
    Ok(Bytes::from(rml_amf0::serialize(&values)?))
}

/// What a video tag's data is, as far as the relay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoInfo {
    /// Decoder configuration (AVC/HEVC sequence header, enhanced-RTMP `SequenceStart`).
    pub is_sequence_header: bool,
    /// A frame a decoder can start at (key frame carrying picture data).
    pub is_keyframe: bool,
}

/// Classifies the body of an RTMP video message / FLV video tag. Understands the classic
/// header (frame type, codec ID, AVC packet type) and enhanced RTMP (`IsExHeader` bit).
pub fn video_info(data: &[u8]) -> VideoInfo {
    let Some(&first) = data.first() else {
        return VideoInfo::default();
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: [IsExHeader:1][FrameType:3][PacketType:4][FourCC:4]...
        let frame_type = (first >> 4) & 0x07;
        let packet_type = first & 0x0F;
        let is_sequence_header = packet_type == 0 || packet_type == 5; // SequenceStart, MPEG2TSSequenceStart
        let is_media = matches!(packet_type, 1 | 3); // CodedFrames, CodedFramesX
        return VideoInfo {
            is_sequence_header,
            is_keyframe: frame_type == 1 && is_media,
        };
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0F;
    // AVC (7) and the common HEVC extension (12) carry a packet type byte: 0 = sequence
    // header, 1 = NALUs, 2 = end of sequence.
    if codec_id == 7 || codec_id == 12 {
        let packet_type = data.get(1).copied();
        return VideoInfo {
            is_sequence_header: packet_type == Some(0),
            is_keyframe: frame_type == 1 && packet_type == Some(1),
        };
    }
    VideoInfo {
        is_sequence_header: false,
        is_keyframe: frame_type == 1,
    }
}

/// Whether the body of an RTMP audio message / FLV audio tag is decoder configuration
/// (AAC `AudioSpecificConfig`, enhanced-RTMP audio `SequenceStart`).
pub fn is_audio_sequence_header(data: &[u8]) -> bool {
    match data.first() {
        Some(&first) if first >> 4 == 10 => data.get(1) == Some(&0),
        Some(&first) if first >> 4 == 9 => first & 0x0F == 0,
        _ => false,
    }
}

/// A parsed FLV file, for tests.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ParsedFlv {
    pub has_audio: bool,
    pub has_video: bool,
    pub tags: Vec<(u8, u32, Vec<u8>)>,
}

/// Parses an FLV file strictly (every size field checked), for tests.
#[cfg(test)]
pub(crate) fn parse(bytes: &[u8]) -> Result<ParsedFlv, String> {
    if bytes.len() < FILE_HEADER_LEN || &bytes[..3] != b"FLV" || bytes[3] != 1 {
        return Err("bad file header".into());
    }
    let flags = bytes[4];
    if bytes[5..9] != [0, 0, 0, 9] || bytes[9..13] != [0, 0, 0, 0] {
        return Err("bad header size or first previous tag size".into());
    }
    let mut tags = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at < bytes.len() {
        let h = bytes
            .get(at..at + TAG_HEADER_LEN)
            .ok_or("truncated tag header")?;
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        if h[8..11] != [0, 0, 0] {
            return Err(format!("tag at {at}: stream id not 0"));
        }
        let data = bytes
            .get(at + TAG_HEADER_LEN..at + TAG_HEADER_LEN + size)
            .ok_or("truncated tag data")?;
        let prev_at = at + TAG_HEADER_LEN + size;
        let prev = bytes
            .get(prev_at..prev_at + 4)
            .ok_or("truncated previous tag size")?;
        let prev = u32::from_be_bytes([prev[0], prev[1], prev[2], prev[3]]) as usize;
        if prev != TAG_HEADER_LEN + size {
            return Err(format!("tag at {at}: previous tag size {prev} is wrong"));
        }
        tags.push((h[0], ts, data.to_vec()));
        at = prev_at + 4;
    }
    Ok(ParsedFlv {
        has_audio: flags & 0x04 != 0,
        has_video: flags & 0x01 != 0,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_header_announces_the_streams_present() {
        assert_eq!(
            &file_header(true, true)[..],
            &[b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        assert_eq!(file_header(false, true)[4], 0x01);
        assert_eq!(file_header(true, false)[4], 0x04);
        assert_eq!(file_header(false, false)[4], 0x00);
    }

    #[test]
    fn a_tag_has_its_header_data_and_previous_size() {
        let tag = encode_tag(TagKind::Video, 0x0102_0304, &[0x17, 1, 2, 3]).expect("encode");
        assert_eq!(
            &tag[..],
            &[
                9, 0, 0, 4, // type, size
                0x02, 0x03, 0x04, 0x01, // timestamp low 24 bits, then the extension byte
                0, 0, 0, // stream id
                0x17, 1, 2, 3, // data
                0, 0, 0, 15 // previous tag size = 11 + 4
            ]
        );
    }

    #[test]
    fn the_arena_encodes_like_encode_tag_and_shares_blocks() {
        let mut arena = TagArena::default();
        let data: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
        let mut tags = Vec::new();
        for (i, kind) in [TagKind::Video, TagKind::Audio, TagKind::Script]
            .into_iter()
            .cycle()
            .take(12)
            .enumerate()
        {
            let ts = 1000 * i as u32 + (1 << 24);
            let encoded = arena
                .encode(kind, ts, &data[..1000 * (i + 1)])
                .expect("encode");
            let expected = encode_tag(kind, ts, &data[..1000 * (i + 1)]).expect("encode");
            assert_eq!(encoded, expected);
            tags.push(encoded);
        }
        // A tag larger than a block gets its own.
        let big = vec![7u8; TagArena::BLOCK * 2];
        let encoded = arena.encode(TagKind::Video, 5, &big).expect("encode");
        assert_eq!(
            encoded,
            encode_tag(TagKind::Video, 5, &big).expect("encode")
        );
        // Earlier tags are untouched by later writes.
        for (i, tag) in tags.iter().enumerate() {
            assert_eq!(
                &tag[TAG_HEADER_LEN..TAG_HEADER_LEN + 1000 * (i + 1)],
                &data[..1000 * (i + 1)]
            );
        }
        let too_big = vec![0u8; MAX_TAG_DATA_LEN + 1];
        assert!(matches!(
            arena.encode(TagKind::Video, 0, &too_big),
            Err(FlvError::TagTooLarge { .. })
        ));
    }

    #[test]
    fn audio_and_script_tags_use_their_type_bytes() {
        assert_eq!(encode_tag(TagKind::Audio, 0, &[]).expect("encode")[0], 8);
        assert_eq!(encode_tag(TagKind::Script, 0, &[]).expect("encode")[0], 18);
    }

    #[test]
    fn oversized_tag_data_is_refused() {
        let data = vec![0u8; MAX_TAG_DATA_LEN + 1];
        assert!(matches!(
            encode_tag(TagKind::Video, 0, &data),
            Err(FlvError::TagTooLarge { .. })
        ));
    }

    #[test]
    fn encoded_tags_parse_back() {
        let mut file = file_header(true, true).to_vec();
        file.extend_from_slice(&encode_tag(TagKind::Audio, 5, &[0xAF, 1, 9]).expect("encode"));
        file.extend_from_slice(&encode_tag(TagKind::Video, 1 << 24, &[0x27, 1]).expect("encode"));
        let parsed = parse(&file).expect("parse");
        assert!(parsed.has_audio && parsed.has_video);
        assert_eq!(
            parsed.tags,
            vec![(8, 5, vec![0xAF, 1, 9]), (9, 1 << 24, vec![0x27, 1])]
        );
    }

    #[test]
    fn metadata_is_an_onmetadata_amf0_object() {
        let mut m = StreamMetadata::new();
        m.video_width = Some(320);
        m.video_height = Some(180);
        m.video_codec_id = Some(7);
        m.audio_is_stereo = Some(true);
        m.encoder = Some("Lavf".into());
        let body = metadata_body(&m).expect("encode");
        let values = rml_amf0::deserialize(&mut &body[..]).expect("decode");
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
        let props = values[1].clone().get_object_properties().expect("object");
        assert_eq!(props.get("width"), Some(&Amf0Value::Number(320.0)));
        assert_eq!(props.get("height"), Some(&Amf0Value::Number(180.0)));
        assert_eq!(props.get("videocodecid"), Some(&Amf0Value::Number(7.0)));
        assert_eq!(props.get("stereo"), Some(&Amf0Value::Boolean(true)));
        assert_eq!(
            props.get("encoder"),
            Some(&Amf0Value::Utf8String("Lavf".into()))
        );
        assert!(!props.contains_key("audiocodecid"));
    }

    #[test]
    fn avc_sequence_headers_and_keyframes_are_recognised() {
        assert_eq!(
            video_info(&[0x17, 0, 0, 0, 0]),
            VideoInfo {
                is_sequence_header: true,
                is_keyframe: false
            }
        );
        assert_eq!(
            video_info(&[0x17, 1, 0, 0, 0]),
            VideoInfo {
                is_sequence_header: false,
                is_keyframe: true
            }
        );
        assert_eq!(video_info(&[0x27, 1, 0, 0, 0]), VideoInfo::default());
        // End of sequence is neither.
        assert_eq!(video_info(&[0x17, 2, 0, 0, 0]), VideoInfo::default());
        assert_eq!(video_info(&[]), VideoInfo::default());
        // A non-AVC classic codec: the frame type decides.
        assert!(video_info(&[0x12]).is_keyframe);
    }

    #[test]
    fn enhanced_rtmp_video_headers_are_recognised() {
        // IsExHeader | key frame | SequenceStart, FourCC hvc1
        assert!(video_info(&[0x90, b'h', b'v', b'c', b'1']).is_sequence_header);
        // IsExHeader | key frame | CodedFrames
        assert!(video_info(&[0x91, b'h', b'v', b'c', b'1']).is_keyframe);
        // IsExHeader | inter frame | CodedFramesX
        assert_eq!(
            video_info(&[0xA3, b'h', b'v', b'c', b'1']),
            VideoInfo::default()
        );
    }

    #[test]
    fn aac_sequence_headers_are_recognised() {
        assert!(is_audio_sequence_header(&[0xAF, 0, 0x12, 0x10]));
        assert!(!is_audio_sequence_header(&[0xAF, 1, 0x21]));
        assert!(!is_audio_sequence_header(&[0x2F, 0]));
        assert!(!is_audio_sequence_header(&[]));
    }
}
