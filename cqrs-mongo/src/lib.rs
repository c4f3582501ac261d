//! cqrs-mongo (work in progress).
