//! How a client addressed a formation, by id or by name, in a path or a query.

use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::{FormationRecord, State};

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

