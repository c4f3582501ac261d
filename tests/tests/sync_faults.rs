//! Faults the sync-service survives, through the real stack, with the real binary
//! (`target/debug/sync-service`: build it with `cargo build --bin sync-service`; `cargo test
//! --workspace --all-targets` builds it before running the tests):
//!
//! * SIGKILL of the service, again and again, during a sustained load of at least 100,000
//!   inserts, updates and deletes over a few thousand keys;
//! * Kafka Connect killed and restarted mid-load (Debezium re-sends what it had not
//!   committed);
//! * MongoDB stopped for 30 s mid-load and started again on the same storage;
//! * two instances in one consumer group, one of them killed.
//!
//! After each, every MongoDB document equals its PostgreSQL row field by field, no deleted
//! row is live in MongoDB, and versions never went backwards.
//!
//! These tests stop and start components of the local stack (`docker/stack.sh`, pid files
//! under `.stack/run`): they run one at a time and always bring the stack back up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc};
use cqrs_e2e::workspace_root;
use rand::Rng;
use rdkafka::Message;
use support::process::SyncProcess;
use support::{Scenario, until};
use sync_service::decode::{Decoder, RawRecord, RegistryDecoder};
use sync_service::envelope::{EnvelopeParser, Event};

/// One fault test at a time: they stop shared components.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TABLE: &str = "accounts";
const CATCH_UP: Duration = Duration::from_secs(150);

/// One sync-service process of the scenario in consumer group `group` (killed when
/// dropped, also when the test panics).
fn service(s: &Scenario, name: &str, group: &str) -> SyncProcess {
    SyncProcess::start(
        &format!("sync-faults-{}", s.database),
        name,
        &s.process_config_text(
            group,
            &format!("[[projection]]\ntable = \"{{s}}.{TABLE}\"\ncollection = \"{TABLE}\"\n"),
        ),
    )
}

// ---------------------------------------------------------------------------------------
// The stack.

fn state_dir() -> PathBuf {
    std::env::var_os("CQRS_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".stack"))
}

/// The pid of a local-stack component from its pid file; panics when the stack was not
/// started by `docker/stack.sh up` on this machine (Compose, or a foreign component).
fn component_pid(name: &str) -> u32 {
    let file = state_dir().join("run").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; these fault tests stop and restart stack components and need the local \
             stack started by `docker/stack.sh up`",
            file.display()
        )
    });
    let pid = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: not a pid", file.display()));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "{name} (pid {pid} from {}) is not running: run `docker/stack.sh up`",
        file.display()
    );
    pid
}

