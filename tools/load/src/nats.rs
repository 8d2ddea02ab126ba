//! Straight to JetStream: publish realistic cell events into `CELLOS_EVENTS` (what a fleet's
//! supervisors do), and wait until a server's projection cursor reaches a seq. Used to compare
//! servers that share nothing but the stream (replay, live ingest), and to drive `ws` without HTTP.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use crate::net;

/// Acks awaited at most this many publishes behind (pipelining bound).
const ACK_WINDOW: usize = 4096;

const STARTED: &str =
    include_str!("../../../contracts/examples/events/cell-lifecycle-started.json");
const COMPLETED: &str =
    include_str!("../../../contracts/examples/events/cell-command-completed.json");
const DESTROYED: &str =
    include_str!("../../../contracts/examples/events/cell-lifecycle-destroyed.json");
/// The example's cell id and envelope id, replaced by same-length ones.
const EXAMPLE_CELL: &str = "ci-build-7f3a9c2e";

/// Event `i` of a run, `per_cell` consecutive events per cell (1..=8): started, command
/// completed, …, destroyed (the supervisor's lifecycle; with 8, six commands; with 1, only the
/// start). Returns (subject, payload).
pub fn cell_event(run: u64, i: u64, per_cell: u64) -> (String, Bytes) {
    let cell = format!("ci-load-{:09x}", i / per_cell);
    let (template, kind) = match i % per_cell {
        0 => (STARTED, "lifecycle.started"),
        n if n == per_cell - 1 => (DESTROYED, "lifecycle.destroyed"),
        _ => (COMPLETED, "command.completed"),
    };
    let template = template.trim_end();
    let id_at = template.find("\"id\":\"").map(|p| p + 6).unwrap_or(0);
    let id_end = template[id_at..].find('"').map_or(id_at, |e| id_at + e);
    let id = format!("{run:012x}-{i:023}");
    let id = &id[..(id_end - id_at).min(id.len())];
    let payload =
        format!("{}{id}{}", &template[..id_at], &template[id_end..]).replace(EXAMPLE_CELL, &cell);
    let (family, phase) = kind.split_once('.').unwrap_or((kind, ""));
    (
        format!("cellos.events.cell.{family}.{cell}.{phase}"),
        Bytes::from(payload),
    )
}

/// Gets or creates the stream with the server's own settings.
async fn stream(js: &jetstream::Context) -> Result<()> {
    js.get_or_create_stream(cellos_server::log::jetstream::stream_config(
        &cellos_server::log::jetstream::StreamSettings::default(),
    ))
    .await
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("get or create CELLOS_EVENTS: {e}"))
}

pub async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client);
    stream(&js).await?;
    Ok(js)
}

/// Publishes `count` events, `per_cell` per cell, from `publishers` connections in parallel
/// (each its own share of the cells, in order), `rate` per second in total (0: as fast as acks
/// allow). Returns the highest seq acknowledged.
pub async fn publish(
    url: &str,
    count: u64,
    per_cell: u64,
    rate: u64,
    publishers: u64,
) -> Result<u64> {
    let publishers = publishers.max(1);
    let per_cell = per_cell.clamp(1, 8);
    let run = crate::now_us();
    // Shares start on a cell boundary so every cell has one publisher.
    let share = count.div_ceil(publishers).div_ceil(per_cell) * per_cell;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..publishers {
        let (from, to) = ((k * share).min(count), ((k + 1) * share).min(count));
        let js = connect(url).await?;
        let rate = rate / publishers;
        tasks.push(tokio::spawn(publish_range(
            js,
            run,
            from..to,
            per_cell,
            rate,
        )));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published           {count} events from {publishers} connections in {secs:.2} s: {:.0}/s, last seq {last}",
        count as f64 / secs
    );
    Ok(last)
}

async fn publish_range(
    js: jetstream::Context,
    run: u64,
    range: std::ops::Range<u64>,
    per_cell: u64,
    rate: u64,
) -> Result<u64> {
    let mut pending: VecDeque<PublishAckFuture> = VecDeque::with_capacity(ACK_WINDOW);
    let mut last = 0;
    let started = Instant::now();
    let first = range.start;
    for i in range {
        if rate > 0 {
            let due = started + Duration::from_secs_f64((i - first) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                if wait > Duration::from_millis(1) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let (subject, payload) = cell_event(run, i, per_cell);
        if pending.len() == ACK_WINDOW {
            if let Some(ack) = pending.pop_front() {
                last = last.max(ack.await.context("publish ack")?.sequence);
            }
        }
        pending.push_back(js.publish(subject, payload).await.context("publish")?);
    }
    for ack in pending {
        last = last.max(ack.await.context("publish ack")?.sequence);
    }
    Ok(last)
}

/// Polls `GET /v1/formations` (served by every version) until its `cursor` is at least `seq`.
/// Connection failures (a server still starting, or replaying before it listens) are retried.
/// Returns the seconds from the call until then.
pub async fn wait_for_cursor(addr: &str, token: &str, seq: u64, timeout: Duration) -> Result<f64> {
    let started = Instant::now();
    let mut http: Option<net::Http> = None;
    loop {
        if started.elapsed() > timeout {
            anyhow::bail!("cursor did not reach {seq} within {timeout:?}");
        }
        if http.is_none() {
            http = net::Http::connect(addr, token).await.ok();
        }
        if let Some(conn) = http.as_mut() {
            match conn.request("GET", "/v1/formations", "", b"").await {
                Ok((200, body)) if cursor_of(&body).is_some_and(|c| c >= seq) => {
                    return Ok(started.elapsed().as_secs_f64());
                }
                Ok(_) => {}
                Err(_) => http = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The top-level `"cursor":N` of a formations listing (the last occurrence in the body).
fn cursor_of(body: &[u8]) -> Option<u64> {
    let key = b"\"cursor\":";
    let at = body.windows(key.len()).rposition(|w| w == key)? + key.len();
    crate::number_at(body, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_examples_sizes_and_vary_ids() {
        let (s0, p0) = cell_event(1, 0, 8);
        let (s9, p9) = cell_event(1, 9, 8);
        assert_eq!(s0, "cellos.events.cell.lifecycle.ci-load-000000000.started");
        assert_eq!(s9, "cellos.events.cell.command.ci-load-000000001.completed");
        assert_eq!(p0.len(), STARTED.trim_end().len());
        assert_eq!(p9.len(), COMPLETED.trim_end().len());
        let text = std::str::from_utf8(&p9).unwrap();
        assert!(text.contains("\"cellId\":\"ci-load-000000001\""));
        assert!(!text.contains(EXAMPLE_CELL));
        assert_ne!(
            cell_event(1, 1, 8).1,
            cell_event(1, 2, 8).1,
            "envelope ids differ"
        );
        let (s1, _) = cell_event(1, 5, 1);
        assert_eq!(s1, "cellos.events.cell.lifecycle.ci-load-000000005.started");
        assert_eq!(
            cursor_of(br#"{"formations":[{"cursor":1}],"cursor":42}"#),
            Some(42)
        );
    }
}
