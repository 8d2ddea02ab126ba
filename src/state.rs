//! The projection: formations and cells as a pure function of the log prefix.
//!
//! `State` holds persistent (imbl) maps, so a clone is O(1) and shares structure: the ingest thread
//! mutates its private copy in place and publishes a clone per batch. Only `apply` mutates it.

pub mod apply;
pub mod cell_id;
pub mod cells;
pub mod image;
pub mod interner;
pub mod links;
pub mod record;
pub mod slots;
pub mod snapshot;
pub mod sorted;

use std::sync::Arc;

use arcstr::ArcStr;
use bytes::Bytes;
use imbl::OrdMap;
use uuid::Uuid;

pub use apply::{apply, Ignored, Outcome};
pub use cell_id::CellId;
pub use cells::{Cell, CellMut, Cells};
pub use links::{CellLinks, CELL_LINK_WINDOW};
pub use record::{CellRecord, Field, FieldText};
pub use snapshot::{Publisher, Reader, Snapshot};
pub use sorted::SortedMap;

/// How many name-conflict rejections are remembered (most recent first), so a writer can tell its
/// client who holds the name. Older ones are forgotten in log order, deterministically.
pub const MAX_REMEMBERED_REJECTIONS: usize = 4096;

/// Formation status, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FormationStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl FormationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FormationStatus::Pending => "PENDING",
            FormationStatus::Running => "RUNNING",
            FormationStatus::Succeeded => "SUCCEEDED",
            FormationStatus::Failed => "FAILED",
            FormationStatus::Cancelled => "CANCELLED",
        }
    }

    /// `SUCCEEDED`, `FAILED` and `CANCELLED` are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FormationStatus::Succeeded | FormationStatus::Failed | FormationStatus::Cancelled
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormationRecord {
    pub id: Uuid,
    pub name: Arc<str>,
    pub status: FormationStatus,
    /// Canonical JSON (compact, keys sorted): the normalized document from the `created` event.
    pub document: Bytes,
    /// The `time` of the first and of the latest applied event (RFC 3339, as sent).
    pub created_at: Option<Arc<str>>,
    pub updated_at: Option<Arc<str>>,
    /// Length of the document's `members` (0 when it has none): the `cellCount` of later events.
    pub member_count: usize,
    /// Sequence number of the event that created this record.
    pub created_seq: u64,
}

/// Cell state, as on the wire (lowercase).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellState {
    Pending,
    Running,
    Destroyed,
}

impl CellState {
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Pending => "pending",
            CellState::Running => "running",
            CellState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<CellState> {
        [CellState::Pending, CellState::Running, CellState::Destroyed]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// What a cell is created with and at most filled in later (never changed once set), besides
/// its id, which is the ordered index's key. Its texts are one-pointer shared strings: spec, run
/// and formation ids are shared between the cells that name the same one (see [`interner`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellIdentity {
    pub spec_id: ArcStr,
    pub run_id: Option<ArcStr>,
    pub formation_id: Option<ArcStr>,
}

/// A `created` (or first) event refused because another live formation held the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub seq: u64,
    pub holder: Uuid,
}

/// The whole projection. Every field is a persistent map: clones are O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    formations: OrdMap<Uuid, Arc<FormationRecord>>,
    /// Name → the newest formation that claimed it. A name is held while that formation is live.
    names: OrdMap<Arc<str>, Uuid>,
    cells: Cells,
    /// Formation id (as correlated by producers) → its cells.
    cells_by_formation: OrdMap<ArcStr, SortedMap<CellId, ()>>,
    rejections: OrdMap<Uuid, Rejection>,
    rejection_order: OrdMap<u64, Uuid>,
    /// Cell id → newest event naming it, for cells with no record (yet).
    orphan_heads: OrdMap<ArcStr, u64>,
    /// Per log position: the previous event naming the same cell.
    cell_links: CellLinks,
}

impl State {
    /// An empty projection whose writer hashes cell ids with `seed`. The core has no random
    /// source: the server passes a random seed (producers then cannot choose colliding ids);
    /// `State::default()` uses a fixed one.
    pub fn with_hash_seed(seed: u64) -> State {
        State {
            cells: Cells::with_hash_seed(seed),
            ..State::default()
        }
    }

    /// A copy to apply further events to: an O(1) clone, plus O(cells) to rebuild the writer's
    /// cell lookup, which clones leave behind (the first write would rebuild it anyway).
    pub fn fork(&self) -> State {
        let mut state = self.clone();
        state.cells.prepare_writes();
        state
    }

    pub fn formation(&self, id: &Uuid) -> Option<&Arc<FormationRecord>> {
        self.formations.get(id)
    }

    /// All formations in ascending id order.
    pub fn formations(&self) -> impl Iterator<Item = &Arc<FormationRecord>> + '_ {
        self.formations.values()
    }

    pub fn formation_count(&self) -> usize {
        self.formations.len()
    }

    /// The newest formation created with this name (live or not).
    pub fn formation_by_name(&self, name: &str) -> Option<&Arc<FormationRecord>> {
        self.names.get(name).and_then(|id| self.formations.get(id))
    }

    /// The live formation holding `name`, if any: the one a new admission would conflict with.
    pub fn name_holder(&self, name: &str) -> Option<&Arc<FormationRecord>> {
        self.formation_by_name(name)
            .filter(|f| !f.status.is_terminal())
    }

    /// Why a formation id never became a record, if its creation lost a name conflict recently.
    pub fn rejection(&self, id: &Uuid) -> Option<Rejection> {
        self.rejections.get(id).copied()
    }

    pub fn cell(&self, id: &str) -> Option<Cell<'_>> {
        self.cells.get(id)
    }

    /// All cells in ascending id (byte) order.
    pub fn cells(&self) -> impl Iterator<Item = Cell<'_>> + '_ {
        self.cells.iter()
    }

    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    /// Seqs of the most recent events naming this cell in `data.cellId` (at most `limit`), oldest
    /// first; `None` when no event ever named it. Reaches back [`CELL_LINK_WINDOW`] log positions.
    pub fn cell_event_seqs(&self, id: &str, limit: usize) -> Option<Vec<u64>> {
        let newest = match self.cells.get(id) {
            Some(cell) => cell.last_event_seq(),
            None => *self.orphan_heads.get(id)?,
        };
        Some(self.cell_links.chain(newest, limit))
    }

    /// The cells correlated with a formation id, in ascending id order.
    pub fn cells_of_formation<'a>(
        &'a self,
        formation_id: &str,
    ) -> impl Iterator<Item = Cell<'a>> + 'a {
        self.cells_by_formation
            .get(formation_id)
            .into_iter()
            .flat_map(|ids| ids.keys())
            .filter_map(|id| self.cells.get(id))
    }
}