fn bash(script: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(workspace_root())
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `docker/stack.sh up`: starts whatever is down (idempotent).
fn stack_up() {
    let (ok, out) = bash("docker/stack.sh up");
    assert!(ok, "docker/stack.sh up failed:\n{out}");
}

/// Runs `docker/stack.sh up` when dropped while armed, so a failing test never leaves a
/// component stopped.
struct StackRestore {
    armed: bool,
}

impl StackRestore {
    fn new() -> Self {
        StackRestore { armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for StackRestore {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("restoring the stack: docker/stack.sh up");
            let (ok, out) = bash("docker/stack.sh up");
            if !ok {
                eprintln!("docker/stack.sh up failed:\n{out}");
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

// ---------------------------------------------------------------------------------------
// The load: set-based SQL rounds of inserts, updates and deletes.

async fn create_table(s: &Scenario) {
    s.sql(&format!(
        "CREATE TABLE {{s}}.{TABLE} (
            id int PRIMARY KEY,
            owner text NOT NULL,
            balance bigint NOT NULL,
            amount numeric(12,2) NOT NULL,
            active boolean NOT NULL,
            rev int NOT NULL,
            note text,
            updated_at timestamptz NOT NULL)"
    ))
    .await;
}

/// Inserts the missing keys of `1..=keys`; returns the rows inserted.
async fn insert_missing(pg: &tokio_postgres::Client, schema: &str, keys: i32) -> u64 {
    pg.execute(
        &format!(
            "INSERT INTO {schema}.{TABLE} (id, owner, balance, amount, active, rev, note, updated_at)
             SELECT g, 'owner-' || g, g * 10, g * 0.5, g % 2 = 0, 0,
                    CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END, now()
             FROM generate_series(1, {keys}) g
             ON CONFLICT (id) DO NOTHING"
        ),
        &[],
    )
    .await
    .unwrap()
}

/// One round: re-insert the keys deleted earlier, update two thirds of the keys, delete a
/// twentieth. Returns the changes made.
async fn round(pg: &tokio_postgres::Client, schema: &str, keys: i32, r: i32) -> u64 {
    let inserted = insert_missing(pg, schema, keys).await;
    let updated = pg
        .execute(
            &format!(
                "UPDATE {schema}.{TABLE}
                 SET rev = rev + 1, balance = balance + {r} * 3, amount = amount + 0.25,
                     owner = 'owner-' || id || '-r{r}', active = NOT active,
                     note = CASE WHEN (id + {r}) % 5 = 0 THEN NULL ELSE 'round {r}' END,
                     updated_at = now()
                 WHERE id % 3 <> {r} % 3"
            ),
            &[],
        )
        .await
        .unwrap();
    let deleted = pg
        .execute(
            &format!("DELETE FROM {schema}.{TABLE} WHERE id % 20 = {r} % 20"),
            &[],
        )
        .await
        .unwrap();
    inserted + updated + deleted
}

/// Runs `rounds` rounds on its own connection, `pause` apart; returns the changes made.
fn spawn_load(
    s: &Scenario,
    keys: i32,
    rounds: i32,
    pause: Duration,
) -> tokio::task::JoinHandle<u64> {
    let (contract, schema) = (s.contract.clone(), s.schema.clone());
    tokio::spawn(async move {
        let pg = support::postgres(&contract).await;
        let mut changes = 0;
        for r in 1..=rounds {
            changes += round(&pg, &schema, keys, r).await;
            tokio::time::sleep(pause).await;
        }
        changes
    })
}

// ---------------------------------------------------------------------------------------
// Checks.

/// The documents MongoDB must hold, built from the PostgreSQL rows.
async fn expected_docs(s: &Scenario) -> BTreeMap<i32, Document> {
    let rows =
        s.pg.query(
            &format!(
                "SELECT id, owner, balance, amount::text, active, rev, note,
                        floor(extract(epoch FROM updated_at) * 1000)::bigint
                 FROM {}.{TABLE}",
                s.schema
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let amount: String = r.get(3);
            let note: Option<String> = r.get(6);
            let doc = doc! {
                "_id": id,
                "id": id,
                "owner": r.get::<_, String>(1),
                "balance": r.get::<_, i64>(2),
                "amount": Bson::Decimal128(sync_service::types::decimal128_from_str(&amount).unwrap()),
                "active": r.get::<_, bool>(4),
                "rev": r.get::<_, i32>(5),
                "note": note.map(Bson::String).unwrap_or(Bson::Null),
                "updated_at": bson::DateTime::from_millis(r.get(7)),
            };
            (id, doc)
        })
        .collect()
}

/// Compares MongoDB with PostgreSQL: every row has a live document equal to it field by
/// field (version fields aside), and no other document is live. `Err` describes the gap.
async fn compare(s: &Scenario, expected: &BTreeMap<i32, Document>) -> Result<usize, String> {
    let all = s.all_docs(TABLE).await;
    let mut seen = HashSet::new();
    let (mut missing, mut different, mut resurrected, mut duplicates) = (0, 0, 0, 0);
    let mut example = None;
    for d in &all {
        let id = d
            .get_i32("_id")
            .map_err(|e| format!("bad _id in {d}: {e}"))?;
        if !seen.insert(id) {
            duplicates += 1;
        }
        let live = !d.get_bool("_deleted").unwrap_or(false);
        match (expected.get(&id), live) {
            (Some(row), true) => {
                let actual: Document = d
                    .iter()
                    .filter(|(k, _)| !k.starts_with("_version"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if &actual != row {
                    different += 1;
                    example.get_or_insert_with(|| format!("{actual}\n  expected {row}"));
                }
            }
            (Some(row), false) => {
                missing += 1;
                example.get_or_insert_with(|| format!("tombstone {d} for live row {row}"));
            }
            (None, true) => {
                resurrected += 1;
                example.get_or_insert_with(|| format!("live document {d} of a deleted row"));
            }
            (None, false) => {}
        }
    }
    missing += expected.keys().filter(|id| !seen.contains(id)).count();
    if missing + different + resurrected + duplicates == 0 {
        Ok(expected.len())
    } else {
        Err(format!(
            "{} rows: {missing} missing, {different} different, {resurrected} deleted rows live, \
             {duplicates} duplicate ids; e.g. {}",
            expected.len(),
            example.unwrap_or_default()
        ))
    }
}

/// Waits until MongoDB equals PostgreSQL (the load is over); returns the row count.
async fn reconcile(s: &Scenario) -> usize {
    let expected = expected_docs(s).await;
    let started = Instant::now();
    let rows = until(
        "every MongoDB document to equal its PostgreSQL row",
        CATCH_UP,
        || compare(s, &expected),
    )
    .await;
    eprintln!(
        "reconciled {rows} rows field by field ({:.1} s after the load ended)",
        started.elapsed().as_secs_f64()
    );
    rows
}

type Versions = HashMap<i32, (i64, i64)>;

async fn versions(s: &Scenario) -> Versions {
    s.all_docs(TABLE)
        .await
        .iter()
        .filter_map(|d| {
            let position = d.get_i64("_version").ok()?;
            let index = d.get_i64("_version_index").unwrap_or(0);
            Some((d.get_i32("_id").ok()?, (position, index)))
        })
        .collect()
}

/// Samples the versions and checks that none went back since the highest one seen, and
/// that no document disappeared.
async fn check_monotonic(s: &Scenario, highest: &mut Versions, when: &str) {
    let now = versions(s).await;
    for (id, before) in highest.iter() {
        match now.get(id) {
            Some(v) => assert!(
                v >= before,
                "{when}: document {id} went back from version {before:?} to {v:?}"
            ),
            None => panic!("{when}: document {id} (version {before:?}) disappeared"),
        }
    }
    for (id, v) in now {
        let entry = highest.entry(id).or_insert(v);
        *entry = (*entry).max(v);
    }
}

/// Change events of the table's topic delivered more than once (same key and LSN), read
/// with a throw-away consumer group: what Debezium re-sent.
async fn resent_events(s: &Scenario) -> (usize, usize) {
    let topic = s.topic(TABLE);
    let consumer = s.reader(&topic, "audit");
    let decoder =
        Decoder::new(RegistryDecoder::new(s.contract.require("SCHEMA_REGISTRY_URL")).unwrap());
    let parser = EnvelopeParser::default();
    let mut seen: HashMap<(Vec<u8>, u64, u32), u32> = HashMap::new();
    let mut events = 0;
    let mut idle_since = Instant::now();
    let started = Instant::now();
    loop {
        let wait = if events == 0 { 15 } else { 3 };
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(m)) => {
                idle_since = Instant::now();
                let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                    continue;
                };
                let raw = RawRecord::new(m.topic())
                    .with_key(key)
                    .with_value(value)
                    .at(m.partition(), m.offset());
                let decoded = decoder.decode(&raw).await.expect("decodable event");
                if let Ok(Event::Change(change)) = parser.parse(&decoded) {
                    events += 1;
                    *seen
                        .entry((key.to_vec(), change.version.position, change.version.index))
                        .or_default() += 1;
                }
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) if idle_since.elapsed() > Duration::from_secs(wait) => break,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "reading {topic} took too long"
        );
    }
    let resent = seen.values().map(|n| (*n - 1) as usize).sum();
    (events, resent)
}

async fn new_scenario(name: &str) -> (Scenario, support::CleanupGuard) {
    let s = Scenario::new(name).await;
    let guard = s.cleanup_guard();
    create_table(&s).await;
    (s, guard)
}

async fn finish(s: Scenario, guard: support::CleanupGuard) {
    s.cleanup().await;
    guard.disarm();
}

// ---------------------------------------------------------------------------------------
// The tests.

/// SIGKILL during a sustained load of at least 100,000 changes over 3,000 keys, restarted
/// each time: MongoDB ends equal to PostgreSQL and no version ever went back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_repeatedly_under_load_loses_nothing_and_never_regresses() {
    let _serial = SERIAL.lock().await;
    const KEYS: i32 = 3_000;
    const ROUNDS: i32 = 46;
    let (s, guard) = new_scenario("kill").await;
    let seeded = insert_missing(&s.pg, &s.schema, KEYS).await;
    let mut service = service(&s, "victim", &s.group);
    let started = Instant::now();
    let load = spawn_load(&s, KEYS, ROUNDS, Duration::from_millis(450));

    let mut highest = Versions::new();
    let mut kills = 0;
    let mut rng = rand::rng();
    while !load.is_finished() || kills < 4 {
        // Let the new process join the group and make progress, then kill it at a random
        // point of its work.
        service.wait_consuming(0.0, Duration::from_secs(60)).await;
        let delay = rng.random_range(500..3_000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        check_monotonic(&s, &mut highest, &format!("before kill {}", kills + 1)).await;
        service.assert_running();
        service.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_000))).await;
        service.spawn();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        check_monotonic(&s, &mut highest, &format!("after restart {kills}")).await;
    }
    let changes = seeded + load.await.unwrap();
    eprintln!(
        "load: {changes} changes over {KEYS} keys in {:.1} s; {kills} SIGKILLs",
        started.elapsed().as_secs_f64()
    );
    assert!(changes >= 100_000, "the load made only {changes} changes");
    let rows = reconcile(&s).await;
    check_monotonic(&s, &mut highest, "after catch-up").await;
    eprintln!(
        "caught up {:.1} s after the start; {rows} live rows, {} documents",
        started.elapsed().as_secs_f64(),
        highest.len()
    );
    service.assert_running();
    service.terminate();
    finish(s, guard).await;
}

/// Kafka Connect killed (SIGKILL, by its pid file) mid-load and restarted the way the local
/// stack does (`docker/stack.sh up`): Debezium re-sends what it had not committed, and the
/// version guards keep those duplicates invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_connect_restart_mid_load_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    const KEYS: i32 = 2_000;
    let (s, guard) = new_scenario("connect").await;
    let restore = StackRestore::new();
    let seeded = insert_missing(&s.pg, &s.schema, KEYS).await;
    let mut service = service(&s, "sync", &s.group);
    let load = spawn_load(&s, KEYS, 16, Duration::from_millis(1_000));
    service.wait_consuming(0.0, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // A burst right before the kill: Debezium is streaming it, and its source offsets
    // (flushed every second) are behind what it already sent.
    let pid = component_pid("connect");
    let burst = round(&s.pg, &s.schema, KEYS, 100).await + round(&s.pg, &s.schema, KEYS, 101).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    eprintln!("killing Kafka Connect (pid {pid}) while it streams a burst of {burst} changes");
    let killed = Instant::now();
    assert!(bash(&format!("kill -KILL {pid}")).0, "kill Kafka Connect");
    while Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocking(stack_up).await;
    support::require_connector(&s.contract).await;
    eprintln!(
        "Kafka Connect back with its connectors RUNNING after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    restore.disarm();

    let changes = seeded + burst + load.await.unwrap();
    service.assert_running();
    let rows = reconcile(&s).await;
    let (events, resent) = resent_events(&s).await;
    let stale = service.metric("sync_changes_stale_total").await;
    eprintln!(
        "{changes} changes, {events} change events in the topic of which {resent} re-sent by \
         Debezium; the service found {stale} writes stale; {rows} rows reconciled"
    );
    assert!(
        events as u64 >= changes,
        "the topic holds {events} change events for {changes} changes"
    );
    assert!(
        resent == 0 || stale > 0.0,
        "Debezium re-sent {resent} events but the service found no write stale"
    );
    service.terminate();
    finish(s, guard).await;
}

/// MongoDB stopped for 30 s mid-load (the stack's own stop, then `docker/stack.sh up` on
/// the same storage path): the service keeps running, reports not ready, retries, and
/// catches up with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_stopped_for_30s_mid_load_is_survived() {
    let _serial = SERIAL.lock().await;
    const KEYS: i32 = 2_000;
    let (s, guard) = new_scenario("mongo").await;
    let seeded = insert_missing(&s.pg, &s.schema, KEYS).await;
    let mut service = service(&s, "sync", &s.group);
    until(
        "the service to be ready",
        Duration::from_secs(60),
        || async {
            match service.readyz().await {
                Some(200) => Ok(()),
                other => Err(format!("/readyz {other:?}")),
            }
        },
    )
    .await;
    let load = spawn_load(&s, KEYS, 20, Duration::from_millis(2_000));
    service.wait_consuming(0.0, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let restore = StackRestore::new();
    let pid = component_pid("mongo");
    eprintln!("stopping MongoDB (secantusd-rs, pid {pid}) with the stack's mongo_down");
    let (ok, out) = blocking(|| {
        bash("set -euo pipefail; source docker/local/lib.sh; source docker/local/mongo.sh; mongo_down")
    })
    .await;
    assert!(ok, "mongo_down failed:\n{out}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "MongoDB (pid {pid}) still runs after mongo_down"
    );
    let stopped = Instant::now();
    let (mut not_ready, mut probes, mut first_not_ready) = (0, 0, None);
    while stopped.elapsed() < Duration::from_secs(30) {
        service.assert_running();
        probes += 1;
        if service.readyz().await == Some(503) {
            not_ready += 1;
            first_not_ready.get_or_insert(stopped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let consumed_during_outage = service.consumed().await;
    eprintln!(
        "MongoDB down for 30 s: /readyz said 503 to {not_ready} of {probes} probes (first \
         {first_not_ready:?} after the stop); starting it again"
    );
    blocking(stack_up).await;
    assert_ne!(component_pid("mongo"), pid, "MongoDB was not restarted");
    restore.disarm();
    service.assert_running();
    assert!(
        not_ready > 0,
        "/readyz never reported not ready while MongoDB was down ({probes} probes)"
    );
    let back = Instant::now();
    until(
        "the service to be ready again",
        Duration::from_secs(90),
        || async {
            match service.readyz().await {
                Some(200) => Ok(()),
                other => Err(format!("/readyz {other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "ready again {:.1} s after MongoDB came back",
        back.elapsed().as_secs_f64()
    );
    let changes = seeded + load.await.unwrap();
    service
        .wait_consuming(consumed_during_outage, Duration::from_secs(60))
        .await;
    let rows = reconcile(&s).await;
    eprintln!("{changes} changes, {rows} rows reconciled after the outage");
    service.assert_running();
    service.terminate();
    finish(s, guard).await;
}

/// Two instances in one consumer group: killing one moves its partitions to the other,
/// which finishes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_instance_hands_its_partitions_to_the_other() {
    let _serial = SERIAL.lock().await;
    const KEYS: i32 = 2_000;
    let (s, guard) = new_scenario("pair").await;
    let seeded = insert_missing(&s.pg, &s.schema, KEYS).await;
    let mut a = service(&s, "a", &s.group);
    let mut b = service(&s, "b", &s.group);
    let load = spawn_load(&s, KEYS, 16, Duration::from_millis(1_000));
    // Both own partitions (the table's topic has 4) and work.
    let consumed_a = a.wait_consuming(0.0, Duration::from_secs(60)).await;
    let consumed_b = b.wait_consuming(0.0, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = b.consumed().await;
    eprintln!(
        "both instances consume (a: {consumed_a}, b: {consumed_b}); killing a (pid {})",
        a.pid()
    );
    a.kill();
    let changes = seeded + load.await.unwrap();
    let rows = reconcile(&s).await;
    b.assert_running();
    let after = b.consumed().await;
    let log = b.log_text();
    let assigned = log
        .lines()
        .rfind(|l| l.contains("partitions assigned"))
        .unwrap_or_default()
        .to_owned();
    let partitions = (0..4)
        .filter(|p| assigned.contains(&format!("{}/{p}", s.topic(TABLE))))
        .count();
    eprintln!(
        "{changes} changes, {rows} rows reconciled; b consumed {before_kill} before the kill \
         and {after} in all; b's last assignment holds {partitions} of the 4 partitions"
    );
    assert!(after > before_kill, "b consumed nothing after a was killed");
    assert_eq!(
        partitions, 4,
        "b's last assignment does not hold every partition: {assigned}"
    );
    b.terminate();
    finish(s, guard).await;
}

/// An instance joining the group mid-load takes partitions away from the working one: the
/// revocation settles and commits the in-flight work first, so neither instance applies a
/// change twice (every stale write is one Debezium re-sent, counted from the topic).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_flushes_and_commits_before_handing_off_partitions() {
    let _serial = SERIAL.lock().await;
    const KEYS: i32 = 2_000;
    let (s, guard) = new_scenario("handoff").await;
    let seeded = insert_missing(&s.pg, &s.schema, KEYS).await;
    let mut a = service(&s, "a", &s.group);
    a.wait_consuming(0.0, Duration::from_secs(60)).await;
    // Short pauses, so that a has work in flight or stored but not yet committed (its
    // commit timer runs every second) most of the time until b has joined.
    let load = spawn_load(&s, KEYS, 40, Duration::from_millis(150));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // b joins while a is busy: a's partitions are revoked with work in flight.
    let mut b = service(&s, "b", &s.group);
    b.wait_consuming(0.0, Duration::from_secs(60)).await;
    let changes = seeded + load.await.unwrap();
    let rows = reconcile(&s).await;
    a.assert_running();
    b.assert_running();
    let stale =
        a.metric("sync_changes_stale_total").await + b.metric("sync_changes_stale_total").await;
    let applied =
        a.metric("sync_changes_applied_total").await + b.metric("sync_changes_applied_total").await;
    let (events, resent) = resent_events(&s).await;
    let flushes: Vec<String> = a
        .log_text()
        .lines()
        .filter(|l| l.contains("before handing off partitions"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "{changes} changes, {rows} rows reconciled, {events} events on the topic ({resent} \
         re-sent by Debezium); applied {applied}, stale {stale}; a's flushes: {flushes:#?}"
    );
    // The revocation waited for a's in-flight work and committed what it had stored; when
    // the commit timer had just committed everything, there was nothing left to commit,
    // which is a hand-off too. What matters is checked below: nothing applied twice.
    assert!(
        flushes
            .iter()
            .any(|l| l.contains("flushed and committed") || l.contains("nothing to commit")),
        "a did not settle its work when b joined:\n{}",
        a.log_tail(30)
    );
    assert_eq!(
        stale as usize, resent,
        "changes were applied twice across the rebalance (stale writes beyond Debezium's \
         re-sends): the revoked work was not committed before the hand-off"
    );
    a.terminate();
    b.terminate();
    finish(s, guard).await;
}
