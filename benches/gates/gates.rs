//! Instruction-count regression gates (gungraun + Callgrind), run by `.ci/gates`.
//!
//! criterion wall-clock numbers drift by several percent on the shared machines; instruction
//! counts do not. Each benchmark below runs once under Callgrind; only the benchmark function is
//! counted (fixtures are built by `setup` functions, and what a benchmark returns is dropped
//! after counting stops). Inputs are fixed: no clock, no randomness, no hash-order dependence.
//!
//! - `decode`: `Decoder::decode` of 64 distinct instances of each example in
//!   `contracts/examples/events/` (one warmed decoder, as on the ingest thread).
//! - `apply`: `state::apply` of 1024 pre-decoded events over a state holding 10^4 cells and 2,500
//!   formations, every one of them applied (see `batch_event`), the state shared with a published
//!   snapshot as on the ingest thread.
//! - `ingest`: `Ingestor::ingest` (decode + apply + frame push) of the same 1024 events, then one
//!   snapshot publish and one ring commit, as the ingest thread does per round.
//! - `admission`: `admission::admit` of the contract's flat and kubectl example documents.
//! - `fanout`: `RingWriter::push` of 1024 frames into a full ring (each push replaces the oldest
//!   frame, the steady state), then `commit`.
//! - `http`: the socket-free parts of request handling: `parse_ingest` of a 100-event batch body,
//!   and the query parsers of `/v1/cells`, `/v1/events` and `/ws/events`.
//! - `checkpoint`: `checkpoint::format::encode` of the pre-populated state (10^4 cells, 2,500
//!   formations), and `open` + `restore` of that checkpoint, on one thread (the server builds the
//!   id index on a second one, which Callgrind would not count).
//!
//! Small operations repeat a fixed number of times (the `_xN` suffix) so every count is in
//! 10^5..10^8: large enough that a few instructions of noise are negligible, small enough that the
//! whole gate takes minutes under Valgrind.
//!
//! The gates run on the system allocator, not on mimalloc as the server and the criterion benches
//! do: mimalloc makes internal choices from the process's memory layout, and `apply_batch` took
//! one of two counts 3% apart depending on the size of the environment (1,444,398 or 1,399,302).
//! With the system allocator the counts were identical across five environment sizes.

#[path = "../common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cellos_server::admission::admit;
use cellos_server::checkpoint::format;
use cellos_server::event::decode::Decoder;
use cellos_server::event::{Event, RawEvent};
use cellos_server::fanout::{Ring, RingWriter, DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
use cellos_server::http::cloudevents::parse_ingest;
use cellos_server::http::query::{CellsQuery, EventsQuery};
use cellos_server::ingest::Ingestor;
use cellos_server::log::LogIdentity;
use cellos_server::state::cells::Threads;
use cellos_server::state::{self, snapshot, Outcome, Publisher, Reader, State};
use cellos_server::ws::query::WsQuery;
use common::Example;
use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};
use uuid::Uuid;

/// Cells in the pre-populated state.
const CELLS: u64 = 10_000;
/// Cells per formation: the pre-populated state holds `CELLS / CELLS_PER_FORMATION` formations.
const CELLS_PER_FORMATION: u64 = 4;
const FORMATIONS: u64 = CELLS / CELLS_PER_FORMATION;
/// Events per measured batch (apply, ingest, fan-out).
const BATCH: u64 = 1024;
/// Distinct instances of an example decoded per `decode` benchmark.
const DECODES: u64 = 64;
/// Events in the `parse_ingest` body.
const INGEST_BODY_EVENTS: u64 = 100;
/// Repetitions of the small operations.
const ADMITS: usize = 16;
const QUERIES: usize = 100;

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

/// The log that builds the pre-populated state, seq 1..: one `created` per formation, then one
/// `started` per cell (four cells per formation).
fn prepopulation() -> Vec<RawEvent> {
    let formations = (0..FORMATIONS).map(|f| (common::FORMATION_CREATED, 0, f));
    let cells = (0..CELLS).map(|c| (common::CELL_STARTED, c, c / CELLS_PER_FORMATION));
    formations
        .chain(cells)
        .enumerate()
        .map(|(i, (ex, cell, formation))| common::raw(i as u64 + 1, ex, cell, formation))
        .collect()
}

