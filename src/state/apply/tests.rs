//! Rules of the projection, one by one, and a property test against a naive model.

use super::*;
use crate::event::decode::Decoder;
use crate::state::CellState;

const F1: &str = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";
const F2: &str = "00000000-0000-4000-8000-000000000002";

fn run(state: &mut State, seq: u64, json: &str) -> Outcome {
    let mut d = Decoder::new();
    let ev = d.decode(json.as_bytes()).expect("test events decode");
    apply(state, seq, &ev)
}

fn cell(ty: &str, data: &str, time: Option<&str>) -> String {
    let time = time.map_or(String::new(), |t| format!(",\"time\":\"{t}\""));
    format!(r#"{{"type":"dev.cellos.events.cell.{ty}"{time},"data":{data}}}"#)
}

fn formation(phase: &str, id: &str, name: &str, time: &str) -> String {
    format!(
        r#"{{"type":"dev.cellos.events.cell.formation.v1.{phase}","time":"{time}","data":{{"formationId":"{id}","formationName":"{name}","cellCount":1,"failedCellIds":[],"document":{{"name":"{name}"}}}}}}"#
    )
}

#[test]
fn cell_lifecycle_fills_the_record() {
    let mut s = State::default();
    let started = cell(
        "lifecycle.v1.started",
        r#"{"cellId":"c1","specId":"sp","runId":"r1"}"#,
        Some("t1"),
    );
    assert_eq!(run(&mut s, 1, &started), Outcome::Applied);
    let done = cell(
        "command.v1.completed",
        r#"{"cellId":"c1","specId":"sp","exitCode":4294967297}"#,
        Some("t2"),
    );
    assert_eq!(run(&mut s, 2, &done), Outcome::Applied);
    let destroyed = cell(
        "lifecycle.v1.destroyed",
        r#"{"cellId":"c1","specId":"sp","outcome":"succeeded"}"#,
        Some("t3"),
    );
    assert_eq!(run(&mut s, 3, &destroyed), Outcome::Applied);
    let c = s.cell("c1").unwrap();
    assert_eq!(c.state(), CellState::Destroyed);
    assert_eq!(c.run_id(), Some("r1"));
    assert_eq!(c.started_at().as_deref(), Some("t1"));
    assert_eq!(c.destroyed_at().as_deref(), Some("t3"));
    assert_eq!(c.outcome().as_deref(), Some("succeeded"));
    assert_eq!(c.exit_code(), Some(1), "wraps like `as i32`");
}

#[test]
fn cell_rules() {
    let mut s = State::default();
    // No cellId, no specId: ignored, no record.
    let no_id = cell("lifecycle.v1.started", r#"{"specId":"sp"}"#, None);
    assert_eq!(
        run(&mut s, 1, &no_id),
        Outcome::Ignored(Ignored::MissingCellId)
    );
    let no_spec = cell("lifecycle.v1.started", r#"{"cellId":"c"}"#, None);
    assert_eq!(
        run(&mut s, 2, &no_spec),
        Outcome::Ignored(Ignored::MissingSpecId)
    );
    assert_eq!(s.cell_count(), 0);
    // command.completed on an unseen cell creates a pending record; empty specId back-fills.
    let completed = cell(
        "command.v1.completed",
        r#"{"cellId":"c","specId":""}"#,
        None,
    );
    assert_eq!(run(&mut s, 3, &completed), Outcome::Applied);
    assert_eq!(s.cell("c").unwrap().state(), CellState::Pending);
    let started = cell(
        "lifecycle.v1.started",
        r#"{"cellId":"c","specId":"sp"}"#,
        None,
    );
    run(&mut s, 4, &started);
    let c = s.cell("c").unwrap();
    assert_eq!((c.state(), c.spec_id()), (CellState::Running, "sp"));
    assert_eq!(
        c.started_at(),
        None,
        "a started without time clears started_at"
    );
    // Destroyed is terminal.
    let destroyed = cell(
        "lifecycle.v1.destroyed",
        r#"{"cellId":"c","specId":"x"}"#,
        Some("t"),
    );
    run(&mut s, 5, &destroyed);
    let before = s.cell("c").map(|c| *c.record);
    for (seq, ev) in [(6, &started), (7, &completed), (8, &destroyed)] {
        assert_eq!(
            run(&mut s, seq, ev),
            Outcome::Ignored(Ignored::CellTerminal)
        );
    }
    let mut after = s.cell("c").map(|c| *c.record);
    if let Some(after) = after.as_mut() {
        assert_eq!(
            after.replace_last_event_seq(5),
            8,
            "later events still join the chain"
        );
    }
    assert_eq!(after, before, "the record is unchanged");
    // destroyed on an unseen cell creates a destroyed record.
    let d2 = cell(
        "lifecycle.v1.destroyed",
        r#"{"cellId":"d","specId":"x"}"#,
        Some("t"),
    );
    run(&mut s, 9, &d2);
    assert_eq!(s.cell("d").unwrap().state(), CellState::Destroyed);
    assert_eq!(s.cell("d").unwrap().started_at(), None);
}

#[test]
fn cell_events_are_chained_in_every_family() {
    let mut s = State::default();
    let other =
        r#"{"type":"dev.cellos.events.cell.identity.v1.materialized","data":{"cellId":"c"}}"#;
    assert_eq!(
        run(&mut s, 1, other),
        Outcome::Ignored(Ignored::UnknownType)
    );
    let no_spec = cell("lifecycle.v1.started", r#"{"cellId":"c"}"#, None);
    run(&mut s, 2, &no_spec);
    assert!(s.cell("c").is_none(), "no record without a specId");
    assert_eq!(s.cell_event_seqs("c", 1000), Some(vec![1, 2]));
    // The record's chain starts with the events from before it existed.
    let started = cell(
        "lifecycle.v1.started",
        r#"{"cellId":"c","specId":"x"}"#,
        None,
    );
    run(&mut s, 3, &started);
    run(
        &mut s,
        4,
        &cell(
            "lifecycle.v1.started",
            r#"{"cellId":"d","specId":"x"}"#,
            None,
        ),
    );
    run(&mut s, 5, other);
    let destroyed = cell(
        "lifecycle.v1.destroyed",
        r#"{"cellId":"c","specId":"x"}"#,
        None,
    );
    assert_eq!(run(&mut s, 6, &destroyed), Outcome::Applied);
    // After the terminal event the cell still collects events that name it.
    assert_eq!(
        run(&mut s, 7, &started),
        Outcome::Ignored(Ignored::CellTerminal)
    );
    assert_eq!(s.cell_event_seqs("c", 1000), Some(vec![1, 2, 3, 5, 6, 7]));
    assert_eq!(s.cell_event_seqs("c", 2), Some(vec![6, 7]));
    assert_eq!(s.cell_event_seqs("d", 1000), Some(vec![4]));
    assert_eq!(s.cell_event_seqs("nobody", 1000), None);
}

#[test]
fn cells_correlate_with_formations() {
    let mut s = State::default();
    let upper = F1.to_uppercase();
    let a = cell(
        "lifecycle.v1.started",
        &format!(r#"{{"cellId":"a","specId":"s","correlation":{{"formationId":"{upper}"}}}}"#),
        None,
    );
    let b = cell(
        "lifecycle.v1.started",
        &format!(r#"{{"cellId":"b","specId":"s","formationId":"{F1}"}}"#),
        None,
    );
    let c = cell(
        "lifecycle.v1.started",
        r#"{"cellId":"c","specId":"s"}"#,
        None,
    );
    for (i, ev) in [&c, &b, &a].into_iter().enumerate() {
        run(&mut s, i as u64 + 1, ev);
    }
    let ids: Vec<&str> = s.cells_of_formation(F1).map(|c| c.id()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(s.cell("a").unwrap().formation_id(), Some(F1));
}

#[test]
fn formation_phases_and_terminal_guard() {
    let mut s = State::default();
    let id = Uuid::parse_str(F1).unwrap();
    assert_eq!(
        run(
            &mut s,
            1,
            &formation("created", F1, "demo", "2026-01-01T00:00:00.000Z")
        ),
        Outcome::Applied
    );
    let f = s.formation(&id).unwrap();
    assert_eq!(f.status, FormationStatus::Pending);
    assert_eq!(&f.document[..], br#"{"name":"demo"}"#);
    assert_eq!(f.created_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
    for (seq, phase, status) in [
        (2, "launching", FormationStatus::Running),
        (3, "degraded", FormationStatus::Running),
        (4, "running", FormationStatus::Running),
        (5, "completed", FormationStatus::Succeeded),
    ] {
        run(
            &mut s,
            seq,
            &formation(phase, F1, "demo", "2026-01-01T00:00:05.000Z"),
        );
        assert_eq!(s.formation(&id).unwrap().status, status, "{phase}");
    }
    assert_eq!(
        run(
            &mut s,
            6,
            &formation("running", F1, "demo", "2026-01-02T00:00:00.000Z")
        ),
        Outcome::Ignored(Ignored::FormationTerminal)
    );
    let f = s.formation(&id).unwrap();
    assert_eq!(f.status, FormationStatus::Succeeded);
    assert_eq!(f.updated_at.as_deref(), Some("2026-01-01T00:00:05.000Z"));
    assert_eq!(f.created_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
    assert_eq!(
        run(
            &mut s,
            7,
            &formation("created", F1, "demo", "2026-01-01T00:00:00.000Z")
        ),
        Outcome::Ignored(Ignored::DuplicateCreated)
    );
    assert_eq!(
        run(
            &mut s,
            8,
            &formation("exploded", F1, "demo", "2026-01-01T00:00:00.000Z")
        ),
        Outcome::Ignored(Ignored::UnknownPhase)
    );
}

#[test]
fn formation_ids_and_legacy_prefix() {
    let mut s = State::default();
    let missing =
        r#"{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationName":"x"}}"#;
    assert_eq!(
        run(&mut s, 1, missing),
        Outcome::Ignored(Ignored::MissingFormationId)
    );
    let bad =
        r#"{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"nope"}}"#;
    assert_eq!(
        run(&mut s, 2, bad),
        Outcome::Ignored(Ignored::BadFormationId)
    );
    let legacy = format!(
        r#"{{"type":"io.cellos.formation.v1.created","data":{{"formation_id":"{F2}","name":"legacy"}}}}"#
    );
    assert_eq!(run(&mut s, 3, &legacy), Outcome::Applied);
    let f = s.formation_by_name("legacy").unwrap();
    assert_eq!(f.status, FormationStatus::Pending);
    assert_eq!(f.created_at, None, "no time, no timestamp");
    // The envelope subject is the last resort; a non-created first event creates the record.
    let by_subject = format!(
        r#"{{"type":"dev.cellos.events.cell.formation.v1.failed","subject":"{F1}","time":"bad","data":{{"reason":"r"}}}}"#
    );
    assert_eq!(run(&mut s, 4, &by_subject), Outcome::Applied);
    let f = s.formation(&Uuid::parse_str(F1).unwrap()).unwrap();
    assert_eq!(f.status, FormationStatus::Failed);
    assert_eq!(&f.document[..], br#"{"reason":"r"}"#);
    assert_eq!(
        f.created_at, None,
        "a time that is not RFC 3339 is not used"
    );
    assert_eq!(
        run(&mut s, 5, r#"{"type":"x"}"#),
        Outcome::Ignored(Ignored::UnknownType)
    );
}

#[test]
fn names_first_in_log_wins_and_are_reusable_after_terminal() {
    let mut s = State::default();
    let a = Uuid::parse_str(F1).unwrap();
    let b = Uuid::parse_str(F2).unwrap();
    run(
        &mut s,
        1,
        &formation("created", F1, "web", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(
        run(
            &mut s,
            2,
            &formation("created", F2, "web", "2026-01-01T00:00:00Z")
        ),
        Outcome::Ignored(Ignored::NameConflict)
    );
    assert_eq!(s.rejection(&b), Some(Rejection { seq: 2, holder: a }));
    assert!(s.formation(&b).is_none());
    // Later events of the loser do not bring it to life.
    assert_eq!(
        run(
            &mut s,
            3,
            &formation("running", F2, "web", "2026-01-01T00:00:00Z")
        ),
        Outcome::Ignored(Ignored::RejectedFormation)
    );
    assert_eq!(s.name_holder("web").unwrap().id, a);
    run(
        &mut s,
        4,
        &formation("cancelled", F1, "web", "2026-01-01T00:00:00Z"),
    );
    assert!(s.name_holder("web").is_none());
    assert_eq!(s.formation_by_name("web").unwrap().id, a);
    let c = "00000000-0000-4000-8000-000000000003";
    assert_eq!(
        run(
            &mut s,
            5,
            &formation("created", c, "web", "2026-01-01T00:00:00Z")
        ),
        Outcome::Applied
    );
    assert_eq!(s.formation_by_name("web").unwrap().id.to_string(), c);
    // A name is never renamed by later events.
    run(
        &mut s,
        6,
        &formation("running", c, "other", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(&*s.formation_by_name("web").unwrap().name, "web");
    assert!(s.formation_by_name("other").is_none());
}

#[test]
fn rejections_are_bounded() {
    let mut s = State::default();
    run(
        &mut s,
        1,
        &formation("created", F1, "web", "2026-01-01T00:00:00Z"),
    );
    let n = MAX_REMEMBERED_REJECTIONS as u64 + 10;
    for i in 0..n {
        let id = Uuid::from_u128(1000 + i as u128).to_string();
        run(
            &mut s,
            2 + i,
            &formation("created", &id, "web", "2026-01-01T00:00:00Z"),
        );
    }
    assert_eq!(s.rejections.len(), MAX_REMEMBERED_REJECTIONS);
    assert!(
        s.rejection(&Uuid::from_u128(1000)).is_none(),
        "oldest forgotten first"
    );
    assert!(s
        .rejection(&Uuid::from_u128(1000 + n as u128 - 1))
        .is_some());
}

#[test]
fn cells_share_their_spec_run_and_formation_texts() {
    let mut s = State::default();
    let upper = F1.to_uppercase();
    for (seq, (id, formation)) in [("c1", F1), ("c2", upper.as_str())].into_iter().enumerate() {
        let data = format!(
            r#"{{"cellId":"{id}","specId":"sp","runId":"r1","correlation":{{"formationId":"{formation}"}}}}"#
        );
        run(
            &mut s,
            seq as u64 + 1,
            &cell("lifecycle.v1.started", &data, None),
        );
    }
    // Filled in later: the same texts again.
    run(
        &mut s,
        3,
        &cell(
            "lifecycle.v1.started",
            r#"{"cellId":"c3","specId":""}"#,
            None,
        ),
    );
    let filled = r#"{"cellId":"c3","specId":"sp","runId":"r1","correlation":{"formationId":"6F9619FF-8B86-D011-B42D-00CF4FC964FF"}}"#;
    run(&mut s, 4, &cell("command.v1.completed", filled, None));
    let (c1, c2, c3) = (
        s.cell("c1").unwrap(),
        s.cell("c2").unwrap(),
        s.cell("c3").unwrap(),
    );
    for c in [&c2, &c3] {
        assert!(std::ptr::eq(c1.spec_id(), c.spec_id()));
        assert!(std::ptr::eq(c1.run_id().unwrap(), c.run_id().unwrap()));
        assert!(std::ptr::eq(
            c1.formation_id().unwrap(),
            c.formation_id().unwrap()
        ));
    }
    assert_eq!(c3.formation_id(), Some(F1), "normalized");
}

#[test]
fn formation_refs_are_normalized_then_shared() {
    let mut texts = Interner::default();
    let upper = formation_ref(&mut texts, "6F1C2A4E-8B3D-4F7A-9C21-5E0D7B8A3F14");
    let lower = formation_ref(&mut texts, "6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14");
    assert!(ArcStr::ptr_eq(&upper, &lower));
    assert_eq!(&*lower, "6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14");
    assert_eq!(&*formation_ref(&mut texts, "not-a-uuid"), "not-a-uuid");
    assert_eq!(
        normalize_formation_ref("6F1C2A4E-8B3D-4F7A-9C21-5E0D7B8A3F14"),
        lower
    );
}
