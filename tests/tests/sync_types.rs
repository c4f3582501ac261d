//! The full PostgreSQL type matrix through the real pipeline (Debezium, Kafka, the Avro
//! converter, the registry, the embedded sync-service, MongoDB), compared field by field
//! against PostgreSQL.
//!
//! The expected BSON of every column is built from PostgreSQL's own rendering of the value
//! (`::text`, `to_char`, `extract(epoch ...)`, `floor(... * 1000)`, ...) and the mapping table
//! documented in `sync_service::types`, not by decoding Debezium's encoding again: the test
//! checks the mapping, not a second copy of the decoder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use support::{Running, Scenario, until};
use sync_service::SyncService;
use tokio_postgres::Row;

const WAIT: Duration = Duration::from_secs(45);

/// How the PostgreSQL rendering of a column becomes the BSON the mapping promises.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `smallint` read as i16: Int32.
    I16,
    /// `integer`: Int32.
    I32,
    /// `bigint` (or a bigint expression): Int64.
    I64,
    /// Float text (PostgreSQL prints the shortest exact form): Double.
    Float,
    /// Decimal text: Decimal128 with the same digits and scale.
    Decimal,
    /// Boolean.
    Bool,
    /// Text: String.
    Str,
    /// UUID text: Binary subtype 4.
    Uuid,
    /// JSON text: embedded document / array / scalar, key order kept.
    Json,
    /// `bytea`: Binary (generic).
    Bytes,
    /// Milliseconds since the epoch (i64::MAX / MIN for ±infinity): Date.
    Millis,
    /// `text[]`: Array of String / Null.
    StrArray,
    /// `int[]`: Array of Int32 / Null.
    IntArray,
    /// `array[x, y]` of a point: GeoJSON point.
    Point,
}

/// A column of the matrix: name, SQL type, the expression (`{c}` = the column) PostgreSQL
/// renders the expected value with, and how that rendering becomes BSON.
struct Column {
    name: &'static str,
    sql_type: &'static str,
    expr: &'static str,
    kind: Kind,
}

const fn col(name: &'static str, sql_type: &'static str, expr: &'static str, kind: Kind) -> Column {
    Column {
        name,
        sql_type,
        expr,
        kind,
    }
}

/// Milliseconds since the epoch, floored (BSON dates hold ms), ±infinity as i64::MAX / MIN.
const MILLIS: &str = "CASE WHEN {c} = 'infinity' THEN 9223372036854775807 \
     WHEN {c} = '-infinity' THEN -9223372036854775808 \
     ELSE floor(extract(epoch FROM {c}) * 1000)::bigint END";

/// `HH:MM:SS.ffffff`, always six fraction digits.
const TIME_OF_DAY: &str = "to_char({c}, 'HH24:MI:SS.US')";

/// Debezium's `ZonedTime`: the time in UTC, ISO-8601, fraction without trailing zeros, `Z`.
const ZONED_TIME: &str = "to_char(({c} AT TIME ZONE 'UTC')::time, 'HH24:MI:SS') \
     || coalesce(nullif(rtrim('.' || to_char(({c} AT TIME ZONE 'UTC')::time, 'US'), '0'), '.'), '') || 'Z'";

/// Debezium's `MicroDuration`: microseconds, a month being 30.4375 days (365.25 / 12).
const INTERVAL_MICROS: &str = "(((extract(year FROM {c}) * 12 + extract(month FROM {c})) * 30.4375 \
     + extract(day FROM {c})) * 86400000000 + extract(hour FROM {c}) * 3600000000 \
     + extract(minute FROM {c}) * 60000000 + extract(microseconds FROM {c}))::bigint";

/// Days since 1970 in milliseconds; date ±infinity like timestamps (the BSON date's max/min).
const DATE_MILLIS: &str = "CASE WHEN {c} = 'infinity' THEN 9223372036854775807 \
     WHEN {c} = '-infinity' THEN -9223372036854775808 \
     ELSE ({c} - date '1970-01-01')::bigint * 86400000 END";

