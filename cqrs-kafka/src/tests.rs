//! The loop without a broker: records from an in-memory stream, offsets into a recorder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consumer::drive;
use crate::dispatch::PartitionFlow;
use crate::offsets::{OffsetSink, Offsets};
use crate::{BatchSettings, Halt, Handler, LoopConfig, LoopError, LoopStatus, Record};

/// Records what the loop stores and commits.
#[derive(Default)]
struct Recorder {
    stored: Mutex<Vec<Offsets>>,
    commits: Mutex<usize>,
}

impl Recorder {
    /// The highest offset stored per partition.
    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.stored
            .lock()
            .unwrap()
            .iter()
            .filter_map(|o| o.get(&(topic.to_owned(), partition)).copied())
            .max()
    }
}

impl OffsetSink for Recorder {
    fn store(&self, offsets: &Offsets) -> Result<(), KafkaError> {
        self.stored.lock().unwrap().push(offsets.clone());
        Ok(())
    }
    fn commit(&self) -> Result<(), KafkaError> {
        *self.commits.lock().unwrap() += 1;
        Ok(())
    }
}

/// A stream has nothing to pause: the held records are all it holds back.
struct Unpaused;

impl PartitionFlow for Unpaused {
    fn pause(&self, _: &str, _: i32) -> Result<(), KafkaError> {
        Ok(())
    }
    fn resume(&self, _: &str, _: i32) -> Result<(), KafkaError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("poison at {0}")]
struct Poison(String);

/// Keeps every batch it sees; halts at a record whose value is `poison`, and waits for
/// shutdown at a record whose value is `stuck`.
#[derive(Default, Clone)]
struct Keep {
    batches: Arc<Mutex<Vec<Vec<Record>>>>,
}

