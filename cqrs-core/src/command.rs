//! Command metadata: the ids that make a command idempotent and traceable.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::trace::TraceContext;

/// Metadata sent with every command.
///
/// The `command_id` makes the command idempotent: a command submitted twice with the same
/// id is applied once and the second call returns the first result. Give it a stable id
/// from the caller (an HTTP idempotency key, the id of the message being reacted to) when
/// retries can happen; [`CommandMetadata::new`] draws a fresh UUIDv7.
///
/// ```
/// use cqrs_core::CommandMetadata;
/// use uuid::Uuid;
///
/// let key = Uuid::now_v7();
/// let meta = CommandMetadata::new().with_command_id(key).with_tenant_id("acme");
/// assert_eq!(meta.command_id, key);
/// assert_eq!(meta.tenant_id.as_deref(), Some("acme"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMetadata {
    /// Idempotency key of the command.
    pub command_id: Uuid,
    /// Id shared by every command and event of one business flow; defaults to the command id.
    pub correlation_id: Uuid,
    /// Id of the event or command that caused this command, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Tenant the command acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// W3C trace context of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl CommandMetadata {
    /// Fresh metadata: a new UUIDv7 command id that also starts a new correlation.
    pub fn new() -> Self {
        let id = Uuid::now_v7();
        CommandMetadata {
            command_id: id,
            correlation_id: id,
            causation_id: None,
            tenant_id: None,
            trace_context: None,
        }
    }

    /// Uses `id` as the idempotency key. A correlation that was defaulted to the old
    /// command id follows the new one.
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        if self.correlation_id == self.command_id {
            self.correlation_id = id;
        }
        self.command_id = id;
        self
    }

    /// Joins an existing business flow.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = id;
        self
    }

    /// Records the event or command that caused this command.
    pub fn caused_by(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the tenant.
    pub fn with_tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// Sets the W3C trace context.
    pub fn with_trace_context(mut self, trace: TraceContext) -> Self {
        self.trace_context = Some(trace);
        self
    }
}

impl Default for CommandMetadata {
    fn default() -> Self {
        Self::new()
    }
}
