//! Latency: PostgreSQL commit to the document seen by a change stream.

use super::*;

pub(crate) struct Latency {
    pub(crate) rate: f64,
    pub(crate) total: Vec<f64>,
    pub(crate) debezium: Vec<f64>,
    pub(crate) ours: Vec<f64>,
    pub(crate) missing: usize,
}

/// The `id` of a Debezium Avro key `{id: int}`: magic byte, schema id, zig-zag varint.
pub(crate) fn key_id(key: &[u8]) -> Option<i32> {
    let mut value: u64 = 0;
    for (i, b) in key.get(5..)?.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return i32::try_from(n).ok();
        }
    }
    None
}

pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn latency(
    env: &Env,
    mongo: &mongodb::Client,
    database: &str,
    schema: &str,
    table: &str,
    first_id: i32,
    per_sec: u64,
    seconds: u64,
) -> Latency {
    // The change stream watches the physical collection behind the read model's view.
    let coll = mongo
        .database(database)
        .collection::<Document>(&format!("{table}__v1"));
    let seen: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let mut stream = coll.watch().await.expect("change stream");
    let watcher = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = now_ms();
                if let Some(id) = event
                    .document_key
                    .as_ref()
                    .and_then(|k| k.get_i32("_id").ok())
                {
                    seen.lock().unwrap().entry(id).or_insert(at);
                }
            }
        })
    };
    // The broker timestamps of the messages, by id.
    let stamped: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stamped, stop) = (Arc::clone(&stamped), Arc::clone(&stop));
        let config = kafka_consumer(env);
        let topic = format!("cqrs.{schema}.{table}");
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                    && let (Some(id), Some(ts)) =
                        (m.key().and_then(key_id), m.timestamp().to_millis())
                {
                    stamped.lock().unwrap().insert(id, ts as f64);
                }
            }
        })
    };
    // Writers: 4 connections, each committing every 4th id on schedule.
    let commits = (per_sec * seconds) as i32;
    let interval = Duration::from_secs_f64(4.0 / per_sec as f64);
    let committed: Arc<Mutex<HashMap<i32, f64>>> = Arc::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let pg = postgres(env).await;
        let committed = Arc::clone(&committed);
        let insert = pg
            .prepare(&format!(
                "INSERT INTO {schema}.{table} VALUES ($1, 'steady', now())"
            ))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u32;
            loop {
                let id = first_id + (k as i32) * 4 + lane;
                if id >= first_id + commits {
                    break;
                }
                tokio::time::sleep_until(start + interval * k + interval * (lane as u32) / 4).await;
                pg.execute(&insert, &[&id]).await.unwrap();
                committed.lock().unwrap().insert(id, now_ms());
                k += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let achieved = commits as f64 / start.elapsed().as_secs_f64();
    let wait = Instant::now();
    while seen.lock().unwrap().len() < commits as usize && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    let (committed, seen, stamped) = (
        committed.lock().unwrap().clone(),
        seen.lock().unwrap().clone(),
        stamped.lock().unwrap().clone(),
    );
    let mut out = Latency {
        rate: achieved,
        total: Vec::new(),
        debezium: Vec::new(),
        ours: Vec::new(),
        missing: 0,
    };
    for (id, at) in &committed {
        let Some(visible) = seen.get(id) else {
            out.missing += 1;
            continue;
        };
        out.total.push(visible - at);
        if let Some(ts) = stamped.get(id) {
            out.debezium.push(ts - at);
            out.ours.push(visible - ts);
        }
    }
    for v in [&mut out.total, &mut out.debezium, &mut out.ours] {
        v.sort_by(f64::total_cmp);
    }
    out
}
