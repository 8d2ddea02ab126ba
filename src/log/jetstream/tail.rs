//! The JetStream tail: one ordered consumer (ephemeral, pull, no acks, in memory) per tail.
//!
//! The tail remembers the last seq it handed out. Whenever the consumer cannot be trusted any
//! more (a consumer-sequence gap, any error from its message stream, a reconnect of the client,
//! which covers NATS restarts) it is dropped (and deleted on the server, best effort) and a new
//! one starts at that seq + 1: nothing is skipped, and anything at or below it is dropped, so
//! nothing is handed out twice. Boot replay and live ingest are the same consumer.

#![allow(clippy::disallowed_methods, reason = "deadlines and idle detection for the JetStream tail")]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{unavailable, JetStreamLog, STREAM_NAME, STREAM_NOT_FOUND};
use crate::event::RawEvent;
use crate::log::{BoxFuture, LogError, LogTail, TailBatch, MAX_READ_EVENTS};

/// Messages one pull request asks for. The client sends the next request when half of what was
/// asked for is taken, so at most 1.5 × this waits in the client: below its subscription channel
/// (65,536 messages), which would drop messages beyond. Large pulls matter for boot replay: at
/// 1,024 per pull, replaying 10^6 events took 12% longer here.
const PULL_BATCH: usize = 16_384;
/// Payload bytes one pull request asks for (1.5 × this waits in the client at most).
const PULL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long one pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// The server sends a heartbeat this often while a pull waits; two missed end the consumer. On a
/// cluster this is how the tail learns that the node holding its consumer is gone (when the
/// connection itself is to another node), so it bounds how long the projection stalls after a
/// node loss: at 5 s, writes waited 10 s for their event to be applied after the stream leader
/// was killed; at 1 s, 2 s.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// The server removes a consumer nobody pulled from for this long (orphans of a crash).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);
/// How long `next` waits for NATS to come back before reporting the outage as an error.
const OUTAGE_WAIT: Duration = Duration::from_secs(30);
/// Inside a batch, how long to wait for the next message the server reported pending.
const PENDING_WAIT: Duration = Duration::from_millis(5);
/// Bound on creating a consumer. Shorter than the API timeout: right after a node loss the
/// request can go unanswered while the cluster elects leaders, and the next try (the tailer
/// retries at once) usually lands; the projection stalls for less.
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a tail waiting for NATS re-checks the connection (besides connection events).
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// The consumer's settings: what an ordered consumer uses, starting after `after`.
fn consumer_config(after: u64) -> pull::Config {
    let deliver_policy = if after == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: after.saturating_add(1),
        }
    };
    pull::Config {
        description: Some("cellos-server event log tail".into()),
        deliver_policy,
        ack_policy: AckPolicy::None,
        max_deliver: 1,
        replay_policy: ReplayPolicy::Instant,
        inactive_threshold: INACTIVE_THRESHOLD,
        num_replicas: 1,
        memory_storage: true,
        ..Default::default()
    }
}

/// The consumer in use.
struct Active {
    name: String,
    messages: pull::Stream,
    /// The client's connection count when it was created: a reconnect retires it.
    connects: u64,
    /// Consumer sequence the next message must carry; anything else is a gap.
    next_consumer_seq: u64,
    /// Messages the server still had for this consumer after the last one received (at
    /// creation: all it had).
    pending: u64,
}

pub(super) struct JetStreamTail {
    log: Arc<JetStreamLog>,
    /// Seq of the last event taken from the consumer (handed out, or waiting in `batch`).
    last: u64,
    /// Events taken from the consumer and not yet returned.
    batch: Vec<RawEvent>,
    link: watch::Receiver<u64>,
    active: Option<Active>,
    idle_reported: bool,
}

/// What one received message did.
enum Step {
    Event(RawEvent),
    /// Already handed out (at or below `last`).
    Skip,
    /// The consumer was retired.
    Reset,
}

impl JetStreamTail {
    pub(super) fn new(log: Arc<JetStreamLog>, after: u64) -> JetStreamTail {
        let link = log.shared.link.subscribe();
        JetStreamTail {
            log,
            last: after,
            batch: Vec::new(),
            link,
            active: None,
            idle_reported: false,
        }
    }

    /// Drops the consumer in use, deleting it on the server in the background.
    fn retire(&mut self) {
        if let Some(active) = self.active.take() {
            drop(active.messages);
            self.log.delete_consumer_later(active.name);
        }
    }

    /// Whether the consumer in use is still trusted.
    fn current(&self) -> bool {
        self.log.connected()
            && self
                .active
                .as_ref()
                .is_some_and(|a| a.connects == self.log.connects())
    }

    /// Waits (up to [`OUTAGE_WAIT`]) until NATS and the stream are usable, then makes sure a
    /// consumer created on the current connection is in use.
    async fn ensure_consumer(&mut self) -> Result<(), LogError> {
        let deadline = Instant::now() + OUTAGE_WAIT;
        loop {
            self.link.borrow_and_update();
            match self.log.reachable() {
                Ok(()) => break,
                Err(why) => {
                    self.retire();
                    if Instant::now() >= deadline {
                        return Err(LogError::Unavailable(why));
                    }
                    tokio::select! {
                        _ = self.link.changed() => {}
                        _ = tokio::time::sleep(HEALTH_POLL) => {}
                    }
                }
            }
        }
        if self.current() {
            return Ok(());
        }
        self.retire();
        self.active = Some(self.open().await?);
        Ok(())
    }

