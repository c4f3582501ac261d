//! Decoding real Debezium 3.6.3 / Confluent AvroConverter messages (captured from the local
//! stack, see fixtures/types_fixture.sql) through an in-test Schema Registry, and the
//! registry failure modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod decode_support;

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{Bson, DateTime, Document, doc};
use chrono::NaiveDate;
use decode_support::{FakeRegistry, avro_fixture};
use sync_service::decode::{
    DecodeError, DecodedFormat, Decoder, Format, Part, RawRecord, RegistryDecoder, Retry,
    WireFormatProblem,
};
use sync_service::envelope::{Change, EnvelopeError, EnvelopeParser, Event, Op, Snapshot};
use sync_service::types::{DecimalError, TypeErrorKind};

const TOPIC: &str = "cqrs.cdc_types_fixture.all_types";

fn date(y: i32, m: u32, d: u32) -> Bson {
    let t = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    Bson::DateTime(DateTime::from_millis(t.and_utc().timestamp_millis()))
}

fn ts(text: &str) -> Bson {
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    Bson::DateTime(DateTime::from_millis(t.timestamp_millis()))
}

fn dec(text: &str) -> Bson {
    Bson::Decimal128(text.parse().unwrap())
}

fn bin(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
    Bson::Binary(bson::Binary {
        subtype,
        bytes: bytes.to_vec(),
    })
}

struct Setup {
    registry: FakeRegistry,
    decoder: Decoder,
}

async fn setup() -> Setup {
    let fixture = avro_fixture();
    let registry = FakeRegistry::with_schemas(&fixture.schemas);
    let url = registry.start().await;
    let decoder =
        Decoder::new(RegistryDecoder::new(&url).unwrap()).with_default_format(Format::Avro);
    Setup { registry, decoder }
}

/// Every captured record, decoded and parsed.
async fn events() -> (Setup, Vec<Result<Event, EnvelopeError>>) {
    let s = setup().await;
    let mut out = Vec::new();
    for m in avro_fixture().messages {
        let decoded = s.decoder.decode(&m.raw()).await.unwrap();
        if let Some(v) = &decoded.value {
            assert!(matches!(v.format, DecodedFormat::Avro { .. }));
        }
        out.push(EnvelopeParser::default().parse(&decoded));
    }
    (s, out)
}

fn changes(events: &[Result<Event, EnvelopeError>]) -> Vec<&Change> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(Event::Change(c)) => Some(&**c),
            _ => None,
        })
        .collect()
}

fn find<'a>(changes: &[&'a Change], op: Op, code: &str) -> &'a Change {
    changes
        .iter()
        .find(|c| c.op == op && c.key.as_ref().unwrap().get_str("code").unwrap() == code)
        .copied()
        .unwrap_or_else(|| panic!("no {op} for {code}"))
}

fn assert_fields(actual: &Document, expected: &Document) {
    for (k, v) in expected {
        assert_eq!(actual.get(k), Some(v), "column {k}");
    }
}

