//! Checkpoints of the projection: encoding a published snapshot (what the writer does off the
//! ingest thread) and opening + restoring one (what a boot does), at 10^5 and 10^6 cells; the
//! size per cell is printed.
//!
//! Workload: one `lifecycle.v1.started` per cell (four cells per formation, realistic payloads),
//! then a `command.v1.completed` for every other cell and a `lifecycle.v1.destroyed` for every
//! fourth, so records carry times, exit codes and outcomes, and every event is linked in the
//! cell event chains the checkpoint keeps. `CELLOS_BENCH_CELLS=100000` (comma-separated) runs
//! only some cell counts.
//!
//! `ingest_while_encoding`: what a checkpoint being written costs the ingest thread. Batches of
//! 4,096 `command.v1.completed` events to scattered cells of a 10^5-cell state, each followed by
//! a snapshot publish (as the ingest thread does per round), `idle` and with another thread
//! encoding the newest published snapshot in a loop (`encoding`: a checkpoint being written all
//! the time, far more often than the writer ever does).
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_server::checkpoint::format;
use cellos_server::event::RawEvent;
use cellos_server::fanout::{Ring, RingWriter, DEFAULT_RING_BYTES};
use cellos_server::ingest::Ingestor;
use cellos_server::log::LogIdentity;
use cellos_server::state::{snapshot, Publisher, State};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

const DEFAULT_CELLS: &[u64] = &[100_000, 1_000_000];
const CELLS_PER_FORMATION: u64 = 4;

