//! Payload bytes → [`Event`], with simd-json's tape API. Pure and panic-free (fuzzed).
//!
//! simd-json parses in place, so the payload is copied once into a reused scratch buffer; the
//! caller keeps the original bytes for forwarding. Parser buffers and the tape are reused across
//! calls: at small document sizes allocation would otherwise dominate.

use std::io::Write as _;

use bytes::Bytes;
use simd_json::{Buffers, Node, StaticNode, Tape};

use super::{Event, Kind};

/// Largest payload the decoder accepts. Larger ones are refused before parsing.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why a payload could not be decoded. Every variant is counted, none panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload is a JSON {0}, not an object")]
    NotObject(&'static str),
    #[error("payload of {0} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")]
    TooLarge(usize),
}

impl DecodeError {
    /// Stable labels for metrics, indexed by [`DecodeError::index`].
    pub const REASONS: [&'static str; 3] = ["not_json", "not_object", "too_large"];

    pub fn index(&self) -> usize {
        match self {
            DecodeError::NotJson(_) => 0,
            DecodeError::NotObject(_) => 1,
            DecodeError::TooLarge(_) => 2,
        }
    }

    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

/// A reusable decoder. One per thread; cheap to create, cheaper to reuse.
pub struct Decoder {
    buffers: Buffers,
    scratch: Vec<u8>,
    tape: Option<Tape<'static>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buffers: Buffers::new(4096),
            scratch: Vec::with_capacity(4096 + simd_json::INPUT_PADDING),
            tape: Some(Tape::null().reset()),
        }
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one stored payload. The returned event borrows this decoder until it is dropped.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Event<'_>, DecodeError> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let Decoder {
            buffers,
            scratch,
            tape: slot,
        } = self;
        scratch.clear();
        scratch.extend_from_slice(payload);
        let len = scratch.len();
        scratch.resize(len + simd_json::INPUT_PADDING, 0);
        let mut tape: Tape<'_> = slot.take().unwrap_or_else(|| Tape::null().reset()).reset();
        let parsed = simd_json::fill_tape_padded(scratch, len, buffers, &mut tape);
        let result = match parsed {
            Err(e) => Err(DecodeError::NotJson(e.to_string())),
            Ok(()) => extract(&tape.0),
        };
        *slot = Some(tape.reset());
        result
    }

    /// Whether `payload` is one complete JSON value (what a frame may embed verbatim).
    pub fn is_json(&mut self, payload: &[u8]) -> bool {
        match self.decode(payload) {
            Ok(_) | Err(DecodeError::NotObject(_)) => true,
            Err(_) => false,
        }
    }
}

fn extract<'i>(nodes: &[Node<'i>]) -> Result<Event<'i>, DecodeError> {
    let root = match nodes.first() {
        Some(Node::Object { .. }) => nodes,
        Some(n) => return Err(DecodeError::NotObject(type_name(n))),
        None => return Err(DecodeError::NotObject("nothing")),
    };
    let ty = get_str(root, "type").unwrap_or("");
    let kind = Kind::from_type(ty);
    let data = get(root, "data").filter(|d| matches!(d.first(), Some(Node::Object { .. })));
    let data_str = |key: &str| data.and_then(|d| get_str(d, key));
    let correlation_formation = || {
        data.and_then(|d| get(d, "correlation"))
            .and_then(|c| get_str(c, "formationId"))
    };
    let is_formation = matches!(kind, Kind::Formation(_) | Kind::FormationUnknownPhase);
    let formation_id = data_str("formationId")
        .or_else(|| data_str("formation_id"))
        .or_else(|| is_formation.then(|| get_str(root, "subject")).flatten())
        .or_else(correlation_formation);
    let (document, member_count) = if is_formation {
        let doc = data
            .and_then(|d| get(d, "document"))
            .or(data)
            .unwrap_or(&[Node::Static(StaticNode::Null)]);
        let members = match get(doc, "members").and_then(|m| m.first()) {
            Some(Node::Array { len, .. }) => Some(*len),
            _ => None,
        };
        let mut out = Vec::with_capacity(128);
        write_canonical(doc, &mut out);
        (Some(Bytes::from(out)), members)
    } else {
        (None, None)
    };
    let exit_code = data
        .and_then(|d| get(d, "exitCode"))
        .and_then(|n| match n.first() {
            Some(Node::Static(StaticNode::I64(v))) => Some(*v),
            Some(Node::Static(StaticNode::U64(v))) => i64::try_from(*v).ok(),
            _ => None,
        });
    Ok(Event {
        kind,
        specversion: get_str(root, "specversion"),
        id: get_str(root, "id"),
        source: get_str(root, "source"),
        ty: get_str(root, "type"),
        data_formation_id: data_str("formationId"),
        time: get_str(root, "time"),
        cell_id: data_str("cellId"),
        spec_id: data_str("specId"),
        run_id: data_str("runId"),
        exit_code,
        outcome: data_str("outcome"),
        formation_id,
        formation_name: data_str("formationName").or_else(|| data_str("name")),
        member_count,
        document,
    })
}

