//! Measurement 1: publish → first `HLS-LIVE` event at the web app.

use std::path::Path;
use std::time::{Duration, Instant};

use super::publish;
use super::system::{hls_live, RtmpRelay, Vstream, WebApp};
use super::{expected_renditions, wait_closed, Clocks, Options, Row, Section, Stats, Unit};

/// One publish, times in seconds from the accepted RTMP connection.
struct Sample {
    /// ffmpeg started → its connection accepted.
    spawn_to_connect: f64,
    /// → key verification request at the web app.
    verify: f64,
    /// → first `HLS-LIVE` event.
    first_live: f64,
    /// → the `HLS-LIVE` event of the last rendition.
    all_live: Option<f64>,
    /// → each of [`STEPS`] in vstream's log.
    steps: Vec<Option<f64>>,
}

/// Log lines of vstream marking the start-up steps of a stream, with their column titles.
const STEPS: [(&str, &str); 4] = [
    ("job started", "job"),
    ("encoding", "probed"),
    ("ffmpeg started", "ffmpeg"),
    ("stream available: master playlist written", "master"),
];

pub async fn run(
    sys: &mut Vstream,
    app: &WebApp,
    args: &Options,
    hls_time: f64,
    dir: &Path,
) -> anyhow::Result<Section> {
    let relay = RtmpRelay::start(sys.rtmp).await?;
    let renditions = expected_renditions(&args.resolutions, &args.size)?;
    let mut samples = Vec::new();
    let clocks = Clocks::now();
    let tag = format!("{}ms", (hls_time * 1000.0).round() as u64);
    for i in 0..args.repeats {
        let channel = format!("startup-{tag}-{i}");
        let url = format!("rtmp://127.0.0.1:{}/{channel}/bench-key", relay.port);
        let spawned = Instant::now();
        let publisher = publish::pattern(
            &args.size,
            &url,
            &dir.join(format!("publisher-{channel}.log")),
        )?;
        let first = app
            .wait_for(
                Duration::from_secs(60),
                "the first HLS-LIVE event",
                |events| hls_live(events, &channel).first().cloned(),
            )
            .await;
        sys.check_alive()?;
        let first = first?;
        let all = app
            .wait_for(
                Duration::from_secs(10),
                "an HLS-LIVE event per rendition",
                |events| {
                    let live = hls_live(events, &channel);
                    (live.len() >= renditions.len()).then(|| live.iter().map(|e| e.at).max())
                },
            )
            .await
            .ok()
            .flatten();
        drop(publisher);
        let connect = relay
            .first_accept_since(spawned)
            .ok_or_else(|| anyhow::anyhow!("the publisher's connection was not seen"))?;
        let verify = app
            .verifications()
            .iter()
            .find(|v| v.channel == channel && v.at >= spawned)
            .map(|v| v.at)
            .ok_or_else(|| anyhow::anyhow!("no key verification for {channel}"))?;
        let secs = |at: Instant| at.saturating_duration_since(connect).as_secs_f64();
        let connect_ms = clocks.wall(connect);
        let messages: Vec<&str> = STEPS.iter().map(|(m, _)| *m).collect();
        let steps = sys
            .stream_log(&first.stream_id, &messages)
            .into_iter()
            .map(|at| at.map(|ms| (ms - connect_ms) / 1000.0))
            .collect();
        let sample = Sample {
            steps,
            spawn_to_connect: connect.duration_since(spawned).as_secs_f64(),
            verify: secs(verify),
            first_live: secs(first.at),
            all_live: all.map(secs),
        };
        eprintln!(
            "latency: startup {}/{} at {hls_time} s segments: connect → HLS-LIVE {:.3} s",
            i + 1,
            args.repeats,
            sample.first_live
        );
        samples.push(sample);
        // The stream ends (its final playlists, stream-closed) before the next one starts.
        if let Err(err) = wait_closed(app, &first.stream_id, Duration::from_secs(30)).await {
            eprintln!("latency: {channel}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let label = format!("publish → first HLS-LIVE, {hls_time} s segments");
    let firsts: Vec<f64> = samples.iter().map(|s| s.first_live).collect();
    let alls: Vec<f64> = samples.iter().filter_map(|s| s.all_live).collect();
    let mut raw = format!(
        "{label} ({}, {} renditions: {}), seconds from the RTMP connection accepted:\n",
        args.size,
        renditions.len(),
        renditions.join(", ")
    );
    raw.push_str(
        "  (spawn→connect: ffmpeg started → its TCP connection accepted; the other columns from that \
         connection: key verification at the web app; vstream's log lines \"job started\", \"encoding\" \
         (the source was buffered and probed), \"ffmpeg started\", \"master playlist written\"; the \
         HLS-LIVE events at the web app)\n",
    );
    raw.push_str("  run  spawn→connect  →verify     →job  →probed  →ffmpeg  →master  →first HLS-LIVE  →last HLS-LIVE\n");
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for (i, s) in samples.iter().enumerate() {
        raw.push_str(&format!(
            "  {i:>3}  {:>13.3}  {:>7.3}  {:>7}  {:>7}  {:>7}  {:>7}  {:>15.3}  {:>14}\n",
            s.spawn_to_connect,
            s.verify,
            show(s.steps.first().copied().flatten()),
            show(s.steps.get(1).copied().flatten()),
            show(s.steps.get(2).copied().flatten()),
            show(s.steps.get(3).copied().flatten()),
            s.first_live,
            show(s.all_live)
        ));
    }
    for (i, (_, title)) in STEPS.iter().enumerate() {
        let values: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.steps.get(i).copied().flatten())
            .collect();
        let st = Stats::of(&values);
        raw.push_str(&format!(
            "  →{title}: p50 {:.3} s, max {:.3} s\n",
            st.p50, st.max
        ));
    }
    Ok(Section {
        rows: vec![
            Row {
                measurement: label,
                stats: Stats::of(&firsts),
                unit: Unit::S,
                target: None,
            },
            Row {
                measurement: format!("publish → HLS-LIVE of every rendition, {hls_time} s segments"),
                stats: Stats::of(&alls),
                unit: Unit::S,
                target: None,
            },
        ],
        raw,
        commands: vec![format!(
            "# publisher (measurement 1, a new channel per run, through a TCP relay that timestamps the connection)\nffmpeg {}",
            publish::pattern_args(&args.size, "rtmp://127.0.0.1:$RTMP_PORT/startup-N/bench-key").join(" ")
        )],
    })
}
