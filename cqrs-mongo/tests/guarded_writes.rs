//! Version-guarded single writes and tombstones, against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::{Item, TestDb};
use cqrs_core::{ReadModelWrite, SourceVersion, Target};
use cqrs_mongo::{
    MongoError, MongoWrite, Patch, Query, WriteOutcome,
    bson::{Bson, doc},
};
use rand::{Rng, seq::SliceRandom};

fn item(id: &str, value: i64) -> Item {
    Item {
        id: id.into(),
        value,
        note: None,
    }
}

#[tokio::test]
async fn out_of_order_versions_end_in_newest_state() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let mut rng = rand::rng();
    // 40 documents x 15 versions, including several writes per position (index > 0).
    let mut writes = Vec::new();
    for d in 0..40 {
        for p in 1..=5u64 {
            for i in 0..3u32 {
                writes.push((format!("d{d}"), SourceVersion::with_index(p, i)));
            }
        }
    }
    writes.shuffle(&mut rng);
    let value_of = |v: SourceVersion| (v.position * 10 + u64::from(v.index)) as i64;
    let repo = Arc::new(repo);
    let mut tasks = Vec::new();
    for chunk in writes.chunks(writes.len() / 6 + 1) {
        let chunk = chunk.to_vec();
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            for (id, v) in chunk {
                repo.replace(&item(&id, value_of(v)), v)
                    .await
                    .expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    for d in 0..40 {
        let got = repo.get(&format!("d{d}")).await.unwrap().expect("exists");
        assert_eq!(got.version, SourceVersion::with_index(5, 2));
        assert_eq!(got.document.value, 52);
    }
}

#[tokio::test]
async fn duplicates_are_noops() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let v = SourceVersion::new(3);
    assert_eq!(
        repo.replace(&item("a", 1), v).await.unwrap(),
        WriteOutcome::Applied
    );
    let before = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {"_id": "a"})
        .await
        .unwrap();
    assert_eq!(
        repo.replace(&item("a", 1), v).await.unwrap(),
        WriteOutcome::Stale
    );
    // Same version, different content: still stale, the stored document wins.
    assert_eq!(
        repo.replace(&item("a", 2), v).await.unwrap(),
        WriteOutcome::Stale
    );
    let p = Patch::new().set("value", 9);
    assert_eq!(repo.patch("a", v, p).await.unwrap(), WriteOutcome::Stale);
    let after = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {"_id": "a"})
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        repo.delete("a", SourceVersion::new(4)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        repo.delete("a", SourceVersion::new(4)).await.unwrap(),
        WriteOutcome::Stale
    );
}

#[tokio::test]
async fn delete_then_older_update_stays_deleted() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    repo.replace(&item("a", 1), SourceVersion::new(1))
        .await
        .unwrap();
    repo.replace(&item("keep", 1), SourceVersion::new(1))
        .await
        .unwrap();
    assert_eq!(
        repo.delete("a", SourceVersion::new(5)).await.unwrap(),
        WriteOutcome::Applied
    );
    // Late arrivals: older create, update, patch.
    assert_eq!(
        repo.replace(&item("a", 2), SourceVersion::new(4))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        repo.patch(
            "a",
            SourceVersion::with_index(4, 7),
            Patch::new().set("value", 3)
        )
        .await
        .unwrap(),
        WriteOutcome::Stale
    );
    assert!(repo.get("a").await.unwrap().is_none());
    assert_eq!(repo.count(&cqrs_mongo::Filter::all()).await.unwrap(), 1);
    assert_eq!(repo.find(&Query::all()).await.unwrap().len(), 1);
    // The tombstone is there, with its version.
    let raw = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {"_id": "a"})
        .await
        .unwrap()
        .unwrap();
    assert!(raw.get_bool("_deleted").unwrap());
    assert!(raw.get_datetime("_deleted_at").is_ok());
    assert_eq!(
        repo.version_of("a").await.unwrap(),
        Some((SourceVersion::new(5), true))
    );
    // A delete of a never-seen document also leaves a tombstone.
    assert_eq!(
        repo.delete("ghost", SourceVersion::new(9)).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        repo.replace(&item("ghost", 1), SourceVersion::new(2))
            .await
            .unwrap(),
        WriteOutcome::Stale
    );
    // A newer create brings it back.
    assert_eq!(
        repo.replace(&item("a", 7), SourceVersion::new(6))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let back = repo.get("a").await.unwrap().unwrap();
    assert_eq!(back.document.value, 7);
    let raw = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {"_id": "a"})
        .await
        .unwrap()
        .unwrap();
    assert!(!raw.contains_key("_deleted"));
    // Purge removes old tombstones only.
    let purged = repo
        .purge_tombstones(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
}

