//! W3C trace context carried from a command to its events, the outbox and the read side.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated W3C `traceparent` (and optional `tracestate`).
///
/// Carried on commands and events so that one trace runs from the command to the
/// read-model write. Only the W3C format is accepted, so a malformed header is rejected
/// when the command is built instead of poisoning downstream consumers.
///
/// ```
/// use cqrs_core::TraceContext;
///
/// let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None).unwrap();
/// assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(TraceContext::parse("garbage", None).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

/// A `traceparent` or `tracestate` that does not follow the W3C format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid W3C trace context: {reason}")]
pub struct InvalidTraceContext {
    reason: &'static str,
}

impl TraceContext {
    /// Validates and wraps a `traceparent` header value and an optional `tracestate`.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, InvalidTraceContext> {
        let err = |reason| Err(InvalidTraceContext { reason });
        let parts: Vec<&str> = traceparent.split('-').collect();
        if parts.len() != 4 {
            return err("traceparent must have 4 dash-separated fields");
        }
        let lengths = [2, 32, 16, 2];
        for (part, len) in parts.iter().zip(lengths) {
            if part.len() != len
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return err("traceparent fields must be lowercase hex of lengths 2-32-16-2");
            }
        }
        if parts[0] == "ff" {
            return err("traceparent version ff is invalid");
        }
        if parts[1].bytes().all(|b| b == b'0') || parts[2].bytes().all(|b| b == b'0') {
            return err("trace id and parent id must not be all zeros");
        }
        if let Some(state) = tracestate
            && (state.len() > 512 || !state.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return err("tracestate must be at most 512 printable ASCII characters");
        }
        Ok(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.map(str::to_owned),
        })
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` header value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        // Proven invariant: `parse` checked the layout 2-32-16-2.
        &self.traceparent[3..35]
    }

    /// The 16-hex-digit parent span id.
    pub fn span_id(&self) -> &str {
        &self.traceparent[36..52]
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent)
    }
}
