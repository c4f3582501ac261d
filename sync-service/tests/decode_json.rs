//! Kafka Connect JSON (with and without schemas), the skippable kinds, truncate,
//! transaction metadata and outbox events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bson::spec::BinarySubtype;
use bson::{Bson, DateTime, doc};
use serde_json::Value;
use sync_service::decode::{DecodeError, DecodedFormat, Decoder, Format, RawRecord};
use sync_service::envelope::{EnvelopeError, EnvelopeParser, Event, Op, Snapshot};

const TOPIC: &str = "cqrs.cdc_types_fixture.all_types";

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/connect_json_fixture.json")).unwrap()
}

async fn parse(decoder: &Decoder, record: RawRecord<'_>) -> Result<Event, EnvelopeError> {
    let decoded = decoder.decode(&record).await.unwrap();
    EnvelopeParser::default().parse(&decoded)
}

fn change(event: Result<Event, EnvelopeError>) -> sync_service::envelope::Change {
    match event.unwrap() {
        Event::Change(c) => *c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn json_with_schema_converts_semantic_types() {
    let f = fixture();
    let key = f["with_schema"]["key"].as_str().unwrap();
    let value = f["with_schema"]["value"].as_str().unwrap();
    for format in [Format::JsonWithSchema, Format::Json, Format::Auto] {
        let decoder = Decoder::without_registry().with_default_format(format);
        let record = RawRecord::new(TOPIC)
            .with_key(key.as_bytes())
            .with_value(value.as_bytes());
        let decoded = decoder.decode(&record).await.unwrap();
        assert_eq!(
            decoded.value.as_ref().unwrap().format,
            DecodedFormat::JsonWithSchema
        );
        let c = change(EnvelopeParser::default().parse(&decoded));
        assert_eq!(c.op, Op::Read);
        assert_eq!(c.source.snapshot, Snapshot::First);
        assert!(c.source.snapshot.is_snapshot());
        assert_eq!(
            c.version.position, 26_737_360,
            "snapshot reads carry the snapshot's LSN"
        );
        assert_eq!(c.key.unwrap(), doc! {"tenant": 1, "code": "typical"});
        let after = c.after.unwrap();
        let expected = doc! {
            "tenant": 1, "code": "typical", "c_smallint": 12, "c_integer": 123456,
            "c_bigint": 9_876_543_210i64, "c_real": 1.5, "c_double": 3.25,
            "c_numeric": Bson::Decimal128("1234.5678".parse().unwrap()),
            "c_numeric_var": Bson::Decimal128("3.14159".parse().unwrap()),
            "c_money": Bson::Decimal128("-12.34".parse().unwrap()),
            "c_bool": true, "c_text": "hello", "c_char": "ab   ",
            "c_uuid": Bson::Binary(bson::Binary { subtype: BinarySubtype::Uuid,
                bytes: uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap().as_bytes().to_vec() }),
            "c_jsonb": doc! {"n": 42, "nested": {"k": "v"}},
            "c_bytea": Bson::Binary(bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 255, 16] }),
            "c_date": Bson::DateTime(DateTime::from_millis(-3999 * 86_400_000)),
            "c_time": "14:30:15.123456", "c_timetz": "08:11:12.5Z",
            "c_timestamp": Bson::DateTime(DateTime::from_millis(1_709_212_455_654)),
            "c_timestamptz": Bson::DateTime(DateTime::from_millis(1_709_208_855_654)),
            "c_interval": 37_091_106_789_000i64, "c_mood": "happy",
            "c_text_arr": ["a", Bson::Null], "c_int_arr": [1, -2],
            "c_bits": "1000000001",
            "c_point": doc! {"type": "Point", "coordinates": [1.5, -2.25]},
        };
        assert_eq!(after, expected, "format {format:?}");
    }
}

#[tokio::test]
async fn json_without_schema_maps_naturally() {
    let f = fixture();
    let key = f["schemaless"]["key"].as_str().unwrap();
    let value = f["schemaless"]["value"].as_str().unwrap();
    let decoder = Decoder::without_registry().with_default_format(Format::JsonSchemaless);
    let c = change(
        parse(
            &decoder,
            RawRecord::new(TOPIC)
                .with_key(key.as_bytes())
                .with_value(value.as_bytes()),
        )
        .await,
    );
    assert_eq!(c.op, Op::Read);
    let after = c.after.unwrap();
    // no schema: no semantics, values as JSON has them
    assert_eq!(after.get_i32("c_date").unwrap(), -3999);
    assert_eq!(after.get_str("c_numeric").unwrap(), "ALxhTg==");
    assert_eq!(after.get_i64("c_bigint").unwrap(), 9_876_543_210);
    assert_eq!(
        after
            .get_document("c_numeric_var")
            .unwrap()
            .get_i32("scale")
            .unwrap(),
        5
    );
}

