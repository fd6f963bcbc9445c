//! RFC 6381 codec strings for the master playlist's `CODECS`, read from what the encoder
//! actually produced: the H.264 sequence parameter set (SPS) in the first segment gives
//! `avc1.PPCCLL` (profile_idc, constraint flags, level_idc); for fMP4, whose segments carry no
//! in-band SPS, the `avcC` box of the initialization segment gives the same three bytes.

/// Used when no SPS can be found: High profile, level 4.0 (what most players accept).
pub const FALLBACK_AVC: &str = "avc1.640028";
/// AAC LC, the audio every rendition carries when the source has audio.
pub const AAC_LC: &str = "mp4a.40.2";

/// `profile_idc` values defined by H.264 (Annex A, G, H).
const KNOWN_PROFILES: [u8; 16] = [
    66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135,
];

/// Finds the first H.264 SPS in Annex B bytes (an MPEG-TS segment carries the elementary
/// stream with start codes) and returns `avc1.PPCCLL`.
///
/// The search is over raw bytes, so a candidate is only accepted when it looks like a real SPS:
/// NAL type 7 with `nal_ref_idc` ≠ 0 and the forbidden bit clear, a known `profile_idc`, the two
/// reserved constraint bits zero and a `level_idc` between 1 and 6.2.
pub fn avc_codec_from_annex_b(data: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = find_start_code(data, from) {
        let nal = pos + 3;
        from = nal;
        let Some(&[header, profile, constraints, level]) = data.get(nal..nal + 4) else {
            return None;
        };
        let is_sps = header & 0x1f == 7 && header & 0x80 == 0 && header & 0x60 != 0;
        if is_sps
            && KNOWN_PROFILES.contains(&profile)
            && constraints & 0x03 == 0
            && (9..=62).contains(&level)
        {
            return Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"));
        }
    }
    None
}

/// Reads `avc1.PPCCLL` from the `avcC` box (AVCDecoderConfigurationRecord) of an MP4
/// initialization segment: fMP4 segments carry no in-band SPS, the init segment does. The
/// record is `configurationVersion` (1), `AVCProfileIndication`, `profile_compatibility`,
/// `AVCLevelIndication`; a candidate is accepted under the same checks as an SPS.
pub fn avc_codec_from_avcc(init: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = init
        .get(from..)?
        .windows(4)
        .position(|w| w == b"avcC")
        .map(|p| from + p)
    {
        from = pos + 4;
        let Some(&[version, profile, constraints, level]) = init.get(pos + 4..pos + 8) else {
            return None;
        };
        if version == 1
            && KNOWN_PROFILES.contains(&profile)
            && constraints & 0x03 == 0
            && (9..=62).contains(&level)
        {
            return Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"));
        }
    }
    None
}

fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|p| from + p)
}

/// The `CODECS` attribute of a variant: the video codec, then AAC LC when there is audio.
pub fn codecs_attribute(video: &str, has_audio: bool) -> String {
    if has_audio {
        format!("{video},{AAC_LC}")
    } else {
        video.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of an SPS as x264 writes it for High profile, level 3.1.
    const HIGH_31: [u8; 12] = [
        0x00, 0x00, 0x00, 0x01, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50,
    ];

    #[test]
    fn reads_profile_constraints_and_level_from_the_sps() {
        assert_eq!(
            avc_codec_from_annex_b(&HIGH_31).as_deref(),
            Some("avc1.64001f")
        );
        // Constrained Baseline, level 1.2, after an AUD and a 3-byte start code.
        let baseline = [
            0x00, 0x00, 0x00, 0x01, 0x09, 0xf0, 0x00, 0x00, 0x01, 0x67, 0x42, 0xc0, 0x0c, 0xd9,
        ];
        assert_eq!(
            avc_codec_from_annex_b(&baseline).as_deref(),
            Some("avc1.42c00c")
        );
    }

    #[test]
    fn finds_the_sps_inside_a_transport_stream_packet() {
        let mut packet = vec![0x47, 0x41, 0x00, 0x30, 0x07, 0x50, 0x00, 0x00, 0x7b, 0x0c];
        // PES header: its start code is followed by stream id 0xe0, which is not an SPS.
        packet.extend_from_slice(&[0x00, 0x00, 0x01, 0xe0, 0x00, 0x00, 0x80, 0x80, 0x05]);
        packet.extend_from_slice(&[0x21, 0x00, 0x07, 0xd8, 0x61]);
        packet.extend_from_slice(&HIGH_31);
        packet.resize(188, 0xff);
        assert_eq!(
            avc_codec_from_annex_b(&packet).as_deref(),
            Some("avc1.64001f")
        );
    }

    #[test]
    fn refuses_bytes_that_only_resemble_an_sps() {
        // nal_ref_idc 0, unknown profile, reserved bits set, level 0, truncated.
        for bytes in [
            &[0u8, 0, 1, 0x07, 0x64, 0x00, 0x1f][..],
            &[0, 0, 1, 0x67, 0x13, 0x00, 0x1f],
            &[0, 0, 1, 0x67, 0x64, 0x03, 0x1f],
            &[0, 0, 1, 0x67, 0x64, 0x00, 0x00],
            &[0, 0, 1, 0x67, 0x64],
            &[],
        ] {
            assert_eq!(avc_codec_from_annex_b(bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn reads_the_codec_from_the_avcc_box_of_an_init_segment() {
        // The avcC box of an ffmpeg fMP4 init segment: size, "avcC", then the record.
        let mut init = vec![0u8; 40];
        init.extend_from_slice(b"\x00\x00\x00\x2favcC\x01\x42\xc0\x0d\xff\xe1");
        init.extend_from_slice(&[0; 16]);
        assert_eq!(avc_codec_from_avcc(&init).as_deref(), Some("avc1.42c00d"));
        // Text that merely contains the box name is skipped.
        let mut noisy = b"avcC\x07\x00\x00\x00".to_vec();
        noisy.extend_from_slice(&init);
        assert_eq!(avc_codec_from_avcc(&noisy).as_deref(), Some("avc1.42c00d"));
        assert_eq!(avc_codec_from_avcc(b"avcC\x01\x64"), None);
        assert_eq!(avc_codec_from_avcc(b"no box"), None);
    }

    #[test]
    fn codecs_attribute_adds_aac_only_with_audio() {
        assert_eq!(
            codecs_attribute("avc1.64001f", true),
            "avc1.64001f,mp4a.40.2"
        );
        assert_eq!(codecs_attribute(FALLBACK_AVC, false), "avc1.640028");
    }
}
