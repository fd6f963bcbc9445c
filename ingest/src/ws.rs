//! WebSocket publishing for browsers (`MediaRecorder`): `GET /{CHANNEL}/{KEY}/publish`
//! upgraded to a WebSocket whose binary frames are the recording's blobs (WebM or fragmented
//! MP4), relayed to the encoder like RTMP media.
//!
//! Everything that can refuse a publish happens **before** the upgrade, so the refusal is an
//! HTTP status a page can show: `404` (unknown kind, invalid channel or key), `403` (origin
//! not allowed, `Invalid key`, `Already publishing`), `429` (more than
//! `MAX_IP_CONCURRENT_CONNECTIONS` connections from one IP), `503` (no encoder capacity,
//! coordinator unreachable, server full or shutting down). The coordinator is asked with
//! [`SourceKind::Ws`]; the channel is held in the same registry as RTMP publishers (one
//! publisher per channel on a node, whatever the protocol).
//!
//! After the upgrade: the text frame `h` is the heartbeat (answered, and sent by the server
//! every 20 s); a connection that sends nothing for 60 s is closed; a frame or message larger
//! than `WS_MAX_FRAME_BYTES` is refused from its header, before its payload is read
//! (`ERROR: frame too large`); errors are a text frame `ERROR: <message>` followed by the
//! close. A kill command ends the connection with `ERROR: stream closed`; a shutdown with a
//! close frame `1001`. The recording goes through [`Scanner`] (header, start points) into a
//! [`ContainerRelay`].
//!
//! A browser's `WebSocket` cannot see the status of a refused upgrade (only a close, 1006), so
//! refusals decided after the upgrade headers were checked are remembered for 30 s per
//! (address, channel, key): a plain `GET` of the same URL from the same address answers that
//! status and message (the page uses it to show `Refused (403): Invalid key`).
//!
//! The router needs the peer address: serve it with [`crate::https::serve_http`] (as
//! [`WsServer::serve`] does) or with `into_make_service_with_connect_info::<SocketAddr>()`.
//! Behind a reverse proxy every publisher has the proxy's address; the per-IP limit then
//! counts the proxy (whitelist it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use contract::control::{PublishRefusal, PublishRequest, SourceKind};
use contract::validate_id;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::container::{Output, Scanner, DEFAULT_MAX_HEADER, DEFAULT_MAX_PENDING};
use crate::container_relay::{ContainerRelay, ContainerRelayConfig};
use crate::publish::{decide, Decision, EndReason, PublishGuard};
use crate::registry::{Live, StreamRelay};
use crate::{Ingest, Inner};

/// `WS_MAX_FRAME_BYTES` default: 16 MiB (a 500 ms blob of 4K video is a few MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// How long a write to a publisher may take (heartbeat, error, close).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed connection waits for the peer's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Settings of the WebSocket publish server.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Most connections open at once from one IP address (0: no limit).
    pub max_ip_connections: usize,
    /// Addresses exempt from `max_ip_connections`.
    pub whitelist: IpWhitelist,
    /// Values of the `Origin` header allowed to publish (`None`: any). Requests without an
    /// `Origin` (not from a browser) are not affected: the check protects browsers' users
    /// from other sites, and any other client can send whatever `Origin` it likes.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest frame and message accepted, in bytes.
    pub max_frame_bytes: usize,
    /// The server sends `h` this often.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (not even `h`) for this long is closed.
    pub idle_timeout: Duration,
    /// Bound of the recording's header (WebM up to the first cluster, MP4 `ftyp` + `moov`).
    pub max_header_bytes: usize,
    /// Bound of each media subscriber's queue, in bytes (a subscriber that falls this far
    /// behind skips to the next keyframe).
    pub queue_max_bytes: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_ip_connections: 4,
            whitelist: IpWhitelist::default(),
            allowed_origins: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            heartbeat_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: DEFAULT_MAX_HEADER,
            queue_max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The WebSocket settings as command-line flags / environment variables, for binaries to
