//! Cells, projected from ingested lifecycle events and read back over HTTP: exact records, the
//! projection rules (terminal guard, strict specId, back-fill), list filters and limits, and
//! formation correlation.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_is_read_back_as_exact_records() {
    let s = TestServer::start().await;
    let (t1, t2, t3) = (ts(10), ts(11), ts(12));
    s.ingest_one(&started("c1", "spec-a", Some("run-1"), &t1))
        .await;
    let mut rec = CellRec {
        id: "c1",
        spec_id: "spec-a",
        run_id: Some("run-1"),
        state: "running",
        started_at: Some(&t1),
        ..Default::default()
    };
    assert_eq!(s.get("/v1/cells/c1").await.ok_json_text(), rec.json());

    s.ingest_one(&command_completed("c1", "spec-a", 3, &t2))
        .await;
    rec.exit_code = Some(3);
    assert_eq!(s.get("/v1/cells/c1").await.ok_json_text(), rec.json());

    s.ingest_one(&destroyed("c1", "spec-a", "succeeded", &t3))
        .await;
    rec.state = "destroyed";
    rec.destroyed_at = Some(&t3);
    rec.outcome = Some("succeeded");
    assert_eq!(s.get("/v1/cells/c1").await.ok_json_text(), rec.json());
    assert_eq!(
        s.get("/v1/cells").await.ok_json_text(),
        format!("[{}]", rec.json())
    );

    // Terminal guard: nothing after destroyed changes the record.
    s.ingest(&[
        started("c1", "spec-b", Some("run-2"), &ts(20)),
        command_completed("c1", "spec-a", 9, &ts(21)),
        destroyed("c1", "spec-a", "failed", &ts(22)),
    ])
    .await;
    assert_eq!(s.get("/v1/cells/c1").await.ok_json_text(), rec.json());

    // Unknown cells.
    assert_problem(
        &s.get("/v1/cells/nope").await,
        NOT_FOUND,
        "cell nope not found",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_rules_for_cells() {
    let s = TestServer::start().await;
    // Missing or non-string specId (strict admission) and missing cellId: ignored, no record.
    let no_spec = cloud_event(STARTED, "sup", Some(&ts(1)), json!({"cellId": "nospec"}));
    let num_spec = cloud_event(
        STARTED,
        "sup",
        Some(&ts(1)),
        json!({"cellId": "numspec", "specId": 5}),
    );
    let no_cell = cloud_event(STARTED, "sup", Some(&ts(1)), json!({"specId": "s"}));
    let num_cell = cloud_event(
        STARTED,
        "sup",
        Some(&ts(1)),
        json!({"cellId": 7, "specId": "s"}),
    );
    let no_data = cloud_event(STARTED, "sup", Some(&ts(1)), json!(null));
    s.ingest(&[no_spec, num_spec, no_cell, num_cell, no_data])
        .await;
    assert_eq!(s.get("/v1/cells").await.ok_json_text(), "[]");
    assert_problem(
        &s.get("/v1/cells/nospec").await,
        NOT_FOUND,
        "cell nospec not found",
    );
    assert_problem(
        &s.get("/v1/cells/numspec").await,
        NOT_FOUND,
        "cell numspec not found",
    );
    assert_problem(&s.get("/v1/cells/7").await, NOT_FOUND, "cell 7 not found");

    // command.completed on an unseen cell creates a pending record; empty specId is allowed
    // and back-filled later, and so is a missing runId.
    let t = ts(2);
    s.ingest_one(&cloud_event(
        COMMAND_COMPLETED,
        "sup",
        Some(&t),
        json!({"cellId": "bf", "specId": "", "exitCode": 4294967297i64, "durationMs": 1, "argv": []}),
    ))
    .await;
    let mut bf = CellRec {
        id: "bf",
        spec_id: "",
        state: "pending",
        exit_code: Some(1), // wraps like an i32 cast
        ..Default::default()
    };
    assert_eq!(s.get("/v1/cells/bf").await.ok_json_text(), bf.json());
    let t3 = ts(3);
    s.ingest_one(&started("bf", "real-spec", Some("run-9"), &t3))
        .await;
    bf.spec_id = "real-spec";
    bf.run_id = Some("run-9");
    bf.state = "running";
    bf.started_at = Some(&t3);
    assert_eq!(s.get("/v1/cells/bf").await.ok_json_text(), bf.json());
    // Once set, spec_id and run_id are not replaced; a second started moves started_at.
    let t4 = ts(4);
    s.ingest_one(&started("bf", "other-spec", Some("run-10"), &t4))
        .await;
    bf.started_at = Some(&t4);
    assert_eq!(s.get("/v1/cells/bf").await.ok_json_text(), bf.json());
    // A non-integer exit code leaves exit_code alone; a negative one is kept.
    s.ingest_one(&cloud_event(
        COMMAND_COMPLETED,
        "sup",
        Some(&ts(5)),
        json!({"cellId": "bf", "specId": "x", "exitCode": "2"}),
    ))
    .await;
    assert_eq!(s.get("/v1/cells/bf").await.ok_json_text(), bf.json());
    s.ingest_one(&command_completed("bf", "x", -1, &ts(6)))
        .await;
    bf.exit_code = Some(-1);
    assert_eq!(s.get("/v1/cells/bf").await.ok_json_text(), bf.json());

    // destroyed on an unseen cell: a destroyed record with no start; no outcome → null.
    let t7 = ts(7);
    s.ingest_one(&cloud_event(
        DESTROYED,
        "sup",
        Some(&t7),
        json!({"cellId": "late", "specId": "s", "ttlSeconds": 1}),
    ))
    .await;
    let late = CellRec {
        id: "late",
        spec_id: "s",
        state: "destroyed",
        destroyed_at: Some(&t7),
        ..Default::default()
    };
    assert_eq!(s.get("/v1/cells/late").await.ok_json_text(), late.json());

    // started without a time: started_at is null.
    s.ingest_one(&cloud_event(
        STARTED,
        "sup",
        None,
        json!({"cellId": "notime", "specId": "s"}),
    ))
    .await;
    let notime = CellRec {
        id: "notime",
        spec_id: "s",
        state: "running",
        ..Default::default()
    };
    assert_eq!(
        s.get("/v1/cells/notime").await.ok_json_text(),
        notime.json()
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_order_state_filter_and_limit() {
    let s = TestServer::start().await;
    // Byte order: "Zed" < "alpha" < "beta" < "gamma" < "ébène".
    s.ingest(&[
        started("gamma", "s", None, &ts(1)),
        started("ébène", "s", None, &ts(2)),
        command_completed("beta", "s", 0, &ts(3)),
        started("alpha", "s", None, &ts(4)),
        destroyed("alpha", "s", "succeeded", &ts(5)),
        started("Zed", "s", None, &ts(6)),
    ])
    .await;
    let all = ["Zed", "alpha", "beta", "gamma", "ébène"];
    let mut records = Vec::new();
    for id in all {
        records.push(
            s.get(&format!("/v1/cells/{}", enc(id)))
                .await
                .ok_json_text(),
        );
    }
    let array = |ids: &[&str]| {
        let items: Vec<&str> = ids
            .iter()
            .map(|id| records[all.iter().position(|a| a == id).unwrap()].as_str())
            .collect();
        format!("[{}]", items.join(","))
    };
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("", all.to_vec()),
        ("?state=running", vec!["Zed", "gamma", "ébène"]),
        ("?state=RUNNING", vec!["Zed", "gamma", "ébène"]),
        ("?state=Running", vec!["Zed", "gamma", "ébène"]),
        ("?state=pending", vec!["beta"]),
        ("?state=Destroyed", vec!["alpha"]),
        ("?limit=2", vec!["Zed", "alpha"]),
        ("?limit=0", vec![]),
        ("?limit=1000000", all.to_vec()),
        ("?state=running&limit=2", vec!["Zed", "gamma"]),
        ("?limit=1&state=destroyed", vec!["alpha"]),
    ];
    for (q, ids) in cases {
        assert_eq!(
            s.get(&format!("/v1/cells{q}")).await.ok_json_text(),
            array(&ids),
            "GET /v1/cells{q}"
        );
    }
    let bad: Vec<(&str, &str)> = vec![
        ("?state=bogus", "unknown ?state value: bogus (want pending|running|destroyed)"),
        ("?state=BoGuS", "unknown ?state value: bogus (want pending|running|destroyed)"),
        ("?state=", "unknown ?state value:  (want pending|running|destroyed)"),
        ("?limit=x", "Failed to deserialize query string: invalid digit found in string"),
        ("?limit=-1", "Failed to deserialize query string: invalid digit found in string"),
        ("?limit=1.5", "Failed to deserialize query string: invalid digit found in string"),
        (
            "?limit=99999999999999999999999",
            "Failed to deserialize query string: number too large to fit in target type",
        ),
        (
            "?cursor=1",
            "Failed to deserialize query string: unknown field `cursor`, expected one of `state`, `formation`, `limit`",
        ),
        (
            "?state=running&since=3",
            "Failed to deserialize query string: unknown field `since`, expected one of `state`, `formation`, `limit`",
        ),
    ];
    for (q, detail) in bad {
        assert_problem(&s.get(&format!("/v1/cells{q}")).await, BAD_REQUEST, detail);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_correlate_with_formations_by_id_or_name() {
    let s = TestServer::start().await;
    let f = new_fid();
    let g = new_fid();
    let named = new_fid();
    s.ingest(&[
        formation_created(&f, "corr", &ts(1), document("corr")),
        formation_created(&named, "corr f", &ts(1), document("corr f")),
        cloud_event(STARTED, "sup", Some(&ts(2)),
            json!({"cellId": "x1", "specId": "s", "formationId": f})),
        cloud_event(STARTED, "sup", Some(&ts(3)),
            json!({"cellId": "x2", "specId": "s", "correlation": {"formationId": f.to_uppercase()}})),
        started("x3", "s", None, &ts(4)),
        cloud_event(STARTED, "sup", Some(&ts(5)),
            json!({"cellId": "x4", "specId": "s", "formationId": g})),
        cloud_event(COMMAND_COMPLETED, "sup", Some(&ts(6)),
            json!({"cellId": "x5", "specId": "s", "exitCode": 0, "correlation": {"formationId": named}})),
    ])
    .await;
    let x1 = s.get("/v1/cells/x1").await.ok_json_text();
    let x2 = s.get("/v1/cells/x2").await.ok_json_text();
    let x3 = s.get("/v1/cells/x3").await.ok_json_text();
    let x4 = s.get("/v1/cells/x4").await.ok_json_text();
    let x5 = s.get("/v1/cells/x5").await.ok_json_text();
    let t2 = ts(2);
    assert_eq!(
        x1,
        CellRec {
            id: "x1",
            spec_id: "s",
            state: "running",
            formation_id: Some(&f),
            started_at: Some(&t2),
            ..Default::default()
        }
        .json()
    );
    // The id is shown in lowercase hyphenated form whatever the producer sent.
    assert_eq!(s.get_json("/v1/cells/x2").await["formation_id"], json!(f));
    assert_eq!(
        s.get_json("/v1/cells/x3").await["formation_id"],
        json!(null)
    );
    let simple = f.replace('-', "");
    let cases: Vec<(String, String)> = vec![
        (format!("?formation={f}"), format!("[{x1},{x2}]")),
        (
            format!("?formation={}", f.to_uppercase()),
            format!("[{x1},{x2}]"),
        ),
        (format!("?formation={simple}"), format!("[{x1},{x2}]")),
        ("?formation=corr".into(), format!("[{x1},{x2}]")),
        (
            format!("?formation={f}&state=running&limit=1"),
            format!("[{x1}]"),
        ),
        (format!("?formation={f}&limit=0"), "[]".into()),
        (format!("?formation={g}"), format!("[{x4}]")),
        ("?formation=corr+f".into(), format!("[{x5}]")),
        ("?formation=corr%20f".into(), format!("[{x5}]")),
        (
            format!("?formation={named}&state=pending"),
            format!("[{x5}]"),
        ),
        (format!("?formation={named}&state=running"), "[]".into()),
        ("?formation=no-such-name".into(), "[]".into()),
        (format!("?formation={}", new_fid()), "[]".into()),
    ];
    for (q, want) in cases {
        assert_eq!(
            s.get(&format!("/v1/cells{q}")).await.ok_json_text(),
            want,
            "{q}"
        );
    }
    let _ = x3;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_ids_are_percent_decoded_path_segments() {
    let s = TestServer::start().await;
    let ids = [
        "my cell/1",
        "a+b",
        "a b",
        "100%",
        "ünï",
        "q?x=1#f",
        "dots.and~tilde",
    ];
    for (i, id) in ids.iter().enumerate() {
        s.ingest_one(&started(id, "s", Some(&format!("r{i}")), &ts(i as u32)))
            .await;
    }
    for (i, id) in ids.iter().enumerate() {
        let run = format!("r{i}");
        let t = ts(i as u32);
        let want = CellRec {
            id,
            spec_id: "s",
            run_id: Some(&run),
            state: "running",
            started_at: Some(&t),
            ..Default::default()
        };
        assert_eq!(
            s.get(&format!("/v1/cells/{}", enc(id)))
                .await
                .ok_json_text(),
            want.json(),
            "{id}"
        );
    }
    // '+' in a path is a plus, not a space.
    assert_eq!(s.get_json("/v1/cells/a+b").await["id"], "a+b");
    assert_eq!(s.get_json("/v1/cells/a%20b").await["id"], "a b");
    assert_problem(
        &s.get("/v1/cells/no%20such").await,
        NOT_FOUND,
        "cell no such not found",
    );
    assert_problem(
        &s.get("/v1/cells/x%2Fy").await,
        NOT_FOUND,
        "cell x/y not found",
    );
    // A segment that does not decode to UTF-8 is a bad request.
    let r = s.get("/v1/cells/%FF").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert_problem(&r, BAD_REQUEST, &detail);
    s.shutdown().await;
}
