//! Measurement 2: segment closed (ffmpeg renames `{N}.ts.tmp` to `{N}.ts` in the encoder's
//! work directory, seen by inotify) → the rendition's `live.m3u8` in the bucket names `{N}.ts`
//! (GETs every `--poll-ms` from the close on).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::publish;
use super::s3::LocalStack;
use super::system::{hls_live, Vstream, WebApp};
use super::workdir::{Produced, WorkDirWatcher};
use super::{expected_renditions, wait_closed, Options, Row, Section, Stats, Unit};

/// Segments not timed at the start of the stream (the first playlists and the master).
pub(super) const WARM_UP_SEGMENTS: u64 = 2;
/// Target of the measurement, p99.
const TARGET: f64 = 0.150;

/// One segment of one rendition.
#[derive(Debug, Clone)]
struct Sample {
    variant: usize,
    index: u64,
    /// Close → the first GET that named it completed (upper bound), seconds.
    upper: f64,
    /// Close → start of the last GET that did not name it (lower bound), seconds.
    lower: f64,
    /// Close → ffmpeg rewrote its own playlist (what the encoder's watcher reads), seconds.
    ffmpeg_playlist: Option<f64>,
    /// GETs made for it.
    polls: u32,
}

/// What a poller reports.
pub(super) struct Seen {
    pub index: u64,
    pub closed: Instant,
    /// Start of the last GET that did not name it.
    pub before: Instant,
    /// End of the GET that named it.
    pub after: Instant,
    pub polls: u32,
    pub rtt: Duration,
}

/// GETs `url` every `interval` while a closed segment is awaited; reports each segment
/// (`{N}.ts` or `{N}.m4s`) once a GET names it.
pub(super) async fn poll_playlist(
    client: reqwest::Client,
    url: String,
    interval: Duration,
    variant: usize,
    mut closed: mpsc::UnboundedReceiver<(u64, Instant)>,
    seen: mpsc::UnboundedSender<(usize, Seen)>,
) {
    let mut pending: VecDeque<(u64, Instant, Instant, u32)> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match closed.recv().await {
                Some((index, at)) => pending.push_back((index, at, at, 0)),
                None => return,
            }
        }
        while let Ok((index, at)) = closed.try_recv() {
            pending.push_back((index, at, at, 0));
        }
        let sent = Instant::now();
        let text = match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                response.text().await.unwrap_or_default()
            }
            _ => String::new(),
        };
        let got = Instant::now();
        pending.retain_mut(|(index, closed, before, polls)| {
            *polls += 1;
            let ts = format!("{index}.ts");
            let m4s = format!("{index}.m4s");
            if text.lines().any(|l| l == ts || l == m4s) {
                let _ = seen.send((
                    variant,
                    Seen {
                        index: *index,
                        closed: *closed,
                        before: *before,
                        after: got,
                        polls: *polls,
                        rtt: got - sent,
                    },
                ));
                false
            } else {
                *before = sent;
                // Given up after 30 s (reported as missing).
                closed.elapsed() < Duration::from_secs(30)
            }
        });
        tokio::time::sleep_until((sent + interval).into()).await;
    }
}

/// `#EXT-X-TARGETDURATION` and the range of `#EXTINF` of a live playlist, for the report.
pub(super) fn playlist_summary(text: &str) -> String {
    let target = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .unwrap_or("?");
    let durations: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    let min = durations.iter().copied().fold(f64::INFINITY, f64::min);
    let max = durations.iter().copied().fold(0.0, f64::max);
    format!(
        "TARGETDURATION {target}, EXTINF {min:.3}–{max:.3} s over the {} segments listed",
        durations.len()
    )
}

/// [`playlist_summary`] of each URL, one line each.
pub(super) async fn playlists_summary(urls: &[(String, String)]) -> String {
    let client = reqwest::Client::new();
    let mut out = String::new();
    for (name, url) in urls {
        let text = match client.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(err) => format!("({err})"),
        };
        out.push_str(&format!(
            "  {name} live.m3u8 at the end: {}\n",
            playlist_summary(&text)
        ));
    }
    out
}

