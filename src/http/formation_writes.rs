//! Formation writes: admission, delete (cancel) and status transitions. Each one appends a
//! CloudEvent and answers only after the ingest thread applied it; the projection decides
//! conflicts (name ownership, terminal states) by log order. During the boot replay each waits
//! for it (within the write timeout) before it looks at the projection.

#![allow(clippy::disallowed_methods, reason = "a new formation's id and creation time are drawn here, at the edge, and written into its event")]

use chrono::Utc;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::body::{media_type, read_body};
use crate::app::Ident;
use crate::problem::{push_json_str, ApiError, Kind};
use super::{empty, json};
use crate::app::{Body, Ctx};
use crate::admission;
use crate::event::encode::{format_time, FormationEvent};
use crate::event::Phase;
use crate::state::apply::status_of;
use crate::state::FormationRecord;

/// Largest `POST /v1/formations` body (65,536 bytes is accepted).
pub(super) const MAX_FORMATION_BODY: usize = 65_536;
/// Largest `POST /v1/formations/{ident}/status` body.
pub(super) const MAX_STATUS_BODY: usize = 2 * 1024 * 1024;
/// Reason recorded on a formation cancelled by DELETE.
pub(super) const DELETE_REASON: &str = "deleted by operator";

fn in_use(name: &str, holder: Uuid) -> ApiError {
    ApiError::new(
        Kind::Conflict,
        format!(
            "formation name '{name}' already in use by {}",
            holder.hyphenated()
        ),
    )
}

/// Appends `ev` and waits until it is applied, both by `deadline` (the write's).
async fn emit(ctx: &Ctx, ev: &FormationEvent<'_>, deadline: Instant) -> Result<u64, ApiError> {
    ctx.append_and_wait(
        ev.subject(),
        ev.payload(),
        ev.event_id.hyphenated().to_string(),
        deadline,
    )
    .await
}

/// Emits a lifecycle event for an existing formation and waits until it is applied.
async fn transition(
    ctx: &Ctx,
    deadline: Instant,
    record: &FormationRecord,
    phase: Phase,
    failed_cell_ids: &[String],
    reason: Option<&str>,
) -> Result<u64, ApiError> {
    let time = format_time(Utc::now());
    emit(
        ctx,
        &FormationEvent {
            event_id: Uuid::new_v4(),
            formation_id: record.id,
            formation_name: &record.name,
            phase,
            time: &time,
            cell_count: record.member_count,
            failed_cell_ids,
            reason,
            document: None,
        },
        deadline,
    )
    .await
}

/// `POST /v1/formations`.
pub(super) async fn create(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body = read_body(req, MAX_FORMATION_BODY, ctx.config.body_timeout).await?;
    let admitted = admission::admit(&body)?;
    let deadline = ctx.write_deadline();
    ctx.until_replayed_by(deadline).await?;
    // A cheap early answer; the authoritative decision is the projection's, by log order.
    if let Some(holder) = ctx.reader.load().state.name_holder(&admitted.name) {
        return Err(in_use(&admitted.name, holder.id));
    }
    let id = Uuid::new_v4();
    let time = format_time(Utc::now());
    let ev = FormationEvent {
        event_id: Uuid::new_v4(),
        formation_id: id,
        formation_name: &admitted.name,
        phase: Phase::Created,
        time: &time,
        cell_count: admitted.member_count,
        failed_cell_ids: &[],
        reason: None,
        document: Some(&admitted.document),
    };
    let seq = emit(ctx, &ev, deadline).await?;
    let snap = ctx.reader.load();
    if snap.state.formation(&id).is_some() {
        let mut out = String::with_capacity(96 + admitted.name.len());
        out.push_str("{\"id\":\"");
        out.push_str(&id.hyphenated().to_string());
        out.push_str("\",\"name\":");
        push_json_str(&mut out, &admitted.name);
        out.push_str(",\"status\":\"PENDING\"}");
        return Ok(json(StatusCode::CREATED, out));
    }
    match snap.state.rejection(&id) {
        Some(r) => Err(in_use(&admitted.name, r.holder)),
        None => Err(ApiError::new(
            Kind::Internal,
            format!("formation {id} was logged at seq {seq} but not projected"),
        )),
    }
}

/// `DELETE /v1/formations/{ident}` and `/v1/formations/by-name/{name}`: cancels a live formation;
/// a terminal one is left as it is.
pub(super) async fn delete(ctx: &Ctx, ident: Ident<'_>) -> Result<Response<Body>, ApiError> {
    let deadline = ctx.write_deadline();
    ctx.until_replayed_by(deadline).await?;
    let record = {
        let snap = ctx.reader.load();
        ident.resolve(&snap.state)?.clone()
    };
    if !record.status.is_terminal() {
        transition(ctx, deadline, &record, Phase::Cancelled, &[], Some(DELETE_REASON)).await?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
struct StatusBody {
    state: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    failed_cells: Option<Vec<String>>,
}

fn is_json_media(req: &Request<Incoming>) -> bool {
    media_type(req).is_some_and(|m| {
        m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
    })
}

/// The phase a `/status` request asks for (case-insensitive), mapped as the reference server maps
/// it (docs/CONTRACT.md, "Formation status transitions").
pub(super) fn phase_of_state(upper: &str) -> Option<Phase> {
    match upper {
        "LAUNCHING" => Some(Phase::Launching),
        "RUNNING" => Some(Phase::Running),
        "DEGRADED" => Some(Phase::Degraded),
        "COMPLETED" => Some(Phase::Completed),
        "FAILED" => Some(Phase::Failed),
        _ => None,
    }
}

fn terminal_conflict(f: &FormationRecord) -> ApiError {
    ApiError::new(
        Kind::Conflict,
        format!(
            "formation {} is {}; terminal states are final",
            f.id.hyphenated(),
            f.status.as_str()
        ),
    )
}

/// `POST /v1/formations/{ident}/status`.
pub(super) async fn set_status(
    ctx: &Ctx,
    ident: Ident<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !is_json_media(&req) {
        return Err(ApiError::new(
            Kind::UnsupportedMediaType,
            "Expected request with `Content-Type: application/json`",
        ));
    }
    let body = read_body(req, MAX_STATUS_BODY, ctx.config.body_timeout).await?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
        ApiError::bad_request(format!("Failed to parse the request body as JSON: {e}"))
    })?;
    let request: StatusBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            Kind::Unprocessable,
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })?;
    let deadline = ctx.write_deadline();
    ctx.until_replayed_by(deadline).await?;
    let record = {
        let snap = ctx.reader.load();
        ident.resolve(&snap.state)?.clone()
    };
    let upper = request.state.to_uppercase();
    let Some(phase) = phase_of_state(&upper) else {
        return Err(ApiError::bad_request(format!("unknown state: {upper}")));
    };
    if record.status.is_terminal() {
        return Err(terminal_conflict(&record));
    }
    let failed = match phase {
        Phase::Degraded | Phase::Failed => request.failed_cells.unwrap_or_default(),
        _ => Vec::new(),
    };
    transition(ctx, deadline, &record, phase, &failed, request.reason.as_deref()).await?;
    // Another writer may have ended the formation first; then this transition was ignored.
    let snap = ctx.reader.load();
    if let Some(now) = snap.state.formation(&record.id) {
        if now.status.is_terminal() && now.status != status_of(phase) {
            return Err(terminal_conflict(now));
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}
