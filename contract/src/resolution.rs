//! The `x-resolutions` grammar (`{W}x{H}[-{FPS}][~{KBPS}]` and/or `ORIGINAL`, comma-separated)
//! and the choice of renditions for a given source (SPEC §4).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest width or height accepted in a request.
pub const MAX_DIMENSION: u32 = 8192;
/// Largest frame rate accepted in a request.
pub const MAX_FPS: u32 = 240;
/// Largest bitrate (kbit/s) accepted in a request.
pub const MAX_KBPS: u32 = 500_000;

/// One entry of `x-resolutions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResolutionRequest {
    /// The source's own size and frame rate.
    Original,
    /// A bounding box, with an optional frame-rate cap and bitrate.
    Sized {
        width: u32,
        height: u32,
        fps: Option<u32>,
        kbps: Option<u32>,
    },
}

/// Why one entry of `x-resolutions` was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resolution {entry:?}: expected ORIGINAL or WxH[-FPS][~KBPS] ({reason})")]
pub struct ResolutionParseError {
    pub entry: String,
    pub reason: &'static str,
}

fn number(
    text: &str,
    min: u32,
    max: u32,
    entry: &str,
    what: &'static str,
) -> Result<u32, ResolutionParseError> {
    let err = || ResolutionParseError {
        entry: entry.to_owned(),
        reason: what,
    };
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let value: u32 = text.parse().map_err(|_| err())?;
    if value < min || value > max {
        return Err(err());
    }
    Ok(value)
}

impl FromStr for ResolutionRequest {
    type Err = ResolutionParseError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        if entry.eq_ignore_ascii_case("ORIGINAL") {
            return Ok(ResolutionRequest::Original);
        }
        let (rest, kbps) = match entry.split_once('~') {
            Some((rest, kbps)) => (
                rest,
                Some(number(kbps, 1, MAX_KBPS, entry, "bitrate out of range")?),
            ),
            None => (entry, None),
        };
        let (size, fps) = match rest.split_once('-') {
            Some((size, fps)) => (
                size,
                Some(number(fps, 1, MAX_FPS, entry, "frame rate out of range")?),
            ),
            None => (rest, None),
        };
        let (w, h) = size
            .split_once(['x', 'X'])
            .ok_or_else(|| ResolutionParseError {
                entry: entry.to_owned(),
                reason: "missing WxH",
            })?;
        Ok(ResolutionRequest::Sized {
            width: number(w, 2, MAX_DIMENSION, entry, "width out of range")?,
            height: number(h, 2, MAX_DIMENSION, entry, "height out of range")?,
            fps,
            kbps,
        })
    }
}

impl fmt::Display for ResolutionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolutionRequest::Original => f.write_str("ORIGINAL"),
            ResolutionRequest::Sized {
                width,
                height,
                fps,
                kbps,
            } => {
                write!(f, "{width}x{height}")?;
                if let Some(fps) = fps {
                    write!(f, "-{fps}")?;
                }
                if let Some(kbps) = kbps {
                    write!(f, "~{kbps}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses a whole `x-resolutions` value. Invalid entries are returned apart so the caller can
/// log them; a missing, empty or wholly invalid value means `ORIGINAL` only.
pub fn parse_list(value: Option<&str>) -> (Vec<ResolutionRequest>, Vec<ResolutionParseError>) {
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    for entry in value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match entry.parse::<ResolutionRequest>() {
            Ok(request) if !requests.contains(&request) => requests.push(request),
            Ok(_) => {}
            Err(err) => errors.push(err),
        }
    }
    if requests.is_empty() {
        requests.push(ResolutionRequest::Original);
    }
    (requests, errors)
}

/// What the encoder learned about the source's video by probing it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SourceVideo {
    pub width: u32,
    pub height: u32,
    /// Frames per second; for variable-frame-rate sources, the average.
    pub fps: f64,
}

/// One output rendition, as encoded and as named in storage and events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    /// Output frame rate (the source's when not capped).
    pub fps: f64,
    /// Whether a frame-rate filter must bring the source down to `fps`.
    pub fps_capped: bool,
    /// Requested bitrate in kbit/s, if any.
    pub kbps: Option<u32>,
    /// This is the `ORIGINAL` rendition (source size and frame rate).
    pub original: bool,
}

impl Rendition {
    /// `{W}x{H}-{FPS}[~{KBPS}]`: the storage folder and the `x-resolution` header value.
    pub fn name(&self) -> String {
        let mut name = format!("{}x{}-{}", self.width, self.height, self.fps_label());
        if let Some(kbps) = self.kbps {
            name.push_str(&format!("~{kbps}"));
        }
        name
    }

    /// The frame rate as a whole number, as the grammar writes it.
    pub fn fps_label(&self) -> u32 {
        self.fps.round().max(1.0) as u32
    }
}