/// The example, cell and formation of event `i` of a measured batch. Per 8 events: one cell
/// restart (`started`), five `command.completed`, one formation lifecycle event and one cell
/// `destroyed`. Cell events visit distinct pre-populated cells in a scattered order; formation
/// events take new formations through created → running → completed, so every event applies.
fn batch_event(i: u64) -> (Example, u64, u64) {
    if i % 8 == 3 {
        let k = i / 8;
        let phase = match k % 3 {
            0 => common::FORMATION_CREATED,
            1 => common::FORMATION_RUNNING,
            _ => common::FORMATION_COMPLETED,
        };
        return (phase, 0, FORMATIONS + k / 3);
    }
    let cell = common::scattered(i, CELLS);
    let ex = match i % 8 {
        0 => common::CELL_STARTED,
        7 => common::CELL_DESTROYED,
        _ => common::CELL_COMMAND_COMPLETED,
    };
    (ex, cell, cell / CELLS_PER_FORMATION)
}

/// The measured batch as the log hands it over, continuing after the pre-population.
fn batch(first_seq: u64) -> Vec<RawEvent> {
    (0..BATCH)
        .map(|i| {
            let (ex, cell, formation) = batch_event(i);
            common::raw(first_seq + i, ex, cell, formation)
        })
        .collect()
}

/// The ingest thread's working set after replaying the pre-population, one publish per 4096
/// events as in production.
struct Pipeline {
    ingestor: Ingestor,
    ring: RingWriter,
    publisher: Publisher,
    _reader: Reader,
}

fn pipeline() -> Pipeline {
    let (publisher, reader) = snapshot::channel();
    let (_ring, mut ring) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
    let mut ingestor = Ingestor::new();
    for chunk in prepopulation().chunks(4096) {
        for raw in chunk {
            ingestor.ingest(raw, &mut ring);
        }
        publisher.publish(ingestor.snapshot());
        ring.commit();
    }
    assert_eq!(ingestor.state().cell_count(), CELLS as usize);
    assert_eq!(ingestor.state().formation_count(), FORMATIONS as usize);
    Pipeline {
        ingestor,
        ring,
        publisher,
        _reader: reader,
    }
}

// ---------------------------------------------------------------------------------------------
// decode
// ---------------------------------------------------------------------------------------------

/// A warmed decoder and `DECODES` distinct payloads made from `example`.
fn decode_setup(example: Example) -> (Decoder, Vec<Bytes>) {
    let payloads: Vec<Bytes> = (0..DECODES)
        .map(|i| Bytes::from(common::instantiate(example, i, i, i)))
        .collect();
    let mut decoder = Decoder::new();
    for p in &payloads {
        assert!(decoder.decode(p).is_ok(), "{} decodes", example.name);
    }
    (decoder, payloads)
}

#[library_benchmark]
#[bench::cell_lifecycle_started(args = (common::CELL_STARTED), setup = decode_setup)]
#[bench::cell_command_completed(args = (common::CELL_COMMAND_COMPLETED), setup = decode_setup)]
#[bench::cell_lifecycle_destroyed(args = (common::CELL_DESTROYED), setup = decode_setup)]
#[bench::formation_created(args = (common::FORMATION_CREATED), setup = decode_setup)]
#[bench::formation_running(args = (common::FORMATION_RUNNING), setup = decode_setup)]
#[bench::formation_completed(args = (common::FORMATION_COMPLETED), setup = decode_setup)]
#[bench::cell_identity_materialized(args = (common::IDENTITY_MATERIALIZED), setup = decode_setup)]
#[bench::cell_export_v2_completed(args = (common::EXPORT_V2_COMPLETED), setup = decode_setup)]
fn decode_x64(fixture: (Decoder, Vec<Bytes>)) -> (Decoder, Vec<Bytes>) {
    let (mut decoder, payloads) = fixture;
    for p in &payloads {
        let _ = black_box(decoder.decode(black_box(p)));
    }
    (decoder, payloads)
}

library_benchmark_group!(name = decode, benchmarks = [decode_x64]);

// ---------------------------------------------------------------------------------------------
// apply
// ---------------------------------------------------------------------------------------------

struct ApplyFixture {
    state: State,
    /// The snapshot last published, sharing every node with `state` as on the ingest thread.
    _published: State,
    first_seq: u64,
    events: Vec<Event<'static>>,
}

fn apply_setup() -> ApplyFixture {
    let pipeline = pipeline();
    let first_seq = pipeline.ingestor.cursor() + 1;
    let mut decoder = Decoder::new();
    let owned: Vec<common::Owned> = batch(first_seq)
        .iter()
        .map(|raw| common::Owned::new(&decoder.decode(&raw.payload).expect("decodes")))
        .collect();
    // Leaked once per process (the benchmark runs once): events borrow from it.
    let owned: &'static [common::Owned] = owned.leak();
    let events: Vec<Event<'static>> = owned.iter().map(common::Owned::view).collect();
    let state = pipeline.ingestor.state().fork();
    // Check the workload (on a throwaway copy): every event of the batch applies.
    let mut check = state.clone();
    for (k, ev) in events.iter().enumerate() {
        let outcome = state::apply(&mut check, first_seq + k as u64, ev);
        assert_eq!(outcome, Outcome::Applied, "batch event {k} applies");
    }
    drop(check);
    drop(pipeline);
    ApplyFixture {
        _published: state.clone(),
        state,
        first_seq,
        events,
    }
}

