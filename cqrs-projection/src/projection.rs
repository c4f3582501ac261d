//! The projection traits a service implements, and their erased forms the sync-service runs.

use std::sync::Arc;

use cqrs_core::outbox::{IntegrationEvent, outbox_topic};
use cqrs_core::{Aggregate, Projection, ReadModel, Upcasters};
use cqrs_mongo::{GuardedWrite, MongoReadModel, MongoWrite};
use serde::de::DeserializeOwned;

use crate::change::Change;
use crate::error::ProjectionError;
use crate::event::{EVENTS_TABLE, EventChange};
use crate::outbox::OutboxChange;
use crate::state::{AGGREGATES_TABLE, StateChange};
use crate::write::Write;

/// A read model `Model` kept from the state of state-stored aggregate `Aggregate`.
///
/// ```
/// use cqrs_projection::{ProjectionError, StateChange, StateProjection, Write};
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
/// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
/// # impl cqrs_core::Aggregate for Account {
/// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
/// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
/// # }
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
/// impl cqrs_core::ReadModel for Balance {
///     type Id = String;
///     const COLLECTION: &'static str = "balances";
///     fn id(&self) -> String { self.id.clone() }
/// }
/// impl cqrs_mongo::MongoReadModel for Balance {}
///
/// struct Balances;
/// impl StateProjection for Balances {
///     type Aggregate = Account;
///     type Model = Balance;
///     fn project(&self, account: &StateChange<Account>) -> Result<Vec<Write<Balance>>, ProjectionError> {
///         let balance = Balance { id: account.aggregate_id.clone(), balance: account.state.balance };
///         Ok(vec![Write::upsert(balance)])
///     }
/// }
///
/// let writes = Balances.project(&StateChange::new("acc-1", 2, Account { balance: 70 })).unwrap();
/// assert_eq!(writes.len(), 1);
/// ```
pub trait StateProjection: Send + Sync + 'static {
    /// The aggregate whose state feeds the model.
    type Aggregate: Aggregate;
    /// The read model written.
    type Model: MongoReadModel;

    /// Stable name (metrics, dead letters); the model's collection by default.
    fn name(&self) -> &str {
        <Self::Model as ReadModel>::COLLECTION
    }

    /// The writes one state change asks for.
    fn project(
        &self,
        change: &StateChange<Self::Aggregate>,
    ) -> Result<Vec<Write<Self::Model>>, ProjectionError>;
}

/// The simplest state projection: a read model with one document per aggregate, rebuilt
/// from the aggregate's state at every change (and deleted with its row). Register it with
/// `SyncService::with_state_view::<Account, Balance>(schema)`.
///
/// ```
/// use cqrs_mongo::ReadModel;
/// use cqrs_projection::StateView;
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
/// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
/// # impl cqrs_core::Aggregate for Account {
/// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
/// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
/// # }
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize, ReadModel)]
/// #[read_model(collection = "balances")]
/// struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
///
/// impl StateView<Account> for Balance {
///     fn from_state(id: &str, account: &Account) -> Self {
///         Balance { id: id.to_owned(), balance: account.balance }
///     }
/// }
/// let view = cqrs_projection::state_view::<Account, Balance>("bank");
/// assert_eq!(view.tables(), ["bank.aggregates"]);
/// ```
pub trait StateView<A: Aggregate>: MongoReadModel {
    /// The document of aggregate `id` in `state`.
    fn from_state(id: &str, state: &A) -> Self;
}

struct ViewOf<A, M>(std::marker::PhantomData<fn() -> (A, M)>);

impl<A: Aggregate, M: StateView<A>> StateProjection for ViewOf<A, M>
where
    M::Id: From<String>,
{
    type Aggregate = A;
    type Model = M;

    fn project(&self, change: &StateChange<A>) -> Result<Vec<Write<M>>, ProjectionError> {
        if change.deleted {
            return Ok(vec![Write::delete(change.aggregate_id.clone())]);
        }
        Ok(vec![Write::upsert(M::from_state(
            &change.aggregate_id,
            &change.state,
        ))])
    }
}

/// A [`StateView`] of aggregate `A` in service schema `schema`, erased for the runtime.
pub fn state_view<A, M>(schema: &str) -> Arc<dyn ChangeProjection>
where
    A: Aggregate,
    M: StateView<A>,
    M::Id: From<String>,
{
    state(schema, ViewOf::<A, M>(std::marker::PhantomData))
}

