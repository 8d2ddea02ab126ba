//! The JetStream event log: stream `CELLOS_EVENTS` (subjects `cellos.events.>`) on the NATS
//! server named by `CELLOS_NATS_URL`. Same semantics as the embedded log; only NATS 2.9 features.
//!
//! - **Connecting never fails for an unreachable server.** The client connects and reconnects in
//!   the background forever; until it is connected and the stream is ensured, [`EventLog::health`]
//!   says why, writes and log reads fail fast with [`LogError::Unavailable`] (503, nothing
//!   appended) and snapshot reads keep serving. The embedded log never stands in for a configured
//!   NATS.
//! - **The stream is got or created** by a background task that retries until it works. An
//!   existing stream is used as it is; settings that differ from ours are logged once.
//!   Operations that arrive before that first worked wait for it (at most the setup wait, the
//!   server's write timeout) instead of failing: only an outage after it answers at once.
//! - **`append`** publishes one message per event with `Nats-Msg-Id` = the dedupe id, all of them
//!   before awaiting any ack (pipelined). Events left unacknowledged within the ack timeout are
//!   published again with the same id (a publish that timed out may still have been stored; the
//!   stream's duplicate window answers the retry with the original seq), a bounded number of
//!   rounds, then `Unavailable`. Unlike the embedded log's one transaction, a multi-event append
//!   that fails partway may have stored some of its events: the caller's retry with the same ids
//!   completes it without duplicates.
//! - **`read` / `get`** use the stream's get-message-by-sequence API, many requests in flight:
//!   no consumer per request.
//! - **`tail`** is one ordered ephemeral pull consumer per tail, recreated from the last delivered
//!   seq after any error, gap or reconnect (see `tail.rs`).

mod append;
pub mod connect;
mod setup;
mod tail;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, Event};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{
    Append, Bounds, BoxFuture, EventLog, LogError, LogIdentity, LogTail, DEDUPE_WINDOW_MS,
    MAX_READ_BYTES, MAX_READ_EVENTS,
};
use crate::event::RawEvent;
pub use connect::{NatsAuth, NatsSettings, NatsTls, Secret, SettingsError};
pub use setup::{drift, stream_config, StreamSettings, MAX_REPLICAS};
use setup::{ensure_loop, STREAM_NOT_FOUND};

pub const STREAM_NAME: &str = "CELLOS_EVENTS";
pub const STREAM_SUBJECTS: &str = "cellos.events.>";
/// Messages older than this are removed by the server (the reference's 90 days).
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// The stream's duplicate window: the same as the embedded log's dedupe window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(DEDUPE_WINDOW_MS);
/// One `append` keeps publishing unacknowledged events again for this many ack timeouts, then
/// gives up (503).
pub const PUBLISH_ROUNDS: u32 = 3;
/// Default wait for the acks of one round (`--nats-ack-timeout-ms`).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on every JetStream API request (stream info, get message, consumer create/delete).
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Get-message requests one `read` or `get` keeps in flight.
pub const READ_CONCURRENCY: usize = 64;
/// Longest pause between two reconnect attempts.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// Room left for the `Nats-Msg-Id` header block when checking the server's `max_payload`.
const HEADER_OVERHEAD: usize = 64;

/// Default wait of an operation for the log's first setup (`--write-timeout-ms`).
pub const DEFAULT_SETUP_WAIT: Duration = Duration::from_secs(10);

/// Tunables of the JetStream log.
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// Wait for the acks of one round of publishes.
    pub ack_timeout: Duration,
    /// Bound on each JetStream API request.
    pub api_timeout: Duration,
    /// How long an operation that arrives before the log was ever ready (still connecting, or
    /// the stream still being looked up or created) waits for that, before it fails.
    pub setup_wait: Duration,
    /// What the stream is created with (and checked against).
    pub stream: StreamSettings,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            api_timeout: API_TIMEOUT,
            setup_wait: DEFAULT_SETUP_WAIT,
            stream: StreamSettings::default(),
        }
    }
}

/// Pause before reconnect attempt `attempts` (1-based): at once, then doubling from 10 ms, at
/// most [`RECONNECT_DELAY_MAX`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(10u64 << exp).min(RECONNECT_DELAY_MAX)
}

