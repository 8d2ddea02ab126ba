//! The embedded durable log: redb under `CELLOS_DATA_DIR`, so `cargo run` needs nothing else.
//!
//! One writer thread owns all writes and commits every pending append in one transaction (group
//! commit: concurrent appends share one fsync). An append is acknowledged only after its commit
//! returned, so it survives `kill -9` and power loss. Reads are redb read transactions on the
//! blocking pool and never wait for the writer.

#![allow(clippy::disallowed_methods, reason = "the wall clock injected into retention, the log's random id at creation, and a drain deadline at close")]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    check_appends, Append, Bounds, BoxFuture, EventLog, LogError, LogIdentity, LogTail, TailBatch,
    DEDUPE_WINDOW_MS, MAX_READ_BYTES, MAX_READ_EVENTS,
};
use crate::event::RawEvent;

/// seq → record (see [`encode_record`]).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// dedupe id → (seq, append time in ms).
const DEDUPE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("dedupe");
/// Small counters: `last_seq`, `dedupe_floor` (first seq whose dedupe entry may still be live),
/// and the log's identity: `log_id` (random) and `created_ms`, set when the file is first opened.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The stream name of the embedded log in checkpoints' identity.
pub const STREAM_NAME: &str = "embedded";

/// Append requests waiting for the writer thread. A full queue makes appenders wait (backpressure).
const WRITE_QUEUE: usize = 1024;
/// Most append requests (each up to 1000 events) folded into one commit.
const MAX_GROUP: usize = 256;
/// Most expired events or dedupe entries removed per commit, so retention work stays bounded.
const MAX_PRUNE_PER_COMMIT: usize = 4096;
/// How long closing the log waits for reads still running on blocking threads.
const READS_DRAIN: Duration = Duration::from_secs(10);

/// Retention of the embedded log, enforced at each commit.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Events older than this are removed (0 = keep forever).
    pub max_age: Duration,
    /// At most this many events are kept (0 = no limit).
    pub max_events: u64,
    /// Never remove an event after the newest checkpoint ([`EventLog::checkpointed`]), whatever
    /// its age or the count: set when the server writes checkpoints, so that retention cannot
    /// take events the projection has not saved. Until the first checkpoint, nothing is removed.
    pub keep_after_checkpoint: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(90 * 24 * 3600),
            max_events: 0,
            keep_after_checkpoint: false,
        }
    }
}

/// Wall clock in ms since the epoch. Injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

struct WriteRequest {
    events: Vec<Append>,
    reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
}

