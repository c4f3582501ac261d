//! Dispatch: records from the consumer's one stream to the partition workers, without a
//! busy partition holding back the others.
//!
//! librdkafka hands out a fetch response partition by partition, so the stream can hold
//! thousands of records of one partition ahead of the next partition's. Waiting there for
//! room in that partition's worker queue would starve every other worker: measured on a
//! four-partition topic, the four partitions were handled one after the other, at the speed
//! of one worker whatever the number of workers. Instead, a record whose worker queue is
//! full is held back, and the stream goes on to the other partitions. A worker's held
//! records are bounded: at the bound, the partition is paused, librdkafka drops what it had
//! prefetched of it (its version barrier) and, once resumed, fetches again from the record
//! after the last one it handed out. Held records go to their worker, in order, as soon as
//! it has room, and a paused partition resumes when none of its records is left held.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{OwnedPermit, Sender};

use crate::{LoopStatus, Record, worker_of};

/// Pausing and resuming the fetch of one partition: the consumer's, or a test's.
pub(crate) trait PartitionFlow: Send + Sync {
    /// Stops fetching `partition`; what was prefetched of it is dropped.
    fn pause(&self, topic: &str, partition: i32) -> Result<(), KafkaError>;
    /// Fetches `partition` again from the record after the last one handed out.
    fn resume(&self, topic: &str, partition: i32) -> Result<(), KafkaError>;
}

fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// The consumer's pause and resume.
pub(crate) struct ConsumerFlow<C: ConsumerContext + 'static> {
    consumer: Arc<StreamConsumer<C>>,
    /// Partitions to wake the fetcher for, served by one thread (see `resume`).
    wake: std::sync::mpsc::SyncSender<(String, i32)>,
}

