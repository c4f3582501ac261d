//! Instructions per change: the sync-service's decode + envelope + types + map of one
//! Debezium Avro message of a 20-column row, against `apache-avro` decoding the same bytes
//! into its own `Value` (the bare decode), counted by `valgrind --tool=callgrind` in the
//! same run (instruction counts are repeatable on a noisy, shared machine; times are not).
//!
//! ```text
//! cargo bench -p sync-service --bench decode_cost     # needs valgrind (make bench installs it)
//! ```
//!
//! The message is a real one: `benches/data/wide-*.bin` are the key and value Debezium 3.6.3
//! produced for one row of a 20-column PostgreSQL table (int, text, varchar, smallint,
//! bigint, numeric(12,2), double, real, boolean, uuid, jsonb, text, timestamptz, timestamp,
//! date, time, text, text, bytea, bigint), `wide-*.avsc` the schemas it registered. A
//! registry stand-in inside the process serves those schemas to the real client.
//!
//! Each path runs under callgrind twice, with `BENCH_ITERATIONS` messages (default 2000)
//! and with none (set-up, schema fetch and one warm-up message only); the difference over
//! the iterations is the cost of one message. Without valgrind it falls back to wall-clock
//! medians (noisy here). Not a test: under `cargo test` it only says how to run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

use sync_service::config::TableMapping;
use sync_service::decode::{Decoder, Format, RawRecord, RegistryDecoder};
use sync_service::envelope::{EnvelopeParser, Event};
use sync_service::map::{Projections, TableProjection};

const KEY: &[u8] = include_bytes!("data/wide-key.bin");
const VALUE: &[u8] = include_bytes!("data/wide-value.bin");
const KEY_SCHEMA: &str = include_str!("data/wide-key.avsc");
const VALUE_SCHEMA: &str = include_str!("data/wide-value.avsc");
const TOPIC: &str = "cqrs.cdc_bench_wide_7066.wide";
const TABLE: &str = "cdc_bench_wide_7066.wide";

fn schema_id(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
}

/// Serves `GET /schemas/ids/{id}` for the two schemas; returns its URL.
fn registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            // Drain the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let schema = if line.contains(&format!("/schemas/ids/{}", schema_id(KEY))) {
                Some(KEY_SCHEMA)
            } else if line.contains(&format!("/schemas/ids/{}", schema_id(VALUE))) {
                Some(VALUE_SCHEMA)
            } else {
                None
            };
            let (status, body) = match schema {
                Some(s) => ("200 OK", serde_json::json!({ "schema": s }).to_string()),
                None => (
                    "404 Not Found",
                    r#"{"error_code":40403,"message":"Schema not found"}"#.to_owned(),
                ),
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Our path: decode (registry client, raw schema, datum), envelope, types and map.
fn ours(iterations: usize) {
    let url = registry();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let decoder =
        Decoder::new(RegistryDecoder::new(&url).unwrap()).with_default_format(Format::Avro);
    let parser = EnvelopeParser::default();
    let mapping: TableMapping =
        toml::from_str(&format!("table = \"{TABLE}\"\ncollection = \"wide\"")).unwrap();
    let mut projections = Projections::default();
    projections.add_table(TableProjection::new(&mapping, "read"));
    rt.block_on(async {
        let one = async || {
            let raw = RawRecord::new(TOPIC)
                .at(0, 0)
                .with_key(KEY)
                .with_value(VALUE);
            let decoded = decoder.decode(&raw).await.expect("decodes");
            let Ok(Event::Change(change)) = parser.parse(&decoded) else {
                panic!("not a change")
            };
            let writes = projections.plan(&change).expect("maps");
            assert_eq!(writes.len(), 1);
            black_box(writes);
        };
        one().await; // warm-up: fetches both schemas
        for _ in 0..iterations {
            one().await;
        }
    });
}

/// The baseline: `apache-avro` decoding key and value into its `Value`, with readers built
/// once (the schema resolved once, as the registry client does too).
fn bare(iterations: usize) {
    use apache_avro::reader::datum::GenericDatumReader;
    let key_schema = apache_avro::Schema::parse_str(KEY_SCHEMA).unwrap();
    let value_schema = apache_avro::Schema::parse_str(VALUE_SCHEMA).unwrap();
    let key_reader = GenericDatumReader::builder(&key_schema).build().unwrap();
    let value_reader = GenericDatumReader::builder(&value_schema).build().unwrap();
    let one = || {
        let key = key_reader.read_value(&mut &KEY[5..]).unwrap();
        let value = value_reader.read_value(&mut &VALUE[5..]).unwrap();
        black_box((key, value));
    };
    one();
    for _ in 0..iterations {
        one();
    }
}

/// Instructions of `path` with `iterations` messages, under callgrind.
fn callgrind(path: &str, iterations: usize) -> Option<u64> {
    let exe = std::env::current_exe().unwrap();
    let out = std::env::temp_dir().join(format!("callgrind.decode_cost.{}", std::process::id()));
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--cache-sim=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["--measure", path, &iterations.to_string()])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!("valgrind failed: {stderr}");
        return None;
    }
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().parse().ok())
        })
        .flatten()
}

fn wall_clock(path: fn(usize), iterations: usize) -> f64 {
    let mut slices: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            path(iterations);
            started.elapsed().as_secs_f64() * 1e9 / iterations as f64
        })
        .collect();
    slices.sort_by(f64::total_cmp);
    slices[slices.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let n: usize = args[i + 2].parse().unwrap();
        match args[i + 1].as_str() {
            "ours" => ours(n),
            _ => bare(n),
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("decode_cost: run `cargo bench -p sync-service --bench decode_cost`");
        return;
    }
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!(
        "one Debezium Avro message of a 20-column row: key {} bytes, value {} bytes",
        KEY.len(),
        VALUE.len()
    );
    let measured = (|| {
        let bare_n = callgrind("bare", n)?;
        let bare_0 = callgrind("bare", 0)?;
        let ours_n = callgrind("ours", n)?;
        let ours_0 = callgrind("ours", 0)?;
        Some((
            (bare_n - bare_0) as f64 / n as f64,
            (ours_n - ours_0) as f64 / n as f64,
        ))
    })();
    match measured {
        Some((bare, ours)) => {
            println!("instructions per message (callgrind, {n} messages, set-up subtracted):");
            println!("  apache-avro into Value (baseline): {bare:>9.0}");
            println!(
                "  sync-service decode + envelope + types + map: {ours:>9.0}  ({:.2}x the baseline)",
                ours / bare
            );
            println!(
                "target: at most 2x the bare decode: {}",
                if ours / bare <= 2.0 { "met" } else { "MISSED" }
            );
        }
        None => {
            println!("valgrind not available: wall-clock medians of 7 slices instead (noisy)");
            let bare = wall_clock(bare, n);
            let ours = wall_clock(ours, n);
            println!(
                "  baseline {bare:.0} ns, ours {ours:.0} ns per message ({:.2}x)",
                ours / bare
            );
        }
    }
}