pub struct EmbeddedLog {
    db: Arc<Database>,
    identity: LogIdentity,
    /// Highest seq retention may remove (the newest checkpoint's, see [`Retention`]).
    removable_through: Arc<AtomicU64>,
    writes: mpsc::Sender<WriteRequest>,
    /// (first retained, last) after the latest commit.
    bounds: watch::Receiver<Bounds>,
    writer: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

fn storage<E: std::fmt::Display>(e: E) -> LogError {
    LogError::Storage(e.to_string())
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path, retention: Retention, clock: Clock) -> Result<EmbeddedLog, LogError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let db = Database::create(dir.join("events.redb")).map_err(storage)?;
        let db = Arc::new(db);
        let identity = {
            let tx = db.begin_write().map_err(storage)?;
            tx.open_table(EVENTS).map_err(storage)?;
            tx.open_table(DEDUPE).map_err(storage)?;
            let identity = {
                let mut meta = tx.open_table(META).map_err(storage)?;
                let mut get_or_set = |key: &str, new: u64| -> Result<u64, LogError> {
                    if let Some(v) = meta.get(key).map_err(storage)? {
                        return Ok(v.value());
                    }
                    meta.insert(key, new).map_err(storage)?;
                    Ok(new)
                };
                let id = get_or_set("log_id", uuid::Uuid::new_v4().as_u64_pair().0)?;
                let created = get_or_set("created_ms", clock())?;
                LogIdentity {
                    stream: STREAM_NAME.into(),
                    epoch: format!("{created}-{id:016x}"),
                }
            };
            tx.commit().map_err(storage)?;
            identity
        };
        let removable_through = Arc::new(AtomicU64::new(if retention.keep_after_checkpoint {
            0
        } else {
            u64::MAX
        }));
        let writer_floor = removable_through.clone();
        let initial = read_bounds(&db)?;
        let (bounds_tx, bounds_rx) = watch::channel(initial);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let writer_db = db.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = commits.clone();
        let writer = std::thread::Builder::new()
            .name("cellos-log-writer".into())
            .spawn(move || {
                writer_loop(
                    writer_db,
                    queue,
                    bounds_tx,
                    Pruning {
                        retention,
                        removable_through: writer_floor,
                    },
                    clock,
                    &writer_commits,
                )
            })
            .map_err(storage)?;
        Ok(EmbeddedLog {
            db,
            identity,
            removable_through,
            writes,
            bounds: bounds_rx,
            writer: Some(writer),
            commits,
        })
    }

    /// Transactions committed since open (each one fsync; many appends can share one).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn read_blocking(db: &Database, after: u64, max: usize) -> Result<Vec<RawEvent>, LogError> {
        let tx = db.begin_read().map_err(storage)?;
        let table = tx.open_table(EVENTS).map_err(storage)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = after.saturating_add(1);
        for item in table.range(start..).map_err(storage)? {
            if out.len() >= max || (bytes >= MAX_READ_BYTES && !out.is_empty()) {
                break;
            }
            let (k, v) = item.map_err(storage)?;
            let (subject, payload) = decode_record(v.value())?;
            bytes += payload.len();
            out.push(RawEvent {
                seq: k.value(),
                subject: Arc::from(subject),
                payload: Bytes::copy_from_slice(payload),
            });
        }
        Ok(out)
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Closing the queue stops the writer; joining it releases the database file before the
        // owner of this log returns, so the same directory can be opened again at once.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.writes, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // A read whose caller went away still runs to its end on a blocking thread, holding the
        // database. Reads are bounded (one transaction, at most `MAX_READ_EVENTS`), so waiting
        // for them is short; the bound only guards against a stuck disk.
        let deadline = Instant::now() + READS_DRAIN;
        while Arc::strong_count(&self.db) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl EventLog for EmbeddedLog {
    fn append(&self, events: Vec<Append>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            check_appends(&events)?;
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, answer) = oneshot::channel();
            self.writes
                .send(WriteRequest { events, reply })
                .await
                .map_err(|_| LogError::Unavailable("log writer stopped".into()))?;
            answer
                .await
                .map_err(|_| LogError::Unavailable("log writer stopped".into()))?
        })
    }

    fn read(&self, after: u64, max: usize) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        let db = self.db.clone();
        let max = max.clamp(1, MAX_READ_EVENTS);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::read_blocking(&db, after, max))
                .await
                .map_err(storage)?
        })
    }

    fn get(&self, mut seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        let db = self.db.clone();
        seqs.truncate(MAX_READ_EVENTS);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let tx = db.begin_read().map_err(storage)?;
                let table = tx.open_table(EVENTS).map_err(storage)?;
                let mut out = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    if let Some(v) = table.get(seq).map_err(storage)? {
                        let (subject, payload) = decode_record(v.value())?;
                        out.push(RawEvent {
                            seq,
                            subject: Arc::from(subject),
                            payload: Bytes::copy_from_slice(payload),
                        });
                    }
                }
                Ok(out)
            })
            .await
            .map_err(storage)?
        })
    }

    fn bounds(&self) -> BoxFuture<'_, Result<Bounds, LogError>> {
        let b = *self.bounds.borrow();
        Box::pin(async move { Ok(b) })
    }

    fn identity(&self) -> BoxFuture<'_, Result<LogIdentity, LogError>> {
        let identity = self.identity.clone();
        Box::pin(async move { Ok(identity) })
    }

    fn checkpointed(&self, seq: u64) {
        // Only ever raised: an older checkpoint said later does not bring removed events back.
        self.removable_through.fetch_max(seq, Ordering::AcqRel);
    }

    fn tail(self: Arc<Self>, after: u64) -> Box<dyn LogTail> {
        let changes = self.bounds.clone();
        Box::new(EmbeddedTail {
            log: self,
            after,
            changes,
            idle_reported: false,
        })
    }
}

struct EmbeddedTail {
    log: Arc<EmbeddedLog>,
    after: u64,
    changes: watch::Receiver<Bounds>,
    idle_reported: bool,
}

