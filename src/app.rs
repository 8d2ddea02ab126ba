//! The application context: what every request handler and WebSocket session shares (the
//! configuration, the snapshot reader, the log's append side, the cursor, the ring, metrics,
//! shutdown), and the response body type. HTTP handlers ([`crate::http`]) and WebSocket sessions
//! ([`crate::ws`]) both depend on this module; it depends on neither.

#![allow(clippy::disallowed_methods, reason = "deadlines for the boot-replay wait and for writes")]

mod ident;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fanout::Ring;
use crate::ingest::boot::BootProgress;
use crate::ingest::TailStatus;
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::problem::{self, ApiError};
use crate::state::Reader;

pub use ident::Ident;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: full buffers, or streams for long-lived responses.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Everything a handler may use. Read-only views plus the log's append side.
pub struct Ctx {
    pub config: Config,
    pub reader: Reader,
    pub log: Arc<dyn EventLog>,
    pub applied: watch::Receiver<u64>,
    pub ring: Arc<Ring>,
    pub tail: Arc<TailStatus>,
    pub boot: Arc<BootProgress>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// Long-lived responses and upgraded sockets, which hyper's graceful shutdown does not track.
    pub tasks: TaskTracker,
    /// Where subscribers run: WebSocket sessions and followed event streams (`--ws-threads`);
    /// `None`: on the current runtime.
    pub sessions: Option<tokio::runtime::Handle>,
    /// One permit per open connection or WebSocket session (`--max-connections`).
    pub connections: Arc<Semaphore>,
}

impl Ctx {
    /// Starts a subscriber (a WebSocket session, a followed event stream) on the subscribers'
    /// runtime, tracked for shutdown.
    pub fn spawn_subscriber<F>(&self, session: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.sessions {
            Some(rt) => drop(self.tasks.spawn_on(session, rt)),
            None => drop(self.tasks.spawn(session)),
        }
    }

    /// Waits at most `wait` until the projection has replayed everything the log held at start;
    /// past that, the 503 that says how far the replay is. Reads wait `--replay-read-wait-ms`,
    /// writes their write timeout: no answer ever comes from a half-replayed projection.
    pub async fn until_replayed(&self, wait: Duration) -> Result<(), ApiError> {
        self.until_replayed_by(Instant::now() + wait).await
    }

    /// When a write that starts now must have been answered: every wait of a write (the boot
    /// replay, the append, its application) counts against this one deadline, so a write never
    /// takes longer than the write timeout in all.
    pub fn write_deadline(&self) -> Instant {
        Instant::now() + self.config.write_timeout
    }

    /// [`Self::until_replayed`], waiting at most until `deadline`.
    pub async fn until_replayed_by(&self, deadline: Instant) -> Result<(), ApiError> {
        if self.reader.peek(|s| s.replayed) {
            return Ok(());
        }
        // The ingest thread publishes the replayed snapshot before it wakes the cursor's
        // watchers, so checking the snapshot on each wake-up cannot miss it.
        let mut applied = self.applied.clone();
        let over = async {
            applied
                .wait_for(|_| self.reader.peek(|s| s.replayed))
                .await
                .is_ok()
        };
        match tokio::time::timeout_at(deadline, over).await {
            Ok(true) => Ok(()),
            _ => Err(ApiError::unavailable(
                self.boot.detail(self.reader.peek(|s| s.cursor)),
            )),
        }
    }

    /// A connection slot, if one is free.
    pub fn connection_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Appends events, by `deadline`; returns their seqs.
    pub async fn append_by(
        &self,
        appends: Vec<crate::log::Append>,
        deadline: Instant,
    ) -> Result<Vec<u64>, ApiError> {
        tokio::time::timeout_at(deadline, self.log.append(appends))
            .await
            .map_err(|_| ApiError::unavailable(problem::STORE_UNAVAILABLE))?
            .map_err(ApiError::from)
    }

    /// Appends one event and waits until it is applied, both by `deadline`; returns its seq.
    pub async fn append_and_wait(
        &self,
        subject: String,
        payload: Bytes,
        dedupe_id: String,
        deadline: Instant,
    ) -> Result<u64, ApiError> {
        let append = crate::log::Append {
            subject,
            payload,
            dedupe_id,
        };
        let seqs = self.append_by(vec![append], deadline).await?;
        let seq = seqs.first().copied().unwrap_or(0);
        self.wait_applied(seq, deadline).await?;
        Ok(seq)
    }

    /// Waits until the ingest thread has applied `seq` (read-your-writes), at most until
    /// `deadline`.
    pub async fn wait_applied(&self, seq: u64, deadline: Instant) -> Result<(), ApiError> {
        let mut applied = self.applied.clone();
        let wait = async move { applied.wait_for(|c| *c >= seq).await.is_ok() };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(true) => Ok(()),
            _ => Err(ApiError::unavailable(format!(
                "event {seq} was logged but not applied within {} ms; retry with the same event id",
                self.config.write_timeout.as_millis()
            ))),
        }
    }
}
