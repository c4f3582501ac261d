//! The pipeline's decisions on records built in memory, through in-memory sinks: order,
//! key hold-back, parked keys, dead letters, truncate floors, checkpoints, retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cqrs_core::SourceVersion;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{Stage, Status};
use crate::testing::{
    ORDERS, PROJECTION, TOPIC, delete, doc_id, fixture, poison, snapshot_read, tombstone, truncate,
    upsert,
};

fn id(offset: i64) -> String {
    format!("{TOPIC}/0/{offset}")
}

fn go() -> CancellationToken {
    CancellationToken::new()
}

#[tokio::test]
async fn changes_apply_in_order_and_a_redelivery_changes_nothing() {
    let f = fixture();
    let batch = [upsert(0, 1, 100), upsert(1, 2, 110), upsert(2, 1, 120)];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!(
        (report.applied, report.stale, report.dead_lettered),
        (3, 0, 0)
    );
    let version = |id: i32| f.store.with(|s| s.docs[&(ORDERS.to_owned(), doc_id(id))].0);
    assert_eq!(version(1), SourceVersion::new(120));
    assert_eq!(version(2), SourceVersion::new(110));

    let again = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!((again.applied, again.stale), (0, 3));
    assert_eq!(version(1), SourceVersion::new(120));
}

#[tokio::test]
async fn a_poison_record_parks_its_key_and_holds_back_its_later_changes() {
    let f = fixture();
    let batch = [poison(0, 1), upsert(1, 1, 110), upsert(2, 2, 120)];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (1, 2));
    f.letters.with(|l| {
        assert_eq!(l.letter(&id(0)), (Stage::Decode, None));
        assert_eq!(l.letter(&id(1)), (Stage::HeldBack, Some(id(0))));
        let published: Vec<i64> = l.published.iter().map(|(r, _)| r.offset).collect();
        assert_eq!(published, [0, 1], "dead letters go out in order");
    });
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(2)]);
    assert!(
        f.metrics
            .render()
            .contains(r#"sync_changes_dead_lettered_total{stage="held_back"} 1"#)
    );
}

#[tokio::test]
async fn a_key_parked_by_an_earlier_batch_is_held_back_behind_its_blocker() {
    let f = fixture();
    f.pipeline.process(&[poison(0, 1)], &go()).await.unwrap();
    let report = f
        .pipeline
        .process(&[upsert(1, 1, 110), upsert(2, 2, 120)], &go())
        .await
        .unwrap();
    assert_eq!((report.applied, report.dead_lettered), (1, 1));
    f.letters
        .with(|l| assert_eq!(l.letter(&id(1)), (Stage::HeldBack, Some(id(0)))));
}

#[tokio::test]
async fn a_key_an_operator_released_flows_at_the_next_record_without_a_refresh() {
    let f = fixture();
    f.pipeline.process(&[poison(0, 1)], &go()).await.unwrap();
    f.letters.with(|l| l.resolve(&id(0), Status::Skipped));
    let report = f
        .pipeline
        .process(&[upsert(1, 1, 110)], &go())
        .await
        .unwrap();
    assert_eq!((report.applied, report.dead_lettered), (1, 0));
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(1)]);
    f.letters.with(|l| {
        assert_eq!(
            l.published.len(),
            1,
            "the released key was not held back first"
        );
    });
}

#[tokio::test]
async fn records_held_back_behind_a_dead_letter_resolved_mid_batch_flow_in_the_same_call() {
    let f = fixture();
    f.pipeline.process(&[poison(0, 1)], &go()).await.unwrap();
    // The operator skips the blocker right after the batch's recheck saw it pending.
    f.letters.with(|l| {
        l.after_recheck = Some(Box::new(|l: &mut crate::testing::Letters| {
            l.resolve(&id(0), Status::Skipped)
        }))
    });
    let report = f
        .pipeline
        .process(&[upsert(1, 1, 110), upsert(2, 1, 120)], &go())
        .await
        .unwrap();
    assert_eq!((report.applied, report.dead_lettered), (2, 0));
    let version = f.store.with(|s| s.docs[&(ORDERS.to_owned(), doc_id(1))].0);
    assert_eq!(version, SourceVersion::new(120));
    f.letters.with(|l| {
        assert!(l.pending().is_empty(), "held-back records marked replayed");
        assert_eq!(l.records[&id(1)].status, Status::Replayed);
    });
    assert!(
        f.pipeline
            .dead_letters
            .parked(&crate::dead_letter::KeyRef::of(&upsert(3, 1, 130)))
            .is_none()
    );
}

