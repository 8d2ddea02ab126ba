//! The tailer task, at the log's edge: reads the log from the applied cursor (replay, then live)
//! and hands batches to the ingest thread; and where the tail stands, for `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::boot::BootProgress;
use crate::log::{EventLog, LogError, TailBatch};
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// Most events the tailer asks the log for at once.
pub const MAX_BATCH_EVENTS: usize = 4096;
/// Batches buffered between the tailer and the ingest thread.
pub const BATCH_QUEUE: usize = 16;
/// Longest pause between two attempts at reading a failing log: an outage is noticed to be over
/// within about this long.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often the log's end is read (the `log_lag` gauge, and noticing a log that was reset).
const LOG_END_PERIOD: Duration = Duration::from_secs(1);

/// Where the tail stands, for `/readyz`.
pub struct TailStatus {
    log_ok: AtomicBool,
    /// The tail has told the ingest thread that it reached the end of the log once.
    reached_end: AtomicBool,
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
            reached_end: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            log_reset_at: AtomicU64::new(u64::MAX),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

impl TailStatus {
    /// The log failed: `/readyz` says why until it works again.
    pub fn failed(&self, error: &LogError) {
        self.log_ok.store(false, Ordering::Release);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }
}

/// Why the server is not ready, if it is not: the log is unreachable or was reset, or the
/// projection (`snapshot`) is still replaying it.
pub fn not_ready_reason(
    status: &TailStatus,
    log: &dyn EventLog,
    snapshot: &Snapshot,
    boot: &BootProgress,
) -> Option<String> {
    let cursor = snapshot.cursor;
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
    (!snapshot.replayed).then(|| {
        let delivered = status.delivered.load(Ordering::Acquire);
        format!("{} (read through {delivered})", boot.detail(cursor))
    })
}

/// Samples the log's end every `LOG_END_PERIOD` (1 s) until `stop`: the `log_lag` gauge, and the
/// evidence `/readyz` needs to refuse a log that now ends before what was applied (a JetStream
/// stream deleted and recreated, or a NATS store lost). The tail alone would wait silently.
///
/// Its first successful sample is also the boot replay's target (the log's end at start).
pub async fn sample_log_end(
    log: Arc<dyn EventLog>,
    status: Arc<TailStatus>,
    boot: Arc<BootProgress>,
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
            boot.set_target(b.last, &metrics);
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
/// The first time the tail reaches the log's end, that batch goes to the ingest thread even when
/// empty: it marks the end of the boot replay.
pub async fn run_tailer(
    log: Arc<dyn EventLog>,
    after: u64,
    batches: mpsc::Sender<TailBatch>,
    status: Arc<TailStatus>,
    boot: Arc<BootProgress>,
    metrics: Arc<Metrics>,
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
            Ok(mut batch) => {
                status.log_ok.store(true, Ordering::Release);
                backoff = Duration::from_millis(50);
                if let Some(last) = batch.events.last() {
                    status.delivered.store(last.seq, Ordering::Release);
                }
                // Only the first end matters to the ingest thread.
                batch.caught_up &= !status.reached_end.load(Ordering::Acquire);
                if batch.caught_up {
                    status.reached_end.store(true, Ordering::Release);
                    boot.set_target(status.delivered.load(Ordering::Acquire), &metrics);
                }
                if !batch.events.is_empty() || batch.caught_up {
                    tokio::select! {
                        sent = batches.send(batch) => if sent.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                status.failed(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event log tail failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}
