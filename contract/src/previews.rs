//! The `x-previews` grammar: `{W}x{H}, {SECONDS}`: a JPEG of `W×H` every `SECONDS` seconds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resolution::MAX_DIMENSION;

/// Longest interval between two preview images that is accepted.
pub const MAX_INTERVAL_SECONDS: u32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreviewSpec {
    pub width: u32,
    pub height: u32,
    pub interval_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid previews value {0:?}: expected \"WxH, SECONDS\"")]
pub struct PreviewParseError(pub String);

impl PreviewSpec {
    /// `{W}x{H}-{SECONDS}`: the storage folder and the `x-resolution` of `IMG-PREVIEW` events.
    pub fn name(&self) -> String {
        format!("{}x{}-{}", self.width, self.height, self.interval_seconds)
    }

    /// Parses an optional header value; missing or invalid means no previews (the error says
    /// why, for a log line).
    pub fn parse_header(value: Option<&str>) -> Result<Option<Self>, PreviewParseError> {
        match value.map(str::trim) {
            None | Some("") => Ok(None),
            Some(value) => value.parse().map(Some),
        }
    }
}

fn bounded(text: &str, min: u32, max: u32) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|v| (min..=max).contains(v))
}

impl FromStr for PreviewSpec {
    type Err = PreviewParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = || PreviewParseError(value.to_owned());
        let (size, seconds) = value.split_once(',').ok_or_else(err)?;
        let (w, h) = size.trim().split_once(['x', 'X']).ok_or_else(err)?;
        Ok(PreviewSpec {
            width: bounded(w, 2, MAX_DIMENSION).ok_or_else(err)?,
            height: bounded(h, 2, MAX_DIMENSION).ok_or_else(err)?,
            interval_seconds: bounded(seconds, 1, MAX_INTERVAL_SECONDS).ok_or_else(err)?,
        })
    }
}

impl fmt::Display for PreviewSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}, {}",
            self.width, self.height, self.interval_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let spec: PreviewSpec = "256x144, 2".parse().expect("valid");
        assert_eq!(
            spec,
            PreviewSpec {
                width: 256,
                height: 144,
                interval_seconds: 2
            }
        );
        assert_eq!(spec.name(), "256x144-2");
        assert_eq!("256x144,2".parse::<PreviewSpec>(), Ok(spec));
        assert_eq!(spec.to_string().parse::<PreviewSpec>(), Ok(spec));
    }

    #[test]
    fn missing_means_none_and_garbage_is_an_error() {
        assert_eq!(PreviewSpec::parse_header(None), Ok(None));
        assert_eq!(PreviewSpec::parse_header(Some(" ")), Ok(None));
        for bad in [
            "256x144",
            "256x144, 0",
            "256, 2",
            "x144, 2",
            "256x144, -1",
            "0x0, 1",
            "256x144, 2s",
            "99999x1, 1",
        ] {
            assert!(PreviewSpec::parse_header(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
