//! Serving the coordinator on AWS Lambda: HTTP events (function URL, API Gateway v2/v1, ALB)
//! go through the same axum `Router` as the server mode; EventBridge scheduled events run the
//! maintenance call.

use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_http::Service as _;
use lambda_runtime::{service_fn, LambdaEvent};

use crate::coordinator::Coordinator;

/// An EventBridge scheduled event (`"source": "aws.events"`, `"detail-type": "Scheduled Event"`).
pub fn is_scheduled_event(payload: &serde_json::Value) -> bool {
    payload.get("source").and_then(|v| v.as_str()) == Some("aws.events")
        && payload.get("detail-type").and_then(|v| v.as_str()) == Some("Scheduled Event")
}

/// Handles one Lambda invocation.
pub async fn handle(
    router: Router,
    coordinator: Coordinator,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let LambdaEvent { payload, context } = event;
    if is_scheduled_event(&payload) {
        let report = coordinator.maintenance().await?;
        tracing::info!(?report, "scheduled maintenance");
        return Ok(serde_json::to_value(report)?);
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = lambda_http::Adapter::from(router);
    let response = adapter.call(LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}

/// Runs the Lambda runtime loop (needs the `AWS_LAMBDA_*` environment of the Lambda service).
pub async fn run(router: Router, coordinator: Coordinator) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(move |event| {
        handle(router.clone(), coordinator.clone(), event)
    }))
    .await
}
