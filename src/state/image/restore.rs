//! Restoring a state from an image: the tables as they are read, each cell placed in its slot,
//! then the cell table built in one pass. Every inconsistency is an error that says what it is.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use arcstr::ArcStr;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::{CellRow, FormationRow, ImageError, RejectionRow, CELL_STATES, FIELDS, STATUSES};
use crate::state::cells::Threads;
use crate::state::record::Aside;
use crate::state::{
    CellId, CellIdentity, CellLinks, CellRecord, Cells, Field, FormationRecord, Rejection, State,
};

/// The fewest bytes a cell takes in an image: what bounds the cells an image of a given size can
/// declare, and so what is allocated before they are read.
const MIN_CELL_BYTES: usize = 11;

/// Restores a state from an [`Image`](super::Image) of `image_len` bytes read from `d`; the writer's cell
/// lookup hashes with `hash_seed` (see [`State::with_hash_seed`]). Whatever the input, an error,
/// never a panic, and never an allocation out of proportion to `image_len`.
pub fn restore<'de, D: Deserializer<'de>>(
    d: D,
    image_len: usize,
    hash_seed: u64,
    threads: Threads,
) -> Result<State, ImageError<D::Error>> {
    let why = RefCell::new(None);
    let restored = Restore {
        hash_seed,
        threads,
        max_cells: image_len / MIN_CELL_BYTES,
        why: Why(&why),
    }
    .deserialize(d);
    restored.map_err(|e| match why.into_inner() {
        Some(why) => ImageError::Invalid(why),
        None => ImageError::Malformed(e),
    })
}

/// Where the visitors leave the reason of an inconsistency: serde's error type may not keep a
/// message (postcard's does not).
#[derive(Clone, Copy)]
struct Why<'w>(&'w RefCell<Option<String>>);

impl Why<'_> {
    fn fail<E: de::Error>(self, why: String) -> E {
        let error = E::custom(&why);
        *self.0.borrow_mut() = Some(why);
        error
    }

    fn code<T: Copy, E: de::Error>(self, all: &[T], code: u8, what: &str) -> Result<T, E> {
        all.get(usize::from(code))
            .copied()
            .ok_or_else(|| self.fail(format!("unknown {what} code {code}")))
    }
}

struct Restore<'w> {
    hash_seed: u64,
    threads: Threads,
    max_cells: usize,
    why: Why<'w>,
}

impl<'de> DeserializeSeed<'de> for Restore<'_> {
    type Value = State;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<State, D::Error> {
        d.deserialize_tuple(FIELDS, self)
    }
}

fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    why: Why<'_>,
    what: &str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| why.fail(format!("the image ends before its {what}")))
}

fn uuid(bytes: [u8; 16]) -> Uuid {
    Uuid::from_bytes(bytes)
}

impl<'de> Visitor<'de> for Restore<'_> {
    type Value = State;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a projection image")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<State, A::Error> {
        let why = self.why;
        let mut state = State::with_hash_seed(self.hash_seed);
        let formations: Vec<FormationRow<'de>> = next(&mut seq, why, "formations")?;
        for f in formations {
            let id = uuid(f.id);
            let record = FormationRecord {
                id,
                name: Arc::from(f.name),
                status: why.code(&STATUSES, f.status, "formation status")?,
                document: Bytes::copy_from_slice(f.document.0),
                created_at: f.created_at.map(Arc::from),
                updated_at: f.updated_at.map(Arc::from),
                member_count: usize::try_from(f.member_count)
                    .map_err(|_| why.fail("member count out of range".into()))?,
                created_seq: f.created_seq,
            };
            if state.formations.insert(id, Arc::new(record)).is_some() {
                return Err(why.fail(format!("formation {id} twice")));
            }
        }
        let names: Vec<(&'de str, [u8; 16])> = next(&mut seq, why, "names")?;
        for (name, id) in names {
            let id = uuid(id);
            // The name shares its formation's allocation, as after `apply`.
            let shared = state
                .formations
                .get(&id)
                .filter(|f| &*f.name == name)
                .map_or_else(|| Arc::from(name), |f| f.name.clone());
            if state.names.insert(shared, id).is_some() {
                return Err(why.fail(format!("name {name:?} twice")));
            }
        }
        let rejections: Vec<RejectionRow> = next(&mut seq, why, "rejections")?;
        for r in rejections {
            let (id, holder) = (uuid(r.id), uuid(r.holder));
            let twice = state
                .rejections
                .insert(id, Rejection { seq: r.seq, holder })
                .is_some()
                || state.rejection_order.insert(r.seq, id).is_some();
            if twice {
                return Err(why.fail("a rejection twice".into()));
            }
        }
        let texts: Vec<&'de str> = next(&mut seq, why, "texts")?;
        let texts: Vec<ArcStr> = texts.into_iter().map(ArcStr::from).collect();
        seq.next_element_seed(CellsSeed {
            state: &mut state,
            texts: &texts,
            hash_seed: self.hash_seed,
            threads: self.threads,
            max_cells: self.max_cells,
            why,
        })?
        .ok_or_else(|| why.fail("the image ends before its cells".into()))?;
        let orphans: Vec<(&'de str, u64)> = next(&mut seq, why, "orphan heads")?;
        for (id, head) in orphans {
            if state.orphan_heads.insert(ArcStr::from(id), head).is_some() {
                return Err(why.fail(format!("orphan head {id:?} twice")));
            }
        }
        let (base, links): (u64, Vec<u32>) = next(&mut seq, why, "cell links")?;
        state.cell_links = CellLinks::from_parts(base, &links)
            .ok_or_else(|| why.fail("more cell links than the window holds".into()))?;
        Ok(state)
    }
}

