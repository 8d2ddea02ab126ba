//! Route table and dispatch: OPTIONS/CORS, 404, 405 with `Allow`, then auth, then the handler.

#![allow(clippy::disallowed_methods, reason = "times each request for the latency metrics")]

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::body::UnreadGuard;
use crate::app::Ident;
use crate::problem::{cut_path, ApiError, Kind};
use super::{auth, cell_events, cells, empty, events, formation_writes, formations, meta, problem};
use crate::app::{Body, Ctx};

/// A matched route. Path parameters stay percent-encoded until the handler (after auth) decodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Formations,
    Formation(&'a str),
    FormationByName(&'a str),
    FormationStatus(&'a str),
    Cells,
    Cell(&'a str),
    CellEvents(&'a str),
    Events,
    Version,
    WsEvents,
    Healthz,
    Readyz,
    Metrics,
}

impl Route<'_> {
    /// Matches a path exactly: no trailing slash, no empty segment.
    pub(super) fn parse(path: &str) -> Option<Route<'_>> {
        let rest = path.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match segs.as_slice() {
            ["v1", "formations"] => Route::Formations,
            ["v1", "formations", "by-name", name] => Route::FormationByName(name),
            ["v1", "formations", ident] => Route::Formation(ident),
            ["v1", "formations", ident, "status"] => Route::FormationStatus(ident),
            ["v1", "cells"] => Route::Cells,
            ["v1", "cells", id] => Route::Cell(id),
            ["v1", "cells", id, "events"] => Route::CellEvents(id),
            ["v1", "events"] => Route::Events,
            ["v1", "version"] => Route::Version,
            ["ws", "events"] => Route::WsEvents,
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            _ => return None,
        })
    }

    /// Methods this route answers, as the `Allow` header lists them.
    pub(super) fn allow(&self) -> &'static str {
        match self {
            Route::Formations => "POST,GET,HEAD",
            Route::Formation(_) | Route::FormationByName(_) => "GET,HEAD,DELETE",
            Route::FormationStatus(_) => "POST",
            Route::Events => "GET,HEAD,POST",
            Route::WsEvents => "GET",
            _ => "GET,HEAD",
        }
    }

    /// Label for metrics: the route template, never the raw path.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Route::Formations => "/v1/formations",
            Route::Formation(_) => "/v1/formations/{ident}",
            Route::FormationByName(_) => "/v1/formations/by-name/{name}",
            Route::FormationStatus(_) => "/v1/formations/{ident}/status",
            Route::Cells => "/v1/cells",
            Route::Cell(_) => "/v1/cells/{id}",
            Route::CellEvents(_) => "/v1/cells/{id}/events",
            Route::Events => "/v1/events",
            Route::Version => "/v1/version",
            Route::WsEvents => "/ws/events",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
        }
    }

    /// A GET of this route answers from the projection: it must wait for the boot replay.
    fn reads_projection(&self) -> bool {
        matches!(
            self,
            Route::Formations
                | Route::Formation(_)
                | Route::FormationByName(_)
                | Route::Cells
                | Route::Cell(_)
                | Route::CellEvents(_)
                | Route::Events
        )
    }

    fn is_public(&self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz)
    }
}

/// Decodes a percent-encoded path parameter (RFC 3986: `+` stays `+`).
pub(super) fn path_param(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("Invalid URL: path parameter is not valid UTF-8"))
}

