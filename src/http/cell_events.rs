//! `GET /v1/cells/{id}/events[?tail=N][&follow=true]`: a cell's CloudEvents, oldest first, as a
//! JSON array, or as an NDJSON stream that continues live (`cellctl logs [-f]`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::problem::ApiError;
use super::query::CellEventsQuery;
use super::json;
use crate::app::{Body, BoxError, Ctx};
use crate::event::decode::Decoder;
use crate::event::RawEvent;

pub(super) const DEFAULT_TAIL: usize = 100;
pub(super) const MAX_TAIL: usize = 1000;
/// Chunks buffered for a slow follower before the follower task waits.
const STREAM_QUEUE: usize = 16;
/// Log events read per step while following.
const FOLLOW_CHUNK: usize = 256;

/// A response body fed by a task through a bounded channel; ends when the task drops its sender.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// One NDJSON line: the stored event with any raw line breaks (JSON whitespace) turned to spaces.
fn ndjson_line(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend(
        payload
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'\n');
}

pub(super) async fn events(
    ctx: &Arc<Ctx>,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let q = CellEventsQuery::parse(query)?;
    let tail = q.tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL);
    let snap = ctx.reader.load();
    let Some(wanted) = snap.state.cell_event_seqs(id, tail) else {
        return Err(ApiError::not_found(format!("cell {id} not found")));
    };
    let cursor = snap.cursor;
    drop(snap);
    let events = if wanted.is_empty() {
        Vec::new()
    } else {
        ctx.log.get(wanted).await?
    };
    if !q.follow {
        let mut out =
            Vec::with_capacity(2 + events.iter().map(|e| e.payload.len() + 1).sum::<usize>());
        out.push(b'[');
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&e.payload);
        }
        out.push(b']');
        return Ok(json(StatusCode::OK, out));
    }
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let mut head = Vec::new();
    for e in &events {
        ndjson_line(&mut head, &e.payload);
    }
    let follower_ctx = ctx.clone();
    let cell = id.to_owned();
    ctx.spawn_subscriber(async move {
        if !head.is_empty() && !send(&follower_ctx, &tx, head).await {
            return;
        }
        follow(follower_ctx, cell, cursor, tx).await;
    });
    let mut resp = Response::new(ChannelBody(rx).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Streams the cell's events after `cursor` until the client goes away or the server stops. The
/// applied cursor wakes the follower; events come from the log, so the stream has no gaps.
async fn follow(ctx: Arc<Ctx>, cell: String, mut cursor: u64, tx: mpsc::Sender<Bytes>) {
    // Waits on the applied cursor itself, which bounds what is read: a wake-up from anything
    // published earlier (the ring is committed before the cursor moves) could find nothing new
    // yet and then sleep through the update.
    let mut applied_rx = ctx.applied.clone();
    let mut decoder = Decoder::new();
    loop {
        let applied = *applied_rx.borrow_and_update();
        while cursor < applied {
            let Ok(batch) = ctx.log.read(cursor, FOLLOW_CHUNK).await else {
                return;
            };
            if batch.is_empty() {
                break;
            }
            let mut out = Vec::new();
            for RawEvent { seq, payload, .. } in &batch {
                cursor = *seq;
                if decoder
                    .decode(payload)
                    .is_ok_and(|ev| ev.cell_id == Some(cell.as_str()))
                {
                    ndjson_line(&mut out, payload);
                }
            }
            if !out.is_empty() && !send(&ctx, &tx, out).await {
                return;
            }
        }
        tokio::select! {
            changed = applied_rx.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// Queues a chunk of the stream; false once the client is gone or the server stops. A client
/// that stops reading blocks this send, so shutdown must be able to end it.
async fn send(ctx: &Ctx, tx: &mpsc::Sender<Bytes>, chunk: Vec<u8>) -> bool {
    tokio::select! {
        sent = tx.send(Bytes::from(chunk)) => sent.is_ok(),
        _ = ctx.shutdown.cancelled() => false,
    }
}