/// `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// Most publish connections open at once from one IP address, WebSocket and RTMP(S)
    /// each (0 = no limit).
    #[arg(long, env = "MAX_IP_CONCURRENT_CONNECTIONS", default_value_t = crate::config::DEFAULT_MAX_IP_CONNECTIONS)]
    pub max_ip_concurrent_connections: usize,
    /// IP addresses and CIDR ranges exempt from MAX_IP_CONCURRENT_CONNECTIONS, comma-separated
    /// (e.g. `10.0.0.0/8,203.0.113.7`); `*` = everyone.
    #[arg(long, env = "CONCURRENT_LIMIT_WHITELIST", default_value = "", value_parser = IpWhitelist::from_str)]
    pub concurrent_limit_whitelist: IpWhitelist,
    /// Origins allowed to open a publish WebSocket, comma-separated
    /// (e.g. `https://app.example.com`); unset = any.
    #[arg(long, env = "WS_ALLOWED_ORIGINS")]
    pub ws_allowed_origins: Option<String>,
    /// Largest WebSocket frame or message accepted, in bytes; a larger one closes the
    /// connection with `ERROR: frame too large`.
    #[arg(long, env = "WS_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub ws_max_frame_bytes: usize,
}

impl WsArgs {
    pub fn to_config(&self) -> WsConfig {
        let origins = self.ws_allowed_origins.as_deref().map(|list| {
            list.split(',')
                .map(normalize_origin)
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        });
        WsConfig {
            max_ip_connections: self.max_ip_concurrent_connections,
            whitelist: self.concurrent_limit_whitelist.clone(),
            allowed_origins: origins,
            max_frame_bytes: self.ws_max_frame_bytes.max(1024),
            ..WsConfig::default()
        }
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `CONCURRENT_LIMIT_WHITELIST`: IP addresses and CIDR ranges, or `*` for everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpWhitelist {
    all: bool,
    nets: Vec<(IpAddr, u8)>,
}

/// A whitelist entry that is neither an IP address, a CIDR range nor `*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address, a CIDR range (a.b.c.d/n, x::y/n) or *")]
pub struct InvalidWhitelistEntry(String);

impl FromStr for IpWhitelist {
    type Err = InvalidWhitelistEntry;
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut whitelist = IpWhitelist::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                whitelist.all = true;
                continue;
            }
            let bad = || InvalidWhitelistEntry(entry.to_owned());
            let (addr, bits) = match entry.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let addr = addr.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(bad)?,
                // A plain address is a range of one (the original system only took CIDRs).
                None => max,
            };
            whitelist.nets.push((addr, bits));
        }
        Ok(whitelist)
    }
}

impl IpWhitelist {
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
            _ => false,
        })
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.nets.is_empty()
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// The WebSocket publish server of an ingest node. Cheap to clone.
#[derive(Clone)]
pub struct WsServer {
    inner: Arc<WsInner>,
}

