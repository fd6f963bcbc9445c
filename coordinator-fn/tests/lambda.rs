//! The coordinator on the Lambda path: the Lambda runtime's own event fixtures (shipped in the
//! `lambda_http` crate, found through `cargo metadata`), rewritten to our routes, go through
//! the same handler the Lambda binary runs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use contract::token::{Component, TokenKeys};
use coordinator_fn::bus::LocalBus;
use coordinator_fn::config::CoordinatorConfig;
use coordinator_fn::state::{EncoderNode, MemoryState};
use coordinator_fn::Coordinator;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

/// The `tests/data` folder of the `lambda_http` package this workspace builds against.
fn lambda_http_fixtures() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lambda_http")
        .unwrap();
    PathBuf::from(package["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("tests/data")
}

/// A fixture with its method, path, headers and body replaced.
fn event(
    fixture: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Value {
    let text = std::fs::read_to_string(lambda_http_fixtures().join(fixture)).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["cookies"] = json!([]);
    let mut map = serde_json::Map::new();
    map.insert("host".into(), json!("id.lambda-url.eu-west-2.on.aws"));
    map.insert("content-type".into(), json!("application/json"));
    for (name, value) in headers {
        map.insert((*name).into(), json!(value));
    }
    event["headers"] = Value::Object(map);
    event["body"] = body.map_or(Value::Null, |b| json!(b));
    event["isBase64Encoded"] = json!(false);
    event
}

async fn coordinator() -> (Coordinator, axum::Router, TokenKeys) {
    let coordinator = Coordinator::new(
        CoordinatorConfig::default(),
        Arc::new(MemoryState::new()),
        Arc::new(LocalBus::new()),
    );
    coordinator
        .register_encoder(EncoderNode {
            id: "encoder-1".into(),
            capacity: 3,
        })
        .await
        .unwrap();
    let keys = TokenKeys::new("a-long-enough-secret");
    let router = coordinator_fn::service::router(coordinator.clone(), keys.clone(), true);
    (coordinator, router, keys)
}

async fn invoke(router: &axum::Router, coordinator: &Coordinator, payload: Value) -> Value {
    coordinator_fn::lambda::handle(
        router.clone(),
        coordinator.clone(),
        LambdaEvent::new(payload, Context::default()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_function_url_event_reaches_the_commands_api() {
    let (coordinator, router, _) = coordinator().await;
    let payload = event(
        "lambda_function_url_request.json",
        "GET",
        "/commands/capacity",
        &[],
        None,
    );
    // The runtime's own parser accepts the rewritten fixture.
    let request = lambda_http::request::from_str(&payload.to_string()).unwrap();
    assert_eq!(request.uri().path(), "/commands/capacity");
    let response = invoke(&router, &coordinator, payload).await;
    assert_eq!(response["statusCode"], 200);
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"load": 0, "capacity": 3, "encoderCount": 1}));
}

#[tokio::test]
async fn an_api_gateway_v2_event_reaches_the_internal_api_with_its_auth() {
    let (coordinator, router, keys) = coordinator().await;
    let heartbeat = r#"{"kind":"encoder","id":"encoder-2","capacity":1}"#;
    let payload = event(
        "apigw_v2_proxy_request.json",
        "POST",
        "/internal/heartbeat",
        &[],
        Some(heartbeat),
    );
    assert_eq!(
        invoke(&router, &coordinator, payload).await["statusCode"],
        401
    );

    let token = format!("Bearer {}", keys.sign(Component::Encoder, "encoder-2"));
    let payload = event(
        "apigw_v2_proxy_request.json",
        "POST",
        "/internal/heartbeat",
        &[("authorization", &token)],
        Some(heartbeat),
    );
    assert_eq!(
        invoke(&router, &coordinator, payload).await["statusCode"],
        204
    );
    assert_eq!(coordinator.capacity().await.unwrap().encoder_count, 2);
}

#[tokio::test]
async fn a_scheduled_event_runs_maintenance() {
    let (coordinator, router, _) = coordinator().await;
    let scheduled = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-24T00:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/vstream-maintenance"],
        "detail": {}
    });
    let report = invoke(&router, &coordinator, scheduled).await;
    assert_eq!(report["deadNodes"], 0);
    assert_eq!(report["eventsDelivered"], 0);
}
