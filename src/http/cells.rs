//! Cell reads: the filtered list and single records.

use http::{Response, StatusCode};

use crate::app::Ident;
use crate::problem::ApiError;
use super::query::CellsQuery;
use super::{json, render};
use crate::app::{Body, Ctx};
use crate::state::apply::normalize_formation_ref;
use crate::state::{Cell, CellState};

/// Largest `limit` honoured; larger values are clamped.
pub(super) const MAX_CELLS_LIMIT: usize = 1000;

/// `GET /v1/cells[?state=][&formation=][&limit=]`: a bare array in ascending id order.
pub(super) fn list(ctx: &Ctx, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let q = CellsQuery::parse(query)?;
    let state = match q.state.as_deref().map(str::to_lowercase) {
        None => None,
        Some(s) => Some(CellState::parse(&s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown ?state value: {s} (want pending|running|destroyed)"
            ))
        })?),
    };
    let limit = q.limit.map_or(usize::MAX, |l| l.min(MAX_CELLS_LIMIT));
    let snap = ctx.reader.load();
    let keep = |c: &Cell<'_>| state.is_none_or(|s| c.state() == s);
    let mut out = Vec::with_capacity(4096);
    match q.formation.as_deref() {
        None => render::array(
            &mut out,
            snap.state.cells().filter(keep).take(limit),
            |o, c| render::cell(o, c),
        ),
        Some(raw) => {
            // A name resolves to the newest formation with it; anything else is matched as sent.
            let key = match Ident::parse(raw) {
                Ident::Id(id) => normalize_formation_ref(&id.hyphenated().to_string()),
                Ident::Name(name) => match snap.state.formation_by_name(name) {
                    Some(f) => normalize_formation_ref(&f.id.hyphenated().to_string()),
                    None => normalize_formation_ref(name),
                },
            };
            render::array(
                &mut out,
                snap.state.cells_of_formation(&key).filter(keep).take(limit),
                |o, c| render::cell(o, c),
            )
        }
    }
    Ok(json(StatusCode::OK, out))
}

/// `GET /v1/cells/{id}`.
pub(super) fn get(ctx: &Ctx, id: &str) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    let cell = snap
        .state
        .cell(id)
        .ok_or_else(|| ApiError::not_found(format!("cell {id} not found")))?;
    let mut out = Vec::with_capacity(256);
    render::cell(&mut out, cell);
    Ok(json(StatusCode::OK, out))
}
