//! The web page of the all-in-one (`/`, `/web/*`) and the public list of streams it reads
//! (`GET /api/streams`).
//!
//! The page's files (`web/index.html`, `app.js`, `style.css`) are embedded in the binary, so
//! `cargo run --release` serves them from anywhere. hls.js is served from
//! `web/node_modules/hls.js/dist/hls.min.js` (installed by `npm ci --prefix web`) when that file
//! exists next to the sources or under the working directory; otherwise `/web/hls.min.js` is
//! a 404 and the page loads the same version from the jsDelivr CDN.
//!
//! `/api/streams` lists what a viewer needs and nothing more (no keys, no internal node
//! names): the live streams with their master playlist (and whether it exists yet) and
//! preview index, and the recorded streams (those with `vod-0.m3u8`) with their VOD playlists.
//! Local files are only looked at with FILESYSTEM storage; URLs start with `PUBLIC_BASE_URL`
//! when it is set, else they are paths on this server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use contract::{validate_id, StreamId};
use coordinator_fn::Coordinator;
use serde::Serialize;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
/// hls.js as installed by npm, relative to the repository root.
const HLS_JS: &str = "web/node_modules/hls.js/dist/hls.min.js";
/// Most recorded streams listed (the newest).
const MAX_RECORDED: usize = 50;
/// Bound of the directory entries looked at per listing.
const MAX_ENTRIES_VISITED: usize = 20_000;