/// State shared between the log, its background task, its tails and the connection callback.
struct Shared {
    /// The stream is known to exist (and the client was connected when that was checked).
    ensured: AtomicBool,
    /// The stream was ensured at least once since this log was opened: the first setup is over.
    /// Until then operations wait for it; after, an outage fails fast.
    set_up: AtomicBool,
    /// Why the stream is not ensured yet, for `health`.
    ensure_error: Mutex<Option<String>>,
    /// Wakes the ensure task when the stream went missing.
    reensure: Notify,
    /// Bumped on every connection event and stream (re)ensure: wakes tails waiting on NATS.
    link: watch::Sender<u64>,
    /// Why the last attempt to connect (or the server) failed, until a connection succeeds:
    /// "authorization violation", "tls error"... The client reports kinds, never credentials.
    connect_error: Mutex<Option<String>>,
    /// Why the last append failed while connected (no stream leader to take it, no ack), until
    /// an append succeeds or the stream answers again: `/readyz` reports it.
    write_failure: Mutex<Option<String>>,
}

impl Shared {
    fn bump(&self) {
        self.link.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn on_event(&self, event: &Event) {
        match event {
            Event::Disconnected => {
                tracing::warn!("lost the connection to NATS; reconnecting");
                self.bump();
            }
            Event::Connected => {
                self.set_connect_error(None);
                self.bump();
            }
            Event::Closed => self.bump(),
            // Only the kind of the error; what each server answered comes with the next
            // attempt (`note_attempts`), and is kept over this.
            Event::ClientError(e) => self.set_connect_error_if_none(e.to_string()),
            Event::ServerError(e) => self.set_connect_error_if_none(e.to_string()),
            _ => {}
        }
    }

    /// Before each connection attempt the client shows its servers and what each last failed
    /// with (the error and its cause: a TLS alert, an authorization violation): kept for
    /// `/readyz` and logged when it changes. Server addresses carry no credentials (they are
    /// taken out of the URLs), and connection errors none either.
    fn note_attempts(&self, servers: &[async_nats::Server]) {
        let errors: Vec<String> = servers
            .iter()
            .filter(|s| s.failed_attempts > 0)
            .filter_map(|s| {
                let why = s.last_error.as_ref()?;
                Some(format!("{}: {why}", s.addr.as_url_str()))
            })
            .collect();
        if !errors.is_empty() {
            self.set_connect_error(Some(errors.join("; ")));
        }
    }

    fn set_connect_error_if_none(&self, why: String) {
        let unset = self.connect_error.lock().is_ok_and(|e| e.is_none());
        if unset {
            self.set_connect_error(Some(why));
        }
    }

    /// Records why connecting fails; logs each new reason once (the client retries forever).
    fn set_connect_error(&self, why: Option<String>) {
        let Ok(mut last) = self.connect_error.lock() else {
            return;
        };
        if let Some(why) = why.as_ref().filter(|w| last.as_ref() != Some(w)) {
            tracing::error!(error = %why, "cannot connect to NATS; retrying");
        }
        *last = why;
    }

    /// Appends failed (`Some`) or work again (`None`).
    fn set_write_failure(&self, why: Option<String>) {
        if let Ok(mut failure) = self.write_failure.lock() {
            *failure = why;
        }
    }

    fn set_error(&self, why: Option<String>) {
        if let Ok(mut e) = self.ensure_error.lock() {
            *e = why;
        }
    }
}

/// The JetStream event log. Dropping it stops its background task; the NATS connection closes
/// once its tails are gone too.
pub struct JetStreamLog {
    client: Client,
    js: Context,
    stream: stream::Stream<()>,
    shared: Arc<Shared>,
    ack_timeout: Duration,
    setup_wait: Duration,
    stream_settings: StreamSettings,
    ensure_task: JoinHandle<()>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {e}"))
}

impl JetStreamLog {
    /// Starts connecting to the seed servers in the background and returns at once. Fails only
    /// for settings that cannot work (a credentials or TLS file missing or unusable), never for
    /// an unreachable server; the error names the problem, never a secret.
    pub async fn connect(
        settings: &NatsSettings,
        options: JetStreamOptions,
    ) -> Result<JetStreamLog, LogError> {
        let connect = settings
            .connect_options()
            .map_err(|e| LogError::Settings(e.to_string()))?;
        let (link, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            ensured: AtomicBool::new(false),
            set_up: AtomicBool::new(false),
            ensure_error: Mutex::new(None),
            reensure: Notify::new(),
            link,
            connect_error: Mutex::new(None),
            write_failure: Mutex::new(None),
        });
        let events = shared.clone();
        let attempts = shared.clone();
        let client = connect
            .name("cellos-server")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(options.api_timeout))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                events.on_event(&event);
                std::future::ready(())
            })
            .reconnect_to_server_callback(move |servers, _| {
                attempts.note_attempts(&servers);
                // No choice of ours: the client's own order (shuffled, fewest failures first).
                std::future::ready(None)
            })
            .connect(settings.servers.clone())
            .await
            .map_err(|e| LogError::Settings(format!("CELLOS_NATS_URL: {}", e.kind())))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(options.api_timeout)
            // Acks given up on are dropped; their in-flight permits come back after this.
            .ack_timeout(options.ack_timeout)
            .build(client.clone());
        let stream = js
            .get_stream_no_info(STREAM_NAME)
            .await
            .map_err(|e| unavailable("stream handle", e))?;
        let ensure_task = tokio::spawn(ensure_loop(
            js.clone(),
            client.clone(),
            shared.clone(),
            options.stream.clone(),
        ));
        Ok(JetStreamLog {
            client,
            js,
            stream,
            shared,
            ack_timeout: options.ack_timeout,
            setup_wait: options.setup_wait,
            stream_settings: options.stream,
            ensure_task,
        })
    }

    /// What the stream is created with: other buckets the server keeps take the same replicas
    /// and placement.
    pub fn stream_settings(&self) -> &StreamSettings {
        &self.stream_settings
    }

    /// The JetStream context of this log's connection (other buckets the server keeps, such as
    /// checkpoints, live on the same NATS).
    pub fn context(&self) -> Context {
        self.js.clone()
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Connections established so far: changes on every reconnect.
    fn connects(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Relaxed)
    }

    fn ready(&self) -> Result<(), LogError> {
        self.reachable().map_err(LogError::Unavailable)
    }

    /// Connected, and the stream known to exist: what operations wait for. (A stream that lost
    /// its leader is still reachable: operations go on and retry within their bounds.)
    fn reachable(&self) -> Result<(), String> {
        let state = self.client.connection_state();
        if state != State::Connected {
            let last = self.shared.connect_error.lock().ok().and_then(|e| e.clone());
            return Err(match last {
                Some(why) => format!("not connected to NATS: {state}; last error: {why}"),
                None => format!("not connected to NATS: {state}"),
            });
        }
        if !self.shared.ensured.load(Ordering::Acquire) {
            let why = self
                .shared
                .ensure_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "not checked yet".into());
            return Err(format!("JetStream stream {STREAM_NAME} not ready: {why}"));
        }
        Ok(())
    }

    /// [`Self::ready`], but an operation that arrives during the first setup (connecting, the
    /// stream being looked up or created) first waits for it, at most the setup wait: a write
    /// sent right after start is not refused for a stream that is about to be there. Once the
    /// log was ready, an outage fails at once.
    async fn usable(&self) -> Result<(), LogError> {
        if !self.shared.set_up.load(Ordering::Acquire) {
            // Subscribed before the check, so a bump in between is not missed.
            let mut link = self.shared.link.subscribe();
            let set_up = async {
                while !self.shared.set_up.load(Ordering::Acquire) {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(self.setup_wait, set_up).await;
        }
        self.ready()
    }

    /// The stream was reported missing: look it up (or create it) again.
    fn stream_missing(&self) {
        self.shared.ensured.store(false, Ordering::Release);
        self.shared
            .set_error(Some(format!("stream {STREAM_NAME} not found")));
        self.shared.reensure.notify_one();
        self.shared.bump();
    }

    /// Deletes a consumer in the background, best effort (an orphan also expires on its own
    /// after its inactivity threshold, and with the server's memory on restart).
    fn delete_consumer_later(&self, name: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let js = self.js.clone();
        rt.spawn(async move {
            let delete = js.delete_consumer_from_stream(&name, STREAM_NAME);
            if let Ok(Err(e)) = tokio::time::timeout(API_TIMEOUT, delete).await {
                tracing::debug!(consumer = %name, error = %e, "deleting a tail consumer failed");
            }
        });
    }

    /// One message by seq; `None` when it is not (or no longer) in the stream.
    async fn get_one(&self, seq: u64) -> Result<Option<RawEvent>, LogError> {
        match self.stream.get_raw_message(seq).await {
            Ok(m) => Ok(Some(RawEvent {
                seq: m.sequence,
                subject: Arc::from(m.subject.as_str()),
                payload: m.payload,
            })),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(unavailable("reading from JetStream", e)),
        }
    }

    /// The stream's info (one JetStream API request). An answer means the stream has a leader
    /// again: a past write failure is over.
    async fn stream_info(&self) -> Result<stream::Info, LogError> {
        self.usable().await?;
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("JetStream stream info", e))?;
        self.shared.set_write_failure(None);
        Ok(info)
    }

    /// The stream's current state.
    async fn stream_state(&self) -> Result<stream::State, LogError> {
        Ok(self.stream_info().await?.state)
    }

    async fn read_range(&self, after: u64, max: usize) -> Result<Vec<RawEvent>, LogError> {
        let state = self.stream_state().await?;
        let last = state.last_sequence;
        let mut next = after.saturating_add(1).max(state.first_sequence);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Windows of at most the events still wanted; deleted seqs leave holes, so a window can
        // come back short and the next one continues after it.
        while next <= last && out.len() < max {
            let end = last.min(next.saturating_add((max - out.len()) as u64 - 1));
            let mut gets = futures_util::stream::iter(next..=end)
                .map(|seq| self.get_one(seq))
                .buffered(READ_CONCURRENCY);
            while let Some(got) = gets.next().await {
                if let Some(ev) = got? {
                    bytes += ev.payload.len();
                    out.push(ev);
                    if bytes >= MAX_READ_BYTES {
                        return Ok(out);
                    }
                }
            }
            next = end.saturating_add(1);
            if end == u64::MAX {
                break;
            }
        }
        Ok(out)
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.ensure_task.abort();
    }
}