struct WsInner {
    ingest: Ingest,
    config: WsConfig,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals of upgrades, for a plain `GET` of the same URL from the same address
    /// (browsers cannot read the status of a refused WebSocket upgrade).
    refusals: Mutex<RecentRefusals>,
    /// Cancelled at shutdown; every connection's kill token is a child.
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl WsServer {
    pub fn new(ingest: Ingest, config: WsConfig) -> Self {
        WsServer {
            inner: Arc::new(WsInner {
                ingest,
                config,
                per_ip: Mutex::new(HashMap::new()),
                refusals: Mutex::new(RecentRefusals::default()),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    pub fn config(&self) -> &WsConfig {
        &self.inner.config
    }

    /// `GET /{channel}/{key}/{kind}` (only the kind `publish` exists). Merge it into an HTTP
    /// server served with `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{channel}/{key}/{kind}", get(publish))
            .with_state(self.clone())
    }

    /// Serves [`WsServer::router`] alone on `listener` until `shutdown` (within the
    /// ingest's HTTP limits: header read timeout, connection limits; see [`crate::https`]),
    /// then ends every connection (see [`WsServer::shutdown`]).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        info!(addr = ?listener.local_addr().ok(), "WebSocket ingest listening");
        let gate = self.inner.ingest.http_gate();
        let served = crate::https::serve_http(listener, self.router(), gate, shutdown).await;
        self.shutdown().await;
        served
    }

    /// Ends every WebSocket publisher (each end is reported to the coordinator) and waits for
    /// them; later upgrade requests get `503`.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        debug!(
            connections = self.inner.tracker.len(),
            "WebSocket ingest stopping"
        );
        self.inner.tracker.wait().await;
        info!("WebSocket ingest stopped");
    }

    /// WebSocket connections open now (upgraded or being decided).
    pub fn connections(&self) -> usize {
        self.inner
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// Takes a connection slot of `ip`; `None`: the IP has `max_ip_connections` already.
    fn ip_slot(&self, ip: IpAddr) -> Option<IpSlot> {
        let limit = self.inner.config.max_ip_connections;
        let exempt = limit == 0 || self.inner.config.whitelist.contains(ip);
        let mut map = self.inner.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(ip).or_insert(0);
        if !exempt && *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            server: Arc::clone(&self.inner),
            ip,
        })
    }
}

/// How long a refusal is remembered for a plain `GET` asking why.
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);
/// Most refusals remembered (oldest forgotten first).
const REFUSAL_MEMORY_LEN: usize = 1024;

/// Recent upgrade refusals: (address, channel, key) → (status, message).
#[derive(Default)]
struct RecentRefusals {
    entries: std::collections::VecDeque<(Instant, IpAddr, String, String, StatusCode, String)>,
}

impl RecentRefusals {
    fn remember(
        &mut self,
        ip: IpAddr,
        channel: &str,
        key: &str,
        status: StatusCode,
        message: &str,
    ) {
        let now = Instant::now();
        self.entries.retain(|e| {
            now.duration_since(e.0) < REFUSAL_MEMORY && !(e.1 == ip && e.2 == channel && e.3 == key)
        });
        if self.entries.len() >= REFUSAL_MEMORY_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back((
            now,
            ip,
            channel.to_owned(),
            key.to_owned(),
            status,
            message.to_owned(),
        ));
    }

    fn recall(&self, ip: IpAddr, channel: &str, key: &str) -> Option<(StatusCode, String)> {
        let now = Instant::now();
        self.entries
            .iter()
            .rev()
            .find(|e| {
                e.1 == ip
                    && e.2 == channel
                    && e.3 == key
                    && now.duration_since(e.0) < REFUSAL_MEMORY
            })
            .map(|e| (e.4, e.5.clone()))
    }
}

