//! JSON rendering of records and pages, written straight into one buffer. Deterministic: the same
//! snapshot always renders the same bytes (restart equality depends on it).

use std::io::Write as _;

use crate::state::{Cell, FormationRecord};

fn str_lit(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => str_lit(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `{"id","name","status","document","created_at","updated_at"}`. Never a `state` key or a
/// `cells: null` (cellctl rejects both).
pub(super) fn formation(out: &mut Vec<u8>, f: &FormationRecord) {
    out.extend_from_slice(b"{\"id\":\"");
    let _ = write!(out, "{}", f.id.hyphenated());
    out.extend_from_slice(b"\",\"name\":");
    str_lit(out, &f.name);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(f.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"document\":");
    out.extend_from_slice(&f.document);
    out.extend_from_slice(b",\"created_at\":");
    opt_str(out, f.created_at.as_deref());
    out.extend_from_slice(b",\"updated_at\":");
    opt_str(out, f.updated_at.as_deref());
    out.push(b'}');
}

/// Every key always present, snake_case, `null` when unset; `status` mirrors `state`.
pub(super) fn cell(out: &mut Vec<u8>, c: Cell<'_>) {
    out.extend_from_slice(b"{\"id\":");
    str_lit(out, c.id());
    out.extend_from_slice(b",\"spec_id\":");
    str_lit(out, c.spec_id());
    out.extend_from_slice(b",\"run_id\":");
    opt_str(out, c.run_id());
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(c.state().as_str().as_bytes());
    out.extend_from_slice(b"\",\"status\":\"");
    out.extend_from_slice(c.state().as_str().as_bytes());
    out.extend_from_slice(b"\",\"formation_id\":");
    opt_str(out, c.formation_id());
    out.extend_from_slice(b",\"started_at\":");
    opt_str(out, c.started_at().as_deref());
    out.extend_from_slice(b",\"destroyed_at\":");
    opt_str(out, c.destroyed_at().as_deref());
    out.extend_from_slice(b",\"outcome\":");
    opt_str(out, c.outcome().as_deref());
    out.extend_from_slice(b",\"exit_code\":");
    match c.exit_code() {
        Some(code) => {
            let _ = write!(out, "{code}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Writes `[item,item,…]`.
pub(super) fn array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}