/// `INTERVAL_MICROS`, and Debezium's clamp to Int64 beyond ±292,000 years.
const INTERVAL_CLAMPED: &str = "CASE WHEN {c} > interval '200000 years' THEN 9223372036854775807 \
     WHEN {c} < interval '-200000 years' THEN -9223372036854775808 \
     ELSE (((extract(year FROM {c}) * 12 + extract(month FROM {c})) * 30.4375 \
     + extract(day FROM {c})) * 86400000000 + extract(hour FROM {c}) * 3600000000 \
     + extract(minute FROM {c}) * 60000000 + extract(microseconds FROM {c}))::bigint END";

const COLUMNS: &[Column] = &[
    col("c_smallint", "smallint", "{c}", Kind::I16),
    col("c_integer", "integer", "{c}", Kind::I32),
    col("c_bigint", "bigint", "{c}", Kind::I64),
    col("c_real", "real", "{c}::text", Kind::Float),
    col("c_double", "double precision", "{c}::text", Kind::Float),
    col("c_numeric", "numeric(12,4)", "{c}::text", Kind::Decimal),
    col(
        "c_numeric_big",
        "numeric(34,10)",
        "{c}::text",
        Kind::Decimal,
    ),
    col("c_numeric_var", "numeric", "{c}::text", Kind::Decimal),
    col("c_money", "money", "{c}::numeric::text", Kind::Decimal),
    col("c_bool", "boolean", "{c}", Kind::Bool),
    col("c_text", "text", "{c}", Kind::Str),
    col("c_varchar", "varchar(20)", "{c}", Kind::Str),
    // read in binary: char(n) keeps its padding (`::text` would strip it)
    col("c_char", "char(5)", "{c}", Kind::Str),
    col("c_uuid", "uuid", "{c}::text", Kind::Uuid),
    col("c_json", "json", "{c}::text", Kind::Json),
    col("c_jsonb", "jsonb", "{c}::text", Kind::Json),
    col("c_bytea", "bytea", "{c}", Kind::Bytes),
    col("c_date", "date", DATE_MILLIS, Kind::Millis),
    col("c_time", "time", TIME_OF_DAY, Kind::Str),
    col("c_time3", "time(3)", TIME_OF_DAY, Kind::Str),
    col("c_timetz", "timetz", ZONED_TIME, Kind::Str),
    col("c_timestamp", "timestamp", MILLIS, Kind::Millis),
    col("c_timestamp3", "timestamp(3)", MILLIS, Kind::Millis),
    col("c_timestamptz", "timestamptz", MILLIS, Kind::Millis),
    col("c_interval", "interval", INTERVAL_MICROS, Kind::I64),
    col("c_mood", "{s}.mood", "{c}::text", Kind::Str),
    col("c_text_arr", "text[]", "{c}", Kind::StrArray),
    col("c_int_arr", "integer[]", "{c}", Kind::IntArray),
    // PostgreSQL's output form (`format`), which leaves out a /32 host mask (`::text` does not)
    col(
        "c_inet",
        "inet",
        "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END",
        Kind::Str,
    ),
    col(
        "c_cidr",
        "cidr",
        "CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END",
        Kind::Str,
    ),
    col("c_bit1", "bit(1)", "{c} = B'1'", Kind::Bool),
    col("c_bits", "bit(10)", "{c}::text", Kind::Str),
    // unpadded (the connector propagates the VARBIT source type); a varbit's leading zeros
    // are lost in Debezium (documented), these values have none
    col("c_varbit", "bit varying(16)", "{c}::text", Kind::Str),
    col("c_xml", "xml", "{c}::text", Kind::Str),
    col(
        "c_point",
        "point",
        "CASE WHEN {c} IS NOT NULL THEN array[{c}[0], {c}[1]] END",
        Kind::Point,
    ),
    // an unbounded varbit: Debezium sends length 2147483647
    col("c_varbit_any", "varbit", "{c}::text", Kind::Str),
    col("c_int4range", "int4range", "{c}::text", Kind::Str),
    col("c_tstzrange", "tstzrange", "{c}::text", Kind::Str),
    col("c_macaddr", "macaddr", "{c}::text", Kind::Str),
    // documented loss in Debezium: beyond Int64 microseconds, clamped to its limits
    col("c_interval_big", "interval", INTERVAL_CLAMPED, Kind::I64),
    // documented loss in Debezium: numeric NaN and ±Infinity arrive as null
    col(
        "c_numeric_special",
        "numeric",
        "CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {c}::text END",
        Kind::Decimal,
    ),
    // documented loss in Debezium: a multi-dimensional array arrives as one null per row
    col(
        "c_int_2d",
        "integer[]",
        "CASE WHEN array_ndims({c}) > 1 THEN array_fill(NULL::int, ARRAY[array_length({c}, 1)]) \
         ELSE {c} END",
        Kind::IntArray,
    ),
];

