//! Helpers shared by the fuzz targets: a control-plane stub, a paused-time runtime, a strict
//! FLV parser (the oracle for what the relays send to encoders) and the panic policy for
//! panics the code under test is designed to contain.

use std::collections::BTreeSet;
use std::panic::PanicHookInfo;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use async_trait::async_trait;
use contract::control::{
    ControlError, ControlPlane, EncoderEvent, PublishGrant, PublishRefusal, PublishRequest,
};
use contract::StreamId;

/// A fresh single-threaded runtime whose clock is paused: timers fire as soon as every task
/// is waiting, so idle timeouts, heartbeats and grace periods cost no wall-clock time and a
/// run is deterministic.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// What the coordinator stub answers to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Grant,
    InvalidKey,
    NoCapacity,
    /// Grant after this long (the connection goes on reading meanwhile).
    GrantAfter(Duration),
    /// Never answer: the ingest's decision timeout refuses the publish.
    Never,
}

impl Answer {
    pub fn from_bits(bits: u8) -> Self {
        match bits % 5 {
            0 => Answer::Grant,
            1 => Answer::InvalidKey,
            2 => Answer::NoCapacity,
            3 => Answer::GrantAfter(Duration::from_millis(50)),
            _ => Answer::Never,
        }
    }
}

/// The coordinator as the ingest sees it, recording what it is told.
pub struct StubControl {
    answer: Answer,
    /// Notified at every grant.
    pub on_grant: tokio::sync::Notify,
    pub publishes: Mutex<Vec<PublishRequest>>,
    pub granted: Mutex<Vec<StreamId>>,
    pub ended: Mutex<Vec<(String, StreamId)>>,
}

impl StubControl {
    pub fn new(answer: Answer) -> Arc<Self> {
        Arc::new(StubControl {
            answer,
            on_grant: tokio::sync::Notify::new(),
            publishes: Mutex::new(Vec::new()),
            granted: Mutex::new(Vec::new()),
            ended: Mutex::new(Vec::new()),
        })
    }

    pub fn granted(&self) -> Vec<StreamId> {
        self.granted.lock().expect("lock").clone()
    }

    pub fn ended(&self) -> Vec<(String, StreamId)> {
        self.ended.lock().expect("lock").clone()
    }

    pub fn publishes(&self) -> Vec<PublishRequest> {
        self.publishes.lock().expect("lock").clone()
    }

    /// Every granted stream was reported ended exactly once, and nothing else was.
    pub fn assert_every_grant_ended_once(&self) {
        let granted: BTreeSet<StreamId> = self.granted().into_iter().collect();
        let ended = self.ended();
        let ended_ids: Vec<&StreamId> = ended.iter().map(|(_, id)| id).collect();
        for id in &granted {
            let n = ended_ids.iter().filter(|e| **e == id).count();
            assert_eq!(
                n, 1,
                "stream {id} reported ended {n} times (ended: {ended:?})"
            );
        }
        for (_, id) in &ended {
            assert!(granted.contains(id), "end of {id}, never granted");
        }
    }
}

#[async_trait]
impl ControlPlane for StubControl {
    async fn publish(&self, request: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
        self.publishes.lock().expect("lock").push(request);
        match self.answer {
            Answer::InvalidKey => return Err(PublishRefusal::InvalidKey("stub".into())),
            Answer::NoCapacity => return Err(PublishRefusal::NoCapacity),
            Answer::Never => std::future::pending::<()>().await,
            Answer::GrantAfter(delay) => tokio::time::sleep(delay).await,
            Answer::Grant => {}
        }
        let stream_id = StreamId::generate();
        self.granted.lock().expect("lock").push(stream_id.clone());
        self.on_grant.notify_one();
        Ok(PublishGrant {
            stream_id,
            encoder_id: "encoder-1".into(),
        })
    }

    async fn publish_ended(&self, channel: &str, stream_id: &StreamId) -> Result<(), ControlError> {
        self.ended
            .lock()
            .expect("lock")
            .push((channel.to_owned(), stream_id.clone()));
        Ok(())
    }

    async fn encoder_event(&self, _event: EncoderEvent) -> Result<(), ControlError> {
        Ok(())
    }
}

/// Panics of a dependency that the code under test runs under `catch_unwind` on purpose
/// (`rml_rtmp` on malformed chunks: see `ingest/src/rtmp/mod.rs`) must not count as crashes;
/// every other panic still aborts the fuzzer. libFuzzer's hook aborts on *any* panic, caught
/// or not, so it is wrapped: a panic raised while code of one of `crates` runs (the panic's
/// location, or, for a panic inside the standard library such as a bad slice range, a frame of
/// its backtrace, is in that crate's source) is let through to unwind. If the project catches
/// it, the run goes on; if nothing does, libfuzzer-sys aborts when the unwinding reaches the
/// fuzz target, so an uncaught dependency panic is still a crash. Each distinct location is
/// printed once, for the run's record.
pub fn contain_panics_of(crates: &'static [&'static str]) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        let seen: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let in_crate = |text: &str| crates.iter().any(|c| text.contains(&format!("/{c}-")));
            let mut contained = in_crate(&location);
            if !contained && location.starts_with("/rustc/") {
                let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                contained = in_crate(&backtrace);
            }
            if contained {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.insert(location.clone()) {
                    let message = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    eprintln!("contained dependency panic at {location}: {message}");
                }
                return;
            }
            libfuzzer_hook(info);
        }));
    });
}

