//! Sagas: the steps of a business flow that one service takes in reaction to other
//! services' events, and the compensations it runs when a later step fails.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use cqrs_core::{Aggregate, AggregateStore, CommandHandler};

use crate::handler::{EventHandler, Handled, HandlerError, command_id, reaction_metadata};
use cqrs_core::outbox::{IntegrationEvent, outbox_topic};

/// A command for one aggregate instance, decided from an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<C> {
    /// Aggregate id the command runs on.
    pub aggregate_id: String,
    /// The command.
    pub command: C,
}

impl<C> Command<C> {
    /// `command` on aggregate `aggregate_id`.
    pub fn new(aggregate_id: impl Into<String>, command: C) -> Self {
        Command {
            aggregate_id: aggregate_id.into(),
            command,
        }
    }
}

/// Why a saga could not decide a command from an event: the event is malformed for this
/// step. Permanent (the runner reports it and moves on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SagaError(pub String);

impl From<serde_json::Error> for SagaError {
    fn from(e: serde_json::Error) -> Self {
        SagaError(format!("payload does not fit: {e}"))
    }
}

type Decide<C> =
    Box<dyn Fn(&IntegrationEvent) -> Result<Option<Command<C>>, SagaError> + Send + Sync>;
type OnRejected<A> = Box<
    dyn Fn(
            &IntegrationEvent,
            &<A as Aggregate>::Error,
        ) -> Option<Command<<A as Aggregate>::Command>>
        + Send
        + Sync,
>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Step,
    Compensation,
}

struct Route<A: Aggregate> {
    aggregate_type: String,
    event_type: String,
    kind: Kind,
    decide: Decide<A::Command>,
}

/// The reactions of one service, running commands on aggregates of type `A`.
///
/// * [`Saga::step`]: an event moves the flow forward (`OrderPlaced` -> reserve stock).
/// * [`Saga::compensate`]: an event reports that a later step failed, and a command
///   undoes or closes what this service did (`StockRejected` -> cancel the order).
/// * [`Saga::on_rejected`]: this service's own step is refused by its domain rules, and a
///   compensating command records the failure (which usually publishes the event other
///   services compensate on).
///
/// Every command gets an idempotency key derived from the saga name, the event id and
/// the route, so redelivered events never run a command twice.
///
/// ```
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Order { status: String }
/// # #[derive(Debug, Clone, PartialEq)] enum OrderCommand { Complete, Cancel { reason: String } }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum OrderEvent { Completed, Cancelled }
/// # impl DomainEvent for OrderEvent { fn event_type(&self) -> &'static str { "OrderEvent" } }
/// # #[derive(Debug, thiserror::Error)] #[error("refused")] struct OrderError;
/// # impl Aggregate for Order {
/// #     const TYPE: &'static str = "Order";
/// #     type Command = OrderCommand; type Event = OrderEvent; type Error = OrderError;
/// #     fn handle(&self, _: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &OrderEvent) {}
/// # }
/// use cqrs_saga::{Command, Saga};
///
/// #[derive(serde::Deserialize)]
/// struct StockRejected { order_id: String, reason: String }
///
/// let saga = Saga::<Order>::new("order-fulfilment")
///     .step("Invoice", "PaymentReceived", |e| {
///         let order_id = e.payload["order_id"].as_str().unwrap_or_default();
///         Ok(Some(Command::new(order_id, OrderCommand::Complete)))
///     })
///     .compensate("Warehouse", "StockRejected", |e| {
///         let r: StockRejected = e.payload_as()?;
///         Ok(Some(Command::new(r.order_id, OrderCommand::Cancel { reason: r.reason })))
///     });
/// assert_eq!(saga.topics(), vec!["outbox.event.Invoice", "outbox.event.Warehouse"]);
/// ```
pub struct Saga<A: Aggregate> {
    name: String,
    routes: Vec<Route<A>>,
    on_rejected: Option<OnRejected<A>>,
}