impl Handler for Keep {
    type Error = Poison;
    async fn handle(&self, batch: &[Record], stop: &CancellationToken) -> Result<(), Halt<Poison>> {
        self.batches.lock().unwrap().push(batch.to_vec());
        for (i, r) in batch.iter().enumerate() {
            match r.value() {
                Some(b"poison") => return Err(Halt::failed(i, Poison(r.id()))),
                Some(b"stuck") => {
                    stop.cancelled().await;
                    return Err(Halt::interrupted(i));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn record(partition: i32, offset: i64, value: &str) -> Result<Record, KafkaError> {
    Ok(Record::new("t", partition, offset).with_value(value.as_bytes().to_vec()))
}

struct Run {
    feed: mpsc::UnboundedSender<Result<Record, KafkaError>>,
    stop: CancellationToken,
    recorder: Arc<Recorder>,
    status: Arc<LoopStatus>,
    done: tokio::task::JoinHandle<Result<(), LoopError<Poison>>>,
}

fn start(handler: Keep, config: LoopConfig) -> Run {
    let (feed, rx) = mpsc::unbounded_channel();
    let records = tokio_stream(rx);
    let stop = CancellationToken::new();
    let recorder = Arc::new(Recorder::default());
    let status = Arc::new(LoopStatus::default());
    let sink: Arc<dyn OffsetSink> = recorder.clone();
    let flow: Arc<dyn PartitionFlow> = Arc::new(Unpaused);
    let (s, st) = (stop.clone(), Arc::clone(&status));
    let done =
        tokio::spawn(async move { drive(records, sink, flow, handler, st, &config, s).await });
    Run {
        feed,
        stop,
        recorder,
        status,
        done,
    }
}

fn tokio_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = T> + Send>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

fn config(workers: usize, batch: usize) -> LoopConfig {
    LoopConfig::new(["t"])
        .with_workers(workers)
        .with_batch(BatchSettings::new(batch, Duration::from_millis(5)))
        .with_error_pause(Duration::from_millis(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_partition_reach_the_handler_in_order_and_offsets_follow() {
    let handler = Keep::default();
    let run = start(handler.clone(), config(3, 4));
    for offset in 0..20 {
        for partition in 0..4 {
            run.feed.send(record(partition, offset, "v")).unwrap();
        }
    }
    eventually("every record settled", || {
        (0..4).all(|p| run.recorder.position("t", p) == Some(20)) && run.status.in_flight() == 0
    })
    .await;
    run.stop.cancel();
    run.done.await.unwrap().unwrap();
    let batches = handler.batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| b.len() <= 4),
        "batches exceed max_size"
    );
    for partition in 0..4 {
        let seen: Vec<i64> = batches
            .iter()
            .flatten()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "partition {partition}");
    }
    assert_eq!(
        *run.recorder.commits.lock().unwrap(),
        1,
        "one commit at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_stored_only_after_the_handler_settled_the_batch() {
    let handler = Keep::default();
    let run = start(handler.clone(), config(1, 10));
    run.feed.send(record(0, 0, "v")).unwrap();
    run.feed.send(record(0, 1, "stuck")).unwrap();
    eventually("the stuck batch reached the handler", || {
        !handler.batches.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        run.recorder.position("t", 0),
        None,
        "nothing stored while the batch is in the handler"
    );
    assert_eq!(run.status.in_flight(), 2);
    run.stop.cancel();
    run.done.await.unwrap().unwrap();
    assert_eq!(
        run.recorder.position("t", 0),
        Some(1),
        "the record settled before the interruption is stored, the other is not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_halt_stores_what_settled_and_stops_the_loop_with_the_error() {
    let handler = Keep::default();
    let run = start(handler.clone(), config(2, 10));
    run.feed.send(record(0, 0, "v")).unwrap();
    run.feed.send(record(0, 1, "v")).unwrap();
    run.feed.send(record(0, 2, "poison")).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), run.done)
        .await
        .expect("the loop stops by itself")
        .unwrap();
    match result {
        Err(LoopError::Handler(Poison(id))) => assert_eq!(id, "t/0/2"),
        other => panic!("expected the poison error, got {other:?}"),
    }
    assert_eq!(run.recorder.position("t", 0), Some(2));
    assert_eq!(*run.recorder.commits.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_errors_pause_and_never_stop_the_loop() {
    let handler = Keep::default();
    let run = start(handler.clone(), config(1, 1));
    run.feed.send(Err(KafkaError::Canceled)).unwrap();
    run.feed.send(record(0, 0, "v")).unwrap();
    eventually("the record after the error", || {
        run.recorder.position("t", 0) == Some(1)
    })
    .await;
    run.stop.cancel();
    run.done.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_settles_what_was_queued_before_the_final_commit() {
    let handler = Keep::default();
    let run = start(handler.clone(), config(1, 2));
    for offset in 0..50 {
        run.feed.send(record(0, offset, "v")).unwrap();
    }
    eventually("all dispatched", || {
        run.status.in_flight() + handler.batches.lock().unwrap().len() > 0
    })
    .await;
    run.stop.cancel();
    run.done.await.unwrap().unwrap();
    // Whatever was dispatched before the stop settled; nothing stays in flight.
    assert_eq!(run.status.in_flight(), 0);
    let settled = run.recorder.position("t", 0).unwrap_or(0);
    let handled: usize = handler.batches.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(settled as usize, handled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_ahead_in_the_stream_does_not_hold_back_the_others() {
    // librdkafka hands out a fetch partition by partition: here partition 0's records,
    // more than its worker can queue, come before partition 1's, and its worker is stuck.
    let handler = Keep::default();
    let run = start(handler.clone(), config(2, 2));
    assert_ne!(crate::worker_of("t", 0, 2), crate::worker_of("t", 1, 2));
    run.feed.send(record(0, 0, "stuck")).unwrap();
    for offset in 1..30 {
        run.feed.send(record(0, offset, "v")).unwrap();
    }
    for offset in 0..5 {
        run.feed.send(record(1, offset, "v")).unwrap();
    }
    eventually("partition 1 settled behind the stuck partition 0", || {
        run.recorder.position("t", 1) == Some(5)
    })
    .await;
    assert_eq!(run.recorder.position("t", 0), None);
    run.stop.cancel();
    run.done.await.unwrap().unwrap();
}
