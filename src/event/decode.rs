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
    match nodes.first() {
        Some(Node::Object { .. }) => {}
        Some(n) => return Err(DecodeError::NotObject(type_name(n))),
        None => return Err(DecodeError::NotObject("nothing")),
    }
    // One pass over the envelope and one over `data`: each key is compared once. The first
    // occurrence of a duplicated key wins, whatever its type (as a lookup would find it).
    const ENVELOPE: [&str; 7] = [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "data",
    ];
    const DATA: [&str; 11] = [
        "cellId",
        "specId",
        "runId",
        "outcome",
        "formationId",
        "formation_id",
        "formationName",
        "name",
        "correlation",
        "document",
        "exitCode",
    ];
    let [specversion, id, source, ty, time, subject, data] = first_of(nodes, ENVELOPE);
    let data = data.filter(|d| matches!(d.first(), Some(Node::Object { .. })));
    let [cell_id, spec_id, run_id, outcome, formation_id, formation_id_snake, formation_name, name, correlation, document, exit_code] =
        data.map_or([None; DATA.len()], |d| first_of(d, DATA));
    let ty = ty.and_then(as_str);
    let kind = Kind::from_type(ty.unwrap_or(""));
    let is_formation = matches!(kind, Kind::Formation(_) | Kind::FormationUnknownPhase);
    let data_formation_id = formation_id.and_then(as_str);
    let (document, member_count) = if is_formation {
        let doc = document
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
    Ok(Event {
        kind,
        specversion: specversion.and_then(as_str),
        id: id.and_then(as_str),
        source: source.and_then(as_str),
        ty,
        data_formation_id,
        time: time.and_then(as_str),
        cell_id: cell_id.and_then(as_str),
        spec_id: spec_id.and_then(as_str),
        run_id: run_id.and_then(as_str),
        exit_code: exit_code.and_then(|n| match n.first() {
            Some(Node::Static(StaticNode::I64(v))) => Some(*v),
            Some(Node::Static(StaticNode::U64(v))) => i64::try_from(*v).ok(),
            _ => None,
        }),
        outcome: outcome.and_then(as_str),
        formation_id: data_formation_id
            .or_else(|| formation_id_snake.and_then(as_str))
            .or_else(|| is_formation.then(|| subject.and_then(as_str)).flatten())
            .or_else(|| correlation.and_then(|c| get_str(c, "formationId"))),
        formation_name: formation_name
            .and_then(as_str)
            .or_else(|| name.and_then(as_str)),
        member_count,
        document,
    })
}

/// The value of each of `keys` in the object at `nodes[0]`, in one pass over its members.
fn first_of<'t, 'i, const N: usize>(
    nodes: &'t [Node<'i>],
    keys: [&str; N],
) -> [Option<&'t [Node<'i>]>; N] {
    let mut found = [None; N];
    for (key, value) in members(nodes) {
        if let Some(i) = keys.iter().position(|k| *k == key) {
            if found[i].is_none() {
                found[i] = Some(value);
            }
        }
    }
    found
}

fn as_str<'i>(value: &[Node<'i>]) -> Option<&'i str> {
    match value.first()? {
        Node::String(s) => Some(*s),
        _ => None,
    }
}

/// The members of the object at `nodes[0]` (none when it is not an object), in input order.
fn members<'t, 'i>(nodes: &'t [Node<'i>]) -> impl Iterator<Item = (&'i str, &'t [Node<'i>])> + 't {
    let len = match nodes.first() {
        Some(&Node::Object { len, .. }) => len,
        _ => 0,
    };
    let mut idx = 1;
    (0..len).map_while(move |_| {
        let Some(&Node::String(k)) = nodes.get(idx) else {
            return None;
        };
        let value = nodes.get(idx + 1..)?;
        let n = span(value);
        idx += 1 + n;
        Some((k, value.get(..n)?))
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
    members(nodes).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn get_str<'i>(nodes: &[Node<'i>], key: &str) -> Option<&'i str> {
    get(nodes, key).and_then(as_str)
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
        // Also when the first occurrence is not a string, and inside `data`.
        let ev = decode(
            r#"{"time":1,"time":"t","data":{"cellId":null,"cellId":"c","specId":"a","specId":"b"}}"#,
        )
        .unwrap();
        assert_eq!((ev.time, ev.cell_id, ev.spec_id), (None, None, Some("a")));
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
