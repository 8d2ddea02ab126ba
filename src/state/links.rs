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