/// What the page's routes need.
#[derive(Clone)]
pub struct WebState {
    pub coordinator: Coordinator,
    /// The local object directory (FILESYSTEM storage).
    pub data_dir: Option<PathBuf>,
    /// `PUBLIC_BASE_URL`: where players fetch the objects, when not from this server.
    pub public_base_url: Option<String>,
    pub rtmp_port: u16,
    pub rtmps_port: Option<u16>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/web/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/web/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/web/hls.min.js", get(hls_js))
        .route("/api/streams", get(streams))
        .with_state(Arc::new(state))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn hls_js() -> Response {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join(HLS_JS),
        PathBuf::from(HLS_JS),
    ];
    for path in candidates {
        if let Ok(body) = tokio::fs::read(&path).await {
            return (
                [
                    (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                ],
                body,
            )
                .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-cache")],
        "hls.js is not installed here (npm ci --prefix web); the page uses the CDN copy\n",
    )
        .into_response()
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamList {
    pub live: Vec<LiveStream>,
    pub recorded: Vec<RecordedStream>,
    pub rtmp_port: u16,
    pub rtmps_port: Option<u16>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveStream {
    pub channel: String,
    pub stream_id: String,
    /// URL of `master.m3u8`.
    pub master: String,
    /// Whether `master.m3u8` exists yet (always true when it cannot be checked).
    pub ready: bool,
    /// URL of the preview `index.json`, when there is one.
    pub previews: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedStream {
    pub channel: String,
    pub stream_id: String,
    /// Last change, in seconds since the epoch.
    pub modified: u64,
    pub live: bool,
    /// Largest first.
    pub renditions: Vec<VodRendition>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct VodRendition {
    pub name: String,
    /// URLs of `vod-0.m3u8`, `vod-1.m3u8`...
    pub vod: Vec<String>,
}

async fn streams(State(state): State<Arc<WebState>>) -> Response {
    let report = match state.coordinator.report().await {
        Ok(report) => report,
        Err(err) => {
            tracing::warn!(%err, "cannot list the live streams");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store")],
                Json(serde_json::json!({ "error": "unavailable" })),
            )
                .into_response();
        }
    };
    let live: Vec<(String, String)> = report
        .active_streams
        .into_iter()
        .map(|s| (s.channel, s.stream_id))
        .collect();
    let state = Arc::clone(&state);
    let list = tokio::task::spawn_blocking(move || list_streams(&state, live)).await;
    match list {
        Ok(list) => ([(header::CACHE_CONTROL, "no-store")], Json(list)).into_response(),
        Err(err) => {
            tracing::error!(%err, "listing the streams failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error\n").into_response()
        }
    }
}

/// A channel and stream ID that are safe to use in a path.
fn safe_ids(channel: &str, stream_id: &str) -> bool {
    validate_id("channel", channel, 1024).is_ok() && StreamId::parse(stream_id).is_ok()
}

fn list_streams(state: &WebState, live: Vec<(String, String)>) -> StreamList {
    let base = state
        .public_base_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let dir = state.data_dir.as_deref();
    let live_streams = live
        .iter()
        .filter(|(channel, id)| safe_ids(channel, id))
        .map(|(channel, id)| {
            let master = format!("hls/{channel}/{id}/master.m3u8");
            LiveStream {
                channel: channel.clone(),
                stream_id: id.clone(),
                ready: dir.is_none_or(|d| d.join(&master).is_file()),
                master: format!("{base}/{master}"),
                previews: dir
                    .and_then(|d| preview_index(d, channel, id))
                    .map(|key| format!("{base}/{key}")),
            }
        })
        .collect();
    let recorded = dir
        .map(|d| recorded_streams(d, base, &live))
        .unwrap_or_default();
    StreamList {
        live: live_streams,
        recorded,
        rtmp_port: state.rtmp_port,
        rtmps_port: state.rtmps_port,
    }
}

/// The key of the first preview `index.json` of a stream.
fn preview_index(dir: &Path, channel: &str, id: &str) -> Option<String> {
    let stream_dir = dir.join("img-preview").join(channel).join(id);
    let mut names: Vec<String> = std::fs::read_dir(&stream_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .take(64)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && stream_dir.join(name).join("index.json").is_file())
        .collect();
    names.sort();
    names
        .first()
        .map(|name| format!("img-preview/{channel}/{id}/{name}/index.json"))
}

/// `WxH...` rendition names, largest first.
fn rendition_width(name: &str) -> u64 {
    name.split(['x', '-'])
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

fn recorded_streams(dir: &Path, base: &str, live: &[(String, String)]) -> Vec<RecordedStream> {
    let hls = dir.join("hls");
    let mut visited = 0usize;
    // (modified, channel, id, stream dir) of every stream directory, then the newest looked at.
    let mut streams = Vec::new();
    let Ok(channels) = std::fs::read_dir(&hls) else {
        return Vec::new();
    };
    for channel in channels.filter_map(|e| e.ok()) {
        let Ok(channel_name) = channel.file_name().into_string() else {
            continue;
        };
        let Ok(ids) = std::fs::read_dir(channel.path()) else {
            continue;
        };
        for id in ids.filter_map(|e| e.ok()) {
            visited += 1;
            if visited > MAX_ENTRIES_VISITED {
                break;
            }
            let Ok(id_name) = id.file_name().into_string() else {
                continue;
            };
            if !safe_ids(&channel_name, &id_name) {
                continue;
            }
            let modified = id
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            streams.push((modified, channel_name.clone(), id_name, id.path()));
        }
    }
    streams.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut recorded = Vec::new();
    for (modified, channel, id, path) in streams {
        if recorded.len() >= MAX_RECORDED {
            break;
        }
        let mut renditions: Vec<VodRendition> = std::fs::read_dir(&path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .take(64)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.starts_with('.') {
                    return None;
                }
                let vod: Vec<String> = (0..)
                    .map(|k| format!("vod-{k}.m3u8"))
                    .take_while(|file| e.path().join(file).is_file())
                    .take(1000)
                    .map(|file| format!("{base}/hls/{channel}/{id}/{name}/{file}"))
                    .collect();
                (!vod.is_empty()).then_some(VodRendition { name, vod })
            })
            .collect();
        if renditions.is_empty() {
            continue;
        }
        renditions.sort_by(|a, b| {
            rendition_width(&b.name)
                .cmp(&rendition_width(&a.name))
                .then_with(|| a.name.cmp(&b.name))
        });
        let is_live = live.iter().any(|(c, i)| *c == channel && *i == id);
        recorded.push(RecordedStream {
            channel,
            stream_id: id,
            modified,
            live: is_live,
            renditions,
        });
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_asks_the_cdn_for_the_hls_js_version_npm_installs() {
        let package: serde_json::Value =
            serde_json::from_str(include_str!("../web/package.json")).expect("package.json");
        let version = package["dependencies"]["hls.js"]
            .as_str()
            .expect("hls.js pinned");
        assert!(
            APP_JS.contains(&format!("const HLS_VERSION = '{version}';")),
            "web/app.js must load hls.js {version} from the CDN"
        );
    }

    #[test]
    fn recorded_streams_are_listed_newest_first_with_their_vod_playlists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = StreamId::generate();
        let stream = dir.path().join(format!("hls/demo/{id}"));
        for (name, parts) in [("640x360-30~800", 2), ("1280x720-30", 1), ("426x240-30", 0)] {
            std::fs::create_dir_all(stream.join(name)).expect("mkdir");
            for k in 0..parts {
                std::fs::write(stream.join(name).join(format!("vod-{k}.m3u8")), "#EXTM3U\n")
                    .expect("write");
            }
        }
        std::fs::create_dir_all(dir.path().join("hls/demo/not-an-id/x")).expect("mkdir");
        let previews = dir.path().join(format!("img-preview/demo/{id}/320x180-5"));
        std::fs::create_dir_all(&previews).expect("mkdir");
        std::fs::write(previews.join("index.json"), "{}").expect("write");

        let recorded = recorded_streams(dir.path(), "", &[]);
        assert_eq!(recorded.len(), 1);
        let names: Vec<&str> = recorded[0]
            .renditions
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["1280x720-30", "640x360-30~800"]);
        assert_eq!(
            recorded[0].renditions[1].vod,
            [
                format!("/hls/demo/{id}/640x360-30~800/vod-0.m3u8"),
                format!("/hls/demo/{id}/640x360-30~800/vod-1.m3u8")
            ]
        );
        assert_eq!(
            preview_index(dir.path(), "demo", id.as_str()),
            Some(format!("img-preview/demo/{id}/320x180-5/index.json"))
        );
    }
}
