//! Append-path benchmark: `CommandHandler` + `PostgresStore` (event-sourced) against
//! hand-written tokio-postgres transactions doing the same work, on the same tables, the
//! same rows and the same pool.
//!
//! Workload: every command opens a NEW aggregate and decides 2 events (so each command
//! writes 1 receipt, 1 aggregates row, 2 events and 2 outbox rows, after a dedup lookup
//! and a load, pipelined in one round trip by both variants). Clients: 1, 8 and 32 concurrent tasks; each variant runs in 6
//! alternating slices to even out drift on a shared machine.
//!
//! The peer, in the same run: `cqrs-es` with `postgres-es` (the most used Rust CQRS crates),
//! same aggregate, same 2 events per command, same PostgreSQL, a pool of the same size
//! (sqlx, 32), its tables in a schema of their own. It does less work per command: its
//! event store writes the 2 event rows only (no outbox, no idempotency receipt, no
//! aggregates row), in one transaction after loading the aggregate's events.
//!
//! Run: `cargo bench -p cqrs-toolkit-postgres --bench append` (needs the PostgreSQL of `.env`;
//! `BENCH_SECONDS=<n>` sets the length of one slice, default 1.5; `BENCH_CLIENTS=8,32` picks
//! the concurrency levels).

// A benchmark harness: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cqrs_core::{CommandHandler, CommandMetadata, PersistenceMode};
use cqrs_postgres::{PgPool, PostgresConfig, PostgresStore};
use cqrs_test_support::account::{Account, AccountCommand};
use serde_json::json;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Paired library/baseline slices per concurrency level.
const ROUNDS: usize = 6;

// ---------------------------------------------------------------------------------------
// The aggregate: the workspace's test `Account` (cqrs-test-support). Its `Open` names the
// owner and deposits the initial amount: `AccountOpened` v1 and `MoneyDeposited` v2,
// `{"Opened": {"owner": ..}}` and `{"Deposited": {"amount_cents": ..}}`. The baseline writes
// exactly those rows and the peer decides the same two events.

/// The owner and first deposit of the command every variant runs.
fn open_command() -> AccountCommand {
    AccountCommand::Open {
        owner: "bench".to_owned(),
        initial: 100,
    }
}

// ---------------------------------------------------------------------------------------
// The hand-written baseline: same round trips (dedup lookup pipelined with the load,
// BEGIN, pipelined inserts, COMMIT), same rows, plain SQL.

struct Baseline {
    pool: PgPool,
    find: String,
    load_row: String,
    load_events: String,
    insert_processed: String,
    insert_aggregate: String,
    insert_events: String,
    insert_outbox: String,
}

impl Baseline {
    fn new(pool: &PgPool) -> Self {
        let s = pool.schema().quoted();
        Baseline {
            pool: pool.clone(),
            find: format!("SELECT receipt FROM {s}.processed_commands WHERE command_id = $1"),
            load_row: format!(
                "SELECT version, state, snapshot_version FROM {s}.aggregates WHERE aggregate_type = $1 AND aggregate_id = $2"
            ),
            load_events: format!(
                "SELECT sequence, event_type, event_version, payload, metadata FROM {s}.events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
            ),
            insert_processed: format!(
                "INSERT INTO {s}.processed_commands (command_id, aggregate_type, aggregate_id, version, receipt, processed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ),
            insert_aggregate: format!(
                "INSERT INTO {s}.aggregates (aggregate_type, aggregate_id, version) VALUES ($1, $2, $3)"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, payload, metadata, occurred_at) \
                 VALUES ($1, $2, 1, $3, $4, 1, $5, $6, $7), ($1, $2, 2, $8, $9, 2, $10, $11, $12)"
            ),
            insert_outbox: format!(
                "INSERT INTO {s}.outbox (id, aggregatetype, aggregateid, type, payload, sequence, event_version, occurred_at, correlation_id, causation_id) \
                 VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $7, $7), ($8, $2, $3, $9, $10, 2, 2, $11, $7, $7)"
            ),
        }
    }

