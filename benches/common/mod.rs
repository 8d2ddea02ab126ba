//! Shared by every bench: the example CloudEvents in `contracts/examples/events/` and a generator
//! of distinct events made from them by substituting the envelope id, the cell id and the
//! formation id and name. Substitutes have the same length as the originals, so generated
//! payloads are exactly as large as the examples.
#![allow(
    clippy::disallowed_methods,
    reason = "benchmarks time themselves and read their own environment switches"
)]
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use cellos_server::event::subject::{formation_subject, ingest_subject, last_type_token};
use cellos_server::event::RawEvent;
use cellos_server::event::{Event, Kind};

macro_rules! example {
    ($file:literal) => {
        include_str!(concat!("../../contracts/examples/events/", $file))
    };
}

/// One example event file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Example {
    /// File stem, used as the benchmark id.
    pub name: &'static str,
    /// The JSON as stored (one line plus a newline).
    pub file: &'static str,
}

impl Example {
    /// The payload bytes, without the file's trailing newline.
    pub(crate) fn json(&self) -> &'static str {
        self.file.trim_end()
    }
}

pub(crate) const CELL_STARTED: Example = Example {
    name: "cell-lifecycle-started",
    file: example!("cell-lifecycle-started.json"),
};
pub(crate) const CELL_COMMAND_COMPLETED: Example = Example {
    name: "cell-command-completed",
    file: example!("cell-command-completed.json"),
};
pub(crate) const CELL_DESTROYED: Example = Example {
    name: "cell-lifecycle-destroyed",
    file: example!("cell-lifecycle-destroyed.json"),
};
pub(crate) const FORMATION_CREATED: Example = Example {
    name: "formation-created",
    file: example!("formation-created.json"),
};
pub(crate) const FORMATION_RUNNING: Example = Example {
    name: "formation-running",
    file: example!("formation-running.json"),
};
pub(crate) const FORMATION_COMPLETED: Example = Example {
    name: "formation-completed",
    file: example!("formation-completed.json"),
};
pub(crate) const IDENTITY_MATERIALIZED: Example = Example {
    name: "cell-identity-materialized",
    file: example!("cell-identity-materialized.json"),
};
pub(crate) const EXPORT_V2_COMPLETED: Example = Example {
    name: "cell-export-v2-completed",
    file: example!("cell-export-v2-completed.json"),
};

pub(crate) const ALL: [Example; 8] = [
    CELL_STARTED,
    CELL_COMMAND_COMPLETED,
    CELL_DESTROYED,
    FORMATION_CREATED,
    FORMATION_RUNNING,
    FORMATION_COMPLETED,
    IDENTITY_MATERIALIZED,
    EXPORT_V2_COMPLETED,
];

/// The ids every example shares, which [`instantiate`] substitutes.
pub(crate) const TEMPLATE_CELL_ID: &str = "ci-build-7f3a9c2e";
pub(crate) const TEMPLATE_FORMATION_ID: &str = "6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14";
pub(crate) const TEMPLATE_FORMATION_NAME: &str = "payments-canary-5e0d7b8a";

/// Distinct cell id number `i`, as long as the template's.
pub(crate) fn cell_id(i: u64) -> String {
    format!("ci-build-{i:08x}")
}

/// Distinct formation id number `i`: a lowercase hyphenated UUID.
pub(crate) fn formation_id(i: u64) -> String {
    format!("6f1c2a4e-8b3d-4f7a-9c21-{i:012x}")
}

/// Distinct formation name number `i`, as long as the template's.
pub(crate) fn formation_name(i: u64) -> String {
    format!("payments-canary-{i:08x}")
}

/// Distinct CloudEvent id number `i` (UUID-shaped, 36 characters).
pub(crate) fn event_id(i: u64) -> String {
    format!("e7a1c0d4-5b2f-4c8e-9a3d-{i:012x}")
}

