//! `CellRecord`: what changes about a cell, packed into 36 bytes of plain data.
//!
//! The record is what an update copies (with its leaf of [`super::slots::LEAF`] records), and
//! what a million cells hold a million of, so its texts are not stored as texts when they have
//! their usual shape. A time of the shape `YYYY-MM-DDTHH:MM:SS[.fraction]` followed by `Z` or
//! `±HH:MM` is packed into 12 bytes ([`Stamp`]) and rendered back byte for byte on read; the
//! outcomes the supervisor sends (`succeeded`, `failed`) are a code. Anything else (another
//! time format, any other outcome) is kept as text in the table's [`Aside`] map, keyed by slot
//! and field, so every text renders exactly as it was sent.

use std::fmt;
use std::ops::Deref;

use arcstr::ArcStr;
use imbl::OrdMap;

use super::CellState;

/// The record's text fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    StartedAt = 0,
    DestroyedAt = 1,
    Outcome = 2,
}

/// Texts records could not pack, by slot and field: part of the projection (it compares and
/// prints with the records). Usually empty; at most three texts per cell, since setting a field
/// replaces or removes its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aside(OrdMap<u64, ArcStr>);

impl Aside {
    fn key(slot: u32, field: Field) -> u64 {
        (u64::from(slot) << 2) | field as u64
    }

    pub fn get(&self, slot: u32, field: Field) -> Option<&ArcStr> {
        self.0.get(&Self::key(slot, field))
    }

    fn set(&mut self, slot: u32, field: Field, text: Option<&str>) {
        let key = Self::key(slot, field);
        match text {
            Some(text) => {
                self.0.insert(key, ArcStr::from(text));
            }
            None => {
                self.0.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A time field: absent, packed, or kept aside. 12 bytes, alignment 4 (see [`Stamp::pack`]).
/// Three 32-bit words rather than a u64 and a u32, which would align to 8 bytes and make the
/// record 40. The low `META_BITS` bits of `low` are not the time's: the record keeps its
/// state and flags in those of its start time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Tag (2 bits), then the fields, from the top of `high`: see `pack`.
    high: u32,
    low: u32,
    /// The fraction's value (its digit count is in the fields).
    fraction: u32,
}

const TAG_SHIFT: u32 = 62;
/// Low bits of a stamp that the time leaves free (57 bits of fields and 2 of tag in 64).
const META_BITS: u32 = 5;
const META_MASK: u32 = (1 << META_BITS) - 1;
const PACKED: u64 = 1;
const ASIDE: u64 = 2;

/// Longest packed time: 19 (date and time) + 10 (`.` and 9 digits) + 6 (`+HH:MM`).
const MAX_RENDERED: usize = 35;

impl Stamp {
    const NONE: Stamp = Stamp::from_fields(0, 0);
    const ASIDE: Stamp = Stamp::from_fields(ASIDE << TAG_SHIFT, 0);

    const fn from_fields(fields: u64, fraction: u32) -> Stamp {
        Stamp {
            high: (fields >> 32) as u32,
            low: fields as u32,
            fraction,
        }
    }

    fn fields(self) -> u64 {
        (u64::from(self.high) << 32) | u64::from(self.low)
    }

    /// Packs `text` if it has the shape the module docs describe and every two-digit field fits
    /// its bits (month ≤ 15, day/hour ≤ 31, minute/second ≤ 63, offset hours ≤ 31, minutes ≤
    /// 63), so that rendering gives back exactly `text`. Bits from the top: tag 2, year 14,
    /// month 4, day 5, hour 5, minute 6, second 6, fraction digits 4, offset sign 2 (0 `Z`,
    /// 1 `+`, 2 `-`), offset hours 5, offset minutes 6.
    pub fn pack(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let two = |at: usize, bits: u32| digits(&b[at..at + 2]).filter(|v| *v < 1 << bits);
        let (month, day, hour) = (two(5, 4)?, two(8, 5)?, two(11, 5)?);
        let (minute, second) = (two(14, 6)?, two(17, 6)?);
        let mut at = 19;
        let (mut places, mut fraction) = (0, 0);
        if b[at] == b'.' {
            let run = b[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !(1..=9).contains(&run) {
                return None;
            }
            places = run as u64;
            fraction = digits(&b[at + 1..at + 1 + run])? as u32;
            at += 1 + run;
        }
        let (sign, off_hour, off_minute) = match &b[at..] {
            [b'Z'] => (0, 0, 0),
            [s @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let hh = digits(&[*h1, *h2]).filter(|v| *v < 32)?;
                let mm = digits(&[*m1, *m2]).filter(|v| *v < 64)?;
                (if *s == b'+' { 1 } else { 2 }, hh, mm)
            }
            _ => return None,
        };
        let mut fields = PACKED;
        for (value, bits) in [
            (year, 14),
            (month, 4),
            (day, 5),
            (hour, 5),
            (minute, 6),
            (second, 6),
            (places, 4),
            (sign, 2),
            (off_hour, 5),
            (off_minute, 6),
        ] {
            fields = (fields << bits) | value;
        }
        // 2 + 57 bits: shift the tag to the top, leaving the meta bits free.
        Some(Stamp::from_fields(fields << META_BITS, fraction))
    }

    fn tag(self) -> u64 {
        self.fields() >> TAG_SHIFT
    }

    fn meta(self) -> u8 {
        (self.low & META_MASK) as u8
    }

    /// This time with `meta` in the bits it leaves free.
    fn with_meta(self, meta: u8) -> Stamp {
        Stamp {
            low: (self.low & !META_MASK) | (u32::from(meta) & META_MASK),
            ..self
        }
    }

    /// The packed time's text; `None` unless packed.
    fn render(self) -> Option<Rendered> {
        if self.tag() != PACKED {
            return None;
        }
        let mut rest = self.fields() >> META_BITS;
        let mut take = |bits: u32| {
            let v = rest & ((1 << bits) - 1);
            rest >>= bits;
            v
        };
        let (off_minute, off_hour, sign) = (take(6), take(5), take(2));
        let (places, second, minute) = (take(4), take(6), take(6));
        let (hour, day, month, year) = (take(5), take(5), take(4), take(14));
        let mut out = Rendered {
            bytes: [0; MAX_RENDERED],
            len: 0,
        };
        out.number(year, 4);
        out.push(b'-');
        out.number(month, 2);
        out.push(b'-');
        out.number(day, 2);
        out.push(b'T');
        out.number(hour, 2);
        out.push(b':');
        out.number(minute, 2);
        out.push(b':');
        out.number(second, 2);
        if places > 0 {
            out.push(b'.');
            out.number(u64::from(self.fraction), places as usize);
        }
        match sign {
            0 => out.push(b'Z'),
            _ => {
                out.push(if sign == 1 { b'+' } else { b'-' });
                out.number(off_hour, 2);
                out.push(b':');
                out.number(off_minute, 2);
            }
        }
        Some(out)
    }
}

/// The value of a run of ASCII digits (at most 9), `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |v, c| {
        c.is_ascii_digit().then(|| v * 10 + u64::from(c - b'0'))
    })
}

/// A packed time rendered on the stack.
#[derive(Clone, Copy)]
struct Rendered {
    bytes: [u8; MAX_RENDERED],
    len: u8,
}

impl Rendered {
    fn push(&mut self, c: u8) {
        self.bytes[usize::from(self.len)] = c;
        self.len += 1;
    }