fn even(value: f64) -> u32 {
    // At most u32::MAX - 1: a probed size is untrusted and may be u32::MAX.
    ((value / 2.0).round().min(f64::from(u32::MAX / 2)) as u32 * 2).max(2)
}

/// A usable frame rate for a source: probes of variable-frame-rate or broken sources can
/// report 0, 1000 or NaN.
fn sane_fps(fps: f64) -> f64 {
    if fps.is_finite() && (1.0..=MAX_FPS as f64).contains(&fps) {
        fps
    } else {
        30.0
    }
}

/// Chooses the renditions for a source (SPEC §4): every requested box that the source fits
/// into without upscaling, fitted to the source's aspect ratio with even dimensions and the
/// frame rate capped at the source's; if none fits, the smallest requested one; `ORIGINAL` is
/// the source's size and frame rate. Duplicates are removed; the result is ordered from the
/// largest to the smallest.
pub fn fit_renditions(requests: &[ResolutionRequest], source: SourceVideo) -> Vec<Rendition> {
    let source_fps = sane_fps(source.fps);
    let (sw, sh) = (source.width.max(2) as f64, source.height.max(2) as f64);
    let mut fitting = Vec::new();
    let mut smallest: Option<(u64, Rendition)> = None;
    for request in requests {
        let rendition = match *request {
            ResolutionRequest::Original => Rendition {
                width: even(sw),
                height: even(sh),
                fps: source_fps,
                fps_capped: false,
                kbps: None,
                original: true,
            },
            ResolutionRequest::Sized {
                width,
                height,
                fps,
                kbps,
            } => {
                let scale = (width as f64 / sw).min(height as f64 / sh);
                let (fps, fps_capped) = match fps {
                    Some(fps) if (fps as f64) < source_fps - 0.01 => (fps as f64, true),
                    _ => (source_fps, false),
                };
                let rendition = Rendition {
                    width: even(sw * scale),
                    height: even(sh * scale),
                    fps,
                    fps_capped,
                    kbps,
                    original: false,
                };
                let area = width as u64 * height as u64;
                if smallest.as_ref().is_none_or(|(a, _)| area < *a) {
                    smallest = Some((area, rendition));
                }
                if scale > 1.0 + 1e-9 {
                    continue;
                }
                rendition
            }
        };
        fitting.push(rendition);
    }
    if fitting.is_empty() {
        fitting.extend(smallest.map(|(_, r)| r));
    }
    let mut out: Vec<Rendition> = Vec::new();
    for rendition in fitting {
        if !out.iter().any(|r| r.name() == rendition.name()) {
            out.push(rendition);
        }
    }
    let area = |r: &Rendition| u64::from(r.width) * u64::from(r.height);
    out.sort_by(|a, b| {
        area(b)
            .cmp(&area(a))
            .then(b.fps.total_cmp(&a.fps))
            .then(b.kbps.cmp(&a.kbps))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(width: u32, height: u32, fps: Option<u32>, kbps: Option<u32>) -> ResolutionRequest {
        ResolutionRequest::Sized {
            width,
            height,
            fps,
            kbps,
        }
    }

    const HD: SourceVideo = SourceVideo {
        width: 1280,
        height: 720,
        fps: 30.0,
    };

    #[test]
    fn parses_every_form_of_the_grammar() {
        assert_eq!("ORIGINAL".parse(), Ok(ResolutionRequest::Original));
        assert_eq!("original".parse(), Ok(ResolutionRequest::Original));
        assert_eq!("640x360".parse(), Ok(sized(640, 360, None, None)));
        assert_eq!("640x360-30".parse(), Ok(sized(640, 360, Some(30), None)));
        assert_eq!("640x360~800".parse(), Ok(sized(640, 360, None, Some(800))));
        assert_eq!(
            " 640x360-30~800 ".parse(),
            Ok(sized(640, 360, Some(30), Some(800)))
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "ORIGINAL",
            "640x360",
            "640x360-30",
            "640x360~800",
            "640x360-25~800",
        ] {
            let parsed: ResolutionRequest = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn refuses_malformed_entries() {
        for bad in [
            "",
            "x",
            "640",
            "640x",
            "x360",
            "640x360-",
            "640x360~",
            "-640x360",
            "640x360-0",
            "640x360-1000",
            "0x360",
            "99999x360",
            "640x360~abc",
            "640 x 360",
            "640x360-30-30",
            "+640x360",
            "640x360~99999999999",
        ] {
            assert!(bad.parse::<ResolutionRequest>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn missing_or_empty_list_means_original_only() {
        assert_eq!(parse_list(None).0, vec![ResolutionRequest::Original]);
        assert_eq!(parse_list(Some("")).0, vec![ResolutionRequest::Original]);
        assert_eq!(parse_list(Some(" , ")).0, vec![ResolutionRequest::Original]);
        let (requests, errors) = parse_list(Some("junk"));
        assert_eq!(requests, vec![ResolutionRequest::Original]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn list_keeps_valid_entries_and_reports_invalid_ones() {
        let (requests, errors) =
            parse_list(Some("1280x720-30~2500, bad, 640x360,ORIGINAL,640x360"));
        assert_eq!(
            requests,
            vec![
                sized(1280, 720, Some(30), Some(2500)),
                sized(640, 360, None, None),
                ResolutionRequest::Original
            ]
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].entry, "bad");
    }

    #[test]
    fn fits_requested_boxes_to_the_source_aspect_with_even_sizes() {
        let out = fit_renditions(
            &[
                sized(640, 360, Some(30), Some(800)),
                sized(426, 240, Some(30), Some(400)),
            ],
            HD,
        );
        let names: Vec<_> = out.iter().map(Rendition::name).collect();
        assert_eq!(names, ["640x360-30~800", "426x240-30~400"]);
        // A 4:3 box gets a 16:9 picture inside it.
        let out = fit_renditions(&[sized(640, 480, None, None)], HD);
        assert_eq!((out[0].width, out[0].height), (640, 360));
        // A portrait source in a landscape box.
        let portrait = SourceVideo {
            width: 720,
            height: 1280,
            fps: 30.0,
        };
        let out = fit_renditions(&[sized(1280, 720, None, None)], portrait);
        assert_eq!((out[0].width, out[0].height), (406, 720));
    }

    #[test]
    fn never_upscales_unless_nothing_fits() {
        let out = fit_renditions(
            &[sized(1920, 1080, None, None), sized(640, 360, None, None)],
            HD,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name(), "640x360-30");
        let small = SourceVideo {
            width: 320,
            height: 180,
            fps: 30.0,
        };
        let out = fit_renditions(
            &[sized(1920, 1080, None, None), sized(1280, 720, None, None)],
            small,
        );
        assert_eq!(out.len(), 1, "the smallest requested one is kept");
        assert_eq!(out[0].name(), "1280x720-30");
    }

    #[test]
    fn caps_frame_rate_at_the_source() {
        let out = fit_renditions(&[sized(640, 360, Some(60), None)], HD);
        assert_eq!(out[0].fps, 30.0);
        assert!(!out[0].fps_capped);
        let out = fit_renditions(&[sized(640, 360, Some(15), None)], HD);
        assert_eq!(out[0].fps, 15.0);
        assert!(out[0].fps_capped);
    }

    #[test]
    fn original_is_the_source_and_orders_first() {
        let ntsc = SourceVideo {
            width: 1279,
            height: 720,
            fps: 29.97,
        };
        let out = fit_renditions(
            &[sized(640, 360, None, None), ResolutionRequest::Original],
            ntsc,
        );
        assert!(out[0].original);
        assert_eq!(out[0].name(), "1280x720-30");
        assert_eq!(out[1].name(), "640x360-30");
    }

    #[test]
    fn absurd_source_frame_rates_fall_back_to_30() {
        let vfr = SourceVideo {
            width: 640,
            height: 480,
            fps: 1000.0,
        };
        assert_eq!(
            fit_renditions(&[ResolutionRequest::Original], vfr)[0].fps,
            30.0
        );
        let nan = SourceVideo {
            width: 640,
            height: 480,
            fps: f64::NAN,
        };
        assert_eq!(
            fit_renditions(&[ResolutionRequest::Original], nan)[0].fps,
            30.0
        );
    }

    #[test]
    fn absurd_source_sizes_do_not_overflow() {
        // Found by fuzzing: ffprobe reports whatever size the publisher's stream claims.
        let huge = SourceVideo {
            width: u32::MAX,
            height: u32::MAX,
            fps: 30.0,
        };
        let out = fit_renditions(
            &[sized(640, 360, None, None), ResolutionRequest::Original],
            huge,
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].original);
        assert_eq!((out[0].width, out[0].height), (u32::MAX - 1, u32::MAX - 1));
        assert_eq!(out[1].name(), "360x360-30");
        let wide = SourceVideo {
            width: 70_000,
            height: 70_000,
            fps: 30.0,
        };
        let out = fit_renditions(
            &[sized(640, 360, None, None), ResolutionRequest::Original],
            wide,
        );
        assert_eq!((out[0].width, out[0].height), (70_000, 70_000));
        assert_eq!(out[1].name(), "360x360-30");
    }

    #[test]
    fn duplicate_fits_are_removed() {
        let out = fit_renditions(
            &[sized(640, 360, None, None), sized(640, 480, None, None)],
            HD,
        );
        assert_eq!(out.len(), 1);
    }
}