pub async fn run(
    sys: &mut Vstream,
    app: &WebApp,
    s3: &LocalStack,
    args: &Options,
    hls_time: f64,
    dir: &Path,
) -> anyhow::Result<Section> {
    let mut watcher = WorkDirWatcher::start(&sys.work_dir)?;
    let expected = expected_renditions(&args.resolutions, &args.size)?;
    let channel = "segments";
    let url = format!("rtmp://{}/{channel}/bench-key", sys.rtmp);
    let publisher = publish::pattern(&args.size, &url, &dir.join("publisher-segments.log"))?;
    eprintln!(
        "latency: segments: publishing {} for {} segments of {hls_time} s",
        args.size, args.segments
    );
    let live = app
        .wait_for(
            Duration::from_secs(60),
            "an HLS-LIVE event per rendition",
            |events| {
                let live = hls_live(events, channel);
                (live.len() >= expected.len()).then_some(live)
            },
        )
        .await;
    sys.check_alive()?;
    let live = live?;
    let stream_id = live[0].stream_id.clone();
    // Variant i of ffmpeg's output is rendition expected[i] (contract::fit_renditions order).
    let mut keys = Vec::new();
    for name in &expected {
        let event = live
            .iter()
            .find(|e| e.resolution == *name)
            .ok_or_else(|| anyhow::anyhow!("no HLS-LIVE event for {name} (got {live:?})"))?;
        keys.push(event.index_file.clone());
    }
    let ready = Instant::now();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut to_pollers = Vec::new();
    let mut pollers = Vec::new();
    for (variant, key) in keys.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        to_pollers.push(tx);
        pollers.push(tokio::spawn(poll_playlist(
            client.clone(),
            s3.url(key),
            Duration::from_millis(args.poll_ms),
            variant,
            rx,
            seen_tx.clone(),
        )));
    }
    drop(seen_tx);

    // Per (variant, index): close instant and ffmpeg's next playlist rewrite.
    let mut closes: HashMap<(usize, u64), (Instant, Option<Instant>)> = HashMap::new();
    let mut last_closed: HashMap<usize, u64> = HashMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut rtts: Vec<f64> = Vec::new();
    let deadline =
        Instant::now() + Duration::from_secs_f64(args.segments as f64 * hls_time * 2.0 + 60.0);
    let mut last_progress = 0;
    let done = |samples: &[Sample]| {
        (0..keys.len()).all(|v| samples.iter().filter(|s| s.variant == v).count() >= args.segments)
    };
    while !done(&samples) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "segments: only {} samples after {:?}",
            samples.len(),
            deadline
        );
        sys.check_alive()?;
        tokio::select! {
            event = watcher.events.recv() => {
                let Some(event) = event else { anyhow::bail!("the work directory watcher stopped") };
                if event.stream_id != stream_id || event.run != "run-0" || event.variant >= keys.len() {
                    continue;
                }
                match event.produced {
                    Produced::Segment(index) => {
                        last_closed.insert(event.variant, index);
                        if index >= WARM_UP_SEGMENTS && event.at >= ready {
                            closes.insert((event.variant, index), (event.at, None));
                            let _ = to_pollers[event.variant].send((index, event.at));
                        }
                    }
                    Produced::Playlist => {
                        if let Some(index) = last_closed.get(&event.variant) {
                            if let Some((_, playlist @ None)) = closes.get_mut(&(event.variant, *index)) {
                                *playlist = Some(event.at);
                            }
                        }
                    }
                }
            }
            seen = seen_rx.recv() => {
                let Some((variant, seen)) = seen else { anyhow::bail!("the playlist pollers stopped") };
                let ffmpeg_playlist = closes
                    .get(&(variant, seen.index))
                    .and_then(|(_, p)| *p)
                    .map(|p| p.saturating_duration_since(seen.closed).as_secs_f64());
                rtts.push(seen.rtt.as_secs_f64());
                samples.push(Sample {
                    variant,
                    index: seen.index,
                    upper: (seen.after - seen.closed).as_secs_f64(),
                    lower: seen.before.saturating_duration_since(seen.closed).as_secs_f64(),
                    ffmpeg_playlist,
                    polls: seen.polls,
                });
                let slowest = (0..keys.len())
                    .map(|v| samples.iter().filter(|s| s.variant == v).count())
                    .min()
                    .unwrap_or(0);
                if slowest >= last_progress + 10 {
                    last_progress = slowest;
                    eprintln!("latency: segments: {slowest}/{} per rendition", args.segments);
                }
            }
        }
    }
    drop(to_pollers);
    for poller in pollers {
        poller.abort();
    }
    let named_urls: Vec<(String, String)> = expected
        .iter()
        .cloned()
        .zip(keys.iter().map(|k| s3.url(k)))
        .collect();
    let playlists = playlists_summary(&named_urls).await;
    drop(publisher);
    drop(watcher);
    if let Err(err) = wait_closed(app, &stream_id, Duration::from_secs(30)).await {
        eprintln!("latency: segments: {err}");
    }
    samples.sort_by_key(|s| (s.index, s.variant));

    let mut rows = Vec::new();
    let all: Vec<f64> = samples.iter().map(|s| s.upper).collect();
    rows.push(Row {
        measurement: format!(
            "segment closed → live playlist naming it readable in S3, {hls_time} s segments, every rendition"
        ),
        stats: Stats::of(&all),
        unit: Unit::Ms,
        target: Some(TARGET),
    });
    // Per time slot, the last rendition: when a player switching renditions finds all of them.
    let mut slots: HashMap<u64, Vec<f64>> = HashMap::new();
    for s in &samples {
        slots.entry(s.index).or_default().push(s.upper);
    }
    let slowest: Vec<f64> = slots
        .values()
        .filter(|v| v.len() == keys.len())
        .map(|v| v.iter().copied().fold(0.0, f64::max))
        .collect();
    rows.push(Row {
        measurement: "… the slowest rendition of each segment".to_owned(),
        stats: Stats::of(&slowest),
        unit: Unit::Ms,
        target: Some(TARGET),
    });
    for (v, name) in expected.iter().enumerate() {
        let of: Vec<f64> = samples
            .iter()
            .filter(|s| s.variant == v)
            .map(|s| s.upper)
            .collect();
        rows.push(Row {
            measurement: format!("… rendition {v} ({name})"),
            stats: Stats::of(&of),
            unit: Unit::Ms,
            target: Some(TARGET),
        });
    }

    let lower = Stats::of(&samples.iter().map(|s| s.lower).collect::<Vec<_>>());
    let ffmpeg = Stats::of(
        &samples
            .iter()
            .filter_map(|s| s.ffmpeg_playlist)
            .collect::<Vec<_>>(),
    );
    let rtt = Stats::of(&rtts);
    let ms = |v: f64| format!("{:.1}", v * 1000.0);
    let mut raw = format!(
        "segment closed → live.m3u8 names it ({} publisher, {} renditions: {}; stream {stream_id}):\n\
         closed = ffmpeg renames {{N}}.ts.tmp to {{N}}.ts in ENCODER_WORK_DIR (inotify IN_MOVED_TO);\n\
         readable = end of the first GET of live.m3u8 from LocalStack naming {{N}}.ts; GETs every {} ms from the close on\n\
         (resolution: GET round trip p50 {} ms, p99 {} ms); segments 0..{} not timed (warm-up).\n\
         lower bound (start of the last GET not naming it): p50 {} ms, p99 {} ms\n\
         close → ffmpeg's own index.m3u8 rewritten (what the encoder's watcher polls): p50 {} ms, p99 {} ms, n {}\n\
         {playlists}\
         per segment, ms (upper bound / lower bound / ffmpeg playlist / GETs):\n",
        args.size,
        expected.len(),
        expected.join(", "),
        args.poll_ms,
        ms(rtt.p50),
        ms(rtt.p99),
        WARM_UP_SEGMENTS - 1,
        ms(lower.p50),
        ms(lower.p99),
        ms(ffmpeg.p50),
        ms(ffmpeg.p99),
        ffmpeg.n,
    );
    let mut line = String::new();
    for s in &samples {
        line.push_str(&format!(
            "  {}#{}: {} / {} / {} / {}",
            s.index,
            s.variant,
            ms(s.upper),
            ms(s.lower),
            s.ffmpeg_playlist.map_or("-".to_owned(), ms),
            s.polls
        ));
        if s.variant + 1 == keys.len() {
            raw.push_str(line.trim_start());
            raw.push('\n');
            line.clear();
        }
    }
    if !line.is_empty() {
        raw.push_str(line.trim_start());
        raw.push('\n');
    }
    Ok(Section {
        rows,
        raw,
        commands: vec![format!(
            "# publisher (measurement 2)\nffmpeg {}",
            publish::pattern_args(&args.size, "rtmp://127.0.0.1:$RTMP_PORT/segments/bench-key")
                .join(" ")
        )],
    })
}
