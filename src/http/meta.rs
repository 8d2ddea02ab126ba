//! Version, liveness, readiness and metrics.

use http::{Response, StatusCode};

use crate::problem::ApiError;
use super::{full, json};
use crate::app::{Body, Ctx};
use crate::ingest::not_ready_reason;

/// `GET /v1/version`. `gitSha` is present only when `CELLOS_GIT_SHA` was set at build time.
pub(super) fn version() -> Response<Body> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let sha = option_env!("CELLOS_GIT_SHA")
        .filter(|s| !s.is_empty())
        .map(|s| format!(",\"gitSha\":{}", serde_json::Value::from(s)))
        .unwrap_or_default();
    json(
        StatusCode::OK,
        format!(
            "{{\"server\":{{\"version\":\"{}\"{sha},\"buildProfile\":\"{profile}\"}},\"api\":{{\"version\":\"v1\"}}}}",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// `GET /healthz`: 200 while the process serves.
pub(super) fn healthz() -> Response<Body> {
    json(StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
}

/// `GET /readyz`: 200 once the log is reachable and the projection has caught up with it. The
/// body lists `warnings` when the projection is known to miss something (events the log's
/// retention removed before a checkpoint held them): serving goes on, an operator must know.
pub(super) fn readyz(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let snap = ctx.reader.load();
    let cursor = snap.cursor;
    if let Some(reason) = not_ready_reason(&ctx.tail, ctx.log.as_ref(), &snap, &ctx.boot) {
        return Err(ApiError::unavailable(reason));
    }
    let warnings = ctx.boot.warnings();
    let warnings = if warnings.is_empty() {
        String::new()
    } else {
        format!(",\"warnings\":{}", serde_json::Value::from(warnings))
    };
    Ok(json(
        StatusCode::OK,
        format!("{{\"status\":\"ready\",\"cursor\":{cursor}{warnings}}}"),
    ))
}

/// `GET /metrics`: Prometheus text format.
pub(super) fn metrics(ctx: &Ctx) -> Response<Body> {
    let ring = &ctx.ring;
    ctx.metrics.ring_bytes.set(ring.held_bytes() as f64);
    ctx.metrics
        .ring_frames
        .set((ring.published() - ring.oldest()) as f64);
    full(
        StatusCode::OK,
        Some("text/plain; version=0.0.4; charset=utf-8"),
        ctx.metrics.render().into(),
    )
}
