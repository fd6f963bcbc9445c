//! The `x-previews` grammar (`contract::previews::PreviewSpec::parse_header`), channel and key
//! validation and stream IDs (`contract::ids`), and the storage keys built from them
//! (`contract::keys`).
//!
//! Input: `[selector][text...]`. Checked: a parsed preview spec is within bounds and prints
//! back to itself; `validate_id` agrees with `^[A-Za-z0-9_-]{1,max}$` and names the first
//! rule broken; `StreamId::parse` (and its JSON form) takes exactly 32 lowercase hex
//! characters; a storage key built from a valid channel and ID stays inside its folder.
#![no_main]

use contract::ids::{validate_id, IdError, StreamId};
use contract::keys::{self, SegmentType};
use contract::previews::{PreviewSpec, MAX_INTERVAL_SECONDS};
use contract::resolution::MAX_DIMENSION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text = text.as_ref();
    match selector % 3 {
        0 => previews(text),
        1 => ids(text, usize::from(*selector)),
        _ => stream_id(text),
    }
});

fn previews(text: &str) {
    match PreviewSpec::parse_header(Some(text)) {
        Ok(None) => assert!(text.trim().is_empty(), "{text:?} means no previews"),
        Ok(Some(spec)) => {
            assert!((2..=MAX_DIMENSION).contains(&spec.width), "{spec:?}");
            assert!((2..=MAX_DIMENSION).contains(&spec.height), "{spec:?}");
            assert!(
                (1..=MAX_INTERVAL_SECONDS).contains(&spec.interval_seconds),
                "{spec:?}"
            );
            assert_eq!(
                PreviewSpec::parse_header(Some(&spec.to_string())),
                Ok(Some(spec))
            );
            assert_eq!(
                spec.name(),
                format!("{}x{}-{}", spec.width, spec.height, spec.interval_seconds)
            );
            let json = serde_json::to_string(&spec).expect("encode");
            assert_eq!(serde_json::from_str::<PreviewSpec>(&json).ok(), Some(spec));
        }
        Err(_) => assert!(!text.trim().is_empty()),
    }
}

fn ids(text: &str, max: usize) {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let expected = if text.is_empty() {
        Err(IdError::Empty { what: "channel" })
    } else if text.len() > max {
        Err(IdError::TooLong {
            what: "channel",
            len: text.len(),
            max,
        })
    } else if !text.bytes().all(allowed) {
        Err(IdError::BadCharacter { what: "channel" })
    } else {
        Ok(())
    };
    assert_eq!(validate_id("channel", text, max), expected, "{text:?}");
    if expected.is_ok() {
        // A valid channel cannot leave its folder in storage.
        let id = StreamId::generate();
        let key = keys::segment(text, &id, "640x360-30", 7, SegmentType::MpegTs);
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert!(
            parts
                .iter()
                .all(|p| !p.is_empty() && *p != "." && *p != ".."),
            "{key}"
        );
        assert_eq!(parts[1], text);
    }
}

fn stream_id(text: &str) {
    let expected = text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parsed = StreamId::parse(text);
    assert_eq!(parsed.is_ok(), expected, "{text:?}");
    let json = serde_json::to_string(text).expect("a string encodes");
    let decoded = serde_json::from_str::<StreamId>(&json);
    assert_eq!(decoded.is_ok(), expected);
    if let (Ok(a), Ok(b)) = (parsed, decoded) {
        assert_eq!(a, b);
        assert_eq!(a.as_str(), text);
        assert_eq!(a.to_string(), text);
    }
}
