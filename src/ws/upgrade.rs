//! `/ws/events` before the upgrade: the query, the filter and the upgrade checks (auth ran
//! already), then one session task per socket.

use std::sync::Arc;

use http::{header, HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use uuid::Uuid;

use super::query::WsQuery;
use super::session::{self, Filter};
use crate::app::{Body, BoxError, Ctx, Ident};
use crate::event::subject::Pattern;
use crate::problem::{ApiError, Kind};

/// Largest inbound WebSocket message.
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The upgrade checks, in the reference's order and with its details.
fn check_upgrade(req: &Request<Incoming>) -> Result<(), ApiError> {
    let h = req.headers();
    if !header_has(h, header::CONNECTION, "upgrade") {
        return Err(ApiError::bad_request(
            "Connection header did not include 'upgrade'",
        ));
    }
    if !header_has(h, header::UPGRADE, "websocket") {
        return Err(ApiError::bad_request(
            "`Upgrade` header did not include 'websocket'",
        ));
    }
    if !header_has(h, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(ApiError::bad_request(
            "`Sec-WebSocket-Version` header did not include '13'",
        ));
    }
    if !h.contains_key(header::SEC_WEBSOCKET_KEY) {
        return Err(ApiError::bad_request("`Sec-WebSocket-Key` header missing"));
    }
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err(ApiError::new(
            Kind::UpgradeRequired,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ));
    }
    Ok(())
}

/// Parses `subject` and `formation` into a filter; a formation name resolves to the newest
/// formation with that name, in a projection that has finished its boot replay.
async fn filter(ctx: &Ctx, q: &WsQuery) -> Result<Filter, ApiError> {
    let pattern = match q.subject.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let p = Pattern::parse(s).map_err(|e| {
                ApiError::bad_request(format!("invalid subject pattern '{s}': {e}"))
            })?;
            (!p.is_everything()).then_some(p)
        }
    };
    let formation: Option<Uuid> = match q.formation.as_deref() {
        None => None,
        Some(raw) => match Ident::parse(raw) {
            Ident::Id(id) => Some(id),
            Ident::Name(name) => Some({
                ctx.until_replayed(ctx.config.replay_read_wait).await?;
                Ident::Name(name).resolve(&ctx.reader.load().state)?.id
            }),
        },
    };
    Ok(Filter { pattern, formation })
}

/// `GET /ws/events[?since=][&subject=][&formation=]`.
pub async fn upgrade(
    ctx: &Arc<Ctx>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = WsQuery::parse(req.uri().query())?;
    let filter = filter(ctx, &q).await?;
    check_upgrade(&req)?;
    let Some(permit) = ctx.connection_permit() else {
        ctx.metrics.connections_rejected.increment(1);
        return Err(ApiError::unavailable(
            "connection limit reached; retry later",
        ));
    };
    let (resp, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_request(format!("WebSocket upgrade failed: {e}")))?;
    let session_ctx = ctx.clone();
    ctx.spawn_subscriber(async move {
        session::run(session_ctx, fut, q.since, filter).await;
        drop(permit);
    });
    Ok(resp.map(|b| b.map_err(|e| -> BoxError { match e {} }).boxed_unsync()))
}
