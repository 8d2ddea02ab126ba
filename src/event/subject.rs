//! NATS subjects of the event log: how events are filed, and subscription patterns. Pure.
//!
//! Every subject lives under `cellos.events.`. Tokens built from ids are escaped so that an id can
//! never add a token or a wildcard: bytes outside `[A-Za-z0-9_-]` become `%XX`.

use std::fmt::Write as _;

/// The root every stored subject and every pattern starts with.
pub const ROOT: &str = "cellos.events";
/// Longest subject pattern accepted from a client.
pub const MAX_PATTERN_BYTES: usize = 512;

/// Escapes one subject token. The empty token becomes `_` (a subject token must not be empty).
pub fn escape_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The last `.`-separated token of a CloudEvent type (`…formation.v1.created` → `created`).
pub fn last_type_token(ty: &str) -> &str {
    ty.rsplit('.').next().unwrap_or(ty)
}

/// `cellos.events.formations.<id>.<phase>`: where formation lifecycle events are filed.
pub fn formation_subject(formation_id: &str, last_token: &str) -> String {
    format!(
        "{ROOT}.formations.{}.{}",
        escape_token(formation_id),
        escape_token(last_token)
    )
}

/// The subject of an event ingested over HTTP: by `data.formationId`, else `data.cellId`, else other.
pub fn ingest_subject(formation_id: Option<&str>, cell_id: Option<&str>, ty: &str) -> String {
    let last = last_type_token(ty);
    match (formation_id, cell_id) {
        (Some(f), _) => formation_subject(f, last),
        (None, Some(c)) => format!("{ROOT}.cells.{}.{}", escape_token(c), escape_token(last)),
        (None, None) => format!("{ROOT}.other.{}", escape_token(last)),
    }
}

/// A validated subscription pattern under `cellos.events.` (NATS wildcards `*` and a final `>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<String>,
}

/// Why a subject pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("subject pattern is longer than {MAX_PATTERN_BYTES} bytes")]
    TooLong,
    #[error("subject pattern must start with 'cellos.events.' and name at least one more token")]
    OutsideRoot,
    #[error("subject pattern has an empty token")]
    EmptyToken,
    #[error("subject pattern token '{0}' mixes a wildcard with other characters")]
    BadWildcard(String),
    #[error("'>' may only be the last token of a subject pattern")]
    TailNotLast,
    #[error("subject pattern contains whitespace or control characters")]
    BadCharacter,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong);
        }
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(PatternError::BadCharacter);
        }
        let tokens: Vec<&str> = s.split('.').collect();
        if tokens.len() < 3 || tokens[0] != "cellos" || tokens[1] != "events" {
            return Err(PatternError::OutsideRoot);
        }
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(PatternError::EmptyToken);
            }
            if (t.contains('*') || t.contains('>')) && *t != "*" && *t != ">" {
                return Err(PatternError::BadWildcard((*t).to_owned()));
            }
            if *t == ">" && i + 1 != tokens.len() {
                return Err(PatternError::TailNotLast);
            }
        }
        Ok(Pattern {
            tokens: tokens.into_iter().map(str::to_owned).collect(),
        })
    }

    /// True for `cellos.events.>`, which every stored subject matches.
    pub fn is_everything(&self) -> bool {
        self.tokens.len() == 3 && self.tokens[2] == ">"
    }

    /// NATS matching: `*` matches one token, a final `>` one or more.
    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for (i, t) in self.tokens.iter().enumerate() {
            if t == ">" {
                return i < self.tokens.len() && parts.next().is_some();
            }
            match parts.next() {
                Some(p) if t == "*" || t == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_one_token() {
        assert_eq!(escape_token("abc-DEF_09"), "abc-DEF_09");
        assert_eq!(escape_token("a.b*c>d e%"), "a%2Eb%2Ac%3Ed%20e%25");
        assert_eq!(escape_token(""), "_");
        assert_eq!(escape_token("é"), "%C3%A9");
    }

    #[test]
    fn ingest_subjects() {
        assert_eq!(
            ingest_subject(Some("f1"), Some("c"), "a.b.created"),
            "cellos.events.formations.f1.created"
        );
        assert_eq!(
            ingest_subject(
                None,
                Some("c.1"),
                "dev.cellos.events.cell.lifecycle.v1.started"
            ),
            "cellos.events.cells.c%2E1.started"
        );
        assert_eq!(
            ingest_subject(None, None, "plain"),
            "cellos.events.other.plain"
        );
        assert_eq!(ingest_subject(None, None, "ends."), "cellos.events.other._");
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("cellos.events.>").unwrap();
        assert!(p.is_everything());
        assert!(p.matches("cellos.events.a"));
        assert!(p.matches("cellos.events.a.b"));
        assert!(!p.matches("cellos.events"));
        let p = Pattern::parse("cellos.events.cells.*.started").unwrap();
        assert!(p.matches("cellos.events.cells.x.started"));
        assert!(!p.matches("cellos.events.cells.x.y.started"));
        assert!(!p.matches("cellos.events.cells.x"));
        let p = Pattern::parse("cellos.events.formations.>").unwrap();
        assert!(!p.is_everything());
        assert!(p.matches("cellos.events.formations.f.created"));
        assert!(!p.matches("cellos.events.cells.f.created"));
        for bad in [
            "foo.>",
            "cellos.events",
            "cellos.events.",
            "cellos.events..a",
            "cellos.events.>.a",
            "cellos.events.a*",
            "cellos.events.a b",
            "cellos.*.x",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Pattern::parse(&format!("cellos.events.{}", "a".repeat(600))),
            Err(PatternError::TooLong)
        );
    }
}
