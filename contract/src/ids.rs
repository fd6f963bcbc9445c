//! Channel and key validation, stream IDs.

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `ID_MAX_LENGTH` default.
pub const DEFAULT_ID_MAX_LENGTH: usize = 128;

/// Why a channel or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long, the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter { what: &'static str },
}

/// Checks a channel or key against `^[A-Za-z0-9_-]+$` and the length limit.
/// `what` names the identifier in the error ("channel", "key").
pub fn validate_id(what: &'static str, value: &str, max_len: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > max_len {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
            max: max_len,
        });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::BadCharacter { what });
    }
    Ok(())
}

/// A stream ID: 32 lowercase hex characters, unique per publishing session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

static COUNTER: AtomicU16 = AtomicU16::new(0);

impl StreamId {
    /// A new ID: 48 bits of milliseconds since the epoch, a 16-bit process counter and 64
    /// random bits, so IDs sort roughly by creation time and never collide across nodes.
    pub fn generate() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            & 0xffff_ffff_ffff;
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random: u64 = rand::random();
        StreamId(format!("{millis:012x}{counter:04x}{random:016x}"))
    }

    /// Parses an ID received from the outside.
    pub fn parse(value: &str) -> Result<Self, InvalidStreamId> {
        if value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(StreamId(value.to_owned()))
        } else {
            Err(InvalidStreamId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A string that is not 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stream ID is 32 lowercase hexadecimal characters")]
pub struct InvalidStreamId;

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StreamId::parse(&value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_dash_and_underscore() {
        assert_eq!(validate_id("channel", "Demo_1-a", 128), Ok(()));
    }

    #[test]
    fn refuses_empty_long_and_odd_identifiers() {
        assert_eq!(
            validate_id("key", "", 128),
            Err(IdError::Empty { what: "key" })
        );
        assert!(matches!(
            validate_id("channel", &"a".repeat(10_000), 128),
            Err(IdError::TooLong { len: 10_000, .. })
        ));
        for bad in ["a b", "a/b", "..", "é", "a?x=1", "a\0"] {
            assert!(
                matches!(
                    validate_id("channel", bad, 128),
                    Err(IdError::BadCharacter { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_stream_ids_are_32_hex_and_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| StreamId::generate()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(StreamId::parse(id.as_str()).as_ref(), Ok(id));
        }
    }

    #[test]
    fn stream_id_parse_refuses_other_strings() {
        assert!(StreamId::parse("ABCDEF0123456789abcdef0123456789").is_err());
        assert!(StreamId::parse("abc").is_err());
        assert!(StreamId::parse("../../../../../../../../etc/pass").is_err());
    }
}
