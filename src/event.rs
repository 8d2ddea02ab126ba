//! Events as they travel: raw log records, the decoded view the projection needs, and NATS subjects.
//!
//! Nothing here does I/O. `decode` turns stored payload bytes into an [`Event`] that borrows from the
//! decoder's scratch buffer; `subject` builds and validates the NATS subjects events are filed under.

pub mod decode;
pub mod encode;
pub mod frame;
pub mod subject;

use std::sync::Arc;

use bytes::Bytes;

/// One record of the event log, as read back from it. `payload` is the stored CloudEvent, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub seq: u64,
    pub subject: Arc<str>,
    pub payload: Bytes,
}

/// CloudEvent type prefix of formation lifecycle events, and the legacy one still replayed.
pub const FORMATION_TYPE_PREFIX: &str = "dev.cellos.events.cell.formation.v1.";
pub const LEGACY_FORMATION_TYPE_PREFIX: &str = "io.cellos.formation.v1.";
pub const CELL_STARTED: &str = "dev.cellos.events.cell.lifecycle.v1.started";
pub const CELL_DESTROYED: &str = "dev.cellos.events.cell.lifecycle.v1.destroyed";
pub const CELL_COMMAND_COMPLETED: &str = "dev.cellos.events.cell.command.v1.completed";

/// What the projection recognises an event as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    CellStarted,
    CellCommandCompleted,
    CellDestroyed,
    Formation(Phase),
    /// A formation-family type whose phase the projection does not know.
    FormationUnknownPhase,
    /// Any other type (or none): passed through to subscribers, not projected.
    #[default]
    Other,
}

impl Kind {
    pub fn from_type(ty: &str) -> Kind {
        match ty {
            CELL_STARTED => Kind::CellStarted,
            CELL_DESTROYED => Kind::CellDestroyed,
            CELL_COMMAND_COMPLETED => Kind::CellCommandCompleted,
            _ => {
                let phase = ty
                    .strip_prefix(FORMATION_TYPE_PREFIX)
                    .or_else(|| ty.strip_prefix(LEGACY_FORMATION_TYPE_PREFIX));
                match phase {
                    Some(p) => Phase::parse(p).map_or(Kind::FormationUnknownPhase, Kind::Formation),
                    None => Kind::Other,
                }
            }
        }
    }

    /// The metrics family of an event of this kind.
    pub fn family(self) -> Family {
        match self {
            Kind::CellStarted | Kind::CellCommandCompleted | Kind::CellDestroyed => Family::Cell,
            Kind::Formation(_) | Kind::FormationUnknownPhase => Family::Formation,
            Kind::Other => Family::Other,
        }
    }
}

/// Event families, as counted in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Cell,
    Formation,
    Other,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Cell, Family::Formation, Family::Other];
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Cell => "cell",
            Family::Formation => "formation",
            Family::Other => "other",
        }
    }
}

/// Formation lifecycle phases: the last token of a formation event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Created,
    Launching,
    Running,
    Degraded,
    Completed,
    Failed,
    Cancelled,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Created,
        Phase::Launching,
        Phase::Running,
        Phase::Degraded,
        Phase::Completed,
        Phase::Failed,
        Phase::Cancelled,
    ];

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Launching => "launching",
            Phase::Running => "running",
            Phase::Degraded => "degraded",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// The fields of one CloudEvent that the projection and the filters read. Strings borrow from the
/// decoder's scratch buffer (already unescaped); `document` is rendered canonical JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event<'a> {
    pub kind: Kind,
    /// Envelope attributes, when strings (for validating CloudEvents at the HTTP edge).
    pub specversion: Option<&'a str>,
    pub id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub ty: Option<&'a str>,
    /// `data.formationId` alone (the subject an ingested event is filed under).
    pub data_formation_id: Option<&'a str>,
    /// The envelope `time`, as sent.
    pub time: Option<&'a str>,
    /// `data.cellId`, when a string.
    pub cell_id: Option<&'a str>,
    /// `data.specId`, when a string.
    pub spec_id: Option<&'a str>,
    /// `data.runId`, when a string.
    pub run_id: Option<&'a str>,
    /// `data.exitCode`, when an integer that fits i64.
    pub exit_code: Option<i64>,
    /// `data.outcome`, when a string.
    pub outcome: Option<&'a str>,
    /// The formation an event belongs to: `data.formationId`, else `data.formation_id`, else the
    /// envelope `subject` (formation events only), else `data.correlation.formationId`.
    pub formation_id: Option<&'a str>,
    /// `data.formationName`, else `data.name`.
    pub formation_name: Option<&'a str>,
    /// For formation events: the number of `members` of the document (see `document`).
    pub member_count: Option<usize>,
    /// For formation events that may create a record: `data.document` when present, else `data`,
    /// as canonical JSON (keys sorted, compact).
    pub document: Option<Bytes>,
}