const ROWS: &str = r#"
-- 1: ordinary values
INSERT INTO {s}.all_types VALUES (
    1, 'typical', 12, 123456, 9876543210, 0.1, 3.25, 1234.5678, 123456789012345678901234.1234567890,
    3.14159, 12.34, true, 'hello', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"b": 1, "a": [1, 2.5, "x", null, true], "big": 3000000000, "neg": -7, "f": 1e-7}',
    '{"nested": {"k": "v"}, "n": 42, "arr": [[], {}]}', '\x00ff10',
    '2024-02-29', '14:30:15.123456', '08:00:01.5', '10:11:12.5+02', '2024-02-29 13:14:15.654321',
    '2024-02-29 13:14:15.123', '2024-02-29 13:14:15.654321+01', '1 year 2 mons 3 days 04:05:06.789',
    'happy', ARRAY['a', 'b c', ''], ARRAY[1, 2, 3], '192.168.1.10/24', '10.0.0.0/8',
    B'1', B'1010000001', B'101', '<a>x</a>', '(1.5,-2.25)',
    B'1101', '[1,5)', '[2024-01-01,2024-02-01)', '08:00:2b:01:02:03', '1000000 years', 'NaN',
    ARRAY[[1, 2], [3, 4]]);

-- 2: edge values: minimums, negative and 30+-digit decimals, pre-1970, empty strings/arrays
INSERT INTO {s}.all_types VALUES (
    1, 'edge', -32768, -2147483648, -9223372036854775808, -0.1, -1e300, -99999999.9999,
    -999999999999999999999999.9999999999, -12345678901234567890123456789.12345, -92233720368547758.08, false,
    'üñíçødé "quotes" \ backslash', '', '     ', '00000000-0000-0000-0000-000000000000',
    '[]', '"just a string"', '\x', '1969-07-20', '00:00:00', '23:59:59.999', '00:00:00+00',
    '1900-01-01 00:00:00.000001', '1969-12-31 23:59:59.999', '1970-01-01 00:00:00+00',
    '-3 days -00:00:00.000001', 'sad', ARRAY[]::text[], ARRAY[NULL, -1]::integer[], '::1', '2001:db8::/32',
    B'0', B'0000000000', B'', '<empty/>', '(0,0)',
    B'', 'empty', '(,)', '00:00:00:00:00:00', '-170000000 years', 'Infinity', ARRAY[[1], [2], [3]]);

-- 3: maximums, float specials, a host address, old dates and timestamps, tiny decimals
INSERT INTO {s}.all_types VALUES (
    1, 'max', 32767, 2147483647, 9223372036854775807, 'Infinity', 'NaN', 99999999.9999,
    0.0000000001, 0.000000000000000000000000000001, 92233720368547758.07, true,
    repeat('long text ', 500), 'exactly twenty chars', 'abcde', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    '{"unicode": "żółw 🐢", "esc": "a\"b\\c\n", "nested": {"z": 1, "a": {"y": [null]}}}',
    '[1, "two", {"three": 3.5}]', '\xdeadbeef', '1066-10-14', '23:59:59.999999', '12:00:00',
    '23:59:59.999999-11:30', '1901-12-13 20:45:52.999999', '1955-11-05 06:15:00.001',
    '1887-03-01 12:00:00.5-05', '-1 year -2 mons +3 days -04:05:06', 'ok',
    ARRAY['NULL', NULL, 'comma,quote"'], ARRAY[2147483647, -2147483648], '10.0.0.1', '192.168.0.0/16',
    B'1', B'1111111111', B'1111111111111111', '<r a="1"><b/></r>', '(-1e10,3.5e-7)',
    B'1', '(,10]', '["2024-01-01 10:00:00+02",)', 'ff:ff:ff:ff:ff:ff', '1 day 00:00:01', '-Infinity',
    ARRAY[7]);

