//! The projection as serde data, for checkpoints: [`Image`] serializes a [`State`], [`restore`]
//! builds one back. Pure: no I/O, no clock; the bytes depend only on the state, so two servers at
//! the same log position write the same image.
//!
//! What is stored is everything `apply` reads or readers see: formations, the name index,
//! remembered rejections, cells in slot order, heads of cells without a record, and the per-cell
//! event links (whole, so cell event chains reach as far back as after a full replay). The cell
//! id index, the cells of each formation and the writer's lookup are derived on restore.
//!
//! Texts that many cells share (spec, run and formation ids) are stored once in a table and
//! referenced by number; restored cells share one allocation per distinct text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::cells::Threads;
use super::{
    CellIdentity, CellLinks, CellRecord, CellState, Cells, FormationRecord, FormationStatus,
    Rejection, ShortText, State, Text,
};

/// Top-level fields of an image, in order.
const FIELDS: usize = 7;

/// Serializes a state (see the module docs for what is in it).
pub struct Image<'a> {
    state: &'a State,
}

impl<'a> Image<'a> {
    pub fn new(state: &'a State) -> Image<'a> {
        Image { state }
    }
}

/// Why an image could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum ImageError<E> {
    /// Well-formed data that is not a projection (a cell twice, a text number out of range, an
    /// unknown status code).
    #[error("inconsistent image: {0}")]
    Invalid(String),
    /// The deserializer's own error (truncated or malformed data).
    #[error("malformed image: {0}")]
    Malformed(E),
}

/// The fewest bytes a cell takes in an image: what bounds the cells an image of a given size can
/// declare, and so what is allocated before they are read.
const MIN_CELL_BYTES: usize = 11;

/// Restores a state from an [`Image`] of `image_len` bytes read from `d`; the writer's cell
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

/// Bytes serialized as one byte string (postcard: length, then the bytes), read back borrowed.
pub(crate) struct Blob<'a>(pub(crate) &'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Blob<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a borrowed byte string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Blob<'de>, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A sequence of known length from an iterator (serde's `collect_seq` needs an exact size hint,
/// which chained and filtered iterators do not give).
struct Seq<I>(std::cell::Cell<Option<I>>, usize);

impl<I> Seq<I> {
    fn new(items: I, len: usize) -> Seq<I> {
        Seq(std::cell::Cell::new(Some(items)), len)
    }
}

impl<I: Iterator> Serialize for Seq<I>
where
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items = self
            .0
            .take()
            .ok_or_else(|| serde::ser::Error::custom("a sequence serialized twice"))?;
        let mut seq = s.serialize_seq(Some(self.1))?;
        let mut n = 0;
        for item in items {
            seq.serialize_element(&item)?;
            n += 1;
        }
        if n != self.1 {
            return Err(serde::ser::Error::custom("a sequence changed length"));
        }
        seq.end()
    }
}

#[derive(Serialize, Deserialize)]
struct FormationRow<'a> {
    id: [u8; 16],
    name: &'a str,
    status: u8,
    #[serde(borrow)]
    document: Blob<'a>,
    #[serde(borrow)]
    created_at: Option<&'a str>,
    #[serde(borrow)]
    updated_at: Option<&'a str>,
    member_count: u64,
    created_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct RejectionRow {
    seq: u64,
    id: [u8; 16],
    holder: [u8; 16],
}

/// A cell, in ascending id order, with its slot (the order cells were created in); texts many
/// cells share are numbers into the image's text table.
#[derive(Serialize, Deserialize)]
struct CellRow<'a> {
    id: &'a str,
    slot: u32,
    spec: u32,
    run: Option<u32>,
    formation: Option<u32>,
    state: u8,
    #[serde(borrow)]
    started_at: Option<&'a str>,
    #[serde(borrow)]
    destroyed_at: Option<&'a str>,
    #[serde(borrow)]
    outcome: Option<&'a str>,
    exit_code: Option<i32>,
    last_event_seq: u64,
}

const STATUSES: [FormationStatus; 5] = [
    FormationStatus::Pending,
    FormationStatus::Running,
    FormationStatus::Succeeded,
    FormationStatus::Failed,
    FormationStatus::Cancelled,
];
const CELL_STATES: [CellState; 3] = [CellState::Pending, CellState::Running, CellState::Destroyed];

fn code<T: PartialEq>(all: &[T], value: &T) -> u8 {
    all.iter().position(|v| v == value).unwrap_or(0) as u8
}

/// The text table: each distinct spec, run or formation id once, in order of first use by cells
/// in id order (so the same state always gives the same table).
struct Texts<'a> {
    table: Vec<&'a str>,
    numbers: HashMap<&'a str, u32, foldhash::fast::FixedState>,
}

