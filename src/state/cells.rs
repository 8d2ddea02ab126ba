//! The cell table: cell id → slot in ascending id order, and per slot the cell's identity and
//! its record, kept apart because they change at very different rates.
//!
//! The hot path is an update of a cell that already exists, scattered over the table, with a
//! snapshot published every batch. It finds the slot with one hash probe (the writer's
//! [`Lookup`]), checks the id in the identity leaf and copies one small leaf of plain-data
//! records (no reference count per record) with the few branches above it. The ordered index
//! and the identities change only when a cell is created or an identity field is filled in.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use imbl::OrdMap;

use super::slots::Slots;
use super::{CellIdentity, CellRecord};

/// Every slot the index holds is below the length of both tables.
const IN_RANGE: &str = "a slot from the cell index is in range";

#[derive(Clone, Default)]
pub struct Cells {
    /// Id → slot in ascending id order: what readers search and list. The key allocation is
    /// shared with the formation index.
    index: OrdMap<Arc<str>, u32>,
    identities: Slots<CellIdentity>,
    records: Slots<CellRecord>,
    lookup: Lookup,
}

/// Id → slot for the writer: one hash probe where the ordered index takes a tree search.
///
/// A cache, not part of the projection. A clone starts without it, because an O(1) clone
/// cannot copy a hash table and snapshots are only read (readers search the ordered index). The
/// first lookup for a write rebuilds it, so a clone that is written to pays O(cells) once. The
/// seed is random per process so that producers cannot choose colliding ids; nothing observable
/// depends on it.
struct Lookup {
    /// (slot, 32-bit hash of its id): growing the table rehashes from the stored half.
    table: HashTable<(u32, u32)>,
    /// Whether `table` holds every cell of the index.
    complete: bool,
    hasher: RandomState,
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup {
            table: HashTable::new(),
            complete: true,
            hasher: RandomState::default(),
        }
    }
}

impl Clone for Lookup {
    fn clone(&self) -> Self {
        Lookup {
            table: HashTable::new(),
            complete: false,
            hasher: self.hasher.clone(),
        }
    }
}

impl Lookup {
    fn hash(&self, id: &[u8]) -> u32 {
        self.hasher.hash_one(id) as u32
    }

    fn add(&mut self, id: &[u8], slot: u32) {
        let hash = self.hash(id);
        self.table
            .insert_unique(spread(hash), (slot, hash), |&(_, h)| spread(h));
    }

    fn complete(&mut self, index: &OrdMap<Arc<str>, u32>) {
        if !self.complete {
            self.table.clear();
            self.table.reserve(index.len(), |&(_, h)| spread(h));
            for (id, &slot) in index {
                self.add(id.as_bytes(), slot);
            }
            self.complete = true;
        }
    }
}

/// Spreads a stored 32-bit hash over 64 bits: the table takes its buckets from the low bits and
/// its per-entry tag from the top 7.
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The projection is the index, identities and records; the writer's lookup is not part of it.
impl PartialEq for Cells {
    fn eq(&self, other: &Cells) -> bool {
        self.index == other.index
            && self.identities == other.identities
            && self.records == other.records
    }
}

impl Eq for Cells {}

/// Prints the projection only, like `PartialEq`: a snapshot and its original print alike
/// whatever either's lookup holds.
impl fmt::Debug for Cells {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cells")
            .field("index", &self.index)
            .field("identities", &self.identities)
            .field("records", &self.records)
            .finish()
    }
}

/// A cell as readers see it: its identity and its current record (which it derefs to).
#[derive(Clone, Copy, Debug)]
pub struct Cell<'a> {
    pub identity: &'a CellIdentity,
    pub record: &'a CellRecord,
}

impl<'a> Cell<'a> {
    pub fn id(&self) -> &'a str {
        &self.identity.id
    }
    pub fn spec_id(&self) -> &'a str {
        &self.identity.spec_id
    }
    pub fn run_id(&self) -> Option<&'a str> {
        self.identity.run_id.as_deref()
    }
    pub fn formation_id(&self) -> Option<&'a str> {
        self.identity.formation_id.as_deref()
    }
}

impl Deref for Cell<'_> {
    type Target = CellRecord;
    fn deref(&self) -> &CellRecord {
        self.record
    }
}

/// Write access to one existing cell. The identity is unshared only when asked for, so plain
/// updates never copy the identity table.
pub struct CellMut<'a> {
    cells: &'a mut Cells,
    slot: usize,
}