#[tokio::test]
async fn concurrent_writers_never_regress_a_version() {
    let db = TestDb::new().await;
    let repo = Arc::new(db.mongo.repository::<Item>());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let repo = repo.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last = SourceVersion::ZERO;
            let mut observations = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(doc) = repo.get("hot").await.unwrap() {
                    assert!(
                        doc.version >= last,
                        "version went from {last} to {}",
                        doc.version
                    );
                    assert_eq!(doc.document.value, doc.version.position as i64);
                    last = doc.version;
                    observations += 1;
                }
            }
            observations
        })
    };
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let repo = repo.clone();
        writers.push(tokio::spawn(async move {
            let mut versions: Vec<u64> = (1..=150).filter(|v| v % 8 == w || v % 3 == 0).collect();
            versions.shuffle(&mut rand::rng());
            let mut stale = 0;
            for v in versions {
                if repo
                    .replace(&item("hot", v as i64), SourceVersion::new(v))
                    .await
                    .unwrap()
                    .is_stale()
                {
                    stale += 1;
                }
            }
            stale
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);
    let doc = repo.get("hot").await.unwrap().unwrap();
    assert_eq!(doc.version, SourceVersion::new(150));
    assert_eq!(doc.document.value, 150);
}

#[tokio::test]
async fn racing_creations_keep_the_newest() {
    // Many writers creating the same fresh ids at once: the newest must win every time,
    // even though the loser of the insert race sees a duplicate key.
    let db = TestDb::new().await;
    let repo = Arc::new(db.mongo.repository::<Item>());
    for round in 0..20 {
        let id = format!("race{round}");
        let mut tasks = Vec::new();
        for v in 1..=6u64 {
            let repo = repo.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                repo.replace(&item(&id, v as i64), SourceVersion::new(v))
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let doc = repo.get(&id).await.unwrap().unwrap();
        assert_eq!(doc.version, SourceVersion::new(6), "{id}");
    }
}

#[tokio::test]
async fn index_part_of_version_compares_exactly() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let id = "x".to_string();
    let apply = |p, i, value| {
        let repo = repo.clone();
        let id = id.clone();
        async move {
            repo.replace(&item(&id, value), SourceVersion::with_index(p, i))
                .await
                .unwrap()
        }
    };
    assert!(apply(5, 0, 50).await.is_applied());
    assert!(apply(5, 2, 52).await.is_applied());
    assert!(apply(5, 1, 51).await.is_stale());
    assert!(apply(4, 9, 49).await.is_stale());
    assert!(apply(5, 2, 52).await.is_stale());
    assert!(apply(6, 0, 60).await.is_applied());
    let doc = repo.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (doc.version, doc.document.value),
        (SourceVersion::new(6), 60)
    );
    let raw = repo
        .physical()
        .await
        .unwrap()
        .find_one(doc! {"_id": "x"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get("_version"), Some(&Bson::Int64(6)));
    assert_eq!(raw.get("_version_index"), Some(&Bson::Int64(0)));
}

#[tokio::test]
async fn patches_are_guarded_and_create_when_missing() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let id: String = "p".into();
    assert!(
        repo.patch(
            &id,
            SourceVersion::new(2),
            Patch::new().set("value", 2).set("note", "n")
        )
        .await
        .unwrap()
        .is_applied()
    );
    let got = repo.get(&id).await.unwrap().unwrap();
    assert_eq!(
        got.document,
        Item {
            id: id.clone(),
            value: 2,
            note: Some("n".into())
        }
    );
    assert!(
        repo.patch(&id, SourceVersion::new(1), Patch::new().set("value", 1))
            .await
            .unwrap()
            .is_stale()
    );
    assert!(
        repo.patch(
            &id,
            SourceVersion::new(3),
            Patch::new().set("value", 3).unset("note")
        )
        .await
        .unwrap()
        .is_applied()
    );
    let got = repo.get(&id).await.unwrap().unwrap();
    assert_eq!(
        got.document,
        Item {
            id,
            value: 3,
            note: None
        }
    );
    assert_eq!(got.version, SourceVersion::new(3));
}

#[tokio::test]
async fn documents_without_a_version_count_as_zero() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    repo.physical()
        .await
        .unwrap()
        .insert_one(doc! { "_id": "legacy", "value": 1 })
        .await
        .unwrap();
    assert_eq!(
        repo.get("legacy").await.unwrap().unwrap().version,
        SourceVersion::ZERO
    );
    assert!(
        repo.replace(&item("legacy", 2), SourceVersion::new(1))
            .await
            .unwrap()
            .is_applied()
    );
}

#[tokio::test]
async fn invalid_writes_are_typed_errors_with_collection_and_id() {
    let db = TestDb::new().await;
    let repo = db.mongo.repository::<Item>();
    let err = repo
        .replace(&item("big", 1), SourceVersion::new(u64::MAX))
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::VersionOutOfRange { .. }), "{err}");
    assert_eq!((err.collection(), err.id()), (Some("items"), Some("big")));
    let write: MongoWrite = ReadModelWrite::Patch {
        target: Target::collection("items"),
        id: Bson::from("p"),
        version: SourceVersion::new(1),
        set: doc! { "a": 1 },
        unset: vec!["a".into()],
    };
    let err = repo.apply(write).await.unwrap_err();
    assert!(matches!(err, MongoError::InvalidWrite { .. }), "{err}");
    assert_eq!(err.id(), Some("p"));
    let _ = HashMap::<u8, u8>::new();
    let _ = Duration::ZERO;
    let _ = rand::rng().random::<u8>();
}