/// A read model `Model` kept from the events of aggregate `Aggregate` (event-sourced, or
/// any aggregate whose events are stored).
///
/// ```
/// use cqrs_core::EventEnvelope;
/// use cqrs_mongo::Patch;
/// use cqrs_projection::{EventChange, EventProjection, ProjectionError, Write};
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account;
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum AccountEvent { Opened { owner: String } }
/// # impl cqrs_core::DomainEvent for AccountEvent { fn event_type(&self) -> &'static str { "AccountOpened" } }
/// # impl cqrs_core::Aggregate for Account {
/// #     const TYPE: &'static str = "Account"; type Command = (); type Event = AccountEvent; type Error = No;
/// #     fn handle(&self, _: &()) -> Result<Vec<AccountEvent>, No> { Ok(vec![]) } fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Owner { #[serde(rename = "_id")] id: String, owner: String }
/// # impl cqrs_core::ReadModel for Owner { type Id = String; const COLLECTION: &'static str = "owners"; fn id(&self) -> String { self.id.clone() } }
/// # impl cqrs_mongo::MongoReadModel for Owner {}
///
/// struct Owners;
/// impl EventProjection for Owners {
///     type Aggregate = Account;
///     type Model = Owner;
///     fn project(&self, e: &EventChange<AccountEvent>) -> Result<Vec<Write<Owner>>, ProjectionError> {
///         match e.payload() {
///             AccountEvent::Opened { owner } => Ok(vec![Write::patch(
///                 e.aggregate_id(),
///                 Patch::new().set("owner", owner),
///             )]),
///         }
///     }
/// }
/// ```
pub trait EventProjection: Send + Sync + 'static {
    /// The aggregate whose events feed the model.
    type Aggregate: Aggregate;
    /// The read model written.
    type Model: MongoReadModel;

    /// Stable name (metrics, dead letters); the model's collection by default.
    fn name(&self) -> &str {
        <Self::Model as ReadModel>::COLLECTION
    }

    /// Upcasters of stored event versions (none by default); asked once, at registration.
    fn upcasters(&self) -> Upcasters {
        Upcasters::new()
    }

    /// The writes one event asks for.
    fn project(
        &self,
        event: &EventChange<<Self::Aggregate as Aggregate>::Event>,
    ) -> Result<Vec<Write<Self::Model>>, ProjectionError>;
}

/// A read model `Model` kept from the integration events of another service, as its
/// transactional outbox publishes them (`outbox.event.<aggregate type>`).
///
/// ```
/// use cqrs_projection::{OutboxChange, OutboxProjection, ProjectionError, Write};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Shipment { #[serde(rename = "_id")] id: String, carrier: String }
/// # impl cqrs_core::ReadModel for Shipment { type Id = String; const COLLECTION: &'static str = "shipments"; fn id(&self) -> String { self.id.clone() } }
/// # impl cqrs_mongo::MongoReadModel for Shipment {}
/// #[derive(serde::Deserialize)]
/// struct Shipped { carrier: String }
///
/// struct Shipments;
/// impl OutboxProjection for Shipments {
///     type Payload = Shipped;
///     type Model = Shipment;
///     fn aggregate_type(&self) -> &str { "Parcel" }
///     fn accepts(&self, event_type: &str) -> bool { event_type == "ParcelShipped" }
///     fn project(&self, e: &OutboxChange<Shipped>) -> Result<Vec<Write<Shipment>>, ProjectionError> {
///         let id = e.event.aggregate_id.clone();
///         Ok(vec![Write::upsert(Shipment { id, carrier: e.payload.carrier.clone() })])
///     }
/// }
/// ```
pub trait OutboxProjection: Send + Sync + 'static {
    /// The payload type of the accepted events.
    type Payload: DeserializeOwned + Send + Sync;
    /// The read model written.
    type Model: MongoReadModel;

    /// Stable name (metrics, dead letters); the model's collection by default.
    fn name(&self) -> &str {
        <Self::Model as ReadModel>::COLLECTION
    }

    /// The aggregate type whose events it reads (topic `outbox.event.<type>`).
    fn aggregate_type(&self) -> &str;

    /// Whether events of `event_type` are projected (all by default); others are skipped
    /// before their payload is decoded.
    fn accepts(&self, event_type: &str) -> bool {
        let _ = event_type;
        true
    }

    /// The writes one event asks for.
    fn project(
        &self,
        event: &OutboxChange<Self::Payload>,
    ) -> Result<Vec<Write<Self::Model>>, ProjectionError>;
}

/// A projection of captured changes, erased: what the sync-service runs. Typed projections
/// become one with [`state`], [`events`] and [`raw`].
pub trait ChangeProjection: Send + Sync {
    /// Stable name.
    fn name(&self) -> &str;

    /// The tables (`schema.table`) it reads.
    fn tables(&self) -> &[String];

    /// The writes one change of one of its tables asks for.
    fn project(&self, change: &Change) -> Result<Vec<GuardedWrite>, ProjectionError>;
}

/// A projection of outbox events, erased.
pub trait OutboxHandler: Send + Sync {
    /// Stable name.
    fn name(&self) -> &str;

    /// The topics it reads.
    fn topics(&self) -> Vec<String>;

    /// The writes one event asks for.
    fn project(&self, event: &IntegrationEvent) -> Result<Vec<GuardedWrite>, ProjectionError>;
}

fn guarded<M: MongoReadModel>(
    writes: Vec<Write<M>>,
    position: cqrs_core::SourceVersion,
    origin: Option<cqrs_core::ConsistencyToken>,
) -> Result<Vec<GuardedWrite>, ProjectionError> {
    writes
        .into_iter()
        .map(|w| w.into_guarded(position, origin.clone()))
        .collect()
}

struct StateOf<P> {
    projection: P,
    tables: Vec<String>,
}