#[tokio::test]
async fn a_write_the_store_refuses_is_dead_lettered_and_holds_back_the_documents_later_writes() {
    let f = fixture();
    f.store.with(|s| s.refuse.insert(doc_id(1)));
    let batch = [upsert(0, 1, 100), upsert(1, 1, 110), upsert(2, 2, 120)];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (1, 2));
    f.letters.with(|l| {
        assert_eq!(l.letter(&id(0)).0, Stage::Write);
        assert_eq!(l.letter(&id(1)), (Stage::HeldBack, Some(id(0))));
    });
    // The key stays parked for the next batch.
    f.store.with(|s| s.refuse.clear());
    let next = f
        .pipeline
        .process(&[upsert(3, 1, 130)], &go())
        .await
        .unwrap();
    assert_eq!(next.dead_lettered, 1);
}

#[tokio::test]
async fn a_store_outage_is_retried_until_it_answers() {
    let f = fixture();
    f.store.with(|s| s.fail_requests = 3);
    let report = f
        .pipeline
        .process(&[upsert(0, 1, 100)], &go())
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert!(f.pipeline.writer.is_healthy());
}

#[tokio::test]
async fn shutdown_during_an_outage_settles_nothing() {
    let f = fixture();
    f.pipeline.progress.assigned(&[(TOPIC.to_owned(), 0)]);
    f.store.with(|s| s.fail_requests = usize::MAX);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        stopper.cancel();
    });
    let batch = [upsert(0, 1, 100), poison(1, 2)];
    assert!(f.pipeline.process(&batch, &stop).await.is_err());
    assert!(!f.pipeline.writer.is_healthy());
    f.letters
        .with(|l| assert!(l.published.is_empty(), "no dead letter before the write"));
    assert!(f.store.with(|s| s.checkpoints.is_empty()));
    assert!(f.pipeline.progress.positions().is_empty());
}

#[tokio::test]
async fn a_dead_letter_path_outage_is_retried() {
    let f = fixture();
    f.letters.with(|l| l.fail_publishes = 2);
    let report = f.pipeline.process(&[poison(0, 1)], &go()).await.unwrap();
    assert_eq!(report.dead_lettered, 1);
    f.letters.with(|l| assert_eq!(l.published.len(), 1));
}

#[tokio::test]
async fn a_truncate_makes_older_writes_stale_whatever_partition_brings_them() {
    let f = fixture();
    f.pipeline
        .process(&[upsert(0, 1, 100), upsert(1, 2, 200)], &go())
        .await
        .unwrap();
    let report = f
        .pipeline
        .process(&[truncate(2, 150)], &go())
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(2)]);
    // An older insert of another partition, consumed after the truncate.
    let mut late = upsert(0, 3, 120);
    late.partition = 1;
    let report = f.pipeline.process(&[late], &go()).await.unwrap();
    assert_eq!((report.applied, report.stale), (0, 1));
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(2)]);
    // A replayed truncate changes nothing.
    let replay = f
        .pipeline
        .process(&[truncate(2, 150)], &go())
        .await
        .unwrap();
    assert_eq!((replay.applied, replay.stale), (0, 1));
}

#[tokio::test]
async fn a_truncate_applies_after_the_other_writes_of_its_batch() {
    let f = fixture();
    let batch = [upsert(0, 7, 400), truncate(1, 350), upsert(2, 9, 320)];
    f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(7)]);
}

#[tokio::test]
async fn a_floor_recorded_elsewhere_meanwhile_is_swept_behind_and_then_known() {
    let f = fixture();
    // Another instance records a truncate at 150 while this batch is being written.
    f.store.with(|s| {
        s.after_bulk = Some(Box::new(|s: &mut crate::testing::Store| {
            s.floors.insert(ORDERS.to_owned(), SourceVersion::new(150));
        }))
    });
    f.pipeline
        .process(&[upsert(0, 3, 120), upsert(1, 4, 300)], &go())
        .await
        .unwrap();
    assert_eq!(f.store.with(|s| s.live(ORDERS)), [doc_id(4)]);
    assert_eq!(
        f.pipeline.writer.floors().floor(ORDERS),
        Some(SourceVersion::new(150))
    );
    let bulks = f.store.with(|s| s.bulks);
    let report = f
        .pipeline
        .process(&[upsert(2, 5, 140)], &go())
        .await
        .unwrap();
    assert_eq!(report.stale, 1);
    assert!(
        f.store
            .with(|s| s.live(ORDERS) == [doc_id(4)] && s.bulks == bulks + 1)
    );
}

