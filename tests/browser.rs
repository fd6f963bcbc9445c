//! The web page in a real headless Chromium (playwright-core, `web/tests/browser.mjs`) against
//! the whole system in process: publishing the fake camera over WebSocket, playing live
//! streams with hls.js, previews and recordings, and a refused key.
//!
//! Needs `/usr/bin/chromium` and `npm ci --prefix web` (`scripts/test` installs both).
//! Screenshots go to `test-artifacts/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    artifact, browser, files_under, publish, renditions, wait_until, System, WebApp, HEAVY,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_publishes_the_camera_over_websocket_and_another_page_plays_it() {
    let _heavy = HEAVY.lock().await;
    let system = System::start(&["--default-resolutions", "ORIGINAL,320x180-30~300"]).await;
    let result = browser(
        "publish-and-watch",
        json!({
            "base": system.http,
            "channel": "webcam",
            "key": "secret",
            "source": "camera",
            "size": "640x360",
            "seconds": 15,
            "minAdvance": 5,
            "screenshot": artifact("browser-publish-and-watch.png"),
        }),
    )
    .await;
    // The viewer played the browser's stream, from the server's own hls.js, with a choice of
    // renditions and a latency shown.
    assert!(result["advanced"].as_f64().unwrap() >= 5.0, "{result}");
    assert_eq!(
        result["hls"], "1.7.4",
        "hls.js is served from web/node_modules"
    );
    // hls.js chooses the rendition (the source's or 320x180).
    assert!(
        [640, 320].contains(&result["width"].as_u64().unwrap()),
        "{result}"
    );
    let choices = result["renditions"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "Auto + two renditions: {result}");
    assert!(
        result["latency"].as_str().unwrap().starts_with("Latency"),
        "{result}"
    );
    assert!(
        result["publishStatus"]
            .as_str()
            .unwrap()
            .contains("video/webm"),
        "{result}"
    );

    // The publisher's stop ends the stream: it leaves the report and its playlists close.
    let id = result["streamId"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(60), "the stream ends", || async {
        system.report().await["activeStreams"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    // Rendition folders are named after the source's frame rate (the fake camera's).
    let names = renditions(&system, "webcam", &id);
    assert_eq!(names.len(), 2, "{names:?}");
    for name in names {
        let path = system.path(&format!("hls/webcam/{id}/{name}/live.m3u8"));
        wait_until(
            Duration::from_secs(30),
            "the live playlist ends",
            || async { std::fs::read_to_string(&path).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")) },
        )
        .await;
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_stream_plays_in_the_page_with_previews_and_then_as_a_recording() {
    let _heavy = HEAVY.lock().await;
    let app = WebApp::start().await;
    app.answer(
        200,
        &[
            ("x-resolutions", "ORIGINAL,320x180-30~300"),
            ("x-record", "true"),
            ("x-previews", "160x90, 2"),
        ],
    );
    let verify = format!("{}/verify", app.url);
    let system = System::start(&["--key-verification-url", &verify]).await;
    let mut publisher = publish(&format!("{}/obs/s3cr3t-key", system.rtmp), "640x360", 20);

    let live = browser(
        "watch",
        json!({
            "base": system.http,
            "channel": "obs",
            "minAdvance": 5,
            "previews": true,
            "screenshot": artifact("browser-rtmp-live.png"),
        }),
    )
    .await;
    assert!(live["advanced"].as_f64().unwrap() >= 5.0, "{live}");
    assert!(
        [640, 320].contains(&live["width"].as_u64().unwrap()),
        "{live}"
    );
    assert!(live["previews"].as_u64().unwrap() >= 1, "{live}");
    // The public list names the stream, never its key.
    let list = system.get("/api/streams").await.text().await.unwrap();
    assert!(
        list.contains("\"channel\":\"obs\"") && !list.contains("s3cr3t"),
        "{list}"
    );

    assert!(publisher.wait().await.unwrap().success());
    wait_until(Duration::from_secs(60), "the stream ends", || async {
        system.report().await["activeStreams"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let recorded = browser(
        "vod",
        json!({
            "base": system.http,
            "channel": "obs",
            "minAdvance": 3,
            "screenshot": artifact("browser-recording.png"),
        }),
    )
    .await;
    assert!(recorded["advanced"].as_f64().unwrap() >= 3.0, "{recorded}");
    assert_eq!(recorded["width"], 640, "the largest rendition: {recorded}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_shows_a_clear_error_in_the_page_and_writes_nothing() {
    let _heavy = HEAVY.lock().await;
    let app = WebApp::start().await;
    app.answer(403, &[]);
    let verify = format!("{}/verify", app.url);
    let system = System::start(&["--key-verification-url", &verify]).await;
    let result = browser(
        "publish-refused",
        json!({
            "base": system.http,
            "channel": "demo",
            "key": "wrong",
            "source": "pattern",
            "size": "320x180",
            "screenshot": artifact("browser-wrong-key.png"),
        }),
    )
    .await;
    assert_eq!(result["state"], "error", "{result}");
    assert_eq!(result["text"], "Refused (403): Invalid key", "{result}");

    let verifications = app.verifications.lock().unwrap().clone();
    assert_eq!(verifications.len(), 1);
    assert_eq!(verifications[0]["x-streaming-key"], "wrong");
    assert!(system.report().await["activeStreams"]
        .as_array()
        .unwrap()
        .is_empty());
    let written = files_under(system.data.path());
    assert!(written.is_empty(), "nothing is written: {written:?}");
    system.stop().await;
}
