//! Boot from a checkpoint: the newest one that reads, checks out and belongs to this log, or none
//! (then the whole retained log is replayed). A checkpoint that is damaged, of an unknown format
//! version, of another log, or ahead of the log's end is skipped with a warning and counted;
//! none is ever trusted without those checks, and none can crash the boot.

#![allow(clippy::disallowed_methods, reason = "times how long loading a checkpoint took, for the log line")]

use std::time::{Duration, Instant};

use super::format::{self, FormatError};
use super::store::{log_tag, CheckpointStore, Stored};
use crate::ingest::boot::BootProgress;
use crate::log::{Bounds, LogIdentity};
use crate::metrics::Metrics;
use crate::state::State;

/// Attempts at listing the store before booting without a checkpoint.
const LIST_ATTEMPTS: u32 = 5;

/// A checkpoint to start from.
pub struct Loaded {
    pub seq: u64,
    pub name: String,
    pub state: State,
}

/// Why a stored checkpoint was passed over.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("it is ahead of the log, which ends at seq {0}")]
    AheadOfLog(u64),
    #[error("it could not be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("it belongs to another log ({0})")]
    OtherLog(LogIdentity),
    #[error("its name says seq {named}, its header {inside}")]
    NameMismatch { named: u64, inside: u64 },
}

impl Skip {
    fn reason(&self) -> &'static str {
        match self {
            Skip::AheadOfLog(_) => "ahead_of_log",
            Skip::Unreadable(_) => "unreadable",
            Skip::Format(e) => e.reason(),
            Skip::OtherLog(_) => "other_log",
            Skip::NameMismatch { .. } => "inconsistent",
        }
    }
}

/// The newest usable checkpoint in `store` for the log `identity` whose retained range is
/// `bounds`, restored with `hash_seed`; `None` when there is none (or the store cannot be
/// listed).
pub async fn newest(
    store: &dyn CheckpointStore,
    identity: &LogIdentity,
    bounds: Bounds,
    hash_seed: u64,
    metrics: &Metrics,
    boot: &BootProgress,
) -> Option<Loaded> {
    let started = Instant::now();
    boot.set_phase(Some(format!("looking for a checkpoint in {}", store.describe())));
    let tag = log_tag(identity);
    let (listed, others): (Vec<_>, Vec<_>) = list(store)
        .await?
        .into_iter()
        .partition(|s| s.log_tag == tag);
    for other in &others {
        metrics.checkpoint_skipped("other_log");
        tracing::warn!(
            checkpoint = %other.name,
            store = %store.describe(),
            "checkpoint of another log skipped (its name says so); it is removed after the next checkpoint"
        );
    }
    for stored in listed {
        boot.set_phase(Some(format!(
            "loading checkpoint {} (the projection through seq {}), then replaying the log after it",
            stored.name, stored.seq
        )));
        match load(store, &stored, identity, bounds, hash_seed).await {
            Ok(state) => {
                let seconds = started.elapsed().as_secs_f64();
                metrics.checkpoint.load_seconds.set(seconds);
                tracing::info!(
                    checkpoint = %stored.name,
                    seq = stored.seq,
                    bytes = stored.size,
                    cells = state.cell_count(),
                    formations = state.formation_count(),
                    seconds,
                    "loaded the projection from a checkpoint"
                );
                return Some(Loaded {
                    seq: stored.seq,
                    name: stored.name,
                    state,
                });
            }
            Err(skip) => {
                metrics.checkpoint_skipped(skip.reason());
                tracing::warn!(
                    checkpoint = %stored.name,
                    store = %store.describe(),
                    reason = %skip,
                    "checkpoint skipped; trying an older one"
                );
            }
        }
    }
    None
}

async fn list(store: &dyn CheckpointStore) -> Option<Vec<Stored>> {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=LIST_ATTEMPTS {
        match store.list().await {
            Ok(listed) => return Some(listed),
            Err(e) if attempt == LIST_ATTEMPTS => {
                tracing::error!(
                    store = %store.describe(),
                    error = %e,
                    "cannot list checkpoints; replaying the whole retained log"
                );
            }
            Err(e) => {
                tracing::warn!(store = %store.describe(), error = %e, "listing checkpoints failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    None
}

async fn load(
    store: &dyn CheckpointStore,
    stored: &Stored,
    identity: &LogIdentity,
    bounds: Bounds,
    hash_seed: u64,
) -> Result<State, Skip> {
    if stored.seq > bounds.last {
        return Err(Skip::AheadOfLog(bounds.last));
    }
    let reading = Instant::now();
    let bytes = store
        .read(&stored.name)
        .await
        .map_err(|e| Skip::Unreadable(e.to_string()))?;
    tracing::debug!(
        checkpoint = %stored.name,
        bytes = bytes.len(),
        seconds = reading.elapsed().as_secs_f64(),
        "checkpoint read"
    );
    let (identity, named) = (identity.clone(), stored.seq);
    // Checking and restoring is CPU work (half a second per million cells): off the workers.
    let restored = tokio::task::spawn_blocking(move || {
        let opened = format::open(&bytes)?;
        let header = &opened.header;
        if header.log != identity {
            return Err(Skip::OtherLog(header.log.clone()));
        }
        if header.seq != named {
            return Err(Skip::NameMismatch {
                named,
                inside: header.seq,
            });
        }
        Ok(opened.restore(hash_seed)?)
    });
    restored
        .await
        .map_err(|e| Skip::Unreadable(e.to_string()))?
}

/// Events retention removed that the projection never saw: the log's first retained event is
/// past the one after `start` (the seq the projection starts from). `None` when nothing is lost.
pub fn lost_events(start: u64, bounds: Bounds) -> Option<(u64, u64)> {
    let first_kept = bounds.first.min(bounds.last.saturating_add(1));
    (first_kept > start.saturating_add(1)).then(|| (start + 1, first_kept - 1))
}

/// Makes the loss found at boot loud: an error line, the `cellos_boot_lost_events` gauge and a
/// warning that `/readyz` shows.
pub fn report_loss(
    start: u64,
    bounds: Bounds,
    metrics: &Metrics,
    warn: impl FnOnce(String),
) -> Option<u64> {
    let (from, to) = lost_events(start, bounds)?;
    let count = to - from + 1;
    metrics.checkpoint.lost_events.set(count as f64);
    let what = if start == 0 {
        "no checkpoint holds them".to_owned()
    } else {
        format!("the newest usable checkpoint holds events through seq {start}")
    };
    let warning = format!(
        "events {from} to {to} ({count}) were removed by the log's retention and {what}: the \
         projection served does not include them"
    );
    tracing::error!(from, to, count, "{warning}");
    warn(warning);
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_what_retention_removed_after_the_start() {
        let b = |first, last| Bounds { first, last };
        assert_eq!(lost_events(0, b(1, 10)), None);
        assert_eq!(lost_events(0, b(1, 0)), None, "an empty new log");
        assert_eq!(lost_events(0, b(5, 10)), Some((1, 4)));
        assert_eq!(lost_events(7, b(5, 10)), None);
        assert_eq!(lost_events(4, b(5, 10)), None);
        assert_eq!(lost_events(3, b(5, 10)), Some((4, 4)));
        // Nothing retained: everything after the start up to the last seq is gone.
        assert_eq!(lost_events(3, b(11, 10)), Some((4, 10)));
        assert_eq!(lost_events(10, b(11, 10)), None);
    }
}
