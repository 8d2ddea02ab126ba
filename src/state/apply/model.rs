//! A naive model of the projection rules, and the check that the real projection agrees with it:
//! batching does not matter, published snapshots never change, and the state is the model's.
//! Driven by proptest here and by the `decode_apply` fuzz target (feature `fuzzing`), which also
//! runs [`check_raw`] on arbitrary payloads.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::apply;
use crate::event::decode::Decoder;
use crate::state::State;

/// One event, as the model knows it; [`Op::json`] renders the CloudEvent.
#[derive(Clone, Debug)]
pub enum Op {
    Cell {
        kind: u8,
        cell: Option<u8>,
        spec: Option<u8>,
        run: Option<u8>,
        exit: Option<i64>,
        outcome: Option<u8>,
        formation: Option<u8>,
        time: Option<u8>,
    },
    Formation {
        phase: u8,
        id: Option<u8>,
        name: Option<u8>,
        time: Option<u8>,
    },
    /// A family the projection passes through, naming a cell or not.
    Other { cell: Option<u8> },
}

const PHASES: [&str; 8] = [
    "created",
    "launching",
    "running",
    "degraded",
    "completed",
    "failed",
    "cancelled",
    "bogus",
];

fn fid(i: u8) -> String {
    if i == 9 {
        "not-a-uuid".into()
    } else {
        Uuid::from_u128(u128::from(i) + 1).to_string()
    }
}

fn time(t: Option<u8>) -> String {
    t.map_or(String::new(), |t| {
        format!(",\"time\":\"2026-01-01T00:00:0{}.000Z\"", t % 10)
    })
}

/// A cell event's time: usually the packed shape, sometimes one kept as text (see `record`).
fn cell_time(t: u8) -> String {
    match t % 10 {
        2 => "2026-01-01 00:00:02".into(),
        t => format!("2026-01-01T00:00:0{t}.000Z"),
    }
}

/// An outcome: one the record codes, or one it keeps as text.
fn outcome_text(o: u8) -> String {
    match o {
        0 => "failed".into(),
        o => format!("o{o}"),
    }
}

impl Op {
    pub fn json(&self) -> String {
        match self {
            Op::Cell {
                kind,
                cell,
                spec,
                run,
                exit,
                outcome,
                formation,
                time: t,
            } => {
                let ty = [
                    "lifecycle.v1.started",
                    "command.v1.completed",
                    "lifecycle.v1.destroyed",
                ][*kind as usize % 3];
                let mut data = Vec::new();
                if let Some(c) = cell {
                    data.push(format!("\"cellId\":\"c{c}\""));
                }
                if let Some(s) = spec {
                    data.push(if *s == 0 {
                        "\"specId\":\"\"".into()
                    } else {
                        format!("\"specId\":\"s{s}\"")
                    });
                }
                if let Some(r) = run {
                    data.push(format!("\"runId\":\"r{r}\""));
                }
                if let Some(e) = exit {
                    data.push(format!("\"exitCode\":{e}"));
                }
                if let Some(o) = outcome {
                    data.push(format!("\"outcome\":\"{}\"", outcome_text(*o)));
                }
                if let Some(f) = formation {
                    data.push(format!(
                        "\"correlation\":{{\"formationId\":\"{}\"}}",
                        fid(*f)
                    ));
                }
                let time = t.map_or(String::new(), |t| format!(",\"time\":\"{}\"", cell_time(t)));
                format!(
                    "{{\"type\":\"dev.cellos.events.cell.{ty}\"{time},\"data\":{{{}}}}}",
                    data.join(",")
                )
            }
            Op::Formation {
                phase,
                id,
                name,
                time: t,
            } => {
                let mut data = Vec::new();
                if let Some(i) = id {
                    data.push(format!("\"formationId\":\"{}\"", fid(*i)));
                }
                if let Some(n) = name {
                    data.push(format!("\"formationName\":\"n{n}\""));
                }
                format!(
                    "{{\"type\":\"dev.cellos.events.cell.formation.v1.{}\"{},\"data\":{{{}}}}}",
                    PHASES[*phase as usize % PHASES.len()],
                    time(*t),
                    data.join(",")
                )
            }
            Op::Other { cell } => format!(
                r#"{{"type":"dev.cellos.events.cell.dns.v1.resolved","data":{{{}}}}}"#,
                cell.map_or(String::new(), |c| format!("\"cellId\":\"c{c}\""))
            ),
        }
    }
}

