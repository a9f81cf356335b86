//! Secrets come from the environment: a setting ending in `_env` names the variable that
//! holds the secret. [`unset`] is the one text for a variable that is not set — and it never
//! echoes what the setting holds unless that is shaped like a variable's name, because an
//! operator who pasted the secret itself into a `*_env` field would otherwise find it in
//! `check`'s output, the journal and `/pipelines`.

/// Whether `s` is shaped like an environment variable's name (`A-Z`, `a-z`, `0-9`, `_`, not
/// starting with a digit, at most 128 characters).
pub fn is_variable_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// "environment variable `NAME` is not set", or, when the setting does not hold a variable's
/// name, a message that says so without showing it.
pub fn unset(var: &str) -> String {
    if is_variable_name(var) {
        format!("environment variable `{var}` is not set")
    } else {
        "this setting must name an environment variable, and what it holds is not a variable's name (not shown: is it the secret itself? Put the secret in the environment and its variable's name here)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_written_where_a_variable_name_belongs_is_never_echoed() {
        assert_eq!(
            unset("RINGCENTRAL_JWT"),
            "environment variable `RINGCENTRAL_JWT` is not set"
        );
        for value in [
            "s3cr3t-P@ss!",
            "mysql://u:pw@db/x",
            "eyJhbGciOi.J9",
            "9LIVES",
            "",
        ] {
            let m = unset(value);
            assert!(value.is_empty() || !m.contains(value), "{m}");
            assert!(m.contains("not a variable's name"), "{m}");
        }
    }
}
