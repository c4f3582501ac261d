//! The three loads: what they write to PostgreSQL and how a run is timed.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shape {
    /// `rows` inserts.
    Inserts { rows: u64 },
    /// `keys` inserts, then `rounds` updates of every key; round r sets `qty = r`.
    Updates { keys: u64, rounds: u64 },
    /// `rows` rows inserted in chunks of 500, each chunk deleted after the next one is in.
    Deletes { rows: u64 },
}

#[derive(Clone)]
pub(crate) struct Load {
    pub(crate) name: &'static str,
    pub(crate) table: &'static str,
    pub(crate) shape: Shape,
}

impl Load {
    /// Change events with a value (tombstones aside).
    pub(crate) fn events(&self) -> u64 {
        match self.shape {
            Shape::Inserts { rows } => rows,
            Shape::Updates { keys, rounds } => keys * (1 + rounds),
            Shape::Deletes { rows } => 2 * rows,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.shape {
            Shape::Inserts { rows } => format!("{rows} inserts (one statement)"),
            Shape::Updates { keys, rounds } => format!(
                "{keys} keys inserted, then {rounds} rounds updating each ({} events)",
                self.events()
            ),
            Shape::Deletes { rows } => format!(
                "{rows} rows inserted in chunks of {DELETE_CHUNK}, each chunk deleted after the next ({} events)",
                self.events()
            ),
        }
    }

    pub(crate) async fn create(&self, pg: &tokio_postgres::Client, schema: &str) {
        pg.batch_execute(&format!(
            "CREATE TABLE {schema}.{} (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL,
              price numeric(10,2) NOT NULL, note text, updated_at timestamptz NOT NULL)",
            self.table
        ))
        .await
        .unwrap();
    }

    pub(crate) async fn run(&self, pg: &tokio_postgres::Client, schema: &str) {
        let t = format!("{schema}.{}", self.table);
        let insert = |from: u64, to: u64| {
            format!(
                "INSERT INTO {t} SELECT g, 'item-' || g, 0, (g % 1000) * 0.25, 'note ' || g, now()
                 FROM generate_series({from}, {to}) g"
            )
        };
        match self.shape {
            Shape::Inserts { rows } => pg.batch_execute(&insert(1, rows)).await.unwrap(),
            Shape::Updates { keys, rounds } => {
                pg.batch_execute(&insert(1, keys)).await.unwrap();
                for r in 1..=rounds {
                    pg.batch_execute(&format!(
                        "UPDATE {t} SET qty = {r}, price = price + 0.5, note = 'round {r}', updated_at = now()"
                    ))
                    .await
                    .unwrap();
                }
            }
            Shape::Deletes { rows } => {
                let chunks = rows.div_ceil(DELETE_CHUNK);
                for c in 0..chunks {
                    let from = c * DELETE_CHUNK + 1;
                    pg.batch_execute(&insert(from, (from + DELETE_CHUNK - 1).min(rows)))
                        .await
                        .unwrap();
                    if c > 0 {
                        pg.batch_execute(&format!(
                            "DELETE FROM {t} WHERE id < {from} AND id >= {}",
                            from - DELETE_CHUNK
                        ))
                        .await
                        .unwrap();
                    }
                }
                pg.batch_execute(&format!("DELETE FROM {t}")).await.unwrap();
            }
        }
    }
}

pub(crate) async fn progress(
    coll: &mongodb::Collection<Document>,
    load: &Load,
) -> (bool, u64, bool) {
    let count = coll.estimated_document_count().await.unwrap_or(0);
    match load.shape {
        Shape::Inserts { rows } => (count > 0, count, count >= rows),
        Shape::Updates { keys, rounds } => {
            if count == 0 {
                return (false, 0, false);
            }
            let sum = sum_qty(coll).await;
            (true, count + sum, count >= keys && sum >= keys * rounds)
        }
        // The sync-service's deletes leave tombstones (`_deleted: true`); the sink's remove
        // the document, so its delete load is timed by its commits (`sink.rs`).
        Shape::Deletes { rows } => {
            let deleted = coll
                .count_documents(doc! { "_deleted": true })
                .await
                .unwrap_or(0);
            (count > 0, count + deleted, deleted >= rows)
        }
    }
}

pub(crate) async fn sum_qty(coll: &mongodb::Collection<Document>) -> u64 {
    let Ok(mut cursor) = coll
        .aggregate([doc! { "$group": { "_id": null, "n": { "$sum": "$qty" } } }])
        .await
    else {
        return 0;
    };
    match cursor.next().await {
        Some(Ok(d)) => d
            .get_i64("n")
            .or_else(|_| d.get_i32("n").map(i64::from))
            .unwrap_or(0)
            .max(0) as u64,
        _ => 0,
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Rate {
    pub(crate) events: u64,
    pub(crate) complete: bool,
    pub(crate) steady: Duration,
}

impl Rate {
    pub(crate) fn per_sec(&self) -> f64 {
        self.events as f64 / self.steady.as_secs_f64()
    }
}

/// Polls until done or `cap`; the rate counts from the first document seen.
pub(crate) async fn measure(
    coll: &mongodb::Collection<Document>,
    load: &Load,
    cap: Duration,
    mut tick: impl FnMut(bool),
) -> Rate {
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let (visible, applied, done) = progress(coll, load).await;
        tick(visible);
        let now = Instant::now();
        if visible && first.is_none() {
            first = Some(now);
        }
        if done || started.elapsed() > cap {
            let events = if done { load.events() } else { applied };
            return Rate {
                events,
                complete: done,
                steady: now - first.unwrap_or(now),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
