//! Child rows embedded in their parent's document, end to end through Debezium with the
//! real binary (`target/debug/sync-service`: `cargo build --bin sync-service`), SIGKILLed
//! again and again under a random workload:
//!
//! * `orders` (the parents), `lines` (surrogate key `id`, `order_id` outside it,
//!   `REPLICA IDENTITY FULL`: a move is an update with its old row) and `tags` (key
//!   `(order_id, tag_no)`, default identity: a move is a key change, which Debezium sends
//!   as a delete and a create, possibly on two partitions), both with
//!   `ON DELETE CASCADE` foreign keys;
//! * inserts, updates, moves between parents, deletes and re-inserts (the same ids) of
//!   children; inserts, updates, deletes (cascading) and re-inserts of parents;
//! * the three tables' topics consumed in any relative order, the service killed mid-batch.
//!
//! Afterwards every order visible in MongoDB equals its PostgreSQL row joined with its lines
//! and tags, field by field, no deleted order is visible, and nothing was dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use rand::Rng;
use support::process::SyncProcess;
use support::{Running, Scenario, until};
use sync_service::SyncService;

const ORDERS: i32 = 400;
const LINE_IDS: i32 = 3_000;
const ROUNDS: i32 = 40;
const CATCH_UP: Duration = Duration::from_secs(240);

/// The `[[projection]]` sections: the orders, their lines and their tags.
const PROJECTIONS: &str = r#"
[[projection]]
table = "{s}.orders"
collection = "orders"

[[projection]]
table = "{s}.lines"
collection = "orders"
embed = { field = "lines", parent_key = ["order_id"] }

[[projection]]
table = "{s}.tags"
collection = "orders"
embed = { field = "tags", parent_key = ["order_id"] }
"#;

async fn create_tables(s: &Scenario) {
    s.sql(
        "CREATE TABLE {s}.orders (
            id int PRIMARY KEY,
            customer text NOT NULL,
            status text NOT NULL,
            total numeric(12,2) NOT NULL,
            rev int NOT NULL,
            note text,
            updated_at timestamptz NOT NULL);
         CREATE TABLE {s}.lines (
            id int PRIMARY KEY,
            order_id int NOT NULL REFERENCES {s}.orders (id) ON DELETE CASCADE,
            sku text NOT NULL,
            qty int NOT NULL,
            price numeric(10,2) NOT NULL,
            note text);
         ALTER TABLE {s}.lines REPLICA IDENTITY FULL;
         CREATE TABLE {s}.tags (
            order_id int NOT NULL REFERENCES {s}.orders (id) ON DELETE CASCADE,
            tag_no int NOT NULL,
            value text NOT NULL,
            PRIMARY KEY (order_id, tag_no));",
    )
    .await;
}

/// What a run of the workload did.
#[derive(Debug, Default)]
struct Made {
    changes: u64,
    line_moves: u64,
    tag_moves: u64,
    order_deletes: u64,
    order_reinserts: u64,
    line_reinserts: u64,
}

/// Runs a statement, returning the ids it reports (`RETURNING`), or none when it failed
/// on a conflict (two tags moved to the same place in one statement).
async fn ids(pg: &tokio_postgres::Client, sql: &str) -> Vec<i32> {
    match pg.query(sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Vec::new()
        }
        Err(e) => panic!("workload SQL failed: {e}\n{sql}"),
    }
}

