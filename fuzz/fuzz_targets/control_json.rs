//! The messages that cross process boundaries as JSON: the control-plane types of
//! `contract/src/control.rs` (HTTP bodies ingest/encoder → coordinator, Redis pub/sub
//! coordinator → nodes), the coordinator's internal request and answer bodies
//! (`coordinator-fn/src/internal.rs`) and the records it keeps in Redis.
//!
//! Input: `[type][json...]`. Checked: decoding never panics, and whatever decodes encodes
//! and decodes back to the same value (a message that survives one hop survives the next).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T>(json: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(json) else {
        return;
    };
    let encoded = serde_json::to_vec(&value).expect("a decoded message encodes");
    let decoded: T = serde_json::from_slice(&encoded).unwrap_or_else(|err| {
        panic!(
            "{} does not decode its own encoding {}: {err}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(decoded, value, "{}", String::from_utf8_lossy(&encoded));
    // The same through serde_json::Value (how the Redis bus and some tests read messages).
    if let Ok(tree) = serde_json::from_slice::<serde_json::Value>(json) {
        if let Ok(from_tree) = serde_json::from_value::<T>(tree) {
            assert_eq!(from_tree, value);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, json @ ..] = data else {
        return;
    };
    use contract::control::*;
    use coordinator_fn::internal::*;
    use coordinator_fn::state::*;
    use coordinator_fn::webapp::*;
    match selector % 24 {
        0 => round_trip::<PublishRequest>(json),
        1 => round_trip::<PublishGrant>(json),
        2 => round_trip::<PublishRefusal>(json),
        3 => round_trip::<EncoderJob>(json),
        4 => round_trip::<EncoderCommand>(json),
        5 => round_trip::<IngestCommand>(json),
        6 => round_trip::<EncoderEvent>(json),
        7 => round_trip::<StreamOptions>(json),
        8 => round_trip::<SourceKind>(json),
        9 => round_trip::<StreamType>(json),
        10 => round_trip::<contract::StreamId>(json),
        11 => round_trip::<contract::ResolutionRequest>(json),
        12 => round_trip::<contract::PreviewSpec>(json),
        13 => round_trip::<contract::token::Claims>(json),
        14 => round_trip::<PublishAnswer>(json),
        15 => round_trip::<PublishEnded>(json),
        16 => round_trip::<Heartbeat>(json),
        17 => round_trip::<EncoderNode>(json),
        18 => round_trip::<IngestNode>(json),
        19 => round_trip::<EncoderStatus>(json),
        20 => round_trip::<StreamRecord>(json),
        21 => round_trip::<PendingEvent>(json),
        22 => round_trip::<WebAppEvent>(json),
        _ => round_trip::<contract::SourceVideo>(json),
    }
});