    async fn execute(&self, aggregate_id: &str, command: &AccountCommand) {
        let AccountCommand::Open { owner, initial } = command else {
            panic!("the bench runs AccountCommand::Open only");
        };
        let command_id = Uuid::now_v7();
        let client = self.pool.get().await.expect("connection");
        let find = client.prepare_cached(&self.find).await.expect("prepare");
        let (load_row, load_events) = (
            client
                .prepare_cached(&self.load_row)
                .await
                .expect("prepare"),
            client
                .prepare_cached(&self.load_events)
                .await
                .expect("prepare"),
        );
        let key: [&(dyn ToSql + Sync); 2] = [&"Account", &aggregate_id];
        let by_id: [&(dyn ToSql + Sync); 1] = [&command_id];
        let (found, row, events) = futures::join!(
            client.query_opt(&find, &by_id),
            client.query_opt(&load_row, &key),
            client.query(&load_events, &key),
        );
        assert!(found.expect("find").is_none());
        assert!(row.expect("load").is_none() && events.expect("load").is_empty());
        drop(client);

        // Decide and build the rows by hand.
        let now = Utc::now();
        let (id1, id2) = (Uuid::now_v7(), Uuid::now_v7());
        let p1 = json!({"Opened": {"owner": owner}});
        let p2 = json!({"Deposited": {"amount_cents": initial}});
        let meta = json!({"correlation_id": command_id, "causation_id": command_id});
        let event_meta = |id: Uuid, ty: &str, version: u32, seq: u64| {
            json!({"event_id": id, "event_type": ty, "event_version": version, "aggregate_type": "Account",
                   "aggregate_id": aggregate_id, "sequence": seq, "occurred_at": now,
                   "correlation_id": command_id, "causation_id": command_id})
        };
        let receipt = json!({
            "command_id": command_id, "aggregate_type": "Account", "aggregate_id": aggregate_id,
            "version": 2,
            "events": [event_meta(id1, "AccountOpened", 1, 1), event_meta(id2, "MoneyDeposited", 2, 2)],
            "consistency_token": {"aggregate_type": "Account", "aggregate_id": aggregate_id, "version": 2},
            "processed_at": now,
        });

        let mut client = self.pool.get().await.expect("connection");
        let tx = client.transaction().await.expect("begin");
        let s1 = tx
            .prepare_cached(&self.insert_processed)
            .await
            .expect("prepare");
        let s2 = tx
            .prepare_cached(&self.insert_aggregate)
            .await
            .expect("prepare");
        let s3 = tx
            .prepare_cached(&self.insert_events)
            .await
            .expect("prepare");
        let s4 = tx
            .prepare_cached(&self.insert_outbox)
            .await
            .expect("prepare");
        let two = 2i64;
        let processed: [&(dyn ToSql + Sync); 6] =
            [&command_id, &"Account", &aggregate_id, &two, &receipt, &now];
        let aggregate: [&(dyn ToSql + Sync); 3] = [&"Account", &aggregate_id, &two];
        let events: [&(dyn ToSql + Sync); 12] = [
            &"Account",
            &aggregate_id,
            &id1,
            &"AccountOpened",
            &p1,
            &meta,
            &now,
            &id2,
            &"MoneyDeposited",
            &p2,
            &meta,
            &now,
        ];
        let outbox: [&(dyn ToSql + Sync); 11] = [
            &id1,
            &"Account",
            &aggregate_id,
            &"AccountOpened",
            &p1,
            &now,
            &command_id,
            &id2,
            &"MoneyDeposited",
            &p2,
            &now,
        ];
        let (r1, r2, r3, r4) = futures::join!(
            tx.execute(&s1, &processed),
            tx.execute(&s2, &aggregate),
            tx.execute(&s3, &events),
            tx.execute(&s4, &outbox),
        );
        r1.and(r2).and(r3).and(r4).expect("baseline inserts");
        tx.commit().await.expect("commit");
    }
}

// ---------------------------------------------------------------------------------------
// The peer: cqrs-es + postgres-es, the same aggregate (cqrs-es's traits, so a copy of the
// Account's state and events; the command and the error are the shared ones).

