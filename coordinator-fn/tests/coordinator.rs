//! The coordinator against a real HTTP web app on loopback: key verification, event delivery
//! with retries and order, the commands API and its auth.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use contract::control::{
    ControlPlane, EncoderCommand, EncoderEvent, IngestCommand, PublishRefusal, PublishRequest,
    SourceKind, StreamType,
};
use contract::resolution::ResolutionRequest;
use coordinator_fn::auth::HeaderAuth;
use coordinator_fn::bus::LocalBus;
use coordinator_fn::config::CoordinatorConfig;
use coordinator_fn::state::{EncoderNode, IngestNode, MemoryState, StateStore as _};
use coordinator_fn::Coordinator;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct WebApp {
    verifications: Arc<Mutex<Vec<HeaderMap>>>,
    events: Arc<Mutex<Vec<HeaderMap>>>,
    /// Event callbacks answered 500 while this is > 0 (decremented on each).
    failures_left: Arc<Mutex<u32>>,
    verify_status: Arc<Mutex<u16>>,
    verify_delay: Arc<Mutex<Duration>>,
}

async fn start_webapp(app: WebApp) -> String {
    let router =
        Router::new()
            .route(
                "/verify",
                post(
                    |axum::extract::State(app): axum::extract::State<WebApp>,
                     headers: HeaderMap| async move {
                        let delay = *app.verify_delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        app.verifications.lock().unwrap().push(headers);
                        let status =
                            StatusCode::from_u16(*app.verify_status.lock().unwrap()).unwrap();
                        (
                            status,
                            [
                                ("x-resolutions", "640x360-30~800, 426x240-30~400"),
                                ("x-record", "true"),
                                ("x-previews", "256x144, 2"),
                            ],
                        )
                    },
                ),
            )
            .route(
                "/events",
                post(
                    |axum::extract::State(app): axum::extract::State<WebApp>,
                     headers: HeaderMap| async move {
                        let mut failures = app.failures_left.lock().unwrap();
                        app.events.lock().unwrap().push(headers);
                        if *failures > 0 {
                            *failures -= 1;
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

struct Harness {
    coordinator: Coordinator,
    encoder_rx: tokio::sync::mpsc::Receiver<EncoderCommand>,
    ingest_rx: tokio::sync::mpsc::Receiver<IngestCommand>,
}

async fn harness(config: CoordinatorConfig, capacity: i64) -> Harness {
    harness_on(config, capacity, Arc::new(MemoryState::new())).await
}

async fn harness_on(
    config: CoordinatorConfig,
    capacity: i64,
    state: Arc<dyn coordinator_fn::state::StateStore>,
) -> Harness {
    let bus = Arc::new(LocalBus::new());
    let encoder_rx = bus.subscribe_encoder("encoder-1");
    let ingest_rx = bus.subscribe_ingest("ingest-1");
    let coordinator = Coordinator::new(config, state, bus);
    coordinator
        .register_encoder(EncoderNode {
            id: "encoder-1".into(),
            capacity,
        })
        .await
        .unwrap();
    Harness {
        coordinator,
        encoder_rx,
        ingest_rx,
    }
}

fn request(channel: &str, key: &str) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        key: key.into(),
        user_ip: "203.0.113.7".into(),
        ingest_id: "ingest-1".into(),
        source: SourceKind::Rtmp,
    }
}

#[tokio::test]
async fn key_verification_sends_the_spec_headers_and_reads_the_options() {
    let app = WebApp::default();
    *app.verify_status.lock().unwrap() = 200;
    let base = start_webapp(app.clone()).await;
    let config = CoordinatorConfig {
        key_verification_url: Some(format!("{base}/verify")),
        key_verification_auth: Some(HeaderAuth::Bearer {
            token: "app-token".into(),
        }),
        ..CoordinatorConfig::default()
    };
    let mut h = harness(config, -1).await;
    let grant = h
        .coordinator
        .publish(request("demo", "secret"))
        .await
        .expect("granted");
    let headers = app.verifications.lock().unwrap()[0].clone();
    assert_eq!(headers["x-streaming-channel"], "demo");
    assert_eq!(headers["x-streaming-key"], "secret");
    assert_eq!(headers["x-user-ip"], "203.0.113.7");
    assert_eq!(headers["authorization"], "Bearer app-token");
    let Some(EncoderCommand::Start(job)) = h.encoder_rx.recv().await else {
        panic!("no job")
    };
    assert_eq!(job.stream_id, grant.stream_id);
    assert!(job.options.record);
    assert_eq!(
        job.options.previews.map(|p| p.name()),
        Some("256x144-2".to_owned())
    );
    assert_eq!(
        job.options
            .resolutions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["640x360-30~800", "426x240-30~400"]
    );
}

#[tokio::test]
async fn refused_unreachable_and_slow_web_apps_refuse_the_publish() {
    let app = WebApp::default();
    *app.verify_status.lock().unwrap() = 403;
    let base = start_webapp(app.clone()).await;
    let config = CoordinatorConfig {
        key_verification_url: Some(format!("{base}/verify")),
        key_verification_timeout: Duration::from_millis(300),
        ..CoordinatorConfig::default()
    };
    let h = harness(config.clone(), -1).await;
    assert!(matches!(
        h.coordinator.publish(request("demo", "k")).await,
        Err(PublishRefusal::InvalidKey(_))
    ));

    *app.verify_status.lock().unwrap() = 200;
    *app.verify_delay.lock().unwrap() = Duration::from_secs(2);
    let started = std::time::Instant::now();
    assert!(matches!(
        h.coordinator.publish(request("demo", "k")).await,
        Err(PublishRefusal::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the timeout applies"
    );

    let config = CoordinatorConfig {
        key_verification_url: Some("http://127.0.0.1:9/verify".into()),
        ..config
    };
    let h = harness(config, -1).await;
    assert!(matches!(
        h.coordinator.publish(request("demo", "k")).await,
        Err(PublishRefusal::Unavailable(_))
    ));
    assert_eq!(
        h.coordinator.capacity().await.unwrap().load,
        0,
        "nothing was reserved"
    );
}

#[tokio::test]
async fn invalid_identifiers_are_refused_without_asking_the_web_app() {
    let app = WebApp::default();
    let base = start_webapp(app.clone()).await;
    let config = CoordinatorConfig {
        key_verification_url: Some(format!("{base}/verify")),
        ..CoordinatorConfig::default()
    };
    let h = harness(config, -1).await;
    for (channel, key) in [
        ("bad.channel", "k"),
        ("demo", "a b"),
        (&"c".repeat(10_000) as &str, "k"),
    ] {
        assert!(matches!(
            h.coordinator.publish(request(channel, key)).await,
            Err(PublishRefusal::InvalidKey(_))
        ));
    }
    assert!(app.verifications.lock().unwrap().is_empty());
}

#[tokio::test]
async fn one_publisher_per_channel_and_capacity_is_respected_and_released() {
    let h = harness(CoordinatorConfig::default(), 1).await;
    let c = &h.coordinator;
    let first = c.publish(request("a", "k")).await.expect("first");
    assert_eq!(
        c.publish(request("a", "k")).await,
        Err(PublishRefusal::AlreadyPublishing)
    );
    assert_eq!(
        c.publish(request("b", "k")).await,
        Err(PublishRefusal::NoCapacity)
    );
    let capacity = c.capacity().await.unwrap();
    assert_eq!(
        (capacity.load, capacity.capacity, capacity.encoder_count),
        (1, 1, 1)
    );

    // The publisher leaves: the channel is free at once, the load only when the encoder is done.
    c.publish_ended("a", &first.stream_id).await.unwrap();
    assert_eq!(c.capacity().await.unwrap().load, 1);
    c.encoder_event(EncoderEvent::Closed {
        stream_id: first.stream_id.clone(),
        channel: "a".into(),
        encoder_id: "encoder-1".into(),
    })
    .await
    .unwrap();
    assert_eq!(c.capacity().await.unwrap().load, 0);
    c.publish(request("a", "k")).await.expect("accepted again");
}

#[tokio::test]
async fn events_are_delivered_in_order_per_stream_with_stable_ids_across_retries() {
    events_in_order(Arc::new(MemoryState::new())).await;
}

#[tokio::test]
async fn events_are_delivered_in_order_from_redis_too() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut state = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(s) = coordinator_fn::redis_state::RedisState::connect(
            &format!("redis://127.0.0.1:{port}"),
            Default::default(),
        )
        .await
        {
            state = Some(s);
            break;
        }
    }
    events_in_order(Arc::new(state.unwrap())).await;
    let _ = child.kill();
    let _ = child.wait();
}

async fn events_in_order(state: Arc<dyn coordinator_fn::state::StateStore>) {
    let app = WebApp::default();
    *app.failures_left.lock().unwrap() = 3;
    let base = start_webapp(app.clone()).await;
    let config = CoordinatorConfig {
        event_callback_url: Some(format!("{base}/events")),
        event_callback_auth: Some(HeaderAuth::Basic {
            user: "u".into(),
            password: "p".into(),
        }),
        public_base_url: Some("https://cdn.example".into()),
        ..CoordinatorConfig::default()
    };
    let h = harness_on(config, -1, state).await;
    let c = h.coordinator.clone();
    let shutdown = CancellationToken::new();
    let delivery = tokio::spawn({
        let c = c.clone();
        let shutdown = shutdown.clone();
        async move { c.run_maintenance(shutdown).await }
    });
    let grant = c.publish(request("demo", "k")).await.unwrap();
    for rendition in ["640x360-30", "426x240-30"] {
        c.encoder_event(EncoderEvent::Available {
            stream_id: grant.stream_id.clone(),
            channel: "demo".into(),
            stream_type: StreamType::HlsLive,
            resolution: rendition.into(),
            index_file: format!("hls/demo/{}/{rendition}/live.m3u8", grant.stream_id),
            master_index_file: Some(format!("hls/demo/{}/master.m3u8", grant.stream_id)),
            start_time: None,
        })
        .await
        .unwrap();
    }
    c.publish_ended("demo", &grant.stream_id).await.unwrap();
    c.encoder_event(EncoderEvent::Closed {
        stream_id: grant.stream_id.clone(),
        channel: "demo".into(),
        encoder_id: "encoder-1".into(),
    })
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = app.events.lock().unwrap().len();
        if delivered >= 6 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not delivered: {delivered}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    delivery.await.unwrap();
    let events = app.events.lock().unwrap().clone();
    // 3 failed attempts of the first event, then each event once, in order.
    let ids: Vec<_> = events
        .iter()
        .map(|h| h["x-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert_eq!(ids[2], ids[3]);
    let kinds: Vec<_> = events[3..]
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["x-event-type"].to_str().unwrap(),
                h.get("x-resolution")
                    .map(|v| v.to_str().unwrap())
                    .unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "stream-available 640x360-30",
            "stream-available 426x240-30",
            "stream-closed -"
        ]
    );
    let first = &events[3];
    assert_eq!(first["x-streaming-channel"], "demo");
    assert_eq!(first["x-streaming-id"], grant.stream_id.as_str());
    assert_eq!(first["x-stream-type"], "HLS-LIVE");
    assert_eq!(first["authorization"], "Basic dTpw");
    assert_eq!(
        first["x-playback-url"],
        format!(
            "https://cdn.example/hls/demo/{}/640x360-30/live.m3u8",
            grant.stream_id
        )
        .as_str()
    );
    assert!(first.get("x-master-index-file").is_some());
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn commands_api_reports_closes_and_checks_credentials() {
    let config = CoordinatorConfig {
        commands_auth: Some(HeaderAuth::Basic {
            user: "admin".into(),
            password: "pw".into(),
        }),
        ..CoordinatorConfig::default()
    };
    let mut h = harness(config, 2).await;
    let router = coordinator_fn::commands::router(h.coordinator.clone());
    let auth = [("authorization", "Basic YWRtaW46cHc=")];

    assert_eq!(
        call(&router, "GET", "/commands/capacity", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &router,
            "GET",
            "/commands/capacity",
            &[("authorization", "Bearer pw")]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = call(&router, "GET", "/commands/capacity", &auth).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"load":0,"capacity":2,"encoderCount":1}"#);

    let grant = h.coordinator.publish(request("demo", "k")).await.unwrap();
    let (_, body) = call(&router, "GET", "/commands/report", &auth).await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["activeStreams"][0]["streamId"],
        grant.stream_id.as_str()
    );
    assert_eq!(report["activeStreams"][0]["channel"], "demo");
    assert_eq!(report["activeStreams"][0]["streamServer"], "ingest-1");
    assert_eq!(report["activeStreams"][0]["encoder"], "encoder-1");
    assert_eq!(report["encoders"][0]["load"], 1);

    let (status, _) = call(
        &router,
        "POST",
        "/commands/close",
        &[
            auth[0],
            ("x-streaming-channel", "../x"),
            ("x-streaming-id", "*"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the channel is validated");
    let (status, _) = call(
        &router,
        "POST",
        "/commands/close",
        &[
            auth[0],
            ("x-streaming-channel", "demo"),
            ("x-streaming-id", "nope"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &router,
        "POST",
        "/commands/close",
        &[
            auth[0],
            ("x-streaming-channel", "demo"),
            ("x-streaming-id", "*"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"closed":1}"#));
    let Some(IngestCommand::Kill { channel, stream_id }) = h.ingest_rx.recv().await else {
        panic!("no kill command")
    };
    assert_eq!(channel, "demo");
    assert_eq!(stream_id, Some(grant.stream_id));
}

async fn next_command(rx: &mut tokio::sync::mpsc::Receiver<EncoderCommand>) -> EncoderCommand {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a command within 5 s")
        .expect("the bus is open")
}

#[tokio::test]
async fn a_publisher_back_within_the_window_continues_its_stream() {
    let app = WebApp::default();
    *app.verify_status.lock().unwrap() = 200;
    let base = start_webapp(app.clone()).await;
    let config = CoordinatorConfig {
        key_verification_url: Some(format!("{base}/verify")),
        reconnect_window: Duration::from_secs(5),
        ..CoordinatorConfig::default()
    };
    let mut h = harness(config, 1).await;
    let c = h.coordinator.clone();
    // The reconnect lands on another ingest node, which serves media to encoders over HTTP.
    c.register_ingest(IngestNode {
        id: "ingest-2".into(),
        ip: "198.51.100.2".into(),
        port: 1935,
        ssl: false,
        server_type: SourceKind::Rtmp,
        internal_url: Some("http://10.0.0.2:8081/".into()),
    })
    .await
    .unwrap();

    let first = c.publish(request("demo", "k")).await.unwrap();
    let EncoderCommand::Start(job) = next_command(&mut h.encoder_rx).await else {
        panic!("no start")
    };
    assert_eq!(job.reconnect_window_ms, 5_000);
    c.publish_ended("demo", &first.stream_id).await.unwrap();

    let mut back = request("demo", "k");
    back.ingest_id = "ingest-2".into();
    back.source = SourceKind::Ws;
    let again = c.publish(back).await.expect("granted");
    assert_eq!(again, first, "the same stream, on the same encoder");
    assert_eq!(
        app.verifications.lock().unwrap().len(),
        2,
        "the web app still decides"
    );
    assert_eq!(
        next_command(&mut h.encoder_rx).await,
        EncoderCommand::Resume {
            stream_id: first.stream_id.clone(),
            ingest_id: "ingest-2".into(),
            source: SourceKind::Ws,
            media_url: Some(format!(
                "http://10.0.0.2:8081/internal/media/{}",
                first.stream_id
            )),
        }
    );
    let report = c.report().await.unwrap();
    assert_eq!(report.active_streams.len(), 1);
    assert_eq!(report.active_streams[0].stream_id, first.stream_id.as_str());
    assert_eq!(report.active_streams[0].stream_server, "ingest-2");
    assert_eq!(c.capacity().await.unwrap().load, 1, "still one stream");
    assert_eq!(
        c.publish(request("demo", "k")).await,
        Err(PublishRefusal::AlreadyPublishing),
        "the channel is held again"
    );
    assert!(c
        .metrics()
        .await
        .contains("vstream_publishes_resumed_total 1"));

    // Another key after the publisher left: a new stream (on no free encoder: the old stream
    // still holds its load until its encoder reports it closed).
    c.publish_ended("demo", &first.stream_id).await.unwrap();
    assert_eq!(
        c.publish(request("demo", "other")).await,
        Err(PublishRefusal::NoCapacity)
    );
    c.encoder_event(EncoderEvent::Closed {
        stream_id: first.stream_id.clone(),
        channel: "demo".into(),
        encoder_id: "encoder-1".into(),
    })
    .await
    .unwrap();
    // Once the encoder closed it, the stream is over, whatever the key.
    let next = c.publish(request("demo", "k")).await.unwrap();
    assert_ne!(next.stream_id, first.stream_id);
    assert!(matches!(
        next_command(&mut h.encoder_rx).await,
        EncoderCommand::Start(job) if job.stream_id == next.stream_id
    ));
}

#[tokio::test]
async fn without_a_window_or_after_a_close_a_reconnect_is_a_new_stream() {
    let config = CoordinatorConfig {
        reconnect_window: Duration::ZERO,
        ..CoordinatorConfig::default()
    };
    let mut h = harness(config, -1).await;
    let c = h.coordinator.clone();
    let first = c.publish(request("demo", "k")).await.unwrap();
    let EncoderCommand::Start(job) = next_command(&mut h.encoder_rx).await else {
        panic!("no start")
    };
    assert_eq!(job.reconnect_window_ms, 0);
    c.publish_ended("demo", &first.stream_id).await.unwrap();
    let second = c.publish(request("demo", "k")).await.unwrap();
    assert_ne!(second.stream_id, first.stream_id);

    // With a window, a stream closed by the commands API is not continued by a reconnect,
    // and its encoder is told to finish at once.
    let mut h = harness(CoordinatorConfig::default(), -1).await;
    let c = h.coordinator.clone();
    let first = c.publish(request("demo", "k")).await.unwrap();
    next_command(&mut h.encoder_rx).await;
    assert_eq!(c.close("demo", None).await.unwrap(), 1);
    assert!(matches!(
        h.ingest_rx.recv().await,
        Some(IngestCommand::Kill { stream_id: Some(id), .. }) if id == first.stream_id
    ));
    assert_eq!(
        next_command(&mut h.encoder_rx).await,
        EncoderCommand::Stop {
            stream_id: first.stream_id.clone()
        }
    );
    c.publish_ended("demo", &first.stream_id).await.unwrap();
    let second = c.publish(request("demo", "k")).await.unwrap();
    assert_ne!(second.stream_id, first.stream_id);
    assert!(matches!(
        next_command(&mut h.encoder_rx).await,
        EncoderCommand::Start(job) if job.stream_id == second.stream_id
    ));

    // A stream already waiting in its window is ended by a close too.
    c.publish_ended("demo", &second.stream_id).await.unwrap();
    assert_eq!(c.close("demo", Some(&second.stream_id)).await.unwrap(), 1);
    assert_eq!(
        next_command(&mut h.encoder_rx).await,
        EncoderCommand::Stop {
            stream_id: second.stream_id.clone()
        }
    );
    let third = c.publish(request("demo", "k")).await.unwrap();
    assert_ne!(third.stream_id, second.stream_id);
}

#[tokio::test]
async fn a_reconnect_whose_encoder_is_gone_starts_a_new_stream() {
    let bus = Arc::new(LocalBus::new());
    let mut alive = bus.subscribe_encoder("encoder-1");
    let gone = bus.subscribe_encoder("encoder-9");
    let state = Arc::new(MemoryState::new());
    let c = Coordinator::new(CoordinatorConfig::default(), state.clone(), bus);
    for id in ["encoder-1", "encoder-9"] {
        c.register_encoder(EncoderNode {
            id: id.into(),
            capacity: 1,
        })
        .await
        .unwrap();
    }
    let other = c.publish(request("other", "k")).await.unwrap();
    assert_eq!(other.encoder_id, "encoder-1");
    let first = c.publish(request("demo", "k")).await.unwrap();
    assert_eq!(first.encoder_id, "encoder-9");
    drop(gone);
    // encoder-1 gets room again.
    c.publish_ended("other", &other.stream_id).await.unwrap();
    c.encoder_event(EncoderEvent::Closed {
        stream_id: other.stream_id.clone(),
        channel: "other".into(),
        encoder_id: "encoder-1".into(),
    })
    .await
    .unwrap();
    while alive.try_recv().is_ok() {}

    c.publish_ended("demo", &first.stream_id).await.unwrap();
    let again = c.publish(request("demo", "k")).await.unwrap();
    assert_ne!(again.stream_id, first.stream_id);
    assert_eq!(again.encoder_id, "encoder-1");
    assert!(matches!(
        next_command(&mut alive).await,
        EncoderCommand::Start(job) if job.stream_id == again.stream_id
    ));
    // The old stream is over: its load is released and the web app hears of its end.
    assert!(state.stream(&first.stream_id).await.unwrap().is_none());
    let due = state.lease_due_events(u64::MAX / 2, 1).await.unwrap();
    assert!(due.iter().any(|p| p.event.stream_id == first.stream_id
        && p.event.kind == coordinator_fn::webapp::WebAppEventKind::Closed));
}

#[test]
fn default_resolutions_apply_when_no_web_app_is_configured() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        c: coordinator_fn::config::CoordinatorArgs,
    }
    let cli = Cli::parse_from(["x"]);
    let config = cli.c.to_config(Some("ORIGINAL,640x360-30~800")).unwrap();
    assert_eq!(
        config.default_options.resolutions[0],
        ResolutionRequest::Original
    );
    assert_eq!(config.default_options.resolutions.len(), 2);
    assert_eq!(config.reconnect_window, Duration::from_secs(5));
    let cli = Cli::parse_from(["x", "--reconnect-window-seconds", "0"]);
    assert_eq!(
        cli.c.to_config(None).unwrap().reconnect_window,
        Duration::ZERO
    );
}
