//! Straight into an embedded log directory, with no server running: `cells` cells, each with
//! `per_cell` events (a `lifecycle.started`, then `command.completed` ones), in rounds (every
//! cell's first event, then every cell's second, ...). Makes the large logs the boot benchmarks
//! need in a fraction of the time POSTing them would take.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cellos_server::event::subject::ingest_subject;
use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::{Append, EventLog};

const STARTED: &str =
    include_str!("../../../contracts/examples/events/cell-lifecycle-started.json");
const COMPLETED: &str =
    include_str!("../../../contracts/examples/events/cell-command-completed.json");
const EXAMPLE_CELL: &str = "ci-build-7f3a9c2e";
/// Events per append, and appends in flight (the log folds them into shared commits).
const BATCH: u64 = 1000;
const IN_FLIGHT: usize = 8;

fn event(round: u64, cell: u64) -> Append {
    let template = if round == 0 { STARTED } else { COMPLETED }.trim_end();
    let cell_id = format!("ci-fill-{cell:09x}");
    let id = format!("fill-{round:04}-{cell:012}");
    let id_at = template.find("\"id\":\"").map_or(0, |p| p + 6);
    let id_end = template[id_at..].find('"').map_or(id_at, |e| id_at + e);
    let payload = format!("{}{id}{}", &template[..id_at], &template[id_end..])
        .replace(EXAMPLE_CELL, &cell_id);
    let ty = if round == 0 {
        cellos_server::event::CELL_STARTED
    } else {
        cellos_server::event::CELL_COMMAND_COMPLETED
    };
    Append {
        subject: ingest_subject(None, Some(&cell_id), ty),
        payload: Bytes::from(payload),
        dedupe_id: id,
    }
}

pub async fn fill(dir: &Path, cells: u64, per_cell: u64) -> Result<()> {
    let keep_all = Retention {
        max_age: Duration::ZERO,
        max_events: 0,
        keep_after_checkpoint: false,
    };
    let log = Arc::new(
        EmbeddedLog::open(dir, keep_all, system_clock())
            .with_context(|| format!("opening the embedded log in {}", dir.display()))?,
    );
    let started = Instant::now();
    let mut written = 0u64;
    for round in 0..per_cell {
        let mut pending = tokio::task::JoinSet::new();
        for first in (0..cells).step_by(BATCH as usize) {
            let batch: Vec<Append> = (first..(first + BATCH).min(cells))
                .map(|cell| event(round, cell))
                .collect();
            let log = log.clone();
            pending.spawn(async move { log.append(batch).await.map(|s| s.len() as u64) });
            while pending.len() >= IN_FLIGHT {
                written += pending.join_next().await.context("append task")???;
            }
        }
        while let Some(done) = pending.join_next().await {
            written += done??;
        }
        println!(
            "round {}/{per_cell}: {written} events in {:.1} s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let bounds = log.bounds().await?;
    println!(
        "filled {}: {written} events ({cells} cells), seqs {}..={}, {:.0} events/s",
        dir.display(),
        bounds.first,
        bounds.last,
        written as f64 / started.elapsed().as_secs_f64()
    );
    let log = Arc::try_unwrap(log).map_err(|_| anyhow::anyhow!("the log is still shared"))?;
    tokio::task::spawn_blocking(move || drop(log)).await?;
    Ok(())
}
