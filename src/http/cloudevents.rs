//! CloudEvents ingestion bodies (structured and batch mode) → validated appends. Pure; fuzzed.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::event::decode::{DecodeError, Decoder};
use crate::event::subject::ingest_subject;
use crate::log::{Append, MAX_DEDUPE_ID_BYTES};
use crate::problem::{ApiError, Kind};

/// Largest ingestion body.
pub const MAX_INGEST_BYTES: usize = 1024 * 1024;
/// Most events in one ingestion batch.
pub const MAX_INGEST_EVENTS: usize = 1000;

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
