//! Per-cell event chains: for each log position, how far back the previous event naming the same
//! cell is. A cell's newest event seq plus these links list its events without a per-cell list.
//!
//! Appending is O(1) into a persistent vector (the tail chunk is the only one copied after a
//! publish), which keeps the per-cell index off the hot path of the projection's maps.

use imbl::Vector;

/// Log positions the links cover: older links are dropped, so a chain stops at an event more than
/// this many positions behind the newest (4 bytes per position: at most 16 MiB).
pub const CELL_LINK_WINDOW: u64 = 1 << 22;
/// Links are dropped from the front this many at a time (amortizes the split).
const TRIM_STEP: u64 = 1 << 16;

/// `back[i]` belongs to seq `base + i`: the distance to the previous event naming the same cell,
/// 0 when there is none (or the event names no cell, or the distance does not fit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellLinks {
    base: u64,
    back: Vector<u32>,
}

impl CellLinks {
    /// Records the event at `seq`, whose cell's previous event is `previous` (0: none). Seqs only
    /// grow; a seq at or below one already recorded is not linked. Gaps (events that never reach
    /// the projection, or holes in the log) are filled with "no link".
    pub fn record(&mut self, seq: u64, previous: u64) {
        let next = self.base + self.back.len() as u64;
        if self.back.is_empty() || seq - next.min(seq) >= CELL_LINK_WINDOW {
            // First event, or a jump past the whole window: nothing recorded so far is reachable.
            self.back = Vector::new();
            self.base = seq;
        } else if seq < next {
            return;
        } else {
            for _ in next..seq {
                self.back.push_back(0);
            }
        }
        let distance = if previous == 0 || previous >= seq {
            0
        } else {
            u32::try_from(seq - previous).unwrap_or(0)
        };
        self.back.push_back(distance);
        if self.back.len() as u64 >= CELL_LINK_WINDOW + TRIM_STEP {
            self.back = self.back.skip(TRIM_STEP as usize);
            self.base += TRIM_STEP;
        }
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
                .and_then(|i| self.back.get(usize::try_from(i).ok()?))
                .copied()
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
        assert_eq!(l.back.len(), 1);
    }

    #[test]
    fn trimming_keeps_recent_links() {
        let mut l = CellLinks::default();
        let last = CELL_LINK_WINDOW + TRIM_STEP + 3;
        for seq in 1..=last {
            l.record(seq, seq - 1);
        }
        assert!((l.back.len() as u64) < CELL_LINK_WINDOW + TRIM_STEP);
        let chain = l.chain(last, 5);
        assert_eq!(chain, (last - 4..=last).collect::<Vec<_>>());
        // The walk stops at the window's start rather than guessing further back.
        let all = l.chain(last, usize::MAX);
        assert_eq!(*all.first().unwrap(), l.base - 1);
    }
}
