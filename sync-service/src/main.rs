//! `sync-service run | check-config | dlq list|replay|skip`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sync_service::SyncService;
use sync_service::config::SyncConfig;
use sync_service::dead_letter::admin::{self, Selection};
use tokio_util::sync::CancellationToken;

mod rebuild_command;

#[derive(Parser)]
#[command(version, about = "Debezium change topics into MongoDB projections")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and project until SIGTERM/SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, env = "SYNC_CONFIG", default_value = "sync.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and exit.
    CheckConfig {
        /// Configuration file.
        #[arg(long, env = "SYNC_CONFIG", default_value = "sync.toml")]
        config: PathBuf,
    },
    /// Rebuild a read model from an incremental snapshot of its tables while the live
    /// version keeps serving; switch to it when it has caught up (progress on stderr).
    Rebuild {
        /// Configuration file.
        #[arg(long, env = "SYNC_CONFIG", default_value = "sync.toml")]
        config: PathBuf,
        /// The read model (a `collection` of the `[[projection]]` mappings).
        read_model: String,
        /// Its database, when not `mongodb.database`.
        #[arg(long)]
        database: Option<String>,
        /// Source table (`schema.table`) of a Rust projection; repeatable. Default: the
        /// tables of the mappings writing the read model.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Start (or resume) and return without waiting; running services finish it.
        #[arg(long)]
        detach: bool,
        /// Print the rebuild's record and return.
        #[arg(long, conflicts_with_all = ["detach", "cancel", "drop_previous"])]
        status: bool,
        /// Stop the running rebuild and drop the version being built.
        #[arg(long, conflicts_with_all = ["detach", "drop_previous"])]
        cancel: bool,
        /// Drop the version the last switch replaced.
        #[arg(long, conflicts_with = "detach")]
        drop_previous: bool,
    },
    /// Resolve dead-lettered messages.
    Dlq {
        /// Configuration file (before or after the action: `dlq list --config f` and
        /// `dlq --config f list` both work).
        #[arg(long, env = "SYNC_CONFIG", default_value = "sync.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List pending dead letters.
    List(SelectionArgs),
    /// Re-process pending dead letters in order (after a fix).
    Replay(SelectionArgs),
    /// Drop pending dead letters, releasing their keys.
    Skip(SelectionArgs),
}

#[derive(clap::Args)]
struct SelectionArgs {
    /// Only this dead letter (`topic/partition/offset`); repeatable.
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only dead letters of this source topic.
    #[arg(long)]
    topic: Option<String>,
}

impl From<SelectionArgs> for Selection {
    fn from(a: SelectionArgs) -> Self {
        Selection {
            ids: a.ids,
            topic: a.topic,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = sync_service::telemetry::Telemetry::init();
    let result = execute(cli.command).await;
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<(), String> {
    let load = |path: &PathBuf| SyncConfig::load(path).map_err(|e| e.to_string());
    match command {
        Command::CheckConfig { config } => {
            let config = load(&config)?;
            println!(
                "configuration is valid: projections {:?}",
                config.projection_names()
            );
            Ok(())
        }
        Command::Run { config } => {
            let config = load(&config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            SyncService::new(config)
                .run(shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Rebuild {
            config,
            read_model,
            database,
            tables,
            detach,
            status,
            cancel,
            drop_previous,
        } => {
            let config = load(&config)?;
            let request = rebuild_command::Request {
                read_model,
                database,
                tables,
                detach,
                status,
                cancel,
                drop_previous,
            };
            rebuild_command::execute(&config, request).await
        }
        Command::Dlq { config, action } => {
            let config = load(&config)?;
            match action {
                DlqAction::List(selection) => {
                    let letters = admin::list(&config, &selection.into())
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("{:<48} {:<10} {:<24} ERROR", "ID", "STAGE", "SINCE");
                    for d in &letters {
                        println!(
                            "{:<48} {:<10} {:<24} {}",
                            d.id,
                            d.stage.as_str(),
                            d.created_at.to_string(),
                            d.error
                        );
                    }
                    println!("{} pending", letters.len());
                    Ok(())
                }
                DlqAction::Replay(selection) => {
                    let report = SyncService::new(config)
                        .replay_dead_letters(&selection.into())
                        .await
                        .map_err(|e| e.to_string())?;
                    println!(
                        "replayed {}, still failing {}, missing from the topic {}",
                        report.replayed, report.still_failing, report.missing
                    );
                    if report.still_failing > 0 {
                        Err("some dead letters failed again".into())
                    } else {
                        Ok(())
                    }
                }
                DlqAction::Skip(selection) => {
                    let n = admin::skip(&config, &selection.into())
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("skipped {n}");
                    Ok(())
                }
            }
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