/// `example` with envelope id `event`, cell `cell` and formation `formation` (id and name).
pub(crate) fn instantiate(example: Example, event: u64, cell: u64, formation: u64) -> String {
    let json = example.json();
    let key = "\"id\":\"";
    let at = json.find(key).expect("envelope id") + key.len();
    let mut out = String::with_capacity(json.len());
    out.push_str(&json[..at]);
    out.push_str(&event_id(event));
    out.push_str(&json[at + 36..]);
    out.replace(TEMPLATE_CELL_ID, &cell_id(cell))
        .replace(TEMPLATE_FORMATION_ID, &formation_id(formation))
        .replace(TEMPLATE_FORMATION_NAME, &formation_name(formation))
}

/// The CloudEvent type of an example (read from its JSON).
pub(crate) fn event_type(example: Example) -> &'static str {
    let json = example.json();
    let key = "\"type\":\"";
    let at = json.find(key).expect("type") + key.len();
    let len = json[at..].find('"').expect("type end");
    &json[at..at + len]
}

/// Whether an example belongs to the formation family.
pub(crate) fn is_formation(example: Example) -> bool {
    event_type(example).contains(".formation.")
}

/// The subject the event would be filed under: formations by id, cells by cell id.
pub(crate) fn subject(example: Example, cell: u64, formation: u64) -> String {
    let ty = event_type(example);
    if is_formation(example) {
        formation_subject(&formation_id(formation), last_type_token(ty))
    } else {
        ingest_subject(None, Some(&cell_id(cell)), ty)
    }
}

/// A log record as the tail hands it to the ingest thread.
pub(crate) fn raw(seq: u64, example: Example, cell: u64, formation: u64) -> RawEvent {
    RawEvent {
        seq,
        subject: Arc::from(subject(example, cell, formation)),
        payload: Bytes::from(instantiate(example, seq, cell, formation)),
    }
}

/// A multiplier coprime with every key count used (10^k), so `i * SCATTER % keys` visits every
/// key once per `keys` steps, in an order that jumps around the key space.
pub(crate) const SCATTER: u64 = 2_654_435_761;

/// The `i`-th key of a scattered walk over `keys` keys.
pub(crate) fn scattered(i: u64, keys: u64) -> u64 {
    (i % keys).wrapping_mul(SCATTER) % keys
}

/// Cell counts to run, from `CELLOS_BENCH_CELLS` (comma-separated) or the default.
pub(crate) fn cell_counts(default: &[u64]) -> Vec<u64> {
    match std::env::var("CELLOS_BENCH_CELLS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CELLOS_BENCH_CELLS: comma-separated integers")
            })
            .collect(),
        _ => default.to_vec(),
    }
}

/// The fields of a decoded event that `apply` reads, owned, so events can be decoded up front.
pub(crate) struct Owned {
    kind: Kind,
    time: Option<Box<str>>,
    cell_id: Option<Box<str>>,
    spec_id: Option<Box<str>>,
    run_id: Option<Box<str>>,
    exit_code: Option<i64>,
    outcome: Option<Box<str>>,
    formation_id: Option<Box<str>>,
    formation_name: Option<Box<str>>,
    member_count: Option<usize>,
    document: Option<Bytes>,
}

impl Owned {
    pub(crate) fn new(ev: &Event<'_>) -> Owned {
        let own = |s: Option<&str>| s.map(Box::from);
        Owned {
            kind: ev.kind,
            time: own(ev.time),
            cell_id: own(ev.cell_id),
            spec_id: own(ev.spec_id),
            run_id: own(ev.run_id),
            exit_code: ev.exit_code,
            outcome: own(ev.outcome),
            formation_id: own(ev.formation_id),
            formation_name: own(ev.formation_name),
            member_count: ev.member_count,
            document: ev.document.clone(),
        }
    }

    pub(crate) fn view(&self) -> Event<'_> {
        Event {
            kind: self.kind,
            time: self.time.as_deref(),
            cell_id: self.cell_id.as_deref(),
            spec_id: self.spec_id.as_deref(),
            run_id: self.run_id.as_deref(),
            exit_code: self.exit_code,
            outcome: self.outcome.as_deref(),
            formation_id: self.formation_id.as_deref(),
            formation_name: self.formation_name.as_deref(),
            member_count: self.member_count,
            document: self.document.clone(),
            ..Event::default()
        }
    }
}
