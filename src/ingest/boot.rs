//! The boot replay: how far the projection is from the end the log had at start, for the 503s
//! of reads and writes that arrive meanwhile, `/readyz`, the metrics and the progress log.
//!
//! Whether the replay is over is not decided here: the ingest thread marks the first snapshot
//! that holds everything the tail read before it first reached the log's end
//! ([`crate::state::Snapshot::replayed`]), so a response checks the very snapshot it serves.
//! This only reports.

#![allow(clippy::disallowed_methods, reason = "reports the boot replay's progress and rate")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Shortest time between two progress lines in the log while the replay runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Figures of the boot replay, shared by the tail (the target), the ingest thread (the events)
/// and the request side (the 503 detail).
pub struct BootProgress {
    started: Instant,
    /// The log's last seq as first read after start (`u64::MAX` until then).
    target: AtomicU64,
    /// Events the ingest thread applied while replaying.
    events: AtomicU64,
    /// What the boot does before the replay (finding and loading a checkpoint), while it does.
    phase: Mutex<Option<String>>,
    /// What an operator must know about the projection served, for `/readyz` (events retention
    /// dropped before a checkpoint held them).
    warnings: Mutex<Vec<String>>,
}

impl Default for BootProgress {
    fn default() -> Self {
        BootProgress {
            started: Instant::now(),
            target: AtomicU64::new(u64::MAX),
            events: AtomicU64::new(0),
            phase: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
        }
    }
}

impl BootProgress {
    /// Records where the log ended when it was first reached; later calls change nothing.
    pub fn set_target(&self, last: u64, metrics: &Metrics) {
        let first = self
            .target
            .compare_exchange(u64::MAX, last, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            metrics.boot.target.set(last as f64);
            tracing::info!(target_seq = last, "boot replay: the event log ends at seq {last}");
        }
    }

    /// The log's end at start, once known.
    pub fn target(&self) -> Option<u64> {
        let t = self.target.load(Ordering::Acquire);
        (t != u64::MAX).then_some(t)
    }

    /// Counts events applied during the replay.
    pub fn add_events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.events() as f64 / secs
        } else {
            0.0
        }
    }

    /// Says what the boot is doing before the replay starts (`None`: the replay runs).
    pub fn set_phase(&self, phase: Option<String>) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    /// Adds a lasting warning about the projection served (see `/readyz`).
    pub fn warn(&self, warning: String) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(warning);
        }
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// What a request refused during the replay is told.
    pub fn detail(&self, cursor: u64) -> String {
        if let Some(phase) = self.phase.lock().ok().and_then(|p| p.clone()) {
            return format!(
                "the projection is replaying the event log after a start: {phase}; retry shortly"
            );
        }
        match self.target() {
            Some(target) => format!(
                "the projection is replaying the event log after a start: applied through seq \
                 {cursor} of {target}; retry shortly"
            ),
            None => format!(
                "the projection is replaying the event log after a start: applied through seq \
                 {cursor}, the log's end is not known yet (the log is not reachable yet); retry \
                 shortly"
            ),
        }
    }

    /// Updates the gauges and, at most every [`PROGRESS_EVERY`], logs a progress line. Called by
    /// the ingest thread after each round of the replay; `last_line` is its own memory of when
    /// it last logged.
    pub fn report(&self, cursor: u64, metrics: &Metrics, last_line: &mut Instant) {
        let m = &metrics.boot;
        m.events.set(self.events() as f64);
        m.seconds.set(self.elapsed().as_secs_f64());
        if last_line.elapsed() >= PROGRESS_EVERY {
            *last_line = Instant::now();
            tracing::info!(
                applied_seq = cursor,
                target_seq = self.target(),
                events = self.events(),
                events_per_sec = self.rate() as u64,
                "boot replay in progress"
            );
        }
    }

    /// The replay is over: final gauges and one line.
    pub fn finish(&self, cursor: u64, metrics: &Metrics) {
        let m = &metrics.boot;
        m.replaying.set(0.0);
        m.events.set(self.events() as f64);
        m.seconds.set(self.elapsed().as_secs_f64());
        tracing::info!(
            applied_seq = cursor,
            events = self.events(),
            seconds = self.elapsed().as_secs_f64(),
            events_per_sec = self.rate() as u64,
            "boot replay finished; serving the projection"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_first_end_seen_and_the_detail_says_how_far() {
        let m = Metrics::new();
        let b = BootProgress::default();
        assert_eq!(b.target(), None);
        assert!(b.detail(7).contains("applied through seq 7, the log's end is not known yet"));
        b.set_target(100, &m);
        b.set_target(200, &m);
        assert_eq!(b.target(), Some(100));
        assert!(b.detail(7).contains("applied through seq 7 of 100"));
        b.add_events(3);
        b.add_events(4);
        assert_eq!(b.events(), 7);
        b.set_phase(Some("loading checkpoint checkpoint-7".into()));
        assert_eq!(
            b.detail(0),
            "the projection is replaying the event log after a start: loading checkpoint \
             checkpoint-7; retry shortly"
        );
        b.set_phase(None);
        assert!(b.detail(7).contains("applied through seq 7 of 100"));
        assert!(b.warnings().is_empty());
        b.warn("events 1 to 2 (2) were removed".into());
        assert_eq!(b.warnings(), ["events 1 to 2 (2) were removed"]);
    }
}
