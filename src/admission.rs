//! Formation admission: document shape normalization (flat or kubectl-style), name rules and the
//! authority checks (docs/CONTRACT.md, "Formation admission"). Pure and panic-free (fuzzed); the
//! detail strings are part of the wire contract and match the reference server's exactly.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest formation name, in bytes.
pub const MAX_NAME_BYTES: usize = 253;

/// Why a document was refused. Each variant maps to one problem `type` (in `http::problem`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NoCoordinator(String),
    #[error("{0}")]
    DuplicateMemberId(String),
    #[error("{0}")]
    AuthorityNotNarrowing(String),
    #[error("{0}")]
    Cycle(String),
}

impl Rejection {
    pub fn detail(&self) -> &str {
        match self {
            Rejection::BadRequest(d)
            | Rejection::NoCoordinator(d)
            | Rejection::DuplicateMemberId(d)
            | Rejection::AuthorityNotNarrowing(d)
            | Rejection::Cycle(d) => d,
        }
    }
}

/// An admitted formation: its name, member count, and the normalized document to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub name: String,
    pub member_count: usize,
    pub document: Value,
}

#[derive(Deserialize)]
struct FormationDocument {
    name: String,
    coordinator: String,
    members: Vec<FormationMember>,
}

#[derive(Deserialize)]
struct FormationMember {
    id: String,
    #[serde(rename = "authorizedBy", default)]
    authorized_by: Option<String>,
}

fn bad(detail: impl Into<String>) -> Rejection {
    Rejection::BadRequest(detail.into())
}

/// The whole pipeline after the body was read: parse, normalize, read fields, name, authority.
pub fn admit(body: &[u8]) -> Result<Admitted, Rejection> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid json: {e}")))?;
    let document = normalize(value)?;
    let doc: FormationDocument =
        FormationDocument::deserialize(&document).map_err(|e| bad(format!("invalid json: {e}")))?;
    // serde also reads structs from arrays; only the object shapes are documents.
    if !document.is_object() {
        return Err(bad(
            "invalid json: invalid type: sequence, expected struct FormationDocument",
        ));
    }
    if let Some(Value::Array(members)) = document.get("members") {
        if members.iter().any(|m| !m.is_object()) {
            return Err(bad(
                "invalid json: invalid type: sequence, expected struct FormationMember",
            ));
        }
    }
    check_name(&doc.name)?;
    check_authority(&doc)?;
    Ok(Admitted {
        member_count: doc.members.len(),
        name: doc.name,
        document,
    })
}

const FLAT_KEYS: [&str; 3] = ["name", "coordinator", "members"];
const KUBECTL_KEYS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
const KUBECTL: &str = "kubectl-style formation";

/// Decides the shape and returns the flat document to validate and store.
pub fn normalize(value: Value) -> Result<Value, Rejection> {
    let Value::Object(top) = value else {
        return Ok(value);
    };
    let flat: Vec<&str> = FLAT_KEYS
        .into_iter()
        .filter(|k| top.contains_key(*k))
        .collect();
    let kube: Vec<&str> = KUBECTL_KEYS
        .into_iter()
        .filter(|k| top.contains_key(*k))
        .collect();
    if kube.is_empty() {
        return Ok(Value::Object(top));
    }
    if !flat.is_empty() {
        return Err(bad(format!(
            "hybrid formation document: top-level flat field(s) {flat:?} conflict with kubectl-style envelope field(s) {kube:?}; pick exactly one shape (see contracts/schemas/formation-v1.schema.json)"
        )));
    }
    normalize_kubectl(top)
}

