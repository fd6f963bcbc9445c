//! Settings of the coordinator, read from the environment with the original system's names.

use std::time::Duration;

use contract::control::StreamOptions;
use contract::resolution::parse_list;

use crate::auth::{AuthConfigError, HeaderAuth};

/// The coordinator's settings as `clap` arguments with environment fallbacks; flattened into
/// every binary that runs a coordinator (the all-in-one and `coordinator-fn`).
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Web app endpoint that decides whether a channel and key may publish (unset: every key is accepted).
    #[arg(long, env = "KEY_VERIFICATION_URL")]
    pub key_verification_url: Option<String>,
    /// Auth of key verification requests: Basic, Bearer or Custom.
    #[arg(long, env = "KEY_VERIFICATION_AUTH")]
    pub key_verification_auth: Option<String>,
    #[arg(long, env = "KEY_VERIFICATION_AUTH_USER")]
    pub key_verification_auth_user: Option<String>,
    #[arg(long, env = "KEY_VERIFICATION_PASSWORD", hide_env_values = true)]
    pub key_verification_password: Option<String>,
    #[arg(long, env = "KEY_VERIFICATION_AUTH_TOKEN", hide_env_values = true)]
    pub key_verification_auth_token: Option<String>,
    #[arg(long, env = "KEY_VERIFICATION_AUTH_CUSTOM", hide_env_values = true)]
    pub key_verification_auth_custom: Option<String>,
    /// Seconds to wait for the web app's key verification answer; no answer = refused.
    #[arg(long, env = "KEY_VERIFICATION_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub key_verification_timeout_seconds: f64,

    /// Web app endpoint that receives stream-available and stream-closed events (unset: no events).
    #[arg(long, env = "EVENT_CALLBACK_URL")]
    pub event_callback_url: Option<String>,
    /// Auth of event callbacks: Basic, Bearer or Custom.
    #[arg(long, env = "EVENT_CALLBACK_AUTH")]
    pub event_callback_auth: Option<String>,
    #[arg(long, env = "EVENT_CALLBACK_AUTH_USER")]
    pub event_callback_auth_user: Option<String>,
    #[arg(long, env = "EVENT_CALLBACK_PASSWORD", hide_env_values = true)]
    pub event_callback_password: Option<String>,
    #[arg(long, env = "EVENT_CALLBACK_AUTH_TOKEN", hide_env_values = true)]
    pub event_callback_auth_token: Option<String>,
    #[arg(long, env = "EVENT_CALLBACK_AUTH_CUSTOM", hide_env_values = true)]
    pub event_callback_auth_custom: Option<String>,
    /// Seconds to wait for the web app to answer one event callback before retrying it.
    #[arg(long, env = "EVENT_CALLBACK_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub event_callback_timeout_seconds: f64,

    /// Auth the commands API requires: Bearer or Basic (unset: open, with a warning).
    #[arg(long, env = "COMMANDS_API_AUTH")]
    pub commands_api_auth: Option<String>,
    #[arg(long, env = "COMMANDS_API_AUTH_USER")]
    pub commands_api_auth_user: Option<String>,
    #[arg(long, env = "COMMANDS_API_AUTH_PASSWORD", hide_env_values = true)]
    pub commands_api_auth_password: Option<String>,
    #[arg(long, env = "COMMANDS_API_AUTH_TOKEN", hide_env_values = true)]
    pub commands_api_auth_token: Option<String>,

    /// Longest channel or key accepted.
    #[arg(long, env = "ID_MAX_LENGTH", default_value_t = contract::DEFAULT_ID_MAX_LENGTH)]
    pub id_max_length: usize,

    /// Public base URL of the stored objects (the CDN); events then carry x-playback-url.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// A publisher that reconnects to its channel with the same key within this many seconds
    /// continues the same stream (same stream ID, a discontinuity in the playlists); 0 = off.
    #[arg(long, env = "RECONNECT_WINDOW_SECONDS", default_value_t = 5.0)]
    pub reconnect_window_seconds: f64,
}

