//! sync-service (work in progress).
