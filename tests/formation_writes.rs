//! Formation writes over real HTTP: admission (both shapes, name rules, authority checks),
//! uniqueness by log order, delete, status transitions, emitted events, and restart equality
//! (docs/CONTRACT.md, "Formations"). The reference server's own formation tests are re-expressed
//! here.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const FORMATION_CYCLE: ProblemKind = (
    400,
    "/problems/formation/cycle",
    "Formation rejected: authority cycle",
);
const NO_COORDINATOR: ProblemKind = (
    400,
    "/problems/formation/no-coordinator",
    "Formation rejected: no coordinator",
);
const NOT_NARROWING: ProblemKind = (
    400,
    "/problems/formation/authority-not-narrowing",
    "Formation rejected: authority does not narrow",
);
const DUPLICATE_MEMBER: ProblemKind = (
    400,
    "/problems/formation/duplicate-member-id",
    "Formation rejected: duplicate member id",
);
const CONFLICT: ProblemKind = (409, "/problems/conflict", "Conflict");

fn flat(name: &str) -> Value {
    json!({"name": name, "coordinator": "c", "members": [{"id": "c"}, {"id": "w", "authorizedBy": "c"}]})
}

/// `POST /v1/formations` of these exact bytes.
async fn post(s: &Client, body: impl Into<Vec<u8>>) -> Resp {
    s.post("/v1/formations", "application/json", body).await
}

async fn create(s: &Client, doc: &Value) -> String {
    let r = post(s, serde_json::to_vec(doc).unwrap()).await;
    r.expect(201);
    let v = r.json();
    assert_eq!(v["status"], "PENDING");
    let text = r.text();
    assert!(
        text.starts_with("{\"id\":\""),
        "key order id,name,status: {text}"
    );
    v["id"].as_str().unwrap().to_owned()
}

