//! The cell table: cell id → slot in ascending id order, and per slot the cell's identity and
//! its record, kept apart because they change at very different rates.
//!
//! The hot path is an update of a cell that already exists, scattered over the table, with a
//! snapshot published every batch. It finds the slot with one hash probe (the writer's
//! `Lookup`, whose entries hold the ids and which identity fields are still missing) and
//! copies one small leaf of plain-data records (no reference count per record) with the few
//! branches above it; the identity is not even read. The ordered index and the identities change
//! only when a cell is created or an identity field is filled in.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::Arc;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use imbl::OrdMap;

use super::interner::Interner;
use super::slots::Slots;
use super::{CellIdentity, CellRecord, Text};

/// How many threads a restore ([`Cells::from_parts`]) may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    One,
    Two,
}

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
    /// The writer's shared spec, run and formation id texts (a cache like `lookup`).
    texts: Interner,
}

/// Id → slot for the writer: one hash probe where the ordered index takes a tree search.
///
/// Next to the table, a flat array indexed by slot holds each cell's id (inline when short, see
/// [`Text`]) and which identity fields it lacks: a probe checks the id there instead of walking
/// the identity tree, and an update that fills nothing in never reads the identity. About 48
/// bytes per cell in the writer, two cache misses fewer per update.
///
/// A cache, not part of the projection. A clone starts without it, because an O(1) clone
/// cannot copy a hash table and snapshots are only read (readers search the ordered index). The
/// first lookup for a write rebuilds it, so a clone that is written to pays O(cells) once. The
/// hash seed comes from whoever creates the state ([`Cells::with_hash_seed`]): the server draws a
/// random one so that producers cannot choose colliding ids, and the default is fixed, so tests,
/// benchmarks and the instruction-count gates are deterministic. Nothing observable depends on it.
struct Lookup {
    /// (slot, 32-bit hash of its id): growing the table rehashes from the stored half.
    table: HashTable<(u32, u32)>,
    /// Per slot, in slot order.
    entries: Vec<Entry>,
    /// Whether `table` and `entries` hold every cell.
    complete: bool,
    hasher: FixedState,
}

struct Entry {
    id: Text,
    missing: Missing,
}

/// Which optional identity fields a cell still lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    pub spec_id: bool,
    pub run_id: bool,
    pub formation_id: bool,
}

impl Missing {
    fn of(identity: &CellIdentity) -> Missing {
        Missing {
            spec_id: identity.spec_id.is_empty(),
            run_id: identity.run_id.is_none(),
            formation_id: identity.formation_id.is_none(),
        }
    }
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::with_hash_seed(0)
    }
}

impl Clone for Lookup {
    fn clone(&self) -> Self {
        Lookup {
            table: HashTable::new(),
            entries: Vec::new(),
            complete: false,
            hasher: self.hasher.clone(),
        }
    }
}

impl Lookup {
    fn with_hash_seed(seed: u64) -> Lookup {
        Lookup {
            table: HashTable::new(),
            entries: Vec::new(),
            complete: true,
            hasher: FixedState::with_seed(seed),
        }
    }

    fn hash(&self, id: &[u8]) -> u32 {
        self.hasher.hash_one(id) as u32
    }

    /// Adds the cell in the next slot.
    fn push(&mut self, identity: &CellIdentity) {
        let slot = self.entries.len() as u32;
        let hash = self.hash(identity.id.as_bytes());
        self.table
            .insert_unique(spread(hash), (slot, hash), |&(_, h)| spread(h));
        self.entries.push(Entry {
            id: Text::from(&*identity.id),
            missing: Missing::of(identity),
        });
    }

    fn find_mut(&mut self, id: &str) -> Option<(u32, &mut Entry)> {
        let hash = self.hash(id.as_bytes());
        let entries = &self.entries;
        let &(slot, _) = self.table.find(spread(hash), |&(slot, h)| {
            h == hash && entries[slot as usize].id.as_bytes() == id.as_bytes()
        })?;
        Some((slot, &mut self.entries[slot as usize]))
    }

