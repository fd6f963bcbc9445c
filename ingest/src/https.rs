//! Serving an axum router over plain HTTP and over TLS (HTTPS and `wss://`, with the same
//! reloadable certificate as RTMPS: new connections use the current certificate, a renewed
//! one is picked up without a restart), within an [`HttpGate`]'s limits:
//!
//! - a client has `http_header_read_timeout` to send complete request headers, from the
//!   accept (after the TLS handshake, itself bounded by the same time) and again from the end
//!   of each response on a kept-alive connection; a client that connects and sends nothing,
//!   or dribbles its headers (slowloris), is closed then;
//! - at most `http_max_connections` connections are open at once (upgraded WebSockets are
//!   handed over and no longer counted: they count as publish connections);
//! - at most `http_max_ip_pending` connections from one address that have not sent their
//!   first request yet (whitelisted addresses exempt), so that one address cannot take all
//!   the connections by opening and waiting.
//!
//! A connection over a limit is closed at once; the refusals are counted in the ingest's
//! metrics and logged at most once a second.
//!
//! `axum::serve` has none of these (its hyper server has no timer, so no header timeout), so
//! the ingest's HTTP listeners are served here. Handlers see the peer address as
//! `ConnectInfo<SocketAddr>`, as with `into_make_service_with_connect_info`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::limits::{IpSlot, PerIp};
use crate::metrics::Throttle;
use crate::ws::IpWhitelist;
use crate::{IngestConfig, TlsCert};

/// How long open connections get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The limits of the HTTP listeners of one ingest and their counters; shared by its HTTP
/// and HTTPS listeners. Cheap to clone. [`crate::Ingest::http_gate`] is the ingest's own.
#[derive(Clone)]
pub struct HttpGate {
    inner: Arc<GateInner>,
}

struct GateInner {
    header_read_timeout: Duration,
    max_connections: usize,
    max_ip_pending: usize,
    whitelist: IpWhitelist,
    connections: Arc<Semaphore>,
    pending: Arc<PerIp>,
    refused_total: std::sync::atomic::AtomicU64,
    refused_ip: std::sync::atomic::AtomicU64,
    header_timeouts: std::sync::atomic::AtomicU64,
    refusal_log: Throttle,
}

impl Default for HttpGate {
    fn default() -> Self {
        HttpGate::new(&IngestConfig::default())
    }
}

impl HttpGate {
    /// A gate with the HTTP limits of `config`.
    pub fn new(config: &IngestConfig) -> Self {
        let max_connections = config.http_max_connections.max(1);
        HttpGate {
            inner: Arc::new(GateInner {
                header_read_timeout: config
                    .http_header_read_timeout
                    .max(Duration::from_millis(100)),
                max_connections,
                max_ip_pending: config.http_max_ip_pending,
                whitelist: config.ip_whitelist.clone(),
                connections: Arc::new(Semaphore::new(max_connections)),
                pending: Arc::new(PerIp::default()),
                refused_total: Default::default(),
                refused_ip: Default::default(),
                header_timeouts: Default::default(),
                refusal_log: Throttle::new(Duration::from_secs(1)),
            }),
        }
    }

    /// HTTP(S) connections open now.
    pub fn connections(&self) -> usize {
        self.inner.max_connections - self.inner.connections.available_permits()
    }

    /// Connections open now that have not sent their first request yet.
    pub fn pending(&self) -> usize {
        self.inner.pending.total()
    }

    /// Connections closed at once: (over `http_max_connections`, over the per-IP limit).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.inner.refused_total.load(Ordering::Relaxed),
            self.inner.refused_ip.load(Ordering::Relaxed),
        )
    }

    /// Connections closed for not sending their request headers in time.
    pub fn header_timeouts(&self) -> u64 {
        self.inner.header_timeouts.load(Ordering::Relaxed)
    }

    /// A new connection from `peer`: its permit and pending slot, or `None` (closed at once).
    fn admit(&self, peer: SocketAddr, scheme: &str) -> Option<Admission> {
        let inner = &self.inner;
        let Some(slot) = inner
            .pending
            .take(peer.ip(), inner.max_ip_pending, &inner.whitelist)
        else {
            inner.refused_ip.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = inner.refusal_log.hit() {
                warn!(%peer, limit = inner.max_ip_pending, refused = count, "{scheme}: too many connections without a request from one address; closing new ones");
            }
            return None;
        };
        let Ok(permit) = Arc::clone(&inner.connections).try_acquire_owned() else {
            inner.refused_total.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = inner.refusal_log.hit() {
                warn!(%peer, limit = inner.max_connections, refused = count, "{scheme}: too many connections; closing new ones");
            }
            return None;
        };
        Some(Admission {
            _permit: permit,
            first_request: Arc::new(FirstRequest {
                seen: AtomicBool::new(false),
                slot: Mutex::new(Some(slot)),
            }),
        })
    }
}

