//! Ingest cost with 10,000 idle WebSocket-like subscribers versus none. Subscribers are real
//! tasks waiting on the ring, woken through its waker task exactly as sessions are; the figure
//! is the ingest thread's time per batch (decode + apply + frame + publish + commit), which must
//! stay within 20% whatever the number of subscribers.
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::sync::Arc;
use std::time::Instant;

use cellos_server::fanout::{Ring, DEFAULT_RING_BYTES};
use cellos_server::ingest::Ingestor;
use cellos_server::state::snapshot;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::sync::CancellationToken;

const BATCH: u64 = 1024;
const CELLS: u64 = 100_000;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest_with_subscribers");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(30);
    for subscribers in [0usize, 10_000] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (ring, mut writer) = Ring::new(65_536, DEFAULT_RING_BYTES);
        let stop = CancellationToken::new();
        runtime.spawn(ring.clone().run_waker(stop.clone()));
        for _ in 0..subscribers {
            let ring: Arc<Ring> = ring.clone();
            let mut heads = ring.subscribe();
            let stop = stop.clone();
            runtime.spawn(async move {
                let mut pos = ring.published();
                loop {
                    tokio::select! {
                        changed = heads.changed() => if changed.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                    // An idle session: its filter matches nothing; it walks its position and
                    // looks at each frame in place, as `ws::session` does.
                    let published = ring.published();
                    while pos < published {
                        let _ = ring.peek(pos, |f| f.seq);
                        pos += 1;
                    }
                }
            });
        }
        let (publisher, _reader) = snapshot::channel();
        let mut ingestor = Ingestor::new();
        let mut seq = 0u64;
        // Warm the state to 10^5 cells.
        for i in 0..CELLS {
            seq += 1;
            ingestor.ingest(
                &common::raw(seq, common::CELL_STARTED, i, i % 1000),
                &mut writer,
            );
        }
        writer.commit();
        let examples = [
            common::CELL_COMMAND_COMPLETED,
            common::CELL_STARTED,
            common::CELL_DESTROYED,
        ];
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|iters| {
                // Build the batches outside the timed part: only the ingest thread's work counts.
                let batches: Vec<Vec<_>> = (0..iters)
                    .map(|_| {
                        (0..BATCH)
                            .map(|_| {
                                seq += 1;
                                let cell = common::scattered(seq, CELLS);
                                common::raw(seq, examples[(seq % 3) as usize], cell, cell % 1000)
                            })
                            .collect()
                    })
                    .collect();
                let start = Instant::now();
                for batch in &batches {
                    for raw in batch {
                        ingestor.ingest(raw, &mut writer);
                    }
                    publisher.publish(ingestor.snapshot());
                    writer.commit();
                }
                start.elapsed()
            })
        });
        stop.cancel();
        runtime.shutdown_background();
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
