//! The parked keys over in-memory records, with the refresh race of commit 7fd42f9 played
//! deterministically (a refresh held between its query and its answer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::{DeadLetters, Failure, KeyRef, Stage, Status};
use crate::testing::{MemoryLetters, poison, upsert};

fn dead_letters() -> (DeadLetters, Arc<MemoryLetters>) {
    let letters = Arc::new(MemoryLetters::default());
    (DeadLetters::new(letters.clone(), letters.clone()), letters)
}

fn failure() -> Failure {
    Failure {
        stage: Stage::Decode,
        error: "corrupt".into(),
        behind: None,
    }
}

#[tokio::test]
async fn a_refresh_whose_query_ran_before_a_dead_letter_was_written_keeps_the_key_parked() {
    let (dead_letters, letters) = dead_letters();
    let record = poison(0, 1);
    let key = KeyRef::of(&record);
    // The periodic refresh reads the records (none pending yet) and is held there.
    let (reached, release) = letters.hold_next_refresh();
    let refreshing = {
        let dead_letters = dead_letters.clone();
        tokio::spawn(async move { dead_letters.refresh().await })
    };
    reached.await.unwrap();
    // Meanwhile a worker dead-letters a record of the key.
    dead_letters.send(&record, &failure()).await.unwrap();
    release.send(()).unwrap();
    refreshing.await.unwrap().unwrap();
    assert_eq!(
        dead_letters.parked(&key),
        Some(record.id()),
        "the stale refresh released a key parked after its query"
    );
    // The next refresh reads the record back: still parked. Once an operator resolves it,
    // a refresh releases it.
    assert_eq!(dead_letters.refresh().await.unwrap(), 1);
    letters.with(|l| l.resolve(&record.id(), Status::Skipped));
    assert_eq!(dead_letters.refresh().await.unwrap(), 0);
    assert_eq!(dead_letters.parked(&key), None);
}

#[tokio::test]
async fn a_recheck_releases_only_the_keys_an_operator_resolved() {
    let (dead_letters, letters) = dead_letters();
    let (a, b) = (poison(0, 1), poison(1, 2));
    dead_letters.send(&a, &failure()).await.unwrap();
    dead_letters.send(&b, &failure()).await.unwrap();
    letters.with(|l| l.resolve(&a.id(), Status::Replayed));
    let keys = [KeyRef::of(&a), KeyRef::of(&b)];
    let released = dead_letters.recheck(&keys).await.unwrap();
    assert_eq!(released, vec![KeyRef::of(&a)]);
    assert_eq!(dead_letters.parked(&KeyRef::of(&b)), Some(b.id()));
}

#[tokio::test]
async fn the_latest_dead_letter_of_a_key_is_its_blocker() {
    let (dead_letters, _) = dead_letters();
    let (first, second) = (poison(0, 1), upsert(5, 1, 100));
    dead_letters.send(&first, &failure()).await.unwrap();
    dead_letters.send(&second, &failure()).await.unwrap();
    dead_letters.refresh().await.unwrap();
    assert_eq!(dead_letters.parked(&KeyRef::of(&first)), Some(second.id()));
    assert_eq!(
        dead_letters
            .still_pending(&[first.id()])
            .await
            .unwrap()
            .len(),
        1
    );
}
