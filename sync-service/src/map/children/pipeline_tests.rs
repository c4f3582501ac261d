//! Child tables through the whole pipeline (decode, envelope, map, write with floors,
//! dead letters), over the in-memory store: the parent in `read.orders`, its children in
//! the store's `read.orders$<field>` (one entry per child, guarded by its own version).

use cqrs_core::SourceVersion;
use cqrs_kafka::Record;
use tokio_util::sync::CancellationToken;

use crate::config::TableMapping;
use crate::dead_letter::Stage;
use crate::map::ChildTableProjection;
use crate::testing::{Fixture, ORDERS, doc_id, fixture, truncate, upsert};

const LINES_TOPIC: &str = "cqrs.app.order_lines";
const ITEMS_TOPIC: &str = "cqrs.app.items";
const LINES: &str = "read.orders$order_lines";

/// The fixture's `app.orders` -> `read.orders`, plus `app.order_lines` (key
/// `(order_id, line_no)`) and `app.items` (key `id`, parent column outside it) embedded in
/// the orders.
fn with_children() -> Fixture {
    let mut f = fixture();
    for (table, extra) in [("order_lines", ""), ("items", "name = \"items\"")] {
        let mapping: TableMapping = toml::from_str(&format!(
            "table = \"app.{table}\"\ncollection = \"orders\"\n{extra}\n\
             embed = {{ field = \"{table}\", parent_key = [\"order_id\"] }}"
        ))
        .unwrap();
        f.pipeline
            .projections
            .add_children(ChildTableProjection::new(&mapping, "read").unwrap());
    }
    f
}

fn envelope(table: &str, op: &str, before: &str, after: &str, lsn: u64) -> Vec<u8> {
    format!(
        r#"{{"op":"{op}","before":{before},"after":{after},"source":{{"connector":"postgresql",
        "name":"cqrs","db":"cqrs","schema":"app","table":"{table}","lsn":{lsn},"txId":7,
        "ts_ms":1700000000000,"snapshot":"false"}},"ts_ms":1700000000001}}"#
    )
    .into_bytes()
}

