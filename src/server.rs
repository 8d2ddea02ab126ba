//! Wiring: opens the log, starts the tailer, the ingest thread and the HTTP listener, and shuts
//! them down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checkpoint::bucket::BucketStore;
use crate::checkpoint::dir::DirStore;
use crate::checkpoint::{writer, CheckpointStore, StoreError};
use crate::config::{Config, LogBackend};
use crate::fanout::Ring;
use crate::app::Ctx;
use crate::http;
use crate::ingest::boot::BootProgress;
use crate::ingest::{self, start::Pipeline, TailStatus, BATCH_QUEUE};
use crate::log::embedded::{system_clock, EmbeddedLog, Retention};
use crate::log::jetstream::{JetStreamLog, JetStreamOptions};
use crate::log::{EventLog, LogError};
use crate::metrics::Metrics;
use crate::state::snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the event log: {0}")]
    Log(#[from] LogError),
    #[error("opening the checkpoint store: {0}")]
    Checkpoints(#[from] StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("starting the ingest thread: {0}")]
    Thread(std::io::Error),
    #[error("starting the WebSocket runtime: {0}")]
    Runtime(std::io::Error),
}

/// The runtime subscribers (WebSocket sessions, followed event streams) run on, apart from the
/// one serving HTTP and reading the log. A fan-out to thousands of sockets keeps its workers busy writing; requests, the log tail and
/// the writes waiting for their events to apply must not queue behind it. The OS scheduler then
/// shares the cores between the two, and the mostly idle request side is served first when it
/// wakes.
struct SessionRuntime(Option<tokio::runtime::Runtime>);

impl SessionRuntime {
    fn start(threads: usize) -> Result<SessionRuntime, StartError> {
        if threads == 0 {
            return Ok(SessionRuntime(None));
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cellos-ws")
            .enable_all()
            .build()
            .map(|rt| SessionRuntime(Some(rt)))
            .map_err(StartError::Runtime)
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }

    /// Runs `task` there, or on the current runtime when there is no separate one.
    fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Drops whatever still runs there and waits (briefly, off the async workers) until it has.
    async fn stop(&mut self) {
        if let Some(rt) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || {
                rt.shutdown_timeout(std::time::Duration::from_secs(1))
            })
            .await;
        }
    }
}

