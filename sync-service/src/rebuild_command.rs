//! `sync-service rebuild <read-model>`: starts (or resumes) a rebuild and follows it with a
//! progress bar until readers use the new version; `--status`, `--cancel`,
//! `--drop-previous`, `--detach`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sync_service::config::SyncConfig;
use sync_service::rebuild::{RebuildPlan, RebuildRecord, RebuildState, Rebuilds};

/// What the command was asked.
pub struct Request {
    pub read_model: String,
    pub database: Option<String>,
    pub tables: Vec<String>,
    pub detach: bool,
    pub status: bool,
    pub cancel: bool,
    pub drop_previous: bool,
}

/// How often the record is read (and the rebuild advanced) while following it.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Without a terminal: one progress line this often.
const LINE_EVERY: Duration = Duration::from_secs(10);

pub async fn execute(config: &SyncConfig, request: Request) -> Result<(), String> {
    let rebuilds = Rebuilds::connect(config).await.map_err(|e| e.to_string())?;
    let database = request.database.as_deref();
    let name = request.read_model.as_str();
    if request.status {
        return match rebuilds
            .get(name, database)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(record) => {
                println!("{}", describe(&record));
                Ok(())
            }
            None => Err(format!("{name} was never rebuilt")),
        };
    }
    if request.cancel {
        return match rebuilds
            .cancel(name, database)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(record) => {
                println!("{}: {}", record.id, record.state.as_str());
                Ok(())
            }
            None => Err(format!("{name} has no rebuild to cancel")),
        };
    }
    if request.drop_previous {
        let layout = rebuilds
            .drop_previous(name, database)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{}.{}: live {}, previous version dropped",
            layout.database, layout.name, layout.live
        );
        return Ok(());
    }
    let mut plan = if request.tables.is_empty() {
        RebuildPlan::from_config(config, name, database).map_err(|e| e.to_string())?
    } else {
        request
            .tables
            .iter()
            .fold(RebuildPlan::new(name), |plan, t| plan.table(t.clone()))
    };
    if let Some(db) = database {
        plan = plan.in_database(db);
    }
    let record = rebuilds.start(&plan).await.map_err(|e| e.to_string())?;
    eprintln!(
        "rebuilding {} into {} from {} (signal {})",
        record.id,
        record.building,
        record.tables.join(", "),
        record.signal_id
    );
    if request.detach {
        println!("{}", describe(&record));
        return Ok(());
    }
    follow(&rebuilds, record).await
}

/// Advances and shows the rebuild until it ends.
async fn follow(rebuilds: &Rebuilds, mut record: RebuildRecord) -> Result<(), String> {
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(0);
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        match rebuilds.advance(&record).await {
            Ok(next) => record = next,
            Err(e) => eprintln!("rebuild step failed (retrying): {e}"),
        }
        show(&bar, &record);
        if !terminal && last_line.elapsed() >= LINE_EVERY {
            eprintln!("{}", describe(&record));
            last_line = Instant::now();
        }
        match record.state {
            RebuildState::Switched => {
                bar.finish_with_message("switched");
                eprintln!(
                    "{}: readers use {} ({} rows in {:.0?})",
                    record.id,
                    record.building,
                    record.rows,
                    started.elapsed()
                );
                return Ok(());
            }
            RebuildState::Cancelled => {
                bar.abandon_with_message("cancelled");
                return Err(format!("{}: cancelled", record.id));
            }
            RebuildState::Failed => {
                bar.abandon_with_message("failed");
                return Err(format!(
                    "{}: {} (cancel it, then start again)",
                    record.id,
                    record.error.as_deref().unwrap_or("failed")
                ));
            }
            _ => {}
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// The bar: rows against the estimate (rate and ETA from indicatif), or a spinner-like
/// count when there is no estimate.
fn show(bar: &ProgressBar, record: &RebuildRecord) {
    let rows = u64::try_from(record.rows).unwrap_or(0);
    match record
        .estimate
        .and_then(|e| u64::try_from(e).ok())
        .filter(|e| *e > 0)
    {
        Some(estimate) => {
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:12} [{bar:40}] {pos}/{len} rows  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(estimate.max(rows));
        }
        None => bar.set_style(
            ProgressStyle::with_template("{msg:12} {pos} rows  {per_sec}  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
    }
    bar.set_position(rows);
    bar.set_message(record.state.as_str());
}

/// One line about a rebuild.
fn describe(record: &RebuildRecord) -> String {
    let progress = match (record.fraction(), record.key_fraction) {
        (Some(f), _) => format!(" ({:.0}% of the estimate)", f * 100.0),
        (None, Some(k)) => format!(" ({:.0}% of the keys)", k * 100.0),
        _ => String::new(),
    };
    format!(
        "{} -> {}: {}, {} rows{}{}",
        record.id,
        record.building,
        record.state.as_str(),
        record.rows,
        record
            .estimate
            .map(|e| format!(" of ~{e}"))
            .unwrap_or_default(),
        progress
    )
}
