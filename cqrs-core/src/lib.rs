//! cqrs-core (work in progress).
