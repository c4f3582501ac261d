//! One batch of outbox records through the event handlers, in order: the part of the
//! runner behind the consumer loop, unit-tested on records built in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cqrs_core::backoff::Backoff;
use cqrs_kafka::{Halt, Handler, Record};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::{EventHandler, HandlerError};
use crate::runner::{PoisonPolicy, RunnerStats};

/// An event the runner cannot handle, under [`PoisonPolicy::Stop`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Poisoned(pub(crate) String);

/// The handlers of a runner, as the consumer loop's [`Handler`].
pub(crate) struct Reactions {
    pub(crate) handlers: Vec<Arc<dyn EventHandler>>,
    pub(crate) stats: RunnerStats,
    pub(crate) backoff: Backoff,
    pub(crate) poison: PoisonPolicy,
}

/// What became of one record.
enum Settled {
    Done,
    Interrupted,
    Poisoned(String),
}

impl Handler for Reactions {
    type Error = Poisoned;

    async fn handle(
        &self,
        batch: &[Record],
        stop: &CancellationToken,
    ) -> Result<(), Halt<Poisoned>> {
        for (i, record) in batch.iter().enumerate() {
            match self.settle(record, stop).await {
                Settled::Done => {}
                Settled::Interrupted => return Err(Halt::interrupted(i)),
                Settled::Poisoned(reason) => {
                    self.stats.0.poisoned.fetch_add(1, Ordering::Relaxed);
                    match self.poison {
                        PoisonPolicy::Skip => tracing::error!(
                            topic = %record.topic, partition = record.partition,
                            offset = record.offset, %reason, "event cannot be handled; skipped"
                        ),
                        PoisonPolicy::Stop => {
                            tracing::error!(%reason, "event cannot be handled; stopping");
                            return Err(Halt::failed(i, Poisoned(reason)));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Reactions {
    /// Decodes one record and runs every handler of its topic, retrying transient
    /// failures with backoff (the partition waits: order is kept) until shutdown.
    async fn settle(&self, record: &Record, stop: &CancellationToken) -> Settled {
        let event = match record.integration_event() {
            Ok(Some(event)) => event,
            Ok(None) => return Settled::Done,
            Err(e) => return Settled::Poisoned(e.to_string()),
        };
        for handler in &self.handlers {
            if !handler.topics().contains(&record.topic) {
                continue;
            }
            let mut retry = self.backoff.retry();
            loop {
                let span = tracing::debug_span!("handle", handler = handler.name(),
                    event_id = %event.event_id, event_type = %event.event_type,
                    aggregate_id = %event.aggregate_id);
                match handler.handle(&event).instrument(span).await {
                    Ok(handled) => {
                        tracing::debug!(handler = handler.name(), event_id = %event.event_id,
                            event_type = %event.event_type, ?handled, "event handled");
                        self.stats.count(&handled);
                        break;
                    }
                    Err(e @ HandlerError::Transient { .. }) => {
                        self.stats.0.retries.fetch_add(1, Ordering::Relaxed);
                        let delay = retry.next_delay();
                        tracing::warn!(error = %e, retry_in = ?delay, "transient failure; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return Settled::Interrupted,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    Err(e) => return Settled::Poisoned(e.to_string()),
                }
            }
        }
        self.stats.0.events.fetch_add(1, Ordering::Relaxed);
        Settled::Done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use cqrs_core::ConsistencyToken;
    use cqrs_core::outbox::IntegrationEvent;

    use super::*;
    use crate::handler::Handled;

    /// Answers each call with the next scripted result (then `Ignored`), recording the
    /// events it saw.
    struct Scripted {
        topic: String,
        script: Mutex<Vec<Result<(), &'static str>>>,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl EventHandler for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn topics(&self) -> Vec<String> {
            vec![self.topic.clone()]
        }
        async fn handle(&self, event: &IntegrationEvent) -> Result<Handled, HandlerError> {
            self.seen.lock().unwrap().push(event.aggregate_id.clone());
            let next = {
                let mut script = self.script.lock().unwrap();
                if script.is_empty() {
                    Ok(())
                } else {
                    script.remove(0)
                }
            };
            match next {
                Ok(()) => Ok(Handled::Executed {
                    command_id: uuid::Uuid::nil(),
                    deduplicated: false,
                    token: ConsistencyToken::new("Order", &event.aggregate_id, 1),
                }),
                Err("transient") => Err(HandlerError::Transient {
                    handler: "scripted".into(),
                    source: "database away".into(),
                }),
                Err(message) => Err(HandlerError::permanent("scripted", event, message)),
            }
        }
    }

    fn reactions(
        script: Vec<Result<(), &'static str>>,
        poison: PoisonPolicy,
    ) -> (Reactions, Arc<Scripted>) {
        let handler = Arc::new(Scripted {
            topic: "outbox.event.Order".into(),
            script: Mutex::new(script),
            seen: Mutex::default(),
        });
        let reactions = Reactions {
            handlers: vec![handler.clone() as Arc<dyn EventHandler>],
            stats: RunnerStats::default(),
            backoff: Backoff::exponential(Duration::from_millis(1), Duration::from_millis(4)),
            poison,
        };
        (reactions, handler)
    }

    fn event(topic: &str, offset: i64, aggregate: &str) -> Record {
        Record::new(topic, 0, offset)
            .with_key(aggregate.as_bytes().to_vec())
            .with_value(br#"{"total":5}"#.to_vec())
            .with_header("id", Some(uuid::Uuid::now_v7().to_string().into_bytes()))
            .with_header("eventType", Some(b"OrderPlaced".to_vec()))
    }

    #[tokio::test]
    async fn transient_failures_are_retried_in_place_so_order_is_kept() {
        let (r, h) = reactions(
            vec![Err("transient"), Err("transient"), Ok(())],
            PoisonPolicy::Skip,
        );
        let batch = [
            event("outbox.event.Order", 0, "o-1"),
            event("outbox.event.Order", 1, "o-2"),
        ];
        r.handle(&batch, &CancellationToken::new()).await.unwrap();
        assert_eq!(*h.seen.lock().unwrap(), ["o-1", "o-1", "o-1", "o-2"]);
        assert_eq!(
            (r.stats.retries(), r.stats.executed(), r.stats.events()),
            (2, 2, 2)
        );
    }

    #[tokio::test]
    async fn poison_events_are_skipped_and_counted_under_skip() {
        let (r, h) = reactions(vec![Err("bad payload")], PoisonPolicy::Skip);
        let undecodable = Record::new("outbox.event.Order", 0, 0).with_value(b"{}".to_vec());
        let batch = [
            undecodable,
            event("outbox.event.Order", 1, "o-1"),
            event("outbox.event.Order", 2, "o-2"),
        ];
        r.handle(&batch, &CancellationToken::new()).await.unwrap();
        assert_eq!(
            r.stats.poisoned(),
            2,
            "the record without key and the refused event"
        );
        assert_eq!(*h.seen.lock().unwrap(), ["o-1", "o-2"]);
    }

    #[tokio::test]
    async fn a_poison_event_stops_under_stop_with_the_events_before_it_settled() {
        let (r, _) = reactions(vec![Ok(()), Err("bad payload")], PoisonPolicy::Stop);
        let batch = [
            event("outbox.event.Order", 0, "o-1"),
            event("outbox.event.Order", 1, "o-2"),
            event("outbox.event.Order", 2, "o-3"),
        ];
        let halt = r
            .handle(&batch, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(halt.settled, 1);
        assert!(halt.error.unwrap().0.contains("bad payload"));
    }

    #[tokio::test]
    async fn shutdown_during_a_retry_interrupts_before_the_failing_event() {
        let (r, _) = reactions(
            vec![Ok(()); 1]
                .into_iter()
                .chain([Err("transient"); 50])
                .collect(),
            PoisonPolicy::Skip,
        );
        let stop = CancellationToken::new();
        let batch = [
            event("outbox.event.Order", 0, "o-1"),
            event("outbox.event.Order", 1, "o-2"),
        ];
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            stopper.cancel();
        });
        let halt = r.handle(&batch, &stop).await.unwrap_err();
        assert_eq!((halt.settled, halt.error.is_none()), (1, true));
    }

    #[tokio::test]
    async fn tombstones_and_other_topics_settle_without_running_the_handler() {
        let (r, h) = reactions(vec![], PoisonPolicy::Stop);
        let tombstone = Record::new("outbox.event.Order", 0, 0).with_key(b"o-1".to_vec());
        let batch = [tombstone, event("outbox.event.Invoice", 1, "i-1")];
        r.handle(&batch, &CancellationToken::new()).await.unwrap();
        assert!(h.seen.lock().unwrap().is_empty());
        assert_eq!(
            r.stats.events(),
            1,
            "the other topic's event settled with no handler"
        );
    }
}