/// Number of tape nodes the value starting at `nodes[0]` spans.
fn span(nodes: &[Node<'_>]) -> usize {
    match nodes.first() {
        Some(Node::Object { count, .. }) | Some(Node::Array { count, .. }) => count + 1,
        _ => 1,
    }
}

/// Looks up `key` in the object at `nodes[0]`. Duplicate keys: the first one wins.
fn get<'t, 'i>(nodes: &'t [Node<'i>], key: &str) -> Option<&'t [Node<'i>]> {
    let Some(&Node::Object { len, .. }) = nodes.first() else {
        return None;
    };
    let mut idx = 1;
    for _ in 0..len {
        let k = match nodes.get(idx)? {
            Node::String(k) => *k,
            _ => return None,
        };
        idx += 1;
        let value = nodes.get(idx..)?;
        let n = span(value);
        if k == key {
            return value.get(..n);
        }
        idx += n;
    }
    None
}

fn get_str<'i>(nodes: &[Node<'i>], key: &str) -> Option<&'i str> {
    match get(nodes, key)?.first()? {
        Node::String(s) => Some(*s),
        _ => None,
    }
}

fn type_name(node: &Node<'_>) -> &'static str {
    match node {
        Node::String(_) => "string",
        Node::Array { .. } => "array",
        Node::Object { .. } => "object",
        Node::Static(StaticNode::Null) => "null",
        Node::Static(StaticNode::Bool(_)) => "boolean",
        Node::Static(_) => "number",
    }
}

/// Writes the value at `nodes[0]` as compact JSON with object keys sorted (first duplicate wins),
/// so a document renders the same bytes whatever order its producer wrote. Depth is bounded by
/// the parser (simd-json refuses nesting deeper than 1024).
pub(crate) fn write_canonical(nodes: &[Node<'_>], out: &mut Vec<u8>) {
    match nodes.first() {
        None | Some(Node::Static(StaticNode::Null)) => out.extend_from_slice(b"null"),
        Some(Node::Static(StaticNode::Bool(b))) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" })
        }
        Some(Node::Static(StaticNode::I64(v))) => {
            let _ = write!(out, "{v}");
        }
        Some(Node::Static(StaticNode::U64(v))) => {
            let _ = write!(out, "{v}");
        }
        Some(Node::Static(StaticNode::F64(v))) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        Some(Node::String(s)) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Some(Node::Array { len, .. }) => {
            out.push(b'[');
            let mut idx = 1;
            for i in 0..*len {
                let Some(value) = nodes.get(idx..) else { break };
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(value, out);
                idx += span(value);
            }
            out.push(b']');
        }
        Some(Node::Object { len, .. }) => {
            let mut members: Vec<(&str, &[Node<'_>])> = Vec::with_capacity(*len);
            let mut idx = 1;
            for _ in 0..*len {
                let (Some(Node::String(k)), Some(value)) = (nodes.get(idx), nodes.get(idx + 1..))
                else {
                    break;
                };
                let n = span(value);
                members.push((k, value.get(..n).unwrap_or(value)));
                idx += 1 + n;
            }
            // A stable sort keeps duplicates in input order, so `dedup_by` keeps the first.
            members.sort_by(|a, b| a.0.cmp(b.0));
            members.dedup_by(|later, earlier| later.0 == earlier.0);
            out.push(b'{');
            for (i, (k, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Phase;

    fn decode(json: &str) -> Result<Event<'static>, DecodeError> {
        // Tests only: leak the decoder so the event can outlive this helper.
        Box::leak(Box::new(Decoder::new())).decode(json.as_bytes())
    }

    #[test]
    fn cell_started_fields() {
        let ev = decode(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"dev.cellos.events.cell.lifecycle.v1.started",
                "time":"2026-01-01T00:00:00.000Z","data":{"cellId":"c\u00e91","specId":"sp","runId":"r",
                "correlation":{"formationId":"F"}}}"#,
        )
        .unwrap();
        assert_eq!(ev.kind, Kind::CellStarted);
        assert_eq!(ev.cell_id, Some("cé1"));
        assert_eq!(ev.spec_id, Some("sp"));
        assert_eq!(ev.run_id, Some("r"));
        assert_eq!(ev.time, Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(ev.formation_id, Some("F"));
        assert_eq!(ev.document, None);
    }

    #[test]
    fn exit_code_only_integers_in_i64() {
        let code = |v: &str| {
            decode(&format!(
                r#"{{"type":"dev.cellos.events.cell.command.v1.completed","data":{{"exitCode":{v}}}}}"#
            ))
            .unwrap()
            .exit_code
        };
        assert_eq!(code("3"), Some(3));
        assert_eq!(code("-1"), Some(-1));
        assert_eq!(code("4294967297"), Some(4294967297));
        assert_eq!(code("18446744073709551615"), None);
        assert_eq!(code("1.0"), None);
        assert_eq!(code("\"1\""), None);
    }

    #[test]
    fn formation_id_precedence_and_document() {
        let ev = decode(
            r#"{"type":"dev.cellos.events.cell.formation.v1.created","subject":"S",
                "data":{"formation_id":"B","formationName":"n","document":{"z":1,"a":[true,null,1.5],"z":2}}}"#,
        )
        .unwrap();
        assert_eq!(ev.kind, Kind::Formation(Phase::Created));
        assert_eq!(ev.formation_id, Some("B"));
        assert_eq!(ev.formation_name, Some("n"));
        assert_eq!(
            ev.document.as_deref(),
            Some(&br#"{"a":[true,null,1.5],"z":1}"#[..])
        );
        assert_eq!(ev.member_count, None);

        let ev =
            decode(r#"{"type":"io.cellos.formation.v1.failed","subject":"S","data":{"name":"x"}}"#)
                .unwrap();
        assert_eq!(ev.kind, Kind::Formation(Phase::Failed));
        assert_eq!(ev.formation_id, Some("S"));
        assert_eq!(ev.formation_name, Some("x"));
        assert_eq!(ev.document.as_deref(), Some(&br#"{"name":"x"}"#[..]));

        // The envelope subject is a formation id only for formation events.
        let ev = decode(r#"{"type":"x.y","subject":"S","data":{}}"#).unwrap();
        assert_eq!(ev.formation_id, None);
        assert_eq!(ev.kind, Kind::Other);
    }

    #[test]
    fn duplicate_keys_first_wins() {
        let ev =
            decode(r#"{"type":"a","type":"dev.cellos.events.cell.lifecycle.v1.started"}"#).unwrap();
        assert_eq!(ev.kind, Kind::Other);
    }

    #[test]
    fn errors_are_values() {
        assert!(matches!(decode(""), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode("{"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            decode("[1]"),
            Err(DecodeError::NotObject("array"))
        ));
        assert!(matches!(
            decode("null"),
            Err(DecodeError::NotObject("null"))
        ));
        let deep = "[".repeat(100_000);
        assert!(matches!(decode(&deep), Err(DecodeError::NotJson(_))));
        let deep_ok = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(matches!(
            decode(&deep_ok),
            Err(DecodeError::NotObject("array"))
        ));
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        let mut d = Decoder::new();
        assert!(matches!(d.decode(&big), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn reuse_across_sizes() {
        let mut d = Decoder::new();
        for n in [10usize, 10_000, 5, 100_000, 1] {
            let json = format!(r#"{{"type":"t","data":{{"cellId":"{}"}}}}"#, "x".repeat(n));
            let ev = d.decode(json.as_bytes()).unwrap();
            assert_eq!(ev.cell_id.map(str::len), Some(n));
        }
        assert!(d.is_json(b"[1,2]"));
        assert!(!d.is_json(b"[1,2"));
    }
}