#[tokio::test]
async fn typical_row_matches_inserted_values() {
    let (_, events) = events().await;
    let changes = changes(&events);
    let c = find(&changes, Op::Create, "typical");
    assert_eq!(
        c.key.as_ref().unwrap(),
        &doc! {"tenant": 1, "code": "typical"}
    );
    assert_eq!(c.key_fields(), vec!["tenant", "code"]);
    assert!(c.before.is_none());
    let after = c.after.as_ref().unwrap();
    assert_eq!(after.len(), 37, "every column is present");
    let expected = doc! {
        "tenant": 1, "code": "typical",
        "c_smallint": 12, "c_integer": 123456, "c_bigint": 9_876_543_210i64,
        "c_real": 1.5, "c_double": 3.25,
        "c_numeric": dec("1234.5678"),
        "c_numeric_big": dec("123456789012345678901234.1234567890"),
        "c_numeric_var": dec("3.14159"),
        "c_money": dec("12.34"),
        "c_bool": true, "c_text": "hello", "c_varchar": "varchar", "c_char": "ab   ",
        "c_uuid": bin(BinarySubtype::Uuid, uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap().as_bytes()),
        "c_json": doc! {"b": 1, "a": [1, 2.5, "x", Bson::Null, true]},
        "c_jsonb": doc! {"n": 42, "nested": {"k": "v"}},
        "c_bytea": bin(BinarySubtype::Generic, &[0x00, 0xff, 0x10]),
        "c_date": date(2024, 2, 29),
        "c_time": "14:30:15.123456",
        "c_time3": "08:00:01.500000",
        "c_timetz": "08:11:12.5Z",
        "c_timestamp": ts("2024-02-29T13:14:15.654Z"),
        "c_timestamp3": ts("2024-02-29T13:14:15.123Z"),
        "c_timestamptz": ts("2024-02-29T12:14:15.654Z"),
        // 1 year 2 mons 3 days 04:05:06.789, months as 30.4375 days
        "c_interval": ((14.0 * 30.4375 + 3.0) * 86_400.0 * 1e6) as i64 + 14_706_789_000i64,
        "c_mood": "happy",
        "c_text_arr": ["a", "b c", ""],
        "c_int_arr": [1, 2, 3],
        "c_inet": "192.168.1.10/24", "c_cidr": "10.0.0.0/8",
        "c_bit1": true, "c_bits": "1010000001", "c_varbit": "0000000000000101",
        "c_xml": "<a>x</a>",
        "c_point": doc! {"type": "Point", "coordinates": [1.5, -2.25]},
    };
    assert_fields(after, &expected);
    // JSON key order is PostgreSQL's: kept for json, normalised by jsonb
    let keys: Vec<_> = after
        .get_document("c_json")
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, vec!["b", "a"]);
    // source and version
    assert_eq!(c.source.connector.as_deref(), Some("postgresql"));
    assert_eq!(c.source.schema.as_deref(), Some("cdc_types_fixture"));
    assert_eq!(c.source.table.as_deref(), Some("all_types"));
    assert_eq!(c.source.snapshot, Snapshot::No);
    assert!(c.source.tx_id.is_some());
    let lsn = c.source.lsn.unwrap();
    assert_eq!(c.version, cqrs_core::SourceVersion::new(lsn));
    assert!(c.transaction.is_none());
    assert_eq!(c.topic, TOPIC);
}

#[tokio::test]
async fn edge_row_matches_inserted_values() {
    let (_, events) = events().await;
    let changes = changes(&events);
    let after = find(&changes, Op::Create, "edge").after.clone().unwrap();
    let expected = doc! {
        "c_smallint": -32768, "c_integer": i32::MIN, "c_bigint": i64::MIN,
        "c_real": -0.1, "c_double": -1e300,
        "c_numeric": dec("-99999999.9999"),
        "c_numeric_big": dec("-999999999999999999999999.9999999999"),
        "c_numeric_var": dec("-0.000000000000000000001"),
        "c_money": dec("-92233720368547758.08"),
        "c_bool": false,
        "c_text": "üñíçødé \"quotes\" \\ backslash", "c_varchar": "", "c_char": "     ",
        "c_uuid": bin(BinarySubtype::Uuid, &[0; 16]),
        "c_json": Bson::Array(vec![]),
        "c_jsonb": "just a string",
        "c_bytea": bin(BinarySubtype::Generic, &[]),
        "c_date": date(1969, 7, 20),
        "c_time": "00:00:00.000000", "c_time3": "23:59:59.999000", "c_timetz": "00:00:00Z",
        // 1900-01-01 00:00:00.000001: floored to the millisecond
        "c_timestamp": ts("1900-01-01T00:00:00Z"),
        "c_timestamp3": ts("1969-12-31T23:59:59.999Z"),
        "c_timestamptz": ts("1970-01-01T00:00:00Z"),
        "c_interval": -259_200_000_001i64,
        "c_mood": "sad",
        "c_text_arr": Bson::Array(vec![]),
        "c_int_arr": [Bson::Null, Bson::Int32(-1)],
        "c_inet": "::1", "c_cidr": "2001:db8::/32",
        "c_bit1": false, "c_bits": "0000000000", "c_varbit": "0000000000000000",
        "c_xml": "<empty/>",
        "c_point": doc! {"type": "Point", "coordinates": [0.0, 0.0]},
    };
    assert_fields(&after, &expected);
}