/// What an admitted connection holds until it ends.
struct Admission {
    _permit: OwnedSemaphorePermit,
    first_request: Arc<FirstRequest>,
}

/// Whether a connection has sent a request yet; its pending slot is given back at the first.
struct FirstRequest {
    seen: AtomicBool,
    slot: Mutex<Option<IpSlot>>,
}

impl FirstRequest {
    fn mark(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }
}

/// Serves `app` over plain HTTP on `listener` until `shutdown`, within `gate`'s limits.
/// Connections open at the shutdown get a graceful close and up to 5 s to finish.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    gate: HttpGate,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(listener, None, app, gate, shutdown).await;
    Ok(())
}

/// Serves `app` over TLS with `tls` until `shutdown`, within `gate`'s limits.
pub async fn serve_https(
    listener: TcpListener,
    tls: TlsCert,
    app: Router,
    gate: HttpGate,
    shutdown: CancellationToken,
) {
    serve(listener, Some(tls), app, gate, shutdown).await;
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsCert>,
    app: Router,
    gate: HttpGate,
    shutdown: CancellationToken,
) {
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    debug!(addr = ?listener.local_addr().ok(), "{scheme} listening");
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE, ECONNABORTED...: keep serving, without spinning.
                    warn!(%err, "{scheme} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admission) = gate.admit(peer, scheme) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_ref().map(TlsCert::acceptor);
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        let gate = gate.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let limit = gate.inner.header_read_timeout;
            match acceptor {
                None => serve_connection(tcp, peer, app, &gate, admission, shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(limit, acceptor.accept(tcp));
                    let stream = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        done = handshake => done,
                    };
                    match stream {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, app, &gate, admission, shutdown).await
                        }
                        Ok(Err(err)) => debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => {
                            gate.inner.header_timeouts.fetch_add(1, Ordering::Relaxed);
                            debug!(%peer, ?limit, "TLS handshake not completed in time");
                        }
                    }
                }
            }
        });
    }
    connections.close();
    // Upgraded connections (publishers) are ended by their own shutdown; requests finish.
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        info!(
            open = connections.len(),
            "{scheme}: connections still open after the shutdown grace; dropped"
        );
    }
}

/// Serves one connection until it ends, is upgraded, misses the header deadline or the
/// shutdown grace ends.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    gate: &HttpGate,
    admission: Admission,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = gate.inner.header_read_timeout;
    let first = Arc::clone(&admission.first_request);
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        first.mark();
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = Builder::new(TokioExecutor::new());
    // The timer is what makes hyper enforce its header read timeout (HTTP/1: each request's
    // headers, from the end of the previous response), and HTTP/2 keepalive pings.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limit);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .enable_connect_protocol();
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    // The first request must come within the limit, whatever the protocol (hyper's own timer
    // only starts once it has seen the first bytes and chosen HTTP/1).
    let first_deadline = tokio::time::sleep(limit);
    tokio::pin!(first_deadline);
    let mut waiting_first = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    if is_timeout(&*err) {
                        gate.inner.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, ?limit, "HTTP request headers not received in time; closed");
                    } else {
                        debug!(%peer, %err, "HTTP connection ended with an error");
                    }
                }
                return;
            }
            _ = &mut first_deadline, if waiting_first => {
                waiting_first = false;
                if !admission.first_request.seen() {
                    gate.inner.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, ?limit, "no HTTP request received in time; closed");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether a connection error is hyper's header read timeout.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(hyper_err) = err.downcast_ref::<hyper::Error>() {
            if hyper_err.is_timeout() {
                return true;
            }
        }
        source = err.source();
    }
    false
}
