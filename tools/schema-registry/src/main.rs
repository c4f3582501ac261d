//! `schema-registry-standin`: serves the Confluent Schema Registry endpoints the real
//! clients call. See the crate README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use schema_registry_standin::Store;
use schema_registry_standin::http::{AppState, serve};
use tracing_subscriber::EnvFilter;

/// A stand-in for the Confluent Schema Registry (only the endpoints the real clients use).
#[derive(Debug, Parser)]
#[command(name = "schema-registry-standin", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on
    /// stdout as `listening on http://ADDR`).
    #[arg(long, env = "SCHEMA_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// JSON file the schemas are kept in across restarts (loaded at start, rewritten
    /// atomically after every change). Without it the registry lives in memory only.
    #[arg(long, env = "SCHEMA_REGISTRY_DATA_FILE")]
    data_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let store = match &args.data_file {
        Some(path) => Store::open(path).map_err(|e| e.to_string())?,
        None => {
            tracing::warn!("no --data-file: schemas are kept in memory only and lost on exit");
            Store::in_memory()
        }
    };
    let (schemas, subjects) = store.counts();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    tracing::info!(
        %addr,
        data_file = ?args.data_file,
        schemas,
        subjects,
        "schema registry stand-in listening"
    );
    // A machine-readable line on stdout for scripts and tests that listen on port 0.
    println!("listening on http://{addr}");

    serve(listener, AppState::new(store), shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