    /// `value` in exactly `width` digits, zero-padded (it fits: it was read from `width`).
    fn number(&mut self, mut value: u64, width: usize) {
        let end = usize::from(self.len) + width;
        for at in (usize::from(self.len)..end).rev() {
            self.bytes[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len = end as u8;
    }
}

/// A text field as read: rendered from its packed form, or borrowed.
#[derive(Clone, Copy)]
pub struct FieldText<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    Rendered(Rendered),
    Borrowed(&'a str),
}

impl FieldText<'_> {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ASCII digits and punctuation are ever pushed, so always UTF-8; the fallback is
            // unreachable but keeps this free of `unsafe`.
            Repr::Rendered(r) => {
                std::str::from_utf8(&r.bytes[..usize::from(r.len)]).unwrap_or_default()
            }
            Repr::Borrowed(s) => s,
        }
    }
}

impl Deref for FieldText<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for FieldText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for FieldText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for FieldText<'_> {
    fn eq(&self, other: &FieldText<'_>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FieldText<'_> {}

impl PartialEq<str> for FieldText<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FieldText<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The outcomes the supervisor sends, by code (0: none, the last: kept aside).
const OUTCOMES: [&str; 2] = ["succeeded", "failed"];
const OUTCOME_ASIDE: u8 = OUTCOMES.len() as u8 + 1;
/// Meta bits (in the start time's free bits): the state, the outcome code, whether there is an
/// exit code.
const STATE_MASK: u8 = 0b00011;
const OUTCOME_SHIFT: u32 = 2;
const OUTCOME_MASK: u8 = 0b01100;
const HAS_EXIT: u8 = 0b10000;
const STATES: [CellState; 3] = [CellState::Pending, CellState::Running, CellState::Destroyed];

/// What changes about a cell as its events arrive (the identity is kept apart, see
/// [`super::Cells`]). Plain data of 36 bytes with 4-byte alignment, so that a leaf of four with
/// its reference counts is 160 bytes, an allocation class of its own (at 40 bytes it was 176,
/// in the 192 class). Its texts need the table's [`Aside`] to be read, which is why they are
/// read through [`super::Cell`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CellRecord {
    /// Seq of the newest event naming this cell in `data.cellId` (any family), the head of its
    /// event chain in [`super::CellLinks`]: low and high halves.
    last_event_seq: [u32; 2],
    /// Also holds the meta bits (see `STATE_MASK`).
    started_at: Stamp,
    destroyed_at: Stamp,
    exit_code: i32,
}