#[library_benchmark]
#[bench::cells_10k_batch_1024(setup = apply_setup)]
fn apply_batch(mut fx: ApplyFixture) -> ApplyFixture {
    for (k, ev) in fx.events.iter().enumerate() {
        black_box(state::apply(
            &mut fx.state,
            fx.first_seq + k as u64,
            black_box(ev),
        ));
    }
    fx
}

library_benchmark_group!(name = apply, benchmarks = [apply_batch]);

// ---------------------------------------------------------------------------------------------
// ingest
// ---------------------------------------------------------------------------------------------

fn ingest_setup() -> (Pipeline, Vec<RawEvent>) {
    let pipeline = pipeline();
    let events = batch(pipeline.ingestor.cursor() + 1);
    (pipeline, events)
}

#[library_benchmark]
#[bench::cells_10k_batch_1024(setup = ingest_setup)]
fn ingest_batch_publish(fixture: (Pipeline, Vec<RawEvent>)) -> (Pipeline, Vec<RawEvent>) {
    let (mut p, events) = fixture;
    for raw in &events {
        p.ingestor.ingest(black_box(raw), &mut p.ring);
    }
    p.publisher.publish(p.ingestor.snapshot());
    p.ring.commit();
    (p, events)
}

library_benchmark_group!(name = ingest, benchmarks = [ingest_batch_publish]);

// ---------------------------------------------------------------------------------------------
// admission
// ---------------------------------------------------------------------------------------------

const FLAT_DOCUMENT: &[u8] =
    include_bytes!("../../contracts/schemas/examples/formation-v1/valid-flat.json");
const KUBECTL_DOCUMENT: &[u8] =
    include_bytes!("../../contracts/schemas/examples/formation-v1/valid-kubectl.json");

/// A request body as the server holds it: on the heap. (Parsing the `'static` data in place
/// would make the counts depend on where the linker puts it, which moves with unrelated code and
/// with the checkout path compiled into the binary.)
fn body(document: &[u8]) -> Vec<u8> {
    let body = document.to_vec();
    assert!(admit(&body).is_ok());
    body
}

#[library_benchmark]
#[bench::flat(args = (FLAT_DOCUMENT), setup = body)]
#[bench::kubectl(args = (KUBECTL_DOCUMENT), setup = body)]
fn admit_x16(body: Vec<u8>) -> Vec<u8> {
    for _ in 0..ADMITS {
        let admitted = admit(black_box(&body));
        assert!(black_box(admitted).is_ok());
    }
    body
}

library_benchmark_group!(name = admission, benchmarks = [admit_x16]);

// ---------------------------------------------------------------------------------------------
// fanout
// ---------------------------------------------------------------------------------------------

struct FrameInput {
    seq: u64,
    payload: Bytes,
    subject: Arc<str>,
    formation: Option<Uuid>,
}

fn frame_inputs(first_seq: u64) -> Vec<FrameInput> {
    (0..BATCH)
        .map(|i| {
            let (ex, cell, formation) = batch_event(i);
            let raw = common::raw(first_seq + i, ex, cell, formation);
            FrameInput {
                seq: raw.seq,
                payload: raw.payload,
                subject: raw.subject,
                formation: Uuid::parse_str(&common::formation_id(formation)).ok(),
            }
        })
        .collect()
}

/// A full ring (every slot holds a frame, so each push replaces the oldest) and the next batch.
/// With the default bounds and events of the usual size the slot count evicts before the byte
/// bound does, as here.
fn fanout_setup() -> (Arc<Ring>, RingWriter, Vec<FrameInput>) {
    let (ring, mut writer) = Ring::new(DEFAULT_RING_CAPACITY, DEFAULT_RING_BYTES);
    let template = frame_inputs(1);
    let mut seq = 0;
    while (seq as usize) < DEFAULT_RING_CAPACITY {
        for f in &template {
            seq += 1;
            writer.push(seq, &f.payload, f.subject.clone(), f.formation);
        }
        writer.commit();
    }
    assert_eq!(ring.published(), ring.capacity());
    assert!(
        ring.held_bytes() < DEFAULT_RING_BYTES as u64,
        "the byte bound has not bitten"
    );
    (ring, writer, frame_inputs(seq + 1))
}