/// Line `line` of order `order` written (`c`) or deleted (`d`) at `lsn`.
fn line(offset: i64, op: &str, order: i32, line: i32, lsn: u64) -> Record {
    let row = format!(r#"{{"order_id":{order},"line_no":{line},"qty":{lsn}}}"#);
    let (before, after) = if op == "d" {
        (row.as_str(), "null")
    } else {
        ("null", row.as_str())
    };
    Record::new(LINES_TOPIC, 0, offset)
        .with_key(format!(r#"{{"order_id":{order},"line_no":{line}}}"#).into_bytes())
        .with_value(envelope("order_lines", op, before, after, lsn))
}

fn line_truncate(offset: i64, lsn: u64) -> Record {
    Record::new(LINES_TOPIC, 0, offset).with_value(envelope(
        "order_lines",
        "t",
        "null",
        "null",
        lsn,
    ))
}

fn child(f: &Fixture, ns: &str, order: i32, key: &str) -> Option<(SourceVersion, bool)> {
    f.store.with(|s| {
        s.docs
            .get(&(ns.to_owned(), format!("{}/{key}", doc_id(order))))
            .copied()
    })
}

fn parent(f: &Fixture, order: i32) -> Option<(SourceVersion, bool)> {
    f.store
        .with(|s| s.docs.get(&(ORDERS.to_owned(), doc_id(order))).copied())
}

#[tokio::test]
async fn children_and_parents_never_make_each_other_stale() {
    let f = with_children();
    let stop = CancellationToken::new();
    let batch = [
        line(0, "c", 1, 1, 100),
        upsert(1, 1, 90),
        line(1, "c", 1, 2, 110),
        line(2, "c", 1, 1, 120),
        line(3, "d", 1, 2, 130),
    ];
    let report = f.pipeline.process(&batch, &stop).await.unwrap();
    assert_eq!(
        (report.applied, report.stale, report.dead_lettered),
        (5, 0, 0)
    );
    assert_eq!(parent(&f, 1), Some((SourceVersion::new(90), false)));
    assert_eq!(
        child(&f, LINES, 1, "1"),
        Some((SourceVersion::new(120), false))
    );
    assert_eq!(
        child(&f, LINES, 1, "2"),
        Some((SourceVersion::new(130), true))
    );
    // Replayed: every change is stale, each against its own version.
    let again = f.pipeline.process(&batch, &stop).await.unwrap();
    assert_eq!((again.applied, again.stale), (0, 5));
}

#[tokio::test]
async fn a_child_table_truncate_floors_the_children_and_spares_the_parents() {
    let f = with_children();
    let stop = CancellationToken::new();
    let batch = [
        upsert(0, 1, 100),
        line(0, "c", 1, 1, 110),
        line(1, "c", 2, 1, 300),
    ];
    f.pipeline.process(&batch, &stop).await.unwrap();
    let report = f
        .pipeline
        .process(&[line_truncate(2, 200)], &stop)
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(child(&f, LINES, 1, "1"), None, "older than the truncate");
    assert_eq!(
        child(&f, LINES, 2, "1"),
        Some((SourceVersion::new(300), false))
    );
    assert_eq!(
        parent(&f, 1),
        Some((SourceVersion::new(100), false)),
        "parents stay"
    );
    // A late child change below the floor is stale; a parent change is not.
    let report = f
        .pipeline
        .process(&[line(3, "c", 1, 1, 150), upsert(2, 1, 150)], &stop)
        .await
        .unwrap();
    assert_eq!((report.applied, report.stale), (1, 1));
    assert_eq!(parent(&f, 1), Some((SourceVersion::new(150), false)));
    // A truncate of the parent table does not floor the children.
    f.pipeline
        .process(&[truncate(3, 400)], &stop)
        .await
        .unwrap();
    let report = f
        .pipeline
        .process(&[line(4, "c", 3, 1, 350)], &stop)
        .await
        .unwrap();
    assert_eq!(report.applied, 1);
}

#[tokio::test]
async fn an_update_that_may_move_a_child_needs_its_old_row() {
    let f = with_children();
    let stop = CancellationToken::new();
    let item = |offset: i64, before: &str, order: i32, lsn: u64| {
        let after = format!(r#"{{"id":5,"order_id":{order}}}"#);
        Record::new(ITEMS_TOPIC, 0, offset)
            .with_key(br#"{"id":5}"#.to_vec())
            .with_value(envelope("items", "u", before, &after, lsn))
    };
    // With the old row (REPLICA IDENTITY FULL): moved from order 1 to order 2.
    let report = f
        .pipeline
        .process(&[item(0, r#"{"id":5,"order_id":1}"#, 2, 100)], &stop)
        .await
        .unwrap();
    assert_eq!(report.applied, 2, "a delete and a write");
    let items = "read.orders$items";
    assert_eq!(
        child(&f, items, 1, "5"),
        Some((SourceVersion::new(100), true))
    );
    assert_eq!(
        child(&f, items, 2, "5"),
        Some((SourceVersion::new(100), false))
    );
    // Without it: dead-lettered with the reason, the key held back behind it.
    let report = f
        .pipeline
        .process(
            &[
                item(1, "null", 3, 110),
                item(2, r#"{"id":5,"order_id":2}"#, 3, 120),
            ],
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(report.dead_lettered, 2);
    f.letters.with(|l| {
        let (record, failure) = &l.published[0];
        assert_eq!(record.offset, 1);
        assert_eq!(failure.stage, Stage::Map);
        assert!(
            failure.error.contains("REPLICA IDENTITY FULL"),
            "{}",
            failure.error
        );
        assert_eq!(l.letter(&format!("{ITEMS_TOPIC}/0/2")).0, Stage::HeldBack);
    });
}

/// Line `line` of order `order` read by an incremental snapshot (a rebuild): no LSN.
fn line_snapshot(offset: i64, order: i32, line: i32) -> Record {
    let value = format!(
        r#"{{"op":"r","before":null,"after":{{"order_id":{order},"line_no":{line},"qty":1}},
        "source":{{"connector":"postgresql","name":"cqrs","db":"cqrs","schema":"app",
        "table":"order_lines","lsn":null,"txId":null,"ts_ms":1700000000000,
        "snapshot":"incremental"}},"ts_ms":1700000000001}}"#
    );
    Record::new(LINES_TOPIC, 0, offset)
        .with_key(format!(r#"{{"order_id":{order},"line_no":{line}}}"#).into_bytes())
        .with_value(value.into_bytes())
}

#[tokio::test]
async fn a_snapshot_row_of_a_child_adopts_the_childs_live_version_not_its_parents() {
    let f = with_children();
    let stop = CancellationToken::new();
    let batch = [upsert(0, 1, 500), line(0, "c", 1, 1, 300)];
    f.pipeline.process(&batch, &stop).await.unwrap();
    // From the live store (another batch), and from an earlier write of the same batch.
    let batch = [
        line_snapshot(1, 1, 1),
        line(2, "c", 1, 2, 320),
        line_snapshot(3, 1, 2),
        line_snapshot(4, 1, 3),
    ];
    let report = f.pipeline.process(&batch, &stop).await.unwrap();
    assert_eq!(report.dead_lettered, 0);
    let fills = f.store.with(|s| s.fills.clone());
    let id = |line: i32| format!("{}/{line}", doc_id(1));
    assert_eq!(
        fills,
        vec![
            (id(1), SourceVersion::new(300)),
            (id(2), SourceVersion::new(320)),
            (id(3), SourceVersion::ZERO),
        ]
    );
    // A fill of a child already there changes nothing (it only adds children never seen).
    assert_eq!(
        child(&f, LINES, 1, "1"),
        Some((SourceVersion::new(300), false))
    );
    assert_eq!(child(&f, LINES, 1, "3"), Some((SourceVersion::ZERO, false)));
}
