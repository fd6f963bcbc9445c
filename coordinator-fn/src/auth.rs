//! `Authorization` headers of the web-app contract: `Basic`, `Bearer` or `Custom` (SPEC §2).

use base64::Engine as _;

/// How a request to (or from) the web app is authenticated.
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderAuth {
    Basic {
        user: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    /// The raw `Authorization` header value.
    Custom {
        value: String,
    },
}

impl std::fmt::Debug for HeaderAuth {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderAuth::Basic { user, .. } => write!(f, "Basic(user={user:?})"),
            HeaderAuth::Bearer { .. } => f.write_str("Bearer(..)"),
            HeaderAuth::Custom { .. } => f.write_str("Custom(..)"),
        }
    }
}

/// A `*_AUTH` setting that names a mode whose credentials are missing, or an unknown mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct AuthConfigError {
    pub setting: String,
    pub reason: String,
}

impl HeaderAuth {
    /// Builds the auth from the `{PREFIX}_AUTH` mode and its credentials, as the original named
    /// them. `mode` empty or missing means no auth.
    pub fn from_settings(
        setting: &str,
        mode: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
        custom: Option<&str>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let missing = |what: &str| AuthConfigError {
            setting: setting.to_owned(),
            reason: format!("{what} is required"),
        };
        let mode = mode.map(str::trim).unwrap_or("");
        match mode.to_ascii_lowercase().as_str() {
            "" | "none" => Ok(None),
            "basic" => Ok(Some(HeaderAuth::Basic {
                user: user.ok_or_else(|| missing("the user"))?.to_owned(),
                password: password.ok_or_else(|| missing("the password"))?.to_owned(),
            })),
            "bearer" => Ok(Some(HeaderAuth::Bearer {
                token: token.ok_or_else(|| missing("the token"))?.to_owned(),
            })),
            "custom" => Ok(Some(HeaderAuth::Custom {
                value: custom
                    .ok_or_else(|| missing("the custom header value"))?
                    .to_owned(),
            })),
            other => Err(AuthConfigError {
                setting: setting.to_owned(),
                reason: format!("unknown mode {other:?} (use Basic, Bearer or Custom)"),
            }),
        }
    }

    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        match self {
            HeaderAuth::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            HeaderAuth::Bearer { token } => format!("Bearer {token}"),
            HeaderAuth::Custom { value } => value.clone(),
        }
    }

    /// Checks an incoming `Authorization` header in constant time.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(header) = header else {
            return false;
        };
        let expected = self.header_value();
        constant_time_eq(header.trim().as_bytes(), expected.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encodes_user_and_password() {
        let auth =
            HeaderAuth::from_settings("X_AUTH", Some("basic"), Some("u"), Some("p"), None, None)
                .expect("valid")
                .expect("some");
        assert_eq!(auth.header_value(), "Basic dTpw");
        assert!(auth.accepts(Some("Basic dTpw")));
        assert!(
            !auth.accepts(Some("Bearer p")),
            "the original compared Basic against the token"
        );
        assert!(!auth.accepts(None));
    }

    #[test]
    fn bearer_and_custom() {
        let bearer = HeaderAuth::from_settings("X", Some("Bearer"), None, None, Some("t"), None)
            .expect("valid")
            .expect("some");
        assert_eq!(bearer.header_value(), "Bearer t");
        let custom =
            HeaderAuth::from_settings("X", Some("CUSTOM"), None, None, None, Some("Token abc"))
                .expect("valid")
                .expect("some");
        assert_eq!(custom.header_value(), "Token abc");
    }

    #[test]
    fn missing_credentials_and_unknown_modes_are_configuration_errors() {
        assert!(
            HeaderAuth::from_settings("X", Some("Basic"), Some("u"), None, None, None).is_err()
        );
        assert!(HeaderAuth::from_settings("X", Some("Digest"), None, None, None, None).is_err());
        assert_eq!(
            HeaderAuth::from_settings("X", None, None, None, None, None),
            Ok(None)
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auth = HeaderAuth::Bearer {
            token: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
