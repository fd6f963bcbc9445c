//! [`S3Store`]: objects in an S3 bucket, on AWS or any S3-compatible server (MinIO, LocalStack,
//! Ceph, R2, RustFS).
//!
//! - The SDK configuration is loaded once, with the standard chains: credentials from the
//!   environment, the profile files, web identity, the ECS task role or the instance profile;
//!   the region from `AWS_REGION` (or the profile; `us-east-1` when nothing names one, which is
//!   what most S3-compatible servers expect). Static credentials can be given instead (for a
//!   MinIO whose keys are not the machine's AWS identity).
//! - The endpoint is the SDK's own override (`AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`),
//!   or [`S3Settings::endpoint_url`]; local servers need path-style addressing
//!   (`AWS_S3_FORCE_PATH_STYLE=true`).
//! - TLS is rustls on *ring* (no C toolchain needed beyond what ring builds with).
//! - Every `put` sets `Content-Type` and `Cache-Control` from
//!   [`contract::keys::object_headers`]; objects of streams that are not recorded carry the tag
//!   `vstream-live=1`, which a bucket lifecycle rule (infra/) expires as a backstop.
//! - Errors keep the S3 error code and message and are classified: transport failures,
//!   timeouts, 5xx, 408, 429 and throttling codes are [`StoreError::Unavailable`] (retried by
//!   the publisher, segments wait in the spool meanwhile); other refusals (`AccessDenied`,
//!   `NoSuchBucket`, bad credentials) are [`StoreError::Rejected`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tracing::info;

use crate::store::{validate_key, ObjectStore, Retention, StoreError};

/// The tag of objects that belong to a stream that is not recorded.
pub const LIVE_TAG: &str = "vstream-live=1";
/// Region used when neither the settings nor the SDK's chain name one.
pub const FALLBACK_REGION: &str = "us-east-1";
/// Time to open a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time one attempt of one request may take (a segment of a few MB on a slow link fits).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts the SDK itself makes per request before the error reaches the publisher (which
/// goes on retrying retryable ones).
const SDK_ATTEMPTS: u32 = 2;

/// A secret setting: never printed in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `AWS_S3_BUCKET`.
    pub bucket: String,
    /// `AWS_REGION`; `None`: the SDK's chain, else [`FALLBACK_REGION`].
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL_S3`; `None`: the SDK's own environment and profile resolution.
    pub endpoint_url: Option<String>,
    /// `AWS_S3_FORCE_PATH_STYLE`: `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub force_path_style: bool,
    /// `HLS_S3_PREFIX`: prepended to every key (`prefix/hls/...`); empty = the bucket root.
    pub prefix: String,
    /// Static credentials (`HLS_S3_ACCESS_KEY_ID` / `HLS_S3_SECRET_ACCESS_KEY`); `None`: the
    /// SDK's credential chain.
    pub credentials: Option<(String, Secret)>,
}

/// A setting that makes the S3 store unusable.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("AWS_S3_BUCKET is required when HLS_STORAGE_TYPE=S3")]
    NoBucket,
    #[error("HLS_S3_PREFIX {0:?} is not a valid key prefix")]
    BadPrefix(String),
}

/// Objects in an S3 bucket. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// `prefix` trimmed of slashes, with one `/` at the end (empty stays empty).
pub fn normalize_prefix(prefix: &str) -> Result<String, S3ConfigError> {
    let trimmed = prefix.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    validate_key(trimmed).map_err(|_| S3ConfigError::BadPrefix(prefix.to_owned()))?;
    Ok(format!("{trimmed}/"))
}

impl S3Store {
    /// Loads the SDK configuration (once) and builds the client. Makes no request.
    pub async fn connect(settings: &S3Settings) -> Result<Self, S3ConfigError> {
        let bucket = settings.bucket.trim().to_owned();
        if bucket.is_empty() {
            return Err(S3ConfigError::NoBucket);
        }
        let prefix = normalize_prefix(&settings.prefix)?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS));
        if let Some(region) = settings.region.as_deref().filter(|r| !r.trim().is_empty()) {
            loader = loader.region(Region::new(region.trim().to_owned()));
        }
        if let Some(endpoint) = settings
            .endpoint_url
            .as_deref()
            .filter(|e| !e.trim().is_empty())
        {
            loader = loader.endpoint_url(endpoint.trim());
        }
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "vstream-settings",
            ));
        }
        let sdk = loader.load().await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(settings.force_path_style);
        if sdk.region().is_none() {
            config = config.region(Region::new(FALLBACK_REGION));
        }
        let config = config.build();
        info!(
            bucket = %bucket,
            prefix = %prefix,
            region = config.region().map(|r| r.as_ref()).unwrap_or("?"),
            endpoint = sdk.endpoint_url().unwrap_or("AWS"),
            path_style = settings.force_path_style,
            "S3 storage"
        );
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket,
            prefix,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket key of an object key: the prefix, then the key.
    pub fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }
}

/// What kind of failure an S3 error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer: connection refused or reset, DNS, timeout, unreadable response.
    Transport,
    /// The request could not even be built (a bug or a bad setting).
    Construction,
    /// The service answered with an error status.
    Service,
}

