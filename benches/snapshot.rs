//! Reading the projection: `Reader::load()` (one `ArcSwap::load_full`, what each HTTP read does)
//! and `Reader::peek()`, on a snapshot holding 10^5 cells, with and without a writer publishing
//! on the other core. Target (docs/ARCHITECTURE.md, "Performance targets"): `load` ≤ 50 ns while
//! the writer publishes.
//!
//! - `idle`: nobody publishes.
//! - `publisher_tight_loop`: another thread publishes a new snapshot (O(1) state clone + one
//!   `Arc` allocation + `ArcSwap::store`) back to back, as fast as it can: the worst case.
//! - `publisher_ingesting`: another thread runs the real ingest core (decode + apply + frame) on a
//!   steady cell-update mix and publishes every 64 events, like a loaded ingest thread.
//!
//! Each measured iteration loads and then drops the `Arc<Snapshot>` (a GET holds it for the
//! response, then drops it), and reads the cursor so the load is not optimised away.
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cellos_server::event::RawEvent;
use cellos_server::fanout::{Ring, RingWriter, DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
use cellos_server::ingest::Ingestor;
use cellos_server::state::{snapshot, Publisher, Reader, Snapshot};
use criterion::{criterion_group, criterion_main, Criterion};

const CELLS: u64 = 100_000;

/// An ingestor holding `CELLS` running cells.
fn populated() -> (Ingestor, RingWriter) {
    let (_ring, mut writer) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
    let mut ingestor = Ingestor::new();
    for c in 0..CELLS {
        let raw = common::raw(c + 1, common::CELL_STARTED, c, c / 4);
        ingestor.ingest(&raw, &mut writer);
    }
    assert_eq!(ingestor.state().cell_count(), CELLS as usize);
    (ingestor, writer)
}

/// Runs `work` on another thread until stopped; counts how many snapshots it published.
struct Background {
    started: Instant,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    fn start(work: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), published.clone());
        let handle = std::thread::spawn(move || work(s, p));
        Background {
            started: Instant::now(),
            stop,
            published,
            handle: Some(handle),
        }
    }

    /// Stops the thread; returns the number of snapshots it published and for how long it ran.
    fn finish(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.join().expect("publisher thread");
        }
        (
            self.published.load(Ordering::Acquire),
            self.started.elapsed(),
        )
    }
}

fn tight_loop(publisher: Publisher, base: Snapshot) -> Background {
    Background::start(move |stop, published| {
        let mut cursor = base.cursor;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            cursor += 1;
            publisher.publish(Snapshot {
                cursor,
                state: base.state.clone(),
                replayed: true,
            });
            n += 1;
        }
        published.store(n, Ordering::Release);
    })
}

/// One update per cell in scattered order: a started / completed mix that never destroys, so it
/// can be replayed forever with fresh seqs.
fn update_pass() -> Vec<RawEvent> {
    (0..CELLS)
        .map(|i| {
            let cell = common::scattered(i, CELLS);
            let ex = if i % 8 == 0 {
                common::CELL_STARTED
            } else {
                common::CELL_COMMAND_COMPLETED
            };
            common::raw(CELLS + 1 + i, ex, cell, cell / 4)
        })
        .collect()
}

fn ingesting(publisher: Publisher, mut ingestor: Ingestor, mut ring: RingWriter) -> Background {
    let mut pass = update_pass();
    Background::start(move |stop, published| {
        let mut n = 0;
        'outer: loop {
            for chunk in pass.chunks_mut(64) {
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                for raw in chunk.iter_mut() {
                    raw.seq = ingestor.cursor() + 1;
                    ingestor.ingest(raw, &mut ring);
                }
                publisher.publish(ingestor.snapshot());
                ring.commit();
                n += 1;
            }
        }
        published.store(n, Ordering::Release);
    })
}

fn bench_load(c: &mut Criterion, name: &str, reader: &Reader) {
    let mut group = c.benchmark_group("snapshot_load");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    group.bench_function(format!("load/{name}"), |b| {
        b.iter(|| {
            let snap = reader.load();
            black_box(snap.cursor);
            snap
        })
    });
    group.bench_function(format!("peek/{name}"), |b| {
        b.iter(|| reader.peek(|s| black_box(s.cursor)))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let (ingestor, ring) = populated();
    let base = ingestor.snapshot();

    let (publisher, reader) = snapshot::channel();
    publisher.publish(base.clone());
    bench_load(c, "idle", &reader);

    let bg = tight_loop(publisher, base.clone());
    bench_load(c, "publisher_tight_loop", &reader);
    let (n, took) = bg.finish();
    eprintln!(
        "snapshot bench: tight-loop publisher: {n} snapshots in {took:.2?} ({:.0}/s)",
        n as f64 / took.as_secs_f64()
    );

    let (publisher, reader) = snapshot::channel();
    publisher.publish(base);
    let bg = ingesting(publisher, ingestor, ring);
    bench_load(c, "publisher_ingesting", &reader);
    let (n, took) = bg.finish();
    eprintln!(
        "snapshot bench: ingesting publisher: {n} snapshots of 64 events in {took:.2?} ({:.0} events/s)",
        (n * 64) as f64 / took.as_secs_f64()
    );
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