fn normalize_kubectl(top: Map<String, Value>) -> Result<Value, Rejection> {
    let unknown: BTreeSet<&str> = top
        .keys()
        .map(String::as_str)
        .filter(|k| !KUBECTL_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        let unknown: Vec<&str> = unknown.into_iter().collect();
        return Err(bad(format!(
            "{KUBECTL}: unknown top-level field(s) {unknown:?}; allowed: {KUBECTL_KEYS:?}"
        )));
    }
    match top.get("apiVersion") {
        Some(Value::String(v)) if v == "cellos.dev/v1" => {}
        Some(Value::String(v)) => {
            return Err(bad(format!(
                "{KUBECTL}: unsupported apiVersion '{v}' (expected \"cellos.dev/v1\")"
            )))
        }
        _ => {
            return Err(bad(format!(
                "{KUBECTL}: missing or non-string 'apiVersion' (expected \"cellos.dev/v1\")"
            )))
        }
    }
    match top.get("kind") {
        Some(Value::String(k)) if k == "Formation" => {}
        Some(Value::String(k)) => {
            return Err(bad(format!(
                "{KUBECTL}: unsupported kind '{k}' (expected \"Formation\")"
            )))
        }
        _ => {
            return Err(bad(format!(
                "{KUBECTL}: missing or non-string 'kind' (expected \"Formation\")"
            )))
        }
    }
    let Some(Value::Object(metadata)) = top.get("metadata") else {
        return Err(bad(format!("{KUBECTL}: missing 'metadata' object")));
    };
    let Some(Value::String(name)) = metadata.get("name") else {
        return Err(bad(format!("{KUBECTL}: missing 'metadata.name'")));
    };
    let Some(Value::Object(spec)) = top.get("spec") else {
        return Err(bad(format!("{KUBECTL}: missing 'spec' object")));
    };
    let Some(Value::String(coordinator)) = spec.get("coordinator") else {
        return Err(bad(format!("{KUBECTL}: missing 'spec.coordinator'")));
    };
    let Some(Value::Array(members)) = spec.get("members") else {
        return Err(bad(format!(
            "{KUBECTL}: missing or non-array 'spec.members'"
        )));
    };
    let mut flat_members = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(bad(format!(
                "{KUBECTL}: spec.members[{i}] is not an object"
            )));
        };
        let Some(Value::String(member_name)) = m.get("name") else {
            return Err(bad(format!("{KUBECTL}: spec.members[{i}] missing 'name'")));
        };
        if m.contains_key("id") {
            return Err(bad(format!(
                "{KUBECTL}: spec.members[{i}] declares both 'name' and 'id'; kubectl manifests address members by 'name' only — remove the 'id' field"
            )));
        }
        let mut flat = Map::new();
        flat.insert("id".into(), Value::String(member_name.clone()));
        for (k, v) in m {
            if k != "name" {
                flat.insert(k.clone(), v.clone());
            }
        }
        flat_members.push(Value::Object(flat));
    }
    let mut kept_metadata = Map::new();
    for key in ["labels", "annotations"] {
        match metadata.get(key) {
            None => {}
            Some(v @ Value::Object(_)) => {
                kept_metadata.insert(key.into(), v.clone());
            }
            Some(_) => {
                return Err(bad(format!(
                    "{KUBECTL}: 'metadata.{key}' must be an object"
                )))
            }
        }
    }
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name.clone()));
    out.insert("coordinator".into(), Value::String(coordinator.clone()));
    out.insert("members".into(), Value::Array(flat_members));
    if !kept_metadata.is_empty() {
        out.insert("metadata".into(), Value::Object(kept_metadata));
    }
    Ok(Value::Object(out))
}

/// Name rules, in order; they work on bytes.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(bad("formation name must not be empty"));
    }
    if bytes.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "formation name length {} exceeds maximum of {MAX_NAME_BYTES} bytes",
            bytes.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(bad(format!("formation name '{name}' is reserved")));
    }
    if let Some((i, &b)) = bytes
        .iter()
        .enumerate()
        .find(|(_, &b)| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
    {
        let shown = if (0x21..=0x7e).contains(&b) {
            format!("'{}'", b as char)
        } else {
            format!("\\x{b:02x}")
        };
        return Err(bad(format!(
            "formation name contains disallowed character {shown} at byte offset {i} (allowed: A-Z a-z 0-9 . - _)"
        )));
    }
    if bytes[0] == b'-' || bytes[0] == b'.' {
        return Err(bad(format!(
            "formation name '{name}' must not start with '-' or '.'"
        )));
    }
    if matches!(bytes[bytes.len() - 1], b'-' | b'.') {
        return Err(bad(format!(
            "formation name '{name}' must not end with '-' or '.'"
        )));
    }
    Ok(())
}

/// Authority rules: one coordinator among the members, unique ids, every other member authorized by a
/// known member, and no authorization cycles. Checked in this order; the first failure wins.
fn check_authority(doc: &FormationDocument) -> Result<(), Rejection> {
    if !doc.members.iter().any(|m| m.id == doc.coordinator) {
        return Err(Rejection::NoCoordinator(format!(
            "coordinator '{}' must appear in members list",
            doc.coordinator
        )));
    }
    let mut parent: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for m in &doc.members {
        if parent.insert(&m.id, m.authorized_by.as_deref()).is_some() {
            return Err(Rejection::DuplicateMemberId(format!(
                "duplicate member id '{}'",
                m.id
            )));
        }
    }
    for m in &doc.members {
        let by = m.authorized_by.as_deref();
        if m.id == doc.coordinator {
            if by.is_some() {
                return Err(Rejection::AuthorityNotNarrowing(format!(
                    "coordinator '{}' must not declare authorizedBy",
                    m.id
                )));
            }
            continue;
        }
        let Some(p) = by else {
            return Err(Rejection::AuthorityNotNarrowing(format!(
                "non-coordinator member '{}' missing authorizedBy",
                m.id
            )));
        };
        if !parent.contains_key(p) {
            return Err(Rejection::AuthorityNotNarrowing(format!(
                "member '{}' references unknown parent '{p}'",
                m.id
            )));
        }
    }
    // Follow each chain at most one hop per member: a chain longer than that must loop.
    let hops = doc.members.len();
    for m in doc.members.iter().filter(|m| m.id != doc.coordinator) {
        let mut at: &str = &m.id;
        for _ in 0..hops {
            match parent.get(at).copied().flatten() {
                Some(next) if next == m.id => {
                    return Err(Rejection::Cycle(format!(
                        "authorizedBy cycle detected involving member '{}'",
                        m.id
                    )))
                }
                Some(next) => at = next,
                None => break,
            }
        }
        if parent.get(at).copied().flatten().is_some() {
            return Err(Rejection::Cycle(format!(
                "authorizedBy cycle detected on chain starting at '{}'",
                m.id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