/// Error codes S3 and S3-compatible servers use for conditions that pass.
const RETRYABLE_CODES: [&str; 10] = [
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "InternalError",
    "ServiceUnavailable",
    "ExpiredToken",
    "OperationAborted",
];

/// Whether an S3 failure may pass if the request is made again.
pub fn is_retryable(kind: FailureKind, status: Option<u16>, code: Option<&str>) -> bool {
    match kind {
        FailureKind::Transport => true,
        FailureKind::Construction => false,
        FailureKind::Service => {
            code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
        }
    }
}

/// Converts an SDK error into a [`StoreError`] that keeps its code and message.
fn convert<E>(key: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &err {
        SdkError::ConstructionFailure(_) => FailureKind::Construction,
        SdkError::ServiceError(_) => FailureKind::Service,
        _ => FailureKind::Transport,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let message = match (kind, err.message()) {
        (FailureKind::Service, Some(message)) => message.to_owned(),
        _ => DisplayErrorContext(&err).to_string(),
    };
    if is_retryable(kind, status, code.as_deref()) {
        StoreError::Unavailable {
            key: key.to_owned(),
            code: code.or_else(|| status.map(|s| format!("HTTP {s}"))),
            message,
        }
    } else {
        StoreError::Rejected {
            key: key.to_owned(),
            code: code.unwrap_or_else(|| match kind {
                FailureKind::Construction => "RequestNotBuilt".to_owned(),
                _ => "Unknown".to_owned(),
            }),
            status,
            message,
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_with(key, body, Retention::Kept).await
    }

    async fn put_with(
        &self,
        key: &str,
        body: Bytes,
        retention: Retention,
    ) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        let (content_type, cache_control) = contract::keys::object_headers(key);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .content_type(content_type)
            .cache_control(cache_control)
            .body(ByteStream::from(body));
        if retention == Retention::Live {
            request = request.tagging(LIVE_TAG);
        }
        request.send().await.map_err(|err| convert(key, err))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|err| convert(key, err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_throttling_and_server_errors_are_retried() {
        assert!(is_retryable(FailureKind::Transport, None, None));
        assert!(is_retryable(
            FailureKind::Service,
            Some(503),
            Some("SlowDown")
        ));
        assert!(is_retryable(
            FailureKind::Service,
            Some(500),
            Some("InternalError")
        ));
        assert!(is_retryable(FailureKind::Service, Some(502), None));
        assert!(is_retryable(FailureKind::Service, Some(429), None));
        assert!(is_retryable(
            FailureKind::Service,
            Some(400),
            Some("RequestTimeout")
        ));
        assert!(is_retryable(
            FailureKind::Service,
            Some(400),
            Some("ExpiredToken")
        ));
        assert!(is_retryable(FailureKind::Service, None, None));
    }

    #[test]
    fn refusals_are_not_retried() {
        for (status, code) in [
            (403, "AccessDenied"),
            (404, "NoSuchBucket"),
            (403, "InvalidAccessKeyId"),
            (403, "SignatureDoesNotMatch"),
            (400, "EntityTooLarge"),
            (400, "InvalidBucketName"),
        ] {
            assert!(
                !is_retryable(FailureKind::Service, Some(status), Some(code)),
                "{code}"
            );
        }
        assert!(!is_retryable(FailureKind::Construction, None, None));
    }

    #[test]
    fn the_prefix_is_normalized_and_validated() {
        assert_eq!(normalize_prefix("").expect("empty"), "");
        assert_eq!(normalize_prefix(" / ").expect("slash"), "");
        assert_eq!(normalize_prefix("media").expect("plain"), "media/");
        assert_eq!(normalize_prefix("/a/b/").expect("slashes"), "a/b/");
        assert!(normalize_prefix("a/../b").is_err());
        assert!(normalize_prefix("a//b").is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let settings = S3Settings {
            bucket: "b".into(),
            credentials: Some(("id".into(), Secret::new("hunter2"))),
            ..S3Settings::default()
        };
        let text = format!("{settings:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn keys_get_the_prefix_and_bad_keys_are_refused_before_any_request() {
        let store = S3Store::connect(&S3Settings {
            bucket: "b".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            force_path_style: true,
            prefix: "/vod/".into(),
            credentials: Some(("id".into(), Secret::new("secret"))),
        })
        .await
        .expect("connect");
        assert_eq!(store.full_key("hls/a/1.ts").expect("key"), "vod/hls/a/1.ts");
        let err = store
            .put("../escape", Bytes::from_static(b"x"))
            .await
            .expect_err("refused");
        assert!(matches!(err, StoreError::InvalidKey { .. }));
        assert!(matches!(
            S3Store::connect(&S3Settings::default()).await,
            Err(S3ConfigError::NoBucket)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_store_is_unavailable_not_rejected() {
        // Port 9 (discard) on loopback: connection refused.
        let store = S3Store::connect(&S3Settings {
            bucket: "b".into(),
            region: Some("us-east-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            force_path_style: true,
            prefix: String::new(),
            credentials: Some(("id".into(), Secret::new("secret"))),
        })
        .await
        .expect("connect");
        let err = store
            .put_with("hls/a/1.ts", Bytes::from_static(b"x"), Retention::Live)
            .await
            .expect_err("nothing listens");
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    }
}
