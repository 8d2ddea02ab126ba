//! The `cellos-server` binary: configuration, logging, run until SIGINT/SIGTERM.

use anyhow::Context as _;
use cellos_server::Config;

/// The ingest thread allocates and frees on every event (records, frames, map nodes); mimalloc
/// measured 1.3-1.75x faster than glibc malloc there (BENCHMARKS.md). Benchmarks use it too.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

fn main() {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cellos-server: {e}");
            std::process::exit(1);
        }
    };
    init_tracing(&config.log_filter);
    if let Err(e) = run(config) {
        tracing::error!(error = format!("{e:#}"), "cellos-server fatal");
        std::process::exit(1);
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(cellos_server::memory::on_worker_park)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = cellos_server::start(config).await?;
        shutdown_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
