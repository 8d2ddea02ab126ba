//! The CloudEvents this server emits for formation lifecycle writes. Pure: the caller supplies
//! the event id and the time, so identical inputs give identical bytes.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::subject::formation_subject;
use super::{Phase, FORMATION_TYPE_PREFIX};

/// RFC 3339 in UTC with exactly three fractional digits and `Z`, e.g. `2026-11-23T12:15:49.355Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One formation lifecycle event to emit.
#[derive(Debug, Clone)]
pub struct FormationEvent<'a> {
    pub event_id: Uuid,
    pub formation_id: Uuid,
    pub formation_name: &'a str,
    pub phase: Phase,
    pub time: &'a str,
    pub cell_count: usize,
    pub failed_cell_ids: &'a [String],
    pub reason: Option<&'a str>,
    /// The normalized document: on `created` only.
    pub document: Option<&'a Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    datacontenttype: &'static str,
    data: Data<'a>,
    time: &'a str,
    traceparent: Option<&'static str>,
}

/// Keys in alphabetical order, as the reference serializes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    cell_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<&'a Value>,
    failed_cell_ids: &'a [String],
    formation_id: String,
    formation_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl FormationEvent<'_> {
    /// `cellos.events.formations.<uuid>.<phase>`.
    pub fn subject(&self) -> String {
        formation_subject(
            &self.formation_id.hyphenated().to_string(),
            self.phase.as_str(),
        )
    }

    pub fn type_name(&self) -> String {
        format!("{FORMATION_TYPE_PREFIX}{}", self.phase.as_str())
    }

    /// The CloudEvent as stored in the log.
    pub fn payload(&self) -> Bytes {
        let id = self.formation_id.hyphenated().to_string();
        let envelope = Envelope {
            specversion: "1.0",
            id: self.event_id.hyphenated().to_string(),
            source: id.clone(),
            ty: self.type_name(),
            datacontenttype: "application/json",
            data: Data {
                cell_count: self.cell_count,
                document: self.document,
                failed_cell_ids: self.failed_cell_ids,
                formation_id: id,
                formation_name: self.formation_name,
                reason: self.reason,
            },
            time: self.time,
            traceparent: None,
        };
        // Serializing these plain structs into memory cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bytes_and_subject() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T12:15:49.3551Z")
            .unwrap()
            .to_utc();
        assert_eq!(format_time(t), "2026-11-23T12:15:49.355Z");
        let doc = serde_json::json!({"name": "demo"});
        let ev = FormationEvent {
            event_id: Uuid::from_u128(1),
            formation_id: Uuid::from_u128(2),
            formation_name: "demo",
            phase: Phase::Created,
            time: "2026-11-23T12:15:49.355Z",
            cell_count: 2,
            failed_cell_ids: &[],
            reason: None,
            document: Some(&doc),
        };
        assert_eq!(
            ev.subject(),
            "cellos.events.formations.00000000-0000-0000-0000-000000000002.created"
        );
        assert_eq!(
            std::str::from_utf8(&ev.payload()).unwrap(),
            r#"{"specversion":"1.0","id":"00000000-0000-0000-0000-000000000001","source":"00000000-0000-0000-0000-000000000002","type":"dev.cellos.events.cell.formation.v1.created","datacontenttype":"application/json","data":{"cellCount":2,"document":{"name":"demo"},"failedCellIds":[],"formationId":"00000000-0000-0000-0000-000000000002","formationName":"demo"},"time":"2026-11-23T12:15:49.355Z","traceparent":null}"#
        );
        let failed = ["c1".to_owned()];
        let ev = FormationEvent {
            phase: Phase::Failed,
            failed_cell_ids: &failed,
            reason: Some("boom"),
            document: None,
            ..ev
        };
        let v: Value = serde_json::from_slice(&ev.payload()).unwrap();
        assert_eq!(v["data"]["reason"], "boom");
        assert_eq!(v["data"]["failedCellIds"][0], "c1");
        assert!(v["data"].get("document").is_none());
    }
}
