//! The internal API that ingest and encoder nodes call (`/internal/*`), each call authenticated
//! with an HS256 JWT signed with `CONTROL_SECRET` whose subject is the calling component.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use contract::control::{ControlPlane, EncoderEvent, PublishGrant, PublishRefusal, PublishRequest};
use contract::token::{Claims, Component, TokenKeys};
use contract::StreamId;
use serde::{Deserialize, Serialize};

use crate::coordinator::Coordinator;
use crate::state::{EncoderNode, IngestNode};

/// Answer of `POST /internal/publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishAnswer {
    Granted(PublishGrant),
    Refused(PublishRefusal),
}

/// Body of `POST /internal/publish-ended`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishEnded {
    pub channel: String,
    pub stream_id: StreamId,
}

/// Body of `POST /internal/heartbeat`: registers or refreshes a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Heartbeat {
    Encoder(EncoderNode),
    Ingest(IngestNode),
}

#[derive(Clone)]
struct InternalState {
    coordinator: Coordinator,
    keys: TokenKeys,
    /// Deliver due events before answering (on Lambda, where nothing runs between requests).
    inline_delivery: bool,
}

/// A refused internal call: answered 401 without detail (the detail is logged).
type Refused = (StatusCode, &'static str);

fn check(
    state: &InternalState,
    headers: &HeaderMap,
    allowed: &[Component],
    call: &str,
) -> Result<Claims, Refused> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.keys.verify(authorization, allowed).map_err(|err| {
        tracing::warn!(call, %err, "internal call refused");
        (StatusCode::UNAUTHORIZED, "Unauthorized\n")
    })
}

fn unavailable(err: impl std::fmt::Display) -> Response {
    tracing::error!(%err, "internal call failed");
    (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable\n").into_response()
}

async fn publish(
    State(s): State<InternalState>,
    headers: HeaderMap,
    Json(request): Json<PublishRequest>,
) -> Response {
    let claims = match check(&s, &headers, &[Component::Ingest], "publish") {
        Ok(claims) => claims,
        Err(refused) => return refused.into_response(),
    };
    if claims.node != request.ingest_id {
        tracing::warn!(token_node = %claims.node, ingest = %request.ingest_id, "publish for another ingest node refused");
        return (StatusCode::FORBIDDEN, "Forbidden\n").into_response();
    }
    let answer = match s.coordinator.publish(request).await {
        Ok(grant) => PublishAnswer::Granted(grant),
        Err(refusal) => PublishAnswer::Refused(refusal),
    };
    Json(answer).into_response()
}

async fn publish_ended(
    State(s): State<InternalState>,
    headers: HeaderMap,
    Json(body): Json<PublishEnded>,
) -> Response {
    if let Err(refused) = check(&s, &headers, &[Component::Ingest], "publish-ended") {
        return refused.into_response();
    }
    match s
        .coordinator
        .publish_ended(&body.channel, &body.stream_id)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => unavailable(err),
    }
}

async fn encoder_event(
    State(s): State<InternalState>,
    headers: HeaderMap,
    Json(event): Json<EncoderEvent>,
) -> Response {
    if let Err(refused) = check(&s, &headers, &[Component::Encoder], "encoder-event") {
        return refused.into_response();
    }
    match s.coordinator.encoder_event(event).await {
        Ok(()) => {
            if s.inline_delivery {
                let delivery = s.coordinator.deliver_due_events();
                if let Ok(Err(err)) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), delivery).await
                {
                    tracing::warn!(%err, "inline event delivery failed; the schedule retries");
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) => unavailable(err),
    }
}

async fn heartbeat(
    State(s): State<InternalState>,
    headers: HeaderMap,
    Json(body): Json<Heartbeat>,
) -> Response {
    let claims = match check(
        &s,
        &headers,
        &[Component::Ingest, Component::Encoder],
        "heartbeat",
    ) {
        Ok(claims) => claims,
        Err(refused) => return refused.into_response(),
    };
    let result = match body {
        Heartbeat::Encoder(node) if claims.sub == Component::Encoder && claims.node == node.id => {
            s.coordinator.register_encoder(node).await
        }
        Heartbeat::Ingest(node) if claims.sub == Component::Ingest && claims.node == node.id => {
            s.coordinator.register_ingest(node).await
        }
        _ => {
            tracing::warn!(node = %claims.node, "heartbeat for another node refused");
            return (StatusCode::FORBIDDEN, "Forbidden\n").into_response();
        }
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => unavailable(err),
    }
}

async fn maintenance(State(s): State<InternalState>, headers: HeaderMap) -> Response {
    if let Err(refused) = check(
        &s,
        &headers,
        &[
            Component::Coordinator,
            Component::Ingest,
            Component::Encoder,
        ],
        "maintenance",
    ) {
        return refused.into_response();
    }
    match s.coordinator.maintenance().await {
        Ok(report) => Json(report).into_response(),
        Err(err) => unavailable(err),
    }
}

/// The internal API as a router.
pub fn router(coordinator: Coordinator, keys: TokenKeys, inline_delivery: bool) -> Router {
    Router::new()
        .route("/internal/publish", post(publish))
        .route("/internal/publish-ended", post(publish_ended))
        .route("/internal/encoder-event", post(encoder_event))
        .route("/internal/heartbeat", post(heartbeat))
        .route("/internal/maintenance", post(maintenance))
        .with_state(InternalState {
            coordinator,
            keys,
            inline_delivery,
        })
}