/// The whole request path: CORS, routing, auth, handler, metrics.
pub(super) async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let unread = UnreadGuard::track(&mut req);
    let path = req.uri().path().to_owned();
    let route = Route::parse(&path);
    let label = route.as_ref().map_or("unmatched", Route::label);
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(route.as_ref())
    } else {
        match route {
            None => problem(&ApiError::not_found(format!(
                "no route matched '{}'",
                cut_path(&path)
            ))),
            Some(route) => match dispatch(&ctx, &route, req).await {
                Ok(r) => r,
                Err(e) => problem(&e),
            },
        }
    };
    cors(resp.headers_mut());
    if let Some(unread) = unread {
        unread.finish(&mut resp);
    }
    ctx.metrics.http_request(
        label,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

async fn dispatch(
    ctx: &Arc<Ctx>,
    route: &Route<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    let allowed = match route {
        Route::WsEvents => method == Method::GET,
        _ => route.allow().split(',').any(|m| m == method.as_str()),
    };
    if !allowed {
        return Err(ApiError {
            allow: Some(route.allow()),
            ..ApiError::new(
                Kind::MethodNotAllowed,
                format!(
                    "method '{method}' not allowed for '{}' — see Allow header",
                    cut_path(req.uri().path())
                ),
            )
        });
    }
    if !route.is_public() {
        auth::check(req.headers(), &ctx.config.api_token)?;
    }
    if read && route.reads_projection() {
        ctx.until_replayed(ctx.config.replay_read_wait).await?;
    }
    match (route, read) {
        (Route::Formations, true) => Ok(formations::list(ctx)),
        (Route::Formation(ident), true) => formations::get(ctx, &path_param(ident)?),
        (Route::FormationByName(name), true) => formations::get_by_name(ctx, &path_param(name)?),
        (Route::Cells, true) => cells::list(ctx, req.uri().query()),
        (Route::Cell(id), true) => cells::get(ctx, &path_param(id)?),
        (Route::CellEvents(id), true) => {
            cell_events::events(ctx, &path_param(id)?, req.uri().query()).await
        }
        (Route::Formations, false) => formation_writes::create(ctx, req).await,
        (Route::Formation(ident), false) => {
            let ident = path_param(ident)?;
            formation_writes::delete(ctx, Ident::parse(&ident)).await
        }
        (Route::FormationByName(name), false) => {
            let name = path_param(name)?;
            formation_writes::delete(ctx, Ident::Name(&name)).await
        }
        (Route::FormationStatus(ident), _) => {
            let ident = path_param(ident)?;
            formation_writes::set_status(ctx, Ident::parse(&ident), req).await
        }
        (Route::Events, true) => events::list(ctx, req.uri().query()).await,
        (Route::Events, false) => events::ingest(ctx, req).await,
        (Route::Version, _) => Ok(meta::version()),
        (Route::Healthz, _) => Ok(meta::healthz()),
        (Route::Readyz, _) => meta::readyz(ctx),
        (Route::Metrics, _) => Ok(meta::metrics(ctx)),
        (Route::WsEvents, _) => crate::ws::upgrade(ctx, req).await,
        // Every other pairing was refused by the method check above.
        _ => Err(ApiError::new(
            Kind::Internal,
            "route and method out of step",
        )),
    }
}

/// OPTIONS on any path: 200, empty, no auth (CORS preflight as the reference answers it).
fn preflight(route: Option<&Route<'_>>) -> Response<Body> {
    let mut resp = empty(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET,OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization,content-type"),
    );
    if let Some(route) = route {
        h.insert(header::ALLOW, HeaderValue::from_static(route.allow()));
    }
    resp
}

fn cors(h: &mut http::HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_exactly() {
        assert_eq!(Route::parse("/v1/formations"), Some(Route::Formations));
        assert_eq!(Route::parse("/v1/formations/"), None);
        assert_eq!(
            Route::parse("/v1/formations/by-name"),
            Some(Route::Formation("by-name"))
        );
        assert_eq!(Route::parse("/v1/formations/by-name/"), None);
        assert_eq!(
            Route::parse("/v1/formations/by-name/a%20b"),
            Some(Route::FormationByName("a%20b"))
        );
        assert_eq!(
            Route::parse("/v1/formations/x/status"),
            Some(Route::FormationStatus("x"))
        );
        assert_eq!(Route::parse("/v1/cells/a/b"), None);
        assert_eq!(Route::parse("//v1/cells"), None);
        assert_eq!(Route::parse("/healthz"), Some(Route::Healthz));
        assert_eq!(path_param("a%2Fb+c").unwrap(), "a/b+c");
        assert!(path_param("%ff").is_err());
    }
}
