//! Bearer-token authentication, in constant time.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::problem::{ApiError, Kind};

/// Checks the first `Authorization` header against `token`, step by step as the reference does;
/// the first failing step names the problem.
pub fn check(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let fail = |detail: &str| Err(ApiError::new(Kind::Unauthorized, detail));
    let Some(value) = headers.get(AUTHORIZATION) else {
        return fail("missing Authorization header");
    };
    let bytes = value.as_bytes();
    if !bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b))
    {
        return fail("non-ascii Authorization header");
    }
    let Some(presented) = bytes.strip_prefix(b"Bearer ") else {
        return fail("expected Bearer scheme");
    };
    if !constant_time_eq(presented, token.as_bytes()) {
        return fail("invalid token");
    }
    Ok(())
}

/// Compares over the longer input's length with no early exit, so timing does not reveal how many
/// leading bytes matched (nor, beyond that, the token's length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut equal = a.len().ct_eq(&b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        equal &= x.ct_eq(&y);
    }
    equal.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        h
    }

    fn detail(h: &HeaderMap) -> String {
        check(h, "s3cr3t").unwrap_err().detail
    }

    #[test]
    fn steps_in_order() {
        assert_eq!(detail(&HeaderMap::new()), "missing Authorization header");
        assert_eq!(
            detail(&with(b"Bearer \xc3\xa9")),
            "non-ascii Authorization header"
        );
        assert_eq!(detail(&with(b"Basic abc")), "expected Bearer scheme");
        assert_eq!(detail(&with(b"bearer s3cr3t")), "expected Bearer scheme");
        assert_eq!(detail(&with(b"Bearer")), "expected Bearer scheme");
        assert_eq!(detail(&with(b"Bearer wrong")), "invalid token");
        assert_eq!(detail(&with(b"Bearer  s3cr3t")), "invalid token");
        assert_eq!(detail(&with(b"Bearer s3cr3t2")), "invalid token");
        assert_eq!(detail(&with(b"Bearer s3cr3")), "invalid token");
        assert!(check(&with(b"Bearer s3cr3t"), "s3cr3t").is_ok());
    }
}
