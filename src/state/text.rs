//! `Text`: an immutable string kept inline when short (event times, outcomes), else shared.
//!
//! Cell records are cloned on their first update after each snapshot publish. Inline text makes
//! that clone a copy of bytes the record already holds, where an `Arc<str>` would touch (and
//! later release) a reference count on another, usually cold, cache line.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Longest text stored inline: an RFC 3339 time with nanoseconds and an offset is 35 bytes.
pub const INLINE_TEXT: usize = 38;

/// Equality is that of the bytes, whichever way the text is stored.
#[derive(Clone)]
pub enum Text {
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    Shared(Arc<str>),
}

impl Text {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Shared(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // The bytes are a prefix of a `&str` copied whole in `From<&str>`, so always UTF-8;
            // the fallback is unreachable but keeps this free of `unsafe`.
            Text::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Shared(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= INLINE_TEXT {
            let mut bytes = [0; INLINE_TEXT];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Text::Shared(Arc::from(s))
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inline_and_shared() {
        for s in [
            "",
            "é",
            "2026-11-23T12:16:31.123456789+05:30",
            &"x".repeat(39),
        ] {
            let t = Text::from(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(matches!(t, Text::Inline { .. }), s.len() <= INLINE_TEXT);
            assert!(t == Text::from(s) && t != Text::from(format!("{s}.").as_str()));
        }
        assert_eq!(std::mem::size_of::<Option<Text>>(), 40);
    }
}