/// Ops from arbitrary bytes (a fuzzer's input), over the same small id spaces as the proptest
/// strategy so that events collide on cells, formations and names.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    let opt = |b: u8, n: u8| (b & 0x80 == 0).then_some((b & 0x7f) % n);
    data.chunks_exact(8)
        .map(|c| match c[0] % 9 {
            0..=3 => Op::Cell {
                kind: c[1] % 3,
                cell: opt(c[2], 6),
                spec: opt(c[3], 3),
                run: opt(c[4], 3),
                exit: (c[5] & 0x80 == 0).then(|| i64::from(c[5]) * 40_000_000 - 3),
                outcome: opt(c[6], 2),
                formation: opt(c[7], 4).map(|f| if f == 3 { 9 } else { f }),
                time: opt(c[1].rotate_left(1), 3),
            },
            4..=7 => Op::Formation {
                phase: c[1] % 8,
                id: opt(c[2], 5).map(|i| if i == 4 { 9 } else { i }),
                name: opt(c[3], 3),
                time: opt(c[4], 3),
            },
            _ => Op::Other { cell: opt(c[1], 6) },
        })
        .collect()
}

/// Applies `ops` one by one and again in batches cut before each position in `cuts`, cloning a
/// snapshot at each cut; checks that both agree, that no snapshot changed afterwards, and that the
/// state is the model's. The error says which check failed.
pub fn check(ops: &[Op], cuts: &[usize]) -> Result<(), String> {
    let payloads: Vec<String> = ops.iter().map(Op::json).collect();
    let mut decoder = Decoder::new();
    let mut decode_apply = |state: &mut State, i: usize, payload: &str| {
        let ev = decoder
            .decode(payload.as_bytes())
            .map_err(|e| format!("op {i} does not decode: {e}"))?;
        apply(state, i as u64 + 1, &ev);
        Ok::<_, String>(())
    };
    // One by one, remembering the state after each event.
    let mut one = State::default();
    let mut history = vec![one.clone()];
    for (i, p) in payloads.iter().enumerate() {
        decode_apply(&mut one, i, p)?;
        history.push(one.clone());
    }
    // In batches, publishing (cloning) a snapshot after each one and keeping them all.
    let mut batched = State::default();
    let mut snapshots = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if cuts.contains(&i) {
            snapshots.push((i, batched.clone()));
        }
        decode_apply(&mut batched, i, p)?;
    }
    if batched != one {
        return Err(format!("batched {batched:#?}\none by one {one:#?}"));
    }
    for (i, snap) in snapshots {
        if snap != history[i] {
            return Err(format!(
                "the snapshot taken before op {i} changed after publish"
            ));
        }
    }
    let mut model = Model::default();
    for op in ops {
        model.apply(op);
    }
    if !model.matches(&one) {
        return Err(format!("model {model:#?}\nstate {one:#?}"));
    }
    Ok(())
}

/// Structured events [`check_input`] takes from one input at most (8 bytes each).
const MAX_INPUT_OPS: usize = 160;

/// What the `decode_apply` fuzz target checks, on its input as it comes. The first byte chooses
/// the mode and, with its upper bits, the batch cuts: before event `i` when bit `1 + i % 7` is
/// set. Even: [`ops_from_bytes`] (at most [`MAX_INPUT_OPS`]), then [`check`]. Odd: payloads
/// separated by 0xff (at most 64), then [`check_raw`].
pub fn check_input(data: &[u8]) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let cut = |i: usize| mode & (2 << (i % 7)) != 0;
    if mode & 1 == 0 {
        // Longer sequences add cost per run, not new situations (ids come from small spaces).
        let ops = ops_from_bytes(&rest[..rest.len().min(MAX_INPUT_OPS * 8)]);
        let cuts: Vec<usize> = (0..ops.len()).filter(|&i| cut(i)).collect();
        return check(&ops, &cuts);
    }
    let payloads: Vec<&[u8]> = rest.split(|&b| b == 0xff).take(64).collect();
    check_raw(&payloads, cut)
}