/// The parsed settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub key_verification_url: Option<String>,
    pub key_verification_auth: Option<HeaderAuth>,
    pub key_verification_timeout: Duration,
    /// Options of every stream when no key verification URL is set.
    pub default_options: StreamOptions,
    pub event_callback_url: Option<String>,
    pub event_callback_auth: Option<HeaderAuth>,
    pub event_callback_timeout: Duration,
    pub commands_auth: Option<HeaderAuth>,
    pub id_max_length: usize,
    pub public_base_url: Option<String>,
    /// How long after its publisher left a stream may be resumed by the same channel and key
    /// (zero: never).
    pub reconnect_window: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            key_verification_url: None,
            key_verification_auth: None,
            key_verification_timeout: Duration::from_secs(5),
            default_options: StreamOptions::default(),
            event_callback_url: None,
            event_callback_auth: None,
            event_callback_timeout: Duration::from_secs(10),
            commands_auth: None,
            id_max_length: contract::DEFAULT_ID_MAX_LENGTH,
            public_base_url: None,
            reconnect_window: Duration::from_secs(5),
        }
    }
}

fn seconds(setting: &str, value: f64) -> Result<Duration, AuthConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| AuthConfigError {
        setting: setting.to_owned(),
        reason: format!("{value} is not a number of seconds"),
    })
}

impl CoordinatorArgs {
    /// Checks and converts the settings. `default_resolutions` is the ladder used when no key
    /// verification URL is set (SPEC: `ORIGINAL`; the embedded mode shows off a ladder).
    pub fn to_config(
        &self,
        default_resolutions: Option<&str>,
    ) -> Result<CoordinatorConfig, AuthConfigError> {
        let s = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
        let commands_auth = HeaderAuth::from_settings(
            "COMMANDS_API_AUTH",
            self.commands_api_auth.as_deref(),
            self.commands_api_auth_user.as_deref(),
            self.commands_api_auth_password.as_deref(),
            self.commands_api_auth_token.as_deref(),
            None,
        )?;
        if matches!(commands_auth, Some(HeaderAuth::Custom { .. })) {
            return Err(AuthConfigError {
                setting: "COMMANDS_API_AUTH".into(),
                reason: "use Bearer or Basic".into(),
            });
        }
        Ok(CoordinatorConfig {
            key_verification_url: s(&self.key_verification_url),
            key_verification_auth: HeaderAuth::from_settings(
                "KEY_VERIFICATION_AUTH",
                self.key_verification_auth.as_deref(),
                self.key_verification_auth_user.as_deref(),
                self.key_verification_password.as_deref(),
                self.key_verification_auth_token.as_deref(),
                self.key_verification_auth_custom.as_deref(),
            )?,
            key_verification_timeout: seconds(
                "KEY_VERIFICATION_TIMEOUT_SECONDS",
                self.key_verification_timeout_seconds,
            )?,
            default_options: StreamOptions {
                resolutions: parse_list(default_resolutions).0,
                record: false,
                previews: None,
            },
            event_callback_url: s(&self.event_callback_url),
            event_callback_auth: HeaderAuth::from_settings(
                "EVENT_CALLBACK_AUTH",
                self.event_callback_auth.as_deref(),
                self.event_callback_auth_user.as_deref(),
                self.event_callback_password.as_deref(),
                self.event_callback_auth_token.as_deref(),
                self.event_callback_auth_custom.as_deref(),
            )?,
            event_callback_timeout: seconds(
                "EVENT_CALLBACK_TIMEOUT_SECONDS",
                self.event_callback_timeout_seconds,
            )?,
            commands_auth,
            id_max_length: self.id_max_length,
            public_base_url: s(&self.public_base_url).map(|u| u.trim_end_matches('/').to_owned()),
            reconnect_window: seconds("RECONNECT_WINDOW_SECONDS", self.reconnect_window_seconds)?,
        })
    }
}
