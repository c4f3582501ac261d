//! A projection crate as a service team writes one: its aggregate's state and events in,
//! typed read models out, unit-tested without any server. It depends on `cqrs-core`,
//! `cqrs-mongo` and `cqrs-projection` only; `tests/tests/light_dependencies.rs` checks that
//! its dependency tree holds no Kafka, HTTP or telemetry crate.

use cqrs_core::{Aggregate, DomainEvent, Rejected};
use cqrs_mongo::{Patch, ReadModel};
use cqrs_projection::{EventChange, EventProjection, ProjectionError, StateView, Write};
use serde::{Deserialize, Serialize};

/// A library loan: state-stored and evented.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Loan {
    /// Book.
    pub book: String,
    /// Returned yet.
    pub returned: bool,
}

/// What happens to a loan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum LoanEvent {
    /// Lent.
    Lent {
        /// Book.
        book: String,
    },
    /// Returned.
    Returned,
}

impl Aggregate for Loan {
    const TYPE: &'static str = "Loan";
    type Command = LoanEvent;
    type Event = LoanEvent;
    type Error = Rejected;

    fn handle(&self, command: &LoanEvent) -> Result<Vec<LoanEvent>, Rejected> {
        Ok(vec![command.clone()])
    }

    fn apply(&mut self, event: &LoanEvent) {
        match event {
            LoanEvent::Lent { book } => self.book = book.clone(),
            LoanEvent::Returned => self.returned = true,
        }
    }
}

/// One document per loan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "loans")]
pub struct LoanView {
    /// Loan id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Book.
    pub book: String,
    /// Out or back.
    pub out: bool,
}

impl StateView<Loan> for LoanView {
    fn from_state(id: &str, loan: &Loan) -> Self {
        LoanView {
            id: id.to_owned(),
            book: loan.book.clone(),
            out: !loan.returned,
        }
    }
}

/// How often each book was lent, from the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ReadModel)]
#[read_model(collection = "book_loans")]
pub struct BookLoans {
    /// Book.
    #[serde(rename = "_id")]
    pub book: String,
    /// The last loan.
    pub last_loan: String,
}

/// Projects `Lent` events into [`BookLoans`].
pub struct BookLoansProjection;

impl EventProjection for BookLoansProjection {
    type Aggregate = Loan;
    type Model = BookLoans;

    fn project(
        &self,
        e: &EventChange<LoanEvent>,
    ) -> Result<Vec<Write<BookLoans>>, ProjectionError> {
        Ok(match e.payload() {
            LoanEvent::Lent { book } => vec![Write::patch(
                book.clone(),
                Patch::new().set("last_loan", e.aggregate_id()),
            )],
            LoanEvent::Returned => vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{CommandMetadata, EventEnvelope, EventMetadata};
    use cqrs_projection::StateChange;

    use super::*;

    #[test]
    fn a_loan_view_mirrors_the_state() {
        let loan = Loan {
            book: "Dune".into(),
            returned: false,
        };
        let view = LoanView::from_state("l-1", &loan);
        assert!(view.out);
        let erased = cqrs_projection::state_view::<Loan, LoanView>("library");
        assert_eq!(erased.tables(), ["library.aggregates"]);
        let change = StateChange::new("l-1", 1, loan);
        assert_eq!(change.token().to_string(), "Loan:1:l-1");
    }

    #[test]
    fn lent_events_name_the_last_loan() {
        let metadata =
            EventMetadata::for_command(&CommandMetadata::new(), "Loan", "l-9", 1, "Lent", 1);
        let event = EventChange::new(EventEnvelope {
            metadata,
            payload: LoanEvent::Lent {
                book: "Dune".into(),
            },
        });
        let writes = BookLoansProjection.project(&event).unwrap();
        assert!(matches!(&writes[0], Write::Patch { id, .. } if id == "Dune"));
        assert_eq!(BookLoansProjection.name(), "book_loans");
    }
}