impl CellRecord {
    /// A `pending` cell with nothing set.
    pub fn new(last_event_seq: u64) -> CellRecord {
        let mut record = CellRecord::default();
        record.replace_last_event_seq(last_event_seq);
        record
    }

    pub fn last_event_seq(&self) -> u64 {
        u64::from(self.last_event_seq[0]) | u64::from(self.last_event_seq[1]) << 32
    }

    /// Makes `seq` the newest event naming the cell; returns the previous one.
    pub fn replace_last_event_seq(&mut self, seq: u64) -> u64 {
        let previous = self.last_event_seq();
        self.last_event_seq = [seq as u32, (seq >> 32) as u32];
        previous
    }

    fn meta(&self) -> u8 {
        self.started_at.meta()
    }

    fn set_meta(&mut self, meta: u8) {
        self.started_at = self.started_at.with_meta(meta);
    }

    pub fn state(&self) -> CellState {
        STATES[usize::from(self.meta() & STATE_MASK).min(STATES.len() - 1)]
    }

    pub fn set_state(&mut self, state: CellState) {
        let code = STATES.iter().position(|s| *s == state).unwrap_or(0) as u8;
        self.set_meta((self.meta() & !STATE_MASK) | code);
    }

    fn outcome_code(&self) -> u8 {
        (self.meta() & OUTCOME_MASK) >> OUTCOME_SHIFT
    }

    pub fn exit_code(&self) -> Option<i32> {
        (self.meta() & HAS_EXIT != 0).then_some(self.exit_code)
    }

    pub fn set_exit_code(&mut self, code: Option<i32>) {
        self.exit_code = code.unwrap_or(0);
        let flag = if code.is_some() { HAS_EXIT } else { 0 };
        self.set_meta((self.meta() & !HAS_EXIT) | flag);
    }

    /// Sets a text field; `slot` is this record's, `aside` its table's.
    pub fn set_text(&mut self, field: Field, text: Option<&str>, slot: u32, aside: &mut Aside) {
        let was_aside = match field {
            Field::Outcome => self.outcome_code() == OUTCOME_ASIDE,
            Field::StartedAt => self.started_at.tag() == ASIDE,
            Field::DestroyedAt => self.destroyed_at.tag() == ASIDE,
        };
        let mut kept_aside = false;
        match field {
            Field::Outcome => {
                let code = match text {
                    None => 0,
                    Some(t) => match OUTCOMES.iter().position(|o| *o == t) {
                        Some(i) => i as u8 + 1,
                        None => {
                            kept_aside = true;
                            OUTCOME_ASIDE
                        }
                    },
                };
                self.set_meta((self.meta() & !OUTCOME_MASK) | code << OUTCOME_SHIFT);
            }
            Field::StartedAt | Field::DestroyedAt => {
                let stamp = match text {
                    None => Stamp::NONE,
                    Some(t) => Stamp::pack(t).unwrap_or_else(|| {
                        kept_aside = true;
                        Stamp::ASIDE
                    }),
                };
                match field {
                    Field::StartedAt => self.started_at = stamp.with_meta(self.meta()),
                    _ => self.destroyed_at = stamp,
                }
            }
        }
        if kept_aside {
            aside.set(slot, field, text);
        } else if was_aside {
            aside.set(slot, field, None);
        }
    }

    /// A text field as sent; `slot` and `aside` as for [`CellRecord::set_text`].
    pub fn text<'a>(&self, field: Field, slot: u32, aside: &'a Aside) -> Option<FieldText<'a>> {
        let from_aside = || {
            aside
                .get(slot, field)
                .map(|t| FieldText(Repr::Borrowed(t.as_str())))
        };
        let stamp = match field {
            Field::Outcome => {
                return match self.outcome_code() {
                    0 => None,
                    OUTCOME_ASIDE => from_aside(),
                    code => Some(FieldText(Repr::Borrowed(OUTCOMES[usize::from(code) - 1]))),
                };
            }
            Field::StartedAt => self.started_at,
            Field::DestroyedAt => self.destroyed_at,
        };
        match stamp.tag() {
            PACKED => stamp.render().map(|r| FieldText(Repr::Rendered(r))),
            ASIDE => from_aside(),
            _ => None,
        }
    }
}

/// Prints the packed fields as codes (the texts need the table's [`Aside`]).
impl fmt::Debug for CellRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |s: Stamp| s.render().map(|r| FieldText(Repr::Rendered(r)));
        f.debug_struct("CellRecord")
            .field("state", &self.state())
            .field("started_at", &time(self.started_at))
            .field("destroyed_at", &time(self.destroyed_at))
            .field("outcome_code", &self.outcome_code())
            .field("exit_code", &self.exit_code())
            .field("last_event_seq", &self.last_event_seq())
            .finish()
    }
}

#[cfg(test)]
mod tests;
