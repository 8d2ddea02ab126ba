//! The checkpoint writer: a task that, every `--checkpoint-every-events` events or
//! `--checkpoint-every-secs` seconds (whichever comes first), takes the published snapshot (an
//! O(1) clone: the ingest thread never waits for it), encodes it on a blocking thread, stores it,
//! tells the log (retention may then drop what it holds) and keeps the newest [`KEEP`].
//!
//! Encoding costs CPU in proportion to the state (about 0.4 s per million cells here), on the
//! cores the ingest thread also needs. So however fast events come, the next checkpoint starts no
//! sooner than [`MIN_GAP_FACTOR`] times the last one's encoding time after it: at most a
//! twentieth of one core on average (during a long replay, for instance). Waiting for the store
//! costs no CPU and does not count.

#![allow(clippy::disallowed_methods, reason = "schedules checkpoints by elapsed time and backs off failed writes")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::format;
use super::store::{log_tag, name_of, CheckpointStore, KEEP};
use crate::log::{EventLog, LogIdentity};
use crate::memory;
use crate::metrics::Metrics;
use crate::state::{Reader, Snapshot};

/// The pause after a checkpoint, in multiples of the time its encoding took, before another may
/// start.
pub const MIN_GAP_FACTOR: u32 = 20;
/// How often the writer looks at the published snapshot.
const CHECK_PERIOD: Duration = Duration::from_millis(200);
/// First wait after a failed checkpoint; it doubles on each further failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between two attempts after failures.
const LAST_RETRY: Duration = Duration::from_secs(300);

/// When a checkpoint is due. A zero disables that trigger; both zero disables checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub every_events: u64,
    pub every: Duration,
}

impl Schedule {
    pub fn enabled(&self) -> bool {
        self.every_events > 0 || !self.every.is_zero()
    }

    /// Due once `events` were applied since the last checkpoint, or `elapsed` passed since it
    /// and at least one event was applied.
    pub fn due(&self, events: u64, elapsed: Duration) -> bool {
        (self.every_events > 0 && events >= self.every_events)
            || (!self.every.is_zero() && events > 0 && elapsed >= self.every)
    }
}

/// Where the boot left off: the log's identity and the seq of the checkpoint it started from (0:
/// none). The writer starts counting from there.
pub struct Begin {
    pub identity: LogIdentity,
    pub seq: u64,
}

pub struct Writer {
    pub store: Arc<dyn CheckpointStore>,
    pub log: Arc<dyn EventLog>,
    pub reader: Reader,
    pub metrics: Arc<Metrics>,
    pub schedule: Schedule,
    /// On stop, the time a last checkpoint may take (zero: none is written).
    pub final_wait: Duration,
}

/// Runs until `stop`, then writes a last checkpoint if anything was applied since the newest
/// (within `final_wait`). Does nothing before the boot said where it started.
pub async fn run(writer: Writer, begin: oneshot::Receiver<Begin>, stop: CancellationToken) {
    let begin = tokio::select! {
        b = begin => match b { Ok(b) => b, Err(_) => return },
        _ = stop.cancelled() => return,
    };
    let mut state = Progress {
        identity: begin.identity,
        last_seq: begin.seq,
        last_at: Instant::now(),
        last_took: Duration::ZERO,
        retry_at: None,
        failures: 0,
    };
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let resting = state.last_at.elapsed() < state.last_took * MIN_GAP_FACTOR;
        if resting || state.retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let snapshot = writer.reader.load();
        let events = snapshot.cursor.saturating_sub(state.last_seq);
        if writer.schedule.due(events, state.last_at.elapsed()) {
            writer.checkpoint(&mut state, snapshot).await;
        }
    }
    let snapshot = writer.reader.load();
    if snapshot.cursor > state.last_seq && !writer.final_wait.is_zero() {
        let last = writer.checkpoint(&mut state, snapshot);
        if tokio::time::timeout(writer.final_wait, last).await.is_err() {
            tracing::warn!("the last checkpoint at shutdown did not finish in time");
        }
    }
}

