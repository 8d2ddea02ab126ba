//! Request bodies: bounded reads, and closing HTTP/1 connections whose body was left unread.
//!
//! A handler may answer before reading the body (auth, 405, 415, a declared length over the
//! limit). hyper then drains what has already arrived and otherwise closes the connection, but the
//! response it already wrote did not say so: a keep-alive client would send its next request into
//! a closing socket. So such a response carries `Connection: close`, and the client reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::problem::{ApiError, Kind};

/// Set once a handler has read the whole body; shared through the request's extensions.
#[derive(Clone, Default)]
struct Consumed(Arc<AtomicBool>);

/// Watches one HTTP/1 request that carries a body, from routing to the response.
pub(super) struct UnreadGuard(Consumed);

impl UnreadGuard {
    /// `None` when nothing can be left unread: no body, or HTTP/2 (streams close on their own).
    pub(super) fn track<B>(req: &mut Request<B>) -> Option<Self>
    where
        B: hyper::body::Body,
    {
        if req.version() > Version::HTTP_11 || req.body().is_end_stream() {
            return None;
        }
        let consumed = Consumed::default();
        req.extensions_mut().insert(consumed.clone());
        Some(UnreadGuard(consumed))
    }

    /// Marks the response `Connection: close` if the body was not read to its end.
    pub(super) fn finish<B>(self, resp: &mut Response<B>) {
        if !self.0 .0.load(Ordering::Acquire) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// Reads a request body of at most `limit` bytes within `timeout`; more is a 413, slower a 408
/// (a client trickling a body would otherwise hold a connection and a handler indefinitely).
pub(super) async fn read_body(
    mut req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Kind::PayloadTooLarge,
            "Failed to buffer the request body: length limit exceeded",
        )
    };
    let consumed = req.extensions_mut().remove::<Consumed>();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collect).await else {
        return Err(ApiError::new(
            Kind::RequestTimeout,
            format!(
                "the request body was not received within {} ms",
                timeout.as_millis()
            ),
        ));
    };
    match collected {
        Ok(collected) => {
            if let Some(c) = consumed {
                c.0.store(true, Ordering::Release);
            }
            Ok(collected.to_bytes())
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "Failed to buffer the request body: {e}"
        ))),
    }
}

/// The media type of a request, lowercased, without parameters.
pub(super) fn media_type<B>(req: &Request<B>) -> Option<String> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}
