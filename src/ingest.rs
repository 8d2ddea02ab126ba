//! The ingest thread, the projection's only writer: batches from the log tail → decode → apply →
//! one snapshot publish per round → frames into the ring → applied cursor advanced.
//!
//! The tailer task (async, at the log's edge) feeds it through a bounded channel, so a slow
//! projection slows reading the log, never memory. Replay on boot and live ingest are one path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::decode::{DecodeError, Decoder};
use crate::event::{Family, Kind, RawEvent};
use crate::fanout::RingWriter;
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::state::{apply, Ignored, Outcome, Publisher, Snapshot, State};

/// Most events the tailer asks the log for at once.
pub const MAX_BATCH_EVENTS: usize = 4096;
/// Batches buffered between the tailer and the ingest thread.
pub const BATCH_QUEUE: usize = 16;
/// Most events applied between two snapshot publishes when batches queue up.
pub const MAX_ROUND_EVENTS: usize = 8192;
/// How often the log's end is read (the `log_lag` gauge, and noticing a log that was reset).
const LOG_END_PERIOD: Duration = Duration::from_secs(1);

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
        let (frame, formation) = match self.decoder.decode(&raw.payload) {
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
                let formation = ev.formation_id.and_then(|f| Uuid::parse_str(f).ok());
                (true, formation)
            }
            Err(e) => {
                self.tally.undecodable[e.index()] += 1;
                tracing::debug!(seq = raw.seq, error = %e, "undecodable event skipped");
                // A non-object JSON value still embeds verbatim in a frame.
                (matches!(e, DecodeError::NotObject(_)), None)
            }
        };
        if frame {
            ring.push(raw.seq, &raw.payload, raw.subject.clone(), formation);
        }
    }

    /// The state and cursor to publish: an O(1) clone of the persistent maps.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            cursor: self.cursor,
            state: self.state.clone(),
        }
    }

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

/// Starts the ingest thread. It ends when the batch channel closes.
pub fn spawn(
    mut batches: mpsc::Receiver<Vec<RawEvent>>,
    publisher: Publisher,
    mut ring: RingWriter,
    applied: watch::Sender<u64>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cellos-ingest".into())
        .spawn(move || {
            let mut ingestor = Ingestor::new();
            while let Some(first) = batches.blocking_recv() {
                let started = Instant::now();
                let mut round = first.len();
                for raw in &first {
                    ingestor.ingest(raw, &mut ring);
                }
                while round < MAX_ROUND_EVENTS {
                    let Ok(more) = batches.try_recv() else { break };
                    round += more.len();
                    for raw in &more {
                        ingestor.ingest(raw, &mut ring);
                    }
                }
                // Order matters: the snapshot is visible before the cursor says it is, so a
                // writer woken by the cursor always finds its event in the snapshot.
                publisher.publish(ingestor.snapshot());
                ring.commit();
                applied.send_if_modified(|c| {
                    let changed = *c != ingestor.cursor;
                    *c = ingestor.cursor;
                    changed
                });
                metrics.snapshot_published();
                ingestor.flush(&metrics);
                metrics
                    .ingest
                    .batch_seconds
                    .record(started.elapsed().as_secs_f64());
            }
        })
}

/// Where the tail stands, for `/readyz`.
pub struct TailStatus {
    log_ok: AtomicBool,
    /// The seq the projection must reach to count as caught up (`u64::MAX` until the tail first
    /// reached the end of the log).
    ready_at: AtomicU64,
    /// Highest seq handed to the ingest thread.
    delivered: AtomicU64,
    /// The log's last seq when it was last seen below what had been delivered from it (a reset
    /// log); `u64::MAX` otherwise.
    log_reset_at: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Default for TailStatus {
    fn default() -> Self {
        TailStatus {
            log_ok: AtomicBool::new(false),
            ready_at: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
            log_reset_at: AtomicU64::new(u64::MAX),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

/// Why the server is not ready, if it is not.
pub fn not_ready_reason(status: &TailStatus, log: &dyn EventLog, cursor: u64) -> Option<String> {
    if let Err(why) = log.health() {
        return Some(format!("event log unreachable: {why}"));
    }
    let end = status.log_reset_at.load(Ordering::Acquire);
    if end != u64::MAX {
        return Some(format!(
            "the event log ends at seq {end}, before the applied seq {cursor}: it was reset or \
             replaced; restart the server to project it from the start"
        ));
    }
    if !status.log_ok.load(Ordering::Acquire) {
        let why = status
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "not connected yet".into());
        return Some(format!("event log unreachable: {why}"));
    }
    let target = status.ready_at.load(Ordering::Acquire);
    if target == u64::MAX {
        let delivered = status.delivered.load(Ordering::Acquire);
        return Some(format!(
            "replaying the event log: applied through seq {cursor}, read through {delivered}"
        ));
    }
    (cursor < target)
        .then(|| format!("replaying the event log: applied through seq {cursor} of {target}"))
}

/// Samples the log's end every [`LOG_END_PERIOD`] until `stop`: the `log_lag` gauge, and the
/// evidence `/readyz` needs to refuse a log that now ends before what was applied (a JetStream
/// stream deleted and recreated, or a NATS store lost). The tail alone would wait silently.
pub async fn sample_log_end(
    log: Arc<dyn EventLog>,
    status: Arc<TailStatus>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOG_END_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // `delivered` is read before asking for the end: everything delivered was appended
        // before that question, so an end below it means the log itself moved backwards.
        let delivered = status.delivered.load(Ordering::Acquire);
        let bounds = tokio::select! {
            b = log.bounds() => b,
            _ = stop.cancelled() => return,
        };
        if let Ok(b) = bounds {
            metrics.log_lag.set(b.last.saturating_sub(delivered) as f64);
            let reset = if b.last < delivered { b.last } else { u64::MAX };
            let previous = status.log_reset_at.swap(reset, Ordering::AcqRel);
            if reset != u64::MAX && previous == u64::MAX {
                tracing::error!(
                    log_end = b.last,
                    applied = delivered,
                    "the event log now ends before what was applied: it was reset or replaced; \
                     restart the server to project it from the start"
                );
            }
        }
    }
}

/// Reads the log from `after` forever (replay, then live) and hands batches to the ingest thread.
/// Log errors are retried with backoff from the same position: nothing is skipped or repeated.
pub async fn run_tailer(
    log: Arc<dyn EventLog>,
    after: u64,
    batches: mpsc::Sender<Vec<RawEvent>>,
    status: Arc<TailStatus>,
    stop: CancellationToken,
) {
    let mut tail = log.clone().tail(after);
    let mut backoff = Duration::from_millis(50);
    loop {
        let next = tokio::select! {
            next = tail.next(MAX_BATCH_EVENTS) => next,
            _ = stop.cancelled() => return,
        };
        match next {
            Ok(batch) => {
                status.log_ok.store(true, Ordering::Release);
                backoff = Duration::from_millis(50);
                if let Some(last) = batch.events.last() {
                    status.delivered.store(last.seq, Ordering::Release);
                }
                let delivered = status.delivered.load(Ordering::Acquire);
                if batch.caught_up && status.ready_at.load(Ordering::Acquire) == u64::MAX {
                    status.ready_at.store(delivered, Ordering::Release);
                }
                if !batch.events.is_empty() {
                    tokio::select! {
                        sent = batches.send(batch.events) => if sent.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                status.log_ok.store(false, Ordering::Release);
                if let Ok(mut last) = status.last_error.lock() {
                    *last = Some(e.to_string());
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event log tail failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
