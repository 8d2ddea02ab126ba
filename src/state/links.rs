//! Per-cell event chains: for each log position, how far back the previous event naming the same
//! cell is. A cell's newest event seq plus these links list its events without a per-cell list.
//!
//! Appending is O(1): links go into an owned tail of at most `CHUNK` (1,024) positions, which moves
//! into a shared, immutable chunk when full. A clone (one per snapshot publish) copies the tail
//! and shares the chunk vector (O(1)), so the hot path never copies tree nodes or touches the
//! reference counts of cold chunks.

use std::sync::Arc;

use imbl::Vector;

/// Log positions the links cover: older links are dropped, so a chain stops at an event more than
/// this many positions behind the newest (4 bytes per position: at most 16 MiB).
pub const CELL_LINK_WINDOW: u64 = 1 << 22;
/// Positions per chunk: the most a clone copies (4 KiB), and the step by which old links are
/// dropped from the front.
const CHUNK: usize = 1 << 10;

/// A full chunk: exactly [`CHUNK`] links.
type Chunk = Arc<[u32]>;

/// The link of seq `base + i` is position `i` of `full` chunks then `tail`: the distance to the
/// previous event naming the same cell, 0 when there is none (or the event names no cell, or the
/// distance does not fit). The layout depends only on the recorded seqs, so equal histories
/// compare equal however they were batched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellLinks {
    base: u64,
    full: Vector<Chunk>,
    tail: Vec<u32>,
}

impl CellLinks {
    fn len(&self) -> usize {
        self.full.len() * CHUNK + self.tail.len()
    }

    fn get(&self, i: usize) -> Option<u32> {
        match self.full.get(i / CHUNK) {
            Some(chunk) => Some(chunk[i % CHUNK]),
            None => self.tail.get(i - self.full.len() * CHUNK).copied(),
        }
    }

    fn push(&mut self, distance: u32) {
        self.tail.push(distance);
        if self.tail.len() == CHUNK {
            self.seal_tail();
        }
    }

    /// Moves the full tail into a shared chunk and drops the oldest chunk beyond the window. Once
    /// per [`CHUNK`] links, so kept out of line: the common push stays a store.
    #[cold]
    #[inline(never)]
    fn seal_tail(&mut self) {
        self.full.push_back(Arc::from(self.tail.as_slice()));
        self.tail.clear();
        if (self.full.len() * CHUNK) as u64 > CELL_LINK_WINDOW {
            self.full.pop_front();
            self.base += CHUNK as u64;
        }
    }

    /// Records the event at `seq`, whose cell's previous event is `previous` (0: none). Seqs only
    /// grow; a seq at or below one already recorded is not linked. Gaps (events that never reach
    /// the projection, or holes in the log) are filled with "no link".
    pub fn record(&mut self, seq: u64, previous: u64) {
        let len = self.len();
        let next = self.base + len as u64;
        if len == 0 || seq - next.min(seq) >= CELL_LINK_WINDOW {
            // First event, or a jump past the whole window: nothing recorded so far is reachable.
            *self = CellLinks {
                base: seq,
                ..CellLinks::default()
            };
        } else if seq < next {
            return;
        } else {
            for _ in next..seq {
                self.push(0);
            }
        }
        let distance = if previous == 0 || previous >= seq {
            0
        } else {
            u32::try_from(seq - previous).unwrap_or(0)
        };
        self.push(distance);
    }

    /// The first position covered and every link from there on, oldest first: what a checkpoint
    /// stores. [`CellLinks::from_parts`] rebuilds the same value.
    pub fn parts(&self) -> (u64, impl ExactSizeIterator<Item = u32> + '_) {
        let full = self.full.iter().flat_map(|chunk| chunk.iter().copied());
        let links = full.chain(self.tail.iter().copied());
        (self.base, Exact(links, self.len()))
    }

    /// The links of [`CellLinks::parts`] back in their layout: chunks start every `CHUNK`
    /// positions from `base`, as when they were recorded. `None` when there are more links than
    /// the window keeps.
    pub fn from_parts(base: u64, links: &[u32]) -> Option<CellLinks> {
        if links.len() as u64 >= CELL_LINK_WINDOW + CHUNK as u64 {
            return None;
        }
        let whole = links.len() / CHUNK * CHUNK;
        Some(CellLinks {
            base,
            full: links[..whole].chunks(CHUNK).map(Arc::from).collect(),
            tail: links[whole..].to_vec(),
        })
    }

