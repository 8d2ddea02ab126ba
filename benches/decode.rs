//! Decoding one stored CloudEvent: the server's simd-json tape decoder against serde_json, on
//! every example in `contracts/examples/events/`.
//!
//! - `simd_json_decoder`: `Decoder::decode` (reused buffers, as on the ingest thread), including
//!   the canonical rendering of formation documents.
//! - `serde_json_value`: `serde_json::from_slice::<Value>`, the generic tree.
//! - `serde_json_typed`: a borrowed typed struct pulling the same fields as `Decoder::decode`
//!   (and rendering the formation document canonically, as the decoder does).
//!
//! Throughput is reported per event (elements) and per payload byte.

mod common;

/// The allocator the `cellos-server` binary runs with, so this bench measures what ships.
#[global_allocator]
static GLOBAL: cellos_server::memory::Allocator = cellos_server::memory::Allocator;

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use cellos_server::event::decode::Decoder;
use cellos_server::event::Kind;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields `Decoder::decode` extracts, borrowed where the JSON has no escapes.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Envelope<'a> {
    #[serde(borrow)]
    specversion: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Data<'a> {
    #[serde(borrow, rename = "cellId")]
    cell_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "specId")]
    spec_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "runId")]
    run_id: Option<Cow<'a, str>>,
    #[serde(rename = "exitCode")]
    exit_code: Option<i64>,
    #[serde(borrow)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "formationId")]
    formation_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "formation_id")]
    formation_id_snake: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "formationName")]
    formation_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    correlation: Option<Correlation<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Correlation<'a> {
    #[serde(borrow, rename = "formationId")]
    formation_id: Option<Cow<'a, str>>,
}

/// serde_json, typed: the same fields as `Decoder::decode`. `data` is captured raw and parsed
/// into [`Data`]; for formation events it is also parsed into a `Value` to render the canonical
/// document (`data.document`, else `data`; `Value` objects are sorted maps, so `to_vec` writes
/// keys in order), which is the work the decoder does for them.
fn serde_typed(payload: &[u8]) -> (Kind, Option<Vec<u8>>, usize) {
    let env: Envelope<'_> = serde_json::from_slice(payload).expect("valid example");
    let kind = Kind::from_type(env.ty.as_deref().unwrap_or(""));
    let formation = matches!(kind, Kind::Formation(_) | Kind::FormationUnknownPhase);
    let data: Option<Data<'_>> = env
        .data
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let document = match (env.data, formation) {
        (Some(raw), true) => {
            let mut v: serde_json::Value = serde_json::from_str(raw.get()).expect("data");
            let doc = match v.get_mut("document") {
                Some(d) => d.take(),
                None => v,
            };
            Some(serde_json::to_vec(&doc).expect("render"))
        }
        _ => None,
    };
    let cell_len = data
        .as_ref()
        .and_then(|d| d.cell_id.as_ref())
        .map_or(0, |c| c.len());
    (kind, document, cell_len)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    let mut decoder = Decoder::new();
    for ex in common::ALL {
        let payload = ex.json().as_bytes();
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: payload.len() as u64,
        });
        // Sanity: generated events keep the example's size and stay valid JSON, and both
        // decoders see the example the same way.
        let generated = common::instantiate(ex, 12_345, 678, 9);
        assert_eq!(generated.len(), payload.len(), "{}", ex.name);
        let v: serde_json::Value = serde_json::from_str(&generated).expect("generated JSON");
        assert_eq!(v["id"], common::event_id(12_345).as_str(), "{}", ex.name);
        let ev = decoder.decode(payload).expect("example decodes");
        let (kind, doc, _) = serde_typed(payload);
        assert_eq!(ev.kind, kind, "{}", ex.name);
        assert_eq!(ev.document.as_deref(), doc.as_deref(), "{}", ex.name);

        group.bench_with_input(
            BenchmarkId::new("simd_json_decoder", ex.name),
            payload,
            |b, p| {
                b.iter(|| {
                    let ev = decoder.decode(black_box(p)).expect("decodes");
                    black_box(ev.kind);
                    black_box(ev.cell_id);
                    black_box(ev.document);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", ex.name),
            payload,
            |b, p| {
                b.iter(|| {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(black_box(p)).expect("json"),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_typed", ex.name),
            payload,
            |b, p| b.iter(|| black_box(serde_typed(black_box(p)))),
        );
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