impl LogTail for EmbeddedTail {
    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<TailBatch, LogError>> {
        Box::pin(async move {
            loop {
                // Mark the current value seen before reading, so an append that commits after
                // the read wakes the wait below instead of being missed.
                self.changes.borrow_and_update();
                let events = self.log.read(self.after, max).await?;
                if let Some(last) = events.last() {
                    self.after = last.seq;
                    self.idle_reported = false;
                    let caught_up = events.len() < max.min(MAX_READ_EVENTS)
                        && self.changes.borrow().last <= self.after;
                    return Ok(TailBatch { events, caught_up });
                }
                if !self.idle_reported {
                    self.idle_reported = true;
                    return Ok(TailBatch {
                        events: Vec::new(),
                        caught_up: true,
                    });
                }
                if self.changes.changed().await.is_err() {
                    return Err(LogError::Unavailable("log closed".into()));
                }
            }
        })
    }
}

/// Record layout: subject length (u32 LE), subject, dedupe id length (u32 LE), dedupe id,
/// append time (u64 LE ms), payload.
fn encode_record(out: &mut Vec<u8>, e: &Append, now_ms: u64) {
    out.clear();
    out.extend_from_slice(&(e.subject.len() as u32).to_le_bytes());
    out.extend_from_slice(e.subject.as_bytes());
    out.extend_from_slice(&(e.dedupe_id.len() as u32).to_le_bytes());
    out.extend_from_slice(e.dedupe_id.as_bytes());
    out.extend_from_slice(&now_ms.to_le_bytes());
    out.extend_from_slice(&e.payload);
}

struct Record<'a> {
    subject: &'a str,
    dedupe_id: &'a str,
    time_ms: u64,
    payload: &'a [u8],
}

fn take(v: &[u8], at: usize, n: usize) -> Option<&[u8]> {
    v.get(at..at.checked_add(n)?)
}

fn split_record(v: &[u8]) -> Option<Record<'_>> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(take(v, at, 4)?.try_into().ok()?) as usize)
    };
    let slen = u32_at(0)?;
    let subject = std::str::from_utf8(take(v, 4, slen)?).ok()?;
    let ilen = u32_at(4 + slen)?;
    let id_at = 8 + slen;
    let dedupe_id = std::str::from_utf8(take(v, id_at, ilen)?).ok()?;
    let t_at = id_at + ilen;
    let time_ms = u64::from_le_bytes(take(v, t_at, 8)?.try_into().ok()?);
    Some(Record {
        subject,
        dedupe_id,
        time_ms,
        payload: v.get(t_at + 8..)?,
    })
}

fn decode_record(v: &[u8]) -> Result<(&str, &[u8]), LogError> {
    split_record(v)
        .map(|r| (r.subject, r.payload))
        .ok_or_else(|| LogError::Storage("corrupt event record".into()))
}

fn read_bounds(db: &Database) -> Result<Bounds, LogError> {
    let tx = db.begin_read().map_err(storage)?;
    let meta = tx.open_table(META).map_err(storage)?;
    let last = meta
        .get("last_seq")
        .map_err(storage)?
        .map_or(0, |v| v.value());
    let events = tx.open_table(EVENTS).map_err(storage)?;
    let first = events
        .first()
        .map_err(storage)?
        .map_or(last + 1, |(k, _)| k.value());
    Ok(Bounds { first, last })
}

/// What retention may remove at a commit.
struct Pruning {
    retention: Retention,
    /// See [`EmbeddedLog::removable_through`].
    removable_through: Arc<AtomicU64>,
}