impl CellMut<'_> {
    pub fn identity(&self) -> &CellIdentity {
        self.cells.identities.get(self.slot).expect(IN_RANGE)
    }

    pub fn identity_mut(&mut self) -> &mut CellIdentity {
        self.cells.identities.get_mut(self.slot).expect(IN_RANGE)
    }

    pub fn record(&mut self) -> &mut CellRecord {
        self.cells.records.get_mut(self.slot).expect(IN_RANGE)
    }
}

impl Cells {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<Cell<'_>> {
        let slot = *self.index.get(id)?;
        Some(self.at(slot))
    }

    pub fn get_mut(&mut self, id: &str) -> Option<CellMut<'_>> {
        self.lookup.complete(&self.index);
        let identities = &self.identities;
        let hash = self.lookup.hash(id.as_bytes());
        let &(slot, _) = self.lookup.table.find(spread(hash), |&(slot, h)| {
            h == hash
                && identities
                    .get(slot as usize)
                    .is_some_and(|c| c.id.as_bytes() == id.as_bytes())
        })?;
        Some(CellMut {
            cells: self,
            slot: slot as usize,
        })
    }

    /// Builds the writer's lookup now if this is a clone (see [`Lookup`]).
    pub fn prepare_writes(&mut self) {
        self.lookup.complete(&self.index);
    }

    /// Every cell in ascending id (byte) order.
    pub fn iter(&self) -> impl Iterator<Item = Cell<'_>> + '_ {
        self.index.values().map(|&slot| self.at(slot))
    }

    /// Adds a cell that is not in the table yet (the caller looked it up); returns its id as the
    /// index holds it, for other indexes to share.
    pub fn insert(&mut self, identity: CellIdentity, record: CellRecord) -> Arc<str> {
        debug_assert!(self.get(&identity.id).is_none(), "cell inserted twice");
        let key: Arc<str> = Arc::from(identity.id.as_str());
        // Slots stay below u32::MAX: the table would need hundreds of GiB first.
        let slot = self.records.push(record) as u32;
        self.identities.push(identity);
        self.lookup.complete(&self.index);
        self.lookup.add(key.as_bytes(), slot);
        self.index.insert(key.clone(), slot);
        key
    }

    fn at(&self, slot: u32) -> Cell<'_> {
        let slot = slot as usize;
        Cell {
            identity: self.identities.get(slot).expect(IN_RANGE),
            record: self.records.get(slot).expect(IN_RANGE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CellState, Text};

    fn cell(i: usize) -> (CellIdentity, CellRecord) {
        let identity = CellIdentity {
            id: Text::from(format!("cell-{i}").as_str()),
            spec_id: "spec".into(),
            run_id: None,
            formation_id: None,
        };
        let record = CellRecord {
            state: CellState::Running,
            started_at: None,
            destroyed_at: None,
            outcome: None,
            exit_code: None,
            last_event_seq: i as u64,
        };
        (identity, record)
    }

    #[test]
    fn writes_find_cells_in_the_original_and_in_clones() {
        let mut cells = Cells::default();
        for i in 0..1000 {
            let (identity, record) = cell(i);
            cells.insert(identity, record);
        }
        let snapshot = cells.clone();
        let mut fork = cells.clone();
        for i in 0..1000 {
            let id = format!("cell-{i}");
            let slot = cells.get_mut(&id).map(|c| c.slot);
            assert_eq!(slot, fork.get_mut(&id).map(|c| c.slot), "{id}");
            fork.get_mut(&id).unwrap().record().last_event_seq = 7;
            assert_eq!(cells.get(&id).unwrap().last_event_seq, i as u64);
        }
        assert!(fork.get_mut("cell-1000").is_none());
        let (identity, record) = cell(1000);
        fork.insert(identity, record);
        assert!(fork.get_mut("cell-1000").is_some());
        assert!(cells.get_mut("cell-1000").is_none());
        assert_eq!(snapshot, cells, "clones share nothing they can change");
        assert_eq!(fork.iter().count(), 1001);
    }

    #[test]
    fn a_clone_prints_like_its_original_whatever_the_lookup_holds() {
        let mut cells = Cells::default();
        let (identity, record) = cell(0);
        cells.insert(identity, record);
        assert!(cells.get_mut("cell-0").is_some());
        let clone = cells.clone();
        assert_eq!(format!("{clone:?}"), format!("{cells:?}"));
    }
}
