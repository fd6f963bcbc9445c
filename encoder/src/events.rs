//! Reporting to the coordinator without holding up the media: events of a job are queued and
//! sent by one task, in order, each retried a few times with backoff while the coordinator is
//! unavailable. `Closed` is queued last, so it is never delivered before the job's
//! `Available` events.

use std::sync::Arc;
use std::time::Duration;

use contract::control::{ControlError, ControlPlane, EncoderEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn, Instrument as _};

/// Attempts per event.
const ATTEMPTS: u32 = 5;
/// Delay before the second attempt; doubled for each following one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Queues events of one job; clones share the queue.
#[derive(Clone)]
pub struct EventSender {
    queue: mpsc::UnboundedSender<EncoderEvent>,
}

/// The task that delivers a job's events.
pub struct EventTask {
    task: JoinHandle<()>,
}

/// Starts the sending task of a job (in the current tracing span).
pub fn spawn_event_task(control: Arc<dyn ControlPlane>) -> (EventSender, EventTask) {
    let (queue, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(
        async move {
            while let Some(event) = events.recv().await {
                deliver(control.as_ref(), event).await;
            }
        }
        .instrument(tracing::Span::current()),
    );
    (EventSender { queue }, EventTask { task })
}

impl EventSender {
    /// Queues an event; never waits.
    pub fn send(&self, event: EncoderEvent) {
        if self.queue.send(event).is_err() {
            error!("event task is gone: event dropped");
        }
    }
}

impl EventTask {
    /// Waits until every queued event was delivered or given up. Every [`EventSender`] must be
    /// dropped first.
    pub async fn finish(self) {
        if let Err(err) = self.task.await {
            error!(error = %err, "event task failed");
        }
    }
}

fn describe(event: &EncoderEvent) -> String {
    match event {
        EncoderEvent::Available {
            stream_type,
            resolution,
            ..
        } => format!("available {} {resolution}", stream_type.as_str()),
        EncoderEvent::Closed { .. } => "closed".to_owned(),
    }
}

async fn deliver(control: &dyn ControlPlane, event: EncoderEvent) {
    let what = describe(&event);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match control.encoder_event(event.clone()).await {
            Ok(()) => {
                debug!(event = %what, "event delivered");
                return;
            }
            Err(ControlError::Refused(reason)) => {
                error!(event = %what, %reason, "coordinator refused the event");
                return;
            }
            Err(ControlError::Unavailable(reason)) if attempt < ATTEMPTS => {
                warn!(event = %what, %reason, attempt, "coordinator unavailable, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(ControlError::Unavailable(reason)) => {
                error!(event = %what, %reason, "coordinator unavailable, event given up");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use contract::control::{PublishGrant, PublishRefusal, PublishRequest};
    use contract::StreamId;
    use std::sync::Mutex;

    /// Fails the first `failures` calls, then records.
    struct Flaky {
        failures: Mutex<u32>,
        delivered: Mutex<Vec<EncoderEvent>>,
    }

    #[async_trait]
    impl ControlPlane for Flaky {
        async fn publish(&self, _: PublishRequest) -> Result<PublishGrant, PublishRefusal> {
            Err(PublishRefusal::NoCapacity)
        }
        async fn publish_ended(&self, _: &str, _: &StreamId) -> Result<(), ControlError> {
            Ok(())
        }
        async fn encoder_event(&self, event: EncoderEvent) -> Result<(), ControlError> {
            let mut failures = self.failures.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                return Err(ControlError::Unavailable("down".into()));
            }
            self.delivered.lock().expect("lock").push(event);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_retried_and_delivered_in_order() {
        let control = Arc::new(Flaky {
            failures: Mutex::new(3),
            delivered: Mutex::new(Vec::new()),
        });
        let (sender, task) = spawn_event_task(control.clone());
        let stream_id = StreamId::generate();
        let closed = EncoderEvent::Closed {
            stream_id: stream_id.clone(),
            channel: "c".into(),
            encoder_id: "e".into(),
        };
        let available = EncoderEvent::Available {
            stream_id,
            channel: "c".into(),
            stream_type: contract::control::StreamType::HlsLive,
            resolution: "640x360-30".into(),
            index_file: "hls/c/x/640x360-30/live.m3u8".into(),
            master_index_file: None,
            start_time: None,
        };
        sender.send(available.clone());
        sender.send(closed.clone());
        drop(sender);
        task.finish().await;
        assert_eq!(
            *control.delivered.lock().expect("lock"),
            vec![available, closed]
        );
    }
}
