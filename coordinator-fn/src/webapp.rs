//! The coordinator's client of the customer's web app: key verification and event callbacks,
//! with exactly the headers of SPEC §2.

use std::time::Duration;

use contract::control::{StreamOptions, StreamType};
use contract::previews::PreviewSpec;
use contract::resolution::parse_list;
use contract::StreamId;
use serde::{Deserialize, Serialize};

use crate::config::CoordinatorConfig;

/// The answer of key verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Verification {
    /// `200`: allowed, with the options from the response headers.
    Allowed(StreamOptions),
    /// Any other status.
    Denied { status: u16 },
    /// Network error or timeout (also a refusal: fail closed).
    Unreachable(String),
}

/// An event for the web app, as stored until it is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebAppEvent {
    /// `x-event-id`: unique, the same on every retry.
    pub event_id: String,
    pub channel: String,
    pub stream_id: StreamId,
    pub kind: WebAppEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum WebAppEventKind {
    Available {
        stream_type: StreamType,
        resolution: String,
        index_file: String,
        master_index_file: Option<String>,
        start_time: Option<f64>,
    },
    Closed,
}

/// Seconds as a short decimal: `12`, `12.5`, `12.345`.
fn format_seconds(value: f64) -> String {
    let text = format!("{:.3}", value.max(0.0));
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl WebAppEvent {
    pub fn new(channel: &str, stream_id: &StreamId, kind: WebAppEventKind) -> Self {
        WebAppEvent {
            event_id: format!("{:032x}", rand::random::<u128>()),
            channel: channel.to_owned(),
            stream_id: stream_id.clone(),
            kind,
        }
    }

    /// The request headers of the callback (besides `Authorization`).
    pub fn headers(&self, public_base_url: Option<&str>) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("x-streaming-channel", self.channel.clone()),
            ("x-streaming-id", self.stream_id.to_string()),
            ("x-event-id", self.event_id.clone()),
        ];
        match &self.kind {
            WebAppEventKind::Closed => headers.push(("x-event-type", "stream-closed".into())),
            WebAppEventKind::Available {
                stream_type,
                resolution,
                index_file,
                master_index_file,
                start_time,
            } => {
                headers.push(("x-event-type", "stream-available".into()));
                headers.push(("x-stream-type", stream_type.as_str().into()));
                headers.push(("x-resolution", resolution.clone()));
                headers.push(("x-index-file", index_file.clone()));
                if let Some(master) = master_index_file {
                    headers.push(("x-master-index-file", master.clone()));
                }
                if let Some(start) = start_time {
                    headers.push(("x-start-time", format_seconds(*start)));
                }
                if let Some(base) = public_base_url {
                    headers.push(("x-playback-url", format!("{base}/{index_file}")));
                }
            }
        }
        headers
    }
}

/// Why one delivery attempt failed (it will be retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the web app answered {status}")]
    Status { status: u16 },
    #[error("the web app could not be reached: {0}")]
    Unreachable(String),
}

/// HTTP client of the web app.
#[derive(Debug, Clone)]
pub struct WebApp {
    http: reqwest::Client,
}

impl Default for WebApp {
    fn default() -> Self {
        Self::new()
    }
}

impl WebApp {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        WebApp { http }
    }

    /// Asks the web app whether `channel`/`key` may publish. Without a verification URL every
    /// key is allowed with the configured default options.
    pub async fn verify_key(
        &self,
        config: &CoordinatorConfig,
        channel: &str,
        key: &str,
        user_ip: &str,
    ) -> Verification {
        let Some(url) = &config.key_verification_url else {
            return Verification::Allowed(config.default_options.clone());
        };
        let mut request = self
            .http
            .post(url)
            .timeout(config.key_verification_timeout)
            .header("x-streaming-channel", channel)
            .header("x-streaming-key", key)
            .header("x-user-ip", user_ip)
            .header(reqwest::header::CONTENT_LENGTH, "0");
        if let Some(auth) = &config.key_verification_auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.header_value());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Verification::Unreachable(error_chain(&err)),
        };
        let status = response.status().as_u16();
        if status != 200 {
            return Verification::Denied { status };
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let (resolutions, invalid) = parse_list(header("x-resolutions"));
        for err in invalid {
            tracing::warn!(channel, %err, "ignoring an x-resolutions entry from the web app");
        }
        let previews = PreviewSpec::parse_header(header("x-previews")).unwrap_or_else(|err| {
            tracing::warn!(channel, %err, "ignoring x-previews from the web app");
            None
        });
        let record = header("x-record").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Verification::Allowed(StreamOptions {
            resolutions,
            record,
            previews,
        })
    }

    /// Delivers one event; `Ok` only when the web app answered `200`.
    pub async fn deliver(
        &self,
        config: &CoordinatorConfig,
        event: &WebAppEvent,
    ) -> Result<(), DeliveryError> {
        let Some(url) = &config.event_callback_url else {
            return Ok(());
        };
        let mut request = self
            .http
            .post(url)
            .timeout(config.event_callback_timeout)
            .header(reqwest::header::CONTENT_LENGTH, "0");
        for (name, value) in event.headers(config.public_base_url.as_deref()) {
            request = request.header(name, value);
        }
        if let Some(auth) = &config.event_callback_auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.header_value());
        }
        match request.send().await {
            Ok(response) if response.status().as_u16() == 200 => Ok(()),
            Ok(response) => Err(DeliveryError::Status {
                status: response.status().as_u16(),
            }),
            Err(err) => Err(DeliveryError::Unreachable(error_chain(&err))),
        }
    }
}

/// An error with its sources, for one log line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StreamId {
        StreamId::parse("0123456789abcdef0123456789abcdef").expect("valid")
    }

    #[test]
    fn available_event_carries_the_spec_headers() {
        let event = WebAppEvent::new(
            "demo",
            &id(),
            WebAppEventKind::Available {
                stream_type: StreamType::HlsVod,
                resolution: "640x360-30~800".into(),
                index_file: "hls/demo/x/640x360-30~800/vod-1.m3u8".into(),
                master_index_file: None,
                start_time: Some(86_400.5),
            },
        );
        let headers = event.headers(Some("https://cdn.example"));
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-event-type"), Some("stream-available"));
        assert_eq!(get("x-stream-type"), Some("HLS-VOD"));
        assert_eq!(get("x-resolution"), Some("640x360-30~800"));
        assert_eq!(get("x-start-time"), Some("86400.5"));
        assert_eq!(
            get("x-streaming-id"),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            get("x-playback-url"),
            Some("https://cdn.example/hls/demo/x/640x360-30~800/vod-1.m3u8")
        );
        assert_eq!(get("x-event-id").map(str::len), Some(32));
    }

    #[test]
    fn closed_event_has_no_stream_type() {
        let event = WebAppEvent::new("demo", &id(), WebAppEventKind::Closed);
        let headers = event.headers(None);
        assert!(headers.contains(&("x-event-type", "stream-closed".into())));
        assert!(!headers.iter().any(|(n, _)| *n == "x-stream-type"));
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(format_seconds(12.0), "12");
        assert_eq!(format_seconds(12.5), "12.5");
        assert_eq!(format_seconds(0.0), "0");
    }
}
