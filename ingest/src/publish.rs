//! The publish lifecycle shared by the RTMP and WebSocket servers: reserving the channel,
//! asking the coordinator, and ending a live publish exactly once (relay closed, end reported,
//! channel freed).

use std::sync::Arc;

use contract::control::{PublishGrant, PublishRefusal, PublishRequest};
use contract::StreamId;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registry::{Reservation, StreamRelay};
use crate::Inner;

/// Why a publish ended (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Unpublished,
    PeerClosed,
    Killed,
    Shutdown,
    Error,
    IdleTimeout,
    Abandoned,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::Unpublished => "unpublished",
            EndReason::PeerClosed => "connection closed",
            EndReason::Killed => "killed",
            EndReason::Shutdown => "shutdown",
            EndReason::Error => "connection error",
            EndReason::IdleTimeout => "idle timeout",
            EndReason::Abandoned => "abandoned",
        }
    }
}

/// Result of a publish decision.
pub(crate) enum Decision {
    Granted(PublishGrant),
    Refused(PublishRefusal),
    TimedOut,
}

/// Reserves the channel (waiting, bounded, for a previous publisher's end to be reported)
/// and asks the coordinator.
pub(crate) async fn decide(
    inner: Arc<Inner>,
    request: PublishRequest,
    conn_id: u64,
    kill: CancellationToken,
) -> Decision {
    let limit = inner.config.publish_decision_timeout;
    loop {
        match inner
            .registry
            .reserve(&request.channel, conn_id, kill.clone())
        {
            Reservation::Reserved => break,
            Reservation::Busy => {
                debug!("channel held by another publisher on this node");
                return Decision::Refused(PublishRefusal::AlreadyPublishing);
            }
            Reservation::WaitForEnd(done) => {
                if timeout(limit, done.cancelled()).await.is_err() {
                    return Decision::Refused(PublishRefusal::AlreadyPublishing);
                }
            }
        }
    }
    match timeout(limit, inner.control.publish(request)).await {
        Ok(Ok(grant)) => Decision::Granted(grant),
        Ok(Err(refusal)) => Decision::Refused(refusal),
        Err(_) => Decision::TimedOut,
    }
}

/// Reports the end of a granted publish to the coordinator (bounded wait, errors logged).
pub(crate) async fn report_end(
    inner: &Inner,
    channel: &str,
    stream_id: &StreamId,
    reason: EndReason,
) {
    info!(%channel, %stream_id, reason = reason.as_str(), "publish ended");
    let limit = inner.config.publish_decision_timeout;
    match timeout(limit, inner.control.publish_ended(channel, stream_id)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(%channel, %stream_id, %err, "could not report the end of a publish"),
        Err(_) => warn!(%channel, %stream_id, ?limit, "reporting the end of a publish timed out"),
    }
}

/// A live publish. Ending it closes the relay, reports the end to the coordinator once and
/// frees the channel; if it is dropped without [`PublishGuard::end`] (a panic), the same is
/// done from a spawned task.
pub(crate) struct PublishGuard {
    pub(crate) inner: Arc<Inner>,
    pub(crate) channel: String,
    pub(crate) stream_id: StreamId,
    pub(crate) conn_id: u64,
    pub(crate) relay: StreamRelay,
    pub(crate) ended: bool,
}

impl PublishGuard {
    pub(crate) async fn end(mut self, reason: EndReason) {
        self.ended = true;
        finish(
            Arc::clone(&self.inner),
            self.channel.clone(),
            self.stream_id.clone(),
            self.conn_id,
            self.relay.clone(),
            reason,
        )
        .await;
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let end = finish(
            Arc::clone(&self.inner),
            self.channel.clone(),
            self.stream_id.clone(),
            self.conn_id,
            self.relay.clone(),
            EndReason::Error,
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(end);
            }
            Err(_) => {
                self.relay.close();
                self.inner
                    .registry
                    .finish_ending(&self.channel, self.conn_id);
            }
        }
    }
}

async fn finish(
    inner: Arc<Inner>,
    channel: String,
    stream_id: StreamId,
    conn_id: u64,
    relay: StreamRelay,
    reason: EndReason,
) {
    relay.close();
    inner.registry.begin_ending(&channel, conn_id);
    report_end(&inner, &channel, &stream_id, reason).await;
    inner.registry.finish_ending(&channel, conn_id);
}