impl<C: ConsumerContext + 'static> ConsumerFlow<C> {
    pub(crate) fn new(consumer: Arc<StreamConsumer<C>>) -> Self {
        // A handful of wake-ups queued is plenty: one wakes the broker thread for all the
        // partitions it leads.
        let (wake, requests) = std::sync::mpsc::sync_channel::<(String, i32)>(8);
        let fetcher = Arc::clone(&consumer);
        // Ends when the flow (and with it the sender) is dropped.
        let spawned = std::thread::Builder::new()
            .name("cqrs-kafka-wake".into())
            .spawn(move || {
                for (topic, partition) in requests {
                    let _ = fetcher.fetch_watermarks(&topic, partition, Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to wake the fetcher after a resume");
        }
        ConsumerFlow { consumer, wake }
    }
}

impl<C: ConsumerContext + 'static> PartitionFlow for ConsumerFlow<C> {
    fn pause(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        Consumer::pause(&*self.consumer, &one(topic, partition))
    }

    fn resume(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        Consumer::resume(&*self.consumer, &one(topic, partition))?;
        // librdkafka serves a resume on the broker thread's next turn, and a broker thread
        // with every partition paused sleeps up to a second: measured, every worker idle
        // ~850 ms after each pause, half the throughput lost. A request to the partition's
        // leader wakes that thread; its answer does not matter. A full queue means wake-ups
        // are already on their way.
        let _ = self.wake.try_send((topic.to_owned(), partition));
        Ok(())
    }
}

/// The worker queues are gone: the loop is stopping.
#[derive(Debug)]
pub(crate) struct Closed;

/// One partition as the dispatcher sees it.
#[derive(Default)]
struct Lane {
    /// Records held back while the worker's queue is full, in order.
    held: VecDeque<Record>,
    /// The last offset taken from the stream: anything at or below it again is a
    /// duplicate of a record already dispatched or held.
    last: Option<i64>,
    /// Paused by us.
    paused: bool,
}

/// Room in worker `usize`'s queue, or the queue closed.
pub(crate) type Room = (usize, Result<OwnedPermit<Record>, SendError<()>>);

/// Routes records to workers, holding back those of partitions whose worker is full.
pub(crate) struct Dispatcher {
    senders: Vec<Sender<Record>>,
    lanes: HashMap<String, HashMap<i32, Lane>>,
    /// Held records per worker.
    held: Vec<usize>,
    /// Held records per worker beyond which its partitions are paused.
    hold_limit: usize,
    flow: Arc<dyn PartitionFlow>,
    status: Arc<LoopStatus>,
}

impl Dispatcher {
    /// A dispatcher over the workers' queues, holding up to `hold_limit` records per worker
    /// before it pauses partitions.
    pub(crate) fn new(
        senders: Vec<Sender<Record>>,
        hold_limit: usize,
        flow: Arc<dyn PartitionFlow>,
        status: Arc<LoopStatus>,
    ) -> Self {
        Dispatcher {
            held: vec![0; senders.len()],
            senders,
            lanes: HashMap::new(),
            hold_limit,
            flow,
            status,
        }
    }

    /// Records held back, waiting for room.
    pub(crate) fn held(&self) -> usize {
        self.held.iter().sum()
    }

    fn lane(&mut self, topic: &str, partition: i32) -> &mut Lane {
        // The topic's entry is created once; lookups by `&str` need no allocation.
        if !self.lanes.contains_key(topic) {
            self.lanes.insert(topic.to_owned(), HashMap::new());
        }
        self.lanes
            .get_mut(topic)
            .map(|partitions| partitions.entry(partition).or_default())
            // Inserted just above when missing.
            .unwrap_or_else(|| unreachable!("lane of {topic} inserted above"))
    }

    /// Hands `record` to its worker, or holds it back when the worker's queue is full or
    /// earlier records of the partition are held (pausing the partition at the bound).
    pub(crate) fn offer(&mut self, record: Record) -> Result<(), Closed> {
        let w = worker_of(&record.topic, record.partition, self.senders.len());
        let lane = self.lane(&record.topic, record.partition);
        if lane.last.is_some_and(|last| record.offset <= last) {
            tracing::debug!(record = %record.id(), "record delivered twice; dropped");
            return Ok(());
        }
        lane.last = Some(record.offset);
        if lane.held.is_empty() {
            // The permit ends its borrow of the sender before the lane is borrowed again.
            let full = match self.senders[w].try_reserve() {
                Ok(permit) => {
                    // Counted before the worker can settle it.
                    self.status.dispatched();
                    permit.send(record);
                    return Ok(());
                }
                Err(TrySendError::Full(())) => true,
                Err(TrySendError::Closed(())) => false,
            };
            if !full {
                return Err(Closed);
            }
        }
        self.held[w] += 1;
        let pause = self.held[w] >= self.hold_limit;
        let lane = self.lane(&record.topic, record.partition);
        let (topic, partition) = (record.topic.clone(), record.partition);
        lane.held.push_back(record);
        if pause && !lane.paused {
            lane.paused = true;
            if let Err(e) = self.flow.pause(&topic, partition) {
                // Not fatal: records of the partition keep coming and are held in order.
                tracing::warn!(error = %e, %topic, partition, "pausing a partition failed");
            }
        }
        Ok(())
    }

    /// Resolves when a worker that has records held for it gets room in its queue. Owns
    /// what it waits on, so the dispatcher stays free meanwhile.
    pub(crate) fn room(&self) -> impl Future<Output = Room> + Send + 'static {
        let waits: Vec<_> = (0..self.senders.len())
            .filter(|w| self.held[*w] > 0)
            .map(|w| {
                let sender = self.senders[w].clone();
                Box::pin(
                    async move { (w, sender.reserve_owned().await.map_err(|_| SendError(()))) },
                )
            })
            .collect();
        async move {
            if waits.is_empty() {
                return std::future::pending().await;
            }
            select_all(waits).await.0
        }
    }

    /// Moves held records to the worker that got room, as many as fit, and resumes the
    /// paused partitions left with none held.
    pub(crate) fn release(&mut self, (worker, permit): Room) -> Result<(), Closed> {
        let mut permit = Some(permit.map_err(|_| Closed)?);
        let workers = self.senders.len();
        let mut resumed = Vec::new();
        'lanes: for (topic, partitions) in &mut self.lanes {
            for (partition, lane) in partitions.iter_mut() {
                if lane.held.is_empty() || worker_of(topic, *partition, workers) != worker {
                    continue;
                }
                while let Some(record) = lane.held.pop_front() {
                    let reserved = match permit.take() {
                        Some(p) => Ok(p),
                        None => self.senders[worker].clone().try_reserve_owned(),
                    };
                    match reserved {
                        Ok(p) => {
                            self.status.dispatched();
                            p.send(record);
                            self.held[worker] -= 1;
                        }
                        Err(TrySendError::Full(_)) => {
                            lane.held.push_front(record);
                            break 'lanes;
                        }
                        Err(TrySendError::Closed(_)) => return Err(Closed),
                    }
                }
                if lane.paused {
                    lane.paused = false;
                    resumed.push((topic.clone(), *partition));
                }
            }
        }
        for (topic, partition) in resumed {
            if let Err(e) = self.flow.resume(&topic, partition) {
                // Revoked meanwhile: the next assignment starts it unpaused.
                tracing::debug!(error = %e, %topic, partition, "resuming a partition failed");
            }
        }
        Ok(())
    }

    /// Forgets the partitions the group took away: their held records are dropped
    /// unsettled (their next owner reads them again from the last commit), and a later
    /// assignment of the same partition starts afresh.
    pub(crate) fn forget(&mut self, revoked: &[(String, i32)]) {
        let workers = self.senders.len();
        for (topic, partition) in revoked {
            let lane = self
                .lanes
                .get_mut(topic)
                .and_then(|partitions| partitions.remove(partition));
            if let Some(lane) = lane.filter(|l| !l.held.is_empty()) {
                self.held[worker_of(topic, *partition, workers)] -= lane.held.len();
                tracing::info!(%topic, partition, records = lane.held.len(), "held records of a revoked partition dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// Records pauses and resumes.
    #[derive(Default)]
    struct Flow(Mutex<Vec<(bool, i32)>>);

    impl PartitionFlow for Flow {
        fn pause(&self, _: &str, partition: i32) -> Result<(), KafkaError> {
            self.0.lock().unwrap().push((true, partition));
            Ok(())
        }
        fn resume(&self, _: &str, partition: i32) -> Result<(), KafkaError> {
            self.0.lock().unwrap().push((false, partition));
            Ok(())
        }
    }

    fn rec(partition: i32, offset: i64) -> Record {
        Record::new("t", partition, offset)
    }

    /// Two workers with queues of 2; partition `p` goes to worker `worker_of("t", p, 2)`.
    fn dispatcher() -> (Dispatcher, Vec<mpsc::Receiver<Record>>, Arc<Flow>) {
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let (tx, rx) = mpsc::channel(2);
            senders.push(tx);
            receivers.push(rx);
        }
        let flow = Arc::new(Flow::default());
        let d = Dispatcher::new(senders, 2, flow.clone(), Arc::new(LoopStatus::default()));
        (d, receivers, flow)
    }

    fn drain(rx: &mut mpsc::Receiver<Record>) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push((r.partition, r.offset));
        }
        out
    }

    #[tokio::test]
    async fn a_full_worker_holds_back_only_its_own_partition() {
        let (mut d, mut rx, flow) = dispatcher();
        let (busy, free) = (0, 1);
        let (wb, wf) = (worker_of("t", busy, 2), worker_of("t", free, 2));
        assert_ne!(wb, wf, "the two partitions have their own workers");
        for offset in 0..5 {
            d.offer(rec(busy, offset)).unwrap();
        }
        // The other partition's records pass while the busy one waits.
        d.offer(rec(free, 0)).unwrap();
        d.offer(rec(free, 1)).unwrap();
        assert_eq!(d.held(), 3);
        assert_eq!(*flow.0.lock().unwrap(), [(true, busy)]);
        assert_eq!(drain(&mut rx[wf]), [(free, 0), (free, 1)]);
        // The worker takes its two records; the held ones follow in order.
        assert_eq!(drain(&mut rx[wb]), [(busy, 0), (busy, 1)]);
        let room = d.room().await;
        d.release(room).unwrap();
        assert_eq!(d.held(), 1);
        assert_eq!(drain(&mut rx[wb]), [(busy, 2), (busy, 3)]);
        let room = d.room().await;
        d.release(room).unwrap();
        assert_eq!(d.held(), 0);
        assert_eq!(drain(&mut rx[wb]), [(busy, 4)]);
        assert_eq!(*flow.0.lock().unwrap(), [(true, busy), (false, busy)]);
    }

    #[tokio::test]
    async fn records_of_a_held_partition_queue_behind_the_held_ones_and_duplicates_drop() {
        let (mut d, mut rx, _) = dispatcher();
        let w = worker_of("t", 0, 2);
        for offset in 0..3 {
            d.offer(rec(0, offset)).unwrap();
        }
        // Redelivered after the pause: dropped. New: queued behind the held record.
        d.offer(rec(0, 2)).unwrap();
        d.offer(rec(0, 3)).unwrap();
        assert_eq!(d.held(), 2);
        drain(&mut rx[w]);
        let room = d.room().await;
        d.release(room).unwrap();
        assert_eq!(drain(&mut rx[w]), [(0, 2), (0, 3)]);
    }

    #[tokio::test]
    async fn a_revoked_partition_drops_its_held_records_and_starts_afresh() {
        let (mut d, mut rx, _) = dispatcher();
        let w = worker_of("t", 0, 2);
        for offset in 0..4 {
            d.offer(rec(0, offset)).unwrap();
        }
        assert_eq!(d.held(), 2);
        d.forget(&[("t".to_owned(), 0)]);
        assert_eq!(d.held(), 0);
        drain(&mut rx[w]);
        // Assigned again: read again from the commit, offsets 0.. are not duplicates.
        d.offer(rec(0, 0)).unwrap();
        assert_eq!(drain(&mut rx[w]), [(0, 0)]);
    }

    #[tokio::test]
    async fn closed_queues_stop_the_dispatch() {
        let (mut d, rx, _) = dispatcher();
        drop(rx);
        assert!(d.offer(rec(0, 0)).is_err());
    }
}
