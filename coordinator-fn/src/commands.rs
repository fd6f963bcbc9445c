//! The commands API the web app calls (SPEC §2): `GET /commands/capacity`,
//! `POST /commands/close`, `GET /commands/report`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::{validate_id, StreamId};

use crate::coordinator::Coordinator;

/// Errors of the commands API: 4xx are the caller's and not logged as errors; 5xx say little
/// and log the detail.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        match self {
            CommandError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer, Basic")],
                "Unauthorized\n",
            )
                .into_response(),
            CommandError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
            }
            CommandError::Internal(detail) => {
                tracing::error!(%detail, "commands API failed");
                (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable\n").into_response()
            }
        }
    }
}

fn authorize(coordinator: &Coordinator, headers: &HeaderMap) -> Result<(), CommandError> {
    match &coordinator.config().commands_auth {
        None => Ok(()),
        Some(auth) => {
            let header = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if auth.accepts(header) {
                Ok(())
            } else {
                tracing::info!("commands API: wrong or missing credentials");
                Err(CommandError::Unauthorized)
            }
        }
    }
}

async fn capacity(
    State(c): State<Coordinator>,
    headers: HeaderMap,
) -> Result<Response, CommandError> {
    authorize(&c, &headers)?;
    let capacity = c
        .capacity()
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    Ok(Json(capacity).into_response())
}

async fn report(
    State(c): State<Coordinator>,
    headers: HeaderMap,
) -> Result<Response, CommandError> {
    authorize(&c, &headers)?;
    let report = c
        .report()
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    Ok(Json(report).into_response())
}

async fn close(State(c): State<Coordinator>, headers: HeaderMap) -> Result<Response, CommandError> {
    authorize(&c, &headers)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let channel = header("x-streaming-channel").unwrap_or("");
    validate_id("channel", channel, c.config().id_max_length)
        .map_err(|e| CommandError::BadRequest(e.to_string()))?;
    let stream_id = match header("x-streaming-id") {
        None | Some("") | Some("*") => None,
        Some(id) => Some(StreamId::parse(id).map_err(|_| {
            CommandError::BadRequest("x-streaming-id must be a stream ID or *".into())
        })?),
    };
    let closed = c
        .close(channel, stream_id.as_ref())
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    Ok(Json(serde_json::json!({ "closed": closed })).into_response())
}

/// The commands API as a router (merged into whatever server hosts the coordinator).
pub fn router(coordinator: Coordinator) -> Router {
    Router::new()
        .route("/commands/capacity", get(capacity))
        .route("/commands/report", get(report))
        .route("/commands/close", post(close))
        .with_state(coordinator)
}