/// The projection of the workload above, and the seq of its last event.
fn state(cells: u64) -> (State, u64) {
    let started = Instant::now();
    let mut ingestor = Ingestor::new();
    // A ring large enough never to matter; frames are not what is measured.
    let (_ring, mut ring) = Ring::new(1 << 16, DEFAULT_RING_BYTES);
    let mut seq = 0;
    let mut ingest = |example, cell| {
        seq += 1;
        ingestor.ingest(
            &common::raw(seq, example, cell, cell / CELLS_PER_FORMATION),
            &mut ring,
        );
        if seq % 4096 == 0 {
            ring.commit();
        }
    };
    for cell in 0..cells {
        ingest(common::CELL_STARTED, cell);
    }
    for cell in (0..cells).step_by(2) {
        ingest(common::CELL_COMMAND_COMPLETED, cell);
    }
    for cell in (0..cells).step_by(4) {
        ingest(common::CELL_DESTROYED, cell);
    }
    let cursor = ingestor.cursor();
    eprintln!(
        "fixture: {cells} cells, {cursor} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (ingestor.state().clone(), cursor)
}

fn identity() -> LogIdentity {
    LogIdentity {
        stream: "CELLOS_EVENTS".into(),
        epoch: "1764500000000000000".into(),
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for cells in common::cell_counts(DEFAULT_CELLS) {
        let (state, seq) = state(cells);
        let bytes = format::encode(&identity(), seq, &state).expect("encodes");
        eprintln!(
            "checkpoint of {cells} cells: {} bytes, {:.1} bytes per cell",
            bytes.len(),
            bytes.len() as f64 / cells as f64
        );
        group.throughput(Throughput::Elements(cells));
        group.bench_with_input(BenchmarkId::new("encode", cells), &state, |b, state| {
            b.iter_with_large_drop(|| format::encode(&identity(), seq, state).expect("encodes"))
        });
        // The restored state is dropped outside the timed region: a boot keeps it.
        group.bench_with_input(
            BenchmarkId::new("open_restore", cells),
            &bytes,
            |b, bytes| {
                b.iter_with_large_drop(|| {
                    let opened = format::open(bytes).expect("opens");
                    opened.restore(7).expect("restores")
                })
            },
        );
    }
    group.finish();
}

/// `count` `command.completed` events to scattered cells of `cells`, from seq `after + 1`.
fn updates(after: u64, cells: u64, count: u64) -> Vec<RawEvent> {
    (0..count)
        .map(|i| {
            let cell = common::scattered(after + i, cells);
            let formation = cell / CELLS_PER_FORMATION;
            common::raw(
                after + i + 1,
                common::CELL_COMMAND_COMPLETED,
                cell,
                formation,
            )
        })
        .collect()
}

/// What the ingest thread does per round: the batch, one snapshot publish, one ring commit. The
/// time it took.
fn ingest_round(
    ingestor: &mut Ingestor,
    ring: &mut RingWriter,
    publisher: &Publisher,
    batch: &[RawEvent],
) -> Duration {
    let started = Instant::now();
    for raw in batch {
        ingestor.ingest(raw, ring);
    }
    publisher.publish(ingestor.snapshot());
    ring.commit();
    started.elapsed()
}

/// The ingest core's rate with nothing else running, with a checkpoint being encoded without
/// pause on the other core, and with the other core only holding a snapshot as long as an
/// encoding does (what keeping old nodes alive costs, apart from the encoding's work), switching
/// every second in one process (so slow drifts of the machine hit all three alike):
/// `CELLOS_BENCH_ALTERNATE=<rounds>` prints each round and the median ratios.
fn alternate(rounds: u32) {
    const CELLS: u64 = 100_000;
    const BATCH: u64 = 4096;
    const IDLE: u8 = 0;
    const ENCODING: u8 = 1;
    const HOLDING: u8 = 2;
    let (state, cursor) = state(CELLS);
    let mut ingestor = Ingestor::resume(state, cursor);
    let (_ring, mut ring) = Ring::new(1 << 16, DEFAULT_RING_BYTES);
    let (publisher, reader) = snapshot::channel();
    publisher.publish(ingestor.snapshot());
    let stop = Arc::new(AtomicBool::new(false));
    let mode = Arc::new(AtomicU8::new(IDLE));
    let encoder = {
        let (stop, mode) = (stop.clone(), mode.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let snap = reader.load();
                match mode.load(Ordering::Relaxed) {
                    ENCODING => {
                        let _ = black_box(format::encode(&identity(), snap.cursor, &snap.state));
                    }
                    // About what one encoding of this state takes.
                    HOLDING => std::thread::sleep(Duration::from_millis(30)),
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let mut next = cursor;
    let (mut encoding, mut holding) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rates = [0.0; 3];
        for (phase, rate) in rates.iter_mut().enumerate() {
            mode.store(phase as u8, Ordering::Relaxed);
            // Lets an encoding of the previous phase finish.
            std::thread::sleep(Duration::from_millis(100));
            let (started, mut events, mut ingesting) = (Instant::now(), 0u64, Duration::ZERO);
            while started.elapsed() < Duration::from_secs(1) {
                let batch = updates(next, CELLS, BATCH);
                next += BATCH;
                // Only ingesting counts, not building the batch.
                ingesting += ingest_round(&mut ingestor, &mut ring, &publisher, &batch);
                events += BATCH;
            }
            *rate = events as f64 / ingesting.as_secs_f64();
        }
        let change = |r: f64| (r / rates[0] - 1.0) * 100.0;
        encoding.push(change(rates[1]));
        holding.push(change(rates[2]));
        eprintln!(
            "round {round}: idle {:.0} events/s; encoding {:+.1}%, holding a snapshot {:+.1}%",
            rates[0],
            change(rates[1]),
            change(rates[2])
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = encoder.join();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "median against idle: encoding {:+.1}%, holding a snapshot {:+.1}%",
        median(encoding),
        median(holding)
    );
}

/// See the module docs.
fn ingest_while_encoding(c: &mut Criterion) {
    const CELLS: u64 = 100_000;
    const BATCH: u64 = 4096;
    let (state, cursor) = state(CELLS);
    let mut group = c.benchmark_group("ingest_while_encoding");
    group.throughput(Throughput::Elements(BATCH));
    for mode in ["idle", "encoding"] {
        let mut ingestor = Ingestor::resume(state.clone(), cursor);
        let (_ring, mut ring) = Ring::new(1 << 16, DEFAULT_RING_BYTES);
        let (publisher, reader) = snapshot::channel();
        publisher.publish(ingestor.snapshot());
        let stop = Arc::new(AtomicBool::new(false));
        let encoder = (mode == "encoding").then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut written = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snap = reader.load();
                    written += format::encode(&identity(), snap.cursor, &snap.state)
                        .map_or(0, |b| b.len() as u64);
                }
                written
            })
        });
        let mut next = cursor;
        group.bench_function(mode, |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let batch = updates(next, CELLS, BATCH);
                    next += BATCH;
                    took += ingest_round(&mut ingestor, &mut ring, &publisher, &batch);
                }
                took
            })
        });
        stop.store(true, Ordering::Relaxed);
        if let Some(encoder) = encoder {
            let bytes = encoder.join().expect("encoder thread");
            eprintln!(
                "{mode}: the other thread encoded {} MB meanwhile",
                bytes >> 20
            );
        }
    }
    group.finish();
}

criterion_group!(checkpoint, benches, ingest_while_encoding);

fn main() {
    let alternate_rounds = std::env::var("CELLOS_BENCH_ALTERNATE")
        .ok()
        .and_then(|v| v.parse().ok());
    match alternate_rounds {
        Some(rounds) => alternate(rounds),
        None => {
            checkpoint();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