/// One tag of a parsed FLV stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub kind: u8,
    pub timestamp: u32,
    pub data: Vec<u8>,
}

/// A parsed FLV stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flv {
    pub has_audio: bool,
    pub has_video: bool,
    pub tags: Vec<FlvTag>,
}

/// Parses a complete FLV byte stream strictly: the 9-byte header and first previous tag size,
/// then tags whose type is audio, video or script, stream ID 0, and whose previous tag size
/// matches. This is what the FLV demuxer of the encoder's ffmpeg relies on.
pub fn parse_flv(bytes: &[u8]) -> Result<Flv, String> {
    if bytes.len() < 13 || &bytes[..3] != b"FLV" || bytes[3] != 1 {
        return Err("bad file header".into());
    }
    let flags = bytes[4];
    if flags & !0x05 != 0 {
        return Err(format!("reserved header flags set: {flags:#x}"));
    }
    if bytes[5..9] != [0, 0, 0, 9] || bytes[9..13] != [0, 0, 0, 0] {
        return Err("bad header size or first previous tag size".into());
    }
    let mut tags = Vec::new();
    let mut at = 13;
    while at < bytes.len() {
        let h = bytes.get(at..at + 11).ok_or("truncated tag header")?;
        if ![8, 9, 18].contains(&h[0]) {
            return Err(format!("tag at {at}: type {}", h[0]));
        }
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        if h[8..11] != [0, 0, 0] {
            return Err(format!("tag at {at}: stream id not 0"));
        }
        let data = bytes
            .get(at + 11..at + 11 + size)
            .ok_or("truncated tag data")?;
        let prev_at = at + 11 + size;
        let prev = bytes
            .get(prev_at..prev_at + 4)
            .ok_or("truncated previous tag size")?;
        let prev = u32::from_be_bytes([prev[0], prev[1], prev[2], prev[3]]) as usize;
        if prev != 11 + size {
            return Err(format!(
                "tag at {at}: previous tag size {prev}, expected {}",
                11 + size
            ));
        }
        tags.push(FlvTag {
            kind: h[0],
            timestamp,
            data: data.to_vec(),
        });
        at = prev_at + 4;
    }
    Ok(Flv {
        has_audio: flags & 0x04 != 0,
        has_video: flags & 0x01 != 0,
        tags,
    })
}

/// Splits `data` into pieces of `16 * sizes[i]` bytes, cycling through `sizes` (a 0 or no
/// size: the rest in one piece), the way a network delivers one stream in reads of varying length.
pub fn split<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) if s > 0 => usize::from(s) * 16,
            _ => data.len(),
        };
        let end = (at + size).min(data.len());
        pieces.push(&data[at..end]);
        at = end;
        i += 1;
    }
    pieces
}

/// Checks what an FLV relay subscriber received: nothing (no start point came), or a strict
/// FLV stream whose first media tag (after `onMetaData` and the sequence headers) is a point a
/// decoder can start at: a video keyframe, or audio.
pub fn check_relayed_flv(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let flv = parse_flv(bytes).unwrap_or_else(|err| panic!("relayed FLV is malformed: {err}"));
    let first_media = flv.tags.iter().find(|t| match t.kind {
        18 => false,
        9 => !ingest::flv::video_info(&t.data).is_sequence_header,
        _ => !ingest::flv::is_audio_sequence_header(&t.data),
    });
    if let Some(tag) = first_media {
        assert!(
            tag.kind == 8 || ingest::flv::video_info(&tag.data).is_keyframe,
            "relayed FLV starts at a video frame that is not a keyframe: {:02x?}",
            &tag.data[..tag.data.len().min(8)]
        );
    }
}

/// Whether `VSTREAM_FUZZ_DEBUG` is set: targets then print what an input did (run the target
/// on one file to see how deep it gets: `cargo fuzz run <target> <file>`).
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| {
        let on = std::env::var_os("VSTREAM_FUZZ_DEBUG").is_some();
        if on {
            // The code under test's log lines too (RUST_LOG overrides the level).
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        on
    })
}

impl StubControl {
    /// One line about what the coordinator saw, for [`debug`] output.
    pub fn summary(&self) -> String {
        format!(
            "publishes: {:?}; granted: {}; ended: {}",
            self.publishes()
                .iter()
                .map(|p| format!("{}/{}", p.channel, p.key))
                .collect::<Vec<_>>(),
            self.granted().len(),
            self.ended().len()
        )
    }
}
