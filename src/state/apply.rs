//! `apply(state, seq, event)`: the projection rules. Pure and deterministic: no clock, no
//! randomness, no hash order; the same log prefix always yields the same state.
//!
//! Cells follow the reference projection. Formations add what the contract asks for: the
//! `created` event carries the document, terminal statuses are final, and a name is owned by the
//! first live formation in log order (a later claim is rejected and remembered).

use std::sync::Arc;

use arcstr::ArcStr;

use super::cell_id::CellId;
use bytes::Bytes;
use uuid::Uuid;

use super::cells::RecordMut;
use super::interner::Interner;
use super::{
    CellIdentity, CellRecord, CellState, Field, FormationRecord, FormationStatus, Rejection, State,
    MAX_REMEMBERED_REJECTIONS,
};
use crate::event::{Event, Kind, Phase};

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Ignored(Ignored),
}

/// Why an event left the state unchanged. Every one still advances the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Not a type the projection reads (other families pass through to subscribers).
    UnknownType,
    /// A formation-family type with a phase the projection does not know.
    UnknownPhase,
    /// Cell event without a string `data.cellId`.
    MissingCellId,
    /// Cell event without a string `data.specId` (strict specId admission).
    MissingSpecId,
    /// Cell event after the cell was destroyed.
    CellTerminal,
    /// Formation event with no formation id anywhere.
    MissingFormationId,
    /// Formation event whose formation id is not a UUID.
    BadFormationId,
    /// Formation event after the formation reached a terminal status.
    FormationTerminal,
    /// A second `created` for an existing formation.
    DuplicateCreated,
    /// A new formation whose name a live formation already holds (first in the log wins).
    NameConflict,
    /// A later event for a formation whose creation lost a name conflict.
    RejectedFormation,
}

impl Ignored {
    pub const ALL: [Ignored; 11] = [
        Ignored::UnknownType,
        Ignored::UnknownPhase,
        Ignored::MissingCellId,
        Ignored::MissingSpecId,
        Ignored::CellTerminal,
        Ignored::MissingFormationId,
        Ignored::BadFormationId,
        Ignored::FormationTerminal,
        Ignored::DuplicateCreated,
        Ignored::NameConflict,
        Ignored::RejectedFormation,
    ];

    /// A short stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::UnknownType => "unknown_type",
            Ignored::UnknownPhase => "unknown_phase",
            Ignored::MissingCellId => "missing_cell_id",
            Ignored::MissingSpecId => "missing_spec_id",
            Ignored::CellTerminal => "cell_terminal",
            Ignored::MissingFormationId => "missing_formation_id",
            Ignored::BadFormationId => "bad_formation_id",
            Ignored::FormationTerminal => "formation_terminal",
            Ignored::DuplicateCreated => "duplicate_created",
            Ignored::NameConflict => "name_conflict",
            Ignored::RejectedFormation => "rejected_formation",
        }
    }

    /// Malformed events (as opposed to well-formed ones the rules leave out) count as failed.
    pub fn is_failure(self) -> bool {
        matches!(self, Ignored::MissingFormationId | Ignored::BadFormationId)
    }
}

/// The status a formation phase sets.
pub fn status_of(phase: Phase) -> FormationStatus {
    match phase {
        Phase::Created => FormationStatus::Pending,
        Phase::Launching | Phase::Running | Phase::Degraded => FormationStatus::Running,
        Phase::Completed => FormationStatus::Succeeded,
        Phase::Failed => FormationStatus::Failed,
        Phase::Cancelled => FormationStatus::Cancelled,
    }
}

/// Applies one event at log position `seq`.
pub fn apply(state: &mut State, seq: u64, ev: &Event<'_>) -> Outcome {
    // Every event naming a cell (any family, applied or not) joins that cell's event chain.
    let mut previous = 0;
    let outcome = match ev.kind {
        Kind::CellStarted | Kind::CellCommandCompleted | Kind::CellDestroyed => {
            let (outcome, linked) = apply_cell(state, seq, ev);
            previous = linked;
            outcome
        }
        kind => {
            if let Some(cell) = ev.cell_id {
                previous = note_cell_event(state, cell, seq);
            }
            match kind {
                Kind::Formation(phase) => apply_formation(state, seq, phase, ev),
                Kind::FormationUnknownPhase => Outcome::Ignored(Ignored::UnknownPhase),
                _ => Outcome::Ignored(Ignored::UnknownType),
            }
        }
    };
    if ev.cell_id.is_some() {
        state.cell_links.record(seq, previous);
    }
    outcome
}

