//! `/v1/events`: paging through the log (GET) and CloudEvents ingestion over HTTP (POST).

use std::io::Write as _;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use uuid::Uuid;

use super::body::{media_type, read_body};
use super::cloudevents::{parse_ingest, MAX_INGEST_BYTES};
use crate::app::Ident;
use crate::problem::{ApiError, Kind};
use super::query::EventsQuery;
use super::json;
use crate::app::{Body, Ctx};
use crate::event::decode::Decoder;
use crate::event::frame::{framed, write_frame};

pub(super) const DEFAULT_PAGE: usize = 100;
pub(super) const MAX_PAGE: usize = 1000;
/// Most log events one page request examines (a formation filter may skip many): the cursor
/// still advances past them, so paging never stalls.
pub(super) const MAX_SCAN: usize = 10_000;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// `GET /v1/events?since=&limit=&formation=`: events after `since` that this server has applied,
/// oldest first, each as `{"seq":N,"event":<stored payload>}`.
pub(super) async fn list(ctx: &Ctx, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let q = EventsQuery::parse(query)?;
    let since = q.since.unwrap_or(0);
    let limit = match q.limit {
        None | Some(0) => DEFAULT_PAGE,
        Some(l) => l.min(MAX_PAGE),
    };
    let snap = ctx.reader.load();
    let applied = snap.cursor;
    let filter: Option<Uuid> = match q.formation.as_deref() {
        None => None,
        Some(raw) => match Ident::parse(raw) {
            Ident::Id(id) => Some(id),
            Ident::Name(name) => match snap.state.formation_by_name(name) {
                Some(f) => Some(f.id),
                // No formation has this name yet, so nothing applied so far can match it.
                None => return Ok(page(b"[]", since.max(applied))),
            },
        },
    };
    drop(snap);

    let mut items = Vec::with_capacity(4096);
    items.push(b'[');
    let (mut count, mut scanned, mut after, mut cursor) = (0usize, 0usize, since, since);
    let mut decoder = Decoder::new();
    'scan: while count < limit && scanned < MAX_SCAN && after < applied {
        let batch = ctx
            .log
            .read(after, (MAX_SCAN - scanned).min(MAX_PAGE))
            .await?;
        if batch.is_empty() {
            break;
        }
        for raw in batch {
            if raw.seq > applied {
                break 'scan;
            }
            after = raw.seq;
            cursor = raw.seq;
            scanned += 1;
            let keep = framed(decoder.decode(&raw.payload).as_ref())
                .is_some_and(|f| filter.is_none_or(|want| f.formation == Some(want)));
            if keep {
                if count > 0 {
                    items.push(b',');
                }
                write_frame(&mut items, raw.seq, &raw.payload);
                count += 1;
                if count == limit {
                    break 'scan;
                }
            }
        }
    }
    items.push(b']');
    Ok(page(&items, cursor))
}

fn page(items: &[u8], cursor: u64) -> Response<Body> {
    let mut out = Vec::with_capacity(items.len() + 32);
    out.extend_from_slice(b"{\"events\":");
    out.extend_from_slice(items);
    let _ = write!(out, ",\"cursor\":{cursor}}}");
    json(StatusCode::OK, out)
}

/// `POST /v1/events`: CloudEvents in structured or batch mode. All events are validated before
/// any is appended; the answer waits until they are applied.
pub(super) async fn ingest(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let batch = match media_type(&req).as_deref() {
        Some(STRUCTURED) => false,
        Some(BATCH) => true,
        _ => {
            return Err(ApiError::new(
                Kind::UnsupportedMediaType,
                format!("Expected request with `Content-Type: {STRUCTURED}` or `{BATCH}`"),
            ))
        }
    };
    let body = read_body(req, MAX_INGEST_BYTES, ctx.config.body_timeout).await?;
    let appends = parse_ingest(&body, batch)?;
    // Appended during the boot replay, the events could not be applied (and answered) before
    // the replay is over anyway: wait for it first, so a replay that outlasts the timeout
    // answers 503 with nothing appended.
    let deadline = ctx.write_deadline();
    ctx.until_replayed_by(deadline).await?;
    let seqs = ctx.append_by(appends, deadline).await?;
    if let Some(&last) = seqs.iter().max() {
        ctx.wait_applied(last, deadline).await?;
    }
    let mut out = Vec::with_capacity(16 + seqs.len() * 8);
    out.extend_from_slice(b"{\"seqs\":[");
    for (i, s) in seqs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{s}");
    }
    out.extend_from_slice(b"]}");
    Ok(json(StatusCode::ACCEPTED, out))
}
