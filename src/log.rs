//! The event log: the one source of truth. `EventLog` is what the rest of the server needs from
//! it; `embedded` (redb, the default) and the JetStream log implement it.

cfg_server! {
    pub mod embedded;
    pub mod jetstream;
}

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::event::decode::MAX_EVENT_BYTES;
use crate::event::RawEvent;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most events one `read` returns.
pub const MAX_READ_EVENTS: usize = 4096;
/// A `read` stops adding events once it holds this many payload bytes (it always returns at least
/// one event when one exists).
pub const MAX_READ_BYTES: usize = 8 * 1024 * 1024;
/// Longest dedupe id accepted. Longer ids are refused, never cut, so two different ids can
/// never be taken for one another.
pub const MAX_DEDUPE_ID_BYTES: usize = 1024;
/// Appends with the same dedupe id within this window return the original seq.
pub const DEDUPE_WINDOW_MS: u64 = 120_000;

/// One event to append.
#[derive(Clone, Debug)]
pub struct Append {
    pub subject: String,
    pub payload: Bytes,
    /// The CloudEvent id: a retry with the same id inside the dedupe window appends nothing.
    pub dedupe_id: String,
}

/// Refuses a batch with an event or dedupe id over its bound (before anything is appended).
pub fn check_appends(events: &[Append]) -> Result<(), LogError> {
    for e in events {
        if e.payload.len() > MAX_EVENT_BYTES {
            return Err(LogError::TooLarge {
                size: e.payload.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        if e.dedupe_id.len() > MAX_DEDUPE_ID_BYTES {
            return Err(LogError::TooLarge {
                size: e.dedupe_id.len(),
                limit: MAX_DEDUPE_ID_BYTES,
            });
        }
    }
    Ok(())
}

/// The retained range of the log. `first > last` means nothing is retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bounds {
    /// Seq of the oldest retained event (`last + 1` when the log holds none).
    pub first: u64,
    /// Seq of the newest event ever appended (0 for a new log).
    pub last: u64,
}

/// Which log this is, so that a checkpoint is only ever continued on the log it was taken from.
/// `stream` names the log; `epoch` changes whenever a log of that name is created anew (JetStream:
/// the stream's creation time; embedded: an id drawn when its file was created).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogIdentity {
    pub stream: String,
    pub epoch: String,
}

impl std::fmt::Display for LogIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (epoch {})", self.stream, self.epoch)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("event log storage error: {0}")]
    Storage(String),
    /// The log's settings cannot work (found at start: a credentials file missing, say).
    #[error("event log settings: {0}")]
    Settings(String),
}

/// A batch handed from a tail: the events (ascending seq) and whether the tail had reached the
/// end of the log when it read them.
#[derive(Debug, Default)]
pub struct TailBatch {
    pub events: Vec<RawEvent>,
    pub caught_up: bool,
}

pub trait EventLog: Send + Sync + 'static {
    /// Appends events in order as one unit; returns their seqs (the original seq for a dedupe hit).
    /// Resolves once the events are durable.
    fn append(&self, events: Vec<Append>) -> BoxFuture<'_, Result<Vec<u64>, LogError>>;

    /// Up to `max` events with seq > `after`, ascending, bounded by [`MAX_READ_BYTES`].
    fn read(&self, after: u64, max: usize) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>>;

    /// The events with these seqs that are still retained, in the order given. At most
    /// [`MAX_READ_EVENTS`] seqs per call.
    fn get(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>>;

    /// The retained range right now.
    fn bounds(&self) -> BoxFuture<'_, Result<Bounds, LogError>>;

    /// An ordered tail of every event with seq > `after`: replay, then live, on one path.
    fn tail(self: Arc<Self>, after: u64) -> Box<dyn LogTail>;

    /// Which log this is (waits for the log like [`EventLog::bounds`]).
    fn identity(&self) -> BoxFuture<'_, Result<LogIdentity, LogError>>;

    /// Every event through `seq` is held by a durable checkpoint of the projection. Retention may
    /// drop an event only once this was said of it: a log that enforces retention itself (the
    /// embedded log) keeps every event after the newest checkpoint. Nothing to do for a log whose
    /// retention is its server's (JetStream).
    fn checkpointed(&self, _seq: u64) {}

    /// Whether the log is reachable right now (`Err` says why); `/readyz` reports it.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

pub trait LogTail: Send {
    /// The next events, at most `max`. Returns an empty batch with `caught_up` once when the tail
    /// reaches the end of the log, then waits for new events.
    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<TailBatch, LogError>>;
}
