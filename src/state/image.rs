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

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::{CellState, FieldText, FormationStatus, State};

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
/// cells share are numbers into the image's text table. Record texts are written from their
/// [`FieldText`] (rendered if packed) and read back as `&str`: the same bytes either way.
#[derive(Serialize, Deserialize)]
struct CellRow<'a, T> {
    id: &'a str,
    slot: u32,
    spec: u32,
    run: Option<u32>,
    formation: Option<u32>,
    state: u8,
    started_at: Option<T>,
    destroyed_at: Option<T>,
    outcome: Option<T>,
    exit_code: Option<i32>,
    last_event_seq: u64,
}

impl Serialize for FieldText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
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

/// The last text numbered for one field: cells in id order often share it with their neighbour
/// (the cells of one formation, one spec), and a comparison is far cheaper than a hash probe.
#[derive(Default)]
struct Last<'a>(Option<(&'a str, u32)>);

impl<'a> Texts<'a> {
    fn of(state: &'a State) -> (Texts<'a>, Vec<[u32; 3]>) {
        let mut texts = Texts {
            table: Vec::new(),
            numbers: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
        };
        let (mut spec, mut run, mut formation) =
            (Last::default(), Last::default(), Last::default());
        let refs = state
            .cells
            .iter_with_slots()
            .map(|(_, c)| {
                let s = texts.number(c.spec_id(), &mut spec);
                let r = c.run_id().map_or(u32::MAX, |r| texts.number(r, &mut run));
                let f = c
                    .formation_id()
                    .map_or(u32::MAX, |f| texts.number(f, &mut formation));
                [s, r, f]
            })
            .collect();
        (texts, refs)
    }

    fn number(&mut self, text: &'a str, last: &mut Last<'a>) -> u32 {
        if let Some((previous, number)) = last.0 {
            if std::ptr::eq(previous, text) || previous == text {
                return number;
            }
        }
        let next = self.table.len() as u32;
        let number = *self.numbers.entry(text).or_insert_with(|| {
            self.table.push(text);
            next
        });
        last.0 = Some((text, number));
        number
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
                state: code(&CELL_STATES, &c.state()),
                started_at: c.started_at(),
                destroyed_at: c.destroyed_at(),
                outcome: c.outcome(),
                exit_code: c.exit_code(),
                last_event_seq: c.last_event_seq(),
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

mod restore;

pub use restore::restore;

#[cfg(test)]
mod tests;
