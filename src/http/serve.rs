//! The hyper 1 accept loop and what every handler shares: the context, response builders.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::problem::{self, ApiError};
use crate::config::Config;
use crate::fanout::Ring;
use crate::ingest::boot::BootProgress;
use crate::ingest::TailStatus;
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::state::Reader;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: full buffers, or streams for long-lived responses.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

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

pub fn full(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body)
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(status, Some("application/json"), body.into())
}

pub fn empty(status: StatusCode) -> Response<Body> {
    full(status, None, Bytes::new())
}

/// Seconds a client told 503 is asked to wait before it retries (`Retry-After`).
pub const RETRY_AFTER_SECS: &str = "1";

pub fn problem(e: &ApiError) -> Response<Body> {
    let mut resp = full(e.kind.status(), Some("application/problem+json"), e.body());
    if let Some(allow) = e.allow {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if e.kind.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    resp
}

/// Accepts connections until shutdown, then drains in-flight requests for at most the shutdown
/// grace and drops the connections still open: when this returns, no connection task holds the
/// context (and with it the log). Connections beyond the cap get a 503 and are closed.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.config.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // One task per connection (at most the connection cap), reaped as they end.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = ctx.connection_permit() else {
            ctx.metrics.connections_rejected.increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let svc_ctx = ctx.clone();
        let service = service_fn(move |req| {
            let ctx = svc_ctx.clone();
            async move { Ok::<_, Infallible>(super::routes::handle(ctx, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(ctx.config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period elapsed with requests still in flight; dropping them"
        );
    }
    connections.shutdown().await;
}

/// Answers a connection over the cap with a 503 problem and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let body = ApiError::unavailable("connection limit reached; retry later").body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: {RETRY_AFTER_SECS}\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}
