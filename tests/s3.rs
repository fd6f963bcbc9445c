//! The system with its output in an S3-compatible bucket (LocalStack, started by the harness
//! without Docker): what players, a CDN and the web app see, read back over plain HTTP from the
//! bucket; recording, VOD parts, previews, an unreachable store, the cleanup of live-only
//! streams, and fMP4.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::HeaderMap;
use common::s3::{S3Server, TcpProxy};
use common::{publish, wait_for, wait_until, System, WebApp, HEAVY};

fn media(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{text}"),
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The events the web app received for `stream_id`, in order.
fn events_of(app: &WebApp, stream_id: &str) -> Vec<HeaderMap> {
    app.events
        .lock()
        .unwrap()
        .iter()
        .filter(|h| header(h, "x-streaming-id") == stream_id)
        .cloned()
        .collect()
}

async fn wait_closed(app: &WebApp, stream_id: &str, limit: Duration) {
    wait_until(limit, "stream-closed reaches the web app", || async {
        events_of(app, stream_id)
            .iter()
            .any(|h| header(h, "x-event-type") == "stream-closed")
    })
    .await;
}

/// RFC 8216 checks of a media playlist our encoder wrote: numbering, target duration,
/// program-date-time, independent segments, and where the timeline breaks.
fn check_media_playlist(p: &m3u8_rs::MediaPlaylist, extension: &str) -> Vec<u64> {
    assert!(p.independent_segments);
    assert!(p.version.unwrap_or(1) >= 3);
    let mut numbers = Vec::new();
    for segment in &p.segments {
        // EXTINF rounded up never exceeds the target duration.
        assert!(
            (segment.duration - 0.001).ceil() as u64 <= p.target_duration,
            "{} s segment, target {}",
            segment.duration,
            p.target_duration
        );
        assert!(segment.program_date_time.is_some(), "{}", segment.uri);
        let number = segment
            .uri
            .strip_suffix(extension)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("segment URI {}", segment.uri));
        numbers.push(number);
    }
    // Program-date-times never go back.
    let times: Vec<_> = p
        .segments
        .iter()
        .map(|s| s.program_date_time.unwrap().timestamp_millis())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    numbers
}