fn writer_loop(
    db: Arc<Database>,
    mut queue: mpsc::Receiver<WriteRequest>,
    bounds: watch::Sender<Bounds>,
    pruning: Pruning,
    clock: Clock,
    commits: &AtomicU64,
) {
    let mut record = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let now = clock();
        match commit_group(&db, &group, &pruning, now, &mut record) {
            Ok((seqs, new_bounds)) => {
                commits.fetch_add(1, Ordering::Relaxed);
                bounds.send_replace(new_bounds);
                for (req, seqs) in group.into_iter().zip(seqs) {
                    let _ = req.reply.send(Ok(seqs));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded log commit failed");
                for req in group {
                    let _ = req.reply.send(Err(LogError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// Writes one group in one transaction and commits it durably.
fn commit_group(
    db: &Database,
    group: &[WriteRequest],
    pruning: &Pruning,
    now: u64,
    record: &mut Vec<u8>,
) -> Result<(Vec<Vec<u64>>, Bounds), LogError> {
    let tx = db.begin_write().map_err(storage)?;
    let mut all_seqs = Vec::with_capacity(group.len());
    {
        let mut events = tx.open_table(EVENTS).map_err(storage)?;
        let mut dedupe = tx.open_table(DEDUPE).map_err(storage)?;
        let mut meta = tx.open_table(META).map_err(storage)?;
        let mut last = meta
            .get("last_seq")
            .map_err(storage)?
            .map_or(0, |v| v.value());
        for req in group {
            let mut seqs = Vec::with_capacity(req.events.len());
            for e in &req.events {
                let id = e.dedupe_id.as_str();
                let hit = dedupe
                    .get(id)
                    .map_err(storage)?
                    .map(|v| v.value())
                    .filter(|&(_, at)| now.saturating_sub(at) < DEDUPE_WINDOW_MS);
                if let Some((seq, _)) = hit {
                    seqs.push(seq);
                    continue;
                }
                last += 1;
                encode_record(record, e, now);
                events.insert(last, record.as_slice()).map_err(storage)?;
                dedupe.insert(id, (last, now)).map_err(storage)?;
                seqs.push(last);
            }
            all_seqs.push(seqs);
        }
        meta.insert("last_seq", last).map_err(storage)?;
        let limit = pruning.removable_through.load(Ordering::Acquire);
        prune(
            &mut events,
            &mut dedupe,
            &mut meta,
            &pruning.retention,
            now,
            last.min(limit.saturating_add(1)),
        )?;
    }
    tx.commit().map_err(storage)?;
    Ok((all_seqs, read_bounds(db)?))
}

/// Drops expired dedupe entries and events past retention, a bounded amount per commit. Events
/// at or after `keep_from` stay whatever their age (the newest event always stays: it holds the
/// last seq).
fn prune(
    events: &mut redb::Table<u64, &[u8]>,
    dedupe: &mut redb::Table<&str, (u64, u64)>,
    meta: &mut redb::Table<&str, u64>,
    retention: &Retention,
    now: u64,
    keep_from: u64,
) -> Result<(), LogError> {
    // Dedupe entries: walk events from the floor while they are older than the window.
    let mut floor = meta
        .get("dedupe_floor")
        .map_err(storage)?
        .map_or(1, |v| v.value());
    let mut expired_ids = Vec::new();
    for item in events
        .range(floor..)
        .map_err(storage)?
        .take(MAX_PRUNE_PER_COMMIT)
    {
        let (k, v) = item.map_err(storage)?;
        let Some(rec) = split_record(v.value()) else {
            break;
        };
        if now.saturating_sub(rec.time_ms) < DEDUPE_WINDOW_MS {
            break;
        }
        expired_ids.push((rec.dedupe_id.to_owned(), k.value()));
        floor = k.value() + 1;
    }
    for (id, seq) in expired_ids {
        forget_dedupe(dedupe, &id, seq)?;
    }
    meta.insert("dedupe_floor", floor).map_err(storage)?;

    // Events past retention, oldest first.
    let max_age_ms = retention.max_age.as_millis() as u64;
    let mut doomed: Vec<(u64, String)> = Vec::new();
    let count = events.len().map_err(storage)?;
    for item in events.iter().map_err(storage)?.take(MAX_PRUNE_PER_COMMIT) {
        let (k, v) = item.map_err(storage)?;
        let seq = k.value();
        let over_count =
            retention.max_events > 0 && count - doomed.len() as u64 > retention.max_events;
        let Some(rec) = split_record(v.value()) else {
            break;
        };
        let too_old = max_age_ms > 0 && now.saturating_sub(rec.time_ms) > max_age_ms;
        if seq >= keep_from || !(over_count || too_old) {
            break;
        }
        doomed.push((seq, rec.dedupe_id.to_owned()));
    }
    for (seq, id) in doomed {
        events.remove(seq).map_err(storage)?;
        forget_dedupe(dedupe, &id, seq)?;
    }
    Ok(())
}

/// Removes a dedupe entry if it still points at `seq` (a later event may have reused the id).
fn forget_dedupe(
    dedupe: &mut redb::Table<&str, (u64, u64)>,
    id: &str,
    seq: u64,
) -> Result<(), LogError> {
    let owned_by_seq = dedupe
        .get(id)
        .map_err(storage)?
        .is_some_and(|v| v.value().0 == seq);
    if owned_by_seq {
        dedupe.remove(id).map_err(storage)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