-- 4: NULLs everywhere but the key
INSERT INTO {s}.all_types (tenant, code) VALUES (2, 'nulls');

-- 5: infinities
INSERT INTO {s}.all_types (tenant, code, c_timestamp, c_timestamptz, c_real, c_double, c_date)
    VALUES (3, 'infinity', 'infinity', '-infinity', '-Infinity', 'Infinity', 'infinity');
INSERT INTO {s}.all_types (tenant, code, c_date) VALUES (3, 'ninfinity', '-infinity');

-- 6: zeros
INSERT INTO {s}.all_types (tenant, code, c_smallint, c_integer, c_bigint, c_real, c_double, c_numeric,
        c_numeric_big, c_numeric_var, c_money, c_interval, c_json, c_jsonb, c_date, c_timestamp)
    VALUES (3, 'zeros', 0, 0, 0, 0, -0, 0, 0.0000000000, 0, 0, '0 seconds', '{}', 'null', '1970-01-01',
        '1970-01-01 00:00:00');

-- 7: a row to delete
INSERT INTO {s}.all_types (tenant, code, c_text) VALUES (4, 'doomed', 'bye');
"#;

const CHANGES: &str = r#"
UPDATE {s}.all_types SET c_integer = 7, c_text = 'updated', c_numeric_var = NULL,
    c_json = '{"z": {"y": [1, {"x": null}]}, "a": 3000000000}', c_int_arr = ARRAY[]::integer[],
    c_timestamptz = '1969-12-31 23:59:59.999999+00'
    WHERE tenant = 1 AND code = 'typical';
UPDATE {s}.all_types SET c_smallint = -1, c_numeric = -0.0001, c_money = -0.01, c_mood = 'happy',
    c_text_arr = ARRAY['x'], c_interval = '100 years', c_timetz = '23:30:00.000001+14', c_bool = false,
    c_uuid = gen_random_uuid(), c_bytea = '\x00', c_timestamp3 = '2038-01-19 03:14:08'
    WHERE tenant = 2 AND code = 'nulls';
UPDATE {s}.all_types SET c_text = NULL, c_char = NULL, c_point = NULL, c_xml = NULL
    WHERE tenant = 1 AND code = 'max';
DELETE FROM {s}.all_types WHERE tenant = 4 AND code = 'doomed';
"#;

fn table_ddl() -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    format!(
        "CREATE TYPE {{s}}.mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE {{s}}.all_types (tenant integer NOT NULL, code text NOT NULL, {},
                                       PRIMARY KEY (tenant, code));
         ALTER TABLE {{s}}.all_types REPLICA IDENTITY FULL;",
        columns.join(", ")
    )
}

/// JSON text to BSON as the mapping documents it (objects in key order, integers Int32 when
/// they fit else Int64, other numbers Double), without sync-service code.
struct JsonBson(Bson);

impl<'de> serde::Deserialize<'de> for JsonBson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonBsonVisitor)
    }
}

struct JsonBsonVisitor;