/// Restores the cells: each placed in its slot as it is read, then the table built in one pass.
struct CellsSeed<'s> {
    state: &'s mut State,
    texts: &'s [ArcStr],
    hash_seed: u64,
    threads: Threads,
    max_cells: usize,
    why: Why<'s>,
}

impl<'de> DeserializeSeed<'de> for CellsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CellsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the cells")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let why = self.why;
        let count = seq
            .size_hint()
            .ok_or_else(|| why.fail("cells without a count".into()))?;
        if count > self.max_cells {
            return Err(why.fail(format!(
                "{count} cells declared, more than the image's size can hold"
            )));
        }
        let text = |n: u32| {
            self.texts
                .get(n as usize)
                .cloned()
                .ok_or_else(|| why.fail(format!("text number {n} out of range")))
        };
        let mut identities: Vec<Option<CellIdentity>> = (0..count).map(|_| None).collect();
        let mut records: Vec<Option<CellRecord>> = (0..count).map(|_| None).collect();
        let mut index = Vec::with_capacity(count);
        let mut aside = Aside::default();
        // Per text number: the cells of the formation with that id, in ascending id order.
        let mut members: Vec<Vec<CellId>> = vec![Vec::new(); self.texts.len()];
        let mut previous: Option<&'de str> = None;
        while let Some(c) = seq.next_element::<CellRow<'de, &'de str>>()? {
            // Strictly ascending ids: the order readers list them in, and no cell twice.
            if previous.is_some_and(|p| p >= c.id) {
                return Err(why.fail(format!("cell {:?} out of order or twice", c.id)));
            }
            previous = Some(c.id);
            let slot = c.slot as usize;
            let taken = identities.get(slot).is_none_or(Option::is_some);
            if taken {
                return Err(why.fail(format!("cell {:?} in slot {slot}, not free", c.id)));
            }
            let key = CellId::new(c.id)
                .ok_or_else(|| why.fail(format!("a cell id of {} bytes", c.id.len())))?;
            let formation = c.formation.map(text).transpose()?;
            if let Some(f) = c.formation {
                members[f as usize].push(key.clone());
            }
            identities[slot] = Some(CellIdentity {
                spec_id: text(c.spec)?,
                run_id: c.run.map(text).transpose()?,
                formation_id: formation,
            });
            let mut record = CellRecord::new(c.last_event_seq);
            record.set_state(why.code(&CELL_STATES, c.state, "cell state")?);
            record.set_exit_code(c.exit_code);
            for (field, text) in [
                (Field::StartedAt, c.started_at),
                (Field::DestroyedAt, c.destroyed_at),
                (Field::Outcome, c.outcome),
            ] {
                // A new record has no text to replace: only those present are set.
                if text.is_some() {
                    record.set_text(field, text, c.slot, &mut aside);
                }
            }
            records[slot] = Some(record);
            index.push((key, c.slot));
        }
        let (Some(identities), Some(records)) = (
            identities.into_iter().collect::<Option<Vec<_>>>(),
            records.into_iter().collect::<Option<Vec<_>>>(),
        ) else {
            return Err(why.fail("fewer cells than declared".into()));
        };
        self.state.cells = Cells::from_parts(
            index,
            identities,
            records,
            aside,
            self.hash_seed,
            self.threads,
        );
        for (number, cells) in members.into_iter().enumerate() {
            if !cells.is_empty() {
                let formation = self.texts[number].clone();
                self.state
                    .cells_by_formation
                    .insert(formation, cells.into_iter().map(|c| (c, ())).collect());
            }
        }
        Ok(())
    }
}
