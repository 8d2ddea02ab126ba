//! Formation reads: the list, by id or name, by explicit name.

use std::io::Write as _;

use http::{Response, StatusCode};
use uuid::Uuid;

use super::problem::ApiError;
use super::{json, render, Body, Ctx};
use crate::state::{FormationRecord, State};

/// `GET /v1/formations`: every formation in ascending id order, and the snapshot's cursor.
pub fn list(ctx: &Ctx) -> Response<Body> {
    let snap = ctx.reader.load();
    let mut out = Vec::with_capacity(64 + snap.state.formation_count() * 256);
    out.extend_from_slice(b"{\"formations\":");
    render::array(&mut out, snap.state.formations(), |o, f| {
        render::formation(o, f)
    });
    let _ = write!(out, ",\"cursor\":{}}}", snap.cursor);
    json(StatusCode::OK, out)
}

/// How a client addressed a formation.
pub enum Ident<'a> {
    Id(Uuid),
    Name(&'a str),
}

impl<'a> Ident<'a> {
    /// A UUID in any form the reference accepts (hyphenated, simple, braced, urn; any case),
    /// otherwise a name.
    pub fn parse(raw: &'a str) -> Ident<'a> {
        match Uuid::parse_str(raw) {
            Ok(id) => Ident::Id(id),
            Err(_) => Ident::Name(raw),
        }
    }

    pub fn resolve<'s>(&self, state: &'s State) -> Result<&'s FormationRecord, ApiError> {
        match self {
            Ident::Id(id) => state.formation(id).map(|f| &**f).ok_or_else(|| {
                ApiError::not_found(format!("formation {} not found", id.hyphenated()))
            }),
            Ident::Name(name) => by_name(state, name),
        }
    }
}

fn by_name<'s>(state: &'s State, name: &str) -> Result<&'s FormationRecord, ApiError> {
    state
        .formation_by_name(name)
        .map(|f| &**f)
        .ok_or_else(|| ApiError::not_found(format!("formation '{name}' not found")))
}

fn one(f: &FormationRecord) -> Response<Body> {
    let mut out = Vec::with_capacity(256 + f.document.len());
    render::formation(&mut out, f);
    json(StatusCode::OK, out)
}

/// `GET /v1/formations/{ident}`: a UUID, or else a name.
pub fn get(ctx: &Ctx, ident: &str) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    Ident::parse(ident).resolve(&snap.state).map(one)
}

/// `GET /v1/formations/by-name/{name}`: the newest formation with that name.
pub fn get_by_name(ctx: &Ctx, name: &str) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    by_name(&snap.state, name).map(one)
}
