//! Value grammars shared by every binary's configuration.

/// Booleans as the original system accepted them: `YES`/`NO`/`TRUE`/`FALSE` in any case
/// (also `1`/`0`, `ON`/`OFF`).
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" | "" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (use YES/NO or TRUE/FALSE)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_original_spellings_in_any_case() {
        for yes in ["YES", "yes", "True", "TRUE", "1"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["NO", "no", "False", "false", "0", ""] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert!(parse_bool("maybe").is_err());
    }
}
