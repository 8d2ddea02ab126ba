//! The `/ws/events` query, with the exact detail strings clients see. Pure.

use crate::form::{once, pairs, parse_num};
use crate::problem::ApiError;

/// `/ws/events`: `since`, `subject`, `formation`; other keys are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WsQuery {
    pub since: Option<u64>,
    pub subject: Option<String>,
    pub formation: Option<String>,
}

impl WsQuery {
    pub fn parse(query: Option<&str>) -> Result<WsQuery, ApiError> {
        let mut q = WsQuery::default();
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "since" => once(&mut q.since, "since", parse_num(&v)?)?,
                "subject" => once(&mut q.subject, "subject", v)?,
                "formation" => once(&mut q.formation, "formation", v)?,
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_query_ignores_unknown_keys() {
        let ws = WsQuery::parse(Some("since=3&subject=cellos.events.%3E&formation=x&y=1")).unwrap();
        assert_eq!(ws.since, Some(3));
        assert_eq!(ws.subject.as_deref(), Some("cellos.events.>"));
        assert_eq!(ws.formation.as_deref(), Some("x"));
    }
}