/// Arbitrary payloads, any batch split: nothing panics, splitting gives the state one-by-one
/// application gives, and every published snapshot prints afterwards as it did when it was
/// published. `cut(i)` says whether a batch ends before payload `i`. The error says which failed.
pub fn check_raw(payloads: &[&[u8]], cut: impl Fn(usize) -> bool) -> Result<(), String> {
    let mut decoder = Decoder::new();
    let mut one = State::default();
    for (i, p) in payloads.iter().enumerate() {
        if let Ok(ev) = decoder.decode(p) {
            apply(&mut one, i as u64 + 1, &ev);
        }
    }
    let mut batched = State::default();
    let mut snapshots = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if cut(i) {
            snapshots.push((i, batched.clone(), format!("{batched:?}")));
        }
        if let Ok(ev) = decoder.decode(p) {
            apply(&mut batched, i as u64 + 1, &ev);
        }
    }
    if batched != one {
        return Err(format!("batched {batched:#?}\none by one {one:#?}"));
    }
    for (i, snap, printed) in snapshots {
        let now = format!("{snap:?}");
        if now != printed {
            return Err(format!(
                "the snapshot taken before payload {i} changed after publish:\n{printed}\nnow\n{now}"
            ));
        }
    }
    Ok(())
}

/// A cell as the model sees it: spec, run, state, formation, started, destroyed, outcome, exit.
type ModelCell = (
    String,
    Option<String>,
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
);
/// A formation as the model sees it: name, status, created_at, updated_at.
type ModelFormation = (String, &'static str, Option<String>, Option<String>);

/// The rules restated as plainly as possible, on ordinary maps.
#[derive(Default, Debug, PartialEq)]
struct Model {
    cells: BTreeMap<String, ModelCell>,
    formations: BTreeMap<Uuid, ModelFormation>,
    newest_by_name: BTreeMap<String, Uuid>,
    rejected: BTreeMap<Uuid, Uuid>,
    /// Every event naming a cell, by cell, in log order (seq = position in the op list, from 1).
    cell_events: BTreeMap<String, Vec<u64>>,
    seq: u64,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        self.seq += 1;
        if let Op::Cell { cell: Some(c), .. } | Op::Other { cell: Some(c) } = op {
            self.cell_events
                .entry(format!("c{c}"))
                .or_default()
                .push(self.seq);
        }
        match op {
            Op::Other { .. } => {}
            Op::Cell {
                kind,
                cell,
                spec,
                run,
                exit,
                outcome,
                formation,
                time: t,
            } => {
                let (Some(c), Some(s)) = (cell, spec) else {
                    return;
                };
                let id = format!("c{c}");
                let spec = if *s == 0 {
                    String::new()
                } else {
                    format!("s{s}")
                };
                let t = t.map(cell_time);
                let f = formation.map(fid);
                let rec = self.cells.entry(id).or_insert_with(|| {
                    (
                        spec.clone(),
                        run.map(|r| format!("r{r}")),
                        "pending",
                        f.clone(),
                        None,
                        None,
                        None,
                        None,
                    )
                });
                if rec.2 == "destroyed" {
                    return;
                }
                if rec.0.is_empty() {
                    rec.0 = spec;
                }
                if rec.1.is_none() {
                    rec.1 = run.map(|r| format!("r{r}"));
                }
                if rec.3.is_none() {
                    rec.3 = f;
                }
                match kind % 3 {
                    0 => {
                        rec.2 = "running";
                        rec.4 = t;
                    }
                    1 => {
                        if let Some(e) = exit {
                            rec.7 = Some(*e as i32);
                        }
                    }
                    _ => {
                        rec.2 = "destroyed";
                        rec.5 = t;
                        if let Some(o) = outcome {
                            rec.6 = Some(outcome_text(*o));
                        }
                    }
                }
            }
            Op::Formation {
                phase,
                id,
                name,
                time: t,
            } => {
                let phase = PHASES[*phase as usize % PHASES.len()];
                let status = match phase {
                    "created" => "PENDING",
                    "launching" | "running" | "degraded" => "RUNNING",
                    "completed" => "SUCCEEDED",
                    "failed" => "FAILED",
                    "cancelled" => "CANCELLED",
                    _ => return,
                };
                let Some(Ok(id)) = id.map(|i| Uuid::parse_str(&fid(i))) else {
                    return;
                };
                let t = t.map(|t| format!("2026-01-01T00:00:0{}.000Z", t % 10));
                let terminal = |s: &str| matches!(s, "SUCCEEDED" | "FAILED" | "CANCELLED");
                if let Some(rec) = self.formations.get_mut(&id) {
                    if phase != "created" && !terminal(rec.1) {
                        rec.1 = status;
                        if t.is_some() {
                            rec.3 = t;
                        }
                    }
                    return;
                }
                if self.rejected.contains_key(&id) {
                    return;
                }
                let name = name.map_or(String::new(), |n| format!("n{n}"));
                if !name.is_empty() {
                    if let Some(holder) = self.newest_by_name.get(&name) {
                        if !terminal(self.formations[holder].1) {
                            self.rejected.insert(id, *holder);
                            return;
                        }
                    }
                    self.newest_by_name.insert(name.clone(), id);
                }
                self.formations.insert(id, (name, status, t.clone(), t));
            }
        }
    }

    fn matches(&self, s: &State) -> bool {
        let cells: BTreeMap<_, _> = s
            .cells()
            .map(|c| {
                (
                    c.id().to_string(),
                    (
                        c.spec_id().to_string(),
                        c.run_id().map(str::to_owned),
                        c.state().as_str(),
                        c.formation_id().map(str::to_owned),
                        c.started_at().as_deref().map(str::to_owned),
                        c.destroyed_at().as_deref().map(str::to_owned),
                        c.outcome().as_deref().map(str::to_owned),
                        c.exit_code(),
                    ),
                )
            })
            .collect();
        let formations: BTreeMap<_, _> = s
            .formations()
            .map(|f| {
                (
                    f.id,
                    (
                        f.name.to_string(),
                        f.status.as_str(),
                        f.created_at.as_deref().map(str::to_owned),
                        f.updated_at.as_deref().map(str::to_owned),
                    ),
                )
            })
            .collect();
        let names_agree = self
            .newest_by_name
            .iter()
            .all(|(n, id)| s.formation_by_name(n).map(|f| f.id) == Some(*id));
        let rejections_agree = self
            .rejected
            .iter()
            .all(|(id, holder)| s.rejection(id).map(|r| r.holder) == Some(*holder));
        let index_agrees = (0..4u8).chain([9]).all(|f| {
            let key = fid(f);
            let from_index: Vec<String> = s
                .cells_of_formation(&key)
                .map(|c| c.id().to_string())
                .collect();
            let expected: Vec<String> = self
                .cells
                .iter()
                .filter(|(_, r)| r.3.as_deref() == Some(&key))
                .map(|(id, _)| id.clone())
                .collect();
            from_index == expected
        });
        let chains_agree = (0..6).all(|c| {
            let id = format!("c{c}");
            s.cell_event_seqs(&id, usize::MAX) == self.cell_events.get(&id).cloned()
        });
        cells == self.cells
            && chains_agree
            && formations == self.formations
            && names_agree
            && rejections_agree
            && index_agrees
    }
}

