//! Formations on the read side. They are created here by ingesting formation `created` events
//! (carrying the normalized document) through POST /v1/events, then moved through their
//! lifecycle, and read back by id (every UUID form), by name, and in the list.

mod common;

use common::*;
use serde_json::{json, Value};

const FA: &str = "00000000-0000-4000-8000-00000000000a";
const FB: &str = "00000000-0000-4000-8000-00000000000b";
const FC: &str = "00000000-0000-4000-8000-00000000000c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_formations_are_listed_in_id_order_with_their_document() {
    let s = TestServer::start().await;
    // Keys out of order, nested, with escapes: the document renders canonical (sorted, compact).
    let doc_c = json!({"name": "gamma", "members": [{"id": "b", "z": 1, "a": "é\"\n"}],
                       "coordinator": "b", "extra": {"y": null, "x": [true, 1.5]}});
    let (t1, t2, t3) = (ts(1), ts(2), ts(3));
    let seqs = s
        .ingest(&[
            formation_created(FC, "gamma", &t1, doc_c.clone()),
            formation_created(FA, "alpha", &t2, document("alpha")),
            formation_created(FB, "beta", &t3, document("beta")),
        ])
        .await;
    assert_eq!(seqs, [1, 2, 3]);
    let ra = formation_record(
        FA,
        "alpha",
        "PENDING",
        &document("alpha"),
        Some(&t2),
        Some(&t2),
    );
    let rb = formation_record(
        FB,
        "beta",
        "PENDING",
        &document("beta"),
        Some(&t3),
        Some(&t3),
    );
    let rc = formation_record(FC, "gamma", "PENDING", &doc_c, Some(&t1), Some(&t1));
    assert!(rc.contains(r#""document":{"coordinator":"b","extra":{"x":[true,1.5],"y":null},"members":[{"a":"é\"\n","id":"b","z":1}],"name":"gamma"}"#), "{rc}");
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        format!("{{\"formations\":[{ra},{rb},{rc}],\"cursor\":3}}")
    );
    // The cursor is the last applied seq, ignored events included.
    s.ingest_one(&cloud_event("dev.example.other", "x", None, json!({})))
        .await;
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        format!("{{\"formations\":[{ra},{rb},{rc}],\"cursor\":4}}")
    );
    // The query string is ignored.
    assert_eq!(
        s.get("/v1/formations?limit=1&name=alpha")
            .await
            .ok_json_text(),
        format!("{{\"formations\":[{ra},{rb},{rc}],\"cursor\":4}}")
    );
    assert_eq!(
        s.get(&format!("/v1/formations/{FC}")).await.ok_json_text(),
        rc
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formation_is_found_by_any_uuid_form_or_by_name() {
    let s = TestServer::start().await;
    let id = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";
    let t = ts(1);
    s.ingest_one(&formation_created(id, "web-app", &t, document("web-app")))
        .await;
    let rec = formation_record(
        id,
        "web-app",
        "PENDING",
        &document("web-app"),
        Some(&t),
        Some(&t),
    );
    let simple = id.replace('-', "");
    for ident in [
        id.to_string(),
        id.to_uppercase(),
        simple.clone(),
        simple.to_uppercase(),
        format!("%7B{id}%7D"),
        format!("{{{}}}", id.to_uppercase()),
        format!("urn:uuid:{id}"),
        format!("urn:uuid:{}", id.to_uppercase()),
        "web-app".into(),
    ] {
        assert_eq!(
            s.get(&format!("/v1/formations/{ident}"))
                .await
                .ok_json_text(),
            rec,
            "/v1/formations/{ident}"
        );
    }
    assert_eq!(
        s.get("/v1/formations/by-name/web-app").await.ok_json_text(),
        rec
    );

    // Not found: UUIDs are named lowercase hyphenated, names quoted.
    let ghost = "0C0FFEE0-0000-4000-8000-0000000000AA";
    for ident in [
        ghost.to_string(),
        ghost.replace('-', ""),
        format!("urn:uuid:{ghost}"),
    ] {
        assert_problem(
            &s.get(&format!("/v1/formations/{ident}")).await,
            NOT_FOUND,
            "formation 0c0ffee0-0000-4000-8000-0000000000aa not found",
        );
    }
    assert_problem(
        &s.get("/v1/formations/ghost").await,
        NOT_FOUND,
        "formation 'ghost' not found",
    );
    assert_problem(
        &s.get("/v1/formations/by-name/ghost").await,
        NOT_FOUND,
        "formation 'ghost' not found",
    );
    // Names are exact and case-sensitive.
    assert_problem(
        &s.get("/v1/formations/by-name/Web-App").await,
        NOT_FOUND,
        "formation 'Web-App' not found",
    );
    // `by-name` with no name is an ident, looked up as a name.
    assert_problem(
        &s.get("/v1/formations/by-name").await,
        NOT_FOUND,
        "formation 'by-name' not found",
    );
    // by-name does not parse UUIDs.
    assert_problem(
        &s.get(&format!("/v1/formations/by-name/{id}")).await,
        NOT_FOUND,
        &format!("formation '{id}' not found"),
    );
    // Percent-encoded names.
    let odd = new_fid();
    let t2 = ts(2);
    s.ingest_one(&formation_created(&odd, "a b/c", &t2, document("a b/c")))
        .await;
    let rec_odd = formation_record(
        &odd,
        "a b/c",
        "PENDING",
        &document("a b/c"),
        Some(&t2),
        Some(&t2),
    );
    assert_eq!(
        s.get("/v1/formations/by-name/a%20b%2Fc")
            .await
            .ok_json_text(),
        rec_odd
    );
    assert_eq!(
        s.get("/v1/formations/a%20b%2Fc").await.ok_json_text(),
        rec_odd
    );
    assert_problem(
        &s.get("/v1/formations/by-name/gh%20ost").await,
        NOT_FOUND,
        "formation 'gh ost' not found",
    );
    s.shutdown().await;
}

async fn status_of(s: &TestServer, id: &str) -> Value {
    let v = s.get_json(&format!("/v1/formations/{id}")).await;
    json!([v["status"], v["created_at"], v["updated_at"]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_move_the_status_and_terminal_statuses_are_final() {
    let s = TestServer::start().await;
    let (f1, f2, f3, f4) = (new_fid(), new_fid(), new_fid(), new_fid());
    for (i, f) in [&f1, &f2, &f3, &f4].into_iter().enumerate() {
        let name = format!("life-{i}");
        s.ingest_one(&formation_created(f, &name, &ts(0), document(&name)))
            .await;
        assert_eq!(status_of(&s, f).await, json!(["PENDING", ts(0), ts(0)]));
    }
    let steps: Vec<(&str, &str, &str, u32)> = vec![
        // formation, phase, expected status, time of the event
        (f1.as_str(), "launching", "RUNNING", 1),
        (f1.as_str(), "running", "RUNNING", 2),
        (f1.as_str(), "degraded", "RUNNING", 3),
        (f1.as_str(), "running", "RUNNING", 4),
        (f1.as_str(), "completed", "SUCCEEDED", 5),
        (f2.as_str(), "failed", "FAILED", 6),
        (f3.as_str(), "running", "RUNNING", 7),
        (f3.as_str(), "cancelled", "CANCELLED", 8),
        (f4.as_str(), "degraded", "RUNNING", 9),
    ];
    for (f, phase, status, t) in steps {
        s.ingest_one(&formation_phase(f, "", phase, &ts(t))).await;
        assert_eq!(
            status_of(&s, f).await,
            json!([status, ts(0), ts(t)]),
            "{phase}"
        );
    }
    // After a terminal status, nothing changes: not the status, not updated_at.
    for (f, status, t) in [
        (&f1, "SUCCEEDED", 5),
        (&f2, "FAILED", 6),
        (&f3, "CANCELLED", 8),
    ] {
        for (i, phase) in [
            "running",
            "launching",
            "completed",
            "failed",
            "cancelled",
            "created",
        ]
        .into_iter()
        .enumerate()
        {
            s.ingest_one(&formation_phase(f, "", phase, &ts(100 + i as u32)))
                .await;
        }
        assert_eq!(status_of(&s, f).await, json!([status, ts(0), ts(t)]));
    }
    // The legacy type prefix is projected too; unknown phases are ignored.
    s.ingest_one(&cloud_event(
        "io.cellos.formation.v1.completed",
        &f4,
        Some(&ts(200)),
        json!({"formationId": f4, "formationName": "life-3"}),
    ))
    .await;
    assert_eq!(
        status_of(&s, &f4).await,
        json!(["SUCCEEDED", ts(0), ts(200)])
    );
    s.ingest_one(&formation_phase(&f4, "", "exploded", &ts(201)))
        .await;
    assert_eq!(
        status_of(&s, &f4).await,
        json!(["SUCCEEDED", ts(0), ts(200)])
    );
    // The name and document never change after creation.
    let v = s.get_json(&format!("/v1/formations/{f1}")).await;
    assert_eq!(v["name"], "life-0");
    assert_eq!(v["document"], document("life-0"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_created_for_the_same_id_is_ignored() {
    let s = TestServer::start().await;
    let f = new_fid();
    let t = ts(1);
    s.ingest_one(&formation_created(&f, "orig", &t, document("orig")))
        .await;
    s.ingest_one(&formation_phase(&f, "orig", "running", &ts(2)))
        .await;
    s.ingest_one(&formation_created(
        &f,
        "renamed",
        &ts(3),
        document("renamed"),
    ))
    .await;
    let t2 = ts(2);
    assert_eq!(
        s.get(&format!("/v1/formations/{f}")).await.ok_json_text(),
        formation_record(
            &f,
            "orig",
            "RUNNING",
            &document("orig"),
            Some(&t),
            Some(&t2)
        )
    );
    assert_problem(
        &s.get("/v1/formations/by-name/renamed").await,
        NOT_FOUND,
        "formation 'renamed' not found",
    );
    // Ids are UUIDs whatever their spelling: an upper-case created for the same id is a
    // duplicate too, and a formation created with an upper-case id is shown lower-case.
    s.ingest_one(&formation_created(
        &f.to_uppercase(),
        "shout",
        &ts(4),
        document("shout"),
    ))
    .await;
    assert_eq!(
        s.get_json(&format!("/v1/formations/{f}")).await["name"],
        "orig"
    );
    let g = new_fid();
    s.ingest_one(&formation_created(
        &g.to_uppercase(),
        "upper",
        &ts(5),
        document("upper"),
    ))
    .await;
    let t5 = ts(5);
    assert_eq!(
        s.get("/v1/formations/by-name/upper").await.ok_json_text(),
        formation_record(
            &g,
            "upper",
            "PENDING",
            &document("upper"),
            Some(&t5),
            Some(&t5)
        )
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_among_live_formations_first_in_log_wins() {
    let s = TestServer::start().await;
    let (a, b, c, d, e) = (FA, FB, FC, new_fid(), new_fid());
    let doc = |tag: &str| json!({"name": "web", "tag": tag});
    // A holds "web"; B's created (later in the log) is rejected, in the same batch or not.
    s.ingest(&[
        formation_created(a, "web", &ts(1), doc("a")),
        formation_created(b, "web", &ts(2), doc("b")),
    ])
    .await;
    let ra = formation_record(a, "web", "PENDING", &doc("a"), Some(&ts(1)), Some(&ts(1)));
    assert_eq!(s.get("/v1/formations/by-name/web").await.ok_json_text(), ra);
    assert_eq!(s.get("/v1/formations/web").await.ok_json_text(), ra);
    let missing_b = format!("formation {b} not found");
    assert_problem(
        &s.get(&format!("/v1/formations/{b}")).await,
        NOT_FOUND,
        &missing_b,
    );
    // Later events of the loser do not bring it to life.
    s.ingest_one(&formation_phase(b, "web", "running", &ts(3)))
        .await;
    assert_problem(
        &s.get(&format!("/v1/formations/{b}")).await,
        NOT_FOUND,
        &missing_b,
    );
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        format!("{{\"formations\":[{ra}],\"cursor\":3}}")
    );
    // Other names are unaffected.
    s.ingest_one(&formation_created(&d, "api", &ts(4), doc("d")))
        .await;
    assert_eq!(
        s.get_json("/v1/formations/by-name/api").await["id"],
        json!(d)
    );

    // Once A is terminal the name is free; by-name addresses the newest formation.
    s.ingest_one(&formation_phase(a, "web", "completed", &ts(5)))
        .await;
    let ra = formation_record(a, "web", "SUCCEEDED", &doc("a"), Some(&ts(1)), Some(&ts(5)));
    assert_eq!(s.get("/v1/formations/by-name/web").await.ok_json_text(), ra);
    s.ingest_one(&formation_created(c, "web", &ts(6), doc("c")))
        .await;
    let rc = formation_record(c, "web", "PENDING", &doc("c"), Some(&ts(6)), Some(&ts(6)));
    assert_eq!(s.get("/v1/formations/by-name/web").await.ok_json_text(), rc);
    assert_eq!(s.get("/v1/formations/web").await.ok_json_text(), rc);
    assert_eq!(
        s.get(&format!("/v1/formations/{a}")).await.ok_json_text(),
        ra
    );
    // C now holds the name: a new claim loses again.
    s.ingest_one(&formation_created(&e, "web", &ts(7), doc("e")))
        .await;
    assert_problem(
        &s.get(&format!("/v1/formations/{e}")).await,
        NOT_FOUND,
        &format!("formation {e} not found"),
    );
    assert_eq!(s.get("/v1/formations/by-name/web").await.ok_json_text(), rc);
    let list = s.get_json("/v1/formations").await;
    let ids: Vec<&str> = list["formations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    let mut want = vec![a, c, d.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    // A formation rejected once stays rejected, even after the holder is gone.
    s.ingest_one(&formation_phase(c, "web", "cancelled", &ts(8)))
        .await;
    s.ingest_one(&formation_created(&e, "web", &ts(9), doc("e")))
        .await;
    assert_problem(
        &s.get(&format!("/v1/formations/{e}")).await,
        NOT_FOUND,
        &format!("formation {e} not found"),
    );
    let rc = formation_record(c, "web", "CANCELLED", &doc("c"), Some(&ts(6)), Some(&ts(8)));
    assert_eq!(s.get("/v1/formations/by-name/web").await.ok_json_text(), rc);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_come_from_event_time() {
    let s = TestServer::start().await;
    let f = new_fid();
    let created = "2026-03-04T05:06:07.891Z";
    let later = "2026-03-04T05:10:00.000Z";
    s.ingest_one(&formation_created(&f, "times", created, document("times")))
        .await;
    s.ingest_one(&formation_phase(&f, "times", "running", later))
        .await;
    let v = s.get_json(&format!("/v1/formations/{f}")).await;
    assert_eq!(v["created_at"], created);
    assert_eq!(v["updated_at"], later);
    // An event without a time leaves updated_at alone.
    s.ingest_one(&cloud_event(
        &formation_type("degraded"),
        &f,
        None,
        json!({"formationId": f, "formationName": "times"}),
    ))
    .await;
    let v = s.get_json(&format!("/v1/formations/{f}")).await;
    assert_eq!(
        (v["status"].as_str(), v["updated_at"].as_str()),
        (Some("RUNNING"), Some(later))
    );
    // Records never carry `state` or `cells`.
    let obj = v.as_object().unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = vec![
        "created_at",
        "document",
        "id",
        "name",
        "status",
        "updated_at",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    s.shutdown().await;
}