#[library_benchmark]
#[bench::full_ring_1024_frames(setup = fanout_setup)]
fn push_commit(
    fixture: (Arc<Ring>, RingWriter, Vec<FrameInput>),
) -> (Arc<Ring>, RingWriter, Vec<FrameInput>) {
    let (ring, mut writer, frames) = fixture;
    for f in &frames {
        writer.push(f.seq, &f.payload, f.subject.clone(), f.formation);
    }
    writer.commit();
    (ring, writer, frames)
}

library_benchmark_group!(name = fanout, benchmarks = [push_commit]);

// ---------------------------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------------------------

/// A `POST /v1/events` batch body: a JSON array of every example type, distinct ids.
fn ingest_body() -> Bytes {
    let events: Vec<String> = (0..INGEST_BODY_EVENTS)
        .map(|i| {
            let ex = common::ALL[(i % common::ALL.len() as u64) as usize];
            common::instantiate(ex, i, i, i / CELLS_PER_FORMATION)
        })
        .collect();
    let body = Bytes::from(format!("[{}]", events.join(",")));
    assert_eq!(
        parse_ingest(&body, true).map(|a| a.len()).ok(),
        Some(INGEST_BODY_EVENTS as usize)
    );
    body
}

#[library_benchmark]
#[bench::batch_100_events(setup = ingest_body)]
fn parse_ingest_batch(body: Bytes) -> Bytes {
    let appends = parse_ingest(black_box(&body), true);
    assert!(black_box(appends).is_ok());
    body
}

// Query strings are copied to the heap by `setup`, as request URIs are (see `body`).
const CELLS_QUERY: &str = "state=running&formation=payments-canary-5e0d7b8a&limit=500";
const EVENTS_QUERY: &str =
    "since=1048576&limit=1000&formation=6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14";
const WS_QUERY: &str =
    "since=1048576&subject=cellos.events.cells.ci-build-7f3a9c2e.%3E&formation=payments-canary-5e0d7b8a";

#[library_benchmark]
#[bench::cells(args = (CELLS_QUERY), setup = String::from)]
fn cells_query_x100(query: String) -> String {
    for _ in 0..QUERIES {
        assert!(black_box(CellsQuery::parse(black_box(Some(&query)))).is_ok());
    }
    query
}

#[library_benchmark]
#[bench::events(args = (EVENTS_QUERY), setup = String::from)]
fn events_query_x100(query: String) -> String {
    for _ in 0..QUERIES {
        assert!(black_box(EventsQuery::parse(black_box(Some(&query)))).is_ok());
    }
    query
}

#[library_benchmark]
#[bench::ws(args = (WS_QUERY), setup = String::from)]
fn ws_query_x100(query: String) -> String {
    for _ in 0..QUERIES {
        assert!(black_box(WsQuery::parse(black_box(Some(&query)))).is_ok());
    }
    query
}

library_benchmark_group!(
    name = http,
    benchmarks = [
        parse_ingest_batch,
        cells_query_x100,
        events_query_x100,
        ws_query_x100
    ]
);

// ---------------------------------------------------------------------------------------------
// checkpoint
// ---------------------------------------------------------------------------------------------

fn log_identity() -> LogIdentity {
    LogIdentity {
        stream: "CELLOS_EVENTS".into(),
        epoch: "1764500000000000000".into(),
    }
}

fn checkpoint_state() -> (State, u64) {
    let pipeline = pipeline();
    (
        pipeline.ingestor.state().clone(),
        pipeline.ingestor.cursor(),
    )
}

fn checkpoint_bytes() -> Vec<u8> {
    let (state, seq) = checkpoint_state();
    format::encode(&log_identity(), seq, &state)
        .expect("encodes")
        .to_vec()
}

#[library_benchmark]
#[bench::cells_10k(setup = checkpoint_state)]
fn checkpoint_encode(fixture: (State, u64)) -> bytes::Bytes {
    let (state, seq) = fixture;
    format::encode(&log_identity(), black_box(seq), black_box(&state)).expect("encodes")
}

#[library_benchmark]
#[bench::cells_10k(setup = checkpoint_bytes)]
fn checkpoint_restore(bytes: Vec<u8>) -> State {
    let opened = format::open(black_box(&bytes)).expect("opens");
    opened.restore_with(0, Threads::One).expect("restores")
}

library_benchmark_group!(
    name = checkpoint,
    benchmarks = [checkpoint_encode, checkpoint_restore]
);

main!(
    config = LibraryBenchmarkConfig::default()
        // Only instruction counts are gated: no cache simulation (faster, and the counts do not
        // depend on simulated cache sizes).
        .tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = decode,
    apply,
    ingest,
    admission,
    fanout,
    http,
    checkpoint
);
