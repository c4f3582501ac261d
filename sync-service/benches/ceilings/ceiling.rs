//! The server's ceiling: plain bulk operations, same batch size, same parallel writers.

use super::*;

/// A document as the sync-service writes the row (types as its type table says).
pub(crate) fn row_doc(id: u64, qty: u64, note: &str) -> Document {
    let cents = ((id % 1000) * 25 + qty * 50) as i64;
    doc! {
        "_id": id as i32,
        "id": id as i32,
        "name": format!("item-{id}"),
        "qty": qty as i32,
        "price": Bson::Decimal128(format!("{}.{:02}", cents / 100, cents % 100).parse().unwrap()),
        "note": note,
        "updated_at": bson::DateTime::now(),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    Insert,
    Upsert,
    Delete,
}

/// Applies `docs` (by writer) with `op`, `BATCH` per request, one task per writer; returns
/// the seconds taken.
pub(crate) async fn apply(
    coll: &mongodb::Collection<Document>,
    per_writer: Vec<Vec<Document>>,
    op: Op,
) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = per_writer
        .into_iter()
        .map(|docs| {
            let coll = coll.clone();
            tokio::spawn(async move {
                for chunk in docs.chunks(BATCH) {
                    match op {
                        Op::Insert => {
                            coll.insert_many(chunk.to_vec()).ordered(false).await.unwrap();
                        }
                        Op::Upsert => {
                            let updates: Vec<Document> = chunk
                                .iter()
                                .map(|d| doc! { "q": { "_id": d.get("_id").unwrap() }, "u": d, "upsert": true })
                                .collect();
                            run(&coll, doc! { "update": coll.name(), "updates": updates, "ordered": true }).await;
                        }
                        Op::Delete => {
                            let deletes: Vec<Document> = chunk
                                .iter()
                                .map(|d| doc! { "q": { "_id": d.get("_id").unwrap() }, "limit": 1 })
                                .collect();
                            run(&coll, doc! { "delete": coll.name(), "deletes": deletes, "ordered": false }).await;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

pub(crate) async fn run(coll: &mongodb::Collection<Document>, command: Document) {
    let reply = coll
        .client()
        .database(coll.namespace().db.as_str())
        .run_command(command)
        .await
        .unwrap();
    assert!(
        reply.get("writeErrors").is_none(),
        "ceiling write errors: {reply}"
    );
}

/// Splits ids among the writers like partitions do (same key, same writer).
pub(crate) fn by_writer(
    ids: impl Iterator<Item = u64>,
    make: impl Fn(u64) -> Document,
) -> Vec<Vec<Document>> {
    let mut out = vec![Vec::new(); WORKERS];
    for id in ids {
        out[(id % WORKERS as u64) as usize].push(make(id));
    }
    out
}

pub(crate) struct Ceiling {
    /// Changes/s of the load as plain operations.
    pub(crate) per_sec: f64,
    /// What each operation ran at (docs/s).
    pub(crate) parts: String,
}

pub(crate) async fn ceiling(mongo: &mongodb::Client, load: &Load) -> Ceiling {
    let database = format!("bench_ceiling_{}", short_id());
    let coll = mongo.database(&database).collection::<Document>(load.table);
    let (seconds, parts) = match load.shape {
        Shape::Inserts { rows } => {
            let s = apply(
                &coll,
                by_writer(1..=rows, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            (s, format!("insert_many {:.0} docs/s", rows as f64 / s))
        }
        Shape::Updates { keys, rounds } => {
            let a = apply(
                &coll,
                by_writer(1..=keys, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            let mut per_writer = vec![Vec::new(); WORKERS];
            for r in 1..=rounds {
                for (w, docs) in by_writer(1..=keys, |id| row_doc(id, r, "round"))
                    .into_iter()
                    .enumerate()
                {
                    per_writer[w].extend(docs);
                }
            }
            let b = apply(&coll, per_writer, Op::Upsert).await;
            (
                a + b,
                format!(
                    "insert_many {:.0} docs/s, upserts {:.0} docs/s",
                    keys as f64 / a,
                    (keys * rounds) as f64 / b
                ),
            )
        }
        Shape::Deletes { rows } => {
            let a = apply(
                &coll,
                by_writer(1..=rows, |id| row_doc(id, 0, "note")),
                Op::Insert,
            )
            .await;
            let b = apply(
                &coll,
                by_writer(1..=rows, |id| doc! { "_id": id as i32 }),
                Op::Delete,
            )
            .await;
            (
                a + b,
                format!(
                    "insert_many {:.0} docs/s, deletes {:.0} docs/s",
                    rows as f64 / a,
                    rows as f64 / b
                ),
            )
        }
    };
    let _ = mongo.database(&database).drop().await;
    Ceiling {
        per_sec: load.events() as f64 / seconds,
        parts,
    }
}