/// A formation id as cells are indexed by it: UUIDs in lowercase hyphenated form, else as sent.
pub fn normalize_formation_ref(raw: &str) -> ArcStr {
    ArcStr::from(formation_ref_text(raw, &mut Uuid::encode_buffer()))
}

/// [`normalize_formation_ref`]'s text, without allocating: a UUID is written into `buf`.
pub fn formation_ref_text<'a>(raw: &'a str, buf: &'a mut [u8]) -> &'a str {
    match Uuid::parse_str(raw) {
        Ok(id) => id.hyphenated().encode_lower(buf),
        Err(_) => raw,
    }
}

/// The writer's shared text for a formation reference (see [`normalize_formation_ref`]).
fn formation_ref(texts: &mut Interner, raw: &str) -> ArcStr {
    texts.intern(formation_ref_text(raw, &mut Uuid::encode_buffer()))
}

/// Applies a cell-family event; also returns the seq of the previous event naming the cell.
fn apply_cell(state: &mut State, seq: u64, ev: &Event<'_>) -> (Outcome, u64) {
    let Some(cell_id) = ev.cell_id else {
        return (Outcome::Ignored(Ignored::MissingCellId), 0);
    };
    let Some(spec_id) = ev.spec_id else {
        return (
            Outcome::Ignored(Ignored::MissingSpecId),
            note_cell_event(state, cell_id, seq),
        );
    };
    let mut claimed_formation = None;
    let previous = match state.cells.get_mut(cell_id) {
        Some(mut cell) => {
            let missing = cell.missing();
            let fill_spec = missing.spec_id && !spec_id.is_empty();
            let fill_run = missing.run_id && ev.run_id.is_some();
            let fill_formation = missing.formation_id && ev.formation_id.is_some();
            let mut rec = cell.record();
            let previous = rec.replace_last_event_seq(seq);
            if rec.state() == CellState::Destroyed {
                return (Outcome::Ignored(Ignored::CellTerminal), previous);
            }
            cell_effect(&mut rec, ev);
            if fill_spec || fill_run || fill_formation {
                let texts = cell.texts();
                let spec = fill_spec.then(|| texts.intern(spec_id));
                let run = ev.run_id.filter(|_| fill_run).map(|r| texts.intern(r));
                let formation = ev
                    .formation_id
                    .filter(|_| fill_formation)
                    .map(|f| formation_ref(texts, f));
                let key = cell.id().clone();
                claimed_formation = cell.update_identity(|id| {
                    if let Some(spec) = spec {
                        id.spec_id = spec;
                    }
                    if run.is_some() {
                        id.run_id = run;
                    }
                    formation.map(|f| {
                        id.formation_id = Some(f.clone());
                        (f, key)
                    })
                });
            }
            previous
        }
        None => {
            // Events that named the cell before it had a record lead its chain.
            let previous = state.orphan_heads.remove(cell_id).unwrap_or(0);
            // Longer than any event can carry (`MAX_EVENT_BYTES`), so never through decode.
            let Some(id) = CellId::new(cell_id) else {
                return (Outcome::Ignored(Ignored::MissingCellId), previous);
            };
            let texts = state.cells.texts();
            let identity = CellIdentity {
                spec_id: texts.intern(spec_id),
                run_id: ev.run_id.map(|r| texts.intern(r)),
                formation_id: ev.formation_id.map(|f| formation_ref(texts, f)),
            };
            claimed_formation = identity.formation_id.clone().map(|f| (f, id.clone()));
            state
                .cells
                .insert(id, identity, CellRecord::new(seq), |rec| {
                    cell_effect(rec, ev)
                });
            previous
        }
    };
    if let Some((formation, cell)) = claimed_formation {
        state
            .cells_by_formation
            .entry(formation)
            .or_default()
            .insert(cell, ());
    }
    (Outcome::Applied, previous)
}