    /// The chain ending at `newest`, oldest first, at most `limit` seqs. `newest` itself is always
    /// listed; the chain stops where a link left the window.
    pub fn chain(&self, newest: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut seq = newest;
        while seq != 0 && out.len() < limit {
            out.push(seq);
            let back = seq
                .checked_sub(self.base)
                .and_then(|i| self.get(usize::try_from(i).ok()?))
                .unwrap_or(0);
            seq = if back == 0 { 0 } else { seq - u64::from(back) };
        }
        out.reverse();
        out
    }
}

/// An iterator that knows its length (a chain of two does not say).
struct Exact<I>(I, usize);

impl<I: Iterator<Item = u32>> Iterator for Exact<I> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let item = self.0.next()?;
        self.1 -= 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator<Item = u32>> ExactSizeIterator for Exact<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_follow_links_oldest_first() {
        let mut l = CellLinks::default();
        l.record(5, 0);
        l.record(6, 0);
        l.record(7, 5);
        l.record(10, 7); // 8 and 9 never reached the projection
        assert_eq!(l.chain(10, 100), vec![5, 7, 10]);
        assert_eq!(l.chain(10, 2), vec![7, 10]);
        assert_eq!(l.chain(6, 100), vec![6]);
        assert_eq!(l.chain(0, 100), Vec::<u64>::new());
        // A replayed seq is not linked again.
        l.record(7, 6);
        assert_eq!(l.chain(10, 100), vec![5, 7, 10]);
    }

    #[test]
    fn old_links_leave_the_window() {
        let mut l = CellLinks::default();
        l.record(1, 0);
        l.record(2, 1);
        let far = 3 + CELL_LINK_WINDOW;
        l.record(far, 2);
        // The jump drops every link recorded before it; the direct link to 2 is still followed.
        assert_eq!(l.chain(far, 10), vec![2, far]);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn trimming_keeps_recent_links() {
        let mut l = CellLinks::default();
        let last = CELL_LINK_WINDOW + 3 * CHUNK as u64 + 3;
        for seq in 1..=last {
            l.record(seq, seq - 1);
        }
        assert!(l.len() as u64 <= CELL_LINK_WINDOW + CHUNK as u64);
        assert!(l.len() as u64 >= CELL_LINK_WINDOW);
        let chain = l.chain(last, 5);
        assert_eq!(chain, (last - 4..=last).collect::<Vec<_>>());
        // The walk stops at the window's start rather than guessing further back.
        let all = l.chain(last, usize::MAX);
        assert_eq!(*all.first().unwrap(), l.base - 1);
    }

    #[test]
    fn parts_rebuild_the_same_links_up_to_a_full_window() {
        let mut l = CellLinks::default();
        let last = CELL_LINK_WINDOW + CHUNK as u64 + 7;
        for seq in 1..=last {
            l.record(seq, seq.saturating_sub(3));
            if seq % (CELL_LINK_WINDOW / 2) == 0 || seq == last || seq == 5 {
                let (base, links) = l.parts();
                let links: Vec<u32> = links.collect();
                assert_eq!(
                    CellLinks::from_parts(base, &links),
                    Some(l.clone()),
                    "at {seq}"
                );
            }
        }
        let too_many = vec![0; (CELL_LINK_WINDOW + CHUNK as u64) as usize];
        assert_eq!(CellLinks::from_parts(1, &too_many), None);
    }

    proptest::proptest! {
        /// Within the window, chains follow exactly the recorded links, across chunk boundaries
        /// and gaps, whatever was cloned (published) in between.
        #[test]
        fn chains_match_a_map_of_links(
            steps in proptest::collection::vec((1u64..300, 0u64..400, proptest::bool::ANY), 1..60)
        ) {
            let mut links = CellLinks::default();
            let mut model = std::collections::HashMap::new();
            let mut snapshots = Vec::new();
            let mut seq = 0;
            for (gap, back, publish) in steps {
                seq += gap;
                let previous = if back == 0 { 0 } else { seq.saturating_sub(back) };
                links.record(seq, previous);
                model.insert(seq, previous);
                if publish {
                    snapshots.push((links.clone(), seq));
                }
            }
            let expected = |newest: u64| {
                let mut chain = vec![newest];
                while let Some(&p) = model.get(chain.last().unwrap()) {
                    if p == 0 || p < *model.keys().min().unwrap() {
                        if p != 0 {
                            chain.push(p);
                        }
                        break;
                    }
                    chain.push(p);
                }
                chain.reverse();
                chain
            };
            proptest::prop_assert_eq!(links.chain(seq, usize::MAX), expected(seq));
            for (snapshot, newest) in snapshots {
                proptest::prop_assert_eq!(snapshot.chain(newest, usize::MAX), expected(newest));
            }
        }
    }
}
