//! RFC 9457 problem+json: the one place where an error becomes a status code, a `type` and a title.

use std::fmt::Write as _;

use bytes::Bytes;
use http::StatusCode;

use crate::admission::Rejection;
use crate::log::LogError;

/// Every kind of problem the server answers with. The `type` URIs and titles are part of the wire
/// contract: clients switch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unauthorized,
    BadRequest,
    /// A request whose JSON has the wrong shape: `bad-request` type, status 422.
    Unprocessable,
    NotFound,
    Conflict,
    Internal,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    /// A WebSocket route asked for without an upgrade: `bad-request` type, status 426.
    UpgradeRequired,
    /// A request body not received within the body timeout: `bad-request` type, status 408.
    RequestTimeout,
    ServiceUnavailable,
    FormationCycle,
    FormationMultipleCoordinators,
    FormationNoCoordinator,
    FormationAuthorityNotNarrowing,
    FormationDuplicateMemberId,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::BadRequest
            | Kind::FormationCycle
            | Kind::FormationMultipleCoordinators
            | Kind::FormationNoCoordinator
            | Kind::FormationAuthorityNotNarrowing
            | Kind::FormationDuplicateMemberId => StatusCode::BAD_REQUEST,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn type_uri(self) -> &'static str {
        match self {
            Kind::Unauthorized => "/problems/unauthorized",
            Kind::BadRequest
            | Kind::Unprocessable
            | Kind::UpgradeRequired
            | Kind::RequestTimeout => "/problems/bad-request",
            Kind::NotFound => "/problems/not-found",
            Kind::Conflict => "/problems/conflict",
            Kind::Internal => "/problems/internal",
            Kind::PayloadTooLarge => "/problems/payload-too-large",
            Kind::UnsupportedMediaType => "/problems/unsupported-media-type",
            Kind::MethodNotAllowed => "/problems/method-not-allowed",
            Kind::ServiceUnavailable => "/problems/service-unavailable",
            Kind::FormationCycle => "/problems/formation/cycle",
            Kind::FormationMultipleCoordinators => "/problems/formation/multiple-coordinators",
            Kind::FormationNoCoordinator => "/problems/formation/no-coordinator",
            Kind::FormationAuthorityNotNarrowing => "/problems/formation/authority-not-narrowing",
            Kind::FormationDuplicateMemberId => "/problems/formation/duplicate-member-id",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Unauthorized => "Unauthorized",
            Kind::BadRequest
            | Kind::Unprocessable
            | Kind::UpgradeRequired
            | Kind::RequestTimeout => "Bad Request",
            Kind::NotFound => "Not Found",
            Kind::Conflict => "Conflict",
            Kind::Internal => "Internal Server Error",
            Kind::PayloadTooLarge => "Payload Too Large",
            Kind::UnsupportedMediaType => "Unsupported Media Type",
            Kind::MethodNotAllowed => "Method Not Allowed",
            Kind::ServiceUnavailable => "Event store unavailable",
            Kind::FormationCycle => "Formation rejected: authority cycle",
            Kind::FormationMultipleCoordinators => "Formation rejected: multiple coordinators",
            Kind::FormationNoCoordinator => "Formation rejected: no coordinator",
            Kind::FormationAuthorityNotNarrowing => "Formation rejected: authority does not narrow",
            Kind::FormationDuplicateMemberId => "Formation rejected: duplicate member id",
        }
    }
}

/// The detail every log-unavailable answer carries.
pub const STORE_UNAVAILABLE: &str = "Event store is temporarily unreachable; retry later";

/// An error answer: a kind, a human detail, and for 405 the `Allow` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: Kind,
    pub detail: String,
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: Kind, detail: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            detail: detail.into(),
            allow: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(Kind::BadRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(Kind::NotFound, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        Self::new(Kind::ServiceUnavailable, detail)
    }

    /// `{"type","title","status","detail"}`, in that order.
    pub fn body(&self) -> Bytes {
        let mut out = String::with_capacity(96 + self.detail.len());
        out.push_str("{\"type\":");
        push_json_str(&mut out, self.kind.type_uri());
        out.push_str(",\"title\":");
        push_json_str(&mut out, self.kind.title());
        let _ = write!(
            out,
            ",\"status\":{},\"detail\":",
            self.kind.status().as_u16()
        );
        push_json_str(&mut out, &self.detail);
        out.push('}');
        Bytes::from(out)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        let kind = match r {
            Rejection::BadRequest(_) => Kind::BadRequest,
            Rejection::NoCoordinator(_) => Kind::FormationNoCoordinator,
            Rejection::DuplicateMemberId(_) => Kind::FormationDuplicateMemberId,
            Rejection::AuthorityNotNarrowing(_) => Kind::FormationAuthorityNotNarrowing,
            Rejection::Cycle(_) => Kind::FormationCycle,
        };
        ApiError::new(kind, r.detail())
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match e {
            LogError::TooLarge { .. } => ApiError::new(Kind::PayloadTooLarge, e.to_string()),
            LogError::Unavailable(_) | LogError::Storage(_) | LogError::Settings(_) => {
                tracing::warn!(error = %e, "event log unavailable");
                ApiError::unavailable(STORE_UNAVAILABLE)
            }
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    // Writing to a String cannot fail, and serializing a &str cannot either.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// Cuts a request path for echoing in a detail: at most 200 characters.
pub fn cut_path(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_and_order() {
        let e = ApiError::new(Kind::Unprocessable, "bad \"x\"");
        assert_eq!(
            &e.body()[..],
            br#"{"type":"/problems/bad-request","title":"Bad Request","status":422,"detail":"bad \"x\""}"#
        );
        assert_eq!(cut_path(&"é".repeat(300)).chars().count(), 200);
    }
}
