//! `InlineText<N>`: an immutable string kept inline when at most `N` bytes, else shared.
//!
//! Cell records are cloned on their first update after each snapshot publish. Inline text makes
//! that clone a copy of bytes the record already holds, where an `Arc<str>` would touch (and
//! later release) a reference count on another, usually cold, cache line. Two sizes: ids
//! ([`Text`]) and the fields of a cell record ([`ShortText`]), which are smaller so that a record
//! leaf, the unit copied per update, is smaller.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Ids: a UUID (36 bytes) and the usual cell names stay inline; 40 bytes in all.
pub type Text = InlineText<38>;

/// Cell record fields (times, outcome): an RFC 3339 time with nanoseconds in UTC (30 bytes) or
/// with milliseconds and an offset (29) stays inline; 32 bytes in all.
pub type ShortText = InlineText<30>;

/// Equality is that of the bytes, whichever way the text is stored. `N` must be below 256.
#[derive(Clone)]
pub enum InlineText<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Shared(Arc<str>),
}

impl<const N: usize> InlineText<N> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            InlineText::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineText::Shared(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // The bytes are a prefix of a `&str` copied whole in `From<&str>`, so always UTF-8;
            // the fallback is unreachable but keeps this free of `unsafe`.
            InlineText::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            InlineText::Shared(s) => s,
        }
    }
}

impl<const N: usize> From<&str> for InlineText<N> {
    fn from(s: &str) -> InlineText<N> {
        if s.len() <= N && N <= usize::from(u8::MAX) {
            let mut bytes = [0; N];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            InlineText::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            InlineText::Shared(Arc::from(s))
        }
    }
}

impl<const N: usize> PartialEq for InlineText<N> {
    fn eq(&self, other: &InlineText<N>) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for InlineText<N> {}

impl<const N: usize> Deref for InlineText<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<const N: usize>() {
        for s in [
            "",
            "é",
            "2026-11-23T12:16:31.123Z",
            "2026-11-23T12:16:31.123456789Z",
            "2026-11-23T12:16:31.123456789+05:30",
            &"x".repeat(N),
            &"x".repeat(N + 1),
        ] {
            let t = InlineText::<N>::from(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(matches!(t, InlineText::Inline { .. }), s.len() <= N, "{s}");
            assert!(t == InlineText::from(s) && t != InlineText::from(format!("{s}.").as_str()));
        }
    }

    #[test]
    fn round_trips_inline_and_shared() {
        round_trips::<38>();
        round_trips::<30>();
        assert_eq!(std::mem::size_of::<Option<Text>>(), 40);
        assert_eq!(std::mem::size_of::<Option<ShortText>>(), 32);
        assert!(matches!(
            ShortText::from("2026-11-23T12:16:31.123456789Z"),
            InlineText::Inline { .. }
        ));
    }
}
