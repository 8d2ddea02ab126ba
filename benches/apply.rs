//! The ingest thread's core, one core, in-memory source: decode + apply + frame push per event,
//! one snapshot publish (and ring commit) per batch, over a state that already holds 10^4, 10^5
//! or 10^6 cells. This is the headline target of docs/ARCHITECTURE.md, "Performance targets"
//! (≥ 1,000,000 events/s at 10^5 cells).
//!
//! Workload. The state is pre-populated with one `started` event per cell (all cells running,
//! four cells per formation). The measured stream is a steady-state mix of updates to those
//! cells, realistic payloads of 667–880 bytes, per 8 events: 1 `lifecycle.v1.started` (restart),
//! 6 `command.v1.completed`, 1 `lifecycle.v1.destroyed`. Two access patterns:
//!
//! - `scattered` (worst case): a pass visits every cell exactly once, in a scattered order
//!   (`common::scattered`), so consecutive events touch unrelated parts of the maps.
//! - `active512` (locality): 512 cells are active at a time; each goes through its whole
//!   lifecycle (started, 6 × completed, destroyed) interleaved with the other 511, then the next
//!   512 (scattered over the key space) take over. A pass covers 1/8 of the cells, 8 events each.
//!
//! Every event of a pass is applied (none hits a destroyed cell). When a pass is used up the state
//! is rebuilt from the pre-population outside the timed region (`iter_custom`).
//!
//! - `decode_apply_publish/<pattern>/cells_N/B`: `Ingestor::ingest` for B events, then
//!   `Publisher::publish(ingestor.snapshot())` and `RingWriter::commit()`, as the ingest thread does
//!   per round (metrics flushing and the applied-cursor watch are left out). When it is behind
//!   (replay, saturation) the ingest thread publishes every `ingest::MAX_ROUND_EVENTS` (8,192)
//!   events; B = 4,096 and 65,536 bracket that round.
//! - `apply_publish/scattered/cells_N/B`: the same events decoded beforehand: only `state::apply`
//!   and the snapshot publish per batch (no decode, no frame).
//!
//! `active512` and 65,536-event batches run up to 10^5 cells only. `CELLOS_BENCH_CELLS=100000`
//! (comma-separated) runs only some cell counts.
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cellos_server::event::decode::Decoder;
use cellos_server::event::{Event, RawEvent};
use cellos_server::fanout::{Ring, RingWriter, DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
use cellos_server::ingest::Ingestor;
use cellos_server::state::{apply, snapshot, CellState, Outcome, Publisher, Snapshot, State};
use common::Example;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const DEFAULT_CELLS: &[u64] = &[10_000, 100_000, 1_000_000];
const BATCHES: &[usize] = &[1, 64, 1024, 4096, 65_536];
const ACTIVE_BATCHES: &[usize] = &[64, 4096];
/// Above this many cells, `active512` and 65,536-event batches are left out to keep the run short
/// (a 65,536-event round at 10^6 cells takes ~2 s per iteration).
const FULL_MATRIX_MAX_CELLS: u64 = 100_000;
const APPLY_ONLY_BATCHES: &[usize] = &[1, 4096];
/// Cells active at a time in the `active512` pattern.
const ACTIVE: usize = 512;
/// Cells per formation (cells correlate with a formation id, as supervisor events do).
const CELLS_PER_FORMATION: u64 = 4;

/// The event type at position `i` of a pass (or step `i` of a cell's lifecycle).
fn mix_example(i: u64) -> Example {
    match i % 8 {
        0 => common::CELL_STARTED,
        7 => common::CELL_DESTROYED,
        _ => common::CELL_COMMAND_COMPLETED,
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct Fixture {
    /// One `started` per cell, seq 1..=cells.
    prepopulate: Vec<RawEvent>,
    /// `scattered`: one event per cell in scattered order; seqs are rewritten before each use.
    pass: Vec<RawEvent>,
    /// How many events of a `scattered` pass are `destroyed` ones.
    destroyed_per_pass: usize,
    /// `active512`: whole lifecycles of 1/8 of the cells, 512 at a time.
    active: Vec<RawEvent>,
}

impl Fixture {
    fn new(cells: u64) -> Fixture {
        assert_eq!(
            gcd(common::SCATTER % cells, cells),
            1,
            "cell count shares a factor with SCATTER"
        );
        let prepopulate = (0..cells)
            .map(|c| common::raw(c + 1, common::CELL_STARTED, c, c / CELLS_PER_FORMATION))
            .collect();
        let pass = (0..cells)
            .map(|i| {
                let cell = common::scattered(i, cells);
                common::raw(
                    cells + 1 + i,
                    mix_example(i),
                    cell,
                    cell / CELLS_PER_FORMATION,
                )
            })
            .collect();
        let active_cells = if cells <= FULL_MATRIX_MAX_CELLS {
            cells / 8
        } else {
            0
        };
        let lifecycles: Vec<u64> = (0..active_cells)
            .map(|j| common::scattered(j, cells))
            .collect();
        let mut active = Vec::with_capacity(lifecycles.len() * 8);
        for window in lifecycles.chunks(ACTIVE) {
            for step in 0..8 {
                for &cell in window {
                    let seq = cells + 1 + active.len() as u64;
                    let ex = mix_example(step);
                    active.push(common::raw(seq, ex, cell, cell / CELLS_PER_FORMATION));
                }
            }
        }
        Fixture {
            prepopulate,
            pass,
            destroyed_per_pass: (0..cells).filter(|i| i % 8 == 7).count(),
            active,
        }
    }
}

/// The ingest thread's working set: ingestor, ring writer, snapshot publisher.
struct Pipeline {
    ingestor: Ingestor,
    ring: RingWriter,
    publisher: Publisher,
    /// Next unused event of the pass.
    pos: usize,
}

impl Pipeline {
    /// A pipeline whose state holds every pre-populated cell, published.
    fn new(prepopulate: &[RawEvent]) -> Pipeline {
        let (publisher, _reader) = snapshot::channel();
        let (_ring, mut ring) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
        let mut ingestor = Ingestor::new();
        for chunk in prepopulate.chunks(4096) {
            for raw in chunk {
                ingestor.ingest(raw, &mut ring);
            }
            publisher.publish(ingestor.snapshot());
            ring.commit();
        }
        assert_eq!(ingestor.state().cell_count(), prepopulate.len());
        Pipeline {
            ingestor,
            ring,
            publisher,
            pos: 0,
        }
    }

    /// Ingests `n` batches of `batch` events from the pass, publishing after each; returns the
    /// time taken. The caller makes sure the pass has room.
    fn run(&mut self, pass: &mut [RawEvent], batch: usize, n: usize) -> Duration {
        let end = self.pos + n * batch;
        let first_seq = self.ingestor.cursor() + 1;
        for (k, raw) in pass[self.pos..end].iter_mut().enumerate() {
            raw.seq = first_seq + k as u64;
        }
        let start = Instant::now();
        for chunk in pass[self.pos..end].chunks(batch) {
            for raw in chunk {
                self.ingestor.ingest(raw, &mut self.ring);
            }
            self.publisher.publish(self.ingestor.snapshot());
            self.ring.commit();
        }
        let took = start.elapsed();
        self.pos = end;
        took
    }
}

/// `apply` alone over pre-decoded events, one publish per batch.
struct ApplyRun {
    base: State,
    state: State,
    publisher: Publisher,
    seq: u64,
    pos: usize,
}

impl ApplyRun {
    fn run(&mut self, events: &[Event<'_>], batch: usize, n: usize) -> Duration {
        let end = self.pos + n * batch;
        let start = Instant::now();
        for chunk in events[self.pos..end].chunks(batch) {
            for ev in chunk {
                self.seq += 1;
                black_box(apply(&mut self.state, self.seq, ev));
            }
            self.publisher.publish(Snapshot {
                cursor: self.seq,
                state: self.state.clone(),
                replayed: true,
            });
        }
        let took = start.elapsed();
        self.pos = end;
        took
    }

    /// Back to the pre-populated state (untimed): an O(1) clone of the persistent maps plus the
    /// writer's cell lookup.
    fn reset(&mut self) {
        self.state = self.base.fork();
        self.pos = 0;
    }
}

fn bench_cells(c: &mut Criterion, cells: u64) {
    let setup = Instant::now();
    let mut fx = Fixture::new(cells);
    let mut pipeline = Pipeline::new(&fx.prepopulate);
    // The pre-populated state, kept for the pre-decoded variant (an O(1) clone; the pipeline's
    // later changes copy on write and leave it as it is).
    let base = pipeline.ingestor.state().clone();

    // Check the workload once (untimed): a whole pass applies and destroys what it should.
    let n = fx.pass.len();
    pipeline.run(&mut fx.pass, 1, n);
    let destroyed = pipeline
        .ingestor
        .state()
        .cells()
        .filter(|c| c.state() == CellState::Destroyed)
        .count();
    assert_eq!(destroyed, fx.destroyed_per_pass, "mix must apply cleanly");
    eprintln!(
        "apply bench: {cells} cells, fixture + checking pass built in {:.2?}",
        setup.elapsed()
    );

    // The `active512` pass, checked the same way: every cell it names ends destroyed.
    if !fx.active.is_empty() {
        let mut check = Pipeline::new(&fx.prepopulate);
        let n = fx.active.len();
        check.run(&mut fx.active, 1, n);
        let destroyed = check
            .ingestor
            .state()
            .cells()
            .filter(|c| c.state() == CellState::Destroyed)
            .count();
        assert_eq!(destroyed, n / 8, "active512 mix must apply cleanly");
    }

    let mut group = c.benchmark_group("decode_apply_publish");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    for (pattern, batches) in [("scattered", BATCHES), ("active512", ACTIVE_BATCHES)] {
        let pass = match pattern {
            "scattered" => &mut fx.pass,
            _ => &mut fx.active,
        };
        // Start every pattern from a fresh pre-populated state.
        let len = pass.len();
        pipeline.pos = len;
        let fits = |b: usize| b <= len && (b < 65_536 || cells <= FULL_MATRIX_MAX_CELLS);
        for &batch in batches.iter().filter(|&&b| fits(b)) {
            group.throughput(Throughput::Elements(batch as u64));
            let id = BenchmarkId::new(format!("{pattern}/cells_{cells}"), batch);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut left = iters as usize;
                    let mut total = Duration::ZERO;
                    while left > 0 {
                        let room = (pass.len() - pipeline.pos) / batch;
                        if room == 0 {
                            // Untimed: back to the pre-populated state.
                            pipeline = Pipeline::new(&fx.prepopulate);
                            continue;
                        }
                        let n = left.min(room);
                        total += pipeline.run(pass, batch, n);
                        left -= n;
                    }
                    total
                })
            });
        }
    }
    group.finish();

    // Pre-decoded variant.
    drop(pipeline);
    let mut decoder = Decoder::new();
    let owned: Vec<common::Owned> = fx
        .pass
        .iter()
        .map(|raw| common::Owned::new(&decoder.decode(&raw.payload).expect("decodes")))
        .collect();
    let events: Vec<Event<'_>> = owned.iter().map(common::Owned::view).collect();
    let (publisher, _reader) = snapshot::channel();
    let mut run = ApplyRun {
        state: base.fork(),
        base,
        publisher,
        seq: cells,
        pos: 0,
    };
    let applied = events
        .iter()
        .map(|ev| {
            run.seq += 1;
            apply(&mut run.state, run.seq, ev)
        })
        .filter(|o| *o == Outcome::Applied)
        .count();
    assert_eq!(applied, events.len(), "every pre-decoded event applies");
    run.reset();

    let mut group = c.benchmark_group("apply_publish");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    for &batch in APPLY_ONLY_BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        let id = BenchmarkId::new(format!("scattered/cells_{cells}"), batch);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut left = iters as usize;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let room = (events.len() - run.pos) / batch;
                    if room == 0 {
                        run.reset();
                        continue;
                    }
                    let n = left.min(room);
                    total += run.run(&events, batch, n);
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    for cells in common::cell_counts(DEFAULT_CELLS) {
        bench_cells(c, cells);
    }
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
