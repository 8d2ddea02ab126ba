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

use super::cell_id::CellId;
use super::sorted::SortedMap;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::interner::Interner;
use super::record::{Aside, Field, FieldText};
use super::slots::Slots;
use super::{CellIdentity, CellRecord};

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
    /// Id → slot in ascending id order: what readers search and list. The id's block is shared
    /// with the writer's lookup and the cell's formation set ([`CellId`]).
    index: SortedMap<CellId, u32>,
    identities: Slots<CellIdentity>,
    records: Slots<CellRecord>,
    /// The record texts that did not pack (see [`super::record`]).
    aside: Aside,
    lookup: Lookup,
    /// The writer's shared spec, run and formation id texts (a cache like `lookup`).
    texts: Interner,
}

/// Id → slot for the writer: one hash probe where the ordered index takes a tree search.
///
/// Each bucket holds the cell's id (the index key's block, one pointer), its slot, and its
/// hash with which identity fields the cell lacks: a probe compares the id there instead of
/// walking the identity tree, and an update that fills nothing in never reads the identity.
/// 16 bytes a bucket, about 35 a cell at 10^6 cells (the table's size is a power of two).
///
/// A cache, not part of the projection. A clone starts without it, because an O(1) clone
/// cannot copy a hash table and snapshots are only read (readers search the ordered index). The
/// first lookup for a write rebuilds it, so a clone that is written to pays O(cells) once. The
/// hash seed comes from whoever creates the state ([`Cells::with_hash_seed`]): the server draws a
/// random one so that producers cannot choose colliding ids, and the default is fixed, so tests,
/// benchmarks and the instruction-count gates are deterministic. Nothing observable depends on it.
struct Lookup {
    table: HashTable<Probe>,
    /// Whether `table` holds every cell.
    complete: bool,
    hasher: FixedState,
}

struct Probe {
    id: CellId,
    slot: u32,
    /// The id's 32-bit hash with its low [`MISSING_BITS`] replaced by the missing fields: growing
    /// the table rehashes from here.
    tag: u32,
}

const MISSING_BITS: u32 = 3;
const HASH_MASK: u32 = !((1 << MISSING_BITS) - 1);

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

    fn bits(self) -> u32 {
        u32::from(self.spec_id) | u32::from(self.run_id) << 1 | u32::from(self.formation_id) << 2
    }

    fn from_bits(bits: u32) -> Missing {
        Missing {
            spec_id: bits & 1 != 0,
            run_id: bits & 2 != 0,
            formation_id: bits & 4 != 0,
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
            complete: false,
            hasher: self.hasher.clone(),
        }
    }
}

impl Lookup {
    fn with_hash_seed(seed: u64) -> Lookup {
        Lookup {
            table: HashTable::new(),
            complete: true,
            hasher: FixedState::with_seed(seed),
        }
    }

    fn hash(&self, id: &[u8]) -> u32 {
        self.hasher.hash_one(id) as u32 & HASH_MASK
    }

    /// Adds the cell in `slot`.
    fn push(&mut self, id: &CellId, slot: u32, identity: &CellIdentity) {
        let hash = self.hash(id.as_bytes());
        let probe = Probe {
            id: id.clone(),
            slot,
            tag: hash | Missing::of(identity).bits(),
        };
        self.table
            .insert_unique(spread(hash), probe, |p| spread(p.tag & HASH_MASK));
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut Probe> {
        let hash = self.hash(id.as_bytes());
        self.table.find_mut(spread(hash), |p| {
            p.tag & HASH_MASK == hash && p.id.as_bytes() == id.as_bytes()
        })
    }

    fn complete(&mut self, index: &SortedMap<CellId, u32>, identities: &Slots<CellIdentity>) {
        if !self.complete {
            self.table.clear();
            self.table
                .reserve(index.len(), |p| spread(p.tag & HASH_MASK));
            for (id, &slot) in index.iter() {
                let identity = identities.get(slot as usize).expect(IN_RANGE);
                self.push(id, slot, identity);
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

/// The projection is the index, identities, records and their aside texts; the writer's lookup
/// is not part of it.
impl PartialEq for Cells {
    fn eq(&self, other: &Cells) -> bool {
        self.index == other.index
            && self.identities == other.identities
            && self.records == other.records
            && self.aside == other.aside
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
            .field("aside", &self.aside)
            .finish()
    }
}

/// A cell as readers see it: its identity and its current record (which it derefs to for the
/// plain fields; the texts are read through the methods).
#[derive(Clone, Copy, Debug)]
pub struct Cell<'a> {
    id: &'a CellId,
    pub identity: &'a CellIdentity,
    pub record: &'a CellRecord,
    slot: u32,
    aside: &'a Aside,
}

impl<'a> Cell<'a> {
    pub fn id(&self) -> &'a str {
        self.id
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
    /// The `time` of the latest `started` event, as sent.
    pub fn started_at(&self) -> Option<FieldText<'a>> {
        self.text(Field::StartedAt)
    }
    /// The `time` of the `destroyed` event, as sent.
    pub fn destroyed_at(&self) -> Option<FieldText<'a>> {
        self.text(Field::DestroyedAt)
    }
    /// `data.outcome` of the `destroyed` event, as sent.
    pub fn outcome(&self) -> Option<FieldText<'a>> {
        self.text(Field::Outcome)
    }
    pub fn text(&self, field: Field) -> Option<FieldText<'a>> {
        self.record.text(field, self.slot, self.aside)
    }
}