    fn complete(&mut self, identities: &Slots<CellIdentity>) {
        if !self.complete {
            self.table.clear();
            self.entries.clear();
            self.table.reserve(identities.len(), |&(_, h)| spread(h));
            self.entries.reserve_exact(identities.len());
            for identity in identities.iter() {
                self.push(identity);
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

/// Write access to one existing cell. The identity is read or unshared only when asked for, so
/// plain updates touch neither the identity table nor its copy-on-write.
pub struct CellMut<'a> {
    slot: usize,
    entry: &'a mut Entry,
    identities: &'a mut Slots<CellIdentity>,
    records: &'a mut Slots<CellRecord>,
    texts: &'a mut Interner,
}

impl CellMut<'_> {
    /// The identity fields this cell still lacks, without reading its identity.
    pub fn missing(&self) -> Missing {
        self.entry.missing
    }

    /// Changes the identity (filling fields in) and keeps [`CellMut::missing`] in step.
    pub fn update_identity<R>(&mut self, f: impl FnOnce(&mut CellIdentity) -> R) -> R {
        let identity = self.identities.get_mut(self.slot).expect(IN_RANGE);
        let out = f(identity);
        self.entry.missing = Missing::of(identity);
        out
    }

    pub fn record(&mut self) -> &mut CellRecord {
        self.records.get_mut(self.slot).expect(IN_RANGE)
    }

    /// The writer's interner (see [`Cells::texts`]).
    pub fn texts(&mut self) -> &mut Interner {
        self.texts
    }
}

impl Cells {
    /// No cells; the writer's lookup hashes ids with `seed` (see `Lookup`).
    pub fn with_hash_seed(seed: u64) -> Cells {
        Cells {
            lookup: Lookup::with_hash_seed(seed),
            texts: Interner::with_hash_seed(seed),
            ..Cells::default()
        }
    }

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

    /// The writer's interner, for the identity texts of cells it creates or fills in.
    pub fn texts(&mut self) -> &mut Interner {
        &mut self.texts
    }

    pub fn get_mut(&mut self, id: &str) -> Option<CellMut<'_>> {
        self.lookup.complete(&self.identities);
        let (slot, entry) = self.lookup.find_mut(id)?;
        Some(CellMut {
            slot: slot as usize,
            entry,
            identities: &mut self.identities,
            records: &mut self.records,
            texts: &mut self.texts,
        })
    }

    /// Builds the writer's lookup now if this is a clone (see `Lookup`).
    pub fn prepare_writes(&mut self) {
        self.lookup.complete(&self.identities);
    }

    /// Every cell in ascending id (byte) order.
    pub fn iter(&self) -> impl Iterator<Item = Cell<'_>> + '_ {
        self.index.values().map(|&slot| self.at(slot))
    }

    /// Adds a cell that is not in the table yet (the caller looked it up); returns its id as the
    /// index holds it, for other indexes to share.
    pub fn insert(&mut self, identity: CellIdentity, record: CellRecord) -> Arc<str> {
        debug_assert!(self.get(&identity.id).is_none(), "cell inserted twice");
        let key = identity.id.clone();
        self.lookup.complete(&self.identities);
        self.lookup.push(&identity);
        // Slots stay below u32::MAX: the table would need hundreds of GiB first.
        let slot = self.records.push(record) as u32;
        self.identities.push(identity);
        debug_assert_eq!(self.lookup.entries.len(), self.records.len());
        self.index.insert(key.clone(), slot);
        key
    }

    /// Every cell in ascending id order, with its slot: what a checkpoint stores.
    pub fn iter_with_slots(&self) -> impl ExactSizeIterator<Item = (u32, Cell<'_>)> + '_ {
        self.index.values().map(|&slot| (slot, self.at(slot)))
    }

    /// A table from its parts as a checkpoint holds them: `index` in ascending id order, naming
    /// each slot of `identities` and `records` (same length) exactly once; the caller checked
    /// both. Builds everything in one pass each, the writer's lookup included; with
    /// [`Threads::Two`], the ordered index, the longest part, on a second thread when one can be
    /// started (a boot has the cores to itself). The result is the same either way.
    pub fn from_parts(
        index: Vec<(Arc<str>, u32)>,
        identities: Vec<CellIdentity>,
        records: Vec<CellRecord>,
        hash_seed: u64,
        threads: Threads,
    ) -> Cells {
        // Taken once: by the second thread, or here if there is none.
        let pending = std::sync::Mutex::new(Some(index));
        let build_index = || {
            let index = pending.lock().ok().and_then(|mut p| p.take())?;
            Some(index.into_iter().collect::<OrdMap<_, _>>())
        };
        std::thread::scope(|scope| {
            let worker = match threads {
                Threads::One => None,
                Threads::Two => std::thread::Builder::new()
                    .name("cellos-restore".into())
                    .spawn_scoped(scope, build_index)
                    .ok(),
            };
            let ordered = if worker.is_none() {
                build_index()
            } else {
                None
            };
            let mut lookup = Lookup::with_hash_seed(hash_seed);
            lookup.table.reserve(identities.len(), |&(_, h)| spread(h));
            lookup.entries.reserve_exact(identities.len());
            for identity in &identities {
                lookup.push(identity);
            }
            let identities = Slots::from_vec(identities);
            let records = Slots::from_vec(records);
            let index = match worker {
                Some(worker) => worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => ordered,
            };
            Cells {
                index: index.unwrap_or_default(),
                identities,
                records,
                lookup,
                texts: Interner::with_hash_seed(hash_seed),
            }
        })
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
    use crate::state::CellState;

    fn cell(i: usize) -> (CellIdentity, CellRecord) {
        let identity = CellIdentity {
            id: Arc::from(format!("cell-{i}")),
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
    fn missing_identity_fields_follow_fills_in_the_writer_and_in_clones() {
        let mut cells = Cells::default();
        let (identity, record) = cell(0);
        cells.insert(identity, record);
        let none_filled = Missing {
            spec_id: false,
            run_id: true,
            formation_id: true,
        };
        assert_eq!(cells.get_mut("cell-0").unwrap().missing(), none_filled);
        let before = cells.clone();
        cells
            .get_mut("cell-0")
            .unwrap()
            .update_identity(|id| id.run_id = Some("run".into()));
        let run_filled = Missing {
            run_id: false,
            ..none_filled
        };
        assert_eq!(cells.get_mut("cell-0").unwrap().missing(), run_filled);
        // A clone rebuilds its lookup from the identities it shares.
        let mut fork = cells.clone();
        assert_eq!(fork.get_mut("cell-0").unwrap().missing(), run_filled);
        let mut old = before.clone();
        assert_eq!(old.get_mut("cell-0").unwrap().missing(), none_filled);
        assert_eq!(before.get("cell-0").unwrap().run_id(), None);
        assert_eq!(cells.get("cell-0").unwrap().run_id(), Some("run"));
    }

    /// A record is what an update copies (with its leaf), so its size is a performance budget:
    /// three inline texts of 32 bytes, the exit code and the seq.
    #[test]
    fn a_record_stays_within_its_copy_budget() {
        assert_eq!(std::mem::size_of::<Option<CellRecord>>(), 120);
    }

    #[test]
    fn the_hash_seed_changes_nothing_observable_and_clones_keep_it() {
        let mut a = Cells::default();
        let mut b = Cells::with_hash_seed(0x9e37_79b9_7f4a_7c15);
        for i in 0..2000 {
            let (identity, record) = cell(i);
            a.insert(identity.clone(), record.clone());
            b.insert(identity, record);
        }
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(
            a.lookup.hash(b"cell-1"),
            b.lookup.hash(b"cell-1"),
            "the seed is used"
        );
        let fork = b.clone();
        assert_eq!(fork.lookup.hash(b"cell-1"), b.lookup.hash(b"cell-1"));
        for i in 0..2000 {
            let id = format!("cell-{i}");
            assert_eq!(
                a.get_mut(&id).map(|c| c.slot),
                b.get_mut(&id).map(|c| c.slot)
            );
        }
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