/// Asserts that the numbers run from `first` with no gap and the timeline never breaks.
fn assert_contiguous(p: &m3u8_rs::MediaPlaylist, numbers: &[u64], first: u64) {
    let expected: Vec<u64> = (first..first + numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "segment numbers have a gap");
    assert!(
        p.segments.iter().all(|s| !s.discontinuity),
        "no discontinuity expected"
    );
    assert_eq!(p.discontinuity_sequence, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_stream_with_previews_is_served_from_the_bucket() {
    let _heavy = HEAVY.lock().await;
    let s3 = S3Server::start().await;
    let app = WebApp::start().await;
    app.answer(
        200,
        &[
            ("x-resolutions", "ORIGINAL,320x180-30~300"),
            ("x-record", "true"),
            ("x-previews", "256x144, 2"),
        ],
    );
    let verify = format!("{}/verify", app.url);
    let events = format!("{}/events", app.url);
    let mut args = vec![
        "--key-verification-url".to_owned(),
        verify,
        "--event-callback-url".to_owned(),
        events,
        "--public-base-url".to_owned(),
        "https://cdn.example/media/".to_owned(),
    ];
    args.extend(s3.system_args(None));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let system = System::start(&args).await;
    let mut publisher = publish(&format!("{}/demo/key", system.rtmp), "640x360", 20);
    let id = system.wait_for_stream("demo").await;
    let base = format!("hls/demo/{id}");

    // While live: the master is in the bucket and ffprobe plays it over plain HTTP.
    let master_key = format!("{base}/master.m3u8");
    wait_until(Duration::from_secs(30), "master.m3u8 is stored", || async {
        s3.get(&master_key).await.status() == 200
    })
    .await;
    let probe = s3.ffprobe(&master_key).await;
    let streams = probe["streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"));
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"));

    assert!(publisher.wait().await.unwrap().success());
    wait_closed(&app, &id, Duration::from_secs(60)).await;

    // Headers of every kind of object.
    let preview = format!("img-preview/demo/{id}/256x144-2");
    for (key, content_type, cache_control) in [
        (
            master_key.clone(),
            "application/vnd.apple.mpegurl",
            "no-cache",
        ),
        (
            format!("{base}/640x360-30/live.m3u8"),
            "application/vnd.apple.mpegurl",
            "no-cache",
        ),
        (
            format!("{base}/640x360-30/vod-0.m3u8"),
            "application/vnd.apple.mpegurl",
            "no-cache",
        ),
        (
            format!("{base}/320x180-30~300/0.ts"),
            "video/mp2t",
            "public, max-age=31536000, immutable",
        ),
        (
            format!("{preview}/0.jpg"),
            "image/jpeg",
            "public, max-age=31536000, immutable",
        ),
        (
            format!("{preview}/index.json"),
            "application/json",
            "no-cache",
        ),
    ] {
        let response = s3.get(&key).await;
        assert_eq!(response.status(), 200, "{key}");
        assert_eq!(response.headers()["content-type"], content_type, "{key}");
        assert_eq!(response.headers()["cache-control"], cache_control, "{key}");
    }
    // A recorded stream's objects are not tagged for expiry.
    assert!(s3.tags(&format!("{base}/640x360-30/0.ts")).await.is_empty());

    // The recording holds every segment, complete, with nothing missing in the bucket.
    let stored = s3.list(&format!("{base}/")).await;
    let mut counts = Vec::new();
    for name in ["640x360-30", "320x180-30~300"] {
        let vod = media(&s3.text(&format!("{base}/{name}/vod-0.m3u8")).await.unwrap());
        assert!(vod.end_list, "{name}: the recording is complete");
        assert_eq!(vod.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event));
        let numbers = check_media_playlist(&vod, ".ts");
        assert_contiguous(&vod, &numbers, 0);
        assert_eq!(vod.media_sequence, 0);
        let live = media(&s3.text(&format!("{base}/{name}/live.m3u8")).await.unwrap());
        assert!(live.end_list);
        let live_numbers = check_media_playlist(&live, ".ts");
        assert_contiguous(&live, &live_numbers, live.media_sequence);
        assert_eq!(
            live_numbers.last(),
            numbers.last(),
            "{name}: live and VOD end together"
        );
        for n in &numbers {
            let key = format!("{base}/{name}/{n}.ts");
            assert!(stored.contains(&key), "{key} is missing");
        }
        let total: f32 = vod.segments.iter().map(|s| s.duration).sum();
        assert!((total - 20.0).abs() < 2.5, "{name}: {total} s recorded");
        counts.push(numbers.len());
    }
    assert_eq!(counts[0], counts[1], "aligned renditions");

    // index.json counts exactly the images in the bucket.
    let index: serde_json::Value =
        serde_json::from_str(&s3.text(&format!("{preview}/index.json")).await.unwrap()).unwrap();
    assert_eq!(index["index_start"], 0);
    assert_eq!(index["pattern"], "%d.jpg");
    let images: Vec<String> = s3
        .list(&format!("{preview}/"))
        .await
        .into_iter()
        .filter(|k| k.ends_with(".jpg"))
        .collect();
    let count = index["count"].as_u64().unwrap();
    assert_eq!(images.len() as u64, count);
    assert!((9..=11).contains(&count), "{count} images for 20 s");
    for i in 0..count {
        assert!(images.contains(&format!("{preview}/{i}.jpg")));
    }
    let first = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        first.path(),
        s3.bytes(&format!("{preview}/0.jpg")).await.unwrap(),
    )
    .unwrap();
    let image = common::ffprobe(first.path().to_str().unwrap()).await;
    assert_eq!(image["streams"][0]["width"], 256);
    assert_eq!(image["streams"][0]["height"], 144);

    // The web app heard of the live renditions, the recordings and the previews, with the
    // public URL of each index file.
    let events = events_of(&app, &id);
    let mut available = Vec::new();
    for h in events
        .iter()
        .filter(|h| header(h, "x-event-type") == "stream-available")
    {
        let index_file = header(h, "x-index-file");
        assert_eq!(
            header(h, "x-playback-url"),
            format!("https://cdn.example/media/{index_file}")
        );
        assert_eq!(s3.get(&index_file).await.status(), 200, "{index_file}");
        available.push((header(h, "x-stream-type"), header(h, "x-resolution")));
    }
    available.sort();
    assert_eq!(
        available,
        [
            ("HLS-LIVE".to_owned(), "320x180-30~300".to_owned()),
            ("HLS-LIVE".to_owned(), "640x360-30".to_owned()),
            ("HLS-VOD".to_owned(), "320x180-30~300".to_owned()),
            ("HLS-VOD".to_owned(), "640x360-30".to_owned()),
            ("IMG-PREVIEW".to_owned(), "256x144-2".to_owned()),
        ]
    );
    let preview_event = events
        .iter()
        .find(|h| header(h, "x-stream-type") == "IMG-PREVIEW")
        .unwrap();
    assert_eq!(
        header(preview_event, "x-index-file"),
        format!("{preview}/index.json")
    );
    assert_eq!(
        header(events.last().unwrap(), "x-event-type"),
        "stream-closed"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_splits_into_parts_whose_start_times_add_up() {
    let _heavy = HEAVY.lock().await;
    let s3 = S3Server::start().await;
    let app = WebApp::start().await;
    app.answer(200, &[("x-resolutions", "ORIGINAL"), ("x-record", "TRUE")]);
    let verify = format!("{}/verify", app.url);
    let events = format!("{}/events", app.url);
    let mut args = vec![
        "--key-verification-url".to_owned(),
        verify,
        "--event-callback-url".to_owned(),
        events,
        "--hls-vod-max-size".to_owned(),
        "2".to_owned(),
    ];
    args.extend(s3.system_args(None));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let system = System::start(&args).await;
    let mut publisher = publish(&format!("{}/vod/key", system.rtmp), "320x180", 9);
    let id = system.wait_for_stream("vod").await;
    assert!(publisher.wait().await.unwrap().success());
    wait_closed(&app, &id, Duration::from_secs(60)).await;

    let base = format!("hls/vod/{id}/320x180-30");
    let mut parts = Vec::new();
    for part in 0.. {
        let Some(text) = s3.text(&format!("{base}/vod-{part}.m3u8")).await else {
            break;
        };
        let vod = media(&text);
        assert!(vod.end_list, "vod-{part} is complete");
        assert!(vod.segments.len() <= 2);
        parts.push(vod);
    }
    assert!(parts.len() >= 3, "{} parts", parts.len());
    // Numbering runs on across the parts.
    let mut next = 0;
    for vod in &parts {
        let numbers = check_media_playlist(vod, ".ts");
        assert_eq!(vod.media_sequence, next);
        assert_contiguous(vod, &numbers, next);
        next += numbers.len() as u64;
    }
    let events = events_of(&app, &id);
    let vod_events: Vec<(String, String)> = events
        .iter()
        .filter(|h| header(h, "x-stream-type") == "HLS-VOD")
        .map(|h| (header(h, "x-index-file"), header(h, "x-start-time")))
        .collect();
    assert_eq!(vod_events.len(), parts.len());
    let mut start = 0.0f64;
    for (part, vod) in parts.iter().enumerate() {
        let (index_file, start_time) = &vod_events[part];
        assert_eq!(*index_file, format!("{base}/vod-{part}.m3u8"));
        if part == 0 {
            assert_eq!(start_time, "", "no x-start-time on the first part");
        } else {
            let announced: f64 = start_time.parse().unwrap();
            assert!(
                (announced - start).abs() < 0.01,
                "vod-{part}: x-start-time {announced}, earlier parts last {start}"
            );
        }
        start += vod
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .sum::<f64>();
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_wait_while_the_store_is_unreachable_and_nothing_is_lost() {
    let _heavy = HEAVY.lock().await;
    let s3 = S3Server::start().await;
    let proxy = TcpProxy::start(s3.port).await;
    let app = WebApp::start().await;
    app.answer(200, &[("x-resolutions", "ORIGINAL"), ("x-record", "true")]);
    let verify = format!("{}/verify", app.url);
    let events = format!("{}/events", app.url);
    let mut args = vec![
        "--key-verification-url".to_owned(),
        verify,
        "--event-callback-url".to_owned(),
        events,
        "--hls-live-playlist-size".to_owned(),
        "4".to_owned(),
    ];
    args.extend(s3.system_args(Some(&proxy.endpoint)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let system = System::start(&args).await;
    let mut publisher = publish(&format!("{}/outage/key", system.rtmp), "320x180", 44);
    let id = system.wait_for_stream("outage").await;
    let live_key = format!("hls/outage/{id}/320x180-30/live.m3u8");
    let last_listed = |text: Option<String>| {
        text.map(|t| {
            let p = media(&t);
            p.media_sequence + p.segments.len() as u64
        })
        .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(30),
        "two segments are stored",
        || async { last_listed(s3.text(&live_key).await) >= 2 },
    )
    .await;
    let retries_before = encoder::storage_metrics().upload_retries;

    // The store is unreachable for 20 s: the live playlist stops moving.
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frozen = last_listed(s3.text(&live_key).await);
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(
        last_listed(s3.text(&live_key).await),
        frozen,
        "nothing reaches the store while it is down"
    );
    assert!(encoder::storage_metrics().upload_retries > retries_before);
    assert!(
        encoder::storage_metrics().spooled_bytes > 0,
        "segments wait on disk"
    );
    proxy.set_down(false);

    // Back: the backlog goes up and the live playlist catches up while the stream goes on.
    let caught_up = frozen + 8;
    wait_until(
        Duration::from_secs(15),
        "the live playlist catches up",
        || async { last_listed(s3.text(&live_key).await) >= caught_up },
    )
    .await;
    let live = media(&s3.text(&live_key).await.unwrap());
    assert!(!live.end_list, "still live after the outage");
    let numbers = check_media_playlist(&live, ".ts");
    assert_contiguous(&live, &numbers, live.media_sequence);
    assert_eq!(live.segments.len(), 4, "the window is full again");

    assert!(publisher.wait().await.unwrap().success());
    wait_closed(&app, &id, Duration::from_secs(60)).await;
    let base = format!("hls/outage/{id}/320x180-30");
    let vod = media(&s3.text(&format!("{base}/vod-0.m3u8")).await.unwrap());
    assert!(vod.end_list);
    let numbers = check_media_playlist(&vod, ".ts");
    assert_contiguous(&vod, &numbers, 0);
    let total: f32 = vod.segments.iter().map(|s| s.duration).sum();
    assert!((total - 44.0).abs() < 3.0, "{total} s recorded of 44");
    // The timeline did not break: each segment starts where the previous one ended.
    for pair in vod.segments.windows(2) {
        let gap = pair[1].program_date_time.unwrap().timestamp_millis()
            - pair[0].program_date_time.unwrap().timestamp_millis();
        assert!(
            (gap - (pair[0].duration * 1000.0).round() as i64).abs() <= 2,
            "{gap} ms between {} and {}",
            pair[0].uri,
            pair[1].uri
        );
    }
    let stored = s3.list(&format!("{base}/")).await;
    for n in numbers {
        assert!(stored.contains(&format!("{base}/{n}.ts")), "{n}.ts missing");
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_only_stream_is_deleted_as_the_window_moves_and_after_it_ends() {
    let _heavy = HEAVY.lock().await;
    let s3 = S3Server::start().await;
    let app = WebApp::start().await;
    app.answer(
        200,
        &[("x-resolutions", "ORIGINAL"), ("x-previews", "160x90, 3")],
    );
    let verify = format!("{}/verify", app.url);
    let events = format!("{}/events", app.url);
    let mut args = vec![
        "--key-verification-url".to_owned(),
        verify,
        "--event-callback-url".to_owned(),
        events,
        "--hls-live-playlist-size".to_owned(),
        "3".to_owned(),
        "--hls-cleanup-delay-seconds".to_owned(),
        "4".to_owned(),
    ];
    args.extend(s3.system_args(None));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let system = System::start(&args).await;
    let mut publisher = publish(&format!("{}/live/key", system.rtmp), "320x180", 24);
    let id = system.wait_for_stream("live").await;
    let base = format!("hls/live/{id}/320x180-30");
    let first = format!("{base}/0.ts");
    wait_until(
        Duration::from_secs(30),
        "the first segment is stored",
        || async { s3.get(&first).await.status() == 200 },
    )
    .await;
    // Objects of a stream that is not recorded carry the expiry tag.
    assert_eq!(
        s3.tags(&first).await,
        [("vstream-live".to_owned(), "1".to_owned())]
    );
    // It leaves the 3-segment window after ~6 s and is deleted ~6 s later, while live.
    wait_until(
        Duration::from_secs(25),
        "the first segment is deleted",
        || async { s3.get(&first).await.status() == 404 },
    )
    .await;
    let live = media(&s3.text(&format!("{base}/live.m3u8")).await.unwrap());
    assert!(!live.end_list, "deleted while the stream is live");
    assert!(live.media_sequence >= 3);
    assert_eq!(
        s3.tags(&format!("{base}/live.m3u8")).await,
        [("vstream-live".to_owned(), "1".to_owned())]
    );

    assert!(publisher.wait().await.unwrap().success());
    wait_closed(&app, &id, Duration::from_secs(60)).await;
    let previews = format!("img-preview/live/{id}/");
    let stream = format!("hls/live/{id}/");
    assert!(!s3.list(&previews).await.is_empty(), "previews were made");
    assert!(
        !s3.list(&stream).await.is_empty(),
        "kept for the cleanup delay"
    );
    // The rest goes HLS_CLEANUP_DELAY_SECONDS after the end.
    wait_for(
        Duration::from_secs(20),
        "everything of the stream is deleted",
        || async {
            let left = [s3.list(&stream).await, s3.list(&previews).await].concat();
            left.is_empty().then_some(())
        },
    )
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_segments_under_a_key_prefix_are_playable() {
    let _heavy = HEAVY.lock().await;
    let s3 = S3Server::start().await;
    let app = WebApp::start().await;
    let events = format!("{}/events", app.url);
    let mut args = vec![
        "--default-resolutions".to_owned(),
        "ORIGINAL,160x90".to_owned(),
        "--event-callback-url".to_owned(),
        events,
        "--hls-segment-type".to_owned(),
        "fmp4".to_owned(),
        "--hls-s3-prefix".to_owned(),
        "media/".to_owned(),
    ];
    args.extend(s3.system_args(None));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let system = System::start(&args).await;
    let mut publisher = publish(&format!("{}/fmp4/key", system.rtmp), "320x180", 7);
    let id = system.wait_for_stream("fmp4").await;
    assert!(publisher.wait().await.unwrap().success());
    wait_closed(&app, &id, Duration::from_secs(60)).await;

    let base = format!("media/hls/fmp4/{id}");
    for name in ["320x180-30", "160x90-30"] {
        let init = s3.get(&format!("{base}/{name}/init.mp4")).await;
        assert_eq!(init.status(), 200, "{name}/init.mp4");
        assert_eq!(init.headers()["content-type"], "video/mp4");
        let segment = s3.get(&format!("{base}/{name}/0.m4s")).await;
        assert_eq!(segment.status(), 200, "{name}/0.m4s");
        assert_eq!(segment.headers()["content-type"], "video/iso.segment");
        let live = media(&s3.text(&format!("{base}/{name}/live.m3u8")).await.unwrap());
        assert_eq!(live.version, Some(6));
        assert_eq!(
            live.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init.mp4")
        );
        let numbers = check_media_playlist(&live, ".m4s");
        assert_contiguous(&live, &numbers, live.media_sequence);
    }
    let master = s3.text(&format!("{base}/master.m3u8")).await.unwrap();
    let master = common::parse_master(master.as_bytes());
    for variant in &master.variants {
        let codecs = variant.codecs.as_deref().unwrap();
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{codecs}"
        );
        assert_ne!(
            codecs, "avc1.640028,mp4a.40.2",
            "read from the init segment"
        );
    }
    // A player decodes the fMP4 stream from the bucket.
    let probe = s3.ffprobe(&format!("{base}/master.m3u8")).await;
    assert!(probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["codec_name"] == "h264" && s["width"] == 320));
    // Keys in events are relative to the prefix.
    let live_event = events_of(&app, &id)
        .into_iter()
        .find(|h| header(h, "x-stream-type") == "HLS-LIVE")
        .unwrap();
    assert!(header(&live_event, "x-index-file").starts_with(&format!("hls/fmp4/{id}/")));
    system.stop().await;
}
