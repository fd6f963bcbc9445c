//! The embedded system end to end: real ffmpeg publishing RTMP, a real web app over HTTP, the
//! output read back the way players and the web app read it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{parse_master, parse_media, publish, renditions, wait_until, System, WebApp, HEAVY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_gives_an_aligned_abr_ladder_with_events() {
    let _heavy = HEAVY.lock().await;
    let app = WebApp::start().await;
    let events = format!("{}/events", app.url);
    let system = System::start(&[
        "--default-resolutions",
        "ORIGINAL,640x360-30~800,426x240-30~400",
        "--event-callback-url",
        &events,
    ])
    .await;
    let mut publisher = publish(&format!("{}/demo/key", system.rtmp), "1280x720", 10);
    let id = system.wait_for_stream("demo").await;
    let base = format!("hls/demo/{id}");

    // While it is live: the master playlist is served, with every rendition.
    let master_path = format!("/{base}/master.m3u8");
    wait_until(Duration::from_secs(30), "master.m3u8 is served", || async {
        system.get(&master_path).await.status() == 200
    })
    .await;
    let response = system.get(&master_path).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = parse_master(&response.bytes().await.unwrap());
    let mut variants: Vec<_> = master
        .variants
        .iter()
        .map(|v| {
            let r = v.resolution.unwrap();
            assert!(v.bandwidth > 0, "{v:?}");
            let codecs = v.codecs.clone().unwrap_or_default();
            assert!(
                codecs.starts_with("avc1.") && codecs.contains("mp4a.40.2"),
                "{codecs}"
            );
            (r.width, r.height, v.uri.clone())
        })
        .collect();
    variants.sort();
    assert_eq!(
        variants,
        [
            (426, 240, "426x240-30~400/live.m3u8".to_owned()),
            (640, 360, "640x360-30~800/live.m3u8".to_owned()),
            (1280, 720, "1280x720-30/live.m3u8".to_owned()),
        ]
    );
    // ffprobe plays it over HTTP while it is live.
    let probe = common::ffprobe(&format!("{}{master_path}", system.http)).await;
    assert!(probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["codec_name"] == "h264"));

    let status = publisher.wait().await.unwrap();
    assert!(status.success(), "the publisher ran to its end");

    // After the publisher stops: every live playlist is closed, complete and aligned.
    let names = renditions(&system, "demo", &id);
    assert_eq!(names, ["1280x720-30", "426x240-30~400", "640x360-30~800"]);
    for name in &names {
        let path = system.path(&format!("{base}/{name}/live.m3u8"));
        wait_until(
            Duration::from_secs(60),
            "the live playlist ends",
            || async { std::fs::read_to_string(&path).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")) },
        )
        .await;
    }
    let playlists: Vec<_> = names
        .iter()
        .map(|n| parse_media(&system.path(&format!("{base}/{n}/live.m3u8"))))
        .collect();
    let counts: Vec<_> = playlists.iter().map(|p| p.segments.len()).collect();
    assert!(
        counts.iter().all(|c| *c == counts[0] && *c >= 4),
        "segments per rendition: {counts:?}"
    );
    for playlist in &playlists {
        assert!(playlist.end_list);
        assert!(playlist.target_duration >= 2);
        let last = playlist.segments.len() - 1;
        for (i, segment) in playlist.segments.iter().enumerate() {
            assert!(segment.program_date_time.is_some());
            if i < last {
                assert!(
                    (segment.duration - 2.0).abs() <= 0.5,
                    "segment {i} lasts {}",
                    segment.duration
                );
            }
            assert!(segment.duration <= playlist.target_duration as f32 + 0.001);
        }
        for (a, b) in playlist.segments.iter().zip(&playlists[0].segments) {
            assert!(
                (a.duration - b.duration).abs() < 0.1,
                "segments are aligned across renditions"
            );
            assert_eq!(a.uri, b.uri);
        }
    }
    // One segment per rendition decodes at the expected size.
    for (name, (w, h)) in names.iter().zip([(1280, 720), (426, 240), (640, 360)]) {
        let segment = system.path(&format!("{base}/{name}/0.ts"));
        let probe = common::ffprobe(segment.to_str().unwrap()).await;
        let video = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == "video")
            .unwrap()
            .clone();
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(w), Some(h)),
            "{name}"
        );
        let response = system.get(&format!("/{base}/{name}/0.ts")).await;
        assert_eq!(response.headers()["content-type"], "video/mp2t");
    }

    // The web app heard of each rendition, then of the end, with the SPEC headers.
    wait_until(
        Duration::from_secs(30),
        "stream-closed reaches the web app",
        || async {
            app.event_summary(&id)
                .iter()
                .any(|e| e.0 == "stream-closed")
        },
    )
    .await;
    let summary = app.event_summary(&id);
    assert_eq!(summary.last().unwrap().0, "stream-closed");
    let mut available: Vec<_> = summary
        .iter()
        .filter(|e| e.0 == "stream-available")
        .map(|e| (e.1.clone(), e.2.clone()))
        .collect();
    available.sort();
    assert_eq!(
        available,
        [
            ("HLS-LIVE".to_owned(), "1280x720-30".to_owned()),
            ("HLS-LIVE".to_owned(), "426x240-30~400".to_owned()),
            ("HLS-LIVE".to_owned(), "640x360-30~800".to_owned()),
        ]
    );
    let events = app.events.lock().unwrap().clone();
    let first = &events[0];
    assert_eq!(first["x-streaming-channel"], "demo");
    let resolution = first["x-resolution"].to_str().unwrap();
    assert_eq!(
        first["x-index-file"].to_str().unwrap(),
        format!("{base}/{resolution}/live.m3u8")
    );
    assert_eq!(
        first["x-master-index-file"].to_str().unwrap(),
        format!("{base}/master.m3u8")
    );

    // The load went back down.
    wait_until(
        Duration::from_secs(10),
        "the stream leaves the report",
        || async {
            system.report().await["activeStreams"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    )
    .await;
    assert_eq!(system.capacity().await["load"], 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_decides_who_publishes_and_which_renditions() {
    let _heavy = HEAVY.lock().await;
    let app = WebApp::start().await;
    let verify = format!("{}/verify", app.url);
    let system = System::start(&["--key-verification-url", &verify]).await;

    // Refused: the publisher is told within seconds and nothing is written.
    app.answer(403, &[]);
    let started = Instant::now();
    let status = publish(&format!("{}/demo/wrong", system.rtmp), "640x360", 10)
        .wait()
        .await
        .unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused in {:?}",
        started.elapsed()
    );
    let verification = app.verifications.lock().unwrap()[0].clone();
    assert_eq!(verification["x-streaming-channel"], "demo");
    assert_eq!(verification["x-streaming-key"], "wrong");
    assert_eq!(verification["x-user-ip"], "127.0.0.1");
    assert!(
        !system.path("hls").exists(),
        "nothing is written for a refused publish"
    );
    assert!(system.report().await["activeStreams"]
        .as_array()
        .unwrap()
        .is_empty());

    // Allowed with a ladder: exactly those renditions, fitted to the source.
    app.answer(200, &[("x-resolutions", "640x360-30~800,426x240-30~400")]);
    let mut publisher = publish(&format!("{}/demo/right", system.rtmp), "640x360", 6);
    let id = system.wait_for_stream("demo").await;
    assert!(publisher.wait().await.unwrap().success());
    let master = system.path(&format!("hls/demo/{id}/master.m3u8"));
    wait_until(
        Duration::from_secs(30),
        "the master playlist exists",
        || async { master.exists() },
    )
    .await;
    wait_until(Duration::from_secs(30), "the stream ends", || async {
        system.report().await["activeStreams"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        renditions(&system, "demo", &id),
        ["426x240-30~400", "640x360-30~800"]
    );
    let master = parse_master(&std::fs::read(master).unwrap());
    assert_eq!(master.variants.len(), 2);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_per_channel_report_and_close() {
    let _heavy = HEAVY.lock().await;
    let system = System::start(&["--default-resolutions", "ORIGINAL"]).await;
    let url = format!("{}/live/key", system.rtmp);

    let mut first = publish(&url, "320x180", 60);
    let id = system.wait_for_stream("live").await;
    let report = system.report().await;
    let stream = &report["activeStreams"][0];
    assert_eq!(stream["streamId"], id.as_str());
    assert_eq!(stream["streamServer"], "ingest-1");
    assert_eq!(stream["encoder"], "encoder-1");
    assert_eq!(report["streamingServers"][0]["serverType"], "RTMP");
    assert_eq!(system.capacity().await["load"], 1);

    // A second publisher on the live channel is refused.
    let started = Instant::now();
    let second = publish(&url, "320x180", 10).wait().await.unwrap();
    assert!(!second.success());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Wait for the first segments, then close the stream from the commands API.
    let live = system.path(&format!("hls/live/{id}/320x180-30/live.m3u8"));
    wait_until(Duration::from_secs(30), "the stream is live", || async {
        live.exists()
    })
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/commands/close", system.http))
        .header("x-streaming-channel", "live")
        .header("x-streaming-id", id.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // ffmpeg would publish for 60 s; the close command ends it long before.
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .expect("the publisher is disconnected")
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the live playlist ends",
        || async { std::fs::read_to_string(&live).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")) },
    )
    .await;

    // A third publisher after the first left is accepted, with a new stream ID.
    let mut third = publish(&url, "320x180", 4);
    let new_id = common::wait_for(Duration::from_secs(20), "a new stream starts", || async {
        let report = system.report().await;
        report["activeStreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["streamId"].as_str().unwrap().to_owned())
            .find(|s| *s != id)
    })
    .await;
    assert_ne!(new_id, id);
    assert!(third.wait().await.unwrap().success());
    system.stop().await;
}

/// The stream IDs `/commands/report` lists for `channel`.
async fn streams_of(system: &System, channel: &str) -> Vec<String> {
    system.report().await["activeStreams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["channel"] == channel)
        .map(|s| s["streamId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_within_the_window_continues_its_stream() {
    let _heavy = HEAVY.lock().await;
    let app = WebApp::start().await;
    app.answer(200, &[("x-resolutions", "ORIGINAL,320x180-30~300")]);
    let events = format!("{}/events", app.url);
    let verify = format!("{}/verify", app.url);
    let system = System::start(&[
        "--event-callback-url",
        &events,
        "--key-verification-url",
        &verify,
        "--reconnect-window-seconds",
        "5",
    ])
    .await;
    let url = format!("{}/live/key", system.rtmp);

    // The first publisher streams 6 s and leaves; another comes back 1 s later, same key.
    let mut first = publish(&url, "640x360", 6);
    let id = system.wait_for_stream("live").await;
    assert!(first.wait().await.unwrap().success());
    let left = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut second = publish(&url, "640x360", 6);
    wait_until(
        Duration::from_secs(10),
        "the web app is asked about the reconnect",
        || async { app.verifications.lock().unwrap().len() == 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        streams_of(&system, "live").await,
        std::slice::from_ref(&id),
        "the same stream goes on"
    );
    let second_status = second.wait().await.unwrap();
    assert!(second_status.success(), "the reconnect was accepted");
    let second_ended = Instant::now();
    assert!(
        !app.event_summary(&id)
            .iter()
            .any(|e| e.0 == "stream-closed"),
        "no stream-closed while the publisher was away: {:?}",
        app.event_summary(&id)
    );

    // The stream ends once the window after the second publisher has passed.
    let names = renditions(&system, "live", &id);
    assert_eq!(names, ["320x180-30~300", "640x360-30"]);
    let base = format!("hls/live/{id}");
    for name in &names {
        let path = system.path(&format!("{base}/{name}/live.m3u8"));
        wait_until(
            Duration::from_secs(60),
            "the live playlist ends",
            || async { std::fs::read_to_string(&path).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")) },
        )
        .await;
    }
    assert!(
        second_ended.elapsed() >= Duration::from_secs(4),
        "ENDLIST {:?} after the second publisher left: the window was not waited for",
        second_ended.elapsed()
    );
    for name in &names {
        let path = system.path(&format!("{base}/{name}/live.m3u8"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let playlist = parse_media(&path);
        assert_eq!(playlist.media_sequence, 0);
        // No gap: 0.ts, 1.ts, ... all listed and stored.
        for (i, segment) in playlist.segments.iter().enumerate() {
            assert_eq!(segment.uri, format!("{i}.ts"), "{name}");
            assert!(system.path(&format!("{base}/{name}/{i}.ts")).is_file());
        }
        let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
        assert!(total > 9.0, "{name}: both publishers' media: {total} s");
        let at = playlist
            .segments
            .iter()
            .position(|s| s.discontinuity)
            .unwrap();
        assert!(
            at >= 2 && at < playlist.segments.len(),
            "{name}: break at {at}"
        );
    }

    // The web app: stream-available once per rendition, stream-closed once, at the end.
    wait_until(
        Duration::from_secs(30),
        "stream-closed reaches the web app",
        || async {
            app.event_summary(&id)
                .iter()
                .any(|e| e.0 == "stream-closed")
        },
    )
    .await;
    let summary = app.event_summary(&id);
    let mut available: Vec<_> = summary
        .iter()
        .filter(|e| e.0 == "stream-available")
        .map(|e| (e.1.clone(), e.2.clone()))
        .collect();
    available.sort();
    assert_eq!(
        available,
        [
            ("HLS-LIVE".to_owned(), "320x180-30~300".to_owned()),
            ("HLS-LIVE".to_owned(), "640x360-30".to_owned()),
        ]
    );
    assert_eq!(summary.iter().filter(|e| e.0 == "stream-closed").count(), 1);
    assert_eq!(summary.last().unwrap().0, "stream-closed");
    assert!(left.elapsed() > Duration::from_secs(10));

    // Another key is another publisher: a new stream, even within the window.
    let mut third = publish(&url, "640x360", 3);
    wait_until(Duration::from_secs(20), "a third stream starts", || async {
        streams_of(&system, "live").await.len() == 1
    })
    .await;
    let third_id = streams_of(&system, "live").await[0].clone();
    assert_ne!(third_id, id);
    assert!(third.wait().await.unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = publish(&format!("{}/live/other", system.rtmp), "640x360", 3);
    let other_id = common::wait_for(Duration::from_secs(20), "a new stream starts", || async {
        streams_of(&system, "live")
            .await
            .into_iter()
            .find(|s| *s != third_id)
    })
    .await;
    assert_ne!(other_id, id);
    assert!(other.wait().await.unwrap().success());
    wait_until(Duration::from_secs(60), "both streams end", || async {
        streams_of(&system, "live").await.is_empty()
    })
    .await;
    system.stop().await;
}