async fn status(s: &Client, ident: &str, body: Value) -> Resp {
    s.send(
        Method::POST,
        &format!("/v1/formations/{ident}/status"),
        Auth::Token,
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .await
}

async fn delete(s: &Client, path: &str) -> Resp {
    s.send(Method::DELETE, path, Auth::Token, &[], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_over_http() {
    let s = TestServer::start().await;
    // post_valid_formation_returns_201 / get_formation_by_id_captures_path
    let id = create(&s, &flat("demo")).await;
    let rec = s.get_json(&format!("/v1/formations/{id}")).await;
    assert_eq!(rec["name"], "demo");
    assert_eq!(rec["document"], flat("demo"));
    // snapshot_returns_cursor
    let list = s.get_json("/v1/formations").await;
    assert_eq!(list["formations"].as_array().unwrap().len(), 1);
    assert!(list["cursor"].as_u64().unwrap() >= 1);
    // The authority-check kinds (docs/CONTRACT.md, "Authority checks"), with their types and
    // details.
    let cases = [
        (
            json!({"name": "a", "coordinator": "x", "members": [{"id": "c"}]}),
            NO_COORDINATOR,
            "coordinator 'x' must appear in members list",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c"}, {"id": "w"}]}),
            NOT_NARROWING,
            "non-coordinator member 'w' missing authorizedBy",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c"}, {"id": "w", "authorizedBy": "zz"}]}),
            NOT_NARROWING,
            "member 'w' references unknown parent 'zz'",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c", "authorizedBy": "c"}]}),
            NOT_NARROWING,
            "coordinator 'c' must not declare authorizedBy",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c"}, {"id": "d", "authorizedBy": "c"}, {"id": "d", "authorizedBy": "c"}]}),
            DUPLICATE_MEMBER,
            "duplicate member id 'd'",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c"}, {"id": "s", "authorizedBy": "s"}]}),
            FORMATION_CYCLE,
            "authorizedBy cycle detected involving member 's'",
        ),
        (
            json!({"name": "a", "coordinator": "c", "members": [{"id": "c"}, {"id": "p", "authorizedBy": "q"}, {"id": "q", "authorizedBy": "p"}]}),
            FORMATION_CYCLE,
            "authorizedBy cycle detected involving member 'p'",
        ),
    ];
    for (doc, kind, detail) in cases {
        let r = post(&s, serde_json::to_vec(&doc).unwrap()).await;
        assert_problem(&r, kind, detail);
    }
    // accepts_valid_dag: coordinator plus three workers, one two hops deep.
    create(&s, &json!({"name": "dag", "coordinator": "c", "members": [{"id": "c"},
        {"id": "w1", "authorizedBy": "c"}, {"id": "w2", "authorizedBy": "c"}, {"id": "w3", "authorizedBy": "w1"}]})).await;
    // Name rules, in order.
    let name_cases = [
        ("", "formation name must not be empty"),
        ("   ", "formation name contains disallowed character \\x20 at byte offset 0 (allowed: A-Z a-z 0-9 . - _)"),
        ("a\nb", "formation name contains disallowed character \\x0a at byte offset 1 (allowed: A-Z a-z 0-9 . - _)"),
        ("a\tb", "formation name contains disallowed character \\x09 at byte offset 1 (allowed: A-Z a-z 0-9 . - _)"),
        ("a\u{0}b", "formation name contains disallowed character \\x00 at byte offset 1 (allowed: A-Z a-z 0-9 . - _)"),
        ("é", "formation name contains disallowed character \\xc3 at byte offset 0 (allowed: A-Z a-z 0-9 . - _)"),
        ("-a", "formation name '-a' must not start with '-' or '.'"),
        ("a.", "formation name 'a.' must not end with '-' or '.'"),
        (".", "formation name '.' is reserved"),
        ("..", "formation name '..' is reserved"),
    ];
    for (name, detail) in name_cases {
        let r = post(&s, serde_json::to_vec(&flat(name)).unwrap()).await;
        assert_problem(&r, BAD_REQUEST, detail);
    }
    let long = "a".repeat(254);
    assert_problem(
        &post(&s, serde_json::to_vec(&flat(&long)).unwrap()).await,
        BAD_REQUEST,
        "formation name length 254 exceeds maximum of 253 bytes",
    );
    for ok in ["simple", "web-1", "team.alpha_one"] {
        create(&s, &flat(ok)).await;
    }
    // JSON and shape errors.
    assert_problem(
        &post(&s, b"{1:2}".to_vec()).await,
        BAD_REQUEST,
        "invalid json: key must be a string at line 1 column 2",
    );
    assert_problem(
        &post(&s, b"{\"name\":\"a\",\"members\":[]}".to_vec()).await,
        BAD_REQUEST,
        "invalid json: missing field `coordinator`",
    );
    assert_problem(
        &post(&s, b"[]".to_vec()).await,
        BAD_REQUEST,
        "invalid json: invalid length 0, expected struct FormationDocument with 3 elements",
    );
    // post_formation_oversized_body_returns_413 (65,536 bytes is still read).
    let mut padded = serde_json::to_vec(
        &json!({"name": "big", "coordinator": "c", "members": [{"id": "c"}], "pad": ""}),
    )
    .unwrap();
    let fill = 65_536 - padded.len();
    padded.splice(
        padded.len() - 2..padded.len() - 2,
        std::iter::repeat_n(b'x', fill),
    );
    assert_eq!(padded.len(), 65_536);
    post(&s, padded.clone()).await.expect(201);
    padded.splice(padded.len() - 2..padded.len() - 2, [b'x']);
    assert_problem(
        &post(&s, padded).await,
        PAYLOAD_TOO_LARGE,
        "Failed to buffer the request body: length limit exceeded",
    );
    // Auth comes first.
    let r = s
        .send(
            Method::POST,
            "/v1/formations",
            Auth::None,
            &[],
            Some(vec![b'x'; 70_000]),
        )
        .await;
    assert_problem(&r, UNAUTHORIZED, "missing Authorization header");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shape_over_http() {
    let s = TestServer::start().await;
    let kube = json!({"apiVersion": "cellos.dev/v1", "kind": "Formation",
        "metadata": {"name": "kube", "labels": {"team": "a"}, "annotations": {"note": "n"}},
        "spec": {"coordinator": "c", "members": [{"name": "c"}, {"name": "w", "authorizedBy": "c"}]}});
    let id = create(&s, &kube).await;
    let rec = s.get_ok(&format!("/v1/formations/{id}")).await;
    let rec: Value = serde_json::from_slice(&rec).unwrap();
    assert_eq!(
        rec["document"],
        json!({"name": "kube", "coordinator": "c", "members": [{"id": "c"}, {"id": "w", "authorizedBy": "c"}],
               "metadata": {"labels": {"team": "a"}, "annotations": {"note": "n"}}})
    );
    let mut wrong = kube.clone();
    wrong["apiVersion"] = json!("cellos.dev/v2");
    assert_problem(&post(&s, serde_json::to_vec(&wrong).unwrap()).await, BAD_REQUEST,
        "kubectl-style formation: unsupported apiVersion 'cellos.dev/v2' (expected \"cellos.dev/v1\")");
    let mut wrong = kube.clone();
    wrong["kind"] = json!("Cell");
    assert_problem(
        &post(&s, serde_json::to_vec(&wrong).unwrap()).await,
        BAD_REQUEST,
        "kubectl-style formation: unsupported kind 'Cell' (expected \"Formation\")",
    );
    let mut wrong = kube.clone();
    wrong["spec"]["members"][0]["id"] = json!("c");
    assert_problem(&post(&s, serde_json::to_vec(&wrong).unwrap()).await, BAD_REQUEST,
        "kubectl-style formation: spec.members[0] declares both 'name' and 'id'; kubectl manifests address members by 'name' only — remove the 'id' field");
    let mut wrong = kube.clone();
    wrong["status"] = json!({});
    assert_problem(&post(&s, serde_json::to_vec(&wrong).unwrap()).await, BAD_REQUEST,
        "kubectl-style formation: unknown top-level field(s) [\"status\"]; allowed: [\"apiVersion\", \"kind\", \"metadata\", \"spec\"]");
    let mut wrong = kube.clone();
    wrong["metadata"]["labels"] = json!([]);
    assert_problem(
        &post(&s, serde_json::to_vec(&wrong).unwrap()).await,
        BAD_REQUEST,
        "kubectl-style formation: 'metadata.labels' must be an object",
    );
    let mut hybrid = kube.clone();
    hybrid["name"] = json!("x");
    let r = post(&s, serde_json::to_vec(&hybrid).unwrap()).await;
    r.expect(400);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .starts_with("hybrid formation document"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_by_log_order_and_reusable_after_terminal() {
    let s = TestServer::start().await;
    // 32 concurrent POSTs of one name: exactly one 201, 31 × 409 naming the winner.
    let addr = s.addr;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(async move {
                post(
                    &Client::new(addr),
                    serde_json::to_vec(&flat("web")).unwrap(),
                )
                .await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created.push(r.json()["id"].as_str().unwrap().to_owned()),
            409 => conflicts.push(r),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(conflicts.len(), 31);
    let winner = &created[0];
    for r in &conflicts {
        assert_problem(
            r,
            CONFLICT,
            &format!("formation name 'web' already in use by {winner}"),
        );
    }
    assert_eq!(
        s.get_json("/v1/formations").await["formations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Terminal, then the name is free again; by-name addresses the newest.
    delete(&s, "/v1/formations/by-name/web").await.expect(204);
    assert_eq!(
        s.get_json("/v1/formations/web").await["status"],
        "CANCELLED"
    );
    let second = create(&s, &flat("web")).await;
    assert_eq!(
        s.get_json("/v1/formations/by-name/web").await["id"],
        second.as_str()
    );
    assert_eq!(
        s.get_json(&format!("/v1/formations/{winner}")).await["status"],
        "CANCELLED"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_status_transitions() {
    let s = TestServer::start().await;
    let id = create(&s, &flat("life")).await;
    // Case-insensitive states, mapped as the reference maps them.
    for (state, expect) in [
        ("launching", "RUNNING"),
        ("Degraded", "RUNNING"),
        ("RUNNING", "RUNNING"),
    ] {
        status(
            &s,
            &id,
            json!({"state": state, "reason": "r", "failed_cells": ["w"]}),
        )
        .await
        .expect(204);
        assert_eq!(
            s.get_json(&format!("/v1/formations/{id}")).await["status"],
            expect
        );
    }
    assert_problem(
        &status(&s, &id, json!({"state": "teleporting"})).await,
        BAD_REQUEST,
        "unknown state: TELEPORTING",
    );
    assert_problem(
        &status(&s, &id, json!({"state": "pending"})).await,
        BAD_REQUEST,
        "unknown state: PENDING",
    );
    // Body checks, after auth.
    let r = s
        .send(
            Method::POST,
            &format!("/v1/formations/{id}/status"),
            Auth::Token,
            &[("content-type", "text/plain")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_problem(
        &r,
        UNSUPPORTED_MEDIA_TYPE,
        "Expected request with `Content-Type: application/json`",
    );
    let r = s
        .send(
            Method::POST,
            &format!("/v1/formations/{id}/status"),
            Auth::Token,
            &[("content-type", "application/merge-patch+json")],
            Some(b"{".to_vec()),
        )
        .await;
    assert_problem(
        &r,
        BAD_REQUEST,
        "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1",
    );
    let r = s
        .send(
            Method::POST,
            &format!("/v1/formations/{id}/status"),
            Auth::Token,
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_problem(&r, (422, "/problems/bad-request", "Bad Request"), "Failed to deserialize the JSON body into the target type: missing field `state` at line 1 column 2");
    let r = s
        .send(
            Method::POST,
            &format!("/v1/formations/{id}/status"),
            Auth::None,
            &[],
            Some(b"{".to_vec()),
        )
        .await;
    assert_problem(&r, UNAUTHORIZED, "missing Authorization header");
    // 404 comes before state validation; by name works too.
    let unknown = new_fid();
    assert_problem(
        &status(&s, &unknown, json!({"state": "bogus"})).await,
        NOT_FOUND,
        &format!("formation {unknown} not found"),
    );
    assert_problem(
        &status(&s, "nobody", json!({"state": "running"})).await,
        NOT_FOUND,
        "formation 'nobody' not found",
    );
    status(&s, "life", json!({"state": "completed"}))
        .await
        .expect(204);
    assert_eq!(
        s.get_json("/v1/formations/life").await["status"],
        "SUCCEEDED"
    );
    // Terminal: 409 on status, 204 and no event on delete.
    assert_problem(
        &status(&s, &id, json!({"state": "running"})).await,
        CONFLICT,
        &format!("formation {id} is SUCCEEDED; terminal states are final"),
    );
    let before = s.all_events().await.len();
    delete(&s, &format!("/v1/formations/{id}"))
        .await
        .expect(204);
    assert_eq!(
        s.all_events().await.len(),
        before,
        "deleting a terminal formation emits nothing"
    );
    // Delete by id, by non-UUID ident, by name; unknown → 404 with the reference details.
    let a = create(&s, &flat("del-a")).await;
    create(&s, &flat("del-b")).await;
    create(&s, &flat("del-c")).await;
    delete(&s, &format!("/v1/formations/{}", a.to_uppercase()))
        .await
        .expect(204);
    delete(&s, "/v1/formations/del-b").await.expect(204);
    delete(&s, "/v1/formations/by-name/del-c").await.expect(204);
    for name in ["del-a", "del-b", "del-c"] {
        assert_eq!(
            s.get_json(&format!("/v1/formations/{name}")).await["status"],
            "CANCELLED"
        );
    }
    assert_problem(
        &delete(&s, &format!("/v1/formations/{unknown}")).await,
        NOT_FOUND,
        &format!("formation {unknown} not found"),
    );
    assert_problem(
        &delete(&s, "/v1/formations/by-name/ghost").await,
        NOT_FOUND,
        "formation 'ghost' not found",
    );
    // The emitted events: envelope and data as the reference builds them.
    let events = s.all_events().await;
    let of_a: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["source"] == a.as_str())
        .collect();
    assert_eq!(of_a.len(), 2);
    let created = of_a[0];
    assert_eq!(
        created["type"],
        "dev.cellos.events.cell.formation.v1.created"
    );
    assert_eq!(created["specversion"], "1.0");
    assert_eq!(created["datacontenttype"], "application/json");
    assert_eq!(created["traceparent"], Value::Null);
    assert_eq!(created["data"]["cellCount"], 2);
    assert_eq!(created["data"]["document"], flat("del-a"));
    let t = created["time"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
        "{t}"
    );
    let cancelled = of_a[1];
    assert_eq!(
        cancelled["type"],
        "dev.cellos.events.cell.formation.v1.cancelled"
    );
    assert_eq!(cancelled["data"]["reason"], "deleted by operator");
    assert_eq!(cancelled["data"]["formationName"], "del-a");
    assert_eq!(cancelled["data"]["cellCount"], 2);
    assert!(uuid::Uuid::parse_str(cancelled["id"].as_str().unwrap()).is_ok());
    let degraded = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e["type"] == "dev.cellos.events.cell.formation.v1.degraded")
        .unwrap();
    assert_eq!(degraded["data"]["failedCellIds"], json!(["w"]));
    assert_eq!(degraded["data"]["reason"], "r");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_writes_serves_identical_bytes() {
    let s = TestServer::start().await;
    let a = create(&s, &flat("alpha")).await;
    let b = create(&s, &flat("beta")).await;
    status(&s, &a, json!({"state": "running"}))
        .await
        .expect(204);
    status(
        &s,
        &b,
        json!({"state": "failed", "failed_cells": ["w"], "reason": "boom"}),
    )
    .await
    .expect(204);
    delete(&s, "/v1/formations/alpha").await.expect(204);
    create(&s, &flat("alpha")).await;
    post(&s, serde_json::to_vec(&flat("alpha")).unwrap())
        .await
        .expect(409);
    let paths = [
        "/v1/formations",
        "/v1/formations/alpha",
        "/v1/formations/by-name/beta",
        &format!("/v1/formations/{a}"),
        "/v1/events?since=0&limit=1000",
    ];
    let mut before = Vec::new();
    for p in paths {
        before.push(s.get_ok(p).await);
    }
    let dir = s.shutdown().await;
    let s = TestServer::start_in(dir).await;
    for (p, want) in paths.iter().zip(before) {
        assert_eq!(s.get_ok(p).await, want, "{p} differs after restart");
    }
    s.shutdown().await;
}