impl<A: Aggregate> fmt::Debug for Saga<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| format!("{:?} {}.{}", r.kind, r.aggregate_type, r.event_type))
                    .collect::<Vec<_>>(),
            )
            .field("on_rejected", &self.on_rejected.is_some())
            .finish()
    }
}

impl<A: Aggregate> Saga<A> {
    /// An empty saga named `name` (stable: it seeds the command ids).
    pub fn new(name: impl Into<String>) -> Self {
        Saga {
            name: name.into(),
            routes: Vec::new(),
            on_rejected: None,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the flow forward on `event_type` events of `aggregate_type` aggregates.
    /// `decide` returns the command to run, or `None` to ignore this event.
    pub fn step<F>(self, aggregate_type: &str, event_type: &str, decide: F) -> Self
    where
        F: Fn(&IntegrationEvent) -> Result<Option<Command<A::Command>>, SagaError>
            + Send
            + Sync
            + 'static,
    {
        self.route(aggregate_type, event_type, Kind::Step, Box::new(decide))
    }

    /// Compensates on `event_type` events of `aggregate_type` aggregates: a later step
    /// of the flow failed elsewhere.
    pub fn compensate<F>(self, aggregate_type: &str, event_type: &str, decide: F) -> Self
    where
        F: Fn(&IntegrationEvent) -> Result<Option<Command<A::Command>>, SagaError>
            + Send
            + Sync
            + 'static,
    {
        self.route(
            aggregate_type,
            event_type,
            Kind::Compensation,
            Box::new(decide),
        )
    }

    /// When a step's command is refused by the domain, runs the command `f` returns
    /// instead (for example one that records the failure and publishes it). Once it ran,
    /// a redelivery of the event never retries the step.
    pub fn on_rejected<F>(mut self, f: F) -> Self
    where
        F: Fn(&IntegrationEvent, &A::Error) -> Option<Command<A::Command>> + Send + Sync + 'static,
    {
        self.on_rejected = Some(Box::new(f));
        self
    }

    fn route(
        mut self,
        aggregate_type: &str,
        event_type: &str,
        kind: Kind,
        decide: Decide<A::Command>,
    ) -> Self {
        self.routes.push(Route {
            aggregate_type: aggregate_type.to_owned(),
            event_type: event_type.to_owned(),
            kind,
            decide,
        });
        self
    }

    /// The outbox topics of every aggregate type the saga listens to.
    pub fn topics(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| outbox_topic(&r.aggregate_type))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// Runs a [`Saga`]'s commands through a [`CommandHandler`]: the [`EventHandler`] the
/// runner drives.
///
/// ```no_run
/// # use cqrs_core::{Aggregate, DomainEvent, CommandHandler, InMemoryStore, PersistenceMode};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Order;
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] struct OrderEvent;
/// # impl DomainEvent for OrderEvent { fn event_type(&self) -> &'static str { "OrderEvent" } }
/// # #[derive(Debug, thiserror::Error)] #[error("refused")] struct OrderError;
/// # impl Aggregate for Order {
/// #     const TYPE: &'static str = "Order";
/// #     type Command = (); type Event = OrderEvent; type Error = OrderError;
/// #     fn handle(&self, _: &()) -> Result<Vec<OrderEvent>, OrderError> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &OrderEvent) {}
/// # }
/// use cqrs_saga::{Saga, SagaHandler};
/// let handler = CommandHandler::new(InMemoryStore::<Order>::new(PersistenceMode::StateStored));
/// let reactor = SagaHandler::new(Saga::<Order>::new("orders"), handler);
/// ```
pub struct SagaHandler<A: Aggregate, S> {
    saga: Saga<A>,
    commands: CommandHandler<A, S>,
}

impl<A: Aggregate, S> fmt::Debug for SagaHandler<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaHandler")
            .field("saga", &self.saga)
            .finish()
    }
}

