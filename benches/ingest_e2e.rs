//! End to end from the embedded (redb) log: replay on boot. N events (default 100,000; set
//! `CELLOS_BENCH_REPLAY_EVENTS`) are appended once to a temporary `EmbeddedLog` in batches of
//! 1,000 (the append rate is printed), then each measured iteration replays the whole log from
//! seq 0 into a fresh projection:
//!
//! - `read_only`: `EventLog::tail(0)` + `next(MAX_BATCH_EVENTS)` until seq N, events dropped
//!   (the log's share of replay).
//! - `tail_ingest_inline`: the same tail, each batch ingested (`Ingestor::ingest`) and published
//!   (`Publisher::publish` + `RingWriter::commit`) in the same task, one after the other.
//! - `server_pipeline`: the server's own wiring: `ingest::run_tailer` task → bounded channel →
//!   `ingest::spawn` ingest thread (with metrics), until the applied cursor reaches N. Reading and
//!   ingesting overlap on the two cores.
//!
//! The log holds formation lifecycles: created, running, 4 cells × (started, identity
//! materialized, 2 commands completed, export completed, destroyed), completed: 27 events each.
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellos_server::fanout::{Ring, DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
use cellos_server::ingest::boot::BootProgress;
use cellos_server::ingest::{self, Ingestor, TailStatus, BATCH_QUEUE, MAX_BATCH_EVENTS};
use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::{Append, EventLog};
use cellos_server::metrics::Metrics;
use cellos_server::state::{snapshot, State};
use common::Example;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

const DEFAULT_EVENTS: u64 = 100_000;
const APPEND_BATCH: usize = 1000;

fn events_to_replay() -> u64 {
    std::env::var("CELLOS_BENCH_REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_EVENTS)
}

/// The log's contents: `n` events of whole formation lifecycles (the last one cut short).
fn stream(n: u64) -> Vec<Append> {
    let mut plan: Vec<(Example, u64, u64)> = Vec::with_capacity(n as usize + 27);
    let mut formation = 0;
    while (plan.len() as u64) < n {
        plan.push((common::FORMATION_CREATED, 0, formation));
        plan.push((common::FORMATION_RUNNING, 0, formation));
        for k in 0..4 {
            let cell = formation * 4 + k;
            for ex in [
                common::CELL_STARTED,
                common::IDENTITY_MATERIALIZED,
                common::CELL_COMMAND_COMPLETED,
                common::CELL_COMMAND_COMPLETED,
                common::EXPORT_V2_COMPLETED,
                common::CELL_DESTROYED,
            ] {
                plan.push((ex, cell, formation));
            }
        }
        plan.push((common::FORMATION_COMPLETED, 0, formation));
        formation += 1;
    }
    plan.truncate(n as usize);
    plan.into_iter()
        .enumerate()
        .map(|(i, (ex, cell, formation))| {
            let i = i as u64 + 1;
            Append {
                subject: common::subject(ex, cell, formation),
                payload: Bytes::from(common::instantiate(ex, i, cell, formation)),
                dedupe_id: common::event_id(i),
            }
        })
        .collect()
}

/// Replays the log into nothing; returns the payload bytes read.
async fn read_only(log: &Arc<EmbeddedLog>, n: u64) -> usize {
    let mut tail = log.clone().tail(0);
    let mut bytes = 0;
    loop {
        let batch = tail.next(MAX_BATCH_EVENTS).await.expect("tail");
        bytes += batch.events.iter().map(|e| e.payload.len()).sum::<usize>();
        if batch.events.last().is_some_and(|e| e.seq >= n) {
            return bytes;
        }
    }
}

/// Replays the log into a fresh projection, batch by batch in this task.
async fn tail_ingest_inline(log: &Arc<EmbeddedLog>, n: u64) -> Ingestor {
    let (publisher, _reader) = snapshot::channel();
    let (_ring, mut ring) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
    let mut ingestor = Ingestor::new();
    let mut tail = log.clone().tail(0);
    while ingestor.cursor() < n {
        let batch = tail.next(MAX_BATCH_EVENTS).await.expect("tail");
        for raw in &batch.events {
            ingestor.ingest(raw, &mut ring);
        }
        publisher.publish(ingestor.snapshot());
        ring.commit();
    }
    ingestor
}

/// The server's replay path: tailer task → channel → ingest thread, until applied ≥ n.
async fn server_pipeline(log: &Arc<EmbeddedLog>, n: u64) -> u64 {
    let metrics = Metrics::new();
    let (publisher, reader) = snapshot::channel();
    let (_ring, ring_writer) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
    let (applied_tx, mut applied_rx) = watch::channel(0u64);
    let (batches_tx, batches_rx) = mpsc::channel(BATCH_QUEUE);
    let boot = Arc::new(BootProgress::default());
    let (start_tx, start_rx) = oneshot::channel();
    let thread = ingest::spawn(
        start_rx,
        batches_rx,
        publisher,
        ring_writer,
        applied_tx,
        boot.clone(),
        metrics.clone(),
    )
    .expect("ingest thread");
    let _ = start_tx.send(ingest::Start {
        state: State::default(),
        cursor: 0,
    });
    let stop = CancellationToken::new();
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let tailer = tokio::spawn(ingest::run_tailer(
        dyn_log,
        0,
        batches_tx,
        Arc::new(TailStatus::default()),
        boot,
        metrics,
        stop.clone(),
    ));
    applied_rx
        .wait_for(|c| *c >= n)
        .await
        .expect("ingest thread alive");
    stop.cancel();
    tailer.await.expect("tailer");
    // The tailer dropped the channel sender: the ingest thread ends.
    tokio::task::spawn_blocking(move || thread.join().expect("ingest thread"))
        .await
        .expect("join");
    let snapshot = reader.load();
    snapshot.state.cell_count() as u64
}

fn benches(c: &mut Criterion) {
    let n = events_to_replay();
    let rt = Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        EmbeddedLog::open(dir.path(), Retention::default(), system_clock()).expect("open log"),
    );

    let appends = stream(n);
    let bytes: usize = appends.iter().map(|a| a.payload.len()).sum();
    let started = Instant::now();
    rt.block_on(async {
        let mut appends = appends.into_iter();
        loop {
            let chunk: Vec<Append> = appends.by_ref().take(APPEND_BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            log.append(chunk).await.expect("append");
        }
    });
    let took = started.elapsed();
    let db_size = std::fs::metadata(dir.path().join("events.redb")).map_or(0, |m| m.len());
    eprintln!(
        "ingest_e2e: appended {n} events ({:.1} MiB payload) in batches of {APPEND_BATCH} in {took:.2?}: \
         {:.0} events/s; events.redb is {:.1} MiB",
        bytes as f64 / 1048576.0,
        n as f64 / took.as_secs_f64(),
        db_size as f64 / 1048576.0,
    );

    // Check once that a replay projects what the log holds.
    let ingestor = rt.block_on(tail_ingest_inline(&log, n));
    let cells = ingestor.state().cell_count() as u64;
    eprintln!(
        "ingest_e2e: replay check: cursor {}, {} formations, {cells} cells",
        ingestor.cursor(),
        ingestor.state().formation_count(),
    );
    assert_eq!(ingestor.cursor(), n);
    assert_eq!(rt.block_on(server_pipeline(&log, n)), cells);

    let mut group = c.benchmark_group(format!("replay_{n}_events"));
    group
        .throughput(Throughput::ElementsAndBytes {
            elements: n,
            bytes: bytes as u64,
        })
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("read_only", |b| b.iter(|| rt.block_on(read_only(&log, n))));
    group.bench_function("tail_ingest_inline", |b| {
        b.iter(|| rt.block_on(tail_ingest_inline(&log, n)))
    });
    group.bench_function("server_pipeline", |b| {
        b.iter(|| rt.block_on(server_pipeline(&log, n)))
    });
    group.finish();
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