impl Drop for SessionRuntime {
    /// Without [`Running::shutdown`]: a runtime may not be dropped (blocking) inside another.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A running server. Dropping it without [`Running::shutdown`] leaves its tasks running.
pub struct Running {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    http: JoinHandle<()>,
    tailer: JoinHandle<()>,
    /// Tasks stopped with the pipeline besides the tailer (log-end sampler, ring waker, checkpoint
    /// writer). Shutdown waits for them: the sampler and the writer hold the log, which must be
    /// closed when shutdown returns, and the writer writes a last checkpoint first.
    helpers: Vec<JoinHandle<()>>,
    ingest: Option<std::thread::JoinHandle<()>>,
    stop_pipeline: CancellationToken,
    sessions: SessionRuntime,
}

/// The event log and, when checkpoints are on, where they are kept.
pub struct Storage {
    pub log: Arc<dyn EventLog>,
    pub checkpoints: Option<Arc<dyn CheckpointStore>>,
}

/// Opens the configured log and its checkpoint store: the data directory's `checkpoints/` for
/// the embedded log, the `CELLOS_CHECKPOINTS` object store bucket for JetStream.
async fn open_storage(config: &Config) -> Result<Storage, StartError> {
    let enabled = config.checkpoints.enabled();
    match &config.log {
        LogBackend::Embedded { data_dir } => {
            let dir = data_dir.clone();
            let retention = Retention {
                max_age: config.retention_max_age,
                max_events: config.retention_max_events,
                keep_after_checkpoint: enabled,
            };
            let (log, store) = tokio::task::spawn_blocking(move || {
                let log = EmbeddedLog::open(&dir, retention, system_clock())?;
                let store = enabled.then(|| DirStore::open(&dir)).transpose()?;
                Ok::<_, StartError>((log, store))
            })
            .await
            .map_err(|e| LogError::Storage(e.to_string()))??;
            let log: Arc<dyn EventLog> = Arc::new(log);
            let checkpoints = store.map(|s| Arc::new(s) as Arc<dyn CheckpointStore>);
            Ok(Storage { log, checkpoints })
        }
        LogBackend::JetStream { nats, stream } => {
            // Returns at once: an unreachable NATS is retried in the background (not ready,
            // writes answer 503), never replaced by the embedded log. Settings that cannot work
            // (a credentials or TLS file missing or unusable) fail here, before anything runs.
            tracing::info!(
                servers = ?nats.servers,
                auth = nats.auth.kind(),
                tls_ca = ?nats.tls.ca,
                tls_client_certificate = nats.tls.client.is_some(),
                tls_required = nats.tls.required,
                stream_replicas = stream.replicas,
                "event log: JetStream"
            );
            let options = JetStreamOptions {
                ack_timeout: config.nats_ack_timeout,
                setup_wait: config.write_timeout,
                stream: stream.clone(),
                ..JetStreamOptions::default()
            };
            let log = JetStreamLog::connect(nats, options).await?;
            let checkpoints = enabled.then(|| {
                let store = BucketStore::new(log.context(), log.stream_settings().clone());
                Arc::new(store) as Arc<dyn CheckpointStore>
            });
            Ok(Storage {
                log: Arc::new(log),
                checkpoints,
            })
        }
    }
}

/// Starts everything and returns once the listener is bound. The boot replay continues in the
/// background: until it is over, projection reads wait for it briefly and then answer 503, writes
/// wait for it within their timeout, and `/readyz` says how far it is.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let storage = open_storage(&config).await?;
    let listener = bind(&config.bind).await?;
    start_with(config, storage, listener).await
}

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Starts on an already opened log (and checkpoint store) and bound listener (tests inject
/// them).
pub async fn start_with(
    config: Config,
    storage: Storage,
    listener: TcpListener,
) -> Result<Running, StartError> {
    let Storage { log, checkpoints } = storage;
    let sessions = SessionRuntime::start(config.ws_threads)?;
    let metrics = Metrics::new();
    let (publisher, reader) = snapshot::channel();
    let (ring, ring_writer) = Ring::new(config.ring_capacity, config.ring_bytes);
    let (applied_tx, applied_rx) = watch::channel(0u64);
    let (batches_tx, batches_rx) = mpsc::channel(BATCH_QUEUE);
    let boot = Arc::new(BootProgress::default());
    let (start_tx, start_rx) = oneshot::channel();
    let ingest = ingest::spawn(
        start_rx,
        batches_rx,
        publisher,
        ring_writer,
        applied_tx,
        boot.clone(),
        metrics.clone(),
    )
    .map_err(StartError::Thread)?;

    let stop_pipeline = CancellationToken::new();
    let tail = Arc::new(TailStatus::default());
    let (writer_tx, writer_rx) = oneshot::channel();
    let tailer = tokio::spawn(ingest::start::run(Pipeline {
        log: log.clone(),
        checkpoints: checkpoints.clone(),
        hash_seed: ingest::random_seed(),
        start: start_tx,
        writer: checkpoints.is_some().then_some(writer_tx),
        batches: batches_tx,
        tail: tail.clone(),
        boot: boot.clone(),
        metrics: metrics.clone(),
        stop: stop_pipeline.clone(),
    }));
    let mut helpers = vec![
        tokio::spawn(ingest::sample_log_end(
            log.clone(),
            tail.clone(),
            boot.clone(),
            metrics.clone(),
            stop_pipeline.clone(),
        )),
        // The waker wakes every subscriber: it runs where they do.
        sessions.spawn(ring.clone().run_waker(stop_pipeline.clone())),
    ];
    if let Some(store) = checkpoints {
        let writer = writer::Writer {
            store,
            log: log.clone(),
            reader: reader.clone(),
            metrics: metrics.clone(),
            schedule: config.checkpoints,
            final_wait: config.shutdown_grace,
        };
        helpers.push(tokio::spawn(writer::run(
            writer,
            writer_rx,
            stop_pipeline.clone(),
        )));
    } else if config.retention_max_events > 0 || !config.retention_max_age.is_zero() {
        tracing::warn!(
            "checkpoints are off: the log's retention may remove events the projection needs \
             at the next start"
        );
    }

    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind.clone(),
        source,
    })?;
    let config_max_connections = config.max_connections;
    let ctx = Arc::new(Ctx {
        config,
        reader,
        log,
        applied: applied_rx,
        ring,
        tail,
        boot,
        metrics,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        sessions: sessions.handle(),
        connections: Arc::new(tokio::sync::Semaphore::new(config_max_connections)),
    });
    let http = tokio::spawn(http::serve(listener, ctx.clone()));
    tracing::info!(bind = %addr, "cellos-server listening");
    Ok(Running {
        addr,
        ctx,
        http,
        tailer,
        helpers,
        ingest: Some(ingest),
        stop_pipeline,
        sessions,
    })
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Stops accepting, drains requests, closes long-lived responses and sockets, then stops the
    /// pipeline and releases the log.
    pub async fn shutdown(mut self) {
        tracing::info!("shutdown signal received; draining");
        self.ctx.shutdown.cancel();
        let _ = (&mut self.http).await;
        // Sockets and streams end on the shutdown signal (a WebSocket after its 1001 close, within
        // a bounded write); the bound here only guards against a task that does not.
        self.ctx.tasks.close();
        let grace = self.ctx.config.shutdown_grace;
        if tokio::time::timeout(grace, self.ctx.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.ctx.tasks.len(),
                "long-lived responses still open after the shutdown grace period"
            );
        }
        self.stop_pipeline.cancel();
        let _ = (&mut self.tailer).await;
        for helper in self.helpers.drain(..) {
            let _ = helper.await;
        }
        // Sessions still open after the grace period go with their runtime, and with them their
        // handles on the context.
        self.sessions.stop().await;
        // The tailer held the only batch sender: the ingest thread now drains and exits.
        if let Some(ingest) = self.ingest.take() {
            let _ = tokio::task::spawn_blocking(move || ingest.join()).await;
        }
        // Dropping the last handle on the log closes it (the embedded log joins its writer).
        let ctx = self.ctx;
        let _ = tokio::task::spawn_blocking(move || drop(ctx)).await;
    }
}