#[tokio::test]
async fn truncate_transaction_and_unknown_op() {
    let decoder = Decoder::without_registry();
    let value = br#"{"before":null,"after":null,"source":{"connector":"postgresql","name":"cqrs","db":"cqrs",
        "schema":"s","table":"t","lsn":500,"txId":9,"ts_ms":1,"snapshot":"false"},"op":"t","ts_ms":2,
        "transaction":{"id":"9:500","total_order":1,"data_collection_order":1}}"#;
    let c = change(parse(&decoder, RawRecord::new("cqrs.s.t").with_value(value)).await);
    assert_eq!(c.op, Op::Truncate);
    assert!(c.key.is_none() && c.before.is_none() && c.after.is_none());
    let t = c.transaction.unwrap();
    assert_eq!(
        (t.id.as_str(), t.total_order, t.data_collection_order),
        ("9:500", Some(1), Some(1))
    );
    assert_eq!(c.version.position, 500);

    let bad = br#"{"op":"x","source":{"lsn":1},"after":null}"#;
    let e = parse(&decoder, RawRecord::new("cqrs.s.t").with_value(bad))
        .await
        .unwrap_err();
    assert!(
        matches!(e, EnvelopeError::InvalidField { field: "op", .. }),
        "{e}"
    );
    let no_lsn = br#"{"op":"c","source":{"table":"t"},"after":{"id":1}}"#;
    let e = parse(&decoder, RawRecord::new("cqrs.s.t").with_value(no_lsn))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            EnvelopeError::MissingField {
                field: "source.lsn"
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn skippable_kinds_and_non_envelopes() {
    let decoder = Decoder::without_registry();
    let heartbeat = parse(
        &decoder,
        RawRecord::new("__debezium-heartbeat.cqrs")
            .with_key(br#"{"serverName":"cqrs"}"#)
            .with_value(br#"{"ts_ms":1700000000000}"#),
    )
    .await
    .unwrap();
    assert_eq!(
        heartbeat,
        Event::Heartbeat {
            ts_ms: Some(1_700_000_000_000)
        }
    );
    let schema_change = parse(&decoder, RawRecord::new("cqrs")
        .with_value(br#"{"source":{},"ts_ms":1,"databaseName":"cqrs","ddl":"ALTER TABLE t ADD c int","tableChanges":[]}"#)).await.unwrap();
    assert_eq!(schema_change.kind(), "schema_change");
    assert!(schema_change.is_skippable());
    let boundary = parse(
        &decoder,
        RawRecord::new("cqrs.transaction").with_value(
            br#"{"status":"END","id":"9:500","event_count":2,"data_collections":[],"ts_ms":1}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        boundary,
        Event::TransactionBoundary {
            status: "END".into(),
            id: "9:500".into()
        }
    );
    let tombstone = parse(
        &decoder,
        RawRecord::new("cqrs.s.t").with_key(br#"{"id":3}"#),
    )
    .await
    .unwrap();
    assert_eq!(
        tombstone,
        Event::Tombstone {
            key: Some(doc! {"id": 3})
        }
    );

    for not_envelope in [&br#"{"hello":"world"}"#[..], b"[1,2]", br#""text""#] {
        let e = parse(
            &decoder,
            RawRecord::new("cqrs.s.t").with_value(not_envelope),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, EnvelopeError::NotAnEnvelope { .. }), "{e}");
    }
}

/// Outbox topics no projection reads are recognised and skipped (those a projection reads
/// are decoded by `cqrs-core`'s outbox decoder before this stage, see its tests).
#[tokio::test]
async fn unread_outbox_topics_are_skipped() {
    let decoder = Decoder::without_registry().with_topic_format(
        "outbox.event.Order",
        Format::String,
        Format::String,
    );
    let record = RawRecord::new("outbox.event.Order")
        .with_key(b"order-17")
        .with_value(br#"{"total": 12}"#)
        .with_header("id", Some(b"5f3c2a8e-0d0b-4c43-9b35-1f1d2d1a7e11"))
        .with_header("eventType", Some(b"OrderPlaced"));
    let event = parse(&decoder, record).await.unwrap();
    assert_eq!(
        event,
        Event::Outbox {
            topic: "outbox.event.Order".into()
        }
    );
    assert!(event.is_skippable());
}

#[tokio::test]
async fn format_errors_are_typed() {
    let decoder = Decoder::without_registry();
    let e = decoder
        .decode(&RawRecord::new("t").with_value(&[0, 0, 0, 0, 7, 1]))
        .await
        .unwrap_err();
    assert!(matches!(e, DecodeError::NoRegistry { .. }));
    let e = decoder
        .decode(&RawRecord::new("t").with_value(b"\x02garbage"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DecodeError::UnrecognisedFormat { first_byte: 2, .. }),
        "{e}"
    );
    let e = decoder
        .decode(&RawRecord::new("t").with_value(b"{broken"))
        .await
        .unwrap_err();
    assert!(matches!(e, DecodeError::NotJson { .. }), "{e}");
    let strict = Decoder::without_registry().with_default_format(Format::JsonWithSchema);
    let e = strict
        .decode(&RawRecord::new("t").with_value(br#"{"op":"c"}"#))
        .await
        .unwrap_err();
    assert!(matches!(e, DecodeError::InvalidConnectJson { .. }), "{e}");
    let string = Decoder::without_registry().with_default_format(Format::String);
    let e = string
        .decode(&RawRecord::new("t").with_key(&[0xff, 0xfe]))
        .await
        .unwrap_err();
    assert!(matches!(e, DecodeError::NotUtf8 { .. }));
}
