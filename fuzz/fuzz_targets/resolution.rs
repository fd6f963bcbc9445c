//! The `x-resolutions` grammar and the choice of renditions (`contract/src/resolution.rs`):
//! `parse_list` on any header value, then `fit_renditions` for any probed source (the width,
//! height and frame rate come from ffprobe on the publisher's media, so they are untrusted).
//!
//! Checked against the promises written in the code: `parse_list` returns the valid entries
//! once each (`ORIGINAL` only when none), each within the grammar's bounds, and prints back
//! to itself; `fit_renditions` returns at least one rendition, even sizes of at least 2,
//! unique names, ordered largest first, frame rates capped at the source's (a sane one), no
//! upscaling (beyond the rounding to even sizes) unless nothing fits, and then only the
//! smallest requested box; `ORIGINAL` is the source's size rounded to even.
//!
//! Input: `[width: u32 LE][height: u32 LE][fps: f64 LE][x-resolutions value...]`.
#![no_main]

use contract::resolution::{
    fit_renditions, parse_list, ResolutionRequest, SourceVideo, MAX_DIMENSION, MAX_FPS, MAX_KBPS,
};
use libfuzzer_sys::fuzz_target;

struct Input {
    header: Option<String>,
    width: u32,
    height: u32,
    fps: f64,
}

impl Input {
    /// `[width: u32 LE][height: u32 LE][fps: f64 LE][header...]`; a header of the single byte
    /// `0xff` is a missing header.
    fn parse(data: &[u8]) -> Option<Self> {
        let (numbers, header) = data.split_at_checked(16)?;
        let u32_at =
            |i: usize| u32::from_le_bytes(numbers[i..i + 4].try_into().unwrap_or_default());
        let fps = f64::from_le_bytes(numbers[8..16].try_into().unwrap_or_default());
        Some(Input {
            header: (header != [0xff]).then(|| String::from_utf8_lossy(header).into_owned()),
            width: u32_at(0),
            height: u32_at(4),
            fps,
        })
    }
}

fn sane_fps(fps: f64) -> f64 {
    if fps.is_finite() && (1.0..=f64::from(MAX_FPS)).contains(&fps) {
        fps
    } else {
        30.0
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let (requests, errors) = parse_list(input.header.as_deref());
    assert!(!requests.is_empty());
    let entries: Vec<&str> = input
        .header
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    assert!(errors.len() <= entries.len());
    if errors.len() == entries.len() {
        assert_eq!(requests, vec![ResolutionRequest::Original]);
    }
    for (i, r) in requests.iter().enumerate() {
        assert!(!requests[..i].contains(r), "duplicate request {r}");
        if let ResolutionRequest::Sized {
            width,
            height,
            fps,
            kbps,
        } = *r
        {
            assert!((2..=MAX_DIMENSION).contains(&width) && (2..=MAX_DIMENSION).contains(&height));
            assert!(fps.is_none_or(|f| (1..=MAX_FPS).contains(&f)));
            assert!(kbps.is_none_or(|k| (1..=MAX_KBPS).contains(&k)));
        }
        assert_eq!(r.to_string().parse::<ResolutionRequest>().as_ref(), Ok(r));
    }
    let printed: Vec<String> = requests.iter().map(ToString::to_string).collect();
    assert_eq!(
        parse_list(Some(&printed.join(","))),
        (requests.clone(), vec![])
    );

    let source = SourceVideo {
        width: input.width,
        height: input.height,
        fps: input.fps,
    };
    let out = fit_renditions(&requests, source);
    assert!(!out.is_empty(), "no rendition for {requests:?}");
    let source_fps = sane_fps(input.fps);
    let (sw, sh) = (
        f64::from(input.width.max(2)),
        f64::from(input.height.max(2)),
    );
    let names: Vec<String> = out.iter().map(|r| r.name()).collect();
    for (i, r) in out.iter().enumerate() {
        assert!(
            !names[..i].contains(&names[i]),
            "duplicate rendition {}",
            names[i]
        );
        assert!(
            r.width >= 2 && r.height >= 2 && r.width % 2 == 0 && r.height % 2 == 0,
            "{r:?}"
        );
        assert!(
            r.fps >= 1.0 && r.fps <= source_fps,
            "{r:?} from {source_fps}"
        );
        assert_eq!(r.fps_capped, r.fps < source_fps, "{r:?}");
        if i > 0 {
            let (a, b) = (&out[i - 1], r);
            assert!(
                u64::from(a.width) * u64::from(a.height)
                    >= u64::from(b.width) * u64::from(b.height),
                "not ordered largest first: {names:?}"
            );
        }
        if r.original {
            // The source's size, rounded to an even number.
            let (w, h) = (input.width.max(2), input.height.max(2));
            assert!(
                r.width.abs_diff(w) <= 1 && r.height.abs_diff(h) <= 1,
                "{r:?} for {w}x{h}"
            );
            assert_eq!(r.fps, source_fps);
        }
    }
    let fits = |w: u32, h: u32| (f64::from(w) / sw).min(f64::from(h) / sh) <= 1.0 + 1e-9;
    let any_fits = requests.iter().any(|r| match *r {
        ResolutionRequest::Original => true,
        ResolutionRequest::Sized { width, height, .. } => fits(width, height),
    });
    if any_fits {
        for r in out.iter().filter(|r| !r.original) {
            assert!(
                f64::from(r.width) <= sw + 1.0 && f64::from(r.height) <= sh + 1.0,
                "{} upscales a {}x{} source",
                r.name(),
                input.width,
                input.height
            );
        }
    } else {
        assert_eq!(
            out.len(),
            1,
            "nothing fits: only the smallest box, got {names:?}"
        );
    }
});
