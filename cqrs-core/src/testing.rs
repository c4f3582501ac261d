//! A given/when/then test kit for aggregates: no store, no server, no runtime.

use std::fmt::Debug;
use std::marker::PhantomData;

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;

/// Entry point of the test kit: `given` past events, `when` a command, `then` expect.
///
/// Every event the aggregate emits is also round-tripped through its JSON form and
/// compared, so a serde attribute that loses data fails the test instead of production.
///
/// ```
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Counter { value: u64 }
/// # enum CounterCommand { Add(u64) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Added { by: u64 } }
/// # impl DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "CounterAdded" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # enum CounterError { #[error("cannot add zero")] Zero }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "Counter";
/// #     type Command = CounterCommand; type Event = CounterEvent; type Error = CounterError;
/// #     fn handle(&self, c: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
/// #         match c { CounterCommand::Add(0) => Err(CounterError::Zero), CounterCommand::Add(n) => Ok(vec![CounterEvent::Added { by: *n }]) }
/// #     }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Added { by } => self.value += by } }
/// # }
/// use cqrs_core::TestFramework;
///
/// TestFramework::<Counter>::new()
///     .given(vec![CounterEvent::Added { by: 1 }])
///     .when(CounterCommand::Add(2))
///     .then_expect_events(vec![CounterEvent::Added { by: 2 }]);
///
/// TestFramework::<Counter>::new()
///     .given_no_previous_events()
///     .when(CounterCommand::Add(0))
///     .then_expect_error(CounterError::Zero);
///
/// TestFramework::<Counter>::new()
///     .given(vec![CounterEvent::Added { by: 1 }])
///     .when(CounterCommand::Add(2))
///     .then_expect_state(|counter| assert_eq!(counter.value, 3));
/// ```
pub struct TestFramework<A> {
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Default for TestFramework<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> TestFramework<A> {
    /// Starts a scenario.
    pub fn new() -> Self {
        TestFramework {
            _aggregate: PhantomData,
        }
    }

    /// The aggregate is new.
    pub fn given_no_previous_events(self) -> Given<A> {
        self.given(Vec::new())
    }

    /// The aggregate has already seen `events`.
    pub fn given(self, events: Vec<A::Event>) -> Given<A> {
        let mut state = A::default();
        for event in &events {
            state.apply(event);
        }
        Given { state }
    }
}

/// A scenario with its past; see [`TestFramework`].
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Sends the command.
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = self.state.handle(&command);
        Then {
            state: self.state,
            result,
        }
    }
}

/// The outcome of a scenario; see [`TestFramework`].
pub struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the command produced exactly `expected`, and that each survives its JSON
    /// round trip.
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>)
    where
        A::Event: PartialEq,
    {
        let events = self.events_or_panic();
        assert_eq!(
            events, expected,
            "the command produced other events than expected"
        );
        assert_round_trips(&events);
    }

    /// Asserts the command was rejected with `expected`.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
    {
        match self.result {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(error, expected, "the command failed with another error"),
        }
    }

    /// Asserts the command was rejected with an error whose message is `expected`.
    #[track_caller]
    pub fn then_expect_error_message(self, expected: &str) {
        match self.result {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(error.to_string(), expected),
        }
    }

    /// Applies the produced events and hands the resulting state to `check`.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&A)) {
        let Then { mut state, result } = self;
        match result {
            Ok(events) => {
                assert_round_trips(&events);
                for event in &events {
                    state.apply(event);
                }
                check(&state);
            }
            Err(error) => panic!("expected events, but the command failed: {error}"),
        }
    }

    /// The raw result, for assertions the kit does not cover.
    pub fn inspect_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }

    #[track_caller]
    fn events_or_panic(self) -> Vec<A::Event> {
        match self.result {
            Ok(events) => events,
            Err(error) => panic!("expected events, but the command failed: {error}"),
        }
    }
}

#[track_caller]
fn assert_round_trips<E: DomainEvent>(events: &[E]) {
    for event in events {
        let json = serde_json::to_value(event)
            .unwrap_or_else(|e| panic!("event {} does not serialize: {e}", event.event_type()));
        let back: E = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
            panic!(
                "event {} does not deserialize from {json}: {e}",
                event.event_type()
            )
        });
        let again = serde_json::to_value(&back)
            .unwrap_or_else(|e| panic!("event {} does not serialize: {e}", event.event_type()));
        assert_eq!(
            json,
            again,
            "event {} changes in a JSON round trip",
            event.event_type()
        );
    }
}
