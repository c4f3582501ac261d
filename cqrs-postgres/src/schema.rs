//! Validated PostgreSQL identifiers: the service schema name and role names.
//!
//! A name reaches SQL only after it has been validated here, and then always as a quoted
//! identifier (`"orders"`), so it can neither inject SQL nor change meaning with case
//! folding.

use std::fmt;

use crate::error::PostgresError;

/// Checks `name` against the rules shared by schema and role names:
/// `^[a-z_][a-z0-9_]{0,62}$`, not starting with `pg_`, not `information_schema` or `public`.
fn validate(kind: &'static str, name: &str) -> Result<(), PostgresError> {
    let invalid = |reason: &'static str| {
        Err(PostgresError::InvalidIdentifier {
            kind,
            // The name is user input, not a secret; cap it so that a huge value cannot
            // flood logs. `{:?}` in the message escapes control characters.
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return invalid("must not be empty");
    };
    if bytes.len() > 63 {
        return invalid("must be at most 63 bytes long");
    }
    if !(first.is_ascii_lowercase() || *first == b'_') {
        return invalid("must start with a lowercase ASCII letter or '_'");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return invalid("may contain only lowercase ASCII letters, digits and '_'");
    }
    if name.starts_with("pg_") {
        return invalid("must not start with 'pg_' (reserved by PostgreSQL)");
    }
    if name == "information_schema" || name == "public" {
        return invalid("must not be a system or shared schema");
    }
    Ok(())
}

/// Quotes an already validated identifier. Validated names contain no `"`, but the
/// doubling keeps this function correct on its own.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The name of a service's schema, validated: `^[a-z_][a-z0-9_]{0,62}$`, not `pg_*`, not
/// `information_schema`, not `public`.
///
/// Every service owns one schema; all its tables live there.
///
/// ```
/// use cqrs_postgres::SchemaName;
///
/// let schema = SchemaName::new("orders").unwrap();
/// assert_eq!(schema.as_str(), "orders");
/// assert_eq!(schema.quoted(), "\"orders\"");
///
/// assert!(SchemaName::new("Orders").is_err());
/// assert!(SchemaName::new("orders; DROP TABLE x").is_err());
/// assert!(SchemaName::new("pg_catalog").is_err());
/// assert!(SchemaName::new("information_schema").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`PostgresError::InvalidIdentifier`] when the name breaks a rule.
    ///
    /// ```
    /// assert!(cqrs_postgres::SchemaName::new("orders").is_ok());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, PostgresError> {
        let name = name.into();
        validate("schema name", &name)?;
        Ok(SchemaName(name))
    }

    /// The plain name.
    ///
    /// ```
    /// # use cqrs_postgres::SchemaName;
    /// assert_eq!(SchemaName::new("billing").unwrap().as_str(), "billing");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier, ready to be put into a statement.
    ///
    /// ```
    /// # use cqrs_postgres::SchemaName;
    /// assert_eq!(SchemaName::new("billing").unwrap().quoted(), "\"billing\"");
    /// ```
    pub fn quoted(&self) -> String {
        quote(&self.0)
    }
}

impl fmt::Debug for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchemaName({:?})", self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SchemaName {
    type Err = PostgresError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchemaName::new(s)
    }
}

/// The name of a PostgreSQL role, validated with the same rules as [`SchemaName`].
///
/// ```
/// use cqrs_postgres::RoleName;
///
/// assert_eq!(RoleName::new("svc_orders").unwrap().quoted(), "\"svc_orders\"");
/// assert!(RoleName::new("pg_read_all_data").is_err());
/// assert!(RoleName::new("x\" SUPERUSER --").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`PostgresError::InvalidIdentifier`] when the name breaks a rule.
    ///
    /// ```
    /// assert!(cqrs_postgres::RoleName::new("svc_orders").is_ok());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, PostgresError> {
        let name = name.into();
        validate("role name", &name)?;
        Ok(RoleName(name))
    }

    /// The plain name.
    ///
    /// ```
    /// # use cqrs_postgres::RoleName;
    /// assert_eq!(RoleName::new("svc_orders").unwrap().as_str(), "svc_orders");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier.
    ///
    /// ```
    /// # use cqrs_postgres::RoleName;
    /// assert_eq!(RoleName::new("svc_orders").unwrap().quoted(), "\"svc_orders\"");
    /// ```
    pub fn quoted(&self) -> String {
        quote(&self.0)
    }
}

impl fmt::Debug for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleName({:?})", self.0)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Replaces `{{schema}}` in an SQL template with the quoted schema identifier.
pub(crate) fn render(template: &str, schema: &SchemaName) -> String {
    template.replace("{{schema}}", &schema.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "_", "orders", "svc_orders_2", "_x9", &"a".repeat(63)] {
            assert!(SchemaName::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "Orders",
            "9lives",
            "or-ders",
            "or ders",
            "orders;drop",
            "\"orders\"",
            "ordérs",
            "pg_temp",
            "pg_",
            "information_schema",
            "public",
            "a\0b",
            long.as_str(),
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad:?} should be invalid");
            assert!(RoleName::new(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn error_message_is_bounded() {
        let huge = "X".repeat(10_000);
        let message = SchemaName::new(huge).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn render_substitutes_quoted_schema() {
        let schema = SchemaName::new("orders").unwrap();
        assert_eq!(
            render("SELECT 1 FROM {{schema}}.events", &schema),
            "SELECT 1 FROM \"orders\".events"
        );
    }
}
