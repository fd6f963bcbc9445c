//! The all-in-one's HTTP server: stored HLS objects and previews (with the same headers the S3
//! objects get), the commands API, `/healthz` and `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use coordinator_fn::Coordinator;

#[derive(Clone)]
pub struct HttpState {
    pub coordinator: Coordinator,
    /// The local object directory, when the storage is FILESYSTEM (else nothing is served).
    pub data_dir: Arc<Option<PathBuf>>,
    pub ingest: ingest::Ingest,
    pub encoder: encoder::Encoder,
}

/// Maps a URL path below `/hls` or `/img-preview` to a file under `root`, refusing anything
/// that could leave it.
fn object_path(root: &Path, top: &str, rest: &str) -> Option<(PathBuf, String)> {
    let mut path = root.join(top);
    for part in rest.split('/') {
        if part.is_empty()
            || part == "."
            || part == ".."
            || part.contains('\\')
            || part.contains('\0')
            || part.starts_with('.')
        {
            return None;
        }
        path.push(part);
    }
    Some((path, format!("{top}/{rest}")))
}

async fn serve_object(root: &Path, top: &str, rest: &str) -> Response {
    let Some((path, key)) = object_path(root, top, rest) else {
        return (StatusCode::NOT_FOUND, "Not found\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(body) => {
            let (content_type, cache_control) = contract::keys::object_headers(&key);
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static(cache_control),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                || err.kind() == std::io::ErrorKind::IsADirectory =>
        {
            (
                StatusCode::NOT_FOUND,
                [(header::CACHE_CONTROL, "no-cache")],
                "Not found\n",
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(path = %path.display(), %err, "cannot read a stored object");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error\n").into_response()
        }
    }
}

async fn hls(State(state): State<HttpState>, UrlPath(rest): UrlPath<String>) -> Response {
    match state.data_dir.as_ref() {
        Some(root) => serve_object(root, "hls", &rest).await,
        None => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    }
}

async fn previews(State(state): State<HttpState>, UrlPath(rest): UrlPath<String>) -> Response {
    match state.data_dir.as_ref() {
        Some(root) => serve_object(root, "img-preview", &rest).await,
        None => (StatusCode::NOT_FOUND, "Not found\n").into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let mut text = state.coordinator.metrics().await;
    text.push_str(&format!(
        "# HELP vstream_publishers Publishers connected to this ingest.\n# TYPE vstream_publishers gauge\nvstream_publishers {}\n",
        state.ingest.publishers().len()
    ));
    text.push_str(&state.ingest.render_metrics());
    text.push_str(&format!(
        "# HELP vstream_encoder_jobs Streams this encoder is running.\n# TYPE vstream_encoder_jobs gauge\nvstream_encoder_jobs {}\n",
        state.encoder.active_jobs().len()
    ));
    text.push_str(&encoder::render_prometheus(&encoder::storage_metrics()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub fn router(state: HttpState) -> Router {
    let files = Router::new()
        .route("/hls/{*rest}", get(hls))
        .route("/img-preview/{*rest}", get(previews))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .layer(axum::middleware::map_response(cors));
    // The page (`/`, `/web/*`, `/api/streams`) and the WebSocket publish route are merged in
    // by `crate::run` (`crate::web::router`, `ingest::ws::WsServer::router`).
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(files)
        .merge(coordinator_fn::commands::router(state.coordinator))
}

/// Players on other origins (hls.js pages) may read the objects.
async fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_stay_inside_the_root() {
        let root = Path::new("/data");
        assert_eq!(
            object_path(root, "hls", "c/id/640x360-30/0.ts").map(|p| p.0),
            Some(PathBuf::from("/data/hls/c/id/640x360-30/0.ts"))
        );
        for bad in [
            "../etc/passwd",
            "c/../../x",
            "c//x",
            "c/.tmp",
            "",
            "c\\..\\x",
        ] {
            assert!(object_path(root, "hls", bad).is_none(), "{bad:?}");
        }
    }
}
