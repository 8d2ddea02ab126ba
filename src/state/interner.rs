//! The writer's text interner: one shared allocation per distinct spec, run or formation id, the
//! texts that many cells share (a fleet runs many cells per spec, run and formation).
//!
//! A cache, not part of the projection, like the cell lookup: a clone starts empty (an O(1)
//! clone cannot copy a hash table), and the texts it hands out are ordinary [`ArcStr`]s, equal
//! to fresh ones. It holds at most [`MAX_INTERNED`] texts; past that, texts are allocated per
//! use as if there were no interner, so a producer sending endless distinct ids costs what it
//! did without one. The hash seed is the cell lookup's (producers cannot choose collisions).

use std::hash::BuildHasher;

use arcstr::ArcStr;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

/// Most distinct texts kept (about 1.5 MiB of table and texts at UUID length).
pub const MAX_INTERNED: usize = 1 << 15;

pub struct Interner {
    table: HashTable<ArcStr>,
    hasher: FixedState,
}

impl Interner {
    pub fn with_hash_seed(seed: u64) -> Interner {
        Interner {
            table: HashTable::new(),
            hasher: FixedState::with_seed(seed),
        }
    }

    /// `text` as a shared allocation: the one already handed out for equal text, if any.
    pub fn intern(&mut self, text: &str) -> ArcStr {
        let hash = self.hasher.hash_one(text);
        if let Some(found) = self.table.find(hash, |t| &**t == text) {
            return found.clone();
        }
        let shared = ArcStr::from(text);
        if self.table.len() < MAX_INTERNED {
            let hasher = &self.hasher;
            self.table
                .insert_unique(hash, shared.clone(), |t| hasher.hash_one(&**t));
        }
        shared
    }

    /// How many texts are kept.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_hash_seed(0)
    }
}

impl Clone for Interner {
    fn clone(&self) -> Self {
        Interner {
            table: HashTable::new(),
            hasher: self.hasher.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_allocation_up_to_the_bound() {
        let mut texts = Interner::default();
        let a = texts.intern("ci-build-v3");
        let b = texts.intern("ci-build-v3");
        assert!(ArcStr::ptr_eq(&a, &b));
        assert_eq!(&*texts.intern("other"), "other");
        assert_eq!(texts.len(), 2);
        assert!(texts.clone().is_empty(), "a clone starts empty");
        for i in 0..MAX_INTERNED + 10 {
            texts.intern(&format!("spec-{i}"));
        }
        assert_eq!(texts.len(), MAX_INTERNED);
        let past = texts.intern("one-more");
        assert_eq!(&*past, "one-more");
        assert!(
            !ArcStr::ptr_eq(&past, &texts.intern("one-more")),
            "not kept past the bound"
        );
    }
}
