//! `append`: one pipelined round of publishes, then the acks; unacknowledged events go out again
//! with the same `Nats-Msg-Id` (the stream's duplicate window answers a retry of a stored event
//! with its seq) until [`PUBLISH_ROUNDS`] × the ack timeout has passed, then the append fails.
//!
//! A publish nobody answers ("no responders": no server takes the stream's subjects) is retried
//! like an unacknowledged one: on a cluster it is what a stream leader election looks like for a
//! moment, and a write that arrives then waits for the new leader within that bound instead of
//! failing at once. A stream that is really gone is noticed by the log's own checks (stream
//! info, the tail), which know it from an explicit "stream not found".
//!
//! Events of one append are stored in the order given while the connection holds (one
//! connection, publishes sent in order). An event published again after a timeout may land after
//! a later event of the same append that was acknowledged.

#![allow(clippy::disallowed_methods, reason = "deadlines for appends to JetStream")]

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tokio::time::Instant;

use super::{JetStreamLog, HEADER_OVERHEAD, PUBLISH_ROUNDS};
use crate::log::{check_appends, Append, LogError};

impl JetStreamLog {
    pub(super) async fn append_all(&self, events: Vec<Append>) -> Result<Vec<u64>, LogError> {
        check_appends(&events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.usable().await?;
        // The server refuses messages over its max_payload: check every event before publishing
        // any, so a refusal changes nothing.
        let server_max = self.client.server_info().max_payload;
        if server_max > 0 {
            for e in &events {
                let limit = server_max.saturating_sub(e.dedupe_id.len() + HEADER_OVERHEAD);
                if e.payload.len() > limit {
                    return Err(LogError::TooLarge {
                        size: e.payload.len(),
                        limit,
                    });
                }
            }
        }

        let mut seqs = vec![0u64; events.len()];
        let mut todo: Vec<usize> = (0..events.len()).collect();
        let mut why = String::new();
        let give_up = Instant::now() + self.ack_timeout * PUBLISH_ROUNDS;
        let mut pause = Duration::from_millis(100);
        for round in 1.. {
            if round > 1 {
                if Instant::now() + pause >= give_up {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                // A dropped connection answers now instead of after more timeouts.
                self.ready()?;
            }
            let deadline = (Instant::now() + self.ack_timeout).min(give_up);
            // Every publish goes out before any ack is awaited.
            let mut acks = Vec::with_capacity(todo.len());
            for &i in &todo {
                let e = &events[i];
                let msg = PublishMessage::build()
                    .payload(e.payload.clone())
                    .message_id(&e.dedupe_id);
                let sent =
                    tokio::time::timeout_at(deadline, self.js.send_publish(e.subject.clone(), msg))
                        .await;
                match sent {
                    Ok(Ok(ack)) => acks.push((i, Some(ack))),
                    Ok(Err(e)) => {
                        why = e.to_string();
                        acks.push((i, None));
                    }
                    Err(_) => {
                        why = "timed out handing the publish to the client".into();
                        acks.push((i, None));
                    }
                }
            }
            let mut failed = Vec::new();
            for (i, ack) in acks {
                let Some(ack) = ack else {
                    failed.push(i);
                    continue;
                };
                match tokio::time::timeout_at(deadline, ack.into_future()).await {
                    // A duplicate's ack carries the seq the original was stored under.
                    Ok(Ok(ack)) => seqs[i] = ack.sequence,
                    Ok(Err(e)) if e.kind() == PublishErrorKind::StreamNotFound => {
                        why = "no server took it (the stream is electing a leader, or missing)"
                            .into();
                        failed.push(i);
                    }
                    Ok(Err(e)) => {
                        why = e.to_string();
                        failed.push(i);
                    }
                    Err(_) => {
                        why = format!("no ack within {} ms", self.ack_timeout.as_millis());
                        failed.push(i);
                    }
                }
            }
            if failed.is_empty() {
                self.shared.set_write_failure(None);
                return Ok(seqs);
            }
            tracing::warn!(
                unacknowledged = failed.len(),
                round,
                error = %why,
                "JetStream publishes not acknowledged; publishing them again with the same ids"
            );
            todo = failed;
        }
        let why = format!(
            "JetStream did not acknowledge {} of {} events within {} ms: {why}",
            todo.len(),
            events.len(),
            (self.ack_timeout * PUBLISH_ROUNDS).as_millis()
        );
        self.shared.set_write_failure(Some(why.clone()));
        Err(LogError::Unavailable(why))
    }
}