impl<A, S> SagaHandler<A, S>
where
    A: Aggregate,
    S: AggregateStore<A> + 'static,
{
    /// Runs `saga` with `commands`.
    pub fn new(saga: Saga<A>, commands: CommandHandler<A, S>) -> Self {
        SagaHandler { saga, commands }
    }

    /// The command handler (to run commands outside of reactions).
    pub fn commands(&self) -> &CommandHandler<A, S> {
        &self.commands
    }

    async fn run(
        &self,
        event: &IntegrationEvent,
        step: &str,
        command: Command<A::Command>,
    ) -> Result<Result<(uuid::Uuid, bool, cqrs_core::ConsistencyToken), A::Error>, HandlerError>
    {
        let name = self.saga.name();
        let meta = reaction_metadata(name, event, step);
        let id = meta.command_id;
        let outcome = self
            .commands
            .execute(&command.aggregate_id, &command.command, meta)
            .await
            .map_err(|e| HandlerError::from_command(name, event, e))?;
        Ok(outcome.map(|o| (id, o.deduplicated, o.consistency_token().clone())))
    }
}

#[async_trait]
impl<A, S> EventHandler for SagaHandler<A, S>
where
    A: Aggregate,
    S: AggregateStore<A> + 'static,
{
    fn name(&self) -> &str {
        self.saga.name()
    }

    fn topics(&self) -> Vec<String> {
        self.saga.topics()
    }

    async fn handle(&self, event: &IntegrationEvent) -> Result<Handled, HandlerError> {
        let name = self.saga.name();
        let mut result = Handled::Ignored;
        for (index, route) in self.saga.routes.iter().enumerate() {
            if !event.is(&route.aggregate_type, &route.event_type) {
                continue;
            }
            let Some(command) =
                (route.decide)(event).map_err(|e| HandlerError::permanent(name, event, e.0))?
            else {
                continue;
            };
            let step = format!("{index}:{}", route.event_type);
            let rejected_step = format!("{step}:rejected");
            // A compensation recorded for this step earlier wins over a retried step.
            if route.kind == Kind::Step && self.saga.on_rejected.is_some() {
                let earlier = self
                    .commands
                    .store()
                    .find_receipt(command_id(name, event.event_id, &rejected_step))
                    .await
                    .map_err(|e| HandlerError::Transient {
                        handler: name.to_owned(),
                        source: Box::new(e),
                    })?;
                if let Some(receipt) = earlier {
                    result = Handled::Compensated {
                        command_id: receipt.command_id,
                        deduplicated: true,
                        token: receipt.consistency_token,
                        reason: "step refused earlier".into(),
                    };
                    continue;
                }
            }
            match self.run(event, &step, command).await? {
                Ok((command_id, deduplicated, token)) => {
                    result = match route.kind {
                        Kind::Step => Handled::Executed {
                            command_id,
                            deduplicated,
                            token,
                        },
                        Kind::Compensation => Handled::Compensated {
                            command_id,
                            deduplicated,
                            token,
                            reason: format!("{}.{}", event.aggregate_type, event.event_type),
                        },
                    };
                }
                Err(domain) => {
                    let reason = domain.to_string();
                    let compensation = match (route.kind, &self.saga.on_rejected) {
                        (Kind::Step, Some(f)) => f(event, &domain),
                        _ => None,
                    };
                    let Some(compensation) = compensation else {
                        tracing::warn!(saga = name, event_id = %event.event_id, %reason, "command refused");
                        result = Handled::Rejected { reason };
                        continue;
                    };
                    match self.run(event, &rejected_step, compensation).await? {
                        Ok((command_id, deduplicated, token)) => {
                            result = Handled::Compensated {
                                command_id,
                                deduplicated,
                                token,
                                reason,
                            };
                        }
                        Err(again) => {
                            result = Handled::Rejected {
                                reason: format!("{reason}; compensation refused too: {again}"),
                            };
                        }
                    }
                }
            }
        }
        Ok(result)
    }
}