#[cfg(test)]
mod regressions {
    use super::check_input;

    /// A seed the fuzz target once failed on: a snapshot printed the writer's lookup cache, which
    /// a clone starts without.
    #[test]
    fn snapshots_print_alike_whatever_the_writers_cache_holds() {
        let input = include_bytes!(
            "../../../fuzz/regressions/decode_apply-snapshot-printed-writer-cache.bin"
        );
        check_input(input).unwrap();
    }
}

/// Random events over small id spaces, so that they collide on cells, formations and names.
#[cfg(test)]
pub fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..3, prop::option::weighted(0.95, 0u8..6), prop::option::weighted(0.9, 0u8..3),
              prop::option::of(0u8..3), prop::option::of(-3i64..5_000_000_000),
              prop::option::of(0u8..2), prop::option::of(prop_oneof![0u8..3, Just(9u8)]),
              prop::option::of(0u8..3))
            .prop_map(|(kind, cell, spec, run, exit, outcome, formation, time)| Op::Cell {
                kind, cell, spec, run, exit, outcome, formation, time
            }),
        4 => (0u8..8, prop::option::weighted(0.95, prop_oneof![0u8..4, Just(9u8)]),
              prop::option::of(0u8..3), prop::option::of(0u8..3))
            .prop_map(|(phase, id, name, time)| Op::Formation { phase, id, name, time }),
        1 => prop::option::of(0u8..6).prop_map(|cell| Op::Other { cell }),
    ]
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn batching_and_snapshots_do_not_change_the_result(
            ops in prop::collection::vec(op(), 0..120),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(ops.len() + 1)).collect();
            if let Err(why) = check(&ops, &cuts) {
                return Err(TestCaseError::fail(why));
            }
        }
    }
}
