//! The typed queries of the HTTP routes, with the exact detail strings clients see (pairs and
//! their errors: [`crate::form`]). Pure.

use crate::form::{deserialize_error, once, pairs, parse_num};
use crate::problem::ApiError;

/// `GET /v1/cells`: only `state`, `formation` and `limit`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CellsQuery {
    pub state: Option<String>,
    pub formation: Option<String>,
    pub limit: Option<usize>,
}

impl CellsQuery {
    pub fn parse(query: Option<&str>) -> Result<CellsQuery, ApiError> {
        let mut q = CellsQuery::default();
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "state" => once(&mut q.state, "state", v)?,
                "formation" => once(&mut q.formation, "formation", v)?,
                "limit" => once(&mut q.limit, "limit", parse_num(&v)?)?,
                other => {
                    return Err(deserialize_error(format!(
                        "unknown field `{other}`, expected one of `state`, `formation`, `limit`"
                    )))
                }
            }
        }
        Ok(q)
    }
}

/// `GET /v1/events`: `since`, `limit`, `formation`; other keys are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub since: Option<u64>,
    pub limit: Option<usize>,
    pub formation: Option<String>,
}

impl EventsQuery {
    pub fn parse(query: Option<&str>) -> Result<EventsQuery, ApiError> {
        let mut q = EventsQuery::default();
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "since" => once(&mut q.since, "since", parse_num(&v)?)?,
                "limit" => once(&mut q.limit, "limit", parse_num(&v)?)?,
                "formation" => once(&mut q.formation, "formation", v)?,
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `/v1/cells/{id}/events`: `tail` and `follow`; other keys are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CellEventsQuery {
    pub tail: Option<usize>,
    pub follow: bool,
}

impl CellEventsQuery {
    pub fn parse(query: Option<&str>) -> Result<CellEventsQuery, ApiError> {
        let mut q = CellEventsQuery::default();
        let mut follow = None;
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "tail" => once(&mut q.tail, "tail", parse_num(&v)?)?,
                "follow" => once(&mut follow, "follow", parse_num::<bool>(&v)?)?,
                _ => {}
            }
        }
        q.follow = follow.unwrap_or(false);
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::MAX_QUERY_PAIRS;

    fn detail(e: ApiError) -> String {
        e.detail
    }

    #[test]
    fn cells_query_rules() {
        assert_eq!(CellsQuery::parse(None).unwrap(), CellsQuery::default());
        let q = CellsQuery::parse(Some("state=Running&limit=5&formation=a+b%2Fc")).unwrap();
        assert_eq!(q.state.as_deref(), Some("Running"));
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.formation.as_deref(), Some("a b/c"));
        assert_eq!(
            detail(CellsQuery::parse(Some("cursor=abc")).unwrap_err()),
            "Failed to deserialize query string: unknown field `cursor`, expected one of `state`, `formation`, `limit`"
        );
        assert_eq!(
            detail(CellsQuery::parse(Some("limit=x")).unwrap_err()),
            "Failed to deserialize query string: invalid digit found in string"
        );
        assert_eq!(
            detail(CellsQuery::parse(Some("limit=99999999999999999999999")).unwrap_err()),
            "Failed to deserialize query string: number too large to fit in target type"
        );
        assert_eq!(
            detail(CellsQuery::parse(Some("limit=")).unwrap_err()),
            "Failed to deserialize query string: cannot parse integer from empty string"
        );
        assert_eq!(
            detail(CellsQuery::parse(Some("state=a&state=b")).unwrap_err()),
            "Failed to deserialize query string: duplicate field `state`"
        );
    }

    #[test]
    fn events_query_ignores_unknown_keys() {
        let q = EventsQuery::parse(Some("since=7&limit=2&x=1&formation=f")).unwrap();
        assert_eq!(q.since, Some(7));
        assert_eq!(q.limit, Some(2));
        assert_eq!(q.formation.as_deref(), Some("f"));
        assert!(EventsQuery::parse(Some("since=-1")).is_err());
        assert!(EventsQuery::parse(Some("since=18446744073709551616")).is_err());
        let c = CellEventsQuery::parse(Some("follow=true&tail=5")).unwrap();
        assert_eq!((c.tail, c.follow), (Some(5), true));
        assert!(CellEventsQuery::parse(Some("follow=yes")).is_err());
        let many = vec!["a=1"; MAX_QUERY_PAIRS + 1].join("&");
        assert!(EventsQuery::parse(Some(&many)).is_err());
    }
}