/// One connection's share of its IP's count; released when dropped.
struct IpSlot {
    server: Arc<WsInner>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.server.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The HTTP status and message of a coordinator's refusal.
fn refusal_status(refusal: &PublishRefusal) -> (StatusCode, &'static str) {
    match refusal {
        PublishRefusal::InvalidKey(_) => (StatusCode::FORBIDDEN, "Invalid key"),
        PublishRefusal::AlreadyPublishing => (StatusCode::FORBIDDEN, "Already publishing"),
        PublishRefusal::NoCapacity => (StatusCode::SERVICE_UNAVAILABLE, "No encoder capacity"),
        PublishRefusal::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
    }
}

/// What a granted publish hands to its connection.
struct Granted {
    guard: PublishGuard,
    relay: Arc<ContainerRelay>,
    kill: CancellationToken,
    bytes: Arc<AtomicU64>,
    encoder_id: String,
}

async fn publish(
    State(server): State<WsServer>,
    Path((channel, key, kind)): Path<(String, String, String)>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if kind != "publish" {
        return refuse(StatusCode::NOT_FOUND, "Not found");
    }
    let inner = &server.inner;
    let max = inner.ingest.inner.config.id_max_length;
    if let Err(err) =
        validate_id("channel", &channel, max).and_then(|()| validate_id("key", &key, max))
    {
        debug!(%err, "WebSocket publish refused");
        return refuse(StatusCode::NOT_FOUND, &format!("Not found: {err}"));
    }
    let Some(Extension(ConnectInfo(peer))) = connect_info else {
        tracing::error!("the WebSocket router is served without the peer address (use into_make_service_with_connect_info::<SocketAddr>())");
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "Internal error");
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            // A plain GET: if an upgrade of this URL from this address was just refused,
            // say why (a browser's WebSocket only sees "closed").
            let recalled = inner
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .recall(peer.ip(), &channel, &key);
            return match recalled {
                Some((status, message)) => refuse(status, &message),
                None => rejection.into_response(),
            };
        }
    };
    // Every refusal from here on is remembered for a plain GET asking why.
    let refused = |status: StatusCode, message: &str| {
        inner
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remember(peer.ip(), &channel, &key, status, message);
        refuse(status, message)
    };
    if let (Some(allowed), Some(origin)) =
        (&inner.config.allowed_origins, headers.get(header::ORIGIN))
    {
        let origin = normalize_origin(origin.to_str().unwrap_or(""));
        if !allowed.contains(&origin) {
            info!(%peer, %channel, %origin, "WebSocket publish refused: origin not allowed");
            return refused(StatusCode::FORBIDDEN, "Origin not allowed");
        }
    }
    if inner.shutdown.is_cancelled() {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down");
    }
    let Some(ip_slot) = server.ip_slot(peer.ip()) else {
        info!(%peer, %channel, limit = inner.config.max_ip_connections, "WebSocket publish refused: too many connections from this IP");
        return refused(StatusCode::TOO_MANY_REQUESTS, "Too many connections");
    };
    let Ok(permit) = Arc::clone(&inner.ingest.inner.connections).try_acquire_owned() else {
        warn!(%peer, limit = inner.ingest.inner.config.max_connections, "too many publish connections; refusing a WebSocket");
        return refused(StatusCode::SERVICE_UNAVAILABLE, "Server full");
    };
    let ingest_inner = Arc::clone(&inner.ingest.inner);
    let conn_id = ingest_inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("ws_connection", peer = %peer, conn_id, channel = %channel, stream_id = tracing::field::Empty);
    let request = PublishRequest {
        channel: channel.clone(),
        key: key.clone(),
        user_ip: peer.ip().to_string(),
        ingest_id: ingest_inner.config.node_id.clone(),
        source: SourceKind::Ws,
    };
    let kill = inner.shutdown.child_token();
    // Decided in a task of its own: if the client goes away meanwhile (this handler is
    // dropped), a grant nobody will use is still reported as ended.
    let (tx, rx) = oneshot::channel();
    let relay_config = ContainerRelayConfig {
        gop_cache_max_bytes: ingest_inner.config.gop_cache_max_bytes,
        queue_max_bytes: inner.config.queue_max_bytes,
    };
    inner.tracker.spawn(
        decide_ws(ingest_inner, request, conn_id, peer, kill, relay_config, tx)
            .instrument(span.clone()),
    );
    let granted = match rx.await {
        Ok(Ok(granted)) => granted,
        Ok(Err((status, message))) => return refused(status, message),
        Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    };
    span.record("stream_id", granted.guard.stream_id.as_str());
    let token = inner.tracker.token();
    let server = server.clone();
    let max = inner.config.max_frame_bytes;
    upgrade
        .max_frame_size(max)
        .max_message_size(max)
        .on_failed_upgrade({
            let span = span.clone();
            move |err| {
                let _entered = span.enter();
                info!(%err, "WebSocket upgrade failed; the publish ends");
            }
        })
        .on_upgrade(move |socket| {
            let connection = Connection {
                server,
                socket,
                granted,
                _ip_slot: ip_slot,
                _permit: permit,
                _token: token,
            };
            connection.run().instrument(span)
        })
}

