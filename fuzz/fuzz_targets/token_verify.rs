//! `contract::token::TokenKeys::verify`, which guards every internal call (`/internal/*`, the
//! media endpoint between nodes), with arbitrary `Authorization` values and with real tokens
//! after arbitrary edits.
//!
//! Checked: no panic; a token is accepted only if it is exactly one this secret signed, is
//! not expired, and its subject is allowed; a token signed with another secret is refused as
//! a bad signature.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use contract::token::{Component, TokenError, TokenKeys, TOKEN_LIFETIME_SECONDS};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-control-secret";

#[derive(Debug, Arbitrary, Clone, Copy, PartialEq, Eq)]
enum Who {
    Ingest,
    Encoder,
    Coordinator,
}

impl Who {
    fn component(self) -> Component {
        match self {
            Who::Ingest => Component::Ingest,
            Who::Encoder => Component::Encoder,
            Who::Coordinator => Component::Coordinator,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Set { at: u16, byte: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Truncate { at: u16 },
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any header value.
    Raw { header: String, allowed: Vec<Who> },
    /// A token this secret (or another one) signed, then edited.
    Signed {
        who: Who,
        node: String,
        /// Seconds before (or after) now the token was issued.
        age: i32,
        other_secret: bool,
        edits: Vec<Edit>,
        allowed: Vec<Who>,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fuzz_target!(|input: Input| {
    let keys = TokenKeys::new(SECRET);
    match input {
        Input::Raw { header, allowed } => {
            let allowed: Vec<Component> = allowed.iter().map(|w| w.component()).collect();
            if let Ok(claims) = keys.verify(Some(&header), &allowed) {
                // Forging HS256 by chance is not expected: this would be a bypass.
                panic!("an arbitrary header was accepted: {header:?} → {claims:?}");
            }
        }
        Input::Signed {
            who,
            node,
            age,
            other_secret,
            edits,
            allowed,
        } => {
            let issued = now().saturating_add_signed(-i64::from(age));
            let signer = if other_secret {
                TokenKeys::new("another-secret")
            } else {
                keys.clone()
            };
            let token = signer.sign_at(who.component(), &node, issued);
            let mut edited = token.clone().into_bytes();
            for edit in edits {
                match edit {
                    Edit::Set { at, byte } => {
                        if let Some(b) = edited.get_mut(usize::from(at)) {
                            *b = byte;
                        }
                    }
                    Edit::Insert { at, byte } => {
                        let at = usize::from(at).min(edited.len());
                        edited.insert(at, byte);
                    }
                    Edit::Remove { at } => {
                        if usize::from(at) < edited.len() {
                            edited.remove(usize::from(at));
                        }
                    }
                    Edit::Truncate { at } => edited.truncate(usize::from(at)),
                }
            }
            let Ok(edited) = String::from_utf8(edited) else {
                return;
            };
            let allowed: Vec<Component> = allowed.iter().map(|w| w.component()).collect();
            let before = now();
            let result = keys.verify(Some(&format!("Bearer {edited}")), &allowed);
            let after = now();
            let unchanged = edited.trim() == token;
            // Valid until `issued + lifetime` plus the 10 s leeway; a check that straddles
            // that second may go either way.
            let last_valid = issued + TOKEN_LIFETIME_SECONDS + 10;
            let expired = last_valid < before;
            let at_the_edge = (before..=after + 1).contains(&last_valid);
            match &result {
                Ok(claims) => {
                    assert!(unchanged, "an edited token was accepted: {edited:?}");
                    assert!(!other_secret, "a token of another secret was accepted");
                    assert!(allowed.contains(&claims.sub));
                    assert_eq!(claims.sub, who.component());
                    assert_eq!(claims.node, node);
                    assert!(!expired || at_the_edge, "an expired token was accepted");
                }
                Err(err) if unchanged && !at_the_edge => {
                    if edited.trim().len() > 4096 {
                        assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");
                    } else if other_secret {
                        assert!(
                            matches!(err, TokenError::BadSignature),
                            "another secret's token: {err:?}"
                        );
                    } else if expired {
                        assert!(matches!(err, TokenError::Expired), "{err:?}");
                    } else if !allowed.contains(&who.component()) {
                        assert!(matches!(err, TokenError::WrongSubject { .. }), "{err:?}");
                    } else {
                        panic!("a valid token was refused: {err:?}");
                    }
                }
                Err(_) => {}
            }
        }
    }
});