#[tokio::test]
async fn checkpoints_pass_every_settled_record_and_feed_the_progress_gauges() {
    let f = fixture();
    f.pipeline.progress.assigned(&[(TOPIC.to_owned(), 0)]);
    let batch = [upsert(0, 1, 100), delete(1, 1, 110), tombstone(2, 1)];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!(report.skipped, 1, "the tombstone");
    let partition = format!("{TOPIC}/0");
    let stored = f
        .store
        .with(|s| s.checkpoints[&(PROJECTION.to_owned(), partition.clone())]);
    assert_eq!(stored, 2, "the checkpoint passes the trailing tombstone");
    // A later batch with a poison record only: the checkpoint still moves past it.
    f.pipeline.process(&[poison(3, 2)], &go()).await.unwrap();
    let stored = f
        .store
        .with(|s| s.checkpoints[&(PROJECTION.to_owned(), partition.clone())]);
    assert_eq!(stored, 3);
    f.pipeline.progress.high_watermark(TOPIC, 0, 10);
    let text = f.metrics.render();
    let series = format!(r#"projection="{PROJECTION}",topic="{TOPIC}",partition="0""#);
    assert!(
        text.contains(&format!("sync_projection_offset{{{series}}} 3")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sync_projection_lag{{{series}}} 6")),
        "{text}"
    );
}

#[tokio::test]
async fn incremental_snapshot_rows_fill_in_and_never_block_what_follows() {
    let f = fixture();
    let state = |id: i32| {
        f.store
            .with(|s| s.docs.get(&(ORDERS.to_owned(), doc_id(id))).copied())
    };
    let batch = [
        upsert(0, 1, 100),
        delete(1, 2, 110),
        snapshot_read(2, 1),
        snapshot_read(3, 2),
        snapshot_read(4, 3),
    ];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!(
        (report.applied, report.stale, report.dead_lettered),
        (4, 1, 0)
    );
    assert_eq!(
        state(1),
        Some((SourceVersion::new(100), false)),
        "kept its version"
    );
    assert_eq!(
        state(2),
        Some((SourceVersion::new(110), true)),
        "stays deleted"
    );
    assert_eq!(
        state(3),
        Some((SourceVersion::ZERO, false)),
        "created at the lowest version"
    );

    // A change after the snapshot row applies whatever its (lower) position.
    let report = f
        .pipeline
        .process(&[upsert(5, 3, 50)], &go())
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(state(3), Some((SourceVersion::new(50), false)));

    // Behind a truncate floor a snapshot row fills at the floor, not below it.
    let batch = [truncate(6, 200), snapshot_read(7, 4), upsert(8, 5, 150)];
    let report = f.pipeline.process(&batch, &go()).await.unwrap();
    assert_eq!(state(4), Some((SourceVersion::new(200), false)));
    assert_eq!(state(5), None, "older than the floor");
    assert_eq!(report.dead_lettered, 0);
}

#[tokio::test]
async fn a_snapshot_row_takes_the_version_of_its_documents_last_change() {
    let f = fixture();
    f.pipeline
        .process(&[upsert(0, 7, 300), upsert(1, 8, 310)], &go())
        .await
        .unwrap();
    // From the store for 7 (changed in an earlier batch), from the batch for 8, none for 9.
    let batch = [
        snapshot_read(2, 7),
        upsert(3, 8, 320),
        snapshot_read(4, 8),
        snapshot_read(5, 9),
    ];
    f.pipeline.process(&batch, &go()).await.unwrap();
    let fills = f.store.with(|s| s.fills.clone());
    assert_eq!(
        fills,
        [
            (doc_id(7), SourceVersion::new(300)),
            (doc_id(8), SourceVersion::new(320)),
            (doc_id(9), SourceVersion::ZERO),
        ]
    );
}
