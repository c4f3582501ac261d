//! Upcasting: turning an event stored in an old schema version into the current one.

use std::{collections::HashMap, fmt, sync::Arc};

use serde_json::Value;

use crate::event::{DomainEvent, EventEnvelope, EventMetadata};
use crate::store::StoreError;

/// An event as stored: type, schema version and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub event_version: u32,
    /// The payload in that version.
    pub payload: Value,
}

/// Converts one stored event version into a newer one.
///
/// An upcaster is registered for one `(event type, version)` pair and must return a raw
/// event of a higher version (it may also rename the type). [`Upcasters`] chains them
/// until no upcaster matches, so `v1 -> v2 -> v3` needs two small upcasters.
pub trait Upcaster: Send + Sync {
    /// The event type this upcaster reads.
    fn event_type(&self) -> &str;
    /// The version it reads.
    fn source_version(&self) -> u32;
    /// Converts the event. Fails with a message when the payload is not what it expects.
    fn upcast(&self, event: RawEvent) -> Result<RawEvent, String>;
}

/// An upcaster made from a closure over the payload; it raises the version by one.
struct FnUpcaster<F> {
    event_type: String,
    from_version: u32,
    f: F,
}

impl<F> Upcaster for FnUpcaster<F>
where
    F: Fn(Value) -> Result<Value, String> + Send + Sync,
{
    fn event_type(&self) -> &str {
        &self.event_type
    }

    fn source_version(&self) -> u32 {
        self.from_version
    }

    fn upcast(&self, event: RawEvent) -> Result<RawEvent, String> {
        Ok(RawEvent {
            event_type: event.event_type,
            event_version: self.from_version + 1,
            payload: (self.f)(event.payload)?,
        })
    }
}

/// Failure to bring a stored event to the current version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The upcaster rejected the payload.
    #[error("upcasting {event_type} v{version} failed: {message}")]
    Failed {
        /// Event type that was being upcast.
        event_type: String,
        /// Version that was being upcast.
        version: u32,
        /// What the upcaster said.
        message: String,
    },
    /// An upcaster returned a version that is not higher than its input.
    #[error("upcaster for {event_type} v{version} did not raise the version")]
    NoProgress {
        /// Event type.
        event_type: String,
        /// Version.
        version: u32,
    },
}

/// The registry of upcasters a store applies when it reads events.
///
/// ```
/// use cqrs_core::{RawEvent, Upcasters};
/// use serde_json::json;
///
/// let upcasters = Upcasters::new()
///     // v1 stored the amount in whole euros, v2 in cents.
///     .register_fn("MoneyDeposited", 1, |mut p| {
///         let euros = p["amount"].as_u64().ok_or("amount missing")?;
///         p["amount"] = json!(euros * 100);
///         Ok(p)
///     });
/// let old = RawEvent { event_type: "MoneyDeposited".into(), event_version: 1, payload: json!({"amount": 5}) };
/// let new = upcasters.upcast(old).unwrap();
/// assert_eq!(new.event_version, 2);
/// assert_eq!(new.payload, json!({"amount": 500}));
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    by_key: HashMap<(String, u32), Arc<dyn Upcaster>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.by_key.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters")
            .field("registered", &keys)
            .finish()
    }
}

impl Upcasters {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an upcaster, replacing any for the same type and version.
    pub fn register(mut self, upcaster: impl Upcaster + 'static) -> Self {
        let key = (upcaster.event_type().to_owned(), upcaster.source_version());
        self.by_key.insert(key, Arc::new(upcaster));
        self
    }

    /// Registers a closure that converts the payload of `event_type` at `from_version`
    /// into the payload of `from_version + 1`.
    pub fn register_fn<F>(self, event_type: &str, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.register(FnUpcaster {
            event_type: event_type.to_owned(),
            from_version,
            f,
        })
    }

    /// True when no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Applies upcasters until none matches the event's type and version.
    pub fn upcast(&self, mut event: RawEvent) -> Result<RawEvent, UpcastError> {
        while let Some(upcaster) = self
            .by_key
            .get(&(event.event_type.clone(), event.event_version))
        {
            let (event_type, version) = (event.event_type.clone(), event.event_version);
            event = upcaster
                .upcast(event)
                .map_err(|message| UpcastError::Failed {
                    event_type: event_type.clone(),
                    version,
                    message,
                })?;
            if event.event_version <= version {
                return Err(UpcastError::NoProgress {
                    event_type,
                    version,
                });
            }
        }
        Ok(event)
    }

    /// Upcasts a stored event and decodes it into the aggregate's event type.
    ///
    /// The returned metadata carries the type and version after upcasting.
    pub fn decode<E: DomainEvent>(
        &self,
        mut metadata: EventMetadata,
        payload: Value,
    ) -> Result<EventEnvelope<E>, StoreError> {
        let raw = self.upcast(RawEvent {
            event_type: std::mem::take(&mut metadata.event_type),
            event_version: metadata.event_version,
            payload,
        })?;
        // The path names the field that does not fit (`amount.cents`), not just its type.
        let payload = serde_path_to_error::deserialize(raw.payload).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!(" (field `{path}`)")
            };
            StoreError::Deserialize {
                what: format!(
                    "event {} v{} #{} of {} {}{field}",
                    raw.event_type,
                    raw.event_version,
                    metadata.sequence,
                    metadata.aggregate_type,
                    metadata.aggregate_id
                ),
                source: e.into_inner(),
            }
        })?;
        metadata.event_type = raw.event_type;
        metadata.event_version = raw.event_version;
        Ok(EventEnvelope { metadata, payload })
    }
}
