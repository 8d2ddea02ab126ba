//! The ingest thread, the projection's only writer: rounds of batches → [`Ingestor`] → one
//! snapshot publish per round → frames committed to the ring → applied cursor advanced; and the
//! end of the boot replay marked on the snapshot.

#![allow(clippy::disallowed_methods, reason = "paces progress reports and memory release on the ingest thread, and times rounds")]

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::boot::BootProgress;
use super::Ingestor;
use crate::event::decode::DecodeError;
use crate::event::Family;
use crate::fanout::RingWriter;
use crate::log::TailBatch;
use crate::memory::{self, RELEASE_EVERY};
use crate::metrics::Metrics;
use crate::state::{Ignored, Publisher, Snapshot, State};

/// Most events applied between two snapshot publishes when batches queue up.
pub const MAX_ROUND_EVENTS: usize = 8192;

impl Ingestor {
    /// Hands this round's tallies to the metrics.
    fn flush(&mut self, m: &Metrics) {
        let t = std::mem::take(&mut self.tally);
        for (f, family) in Family::ALL.iter().enumerate() {
            if t.applied[f] > 0 {
                m.events("applied", family.as_str(), "", t.applied[f]);
            }
            for (r, why) in Ignored::ALL.iter().enumerate() {
                let n = t.ignored[r][f];
                if n > 0 {
                    let outcome = if why.is_failure() {
                        "failed"
                    } else {
                        "ignored"
                    };
                    m.events(outcome, family.as_str(), why.reason(), n);
                }
            }
        }
        for (i, reason) in DecodeError::REASONS.iter().enumerate() {
            if t.undecodable[i] > 0 {
                m.events("failed", "unknown", reason, t.undecodable[i]);
            }
        }
        if t.duplicate_seq > 0 {
            m.events("ignored", "unknown", "duplicate_seq", t.duplicate_seq);
        }
        m.ingest.batch_events.record(t.events as f64);
        m.ingest.cursor.set(self.cursor as f64);
    }
}

/// What the projection starts from: a checkpoint's state and seq, or an empty state at seq 0.
pub struct Start {
    pub state: State,
    /// Every event through this seq is in `state`; the tail continues after it.
    pub cursor: u64,
}

/// Starts the ingest thread. It waits for `start` (the boot decides it: a checkpoint or none),
/// and ends when the batch channel closes, or at once if `start` is dropped unsent.
///
/// The first batch that says the tail reached the log's end makes the snapshot published after
/// it `replayed`: the channel is ordered, so that snapshot holds every event the log had when
/// the tail first reached its end, which is at least everything it held at start.
pub fn spawn(
    start: oneshot::Receiver<Start>,
    mut batches: mpsc::Receiver<TailBatch>,
    publisher: Publisher,
    mut ring: RingWriter,
    applied: watch::Sender<u64>,
    boot: Arc<BootProgress>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cellos-ingest".into())
        .spawn(move || {
            let Ok(Start { state, cursor }) = start.blocking_recv() else {
                return;
            };
            ring.start_after(cursor);
            let mut ingestor = Ingestor::resume(state, cursor);
            if cursor > 0 {
                publisher.publish(ingestor.snapshot());
                applied.send_replace(cursor);
                metrics.ingest.cursor.set(cursor as f64);
            }
            let mut replayed = false;
            let mut last_progress = Instant::now();
            let mut last_release = Instant::now();
            while let Some(first) = batches.blocking_recv() {
                let started = Instant::now();
                let mut round = first.events.len();
                let mut caught_up = first.caught_up;
                for raw in &first.events {
                    ingestor.ingest(raw, &mut ring);
                }
                while round < MAX_ROUND_EVENTS {
                    let Ok(more) = batches.try_recv() else { break };
                    round += more.events.len();
                    caught_up |= more.caught_up;
                    for raw in &more.events {
                        ingestor.ingest(raw, &mut ring);
                    }
                }
                let finished_replay = !replayed && caught_up;
                if !replayed {
                    boot.add_events(round as u64);
                }
                replayed |= caught_up;
                // Order matters: the snapshot is visible before the cursor says it is, so a
                // writer woken by the cursor always finds its event in the snapshot (and a
                // request waiting for the replay finds it over).
                publisher.publish(Snapshot {
                    replayed,
                    ..ingestor.snapshot()
                });
                ring.commit();
                applied.send_if_modified(|c| {
                    let changed = *c != ingestor.cursor || finished_replay;
                    *c = ingestor.cursor;
                    changed
                });
                metrics.snapshot_published();
                ingestor.flush(&metrics);
                let idle = batches.is_empty() && last_release.elapsed() >= RELEASE_EVERY;
                if finished_replay || idle {
                    memory::release_after_burst();
                    last_release = Instant::now();
                }
                if finished_replay {
                    boot.finish(ingestor.cursor, &metrics);
                } else if !replayed {
                    boot.report(ingestor.cursor, &metrics, &mut last_progress);
                }
                metrics
                    .ingest
                    .batch_seconds
                    .record(started.elapsed().as_secs_f64());
            }
        })
}

/// A secret hash seed for the cell lookup, from the OS's random source (through std, which seeds
/// its hash maps from it): the core has no random source of its own.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::event::RawEvent;
    use crate::fanout::Ring;
    use crate::state::snapshot;

    fn raw(seq: u64) -> RawEvent {
        RawEvent {
            seq,
            subject: Arc::from("cellos.events.other.x"),
            payload: Bytes::from_static(b"{}"),
        }
    }

    /// The snapshot says `replayed` from the first batch that reached the log's end on, and the
    /// cursor's watchers are woken for it even when that batch moved no cursor.
    #[test]
    fn the_first_batch_at_the_logs_end_marks_the_replay_over() {
        let (publisher, reader) = snapshot::channel();
        let (_ring, writer) = Ring::new(1024, crate::fanout::DEFAULT_RING_BYTES);
        let (applied_tx, mut applied) = watch::channel(0u64);
        let (tx, rx) = mpsc::channel(4);
        let metrics = Metrics::new();
        let boot = Arc::new(BootProgress::default());
        let (start_tx, start) = oneshot::channel();
        let thread = spawn(
            start,
            rx,
            publisher,
            writer,
            applied_tx,
            boot.clone(),
            metrics.clone(),
        )
        .expect("ingest thread");
        start_tx
            .send(Start {
                state: State::default(),
                cursor: 0,
            })
            .ok()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let batch = |seqs: &[u64], caught_up| TailBatch {
                events: seqs.iter().copied().map(raw).collect(),
                caught_up,
            };
            tx.send(batch(&[1, 2, 3], false)).await.unwrap();
            applied.wait_for(|c| *c == 3).await.unwrap();
            assert!(!reader.load().replayed);
            applied.borrow_and_update();
            tx.send(batch(&[], true)).await.unwrap();
            applied.changed().await.unwrap();
            let snap = reader.load();
            assert!(snap.replayed && snap.cursor == 3);
            tx.send(batch(&[4], false)).await.unwrap();
            applied.wait_for(|c| *c == 4).await.unwrap();
            assert!(reader.load().replayed, "the replay stays over");
        });
        drop(tx);
        thread.join().unwrap();
        assert_eq!(boot.events(), 3, "only the replay's events count");
        let text = metrics.render();
        assert!(text.contains("cellos_boot_replaying 0"), "{text}");
    }
}
