//! The media path between nodes in the distributed mode: an ingest serves each stream it holds
//! at `GET /internal/media/{stream_id}` (a chunked body of the bytes `open_media` gives,
//! authenticated with an encoder's JWT), and [`HttpMedia`] is the encoder's side of it.

use std::convert::Infallible;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use contract::control::{EncoderJob, MediaError, MediaSource, MediaStream};
use contract::token::{Component, TokenKeys};
use contract::StreamId;
use futures::StreamExt as _;

use crate::Ingest;

#[derive(Clone)]
struct MediaState {
    ingest: Ingest,
    keys: TokenKeys,
}

async fn media(
    State(state): State<MediaState>,
    Path(stream_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(err) = state.keys.verify(authorization, &[Component::Encoder]) {
        tracing::warn!(%err, "media request refused");
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    let Ok(stream_id) = StreamId::parse(&stream_id) else {
        return (StatusCode::NOT_FOUND, "Not found\n").into_response();
    };
    match state.ingest.open_media(&stream_id) {
        Ok(stream) => {
            tracing::info!(%stream_id, "an encoder opened the stream's media");
            let body = Body::from_stream(stream.map(Ok::<_, Infallible>));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response()
        }
        Err(err) => {
            tracing::info!(%stream_id, %err, "media requested for a stream not held here");
            (StatusCode::NOT_FOUND, "Not found\n").into_response()
        }
    }
}

/// The internal media endpoint as a router.
pub fn router(ingest: Ingest, keys: TokenKeys) -> Router {
    Router::new()
        .route("/internal/media/{stream_id}", get(media))
        .with_state(MediaState { ingest, keys })
}

/// How long the media may stall before the connection to the ingest is considered dead.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The encoder's side: pulls a job's media from `job.media_url`.
#[derive(Clone)]
pub struct HttpMedia {
    http: reqwest::Client,
    keys: TokenKeys,
    node_id: String,
}

impl HttpMedia {
    pub fn new(keys: TokenKeys, node_id: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(READ_TIMEOUT)
            .build()
            .unwrap_or_default();
        HttpMedia {
            http,
            keys,
            node_id: node_id.to_owned(),
        }
    }
}

#[async_trait]
impl MediaSource for HttpMedia {
    async fn open(&self, job: &EncoderJob) -> Result<MediaStream, MediaError> {
        let url = job
            .media_url
            .as_deref()
            .ok_or_else(|| MediaError::Unavailable("the job names no media URL".into()))?;
        let response = self
            .http
            .get(url)
            .bearer_auth(self.keys.sign(Component::Encoder, &self.node_id))
            .send()
            .await
            .map_err(|e| MediaError::Unavailable(format!("{url}: {e}")))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(MediaError::UnknownStream(job.stream_id.clone())),
            status => return Err(MediaError::Unavailable(format!("{url} answered {status}"))),
        }
        let stream_id = job.stream_id.clone();
        let bytes = response.bytes_stream().scan((), move |_, item| {
            let next = match item {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    // The stream ends here; the encoder finishes what it has.
                    tracing::warn!(%stream_id, %err, "the media connection to the ingest broke");
                    None
                }
            };
            futures::future::ready(next)
        });
        Ok(Box::pin(bytes))
    }
}