impl<'a> Texts<'a> {
    fn of(state: &'a State) -> (Texts<'a>, Vec<[u32; 3]>) {
        let mut texts = Texts {
            table: Vec::new(),
            numbers: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
        };
        let refs = state
            .cells
            .iter_with_slots()
            .map(|(_, c)| {
                let spec = texts.number(c.spec_id());
                let run = c.run_id().map_or(u32::MAX, |r| texts.number(r));
                let formation = c.formation_id().map_or(u32::MAX, |f| texts.number(f));
                [spec, run, formation]
            })
            .collect();
        (texts, refs)
    }

    fn number(&mut self, text: &'a str) -> u32 {
        let next = self.table.len() as u32;
        *self.numbers.entry(text).or_insert_with(|| {
            self.table.push(text);
            next
        })
    }
}

fn some(n: u32) -> Option<u32> {
    (n != u32::MAX).then_some(n)
}

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.state;
        let formations = st.formations.values().map(|f| FormationRow {
            id: *f.id.as_bytes(),
            name: &f.name,
            status: code(&STATUSES, &f.status),
            document: Blob(&f.document),
            created_at: f.created_at.as_deref(),
            updated_at: f.updated_at.as_deref(),
            member_count: f.member_count as u64,
            created_seq: f.created_seq,
        });
        let names = st.names.iter().map(|(n, id)| (&**n, *id.as_bytes()));
        let rejections = st.rejection_order.iter().map(|(&seq, id)| RejectionRow {
            seq,
            id: *id.as_bytes(),
            holder: *st
                .rejections
                .get(id)
                .map_or(&Uuid::nil(), |r| &r.holder)
                .as_bytes(),
        });
        let (texts, refs) = Texts::of(st);
        let cells = st
            .cells
            .iter_with_slots()
            .zip(&refs)
            .map(|((slot, c), r)| CellRow {
                id: c.id(),
                slot,
                spec: r[0],
                run: some(r[1]),
                formation: some(r[2]),
                state: code(&CELL_STATES, &c.record.state),
                started_at: c.record.started_at.as_deref(),
                destroyed_at: c.record.destroyed_at.as_deref(),
                outcome: c.record.outcome.as_deref(),
                exit_code: c.record.exit_code,
                last_event_seq: c.record.last_event_seq,
            });
        let orphans = st.orphan_heads.iter().map(|(id, &seq)| (&**id, seq));
        let (base, links) = st.cell_links.parts();

        let mut t = s.serialize_tuple(FIELDS)?;
        t.serialize_element(&Seq::new(formations, st.formations.len()))?;
        t.serialize_element(&Seq::new(names, st.names.len()))?;
        t.serialize_element(&Seq::new(rejections, st.rejection_order.len()))?;
        t.serialize_element(&texts.table)?;
        t.serialize_element(&Seq::new(cells, refs.len()))?;
        t.serialize_element(&Seq::new(orphans, st.orphan_heads.len()))?;
        let count = links.len();
        t.serialize_element(&(base, Seq::new(links, count)))?;
        t.end()
    }
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
        let texts: Vec<Arc<str>> = texts.into_iter().map(Arc::from).collect();
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
            if state.orphan_heads.insert(Arc::from(id), head).is_some() {
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
    texts: &'s [Arc<str>],
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
        // Per text number: the cells of the formation with that id, in ascending id order.
        let mut members: Vec<Vec<Arc<str>>> = vec![Vec::new(); self.texts.len()];
        let mut previous: Option<&'de str> = None;
        while let Some(c) = seq.next_element::<CellRow<'de>>()? {
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
            let key: Arc<str> = Arc::from(c.id);
            let formation = c.formation.map(text).transpose()?;
            if let Some(f) = c.formation {
                members[f as usize].push(key.clone());
            }
            identities[slot] = Some(CellIdentity {
                id: Text::from(c.id),
                spec_id: text(c.spec)?,
                run_id: c.run.map(text).transpose()?,
                formation_id: formation,
            });
            records[slot] = Some(CellRecord {
                state: why.code(&CELL_STATES, c.state, "cell state")?,
                started_at: c.started_at.map(ShortText::from),
                destroyed_at: c.destroyed_at.map(ShortText::from),
                outcome: c.outcome.map(ShortText::from),
                exit_code: c.exit_code,
                last_event_seq: c.last_event_seq,
            });
            index.push((key, c.slot));
        }
        let (Some(identities), Some(records)) = (
            identities.into_iter().collect::<Option<Vec<_>>>(),
            records.into_iter().collect::<Option<Vec<_>>>(),
        ) else {
            return Err(why.fail("fewer cells than declared".into()));
        };
        self.state.cells =
            Cells::from_parts(index, identities, records, self.hash_seed, self.threads);
        for (number, cells) in members.into_iter().enumerate() {
            if !cells.is_empty() {
                let formation = self.texts[number].clone();
                self.state
                    .cells_by_formation
                    .insert(formation, cells.into_iter().collect());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
