//! Versions on the read side and the token that lets a reader wait for its own writes.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The version a read-model write carries: where in the source the change came from.
///
/// Either an aggregate version (`position` = version, `index` = 0) or the position of a
/// change in a log, such as a PostgreSQL LSN plus the index of the write among those one
/// change produced. Versions order by `position`, then `index`; a read-model write applies
/// only when its version is newer than the stored one.
///
/// ```
/// use cqrs_core::SourceVersion;
///
/// assert!(SourceVersion::new(7) > SourceVersion::new(6));
/// assert!(SourceVersion::with_index(7, 1) > SourceVersion::new(7));
/// assert_eq!(SourceVersion::new(7).to_string(), "7");
/// assert_eq!(SourceVersion::with_index(7, 2).to_string(), "7.2");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct SourceVersion {
    /// Aggregate version or log position (LSN).
    pub position: u64,
    /// Order among the writes of one position.
    pub index: u32,
}

impl SourceVersion {
    /// Version zero: older than everything.
    pub const ZERO: SourceVersion = SourceVersion {
        position: 0,
        index: 0,
    };

    /// A version from an aggregate version or log position.
    pub const fn new(position: u64) -> Self {
        SourceVersion { position, index: 0 }
    }

    /// A version from a log position and the index of a write within it.
    pub const fn with_index(position: u64, index: u32) -> Self {
        SourceVersion { position, index }
    }
}

impl fmt::Display for SourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}.{}", self.position, self.index)
        }
    }
}

/// Returned by a command: lets a reader wait until the read side reflects the write.
///
/// It names the aggregate and the version the command produced. It renders as a short
/// string (`Order:3:order-17`) that can travel through HTTP headers and back.
///
/// ```
/// use cqrs_core::ConsistencyToken;
///
/// let token = ConsistencyToken::new("Order", "order:17", 3);
/// let text = token.to_string();
/// assert_eq!(text, "Order:3:order:17");
/// assert_eq!(text.parse::<ConsistencyToken>().unwrap(), token);
/// assert!("nonsense".parse::<ConsistencyToken>().is_err());
/// ```
///
/// `#[non_exhaustive]`: build it with [`ConsistencyToken::new`] or parse it, so that a
/// later field (a commit position, say) is not a breaking change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsistencyToken {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Aggregate version after the command.
    pub version: u64,
}

impl ConsistencyToken {
    /// Builds a token.
    pub fn new(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        version: u64,
    ) -> Self {
        ConsistencyToken {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            version,
        }
    }

    /// The read-side version a reader waits for.
    pub fn source_version(&self) -> SourceVersion {
        SourceVersion::new(self.version)
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.aggregate_type, self.version, self.aggregate_id
        )
    }
}

/// A string that is not a [`ConsistencyToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid consistency token {0:?}: expected <aggregate type>:<version>:<aggregate id>")]
pub struct InvalidToken(String);

impl FromStr for ConsistencyToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidToken(s.chars().take(80).collect());
        let mut parts = s.splitn(3, ':');
        let (Some(ty), Some(version), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        crate::aggregate::validate_type_name(ty).map_err(|_| invalid())?;
        crate::aggregate::validate_aggregate_id(id).map_err(|_| invalid())?;
        let version = version.parse().map_err(|_| invalid())?;
        Ok(ConsistencyToken::new(ty, id, version))
    }
}