impl EventLog for JetStreamLog {
    fn append(&self, events: Vec<Append>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(self.append_all(events))
    }

    fn read(&self, after: u64, max: usize) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        let max = max.clamp(1, MAX_READ_EVENTS);
        Box::pin(self.read_range(after, max))
    }

    fn get(&self, mut seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        seqs.truncate(MAX_READ_EVENTS);
        Box::pin(async move {
            if seqs.is_empty() {
                return Ok(Vec::new());
            }
            self.usable().await?;
            let mut gets = futures_util::stream::iter(seqs)
                .map(|seq| self.get_one(seq))
                .buffered(READ_CONCURRENCY);
            let mut out = Vec::new();
            while let Some(got) = gets.next().await {
                out.extend(got?);
            }
            Ok(out)
        })
    }

    fn bounds(&self) -> BoxFuture<'_, Result<Bounds, LogError>> {
        Box::pin(async move {
            let s = self.stream_state().await?;
            let first = if s.messages == 0 {
                s.last_sequence.saturating_add(1)
            } else {
                s.first_sequence
            };
            Ok(Bounds {
                first,
                last: s.last_sequence,
            })
        })
    }

    fn tail(self: Arc<Self>, after: u64) -> Box<dyn LogTail> {
        Box::new(tail::JetStreamTail::new(self, after))
    }

    /// The stream's name and creation time: a stream deleted and created again is another log.
    fn identity(&self) -> BoxFuture<'_, Result<LogIdentity, LogError>> {
        Box::pin(async move {
            let info = self.stream_info().await?;
            Ok(LogIdentity {
                stream: STREAM_NAME.into(),
                epoch: info.created.unix_timestamp_nanos().to_string(),
            })
        })
    }

    fn health(&self) -> Result<(), String> {
        self.reachable()?;
        let failure = self.shared.write_failure.lock().ok().and_then(|f| f.clone());
        match failure {
            Some(why) => Err(format!("JetStream is not taking writes: {why}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_is_immediate_then_bounded() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(10));
        assert_eq!(reconnect_delay(3), Duration::from_millis(20));
        assert_eq!(reconnect_delay(100), RECONNECT_DELAY_MAX);
        assert_eq!(reconnect_delay(usize::MAX), RECONNECT_DELAY_MAX);
    }
}
