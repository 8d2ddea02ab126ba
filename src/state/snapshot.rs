//! Immutable snapshots of the projection, published by the one writer and read without locks.
//!
//! A snapshot carries the state and the cursor (the seq of the last event applied to that state)
//! together, so a response can never show a cursor its state does not include; and whether it
//! already holds everything the log held at start, so a response can never come from a
//! projection still replaying.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::State;

/// What readers see: the state after applying every event up to and including `cursor`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cursor: u64,
    pub state: State,
    /// The state includes every event the log held when this process started (the boot replay
    /// is over). Once true it stays true in every later snapshot.
    pub replayed: bool,
}

/// The publishing side. Deliberately not `Clone`: exactly one exists, and it moves into the
/// ingest thread, which makes that thread the only writer.
///
/// The type is reachable (this compiles) and not `Clone` (the next does not):
/// ```
/// fn moves(x: cellos_server::state::Publisher) -> cellos_server::state::Publisher { x }
/// ```
/// ```compile_fail
/// fn is_clone<T: Clone>() {}
/// is_clone::<cellos_server::state::Publisher>();
/// ```
pub struct Publisher {
    cell: Arc<ArcSwap<Snapshot>>,
}

/// The reading side: cheap to clone, never blocks, never blocks the writer.
#[derive(Clone)]
pub struct Reader {
    cell: Arc<ArcSwap<Snapshot>>,
}

/// A publisher and its readers, starting from the empty state at cursor 0.
pub fn channel() -> (Publisher, Reader) {
    let cell = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    (Publisher { cell: cell.clone() }, Reader { cell })
}

impl Publisher {
    pub fn publish(&self, snapshot: Snapshot) {
        self.cell.store(Arc::new(snapshot));
    }

    pub fn reader(&self) -> Reader {
        Reader {
            cell: self.cell.clone(),
        }
    }
}

impl Reader {
    /// One atomic load. Hold the result for as long as the response needs one consistent view.
    pub fn load(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    /// The cheapest possible read, for hot paths that only peek.
    pub fn peek<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.cell.load())
    }
}