impl Deref for Cell<'_> {
    type Target = CellRecord;
    fn deref(&self) -> &CellRecord {
        self.record
    }
}

/// Write access to one cell's record, with what setting its texts needs.
pub struct RecordMut<'a> {
    slot: u32,
    record: &'a mut CellRecord,
    aside: &'a mut Aside,
}

impl RecordMut<'_> {
    pub fn set_text(&mut self, field: Field, text: Option<&str>) {
        self.record.set_text(field, text, self.slot, self.aside);
    }
}

impl Deref for RecordMut<'_> {
    type Target = CellRecord;
    fn deref(&self) -> &CellRecord {
        self.record
    }
}

impl std::ops::DerefMut for RecordMut<'_> {
    fn deref_mut(&mut self) -> &mut CellRecord {
        self.record
    }
}

/// Write access to one existing cell. The identity is read or unshared only when asked for, so
/// plain updates touch neither the identity table nor its copy-on-write.
pub struct CellMut<'a> {
    probe: &'a mut Probe,
    identities: &'a mut Slots<CellIdentity>,
    records: &'a mut Slots<CellRecord>,
    aside: &'a mut Aside,
    texts: &'a mut Interner,
}

impl CellMut<'_> {
    /// The cell's id, as the ordered index holds it.
    pub fn id(&self) -> &CellId {
        &self.probe.id
    }

    /// The identity fields this cell still lacks, without reading its identity.
    pub fn missing(&self) -> Missing {
        Missing::from_bits(self.probe.tag & !HASH_MASK)
    }

    /// Changes the identity (filling fields in) and keeps [`CellMut::missing`] in step.
    pub fn update_identity<R>(&mut self, f: impl FnOnce(&mut CellIdentity) -> R) -> R {
        let slot = self.probe.slot as usize;
        let identity = self.identities.get_mut(slot).expect(IN_RANGE);
        let out = f(identity);
        self.probe.tag = (self.probe.tag & HASH_MASK) | Missing::of(identity).bits();
        out
    }

    pub fn record(&mut self) -> RecordMut<'_> {
        let slot = self.probe.slot;
        RecordMut {
            slot,
            record: self.records.get_mut(slot as usize).expect(IN_RANGE),
            aside: self.aside,
        }
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
        let (id, &slot) = self.index.get_key_value(id)?;
        Some(self.at(id, slot))
    }

    /// The writer's interner, for the identity texts of cells it creates or fills in.
    pub fn texts(&mut self) -> &mut Interner {
        &mut self.texts
    }

    pub fn get_mut(&mut self, id: &str) -> Option<CellMut<'_>> {
        self.lookup.complete(&self.index, &self.identities);
        let probe = self.lookup.find_mut(id)?;
        Some(CellMut {
            probe,
            identities: &mut self.identities,
            records: &mut self.records,
            aside: &mut self.aside,
            texts: &mut self.texts,
        })
    }

    /// Builds the writer's lookup now if this is a clone (see `Lookup`).
    pub fn prepare_writes(&mut self) {
        self.lookup.complete(&self.index, &self.identities);
    }

    /// Every cell in ascending id (byte) order.
    pub fn iter(&self) -> impl Iterator<Item = Cell<'_>> + '_ {
        self.index.iter().map(|(id, &slot)| self.at(id, slot))
    }

    /// Adds a cell that is not in the table yet (the caller looked it up), with a new record
    /// that `fill` sets; `id` becomes the index's key, for other indexes to share.
    pub fn insert(
        &mut self,
        id: CellId,
        identity: CellIdentity,
        record: CellRecord,
        fill: impl FnOnce(&mut RecordMut<'_>),
    ) {
        debug_assert!(self.get(&id).is_none(), "cell inserted twice");
        self.lookup.complete(&self.index, &self.identities);
        // Slots stay below u32::MAX: the table would need hundreds of GiB first.
        let slot = self.records.len() as u32;
        let mut record = record;
        fill(&mut RecordMut {
            slot,
            record: &mut record,
            aside: &mut self.aside,
        });
        self.lookup.push(&id, slot, &identity);
        self.records.push(record);
        self.identities.push(identity);
        debug_assert_eq!(self.lookup.table.len(), self.records.len());
        self.index.insert(id, slot);
    }

    /// Every cell in ascending id order, with its slot: what a checkpoint stores.
    pub fn iter_with_slots(&self) -> impl ExactSizeIterator<Item = (u32, Cell<'_>)> + '_ {
        self.index
            .iter()
            .map(|(id, &slot)| (slot, self.at(id, slot)))
    }

    /// A table from its parts as a checkpoint holds them: `index` in ascending id order, naming
    /// each slot of `identities` and `records` (same length) exactly once; the caller checked
    /// both. `aside` holds the records' texts that did not pack. Builds everything in one pass
    /// each, the writer's lookup included; with [`Threads::Two`], the ordered index, the longest
    /// part, on a second thread when one can be started (a boot has the cores to itself). The
    /// result is the same either way.
    pub fn from_parts(
        index: Vec<(CellId, u32)>,
        identities: Vec<CellIdentity>,
        records: Vec<CellRecord>,
        aside: Aside,
        hash_seed: u64,
        threads: Threads,
    ) -> Cells {
        // Both threads read `index`: the second builds the ordered index, this one the lookup.
        let build_index = || index.iter().cloned().collect::<SortedMap<_, _>>();
        std::thread::scope(|scope| {
            let worker = match threads {
                Threads::One => None,
                Threads::Two => std::thread::Builder::new()
                    .name("cellos-restore".into())
                    .spawn_scoped(scope, build_index)
                    .ok(),
            };
            let mut lookup = Lookup::with_hash_seed(hash_seed);
            lookup
                .table
                .reserve(index.len(), |p| spread(p.tag & HASH_MASK));
            for (id, slot) in &index {
                lookup.push(id, *slot, &identities[*slot as usize]);
            }
            let identities = Slots::from_vec(identities);
            let records = Slots::from_vec(records);
            let index = match worker {
                Some(worker) => worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => build_index(),
            };
            Cells {
                index,
                identities,
                records,
                aside,
                lookup,
                texts: Interner::with_hash_seed(hash_seed),
            }
        })
    }

    fn at<'a>(&'a self, id: &'a CellId, slot: u32) -> Cell<'a> {
        let i = slot as usize;
        Cell {
            id,
            identity: self.identities.get(i).expect(IN_RANGE),
            record: self.records.get(i).expect(IN_RANGE),
            slot,
            aside: &self.aside,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CellState;

    fn cell(i: usize) -> (CellId, CellIdentity, CellRecord) {
        let identity = CellIdentity {
            spec_id: "spec".into(),
            run_id: None,
            formation_id: None,
        };
        let mut record = CellRecord::new(i as u64);
        record.set_state(CellState::Running);
        (CellId::new(&format!("cell-{i}")).unwrap(), identity, record)
    }

    #[test]
    fn writes_find_cells_in_the_original_and_in_clones() {
        let mut cells = Cells::default();
        for i in 0..1000 {
            let (id, identity, record) = cell(i);
            cells.insert(id, identity, record, |_| {});
        }
        let snapshot = cells.clone();
        let mut fork = cells.clone();
        for i in 0..1000 {
            let id = format!("cell-{i}");
            let slot = cells.get_mut(&id).map(|c| c.probe.slot);
            assert_eq!(slot, fork.get_mut(&id).map(|c| c.probe.slot), "{id}");
            fork.get_mut(&id)
                .unwrap()
                .record()
                .replace_last_event_seq(7);
            assert_eq!(cells.get(&id).unwrap().last_event_seq(), i as u64);
        }
        assert!(fork.get_mut("cell-1000").is_none());
        let (id, identity, record) = cell(1000);
        fork.insert(id, identity, record, |_| {});
        assert!(fork.get_mut("cell-1000").is_some());
        assert!(cells.get_mut("cell-1000").is_none());
        assert_eq!(snapshot, cells, "clones share nothing they can change");
        assert_eq!(fork.iter().count(), 1001);
    }

    #[test]
    fn missing_identity_fields_follow_fills_in_the_writer_and_in_clones() {
        let mut cells = Cells::default();
        let (id, identity, record) = cell(0);
        cells.insert(id, identity, record, |_| {});
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

    /// What a cell costs in each table is a memory budget (see BENCHMARKS.md, "Memory").
    #[test]
    fn identities_and_lookup_buckets_stay_within_their_budget() {
        assert_eq!(std::mem::size_of::<Option<CellIdentity>>(), 24);
        assert_eq!(std::mem::size_of::<Probe>(), 16);
    }

    #[test]
    fn the_hash_seed_changes_nothing_observable_and_clones_keep_it() {
        let mut a = Cells::default();
        let mut b = Cells::with_hash_seed(0x9e37_79b9_7f4a_7c15);
        for i in 0..2000 {
            let (id, identity, record) = cell(i);
            a.insert(id.clone(), identity.clone(), record, |_| {});
            b.insert(id, identity, record, |_| {});
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
                a.get_mut(&id).map(|c| c.probe.slot),
                b.get_mut(&id).map(|c| c.probe.slot)
            );
        }
    }

    #[test]
    fn a_clone_prints_like_its_original_whatever_the_lookup_holds() {
        let mut cells = Cells::default();
        let (id, identity, record) = cell(0);
        cells.insert(id, identity, record, |_| {});
        assert!(cells.get_mut("cell-0").is_some());
        let clone = cells.clone();
        assert_eq!(format!("{clone:?}"), format!("{cells:?}"));
    }
}
