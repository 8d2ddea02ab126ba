//! The start of the pipeline, at the log's edge: where the projection starts (the newest usable
//! checkpoint, or the log's beginning), handed to the ingest thread and the checkpoint writer;
//! events retention removed before any checkpoint held them, reported; then the tail, from there.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::boot::BootProgress;
use super::tail::{run_tailer, TailStatus};
use super::thread::Start;
use crate::checkpoint::load;
use crate::checkpoint::writer::Begin;
use crate::checkpoint::CheckpointStore;
use crate::log::{Bounds, EventLog, LogIdentity, TailBatch};
use crate::metrics::Metrics;
use crate::state::State;

/// Everything the start hands over or reports to.
pub struct Pipeline {
    pub log: Arc<dyn EventLog>,
    /// Where checkpoints are; `None` when they are off (the whole retained log is replayed).
    pub checkpoints: Option<Arc<dyn CheckpointStore>>,
    /// The hash seed of the writer's cell lookup (see `State::with_hash_seed`).
    pub hash_seed: u64,
    pub start: oneshot::Sender<Start>,
    /// The checkpoint writer, waiting to know where the projection starts.
    pub writer: Option<oneshot::Sender<Begin>>,
    pub batches: mpsc::Sender<TailBatch>,
    pub tail: Arc<TailStatus>,
    pub boot: Arc<BootProgress>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
}

/// Starts the projection, then tails the log until `stop`.
pub async fn run(p: Pipeline) {
    let Some((identity, bounds)) = reach_log(&p).await else {
        return;
    };
    let loaded = match &p.checkpoints {
        Some(store) => tokio::select! {
            loaded = load::newest(store.as_ref(), &identity, bounds, p.hash_seed, &p.metrics, &p.boot) => loaded,
            _ = p.stop.cancelled() => return,
        },
        None => None,
    };
    p.boot.set_phase(None);
    let cursor = loaded.as_ref().map_or(0, |l| l.seq);
    p.metrics.checkpoint.boot_seq.set(cursor as f64);
    if cursor > 0 {
        p.metrics.checkpoint.set_newest(cursor);
        // Retention may drop what this checkpoint holds; an older newest one said nothing yet.
        p.log.checkpointed(cursor);
    }
    load::report_loss(cursor, bounds, &p.metrics, |w| p.boot.warn(w));
    let state = loaded.map_or_else(|| State::with_hash_seed(p.hash_seed), |l| l.state);
    if p.start.send(Start { state, cursor }).is_err() {
        return;
    }
    if let Some(writer) = p.writer {
        let _ = writer.send(Begin {
            identity,
            seq: cursor,
        });
    }
    run_tailer(
        p.log, cursor, p.batches, p.tail, p.boot, p.metrics, p.stop,
    )
    .await;
}

/// The log's identity and retained range, retried until the log answers (or `stop`). Failures
/// show in `/readyz` as the tail's would.
async fn reach_log(p: &Pipeline) -> Option<(LogIdentity, Bounds)> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let reached = async { Ok((p.log.identity().await?, p.log.bounds().await?)) };
        let result = tokio::select! {
            r = reached => r,
            _ = p.stop.cancelled() => return None,
        };
        match result {
            Ok(reached) => return Some(reached),
            Err(e) => {
                p.tail.failed(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event log not reachable at start; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = p.stop.cancelled() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
