//! The heap: the global allocator ([`Allocator`]), and returning freed memory to the OS after a
//! burst of work, so that the resident size follows the live state rather than the peak.
//!
//! The allocator (mimalloc) keeps the pages a thread freed in that thread's heap, and hands the
//! emptied ones back to the OS only when that thread calls into it again. After the boot replay
//! the threads that did the work (the ingest thread, the runtime's workers that read the log) go
//! quiet, so what they freed stayed resident: measured at 10^6 cells, about 50 MiB above the live
//! heap with transparent huge pages off, 60–120 MiB with them on (BENCHMARKS.md, "Memory"; the
//! heap is built without them, see Cargo.toml).
//!
//! So the ingest thread, when a burst ends (the replay reaching the log's end, or the thread
//! about to wait for events, at most once per [`RELEASE_EVERY`]), returns its own free pages and
//! raises an epoch; every runtime worker returns its own the next time it parks with an epoch it
//! has not seen ([`on_worker_park`], installed by `main`). A checkpoint does the same once its
//! image, as large as the state's share of the heap, is written and freed. A release costs tens
//! of microseconds; at most one per thread per [`RELEASE_EVERY`] and per checkpoint.

mod allocator;

pub use allocator::Allocator;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Fewest time between two releases the ingest thread asks for outside the replay's end.
pub const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// Raised by each release the ingest thread asks for.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The newest epoch this thread released memory for.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Returns the calling thread's free pages now, and asks every runtime worker to do the same the
/// next time it parks.
pub fn release_after_burst() {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    SEEN.with(|seen| seen.set(epoch));
    release_this_thread();
}

/// The runtime's `on_thread_park` hook: one relaxed load, and a release when the ingest thread
/// asked for one since this worker's last.
pub fn on_worker_park() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    SEEN.with(|seen| {
        if seen.get() != epoch {
            seen.set(epoch);
            release_this_thread();
        }
    });
}

/// Returns the calling thread's free pages now (for threads that are not runtime workers, such
/// as the blocking pool's, after a large piece of work).
#[allow(unsafe_code)]
pub fn release_this_thread() {
    // SAFETY: `mi_collect` has no preconditions. It frees the calling thread's unused pages and
    // changes no live allocation, from any thread, at any time, and also when mimalloc is not
    // the global allocator (tests): it then only tidies mimalloc's own, empty, heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_releases_once_per_epoch() {
        let before = EPOCH.load(Ordering::Relaxed);
        std::thread::spawn(|| {
            on_worker_park();
            assert_eq!(SEEN.with(Cell::get), EPOCH.load(Ordering::Relaxed));
        })
        .join()
        .unwrap();
        release_after_burst();
        assert!(EPOCH.load(Ordering::Relaxed) > before);
        assert_eq!(SEEN.with(Cell::get), EPOCH.load(Ordering::Relaxed));
        let _allocated_and_freed = vec![0u8; 1 << 20];
        on_worker_park();
    }
}
