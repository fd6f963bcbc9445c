//! Secret settings from AWS Secrets Manager: `SECRETS_ARN` names one secret whose JSON object
//! holds settings by their variable names (`CONTROL_SECRET`, `EVENT_CALLBACK_PASSWORD`, …). A
//! Lambda function cannot have Secrets Manager values injected into its environment the way an
//! ECS task can, so the coordinator reads them at cold start. A value set in the environment
//! wins over the secret's.

use std::collections::HashMap;

use anyhow::Context as _;
use aws_config::BehaviorVersion;

use crate::service::ServiceArgs;

/// Fetches the secret and parses its JSON object of strings.
pub async fn fetch(arn: &str) -> anyhow::Result<HashMap<String, String>> {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)))
        .with_context(|| format!("cannot read the secret {arn} (SECRETS_ARN)"))?;
    let text = output
        .secret_string()
        .with_context(|| format!("the secret {arn} has no string value"))?;
    parse(text).with_context(|| format!("the secret {arn} is not a JSON object of strings"))
}

/// The secret's JSON object (`{"CONTROL_SECRET": "...", ...}`).
pub fn parse(text: &str) -> anyhow::Result<HashMap<String, String>> {
    Ok(serde_json::from_str(text)?)
}

/// Fills every secret setting that the environment left unset.
pub fn apply(args: &mut ServiceArgs, secrets: &HashMap<String, String>) {
    let c = &mut args.coordinator;
    let fields: [(&str, &mut Option<String>); 10] = [
        ("CONTROL_SECRET", &mut args.control_secret),
        ("REDIS_PASSWORD", &mut args.redis_password),
        (
            "KEY_VERIFICATION_PASSWORD",
            &mut c.key_verification_password,
        ),
        (
            "KEY_VERIFICATION_AUTH_TOKEN",
            &mut c.key_verification_auth_token,
        ),
        (
            "KEY_VERIFICATION_AUTH_CUSTOM",
            &mut c.key_verification_auth_custom,
        ),
        ("EVENT_CALLBACK_PASSWORD", &mut c.event_callback_password),
        (
            "EVENT_CALLBACK_AUTH_TOKEN",
            &mut c.event_callback_auth_token,
        ),
        (
            "EVENT_CALLBACK_AUTH_CUSTOM",
            &mut c.event_callback_auth_custom,
        ),
        ("COMMANDS_API_AUTH_TOKEN", &mut c.commands_api_auth_token),
        (
            "COMMANDS_API_AUTH_PASSWORD",
            &mut c.commands_api_auth_password,
        ),
    ];
    for (name, field) in fields {
        if field.as_deref().is_none_or(str::is_empty) {
            if let Some(value) = secrets.get(name).filter(|v| !v.is_empty()) {
                *field = Some(value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn secrets_fill_what_the_environment_left_unset() {
        let mut args =
            ServiceArgs::parse_from(["coordinator-fn", "--event-callback-auth-token", "from-env"]);
        let secrets = parse(
            r#"{"CONTROL_SECRET": "from-secret-0123456789", "EVENT_CALLBACK_AUTH_TOKEN": "from-secret", "REDIS_PASSWORD": "pw", "UNRELATED": "x"}"#,
        )
        .expect("valid");
        apply(&mut args, &secrets);
        assert_eq!(
            args.control_secret.as_deref(),
            Some("from-secret-0123456789")
        );
        assert_eq!(args.redis_password.as_deref(), Some("pw"));
        assert_eq!(
            args.coordinator.event_callback_auth_token.as_deref(),
            Some("from-env"),
            "the environment wins"
        );
    }

    #[test]
    fn a_secret_that_is_not_an_object_of_strings_is_an_error() {
        assert!(parse("[1, 2]").is_err());
        assert!(parse(r#"{"CONTROL_SECRET": 5}"#).is_err());
    }
}