/// Reserves the channel, asks the coordinator and, when granted, registers the stream.
#[allow(clippy::too_many_arguments)]
async fn decide_ws(
    inner: Arc<Inner>,
    request: PublishRequest,
    conn_id: u64,
    peer: SocketAddr,
    kill: CancellationToken,
    relay_config: ContainerRelayConfig,
    tx: oneshot::Sender<Result<Granted, (StatusCode, &'static str)>>,
) {
    let channel = request.channel.clone();
    let decision = decide(Arc::clone(&inner), request, conn_id, kill.clone()).await;
    let grant = match decision {
        Decision::Granted(grant) => grant,
        Decision::Refused(refusal) => {
            inner.registry.release(&channel, conn_id);
            info!(%refusal, "WebSocket publish refused");
            let _ = tx.send(Err(refusal_status(&refusal)));
            return;
        }
        Decision::TimedOut => {
            inner.registry.release(&channel, conn_id);
            warn!(
                timeout = ?inner.config.publish_decision_timeout,
                "WebSocket publish refused: no decision from the coordinator in time"
            );
            let _ = tx.send(Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
            )));
            return;
        }
    };
    let relay =
        ContainerRelay::with_gauges(grant.stream_id.clone(), relay_config, inner.gauges.clone());
    let bytes = Arc::new(AtomicU64::new(0));
    let live = Live {
        stream_id: grant.stream_id.clone(),
        relay: StreamRelay::Container(Arc::clone(&relay)),
        remote_addr: peer,
        source: SourceKind::Ws,
        started_at: SystemTime::now(),
        bytes_received: Arc::clone(&bytes),
    };
    let went_live = inner.registry.go_live(&channel, conn_id, live);
    let guard = PublishGuard {
        inner: Arc::clone(&inner),
        channel,
        stream_id: grant.stream_id.clone(),
        conn_id,
        relay: StreamRelay::Container(Arc::clone(&relay)),
        ended: false,
    };
    if !went_live {
        warn!("publish granted but the channel reservation was lost");
        guard.end(EndReason::Abandoned).await;
        let _ = tx.send(Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
        )));
        return;
    }
    let granted = Granted {
        guard,
        relay,
        kill,
        bytes,
        encoder_id: grant.encoder_id,
    };
    if let Err(Ok(granted)) = tx.send(Ok(granted)) {
        info!("the WebSocket client left while its publish was being decided");
        granted.guard.end(EndReason::Abandoned).await;
    }
}

/// An upgraded publish connection.
struct Connection {
    server: WsServer,
    socket: WebSocket,
    granted: Granted,
    _ip_slot: IpSlot,
    _permit: OwnedSemaphorePermit,
    /// Keeps [`WsServer::shutdown`] waiting until this connection has ended its publish.
    _token: TaskTrackerToken,
}

/// How the read loop ended: the publish ends with `reason`; `error` is what to tell the
/// client (`ERROR: {message}`) and the close code.
struct Ending {
    reason: EndReason,
    error: Option<(String, u16)>,
}

impl Ending {
    fn quiet(reason: EndReason) -> Self {
        Ending {
            reason,
            error: None,
        }
    }

    fn error(reason: EndReason, message: impl Into<String>, code: u16) -> Self {
        Ending {
            reason,
            error: Some((message.into(), code)),
        }
    }
}