struct Progress {
    identity: LogIdentity,
    /// Seq of the newest checkpoint written (or booted from).
    last_seq: u64,
    /// When the newest checkpoint was written, and how long encoding it took.
    last_at: Instant,
    last_took: Duration,
    /// After a failure: no attempt before this.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Writer {
    async fn checkpoint(&self, progress: &mut Progress, snapshot: Arc<Snapshot>) {
        let seq = snapshot.cursor;
        let started = Instant::now();
        match self.write(&progress.identity, snapshot).await {
            Ok((size, encoding)) => {
                let seconds = started.elapsed().as_secs_f64();
                self.log.checkpointed(seq);
                let m = &self.metrics.checkpoint;
                m.set_newest(seq);
                m.last_bytes.set(size as f64);
                m.last_seconds.set(seconds);
                m.written.increment(1);
                tracing::info!(seq, bytes = size, seconds, "checkpoint written");
                *progress = Progress {
                    last_seq: seq,
                    last_at: Instant::now(),
                    last_took: encoding,
                    retry_at: None,
                    failures: 0,
                    identity: progress.identity.clone(),
                };
                self.keep_newest(&progress.identity).await;
            }
            Err(why) => {
                self.metrics.checkpoint.failures.increment(1);
                progress.failures += 1;
                let wait = FIRST_RETRY
                    .saturating_mul(1 << progress.failures.min(10).saturating_sub(1))
                    .min(LAST_RETRY);
                progress.retry_at = Some(Instant::now() + wait);
                tracing::error!(
                    seq,
                    error = %why,
                    retry_in_secs = wait.as_secs(),
                    store = %self.store.describe(),
                    "checkpoint failed; events after the newest checkpoint stay in the log"
                );
            }
        }
    }

    /// Encodes off the async workers and stores; the checkpoint's size and the encoding time.
    async fn write(
        &self,
        identity: &LogIdentity,
        snapshot: Arc<Snapshot>,
    ) -> Result<(usize, Duration), String> {
        let seq = snapshot.cursor;
        let name = name_of(seq, identity);
        let identity = identity.clone();
        let (bytes, encoding) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let bytes = format::encode(&identity, seq, &snapshot.state);
            let encoding = started.elapsed();
            drop(snapshot);
            // The encoder's buffers were this pool thread's, which may idle for long.
            memory::release_this_thread();
            (bytes, encoding)
        })
        .await
        .map_err(|e| e.to_string())?;
        let bytes = bytes.map_err(|e| e.to_string())?;
        let size = bytes.len();
        self.store.write(&name, bytes).await.map_err(|e| e.to_string())?;
        // The image (as large as the state's share of the heap) is freed: give it back.
        memory::release_after_burst();
        Ok((size, encoding))
    }

    /// Removes all but the newest [`KEEP`] checkpoints of this log (written by any server on
    /// this store), and every checkpoint of another log: a store serves one log, and those of a
    /// log that was replaced can never be used again.
    async fn keep_newest(&self, log: &LogIdentity) {
        let listed = match self.store.list().await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "listing checkpoints to remove old ones failed");
                return;
            }
        };
        let tag = log_tag(log);
        let (ours, others): (Vec<_>, Vec<_>) = listed.into_iter().partition(|s| s.log_tag == tag);
        for old in ours.iter().skip(KEEP).chain(&others) {
            if let Err(e) = self.store.remove(&old.name).await {
                tracing::warn!(checkpoint = %old.name, error = %e, "removing an old checkpoint failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_enough_events_or_time_with_events() {
        let s = Schedule {
            every_events: 100,
            every: Duration::from_secs(60),
        };
        assert!(s.enabled());
        assert!(!s.due(99, Duration::from_secs(59)));
        assert!(s.due(100, Duration::ZERO));
        assert!(s.due(1, Duration::from_secs(60)));
        assert!(!s.due(0, Duration::from_secs(600)), "nothing new: nothing to write");
        let events_only = Schedule {
            every: Duration::ZERO,
            ..s
        };
        assert!(!events_only.due(99, Duration::from_secs(10_000)));
        let time_only = Schedule {
            every_events: 0,
            ..s
        };
        assert!(!time_only.due(1_000_000, Duration::from_secs(59)));
        assert!(time_only.due(1, Duration::from_secs(60)));
        let off = Schedule {
            every_events: 0,
            every: Duration::ZERO,
        };
        assert!(!off.enabled() && !off.due(u64::MAX, Duration::MAX));
    }
}