/// Makes `seq` the newest event naming `cell` and returns the previous one (0: none). Cells
/// without a record keep their newest event in `orphan_heads` until the record exists.
fn note_cell_event(state: &mut State, cell: &str, seq: u64) -> u64 {
    match state.cells.get_mut(cell) {
        Some(mut cell) => cell.record().replace_last_event_seq(seq),
        None => match state.orphan_heads.get_mut(cell) {
            Some(head) => std::mem::replace(head, seq),
            None => {
                state.orphan_heads.insert(ArcStr::from(cell), seq);
                0
            }
        },
    }
}

fn cell_effect(rec: &mut RecordMut<'_>, ev: &Event<'_>) {
    match ev.kind {
        Kind::CellStarted => {
            rec.set_state(CellState::Running);
            rec.set_text(Field::StartedAt, ev.time);
        }
        Kind::CellCommandCompleted => {
            if let Some(code) = ev.exit_code {
                // Wraps like the reference (`as i32`): codes come from an i32 on the producer side.
                rec.set_exit_code(Some(code as i32));
            }
        }
        Kind::CellDestroyed => {
            rec.set_state(CellState::Destroyed);
            rec.set_text(Field::DestroyedAt, ev.time);
            if let Some(outcome) = ev.outcome {
                rec.set_text(Field::Outcome, Some(outcome));
            }
        }
        _ => {}
    }
}

fn apply_formation(state: &mut State, seq: u64, phase: Phase, ev: &Event<'_>) -> Outcome {
    let Some(raw_id) = ev.formation_id else {
        return Outcome::Ignored(Ignored::MissingFormationId);
    };
    let Ok(id) = Uuid::parse_str(raw_id) else {
        return Outcome::Ignored(Ignored::BadFormationId);
    };
    let time: Option<Arc<str>> = ev
        .time
        .filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
        .map(Arc::from);

    if let Some(shared) = state.formations.get_mut(&id) {
        if phase == Phase::Created {
            return Outcome::Ignored(Ignored::DuplicateCreated);
        }
        if shared.status.is_terminal() {
            return Outcome::Ignored(Ignored::FormationTerminal);
        }
        let rec = Arc::make_mut(shared);
        rec.status = status_of(phase);
        if time.is_some() {
            rec.updated_at = time;
        }
        return Outcome::Applied;
    }

    if state.rejections.contains_key(&id) {
        return Outcome::Ignored(Ignored::RejectedFormation);
    }
    let name = ev.formation_name.unwrap_or("");
    if !name.is_empty() {
        if let Some(holder) = state.name_holder(name) {
            let holder = holder.id;
            remember_rejection(state, id, Rejection { seq, holder });
            return Outcome::Ignored(Ignored::NameConflict);
        }
    }
    let name: Arc<str> = Arc::from(name);
    let record = FormationRecord {
        id,
        name: name.clone(),
        status: status_of(phase),
        document: ev
            .document
            .clone()
            .unwrap_or_else(|| Bytes::from_static(b"null")),
        created_at: time.clone(),
        updated_at: time,
        member_count: ev.member_count.unwrap_or(0),
        created_seq: seq,
    };
    state.formations.insert(id, Arc::new(record));
    if !name.is_empty() {
        state.names.insert(name, id);
    }
    Outcome::Applied
}

fn remember_rejection(state: &mut State, id: Uuid, rejection: Rejection) {
    state.rejections.insert(id, rejection);
    state.rejection_order.insert(rejection.seq, id);
    while state.rejection_order.len() > MAX_REMEMBERED_REJECTIONS {
        let Some(&(oldest_seq, oldest)) = state.rejection_order.get_min() else {
            break;
        };
        state.rejection_order.remove(&oldest_seq);
        state.rejections.remove(&oldest);
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod model;
#[cfg(test)]
mod tests;