mod peer {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use cqrs_test_support::account::{AccountCommand, AccountError};

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Account {
        owner: Option<String>,
        balance: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum AccountEvent {
        Opened { owner: String },
        Deposited { amount_cents: i64 },
    }

    impl DomainEvent for AccountEvent {
        fn event_type(&self) -> String {
            match self {
                AccountEvent::Opened { .. } => "AccountOpened".into(),
                AccountEvent::Deposited { .. } => "MoneyDeposited".into(),
            }
        }

        fn event_version(&self) -> String {
            match self {
                AccountEvent::Opened { .. } => "1".into(),
                AccountEvent::Deposited { .. } => "2".into(),
            }
        }
    }

    impl Aggregate for Account {
        const TYPE: &'static str = "Account";
        type Command = AccountCommand;
        type Event = AccountEvent;
        type Error = AccountError;
        type Services = ();

        async fn handle(
            &mut self,
            command: AccountCommand,
            _services: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), AccountError> {
            let AccountCommand::Open { owner, initial } = command else {
                panic!("the bench runs AccountCommand::Open only");
            };
            if self.owner.is_some() {
                return Err(AccountError::AlreadyOpen);
            }
            sink.write(AccountEvent::Opened { owner }, self).await;
            sink.write(
                AccountEvent::Deposited {
                    amount_cents: initial,
                },
                self,
            )
            .await;
            Ok(())
        }

        fn apply(&mut self, event: AccountEvent) {
            match event {
                AccountEvent::Opened { owner } => self.owner = Some(owner),
                AccountEvent::Deposited { amount_cents } => self.balance += amount_cents,
            }
        }
    }

    pub type Framework = postgres_es::PostgresCqrs<Account>;

    /// postgres-es's tables (its `db/init.sql`) in `schema`, and the framework on a pool of
    /// 32 whose connections use that schema.
    pub async fn framework(url: &str, schema: &str, setup: &tokio_postgres::Client) -> Framework {
        setup
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.events (
                   aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                   sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
                   event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
                   PRIMARY KEY (aggregate_type, aggregate_id, sequence));
                 CREATE TABLE {schema}.snapshots (
                   aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                   last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                   current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                   payload json NOT NULL,
                   PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));"
            ))
            .await
            .expect("postgres-es tables");
        let options: PgConnectOptions = url.parse().expect("DATABASE_URL for sqlx");
        let options = options.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect_with(options)
            .await
            .expect("sqlx pool");
        postgres_es::postgres_cqrs(pool, Vec::new(), ())
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Library,
    Baseline,
    Peer,
}

struct Sample {
    commands: usize,
    cpu_us: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

async fn run(
    variant: Variant,
    clients: usize,
    duration: Duration,
    handler: &Arc<CommandHandler<Account, PostgresStore<Account>>>,
    baseline: &Arc<Baseline>,
    peer: &Arc<peer::Framework>,
) -> Sample {
    let started = Instant::now();
    let cpu_before = process_cpu_us();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let handler = Arc::clone(handler);
        let baseline = Arc::clone(baseline);
        let peer = Arc::clone(peer);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let id = Uuid::now_v7().to_string();
                let command = open_command();
                let t = Instant::now();
                match variant {
                    Variant::Library => {
                        handler
                            .execute(&id, &command, CommandMetadata::new())
                            .await
                            .expect("command")
                            .expect("domain");
                    }
                    Variant::Baseline => baseline.execute(&id, &command).await,
                    Variant::Peer => peer.execute(&id, command).await.expect("postgres-es"),
                }
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("client task"));
    }
    Sample {
        cpu_us: process_cpu_us().saturating_sub(cpu_before),
        commands: latencies_us.len(),
        elapsed: started.elapsed(),
        latencies_us,
    }
}

/// CPU time of this whole process (all threads) in microseconds, from /proc (Linux);
/// 0 when unavailable.
fn process_cpu_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which is in parentheses): utime is the 14th field,
    // stime the 15th, in clock ticks (100 per second on Linux).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks * 10_000
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

