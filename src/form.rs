//! Query strings: `application/x-www-form-urlencoded` pairs, and the reference's error texts for
//! them, shared by the HTTP routes' queries ([`crate::http::query`]) and the WebSocket's
//! ([`crate::ws::query`]). Pure.

use std::borrow::Cow;

use percent_encoding::percent_decode;

use crate::problem::ApiError;

/// Most query pairs read from one request; more is a 400.
pub const MAX_QUERY_PAIRS: usize = 64;

/// Decodes `a=1&b=x+y` into pairs (`+` is a space, `%XX` decoded, invalid UTF-8 replaced).
pub fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_QUERY_PAIRS {
            return Err(ApiError::bad_request(format!(
                "Failed to deserialize query string: more than {MAX_QUERY_PAIRS} parameters"
            )));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode_component(k), decode_component(v)));
    }
    Ok(out)
}

fn decode_component(s: &str) -> String {
    let plus: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_decode(plus.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

pub fn deserialize_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Failed to deserialize query string: {detail}"))
}

pub fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(deserialize_error)
}

/// Sets `slot` once; a second occurrence of the key is an error.
pub fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(deserialize_error(format!("duplicate field `{key}`")));
    }
    *slot = Some(value);
    Ok(())
}
