//! The state of a state-stored aggregate, from its row in `<schema>.aggregates`.

use cqrs_core::{Aggregate, ConsistencyToken, SourceVersion};

use crate::change::{Change, Op};
use crate::error::ProjectionError;
use crate::row::{Row, deserialize};

/// The table holding aggregate rows in a service schema (`cqrs-postgres`'s migrations).
pub const AGGREGATES_TABLE: &str = "aggregates";

/// A change of the state of aggregate `A`: one captured row of `<schema>.aggregates`.
///
/// `cqrs-postgres` keeps one row per aggregate: for state-stored aggregates the row holds
/// the whole state after every command, so a projection of `StateChange`s sees every
/// command's result. (Event-sourced aggregates keep only snapshots there: project their
/// events with [`EventChange`](crate::EventChange).)
///
/// ```
/// use cqrs_projection::StateChange;
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
/// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
/// # impl cqrs_core::Aggregate for Account {
/// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
/// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
/// # }
/// // In a projection's unit test:
/// let change = StateChange::new("acc-1", 3, Account { balance: 70 });
/// assert_eq!(change.token().to_string(), "Account:3:acc-1");
/// assert!(!change.deleted);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateChange<A> {
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Its version after the command (0 when the row was deleted: a delete carries only
    /// the key).
    pub version: u64,
    /// Its state, deserialized; `A::default()` when the row was deleted.
    pub state: A,
    /// The row was deleted (outside the toolkit: `cqrs-postgres` never deletes aggregates).
    pub deleted: bool,
    /// Where the change sits in the source (the WAL position): the version guarding the
    /// read-model writes made from it.
    pub position: SourceVersion,
}

impl<A: Aggregate> StateChange<A> {
    /// A change of aggregate `aggregate_id` at `version` (position = version), for tests.
    pub fn new(aggregate_id: impl Into<String>, version: u64, state: A) -> Self {
        StateChange {
            aggregate_id: aggregate_id.into(),
            version,
            state,
            deleted: false,
            position: SourceVersion::new(version),
        }
    }

    /// The token of the command that produced this state: what its caller waits for.
    pub fn token(&self) -> ConsistencyToken {
        ConsistencyToken::new(A::TYPE, &self.aggregate_id, self.version)
    }

    /// Decodes a captured row of `<schema>.aggregates`: `Ok(None)` for rows of other
    /// aggregate types (one table holds every aggregate type of a service) and for
    /// operations without a row (truncates, logical messages).
    ///
    /// A row whose state does not deserialize into `A`, or has none (an event-sourced
    /// aggregate), is an error: the runtime dead-letters the message.
    pub fn from_change(change: &Change) -> Result<Option<Self>, ProjectionError> {
        let deleted = match change.op {
            Op::Create | Op::Update | Op::Read => false,
            Op::Delete => true,
            Op::Truncate | Op::Message => return Ok(None),
        };
        let Some(image) = (if deleted {
            change.before.as_ref().or(change.key.as_ref())
        } else {
            change.after.as_ref()
        }) else {
            return Ok(None);
        };
        let row = Row::new(change, image);
        if row.str("aggregate_type")? != A::TYPE {
            return Ok(None);
        }
        let aggregate_id = row.str("aggregate_id")?.to_owned();
        if deleted {
            return Ok(Some(StateChange {
                aggregate_id,
                version: row.u64("version").unwrap_or(0),
                state: A::default(),
                deleted: true,
                position: change.version,
            }));
        }
        if change.unavailable.iter().any(|c| c == "state") {
            return Err(ProjectionError::Row {
                table: row.table.clone(),
                column: "state",
                message: "not sent (unchanged TOASTed value): use REPLICA IDENTITY FULL".into(),
            });
        }
        let version = row.u64("version")?;
        let Some(json) = row.json("state") else {
            return Err(ProjectionError::NoState {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id,
            });
        };
        let state = deserialize(json, "state", A::TYPE, &aggregate_id)?;
        Ok(Some(StateChange {
            aggregate_id,
            version,
            state,
            deleted: false,
            position: change.version,
        }))
    }
}