struct Figures {
    per_second: f64,
    cpu_us_per_command: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn merge(samples: Vec<Sample>) -> Figures {
    let commands: usize = samples.iter().map(|s| s.commands).sum();
    let seconds: f64 = samples.iter().map(|s| s.elapsed.as_secs_f64()).sum();
    let cpu: u64 = samples.iter().map(|s| s.cpu_us).sum();
    let mut all: Vec<u64> = samples.into_iter().flat_map(|s| s.latencies_us).collect();
    all.sort_unstable();
    Figures {
        per_second: commands as f64 / seconds,
        cpu_us_per_command: cpu as f64 / commands.max(1) as f64,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
    }
}

fn database_url() -> String {
    cqrs_test_support::env::require("DATABASE_URL")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let slice = Duration::from_secs_f64(if smoke {
        0.3
    } else {
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.5)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(slice, smoke));
}

async fn bench(slice: Duration, smoke: bool) {
    let url = database_url();
    let schema = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..10]);
    let config = PostgresConfig::from_url(&url, &schema)
        .expect("DATABASE_URL")
        .with_pool(cqrs_postgres::PoolConfig {
            max_size: 32,
            wait_timeout: Some(Duration::from_secs(60)),
            create_timeout: Some(Duration::from_secs(30)),
            recycle_timeout: Some(Duration::from_secs(30)),
        })
        .with_connect_timeout(Duration::from_secs(30));
    let pool = PgPool::new(&config).expect("pool");
    if let Err(e) = pool.check().await {
        panic!(
            "PostgreSQL of DATABASE_URL is not reachable ({e}); start it with `make infrastructure-up`"
        );
    }
    pool.migrate().await.expect("migrate");
    let version: String = pool
        .get()
        .await
        .expect("connection")
        .query_one("SELECT current_setting('server_version')", &[])
        .await
        .expect("version")
        .get(0);

    let store =
        PostgresStore::<Account>::new(&pool, PersistenceMode::event_sourced()).expect("store");
    let handler = Arc::new(CommandHandler::new(store));
    let baseline = Arc::new(Baseline::new(&pool));
    let peer_schema = format!("{schema}_es");
    let peer =
        Arc::new(peer::framework(&url, &peer_schema, &pool.get().await.expect("connection")).await);

    println!(
        "cqrs-postgres append benchmark: PostgreSQL {version}, pool of 32, new aggregate per command, \
         2 events per command, event-sourced, outbox on; {ROUNDS} alternating slices of {:.1} s per variant",
        slice.as_secs_f64()
    );
    println!(
        "{:>7}  {:<11} {:>8} {:>9} {:>9} {:>17}",
        "clients", "variant", "cmds/s", "p50 ms", "p99 ms", "client CPU us/cmd"
    );
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    for clients in levels {
        // Warm-up: opens the connections and prepares the statements on them.
        let warm = Duration::from_millis(if smoke { 100 } else { 700 });
        for variant in [Variant::Library, Variant::Baseline, Variant::Peer] {
            run(variant, clients, warm, &handler, &baseline, &peer).await;
        }

        let (mut lib, mut base, mut es) = (Vec::new(), Vec::new(), Vec::new());
        let (mut base_ratios, mut peer_ratios) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Rotate which goes first, so none always runs on a warmer/colder server, and
            // pair the slices so that drift on the shared machine cancels out.
            let mut order = [Variant::Library, Variant::Baseline, Variant::Peer];
            order.rotate_left(round % 3);
            let mut rates = [0.0f64; 3];
            for variant in order {
                let sample = run(variant, clients, slice, &handler, &baseline, &peer).await;
                let rate = sample.commands as f64 / sample.elapsed.as_secs_f64();
                match variant {
                    Variant::Library => {
                        rates[0] = rate;
                        lib.push(sample);
                    }
                    Variant::Baseline => {
                        rates[1] = rate;
                        base.push(sample);
                    }
                    Variant::Peer => {
                        rates[2] = rate;
                        es.push(sample);
                    }
                }
            }
            base_ratios.push(rates[1] / rates[0] - 1.0);
            peer_ratios.push(rates[0] / rates[2] - 1.0);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
        };
        let (median_ratio, peer_ratio) = (median(base_ratios), median(peer_ratios));
        let (lib, base, es) = (merge(lib), merge(base), merge(es));
        for (name, f) in [("library", &lib), ("baseline", &base), ("postgres-es", &es)] {
            println!(
                "{clients:>7}  {name:<11} {:>8.0} {:>9.2} {:>9.2} {:>17.0}",
                f.per_second, f.p50_ms, f.p99_ms, f.cpu_us_per_command
            );
        }
        println!(
            "{clients:>7}  overhead against the baseline: throughput {:+.1}% (median of {ROUNDS} paired slices {:+.1}%)   p50 {:+.1}%   p99 {:+.1}%",
            (base.per_second / lib.per_second - 1.0) * 100.0,
            median_ratio * 100.0,
            (lib.p50_ms / base.p50_ms - 1.0) * 100.0,
            (lib.p99_ms / base.p99_ms - 1.0) * 100.0,
        );
        println!(
            "{clients:>7}  library against postgres-es: throughput {:+.1}% (median of {ROUNDS} paired slices {:+.1}%)   p50 {:+.1}%",
            (lib.per_second / es.per_second - 1.0) * 100.0,
            peer_ratio * 100.0,
            (lib.p50_ms / es.p50_ms - 1.0) * 100.0,
        );
        println!(
            "{clients:>7}  targets: within 10% of the baseline (median paired): {}; at least as fast as postgres-es: {}",
            if median_ratio <= 0.10 {
                "met"
            } else {
                "MISSED"
            },
            if peer_ratio >= 0.0 { "met" } else { "MISSED" },
        );
    }

    let client = pool.get().await.expect("connection");
    let counts: (i64, i64) = {
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {s}.events), (SELECT count(*) FROM {s}.outbox)",
                    s = pool.schema().quoted()
                ),
                &[],
            )
            .await
            .expect("counts");
        (row.get(0), row.get(1))
    };
    println!("rows written: {} events, {} outbox", counts.0, counts.1);
    client
        .batch_execute(&format!(
            "DROP SCHEMA {} CASCADE; DROP SCHEMA {peer_schema} CASCADE",
            pool.schema().quoted()
        ))
        .await
        .expect("drop the bench schemas");
}