    /// Creates a consumer starting after `last` and its message stream.
    async fn open(&self) -> Result<Active, LogError> {
        let connects = self.log.connects();
        let create = self
            .log
            .js
            .create_consumer_on_stream(consumer_config(self.last), STREAM_NAME);
        let consumer: PullConsumer = tokio::time::timeout(CREATE_TIMEOUT, create)
            .await
            .map_err(|_| unavailable("creating the JetStream tail consumer", "timed out"))?
            .map_err(|e| {
                if let ConsumerErrorKind::JetStream(j) = e.kind() {
                    if j.error_code() == STREAM_NOT_FOUND {
                        self.log.stream_missing();
                    }
                }
                unavailable("creating the JetStream tail consumer", e)
            })?;
        let info = consumer.cached_info();
        let (name, pending) = (info.name.clone(), info.num_pending);
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .max_bytes_per_batch(PULL_MAX_BYTES)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        match messages {
            Ok(messages) => {
                tracing::debug!(
                    consumer = %name,
                    after = self.last,
                    pending,
                    "tail consumer created"
                );
                Ok(Active {
                    name,
                    messages,
                    connects,
                    next_consumer_seq: 1,
                    pending,
                })
            }
            Err(e) => {
                self.log.delete_consumer_later(name);
                Err(unavailable("starting the JetStream tail", e))
            }
        }
    }

    /// Checks one message's place in the sequence and turns it into an event.
    fn accept(&mut self, msg: async_nats::jetstream::Message) -> Step {
        let Some(active) = self.active.as_mut() else {
            return Step::Reset;
        };
        let (consumer_seq, seq, pending) = match msg.info() {
            Ok(i) => (i.consumer_sequence, i.stream_sequence, i.pending),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "message without metadata; recreating the tail consumer"
                );
                self.retire();
                return Step::Reset;
            }
        };
        if consumer_seq != active.next_consumer_seq {
            tracing::debug!(
                expected = active.next_consumer_seq,
                got = consumer_seq,
                "JetStream tail consumer out of sequence; recreating it"
            );
            self.retire();
            return Step::Reset;
        }
        active.next_consumer_seq += 1;
        active.pending = pending;
        if seq <= self.last {
            return Step::Skip;
        }
        self.last = seq;
        self.idle_reported = false;
        let m = msg.message;
        Step::Event(RawEvent {
            seq,
            subject: Arc::from(m.subject.as_str()),
            payload: m.payload,
        })
    }

    /// The next batch. Cancel-safe: events taken from the consumer wait in `self.batch` until a
    /// call returns them, so dropping a call halfway loses nothing.
    async fn next_batch(&mut self, max: usize) -> Result<TailBatch, LogError> {
        loop {
            let have = !self.batch.is_empty();
            if !have {
                self.ensure_consumer().await?;
            } else if self.batch.len() >= max || !self.current() {
                break;
            }
            let Some(active) = self.active.as_mut() else {
                break;
            };
            let item = if have {
                // What is already here, and while the server says more are on their way, what
                // arrives within a moment: replay goes out in large batches, a live event at once.
                match active.messages.next().now_or_never() {
                    Some(item) => item,
                    None if active.pending > 0 => {
                        match tokio::time::timeout(PENDING_WAIT, active.messages.next()).await {
                            Ok(item) => item,
                            Err(_) => break,
                        }
                    }
                    None => break,
                }
            } else if active.pending == 0 && !self.idle_reported {
                match active.messages.next().now_or_never() {
                    Some(item) => item,
                    None => {
                        self.idle_reported = true;
                        return Ok(TailBatch {
                            events: Vec::new(),
                            caught_up: true,
                        });
                    }
                }
            } else {
                tokio::select! {
                    item = active.messages.next() => item,
                    // A connection event: check the consumer is still current.
                    _ = self.link.changed() => continue,
                }
            };
            match item {
                Some(Ok(msg)) => match self.accept(msg) {
                    Step::Event(ev) => self.batch.push(ev),
                    Step::Skip => {}
                    Step::Reset => {
                        if have {
                            break;
                        }
                    }
                },
                Some(Err(e)) => {
                    self.retire();
                    if !have {
                        return Err(unavailable("JetStream tail", e));
                    }
                    break;
                }
                None => {
                    self.retire();
                    if !have {
                        return Err(LogError::Unavailable("JetStream tail ended".into()));
                    }
                    break;
                }
            }
        }
        // (More than `max` only waits here when a cancelled call asked for more.)
        let rest = self.batch.split_off(max.min(self.batch.len()));
        let events = std::mem::replace(&mut self.batch, rest);
        let caught_up =
            self.batch.is_empty() && self.active.as_ref().is_some_and(|a| a.pending == 0);
        Ok(TailBatch { events, caught_up })
    }
}

impl LogTail for JetStreamTail {
    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<TailBatch, LogError>> {
        let max = max.clamp(1, MAX_READ_EVENTS);
        Box::pin(self.next_batch(max))
    }
}

impl Drop for JetStreamTail {
    fn drop(&mut self) {
        self.retire();
    }
}