impl Connection {
    async fn run(mut self) {
        info!(encoder_id = %self.granted.encoder_id, "WebSocket publish started");
        let config = self.server.inner.config.clone();
        let mut scanner = Scanner::new(config.max_header_bytes, DEFAULT_MAX_PENDING);
        let Ending { reason, error } = self.read_loop(&config, &mut scanner).await;
        for output in scanner.finish() {
            self.relay_output(output);
        }
        let Connection {
            mut socket,
            granted,
            ..
        } = self;
        // The stream ends first (the encoder finishes at once); the goodbye may take a while.
        granted.guard.end(reason).await;
        if reason == EndReason::PeerClosed {
            // Sends the reply to the peer's close frame.
            let _ = timeout(WRITE_TIMEOUT, futures::SinkExt::flush(&mut socket)).await;
            return;
        }
        let close = match error {
            Some((message, code)) => {
                info!(error = %message, "WebSocket publish closed with an error");
                let text = Message::Text(format!("ERROR: {message}").into());
                let _ = timeout(WRITE_TIMEOUT, socket.send(text)).await;
                CloseFrame {
                    code,
                    reason: "".into(),
                }
            }
            None if reason == EndReason::Shutdown => CloseFrame {
                code: 1001,
                reason: "server shutting down".into(),
            },
            None => CloseFrame {
                code: 1000,
                reason: "".into(),
            },
        };
        let sent = timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
        if matches!(sent, Ok(Ok(()))) {
            linger(&mut socket).await;
        }
    }

    async fn read_loop(&mut self, config: &WsConfig, scanner: &mut Scanner) -> Ending {
        let kill = self.granted.kill.clone();
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + config.heartbeat_interval,
            config.heartbeat_interval,
        );
        let mut last_heard = Instant::now();
        loop {
            let idle_deadline = last_heard + config.idle_timeout;
            tokio::select! {
                biased;
                _ = kill.cancelled() => {
                    if self.server.inner.shutdown.is_cancelled() {
                        return Ending::quiet(EndReason::Shutdown);
                    }
                    info!("WebSocket publish killed by command");
                    return Ending::error(EndReason::Killed, "stream closed", 1000);
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    warn!(timeout = ?config.idle_timeout, "WebSocket publisher silent; closing");
                    let message = format!("nothing received for {} s", config.idle_timeout.as_secs());
                    return Ending::error(EndReason::IdleTimeout, message, 1000);
                }
                _ = heartbeat.tick() => {
                    if !self.send(Message::Text("h".into())).await {
                        return Ending::quiet(EndReason::Error);
                    }
                }
                message = self.socket.recv() => {
                    last_heard = Instant::now();
                    match message {
                        None => return Ending::quiet(EndReason::PeerClosed),
                        Some(Ok(Message::Binary(data))) => {
                            if let Some(ending) = self.on_media(data, scanner) {
                                return ending;
                            }
                        }
                        Some(Ok(Message::Text(text))) => {
                            if text.as_str() == "h" {
                                if !self.send(Message::Text("h".into())).await {
                                    return Ending::quiet(EndReason::Error);
                                }
                            } else {
                                debug!(len = text.len(), "WebSocket text frame ignored");
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => {
                            debug!("WebSocket closed by the publisher");
                            return Ending::quiet(EndReason::PeerClosed);
                        }
                        Some(Err(err)) => return read_error(&err, config.max_frame_bytes),
                    }
                }
            }
        }
    }

    fn on_media(&mut self, data: Bytes, scanner: &mut Scanner) -> Option<Ending> {
        self.granted
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        match scanner.push(data) {
            Ok(outputs) => {
                for output in outputs {
                    self.relay_output(output);
                }
                None
            }
            Err(err) => {
                warn!(%err, "WebSocket recording refused");
                Some(Ending::error(
                    EndReason::Error,
                    format!("invalid media: {err}"),
                    1003,
                ))
            }
        }
    }

    fn relay_output(&mut self, output: Output) {
        match output {
            Output::Header {
                format,
                bytes,
                codecs,
            } => {
                info!(format = format.as_str(), codecs = ?codecs, header_bytes = bytes.len(), "recording format");
                self.granted.relay.set_header(format, bytes);
            }
            Output::Media { bytes, start } => self.granted.relay.push(bytes, start),
            Output::Degraded(err) => warn!(
                %err,
                "the recording's structure was lost; relaying the rest as is (decoders resynchronise at the next keyframe)"
            ),
        }
    }

    /// Sends a frame within the write timeout; false when the peer is gone or not reading.
    async fn send(&mut self, message: Message) -> bool {
        match timeout(WRITE_TIMEOUT, self.socket.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                info!(%err, "WebSocket write failed");
                false
            }
            Err(_) => {
                info!("WebSocket publisher not reading; closing");
                false
            }
        }
    }
}

