//! The ingest core: decode → apply → frame, one event at a time, with no threads, channels or
//! clock. The ingest thread ([`spawn`]) drives it from batches the tailer task ([`run_tailer`])
//! reads from the log; the benchmarks and the fuzz targets drive it directly.
//!
//! The tailer feeds the thread through a bounded channel, so a slow projection slows reading the
//! log, never memory. Replay on boot and live ingest are one path.

use crate::event::decode::Decoder;
use crate::event::frame::framed;
use crate::event::{Family, Kind, RawEvent};
use crate::fanout::RingWriter;
use crate::state::{apply, Ignored, Outcome, Snapshot, State};

cfg_server! {
    pub mod boot;
    pub mod start;
    mod tail;
    mod thread;

    pub use tail::{
        not_ready_reason, run_tailer, sample_log_end, TailStatus, BATCH_QUEUE, MAX_BATCH_EVENTS,
    };
    pub use thread::{random_seed, spawn, Start, MAX_ROUND_EVENTS};
}

/// Per-round tallies, flushed to metrics at each publish.
#[derive(Default)]
struct Tally {
    applied: [u64; 3],
    ignored: [[u64; 3]; Ignored::ALL.len()],
    undecodable: [u64; 3],
    duplicate_seq: u64,
    events: u64,
}

fn family_index(f: Family) -> usize {
    match f {
        Family::Cell => 0,
        Family::Formation => 1,
        Family::Other => 2,
    }
}

/// Decode + apply + frame, without threads or channels: the ingest thread's core, also what the
/// benchmarks drive.
pub struct Ingestor {
    state: State,
    cursor: u64,
    decoder: Decoder,
    tally: Tally,
}

impl Default for Ingestor {
    fn default() -> Self {
        Ingestor {
            state: State::default(),
            cursor: 0,
            decoder: Decoder::new(),
            tally: Tally::default(),
        }
    }
}

impl Ingestor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from an empty state whose cell lookup hashes with `seed` (see
    /// [`State::with_hash_seed`]).
    pub fn with_hash_seed(seed: u64) -> Self {
        Ingestor {
            state: State::with_hash_seed(seed),
            ..Self::default()
        }
    }

    /// Continues from `state`, which holds every event through `cursor` (a checkpoint's).
    pub fn resume(state: State, cursor: u64) -> Self {
        Ingestor {
            state,
            cursor,
            ..Self::default()
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies one event and, when its payload is JSON, pushes its frame into the ring.
    /// Events at or below the cursor were already applied (a redelivery) and are skipped.
    pub fn ingest(&mut self, raw: &RawEvent, ring: &mut RingWriter) {
        if raw.seq <= self.cursor {
            self.tally.duplicate_seq += 1;
            return;
        }
        self.cursor = raw.seq;
        self.tally.events += 1;
        let decoded = self.decoder.decode(&raw.payload);
        let framed = framed(decoded.as_ref());
        match decoded {
            Ok(ev) => {
                let family = family_index(ev.kind.family());
                match apply(&mut self.state, raw.seq, &ev) {
                    Outcome::Applied => self.tally.applied[family] += 1,
                    Outcome::Ignored(why) => {
                        self.tally.ignored[why as usize][family] += 1;
                        if matches!(ev.kind, Kind::Formation(_)) {
                            tracing::debug!(
                                seq = raw.seq,
                                reason = why.reason(),
                                "formation event ignored"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                self.tally.undecodable[e.index()] += 1;
                tracing::debug!(seq = raw.seq, error = %e, "undecodable event skipped");
            }
        }
        if let Some(framed) = framed {
            ring.push(raw.seq, &raw.payload, raw.subject.clone(), framed.formation);
        }
    }

    /// The state and cursor to publish: an O(1) clone of the persistent maps. `replayed` is
    /// left false: only the log's tail knows where the log ended at start, so the ingest thread
    /// sets it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            cursor: self.cursor,
            state: self.state.clone(),
            replayed: false,
        }
    }
}