impl<P: StateProjection> ChangeProjection for StateOf<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn project(&self, change: &Change) -> Result<Vec<GuardedWrite>, ProjectionError> {
        let Some(state) = StateChange::<P::Aggregate>::from_change(change)? else {
            return Ok(Vec::new());
        };
        // A row deleted outside the toolkit carries no version: nothing to wait for.
        let origin = (!state.deleted).then(|| state.token());
        guarded(self.projection.project(&state)?, state.position, origin)
    }
}

/// A state projection reading `<schema>.aggregates`, erased for the runtime.
///
/// ```
/// # use cqrs_projection::{ProjectionError, StateChange, StateProjection, Write};
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Account { balance: i64 }
/// # #[derive(Debug, thiserror::Error)] #[error("no")] struct No;
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] struct Ev;
/// # impl cqrs_core::DomainEvent for Ev { fn event_type(&self) -> &'static str { "Ev" } }
/// # impl cqrs_core::Aggregate for Account {
/// #     const TYPE: &'static str = "Account"; type Command = (); type Event = Ev; type Error = No;
/// #     fn handle(&self, _: &()) -> Result<Vec<Ev>, No> { Ok(vec![]) } fn apply(&mut self, _: &Ev) {}
/// # }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Balance { #[serde(rename = "_id")] id: String, balance: i64 }
/// # impl cqrs_core::ReadModel for Balance { type Id = String; const COLLECTION: &'static str = "balances"; fn id(&self) -> String { self.id.clone() } }
/// # impl cqrs_mongo::MongoReadModel for Balance {}
/// # struct Balances;
/// # impl StateProjection for Balances {
/// #     type Aggregate = Account; type Model = Balance;
/// #     fn project(&self, a: &StateChange<Account>) -> Result<Vec<Write<Balance>>, ProjectionError> { Ok(vec![]) }
/// # }
/// let erased = cqrs_projection::state("bank", Balances);
/// assert_eq!(erased.tables(), ["bank.aggregates"]);
/// assert_eq!(erased.name(), "balances");
/// ```
pub fn state<P: StateProjection>(schema: &str, projection: P) -> Arc<dyn ChangeProjection> {
    Arc::new(StateOf {
        projection,
        tables: vec![format!("{schema}.{AGGREGATES_TABLE}")],
    })
}

struct EventsOf<P> {
    projection: P,
    upcasters: Upcasters,
    tables: Vec<String>,
}

impl<P: EventProjection> ChangeProjection for EventsOf<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn project(&self, change: &Change) -> Result<Vec<GuardedWrite>, ProjectionError> {
        let aggregate_type = <P::Aggregate as Aggregate>::TYPE;
        let Some(event) = EventChange::from_change(change, aggregate_type, &self.upcasters)? else {
            return Ok(Vec::new());
        };
        guarded(
            self.projection.project(&event)?,
            event.position,
            Some(event.token()),
        )
    }
}

/// An event projection reading `<schema>.events`, erased for the runtime.
pub fn events<P: EventProjection>(schema: &str, projection: P) -> Arc<dyn ChangeProjection> {
    Arc::new(EventsOf {
        upcasters: projection.upcasters(),
        projection,
        tables: vec![format!("{schema}.{EVENTS_TABLE}")],
    })
}

struct Raw<P> {
    projection: P,
    tables: Vec<String>,
}

impl<P> ChangeProjection for Raw<P>
where
    P: Projection<Input = Change, Write = MongoWrite>,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn tables(&self) -> &[String] {
        &self.tables
    }

    fn project(&self, change: &Change) -> Result<Vec<GuardedWrite>, ProjectionError> {
        self.projection
            .project(change)
            .map(|writes| writes.into_iter().map(GuardedWrite::new).collect())
            .map_err(ProjectionError::custom)
    }
}

/// A projection of raw changes (BSON rows of any captured table, writes built by hand),
/// erased for the runtime: for tables that are not the toolkit's own.
pub fn raw<P>(projection: P, tables: &[&str]) -> Arc<dyn ChangeProjection>
where
    P: Projection<Input = Change, Write = MongoWrite> + 'static,
{
    Arc::new(Raw {
        projection,
        tables: tables.iter().map(|t| (*t).to_owned()).collect(),
    })
}

struct OutboxOf<P>(P);

impl<P: OutboxProjection> OutboxHandler for OutboxOf<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn topics(&self) -> Vec<String> {
        vec![outbox_topic(self.0.aggregate_type())]
    }

    fn project(&self, event: &IntegrationEvent) -> Result<Vec<GuardedWrite>, ProjectionError> {
        if event.aggregate_type != self.0.aggregate_type() || !self.0.accepts(&event.event_type) {
            return Ok(Vec::new());
        }
        let change = OutboxChange::<P::Payload>::from_event(event.clone())?;
        guarded(
            self.0.project(&change)?,
            change.position(),
            Some(change.token()),
        )
    }
}

/// An outbox projection, erased for the runtime.
pub fn outbox<P: OutboxProjection>(projection: P) -> Arc<dyn OutboxHandler> {
    Arc::new(OutboxOf(projection))
}
