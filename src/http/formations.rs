//! Formation reads: the list, by id or name, by explicit name.

use std::io::Write as _;

use http::{Response, StatusCode};
use super::{json, render};
use crate::app::{Body, Ctx, Ident};
use crate::problem::ApiError;
use crate::state::FormationRecord;

/// `GET /v1/formations`: every formation in ascending id order, and the snapshot's cursor.
pub(super) fn list(ctx: &Ctx) -> Response<Body> {
    let snap = ctx.reader.load();
    let mut out = Vec::with_capacity(64 + snap.state.formation_count() * 256);
    out.extend_from_slice(b"{\"formations\":");
    render::array(&mut out, snap.state.formations(), |o, f| {
        render::formation(o, f)
    });
    let _ = write!(out, ",\"cursor\":{}}}", snap.cursor);
    json(StatusCode::OK, out)
}

fn one(f: &FormationRecord) -> Response<Body> {
    let mut out = Vec::with_capacity(256 + f.document.len());
    render::formation(&mut out, f);
    json(StatusCode::OK, out)
}

/// `GET /v1/formations/{ident}`: a UUID, or else a name.
pub(super) fn get(ctx: &Ctx, ident: &str) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    Ident::parse(ident).resolve(&snap.state).map(one)
}

/// `GET /v1/formations/by-name/{name}`: the newest formation with that name.
pub(super) fn get_by_name(ctx: &Ctx, name: &str) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    Ident::Name(name).resolve(&snap.state).map(one)
}
