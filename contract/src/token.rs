//! Authentication of internal calls between components: an HS256 JWT signed with
//! `CONTROL_SECRET`, whose subject names the calling component, with a short expiry.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How long a token is valid after it is made.
pub const TOKEN_LIFETIME_SECONDS: u64 = 120;

/// The component a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Ingest,
    Encoder,
    Coordinator,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Ingest => "ingest",
            Component::Encoder => "encoder",
            Component::Coordinator => "coordinator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The calling component.
    pub sub: Component,
    /// The calling node's ID.
    pub node: String,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused. The variants are for logs; callers answer 401 to all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature does not match CONTROL_SECRET")]
    BadSignature,
    #[error("the token is for {got:?}, this call needs {want:?}")]
    WrongSubject {
        got: Component,
        want: Vec<Component>,
    },
    #[error("malformed token: {0}")]
    Malformed(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs and checks internal tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A fresh token for `component`/`node`, valid for [`TOKEN_LIFETIME_SECONDS`].
    pub fn sign(&self, component: Component, node: &str) -> String {
        self.sign_at(component, node, now())
    }

    /// A token issued at `issued` (seconds since the epoch): for tests and tools.
    pub fn sign_at(&self, component: Component, node: &str, issued: u64) -> String {
        let claims = Claims {
            sub: component,
            node: node.to_owned(),
            iat: issued,
            exp: issued + TOKEN_LIFETIME_SECONDS,
        };
        // HS256 with an in-memory key cannot fail to encode.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Checks an `Authorization: Bearer …` header value: signature, expiry, and that the
    /// subject is one of `allowed`.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        allowed: &[Component],
    ) -> Result<Claims, TokenError> {
        let token = authorization
            .and_then(|h| h.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        if token.len() > 4096 {
            return Err(TokenError::Malformed("too long".into()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 10;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, &self.decoding, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(err.to_string()),
            }
        })?;
        if !allowed.contains(&data.claims.sub) {
            return Err(TokenError::WrongSubject {
                got: data.claims.sub,
                want: allowed.to_vec(),
            });
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_fresh_token_of_the_right_component_is_accepted() {
        let keys = TokenKeys::new("s3cret");
        let token = keys.sign(Component::Encoder, "encoder-1");
        let claims = keys
            .verify(Some(&bearer(&token)), &[Component::Encoder])
            .expect("valid");
        assert_eq!(claims.node, "encoder-1");
    }

    #[test]
    fn missing_wrong_secret_wrong_subject_and_expired_tokens_are_refused() {
        let keys = TokenKeys::new("s3cret");
        assert_eq!(
            keys.verify(None, &[Component::Ingest]),
            Err(TokenError::Missing)
        );
        assert_eq!(
            keys.verify(Some("Basic abc"), &[Component::Ingest]),
            Err(TokenError::Missing)
        );
        let other = TokenKeys::new("other").sign(Component::Ingest, "i");
        assert_eq!(
            keys.verify(Some(&bearer(&other)), &[Component::Ingest]),
            Err(TokenError::BadSignature)
        );
        let encoder = keys.sign(Component::Encoder, "e");
        assert!(matches!(
            keys.verify(Some(&bearer(&encoder)), &[Component::Ingest]),
            Err(TokenError::WrongSubject { .. })
        ));
        let old = keys.sign_at(Component::Ingest, "i", now() - 3600);
        assert_eq!(
            keys.verify(Some(&bearer(&old)), &[Component::Ingest]),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            keys.verify(Some("Bearer not.a.jwt"), &[Component::Ingest]),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        // {"alg":"none"} with valid-looking claims.
        let keys = TokenKeys::new("s3cret");
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJpbmdlc3QiLCJub2RlIjoiaSIsImlhdCI6MCwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(keys
            .verify(Some(&bearer(token)), &[Component::Ingest])
            .is_err());
    }
}