/// One round of the random workload (PostgreSQL's `random()` picks the rows).
async fn round(
    pg: &tokio_postgres::Client,
    schema: &str,
    r: i32,
    deleted: &mut BTreeSet<i32>,
    deleted_lines: &mut BTreeSet<i32>,
    made: &mut Made,
) {
    let s = schema;
    let n = ORDERS;
    let inserted = ids(
        pg,
        &format!(
            "INSERT INTO {s}.orders (id, customer, status, total, rev, note, updated_at)
             SELECT g, 'c' || g, 'new', round((random() * 1000)::numeric, 2), 0,
                    CASE WHEN random() < 0.2 THEN NULL ELSE 'n' || g END, now()
             FROM generate_series(1, {n}) g WHERE random() < 0.6
             ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
    )
    .await;
    made.order_reinserts += inserted.iter().filter(|id| deleted.remove(id)).count() as u64;
    let lines = ids(
        pg,
        &format!(
            "INSERT INTO {s}.lines (id, order_id, sku, qty, price, note)
             SELECT g, o.id, 'sku-' || (g % 50), 1 + (random() * 9)::int,
                    round((random() * 100)::numeric, 2),
                    CASE WHEN random() < 0.3 THEN NULL ELSE 'l{r}' END
             FROM generate_series(1, {LINE_IDS}) g
             JOIN {s}.orders o ON o.id = 1 + (g * 7 + {r} * 13) % {n}
             WHERE random() < 0.25
             ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
    )
    .await;
    made.line_reinserts += lines.iter().filter(|id| deleted_lines.remove(id)).count() as u64;
    let tags = ids(
        pg,
        &format!(
            "INSERT INTO {s}.tags (order_id, tag_no, value)
             SELECT o.id, t, 'v{r}' FROM {s}.orders o, generate_series(1, 4) t
             WHERE random() < 0.15 ON CONFLICT DO NOTHING RETURNING order_id"
        ),
    )
    .await;
    let updates = [
        format!(
            "UPDATE {s}.orders SET rev = rev + 1,
                 status = (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + floor(random() * 4)::int],
                 total = total + 1.25,
                 note = CASE WHEN random() < 0.2 THEN NULL ELSE 'r{r}' END, updated_at = now()
             WHERE random() < 0.3 RETURNING id"
        ),
        format!(
            "UPDATE {s}.lines SET qty = qty + 1, price = price + 0.5, note = 'u{r}'
             WHERE random() < 0.2 RETURNING id"
        ),
        format!("UPDATE {s}.tags SET value = 'u{r}' WHERE random() < 0.2 RETURNING order_id"),
    ];
    let mut changes = (inserted.len() + lines.len() + tags.len()) as u64;
    for sql in &updates {
        changes += ids(pg, sql).await.len() as u64;
    }
    // Moves: a line's parent column (an update carrying its old row), a tag's key (a
    // delete and a create).
    let line_moves = ids(
        pg,
        &format!(
            "UPDATE {s}.lines l SET order_id = o.id FROM {s}.orders o
             WHERE o.id = 1 + (l.id * 11 + {r} * 17) % {n} AND o.id <> l.order_id
               AND random() < 0.08 RETURNING l.id"
        ),
    )
    .await
    .len() as u64;
    let tag_moves = ids(
        pg,
        &format!(
            "UPDATE {s}.tags t SET order_id = o.id FROM {s}.orders o
             WHERE o.id = 1 + (t.order_id * 7 + t.tag_no * 3 + {r}) % {n}
               AND o.id <> t.order_id AND random() < 0.08
               AND NOT EXISTS (SELECT 1 FROM {s}.tags x WHERE x.order_id = o.id AND x.tag_no = t.tag_no)
             RETURNING t.order_id"
        ),
    )
    .await
    .len() as u64;
    let gone_lines = ids(
        pg,
        &format!("DELETE FROM {s}.lines WHERE random() < 0.06 RETURNING id"),
    )
    .await;
    deleted_lines.extend(&gone_lines);
    let gone_tags = ids(
        pg,
        &format!("DELETE FROM {s}.tags WHERE random() < 0.06 RETURNING order_id"),
    )
    .await;
    // Cascades to the order's lines and tags.
    let gone = ids(
        pg,
        &format!("DELETE FROM {s}.orders WHERE random() < 0.04 RETURNING id"),
    )
    .await;
    deleted.extend(&gone);
    made.line_moves += line_moves;
    made.tag_moves += tag_moves;
    made.order_deletes += gone.len() as u64;
    made.changes +=
        changes + line_moves + tag_moves + (gone_lines.len() + gone_tags.len() + gone.len()) as u64;
}

fn spawn_load(s: &Scenario, pause: Duration) -> tokio::task::JoinHandle<Made> {
    let (contract, schema) = (s.contract.clone(), s.schema.clone());
    tokio::spawn(async move {
        let pg = support::postgres(&contract).await;
        let (mut deleted, mut deleted_lines) = (BTreeSet::new(), BTreeSet::new());
        let mut made = Made::default();
        for r in 1..=ROUNDS {
            round(&pg, &schema, r, &mut deleted, &mut deleted_lines, &mut made).await;
            tokio::time::sleep(pause).await;
        }
        made
    })
}

fn decimal(text: &str) -> Bson {
    Bson::Decimal128(sync_service::types::decimal128_from_str(text).unwrap())
}

fn text(value: Option<String>) -> Bson {
    value.map(Bson::String).unwrap_or(Bson::Null)
}

/// Every order as its document must be: its row joined with its lines and tags, the
/// children by key (`lines` by line id, `tags` by tag number).
async fn expected(s: &Scenario) -> BTreeMap<i32, Document> {
    let q = |sql: String| async move { s.pg.query(&sql, &[]).await.unwrap() };
    let schema = &s.schema;
    let mut docs: BTreeMap<i32, Document> = q(format!(
        "SELECT id, customer, status, total::text, rev, note,
                floor(extract(epoch FROM updated_at) * 1000)::bigint FROM {schema}.orders"
    ))
    .await
    .iter()
    .map(|r| {
        let id: i32 = r.get(0);
        let d = doc! {
            "_id": id, "id": id,
            "customer": r.get::<_, String>(1),
            "status": r.get::<_, String>(2),
            "total": decimal(&r.get::<_, String>(3)),
            "rev": r.get::<_, i32>(4),
            "note": text(r.get(5)),
            "updated_at": bson::DateTime::from_millis(r.get(6)),
            "lines": {}, "tags": {},
        };
        (id, d)
    })
    .collect();
    for r in q(format!(
        "SELECT id, order_id, sku, qty, price::text, note FROM {schema}.lines"
    ))
    .await
    {
        let (id, order): (i32, i32) = (r.get(0), r.get(1));
        let line = doc! {
            "id": id, "order_id": order, "sku": r.get::<_, String>(2),
            "qty": r.get::<_, i32>(3), "price": decimal(&r.get::<_, String>(4)),
            "note": text(r.get(5)),
        };
        let d = docs.get_mut(&order).expect("a foreign key");
        d.get_document_mut("lines")
            .unwrap()
            .insert(id.to_string(), line);
    }
    for r in q(format!("SELECT order_id, tag_no, value FROM {schema}.tags")).await {
        let (order, tag): (i32, i32) = (r.get(0), r.get(1));
        let element = doc! { "order_id": order, "tag_no": tag, "value": r.get::<_, String>(2) };
        let d = docs.get_mut(&order).expect("a foreign key");
        d.get_document_mut("tags")
            .unwrap()
            .insert(tag.to_string(), element);
    }
    docs
}

/// A visible document without the crate's bookkeeping, its maps of children present.
fn shown(mut d: Document) -> Document {
    let keep: Vec<String> = d
        .keys()
        .filter(|k| !k.starts_with('_') || *k == "_id")
        .cloned()
        .collect();
    d = keep
        .into_iter()
        .filter_map(|k| d.remove(&k).map(|v| (k, v)))
        .collect();
    for field in ["lines", "tags"] {
        if !d.contains_key(field) {
            d.insert(field, Document::new());
        }
    }
    d
}

/// Compares what readers see with PostgreSQL; `Err` describes the gap.
async fn compare(s: &Scenario, expected: &BTreeMap<i32, Document>) -> Result<usize, String> {
    let visible = s.view_docs("orders").await;
    let (mut different, mut resurrected) = (0, 0);
    let mut seen = BTreeSet::new();
    let mut example = None;
    for d in visible {
        let id = d
            .get_i32("_id")
            .map_err(|e| format!("bad _id in {d}: {e}"))?;
        seen.insert(id);
        let actual = shown(d);
        match expected.get(&id) {
            Some(want) if &actual == want => {}
            Some(want) => {
                different += 1;
                example.get_or_insert_with(|| format!("{actual}\n  expected {want}"));
            }
            None => {
                resurrected += 1;
                example
                    .get_or_insert_with(|| format!("visible document {actual} of a deleted order"));
            }
        }
    }
    let missing = expected.keys().filter(|id| !seen.contains(id)).count();
    if missing + different + resurrected == 0 {
        Ok(expected.len())
    } else {
        Err(format!(
            "{} orders: {missing} missing, {different} different, {resurrected} deleted visible; e.g. {}",
            expected.len(),
            example.unwrap_or_default()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_and_parents_converge_to_the_join_after_sigkills() {
    let s = Scenario::new("children").await;
    let guard = s.cleanup_guard();
    create_tables(&s).await;
    let mut service = SyncProcess::start(
        &format!("sync-children-{}", s.database),
        "victim",
        &s.process_config_text(&s.group, PROJECTIONS),
    );
    let started = Instant::now();
    let load = spawn_load(&s, Duration::from_millis(400));

    let mut kills = 0;
    let mut rng = rand::rng();
    while !load.is_finished() || kills < 4 {
        // Let the new process join the group and make progress, then kill it at a random
        // point of its work.
        service.wait_consuming(0.0, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        service.assert_running();
        service.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_000))).await;
        service.spawn();
    }
    let made = load.await.unwrap();
    eprintln!(
        "load: {made:?} in {:.1} s; {kills} SIGKILLs",
        started.elapsed().as_secs_f64()
    );
    assert!(made.changes >= 20_000, "the load made only {made:?}");
    for (what, n) in [
        ("line moves", made.line_moves),
        ("tag moves", made.tag_moves),
        ("order deletes", made.order_deletes),
        ("order re-inserts", made.order_reinserts),
        ("line re-inserts", made.line_reinserts),
    ] {
        assert!(n > 0, "the workload made no {what}: {made:?}");
    }

    let want = expected(&s).await;
    let caught_up = Instant::now();
    let orders = until(
        "every visible order to equal its PostgreSQL join",
        CATCH_UP,
        || compare(&s, &want),
    )
    .await;
    let children: usize = want
        .values()
        .map(|d| d.get_document("lines").unwrap().len() + d.get_document("tags").unwrap().len())
        .sum();
    eprintln!(
        "reconciled {orders} orders and {children} children field by field ({:.1} s after the load)",
        caught_up.elapsed().as_secs_f64()
    );
    let dead = s
        .mongo
        .database(&s.database)
        .collection::<Document>("_sync_dead_letters")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(dead, 0, "dead letters: {dead}");
    service.assert_running();
    service.terminate();
    s.cleanup().await;
    guard.disarm();
}

/// A truncate of a child table removes the children and keeps the parents; a truncate of
/// the parent table (cascading to the children) hides every order; what comes after shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncates_remove_children_or_parents_by_their_own_floors() {
    let s = Scenario::new("children_trunc").await;
    let guard = s.cleanup_guard();
    create_tables(&s).await;
    let running = Running::start(SyncService::new(s.config(PROJECTIONS)));
    s.sql(
        "INSERT INTO {s}.orders SELECT g, 'c' || g, 'new', g, 0, NULL, now()
           FROM generate_series(1, 50) g;
         INSERT INTO {s}.lines SELECT g, 1 + g % 50, 'sku', 1, 1.5, NULL
           FROM generate_series(1, 200) g;
         INSERT INTO {s}.tags SELECT g, 1, 'v' FROM generate_series(1, 50) g;",
    )
    .await;
    let reconciled = |what: &'static str| {
        let s = &s;
        async move {
            let want = expected(s).await;
            until(what, Duration::from_secs(90), || compare(s, &want)).await
        }
    };
    assert_eq!(reconciled("the seed").await, 50);

    // The child table alone: the lines go, the orders and their tags stay.
    s.sql("TRUNCATE {s}.lines; INSERT INTO {s}.lines VALUES (1000, 7, 'after', 2, 3.5, 'x');")
        .await;
    assert_eq!(reconciled("the lines truncated").await, 50);
    let seven = s
        .view_docs("orders")
        .await
        .into_iter()
        .find(|d| d.get_i32("_id") == Ok(7))
        .unwrap();
    assert_eq!(
        seven
            .get_document("lines")
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["1000"]
    );

    // The parent table, cascading: every order hidden; a new one shows with its children.
    s.sql(
        "TRUNCATE {s}.orders CASCADE;
         INSERT INTO {s}.orders VALUES (7, 'again', 'new', 1, 0, NULL, now());
         INSERT INTO {s}.tags VALUES (7, 2, 'w');",
    )
    .await;
    assert_eq!(reconciled("the orders truncated").await, 1);
    running.stop().await;
    s.cleanup().await;
    guard.disarm();
}
