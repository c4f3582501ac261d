//! [`SecretString`]: a string that is never printed.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret (token, password, secret id): `Debug` prints `SecretString(<redacted>)`, there
/// is no `Display`, and errors of this crate never contain one. Use
/// [`SecretString::expose`] only to hand the value to the code that must send it.
///
/// ```
/// use cqrs_vault::SecretString;
///
/// let token = SecretString::new("hvs.very-secret");
/// assert_eq!(format!("{token:?}"), "SecretString(<redacted>)");
/// assert_eq!(token.expose(), "hvs.very-secret");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself. Pass it on; never log it.
    ///
    /// ```
    /// let s = cqrs_vault::SecretString::new("x");
    /// assert_eq!(s.expose(), "x");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    ///
    /// ```
    /// assert!(cqrs_vault::SecretString::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString(value.to_owned())
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = SecretString::new("p@ss");
        assert!(!format!("{s:?}").contains("p@ss"));
        assert!(!format!("{:?}", Some(s.clone())).contains("p@ss"));
        let parsed: SecretString = serde_json::from_str("\"p@ss\"").unwrap();
        assert_eq!(parsed, s);
    }
}