impl<'de> Visitor<'de> for JsonBsonVisitor {
    type Value = JsonBson;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<JsonBson, E> {
        Ok(JsonBson(Bson::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<JsonBson, E> {
        Ok(JsonBson(Bson::Boolean(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<JsonBson, E> {
        Ok(JsonBson(
            i32::try_from(v).map_or(Bson::Int64(v), Bson::Int32),
        ))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JsonBson, E> {
        Ok(JsonBson(match (i32::try_from(v), i64::try_from(v)) {
            (Ok(i), _) => Bson::Int32(i),
            (_, Ok(i)) => Bson::Int64(i),
            _ => Bson::Double(v as f64),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<JsonBson, E> {
        Ok(JsonBson(Bson::Double(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<JsonBson, E> {
        Ok(JsonBson(Bson::String(v.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonBson, A::Error> {
        let mut items = Vec::new();
        while let Some(JsonBson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(JsonBson(Bson::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonBson, A::Error> {
        let mut doc = Document::new();
        while let Some((k, JsonBson(v))) = map.next_entry::<String, JsonBson>()? {
            doc.insert(k, v);
        }
        Ok(JsonBson(Bson::Document(doc)))
    }
}

/// The BSON the documented mapping promises for column `i + 2` of `row`.
fn expected_value(row: &Row, i: usize, column: &Column) -> Bson {
    let idx = i + 2;
    fn or_null<T>(v: Option<T>, f: impl FnOnce(T) -> Bson) -> Bson {
        v.map_or(Bson::Null, f)
    }
    match column.kind {
        Kind::I16 => or_null(row.get::<_, Option<i16>>(idx), |v| Bson::Int32(v.into())),
        Kind::I32 => or_null(row.get::<_, Option<i32>>(idx), Bson::Int32),
        Kind::I64 => or_null(row.get::<_, Option<i64>>(idx), Bson::Int64),
        Kind::Float => or_null(row.get::<_, Option<String>>(idx), |t| {
            Bson::Double(
                t.parse::<f64>()
                    .unwrap_or_else(|e| panic!("{}: float text {t:?}: {e}", column.name)),
            )
        }),
        Kind::Decimal => or_null(row.get::<_, Option<String>>(idx), |t| {
            Bson::Decimal128(
                t.parse()
                    .unwrap_or_else(|e| panic!("{}: decimal text {t:?}: {e:?}", column.name)),
            )
        }),
        Kind::Bool => or_null(row.get::<_, Option<bool>>(idx), Bson::Boolean),
        Kind::Str => or_null(row.get::<_, Option<String>>(idx), Bson::String),
        Kind::Uuid => or_null(row.get::<_, Option<String>>(idx), |t| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: uuid::Uuid::parse_str(&t).unwrap().as_bytes().to_vec(),
            })
        }),
        Kind::Json => or_null(row.get::<_, Option<String>>(idx), |t| {
            serde_json::from_str::<JsonBson>(&t)
                .unwrap_or_else(|e| panic!("{}: JSON text {t:?}: {e}", column.name))
                .0
        }),
        Kind::Bytes => or_null(row.get::<_, Option<Vec<u8>>>(idx), |b| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: b,
            })
        }),
        Kind::Millis => or_null(row.get::<_, Option<i64>>(idx), |ms| {
            Bson::DateTime(match ms {
                i64::MAX => DateTime::MAX,
                i64::MIN => DateTime::MIN,
                ms => DateTime::from_millis(ms),
            })
        }),
        Kind::StrArray => or_null(row.get::<_, Option<Vec<Option<String>>>>(idx), |v| {
            Bson::Array(
                v.into_iter()
                    .map(|s| s.map_or(Bson::Null, Bson::String))
                    .collect(),
            )
        }),
        Kind::IntArray => or_null(row.get::<_, Option<Vec<Option<i32>>>>(idx), |v| {
            Bson::Array(
                v.into_iter()
                    .map(|s| s.map_or(Bson::Null, Bson::Int32))
                    .collect(),
            )
        }),
        Kind::Point => or_null(row.get::<_, Option<Vec<f64>>>(idx), |xy| {
            let mut d = Document::new();
            d.insert("type", "Point");
            d.insert(
                "coordinates",
                Bson::Array(xy.into_iter().map(Bson::Double).collect()),
            );
            Bson::Document(d)
        }),
    }
}

/// Every current row of the table as `(tenant, code) -> column -> expected BSON`.
async fn expected_rows(s: &Scenario) -> BTreeMap<(i32, String), Vec<(&'static str, Bson)>> {
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|c| c.expr.replace("{c}", c.name))
        .collect();
    let sql = format!(
        "SELECT tenant, code, {} FROM {}.all_types ORDER BY tenant, code",
        exprs.join(", "),
        s.schema
    );
    let rows =
        s.pg.query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    rows.iter()
        .map(|row| {
            let tenant: i32 = row.get(0);
            let code: String = row.get(1);
            let mut fields = vec![
                ("tenant", Bson::Int32(tenant)),
                ("code", Bson::String(code.clone())),
            ];
            fields.extend(
                COLUMNS
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name, expected_value(row, i, c))),
            );
            ((tenant, code), fields)
        })
        .collect()
}

/// Equality that also requires the same key order in documents and treats NaN as NaN.
fn same(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => {
            (x.is_nan() && y.is_nan()) || (x == y && x.is_sign_negative() == y.is_sign_negative())
        }
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(va, vb)| same(va, vb))
        }
        _ => a == b,
    }
}

/// Every difference between MongoDB and PostgreSQL, one line each, naming row and column.
async fn differences(s: &Scenario) -> Vec<String> {
    let expected = expected_rows(s).await;
    let mut actual: BTreeMap<(i32, String), Document> = BTreeMap::new();
    let mut problems = Vec::new();
    for d in s.live_docs("all_types").await {
        let Some(Bson::Document(id)) = d.get("_id") else {
            problems.push(format!("document without a sub-document _id: {d}"));
            continue;
        };
        match (id.get_i32("tenant"), id.get_str("code")) {
            (Ok(t), Ok(c)) if id.len() == 2 => {
                actual.insert((t, c.to_owned()), d.clone());
            }
            _ => problems.push(format!("_id is not {{tenant: int, code: string}}: {id}")),
        }
    }
    for key in actual.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("row {key:?}: in MongoDB, not in PostgreSQL"));
    }
    for (key, fields) in &expected {
        let Some(doc) = actual.get(key) else {
            problems.push(format!("row {key:?}: in PostgreSQL, not in MongoDB"));
            continue;
        };
        for (name, want) in fields {
            match doc.get(*name) {
                None => problems.push(format!(
                    "row {key:?} column {name}: missing in MongoDB, PostgreSQL has {want:?}"
                )),
                Some(got) if !same(got, want) => problems.push(format!(
                    "row {key:?} column {name}: MongoDB has {got:?}, PostgreSQL has {want:?}"
                )),
                Some(_) => {}
            }
        }
        for extra in doc.keys().filter(|k| {
            *k != "_id" && !k.starts_with("_version") && !fields.iter().any(|(n, _)| n == k)
        }) {
            problems.push(format!(
                "row {key:?}: unexpected field {extra} = {:?}",
                doc.get(extra)
            ));
        }
    }
    problems
}

async fn wait_until_equal(s: &Scenario, what: &str) {
    until(what, WAIT, || async {
        let problems = differences(s).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} difference(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_column_type_matches_postgres_field_by_field() {
    let s = Scenario::new("types").await;
    let guard = s.cleanup_guard();
    // ranges of timestamptz are compared as text: in UTC, like Debezium's session
    s.sql("SET TIME ZONE 'UTC'").await;
    s.sql(&table_ddl()).await;
    s.sql(ROWS).await;

    let service = Running::start(SyncService::new(s.config(
        r#"
        [[projection]]
        table = "{s}.all_types"
        collection = "all_types"
        "#,
    )));
    wait_until_equal(&s, "the inserted rows to match PostgreSQL column by column").await;
    assert_eq!(s.live_docs("all_types").await.len(), 8);

    s.sql(CHANGES).await;
    wait_until_equal(&s, "the updated rows to match PostgreSQL column by column").await;

    // The deleted row left a tombstone, nothing else.
    let all = s.all_docs("all_types").await;
    let tombstone = all
        .iter()
        .find(|d| {
            d.get_document("_id")
                .is_ok_and(|id| id.get_i32("tenant") == Ok(4))
        })
        .expect("tombstone of the deleted row");
    assert_eq!(tombstone.get_bool("_deleted"), Ok(true), "{tombstone}");
    assert!(tombstone.get("c_text").is_none(), "{tombstone}");
    // Readers of the read model's name never see it.
    let visible = s.view_docs("all_types").await;
    assert_eq!(visible.len(), all.len() - 1, "{visible:?}");
    assert!(
        visible.iter().all(|d| d.get("_deleted").is_none()),
        "{visible:?}"
    );

    service.stop().await;
    // Nothing was dead-lettered: every value of every change converted.
    let dead = s.all_docs("_sync_dead_letters").await;
    assert!(dead.is_empty(), "dead-lettered messages: {dead:?}");
    s.cleanup().await;
    guard.disarm();
}
