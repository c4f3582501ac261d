//! [`Secret`]: a string that is never printed, shared by every crate of the toolkit
//! (database passwords, Vault tokens, secret ids).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret (password, token, secret id): `Debug` prints `Secret(<redacted>)`, there is no
/// `Display` and no `Serialize`, so it cannot end up in a log line, an error message or a
/// stored document by accident. [`Secret::expose`] hands the value to the code that must
/// send it.
///
/// ```
/// use cqrs_core::Secret;
///
/// let password = Secret::new("s3cret");
/// assert_eq!(format!("{password:?}"), "Secret(<redacted>)");
/// assert_eq!(password.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    ///
    /// ```
    /// let token = cqrs_core::Secret::new(String::from("hvs.token"));
    /// assert!(!token.is_empty());
    /// ```
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Pass it on; never log it.
    ///
    /// ```
    /// assert_eq!(cqrs_core::Secret::new("x").expose(), "x");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    ///
    /// ```
    /// assert!(cqrs_core::Secret::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("p@ss");
        assert!(!format!("{s:?}").contains("p@ss"));
        assert!(!format!("{:?}", Some(s.clone())).contains("p@ss"));
        let parsed: Secret = serde_json::from_str("\"p@ss\"").unwrap();
        assert_eq!(parsed, s);
    }
}
