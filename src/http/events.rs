//! `/v1/events`: paging through the log (GET) and CloudEvents ingestion over HTTP (POST).

use std::io::Write as _;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::body::{media_type, read_body};
use super::formations::Ident;
use super::problem::{ApiError, Kind};
use super::query::EventsQuery;
use super::{json, Body, Ctx};
use crate::event::decode::{DecodeError, Decoder};
use crate::event::subject::ingest_subject;
use crate::log::{Append, MAX_DEDUPE_ID_BYTES};

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Most log events one page request examines (a formation filter may skip many): the cursor
/// still advances past them, so paging never stalls.
pub const MAX_SCAN: usize = 10_000;
/// Largest ingestion body.
pub const MAX_INGEST_BYTES: usize = 1024 * 1024;
/// Most events in one ingestion batch.
pub const MAX_INGEST_EVENTS: usize = 1000;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// `GET /v1/events?since=&limit=&formation=`: events after `since` that this server has applied,
/// oldest first, each as `{"seq":N,"event":<stored payload>}`.
pub async fn list(ctx: &Ctx, query: Option<&str>) -> Result<Response<Body>, ApiError> {
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
            let keep = match decoder.decode(&raw.payload) {
                Ok(ev) => filter.is_none_or(|want| {
                    ev.formation_id.and_then(|f| Uuid::parse_str(f).ok()) == Some(want)
                }),
                Err(DecodeError::NotObject(_)) => filter.is_none(),
                Err(_) => false,
            };
            if keep {
                if count > 0 {
                    items.push(b',');
                }
                let _ = write!(items, "{{\"seq\":{},\"event\":", raw.seq);
                items.extend_from_slice(&raw.payload);
                items.push(b'}');
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
pub async fn ingest(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
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
    let seqs = tokio::time::timeout(ctx.config.write_timeout, ctx.log.append(appends))
        .await
        .map_err(|_| ApiError::unavailable(super::problem::STORE_UNAVAILABLE))??;
    if let Some(&last) = seqs.iter().max() {
        ctx.wait_applied(last).await?;
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

/// Validates an ingestion body and turns it into appends. Pure; fuzzed.
pub fn parse_ingest(body: &Bytes, batch: bool) -> Result<Vec<Append>, ApiError> {
    let invalid_json = |e: serde_json::Error| ApiError::bad_request(format!("invalid json: {e}"));
    let raws: Vec<&RawValue> = if batch {
        serde_json::from_slice(body).map_err(invalid_json)?
    } else {
        vec![serde_json::from_slice(body).map_err(invalid_json)?]
    };
    if raws.len() > MAX_INGEST_EVENTS {
        return Err(ApiError::new(
            Kind::PayloadTooLarge,
            format!(
                "batch of {} events exceeds the limit of {MAX_INGEST_EVENTS}",
                raws.len()
            ),
        ));
    }
    let mut decoder = Decoder::new();
    let mut out = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let at = if batch {
            format!("events[{i}]")
        } else {
            "event".to_owned()
        };
        let bytes = raw.get().as_bytes();
        let ev = decoder.decode(bytes).map_err(|e| match e {
            DecodeError::NotObject(_) => {
                ApiError::bad_request(format!("{at}: must be a JSON object"))
            }
            other => ApiError::bad_request(format!("{at}: {other}")),
        })?;
        if ev.specversion != Some("1.0") {
            return Err(ApiError::bad_request(format!(
                "{at}.specversion: must be \"1.0\""
            )));
        }
        let required = |field: &str, v: Option<&str>| -> Result<String, ApiError> {
            match v {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err(ApiError::bad_request(format!(
                    "{at}.{field}: must be a non-empty string"
                ))),
            }
        };
        let id = required("id", ev.id)?;
        if id.len() > MAX_DEDUPE_ID_BYTES {
            return Err(ApiError::bad_request(format!(
                "{at}.id: must be at most {MAX_DEDUPE_ID_BYTES} bytes"
            )));
        }
        required("source", ev.source)?;
        let ty = required("type", ev.ty)?;
        out.push(Append {
            subject: ingest_subject(ev.data_formation_id, ev.cell_id, &ty),
            payload: body.slice_ref(bytes),
            dedupe_id: id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, batch: bool) -> Result<Vec<Append>, String> {
        parse_ingest(&Bytes::copy_from_slice(body.as_bytes()), batch).map_err(|e| e.detail)
    }

    const OK: &str = r#"{"specversion":"1.0","id":"e1","source":"s","type":"a.b.started","data":{"cellId":"c 1"}}"#;

    #[test]
    fn structured_and_batch() {
        let one = parse(&format!(" {OK}\n"), false).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(&one[0].payload[..], OK.as_bytes());
        assert_eq!(one[0].subject, "cellos.events.cells.c%201.started");
        assert_eq!(one[0].dedupe_id, "e1");
        let two = parse(&format!("[{OK}, {OK}]"), true).unwrap();
        assert_eq!(two.len(), 2);
        assert!(parse("[]", true).unwrap().is_empty());
    }

    #[test]
    fn validation_names_index_and_field() {
        let bad = r#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#;
        assert_eq!(
            parse(&format!("[{OK},{bad}]"), true).unwrap_err(),
            "events[1].id: must be a non-empty string"
        );
        assert_eq!(
            parse(
                r#"{"specversion":"0.3","id":"x","source":"s","type":"t"}"#,
                false
            )
            .unwrap_err(),
            "event.specversion: must be \"1.0\""
        );
        assert_eq!(
            parse("[1]", true).unwrap_err(),
            "events[0]: must be a JSON object"
        );
        assert!(parse("{", false).unwrap_err().starts_with("invalid json: "));
        assert!(parse(OK, true).unwrap_err().starts_with("invalid json: "));
        // Deep nesting is refused (by the event decoder's depth limit), never a stack overflow.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&deep, true).unwrap_err();
        assert!(
            err.starts_with("events[0]: payload is not valid JSON"),
            "{err}"
        );
        let deep_obj = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(parse(&deep_obj, false).is_err());
        let many = format!("[{}]", vec![OK; MAX_INGEST_EVENTS + 1].join(","));
        assert!(parse(&many, true)
            .unwrap_err()
            .contains("exceeds the limit of 1000"));
    }
}
