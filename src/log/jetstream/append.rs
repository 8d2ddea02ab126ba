//! `append`: one pipelined round of publishes, then the acks; unacknowledged events go out again
//! with the same `Nats-Msg-Id`, a bounded number of rounds.
//!
//! Events of one append are stored in the order given while the connection holds (one
//! connection, publishes sent in order). An event published again after a timeout may land after
//! a later event of the same append that was acknowledged.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tokio::time::Instant;

use super::{unavailable, JetStreamLog, HEADER_OVERHEAD, PUBLISH_ROUNDS};
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
        for round in 0..PUBLISH_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
                // A dropped connection answers now instead of after more timeouts.
                self.ready()?;
            }
            let deadline = Instant::now() + self.ack_timeout;
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
                        // No stream took it (nothing was stored).
                        self.stream_missing();
                        return Err(unavailable("publishing to JetStream", e));
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
                return Ok(seqs);
            }
            tracing::warn!(
                unacknowledged = failed.len(),
                round = round + 1,
                error = %why,
                "JetStream publishes not acknowledged; publishing them again with the same ids"
            );
            todo = failed;
        }
        Err(LogError::Unavailable(format!(
            "JetStream did not acknowledge {} of {} events after {PUBLISH_ROUNDS} attempts: {why}",
            todo.len(),
            events.len()
        )))
    }
}