/// After our close frame: waits (bounded) for the peer's close reply before the socket is
/// dropped. Dropping a socket with unread input makes the kernel send a reset, which can
/// destroy our last frames (the `ERROR:` text, the close) before the peer reads them; a peer
/// still sending (an oversized frame) gets the time to read them.
async fn linger(socket: &mut WebSocket) {
    let deadline = Instant::now() + CLOSE_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => continue,
            // The reader is done (it failed): nothing tells when the peer has read our close.
            Ok(None) | Ok(Some(Err(_))) => {
                let pause = Instant::now() + Duration::from_secs(1);
                tokio::time::sleep_until(pause.min(deadline)).await;
                return;
            }
        }
    }
}

/// The ending for a read error: oversized frames and protocol errors are told to the client.
fn read_error(err: &axum::Error, max: usize) -> Ending {
    use std::error::Error as _;
    let inner = err
        .source()
        .and_then(|e| e.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(capacity)) => {
            warn!(%capacity, max, "WebSocket frame too large; closing");
            Ending::error(EndReason::Error, "frame too large", 1009)
        }
        Some(tungstenite::Error::Protocol(protocol)) => {
            info!(%protocol, "WebSocket protocol error");
            Ending::error(
                EndReason::Error,
                format!("protocol error: {protocol}"),
                1002,
            )
        }
        Some(tungstenite::Error::Utf8(_)) => {
            Ending::error(EndReason::Error, "invalid UTF-8 in a text frame", 1007)
        }
        _ => {
            info!(%err, "WebSocket connection lost");
            Ending::quiet(EndReason::Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whitelist_takes_plain_ips_cidrs_and_a_star() {
        let list: IpWhitelist = "10.0.0.0/8, 203.0.113.7,2001:db8::/32"
            .parse()
            .expect("valid");
        assert!(list.contains("10.1.2.3".parse().expect("ip")));
        assert!(list.contains("203.0.113.7".parse().expect("ip")));
        assert!(!list.contains("203.0.113.8".parse().expect("ip")));
        assert!(list.contains("2001:db8::1".parse().expect("ip")));
        assert!(!list.contains("2001:db9::1".parse().expect("ip")));
        // An IPv4 peer seen on an IPv6 socket.
        assert!(list.contains("::ffff:10.9.9.9".parse().expect("ip")));
        assert!(!list.contains("11.0.0.1".parse().expect("ip")));

        let all: IpWhitelist = "*".parse().expect("valid");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let none: IpWhitelist = "".parse().expect("valid");
        assert!(none.is_empty());
        assert!(!none.contains("127.0.0.1".parse().expect("ip")));
        let odd: IpWhitelist = "192.168.1.77/26".parse().expect("valid");
        assert!(odd.contains("192.168.1.64".parse().expect("ip")));
        assert!(!odd.contains("192.168.1.128".parse().expect("ip")));
    }

    #[test]
    fn bad_whitelist_entries_are_refused() {
        for bad in ["10.0.0.0/33", "example.com", "1.2.3", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<IpWhitelist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_compared_without_case_or_trailing_slash() {
        let args = WsArgs {
            max_ip_concurrent_connections: 4,
            concurrent_limit_whitelist: IpWhitelist::default(),
            ws_allowed_origins: Some("https://App.example.com/, http://localhost:8080".into()),
            ws_max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        };
        let config = args.to_config();
        assert_eq!(
            config.allowed_origins,
            Some(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:8080".to_owned()
            ])
        );
    }
}
