//! Database credentials, read by the pool every time it opens a connection.
//!
//! The pool never keeps a user name or password of its own: it asks its
//! [`CredentialProvider`] for the current [`Credentials`] whenever it opens a new
//! connection. A provider whose credentials change at run time (a Vault lease being
//! rotated) therefore switches the pool over without a restart; see
//! [`SwappableCredentials`] and [`PgPool::retire_connections`](crate::PgPool::retire_connections).

use std::fmt;
use std::sync::{Arc, RwLock};

/// Passwords are [`cqrs_core::Secret`]s: redacted `Debug`, no `Display`, so they cannot
/// end up in a log line or an error message by accident.
pub use cqrs_core::Secret;

/// A user name and an optional password.
///
/// ```
/// use cqrs_postgres::Credentials;
///
/// let creds = Credentials::new("svc_orders", Some("s3cret".into()));
/// assert_eq!(creds.user, "svc_orders");
/// assert!(!format!("{creds:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Credentials {
    /// Role to log in as.
    pub user: String,
    /// Its password, if the server asks for one.
    pub password: Option<Secret>,
}

impl Credentials {
    /// Builds credentials.
    ///
    /// ```
    /// let creds = cqrs_postgres::Credentials::new("app", None);
    /// assert_eq!(creds.user, "app");
    /// ```
    pub fn new(user: impl Into<String>, password: Option<Secret>) -> Self {
        Credentials {
            user: user.into(),
            password,
        }
    }
}

/// Where the pool gets the credentials for each new connection.
///
/// Called once per connection the pool opens (not per command), so it must be cheap and
/// must not block: keep the current credentials in memory and refresh them elsewhere.
///
/// ```
/// use cqrs_postgres::{CredentialProvider, Credentials};
///
/// #[derive(Debug)]
/// struct FromEnv;
///
/// impl CredentialProvider for FromEnv {
///     fn credentials(&self) -> Credentials {
///         let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
///         let password = std::env::var("PGPASSWORD").ok().map(Into::into);
///         Credentials::new(user, password)
///     }
/// }
/// ```
pub trait CredentialProvider: Send + Sync + fmt::Debug + 'static {
    /// The credentials to open the next connection with.
    fn credentials(&self) -> Credentials;
}

impl<T: CredentialProvider + ?Sized> CredentialProvider for Arc<T> {
    fn credentials(&self) -> Credentials {
        (**self).credentials()
    }
}

/// Credentials that never change.
///
/// ```
/// use cqrs_postgres::{CredentialProvider, Credentials, StaticCredentials};
///
/// let provider = StaticCredentials::new(Credentials::new("app", None));
/// assert_eq!(provider.credentials().user, "app");
/// ```
#[derive(Debug, Clone)]
pub struct StaticCredentials(Credentials);

impl StaticCredentials {
    /// Wraps fixed credentials.
    ///
    /// ```
    /// use cqrs_postgres::{Credentials, StaticCredentials};
    /// let provider = StaticCredentials::new(Credentials::new("app", None));
    /// ```
    pub fn new(credentials: Credentials) -> Self {
        StaticCredentials(credentials)
    }
}

impl CredentialProvider for StaticCredentials {
    fn credentials(&self) -> Credentials {
        self.0.clone()
    }
}

/// Credentials that can be replaced while the pool runs: new connections use the new
/// ones at once; call [`PgPool::retire_connections`](crate::PgPool::retire_connections) to
/// also replace the connections opened with the old ones.
///
/// This is the hook for leased credentials (Vault/OpenBao): the lease manager calls
/// [`SwappableCredentials::replace`] when it obtains a new credential.
///
/// ```
/// use std::sync::Arc;
/// use cqrs_postgres::{CredentialProvider, Credentials, SwappableCredentials};
///
/// let creds = Arc::new(SwappableCredentials::new(Credentials::new("v-user-1", Some("p1".into()))));
/// creds.replace(Credentials::new("v-user-2", Some("p2".into())));
/// assert_eq!(creds.credentials().user, "v-user-2");
/// ```
#[derive(Debug)]
pub struct SwappableCredentials {
    current: RwLock<Credentials>,
}

impl SwappableCredentials {
    /// Starts with `initial`.
    ///
    /// ```
    /// use cqrs_postgres::{Credentials, SwappableCredentials};
    /// let creds = SwappableCredentials::new(Credentials::new("v-1", Some("p".into())));
    /// ```
    pub fn new(initial: Credentials) -> Self {
        SwappableCredentials {
            current: RwLock::new(initial),
        }
    }

    /// Replaces the credentials used for new connections.
    ///
    /// ```
    /// use cqrs_postgres::{CredentialProvider, Credentials, SwappableCredentials};
    /// let creds = SwappableCredentials::new(Credentials::new("v-1", None));
    /// creds.replace(Credentials::new("v-2", None));
    /// assert_eq!(creds.credentials().user, "v-2");
    /// ```
    pub fn replace(&self, credentials: Credentials) {
        // A poisoned lock only means a panic elsewhere while holding it; the value is
        // a plain struct that is always consistent, so keep using it.
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = credentials;
    }
}

impl CredentialProvider for SwappableCredentials {
    fn credentials(&self) -> Credentials {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
