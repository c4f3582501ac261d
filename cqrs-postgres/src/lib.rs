//! cqrs-postgres (work in progress).