#[tokio::test]
async fn nulls_infinities_and_overflow() {
    let (_, events) = events().await;
    let changes = changes(&events);
    let nulls = find(&changes, Op::Create, "nulls").after.clone().unwrap();
    for (k, v) in &nulls {
        if k != "tenant" && k != "code" {
            assert_eq!(v, &Bson::Null, "{k}");
        }
    }
    let inf = find(&changes, Op::Create, "infinity")
        .after
        .clone()
        .unwrap();
    assert_eq!(inf.get("c_timestamp"), Some(&Bson::DateTime(DateTime::MAX)));
    assert_eq!(
        inf.get("c_timestamptz"),
        Some(&Bson::DateTime(DateTime::MIN))
    );
    assert_eq!(inf.get("c_date"), Some(&date(2000, 1, 1)));

    // 40 significant digits (39 after the trailing zero): a typed error naming the column
    let overflow = events
        .iter()
        .find_map(|e| match e {
            Err(EnvelopeError::Types(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("the overflow row fails");
    assert_eq!(overflow.path, "c_numeric_var");
    assert_eq!(
        overflow.kind,
        TypeErrorKind::Decimal(DecimalError::TooManyDigits { digits: 39 })
    );
}

#[tokio::test]
async fn update_delete_tombstone_heartbeat() {
    let (_, events) = events().await;
    let changes = changes(&events);
    let created = find(&changes, Op::Create, "typical");
    let update = find(&changes, Op::Update, "typical");
    let before = update.before.as_ref().unwrap();
    let after = update.after.as_ref().unwrap();
    assert_eq!(before.get_i32("c_integer").unwrap(), 123456);
    assert_eq!(after.get_i32("c_integer").unwrap(), 7);
    assert_eq!(after.get_str("c_text").unwrap(), "updated");
    assert!(update.version > created.version, "LSNs grow");

    let delete = find(&changes, Op::Delete, "nulls");
    assert!(delete.after.is_none());
    assert_eq!(
        delete.before.as_ref().unwrap().get_str("code").unwrap(),
        "nulls"
    );
    assert_eq!(delete.row(), delete.before.as_ref());

    assert!(events.iter().any(|e| matches!(e,
        Ok(Event::Tombstone { key: Some(k) }) if k == &doc! {"tenant": 2, "code": "nulls"})));
    let heartbeat = events
        .iter()
        .find(|e| matches!(e, Ok(Event::Heartbeat { .. })))
        .unwrap();
    assert!(matches!(heartbeat, Ok(Event::Heartbeat { ts_ms: Some(t) }) if *t > 1_700_000_000_000));
    assert!(heartbeat.as_ref().unwrap().is_skippable());
}

#[tokio::test]
async fn one_registry_request_per_schema_id() {
    let (s, _) = events().await;
    for id in [1, 2, 7, 8] {
        assert_eq!(s.registry.hits(id), 1, "schema id {id}");
    }
}

fn first_value() -> Vec<u8> {
    avro_fixture()
        .messages
        .into_iter()
        .find(|m| m.topic == TOPIC && m.value.is_some())
        .unwrap()
        .value
        .unwrap()
}

#[tokio::test]
async fn wire_format_and_body_errors() {
    let s = setup().await;
    let part = |bytes: Vec<u8>| {
        let d = &s.decoder;
        async move { d.decode_part(Part::Value, Format::Avro, &bytes).await }
    };
    assert!(matches!(
        part(vec![1, 0, 0, 0, 8, 2]).await,
        Err(DecodeError::NotWireFormat {
            problem: WireFormatProblem::BadMagicByte { byte: 1 },
            ..
        })
    ));
    assert!(matches!(
        part(vec![0, 0, 0]).await,
        Err(DecodeError::NotWireFormat {
            problem: WireFormatProblem::TooShort { len: 3 },
            ..
        })
    ));
    let mut truncated = first_value();
    truncated.truncate(40);
    let e = part(truncated).await.unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::CorruptAvro {
                id: 8,
                part: Part::Value,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.retry(), Retry::Permanent);
    // A tombstone is not an error
    let d = s
        .decoder
        .decode(&RawRecord::new(TOPIC).with_key(&[0, 0, 0, 0, 7, 2, 2, b'x']))
        .await
        .unwrap();
    assert!(d.is_tombstone());
}

#[tokio::test]
async fn unknown_schema_id_is_cached_then_found_once_registered() {
    let fixture = avro_fixture();
    let registry = FakeRegistry::default();
    let url = registry.start().await;
    let decoder = RegistryDecoder::new(&url)
        .unwrap()
        .with_unknown_id_retry_after(Duration::from_secs(3600));
    let value = first_value();

    let e = decoder.decode(Part::Value, &value).await.unwrap_err();
    assert!(
        matches!(e, DecodeError::UnknownSchemaId { id: 8, .. }),
        "{e}"
    );
    assert!(!e.is_transient());
    let _ = decoder.decode(Part::Value, &value).await.unwrap_err();
    assert_eq!(registry.hits(8), 1, "the 404 is remembered");

    registry.set(8, 200, &fixture.schemas[&8]);
    assert!(
        decoder.decode(Part::Value, &value).await.is_err(),
        "still remembered"
    );
    decoder.forget_failures();
    let (datum, schema, id) = decoder.decode(Part::Value, &value).await.unwrap();
    assert_eq!(id, 8);
    assert_eq!(
        schema.name_str(),
        "cqrs.cdc_types_fixture.all_types.Envelope"
    );
    assert!(datum.get("after").is_some());
}

#[tokio::test]
async fn unknown_schema_id_is_asked_again_after_the_retry_delay() {
    let fixture = avro_fixture();
    let registry = FakeRegistry::default();
    let url = registry.start().await;
    let decoder = RegistryDecoder::new(&url)
        .unwrap()
        .with_unknown_id_retry_after(Duration::ZERO);
    let value = first_value();
    assert!(decoder.decode(Part::Value, &value).await.is_err());
    registry.set(8, 200, &fixture.schemas[&8]);
    assert!(decoder.decode(Part::Value, &value).await.is_ok());
    assert_eq!(registry.hits(8), 2);
}

#[tokio::test]
async fn registry_outages_are_transient_and_not_cached() {
    let fixture = avro_fixture();
    let value = first_value();

    // nothing listening
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let decoder = RegistryDecoder::new(&dead).unwrap();
    let e = decoder.decode(Part::Value, &value).await.unwrap_err();
    assert!(
        matches!(e, DecodeError::RegistryUnavailable { id: 8, .. }),
        "{e}"
    );
    assert_eq!(e.retry(), Retry::Transient);

    // 503, then 500 (which schema_registry_converter caches), then healthy
    let registry = FakeRegistry::default();
    let url = registry.start().await;
    let decoder = RegistryDecoder::new(&url).unwrap();
    registry.set(8, 503, r#"{"error_code":50301,"message":"down"}"#);
    assert!(
        decoder
            .decode(Part::Value, &value)
            .await
            .unwrap_err()
            .is_transient()
    );
    registry.set(8, 500, r#"{"error_code":50001,"message":"boom"}"#);
    assert!(
        decoder
            .decode(Part::Value, &value)
            .await
            .unwrap_err()
            .is_transient()
    );
    registry.set(8, 200, &fixture.schemas[&8]);
    assert!(decoder.decode(Part::Value, &value).await.is_ok());
    assert_eq!(registry.hits(8), 3);
}

#[tokio::test]
async fn auto_format_sniffs_avro() {
    let s = setup().await;
    let value = first_value();
    let auto = s.decoder.clone().with_default_format(Format::Auto);
    let d = auto
        .decode(&RawRecord::new(TOPIC).with_value(&value))
        .await
        .unwrap();
    assert_eq!(
        d.value.unwrap().format,
        DecodedFormat::Avro { schema_id: 8 }
    );
}
