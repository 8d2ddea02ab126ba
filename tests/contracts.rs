//! The machine-readable wire contract in `contracts/`: every JSON Schema compiles (draft 2020-12,
//! offline) and its examples hold; `openapi.json` lists every route of the route table and every
//! `$ref` in it resolves; and a live in-process server answers with bodies, problems and
//! CloudEvents that validate against those schemas.
//!
//! All network traffic is on loopback, every request has a timeout and every loop is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use common::ws::{self, Got};
use common::{
    files_under, json_body, manifest_dir, percent_decode, read_json, rel_path, Auth, Resp,
    TestServer,
};
use jsonschema::Validator;
use reqwest::Method;
use serde_json::{json, Value};

/// Base of every schema `$id`; resolved offline to `contracts/schemas/`.
const SCHEMA_BASE: &str = "https://cellos.dev/schemas/";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const FORMATION_TYPE_PREFIX: &str = "dev.cellos.events.cell.formation.v1.";
const PHASES: [&str; 7] = [
    "created",
    "launching",
    "running",
    "degraded",
    "completed",
    "failed",
    "cancelled",
];

/// Every route template of `Route::label()` in src/http/routes.rs, with the methods its
/// `Route::allow()` answers (`/ws/events`: GET only).
const ROUTES: [(&str, &[&str]); 13] = [
    ("/v1/formations", &["post", "get", "head"]),
    ("/v1/formations/{ident}", &["get", "head", "delete"]),
    ("/v1/formations/by-name/{name}", &["get", "head", "delete"]),
    ("/v1/formations/{ident}/status", &["post"]),
    ("/v1/cells", &["get", "head"]),
    ("/v1/cells/{id}", &["get", "head"]),
    ("/v1/cells/{id}/events", &["get", "head"]),
    ("/v1/events", &["get", "head", "post"]),
    ("/v1/version", &["get", "head"]),
    ("/ws/events", &["get"]),
    ("/healthz", &["get", "head"]),
    ("/readyz", &["get", "head"]),
    ("/metrics", &["get", "head"]),
];

// ------------------------------------------------------------------------------------------------
// Files and schemas

fn contracts_dir() -> PathBuf {
    manifest_dir().join("contracts")
}

fn schemas_dir() -> PathBuf {
    contracts_dir().join("schemas")
}

/// Serves `https://cellos.dev/schemas/<path>` from `contracts/schemas/<path>` and refuses every
/// other URI, so compiling a schema never touches the network.
struct LocalSchemas;

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let full = uri.as_str();
        let doc = full.split('#').next().unwrap_or(full);
        let rel = doc
            .strip_prefix(SCHEMA_BASE)
            .ok_or_else(|| format!("refusing to fetch {doc}: only {SCHEMA_BASE}… resolves"))?;
        let rel = Path::new(rel);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("refusing to fetch {doc}: not a plain relative path").into());
        }
        let text = std::fs::read_to_string(schemas_dir().join(rel))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_retriever(LocalSchemas)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// The validator of a schema file, by its path under `contracts/schemas`, optionally with a
/// `#/json/pointer` fragment (`formation-v1.schema.json#/$defs/normalized`).
fn validator(rel: &str) -> Validator {
    let schema = match rel.split_once('#') {
        None => read_json(&schemas_dir().join(rel)),
        Some(_) => json!({ "$ref": format!("{SCHEMA_BASE}{rel}") }),
    };
    compile(&schema).unwrap_or_else(|e| panic!("schema {rel} does not compile: {e}"))
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} (at '{}')", e, e.instance_path()))
        .collect()
}

#[track_caller]
fn assert_valid(v: &Validator, instance: &Value, what: &str) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "{what} violates its schema:\n  {}\ninstance: {instance}",
        errs.join("\n  ")
    );
}

/// Resolves a JSON pointer (`""` or `/a/b~1c`), as in RFC 6901.
fn pointer<'v>(doc: &'v Value, ptr: &str) -> Option<&'v Value> {
    if ptr.is_empty() {
        return Some(doc);
    }
    let unescaped: String = percent_decode(ptr);
    doc.pointer(&unescaped)
}

// ------------------------------------------------------------------------------------------------
// Schemas and their examples

#[test]
fn every_schema_compiles_and_its_examples_hold() {
    let dir = schemas_dir();
    let examples_root = dir.join("examples");
    let schema_files: Vec<PathBuf> = files_under(&dir, &["examples"])
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".schema.json"))
        .collect();
    assert!(
        schema_files.len() >= 20,
        "expected the full schema set, found {}",
        schema_files.len()
    );
    let mut example_dirs = BTreeSet::new();
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for path in &schema_files {
        let rel = rel_path(&dir, path);
        let schema = read_json(path);
        assert_eq!(
            schema["$schema"], DRAFT_2020_12,
            "{rel}: $schema must be draft 2020-12"
        );
        assert_eq!(
            schema["$id"],
            format!("{SCHEMA_BASE}{rel}"),
            "{rel}: $id must mirror the file's path"
        );
        let v = compile(&schema).unwrap_or_else(|e| panic!("{rel} does not compile: {e}"));
        let name = rel.trim_end_matches(".schema.json");
        let ex_dir = examples_root.join(name);
        example_dirs.insert(name.to_owned());
        assert!(
            ex_dir.is_dir(),
            "{rel}: no examples at {}",
            ex_dir.display()
        );
        let (mut valid, mut invalid) = (0, 0);
        for ex in files_under(&ex_dir, &[]) {
            if ex.parent() != Some(ex_dir.as_path()) {
                continue; // only this schema's own directory
            }
            let file = ex.file_name().unwrap().to_string_lossy().into_owned();
            let instance = read_json(&ex);
            checked += 1;
            if file.starts_with("valid-") || file == "valid.json" {
                valid += 1;
                let errs = errors(&v, &instance);
                if !errs.is_empty() {
                    failures.push(format!(
                        "{name}/{file} should be valid: {}",
                        errs.join("; ")
                    ));
                }
            } else if file.starts_with("invalid-") || file == "invalid.json" {
                invalid += 1;
                if v.is_valid(&instance) {
                    failures.push(format!("{name}/{file} should be invalid but validates"));
                }
            } else {
                failures.push(format!(
                    "{name}/{file}: example names start with valid- or invalid-"
                ));
            }
        }
        assert!(
            valid >= 1 && invalid >= 1,
            "{rel}: needs a valid and an invalid example (has {valid} valid, {invalid} invalid)"
        );
    }
    // No examples for a schema that does not exist.
    for ex in files_under(&examples_root, &[]) {
        let parent = rel_path(&examples_root, ex.parent().unwrap());
        assert!(
            example_dirs.contains(&parent),
            "examples/{parent} has no schema {parent}.schema.json"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} examples failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn schemas_reject_what_cellctl_cannot_read() {
    // A few contract rules spelled out, so a loosened schema cannot pass silently.
    let record = validator("formation-record.schema.json");
    let base = json!({
        "id": "6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14", "name": "demo", "status": "PENDING",
        "document": null, "created_at": null, "updated_at": null
    });
    assert_valid(&record, &base, "minimal record");
    for (key, value) in [("state", json!("PENDING")), ("cells", Value::Null)] {
        let mut bad = base.clone();
        bad[key] = value;
        assert!(
            !record.is_valid(&bad),
            "a record with `{key}` must be invalid"
        );
    }
    let problem = validator("problem.schema.json");
    let mut p =
        json!({"type": "/problems/conflict", "title": "Conflict", "status": 409, "detail": "d"});
    assert_valid(&problem, &p, "conflict problem");
    p["instance"] = json!("/x");
    assert!(!problem.is_valid(&p), "problems have exactly four keys");
    let created = validator("events/formation-created.schema.json");
    let mut ev = read_json(
        &schemas_dir().join("examples/events/formation-created/valid-server-emitted.json"),
    );
    assert_valid(&created, &ev, "created example");
    ev["time"] = json!("6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14");
    assert!(!created.is_valid(&ev), "a UUID is not an event time");
}

#[test]
fn shared_event_examples_fit_the_event_schemas() {
    // contracts/examples/events/ (benchmark fixtures, owned elsewhere) must at least be valid
    // CloudEvents whose data fits the contract for their type.
    let dir = contracts_dir().join("examples").join("events");
    if !dir.is_dir() {
        return;
    }
    let cloudevent = validator("cloudevent.schema.json");
    let formation_data = validator("events/formation-event.schema.json#/$defs/data");
    let normalized = validator("formation-v1.schema.json#/$defs/normalized");
    let cell_schemas: BTreeMap<&str, Validator> = [
        (
            "dev.cellos.events.cell.lifecycle.v1.started",
            "events/cell-lifecycle-started.schema.json",
        ),
        (
            "dev.cellos.events.cell.lifecycle.v1.destroyed",
            "events/cell-lifecycle-destroyed.schema.json",
        ),
        (
            "dev.cellos.events.cell.command.v1.completed",
            "events/cell-command-completed.schema.json",
        ),
    ]
    .into_iter()
    .map(|(ty, rel)| (ty, validator(rel)))
    .collect();
    let cell_event = validator("events/cell-event.schema.json");
    let mut seen = 0;
    for path in files_under(&dir, &[]) {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ev = read_json(&path);
        assert_valid(&cloudevent, &ev, &name);
        let ty = ev["type"].as_str().unwrap_or_default();
        if let Some(phase) = ty.strip_prefix(FORMATION_TYPE_PREFIX) {
            assert!(PHASES.contains(&phase), "{name}: unknown phase {phase}");
            assert_valid(&formation_data, &ev["data"], &format!("{name} data"));
            if phase == "created" {
                assert_valid(
                    &normalized,
                    &ev["data"]["document"],
                    &format!("{name} document"),
                );
            }
        } else {
            assert_valid(&cell_event, &ev, &name);
            if let Some(v) = cell_schemas.get(ty) {
                assert_valid(v, &ev, &name);
            }
        }
    }
    assert!(seen > 0, "no example events in {}", dir.display());
}

// ------------------------------------------------------------------------------------------------
// OpenAPI

fn openapi() -> Value {
    read_json(&contracts_dir().join("openapi.json"))
}

/// The route templates `Route::label()` returns, read from the source.
fn labels_in_route_table() -> BTreeSet<String> {
    let src = std::fs::read_to_string(manifest_dir().join("src/http/routes.rs"))
        .expect("src/http/routes.rs");
    let start = src.find("fn label(").expect("Route::label in routes.rs");
    let body = &src[start..];
    let end = body.find("\n    }\n").expect("end of Route::label");
    body[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn openapi_lists_every_route_with_its_methods() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["jsonSchemaDialect"], DRAFT_2020_12);
    let expected: BTreeSet<String> = ROUTES.iter().map(|(p, _)| (*p).to_owned()).collect();
    assert_eq!(
        labels_in_route_table(),
        expected,
        "src/http/routes.rs Route::label() and this test's ROUTES disagree"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        documented, expected,
        "openapi.json paths and the route table disagree"
    );
    const OPS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    for (path, methods) in ROUTES {
        let item = paths[path].as_object().unwrap();
        let ops: BTreeSet<&str> = item
            .keys()
            .map(String::as_str)
            .filter(|k| OPS.contains(k))
            .collect();
        let want: BTreeSet<&str> = methods.iter().copied().collect();
        assert_eq!(ops, want, "{path}: documented methods");
    }
    let bearer = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
}

#[test]
fn openapi_operations_document_auth_problems_and_schemas() {
    let doc = openapi();
    let deref = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with("#/") => pointer(&doc, &r[1..]).cloned().unwrap_or_default(),
            _ => v.clone(),
        }
    };
    let public = ["/healthz", "/readyz"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "delete", "head"].contains(&method.as_str()) {
                continue;
            }
            let responses = op["responses"].as_object().expect("responses");
            let is_public = public.contains(&path.as_str());
            assert_eq!(
                op.get("security") == Some(&json!([])),
                is_public,
                "{method} {path}: only /healthz and /readyz are public"
            );
            if !is_public && method != "head" {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            for (code, resp) in responses {
                let resp = deref(resp);
                let content = resp.get("content").and_then(Value::as_object);
                let error = code.starts_with('4') || code.starts_with('5');
                if method == "head" {
                    assert!(
                        content.is_none(),
                        "{method} {path} {code}: HEAD has no body"
                    );
                    continue;
                }
                if error {
                    let schema = &content
                        .unwrap_or_else(|| panic!("{method} {path} {code}: no content"))
                        ["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "schemas/problem.schema.json",
                        "{method} {path} {code}: errors are problem+json"
                    );
                } else if let Some(content) = content {
                    for (media, m) in content {
                        let r = m["schema"]["$ref"].as_str().unwrap_or("");
                        if media == "application/json" {
                            assert!(
                                r.starts_with("schemas/"),
                                "{method} {path} {code}: JSON bodies reference contracts/schemas"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_openapi_ref_resolves() {
    let doc = openapi();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "suspiciously few $refs: {}", refs.len());
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    for r in &refs {
        let (file, frag) = r.split_once('#').unwrap_or((r.as_str(), ""));
        let target = if file.is_empty() {
            &doc
        } else {
            let path = Path::new(file);
            assert!(
                path.components().all(|c| matches!(c, Component::Normal(_))),
                "$ref {r} must be a plain relative path"
            );
            &*files.entry(file.to_owned()).or_insert_with(|| {
                let full = contracts_dir().join(path);
                assert!(full.is_file(), "$ref {r}: no file {}", full.display());
                read_json(&full)
            })
        };
        assert!(
            pointer(target, frag).is_some(),
            "$ref {r}: pointer '{frag}' does not resolve"
        );
    }
    // Every referenced schema file compiles with its own relative references.
    for file in files.keys() {
        let rel = file
            .strip_prefix("schemas/")
            .expect("refs point into schemas/");
        let _ = validator(rel);
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref is a string").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------------
// Live server

/// Assertions against the schemas on a response of the common harness.
impl Resp {
    /// Asserts `status` with an `application/json` body that validates, and returns it.
    #[track_caller]
    fn expect_json(&self, status: u16, v: &Validator, what: &str) -> Value {
        self.expect(status);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{what}: content type"
        );
        let body = self.json();
        assert_valid(v, &body, what);
        body
    }
}

/// A server on a fresh data directory, once ready: every `/readyz` answer while waiting
/// (bounded) validates against its schema.
async fn start_server() -> TestServer {
    let srv = TestServer::start_in_unready(tempfile::tempdir().expect("tempdir")).await;
    let ready = validator("readiness.schema.json");
    let problem = validator("problem.schema.json");
    for _ in 0..200 {
        let r = srv.get_as("/readyz", Auth::None).await;
        if r.status == 200 {
            r.expect_json(200, &ready, "/readyz");
            return srv;
        }
        assert_eq!(r.status, 503, "/readyz answers 200 or 503");
        assert_valid(&problem, &r.json(), "/readyz 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server never became ready");
}

/// The formation-event schema for a CloudEvent type, if it is one.
fn formation_schemas() -> BTreeMap<String, Validator> {
    PHASES
        .iter()
        .map(|p| {
            (
                format!("{FORMATION_TYPE_PREFIX}{p}"),
                validator(&format!("events/formation-{p}.schema.json")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_formations_and_their_events_match_the_contract() {
    let srv = start_server().await;
    let document = validator("formation-v1.schema.json");
    let normalized = validator("formation-v1.schema.json#/$defs/normalized");
    let created = validator("formation-created-response.schema.json");
    let record = validator("formation-record.schema.json");
    let list = validator("formation-list.schema.json");
    let status_req = validator("formation-status-request.schema.json");
    let page = validator("events-page.schema.json");
    let problem = validator("problem.schema.json");
    let cloudevent = validator("cloudevent.schema.json");
    let frame = validator("ws-frame.schema.json");
    let by_type = formation_schemas();

    // Admission: a flat document (with an extra key), a kubectl manifest, and one to cancel.
    let flat = json!({
        "name": "contract-flat", "coordinator": "lead", "note": "kept",
        "members": [
            {"id": "lead"},
            {"id": "w1", "authorizedBy": "lead"},
            {"id": "w2", "authorizedBy": "w1"}
        ]
    });
    let kube = json!({
        "apiVersion": "cellos.dev/v1", "kind": "Formation",
        "metadata": {
            "name": "contract-kube", "labels": {"team": "a"}, "annotations": {"o": "b"},
            "uid": "dropped"
        },
        "spec": {
            "coordinator": "lead",
            "members": [{"name": "lead"}, {"name": "w", "authorizedBy": "lead"}]
        }
    });
    let doomed = json!({"name": "contract-cancel", "coordinator": "c", "members": [{"id": "c"}]});
    let mut ids = BTreeMap::new();
    for doc in [&flat, &kube, &doomed] {
        assert_valid(&document, doc, "request document");
        let body = srv
            .post("/v1/formations", "application/json", json_body(doc))
            .await
            .expect_json(201, &created, "POST /v1/formations 201");
        ids.insert(
            body["name"].as_str().unwrap().to_owned(),
            body["id"].as_str().unwrap().to_owned(),
        );
    }
    let (flat_id, kube_id) = (&ids["contract-flat"], &ids["contract-kube"]);

    // Lifecycle: every transition the server emits an event for.
    let transitions = [
        (flat_id, json!({"state": "LAUNCHING"})),
        (flat_id, json!({"state": "running", "reason": null})),
        (
            flat_id,
            json!({"state": "DEGRADED", "reason": "w1 lost", "failed_cells": ["w1"]}),
        ),
        (
            flat_id,
            json!({"state": "COMPLETED", "reason": "all members exited 0"}),
        ),
        (
            kube_id,
            json!({"state": "FAILED", "reason": "boom", "failed_cells": ["w"]}),
        ),
    ];
    for (id, body) in &transitions {
        assert_valid(&status_req, body, "status request");
        srv.post(
            &format!("/v1/formations/{id}/status"),
            "application/json",
            json_body(body),
        )
        .await
        .expect(204);
    }
    srv.send(
        Method::DELETE,
        "/v1/formations/by-name/contract-cancel",
        Auth::Token,
        &[],
        None,
    )
    .await
    .expect(204);
    // Already terminal: 204 and nothing emitted.
    srv.send(
        Method::DELETE,
        &format!("/v1/formations/{}", ids["contract-cancel"]),
        Auth::Token,
        &[],
        None,
    )
    .await
    .expect(204);
    // Terminal states are final: 409 problem.
    let r = srv
        .post(
            &format!("/v1/formations/{flat_id}/status"),
            "application/json",
            json_body(&json!({"state": "RUNNING"})),
        )
        .await;
    r.expect(409);
    assert_valid(&problem, &r.json(), "409 terminal");

    // Reads.
    let all = srv
        .get("/v1/formations")
        .await
        .expect_json(200, &list, "GET /v1/formations");
    let statuses: BTreeMap<&str, &str> = all["formations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("contract-cancel", "CANCELLED"),
            ("contract-flat", "SUCCEEDED"),
            ("contract-kube", "FAILED"),
        ])
    );
    let mut documents = BTreeMap::new();
    for (name, id) in &ids {
        let one = srv.get(&format!("/v1/formations/{id}")).await.expect_json(
            200,
            &record,
            "GET /v1/formations/{id}",
        );
        let named = srv
            .get(&format!("/v1/formations/by-name/{name}"))
            .await
            .expect_json(200, &record, "GET /v1/formations/by-name/{name}");
        assert_eq!(one, named);
        let by_ident = srv
            .get(&format!("/v1/formations/{name}"))
            .await
            .expect_json(200, &record, "GET /v1/formations/{name}");
        assert_eq!(one, by_ident);
        assert_valid(&normalized, &one["document"], "stored document");
        documents.insert(id.clone(), one["document"].clone());
    }
    assert_eq!(
        documents[kube_id]["metadata"],
        json!({"annotations": {"o": "b"}, "labels": {"team": "a"}})
    );
    assert_eq!(documents[flat_id]["note"], "kept");

    // The CloudEvents the server emitted, as /v1/events serves them.
    let events =
        srv.get("/v1/events?since=0&limit=1000")
            .await
            .expect_json(200, &page, "GET /v1/events");
    let items = events["events"].as_array().unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_seq = 0;
    for item in items {
        let seq = item["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "events come oldest first");
        last_seq = seq;
        let ev = &item["event"];
        let ty = ev["type"].as_str().expect("event type").to_owned();
        let v = by_type
            .get(&ty)
            .unwrap_or_else(|| panic!("the server emitted an unexpected type {ty}"));
        assert_valid(v, ev, &format!("emitted {ty} (seq {seq})"));
        assert_valid(&cloudevent, ev, &format!("emitted {ty} as a CloudEvent"));
        assert_eq!(
            ev["source"], ev["data"]["formationId"],
            "source is the formation id"
        );
        let fid = ev["data"]["formationId"].as_str().unwrap();
        if ty.ends_with(".created") {
            assert_eq!(
                ev["data"]["document"], documents[fid],
                "created carries the document"
            );
            assert_eq!(
                ev["data"]["cellCount"].as_u64().unwrap() as usize,
                documents[fid]["members"].as_array().unwrap().len()
            );
        }
        if ty.ends_with(".cancelled") {
            assert_eq!(ev["data"]["reason"], "deleted by operator");
        }
        if ty.ends_with(".degraded") {
            assert_eq!(ev["data"]["failedCellIds"], json!(["w1"]));
        }
        *counts.entry(ty).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("created", 3),
        ("launching", 1),
        ("running", 1),
        ("degraded", 1),
        ("completed", 1),
        ("failed", 1),
        ("cancelled", 1),
    ]
    .into_iter()
    .map(|(p, n)| (format!("{FORMATION_TYPE_PREFIX}{p}"), n))
    .collect();
    assert_eq!(counts, expected, "one event per write, none for no-ops");
    assert_eq!(events["cursor"].as_u64(), Some(last_seq));

    // The same events as WebSocket frames.
    let mut ws = ws::connect(srv.addr, "?since=0").await;
    let mut frames = 0;
    while frames < items.len() {
        let text = match ws::next(&mut ws).await {
            Got::Frame(_, _, text) => text,
            Got::Closed(c) => panic!("socket closed after {frames} frames: {c:?}"),
        };
        let f: Value = serde_json::from_str(&text).expect("frames are JSON");
        assert_valid(&frame, &f, "WebSocket frame");
        assert_eq!(f, items[frames], "frame {frames} equals the paged event");
        let ty = f["event"]["type"].as_str().unwrap();
        assert_valid(&by_type[ty], &f["event"], "framed event");
        frames += 1;
    }
    assert_eq!(frames, items.len());
    drop(ws);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_cells_match_the_contract() {
    let srv = start_server().await;
    let batch_v = validator("cloudevent-batch.schema.json");
    let cloudevent = validator("cloudevent.schema.json");
    let receipt = validator("ingest-response.schema.json");
    let cell_list = validator("cell-list.schema.json");
    let cell_record = validator("cell-record.schema.json");
    let page = validator("events-page.schema.json");
    let cell_schemas: BTreeMap<&str, Validator> = [
        (
            "dev.cellos.events.cell.lifecycle.v1.started",
            "events/cell-lifecycle-started.schema.json",
        ),
        (
            "dev.cellos.events.cell.lifecycle.v1.destroyed",
            "events/cell-lifecycle-destroyed.schema.json",
        ),
        (
            "dev.cellos.events.cell.command.v1.completed",
            "events/cell-command-completed.schema.json",
        ),
    ]
    .into_iter()
    .map(|(ty, rel)| (ty, validator(rel)))
    .collect();

    let fid = "6f1c2a4e-8b3d-4f7a-9c21-5e0d7b8a3f14";
    let correlation = json!({
        "platform": null, "externalRunId": null, "externalJobId": null, "labels": null,
        "tenantId": "acme", "correlationId": "run-1", "formationId": fid
    });
    let event = |id: &str, ty: &str, time: &str, data: Value| {
        json!({
            "specversion": "1.0", "id": id, "source": "cellos-supervisor",
            "type": format!("dev.cellos.events.cell.{ty}"),
            "datacontenttype": "application/json", "time": time, "data": data
        })
    };
    let batch = json!([
        event(
            "c-1",
            "lifecycle.v1.started",
            "2026-11-23T12:15:49.355Z",
            json!({
                "cellId": "contract-a", "specId": "spec-a", "ttlSeconds": 600, "runId": "run-a",
                "placement": {"poolId": "pool-1"}, "tenantId": "acme", "correlation": correlation
            })
        ),
        event(
            "c-2",
            "command.v1.completed",
            "2026-11-23T12:16:00.000Z",
            json!({
                "cellId": "contract-a", "specId": "spec-a", "exitCode": 3, "durationMs": 1200,
                "argv": ["make", "test"], "runId": "run-a"
            })
        ),
        event(
            "c-3",
            "lifecycle.v1.destroyed",
            "2026-11-23T12:17:02.914Z",
            json!({
                "cellId": "contract-a", "specId": "spec-a", "ttlSeconds": 600,
                "outcome": "succeeded",
                "terminalState": "clean"
            })
        ),
        event(
            "c-4",
            "lifecycle.v1.started",
            "2026-11-23T12:18:00.000Z",
            json!({
                "cellId": "contract-b", "specId": "", "ttlSeconds": 60
            })
        ),
    ]);
    assert_valid(&batch_v, &batch, "ingest batch");
    for ev in batch.as_array().unwrap() {
        assert_valid(
            &cell_schemas[ev["type"].as_str().unwrap()],
            ev,
            "ingested event",
        );
    }
    let r = srv
        .post(
            "/v1/events",
            "application/cloudevents-batch+json",
            json_body(&batch),
        )
        .await
        .expect_json(202, &receipt, "POST /v1/events (batch)");
    assert_eq!(r["seqs"].as_array().unwrap().len(), 4);
    let single = event(
        "c-5",
        "command.v1.completed",
        "2026-11-23T12:19:00.000Z",
        json!({
            "cellId": "contract-c", "specId": "spec-c", "exitCode": -1, "durationMs": 0,
            "argv": [], "spawnError": "ENOENT"
        }),
    );
    assert_valid(&cloudevent, &single, "structured event");
    let r = srv
        .post(
            "/v1/events",
            "application/cloudevents+json",
            json_body(&single),
        )
        .await
        .expect_json(202, &receipt, "POST /v1/events (structured)");
    assert_eq!(r["seqs"].as_array().unwrap().len(), 1);

    let cells = srv
        .get("/v1/cells")
        .await
        .expect_json(200, &cell_list, "GET /v1/cells");
    let ids: Vec<&str> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["contract-a", "contract-b", "contract-c"]);
    let a =
        srv.get("/v1/cells/contract-a")
            .await
            .expect_json(200, &cell_record, "GET /v1/cells/{id}");
    assert_eq!(a["state"], "destroyed");
    assert_eq!(a["outcome"], "succeeded");
    assert_eq!(a["exit_code"], 3);
    assert_eq!(a["formation_id"], fid);
    for (id, state) in [("contract-b", "running"), ("contract-c", "pending")] {
        let c = srv.get(&format!("/v1/cells/{id}")).await.expect_json(
            200,
            &cell_record,
            "GET /v1/cells/{id}",
        );
        assert_eq!(c["state"], state);
    }
    for (query, want) in [
        ("?state=RUNNING&limit=10", vec!["contract-b"]),
        (&format!("?formation={fid}") as &str, vec!["contract-a"]),
        ("?limit=0", vec![]),
    ] {
        let got = srv.get(&format!("/v1/cells{query}")).await.expect_json(
            200,
            &cell_list,
            "GET /v1/cells?…",
        );
        let got: Vec<&str> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "GET /v1/cells{query}");
    }

    // A cell's own events: JSON tail, then the NDJSON follow stream.
    let cell_events = validator("cell-events.schema.json");
    let line = validator("cell-events.schema.json#/$defs/event");
    let tail = srv.get("/v1/cells/contract-a/events").await.expect_json(
        200,
        &cell_events,
        "GET /v1/cells/{id}/events",
    );
    assert_eq!(tail, json!(batch.as_array().unwrap()[..3]));
    let last = srv
        .get("/v1/cells/contract-a/events?tail=1")
        .await
        .expect_json(200, &cell_events, "GET /v1/cells/{id}/events?tail=1");
    assert_eq!(last, json!([batch[2]]));
    let mut lines = srv
        .follow("/v1/cells/contract-a/events?follow=true&tail=2")
        .await
        .lines(2)
        .await;
    lines.truncate(2);
    for (i, l) in lines.iter().enumerate() {
        assert_valid(&line, l, "NDJSON line");
        assert_valid(
            &cell_schemas[l["type"].as_str().unwrap()],
            l,
            "NDJSON event",
        );
        assert_eq!(l, &batch[i + 1]);
    }

    let events =
        srv.get("/v1/events?since=0&limit=1000")
            .await
            .expect_json(200, &page, "GET /v1/events");
    let items = events["events"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for item in items {
        let ev = &item["event"];
        assert_valid(
            &cell_schemas[ev["type"].as_str().unwrap()],
            ev,
            "stored event",
        );
    }
    assert_eq!(items[4]["event"], single, "events are served as stored");
    // Paging: an empty page after the cursor keeps the cursor.
    let cursor = events["cursor"].as_u64().unwrap();
    let empty = srv
        .get(&format!("/v1/events?since={cursor}"))
        .await
        .expect_json(200, &page, "GET /v1/events past the end");
    assert_eq!(empty, json!({"events": [], "cursor": cursor}));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_problems_and_meta_routes_match_the_contract() {
    let srv = start_server().await;
    let problem = validator("problem.schema.json");

    // One live formation, for 409s.
    let dup = json!({"name": "contract-dup", "coordinator": "c", "members": [{"id": "c"}]});
    let body = srv
        .post("/v1/formations", "application/json", json_body(&dup))
        .await
        .json();
    let dup_id = body["id"].as_str().expect("created").to_owned();
    srv.post(
        &format!("/v1/formations/{dup_id}/status"),
        "application/json",
        json_body(&json!({"state": "COMPLETED"})),
    )
    .await
    .expect(204);
    let live = json!({"name": "contract-live", "coordinator": "c", "members": [{"id": "c"}]});
    srv.post("/v1/formations", "application/json", json_body(&live))
        .await
        .expect(201);

    let members = |m: Value| json!({"name": "contract-bad", "coordinator": "a", "members": m});
    let formation_cases: Vec<(Value, u16, &str)> = vec![
        (
            members(json!([{"id": "b"}])),
            400,
            "/problems/formation/no-coordinator",
        ),
        (
            members(json!([{"id": "a"}, {"id": "a"}])),
            400,
            "/problems/formation/duplicate-member-id",
        ),
        (
            members(json!([{"id": "a"}, {"id": "b"}])),
            400,
            "/problems/formation/authority-not-narrowing",
        ),
        (
            members(json!([
                {"id": "a"},
                {"id": "b", "authorizedBy": "c"},
                {"id": "c", "authorizedBy": "b"}
            ])),
            400,
            "/problems/formation/cycle",
        ),
        (
            json!({"name": "bad name", "coordinator": "a", "members": [{"id": "a"}]}),
            400,
            BAD_REQUEST,
        ),
        (
            json!({"name": "x", "coordinator": "a", "members": [{"id": "a"}], "metadata": {}}),
            400,
            BAD_REQUEST,
        ),
        (
            json!({
                "apiVersion": "cellos.dev/v2", "kind": "Formation",
                "metadata": {"name": "x"}, "spec": {}
            }),
            400,
            BAD_REQUEST,
        ),
        (
            json!({"name": "contract-live", "coordinator": "c", "members": [{"id": "c"}]}),
            409,
            CONFLICT,
        ),
    ];
    let document = validator("formation-v1.schema.json");
    for (doc, status, ty) in &formation_cases {
        let r = srv
            .post("/v1/formations", "application/json", json_body(doc))
            .await;
        check_problem(
            &problem,
            &r,
            *status,
            ty,
            &format!("POST /v1/formations {doc}"),
        );
        if *ty == BAD_REQUEST {
            assert!(
                !document.is_valid(doc),
                "the schema should reject what admission rejects: {doc}"
            );
        }
    }

    let status_path = format!("/v1/formations/{dup_id}/status");
    let event = json!({"specversion": "1.0", "id": "e", "source": "s", "type": "t"});
    let mut bad_event = event.clone();
    bad_event["id"] = json!("");
    let bad_batch = serde_json::to_vec(&json!([event, bad_event])).unwrap();
    let big_batch = serde_json::to_vec(&vec![event; 1001]).unwrap();
    let (json_ct, batch_ct) = ("application/json", "application/cloudevents-batch+json");
    let cases: Vec<Case> = vec![
        call(Method::GET, "/v1/formations", Auth::None, 401, UNAUTHORIZED),
        call(
            Method::GET,
            "/v1/formations",
            Auth::Raw(b"Bearer wrong"),
            401,
            UNAUTHORIZED,
        ),
        call(Method::GET, "/v1/version", Auth::None, 401, UNAUTHORIZED),
        call(Method::GET, "/metrics", Auth::None, 401, UNAUTHORIZED),
        call(
            Method::GET,
            "/v1/formations/0b7e9d2c-4a61-4f3e-8c5d-2e9f1a7b3c40",
            Auth::Token,
            404,
            NOT_FOUND,
        ),
        call(
            Method::GET,
            "/v1/formations/by-name/nobody",
            Auth::Token,
            404,
            NOT_FOUND,
        ),
        call(
            Method::DELETE,
            "/v1/formations/nobody",
            Auth::Token,
            404,
            NOT_FOUND,
        ),
        call(Method::GET, "/v1/cells/nope", Auth::Token, 404, NOT_FOUND),
        call(
            Method::GET,
            "/v1/cells/nope/events",
            Auth::Token,
            404,
            NOT_FOUND,
        ),
        call(
            Method::GET,
            "/v1/cells/x/events?follow=yes",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(Method::GET, "/no/such/route", Auth::None, 404, NOT_FOUND),
        call(Method::GET, "/v1/formations/", Auth::Token, 404, NOT_FOUND),
        call(
            Method::PATCH,
            "/v1/formations",
            Auth::None,
            405,
            NOT_ALLOWED,
        ),
        call(Method::POST, "/v1/version", Auth::Token, 405, NOT_ALLOWED),
        call(Method::DELETE, "/ws/events", Auth::None, 405, NOT_ALLOWED),
        call(
            Method::PUT,
            "/v1/formations/x/status",
            Auth::None,
            405,
            NOT_ALLOWED,
        ),
        call(
            Method::POST,
            "/v1/cells/x/events",
            Auth::None,
            405,
            NOT_ALLOWED,
        ),
        call(
            Method::GET,
            "/v1/cells?cursor=abc",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(
            Method::GET,
            "/v1/cells?limit=x",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(
            Method::GET,
            "/v1/cells?state=bogus",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(
            Method::GET,
            "/v1/events?since=abc",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(Method::GET, "/ws/events", Auth::Token, 400, BAD_REQUEST),
        call(
            Method::GET,
            "/ws/events?since=x",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(
            Method::GET,
            "/ws/events?subject=foo.bar",
            Auth::Token,
            400,
            BAD_REQUEST,
        ),
        call(
            Method::GET,
            "/ws/events?formation=nobody",
            Auth::Token,
            404,
            NOT_FOUND,
        ),
        post("/v1/formations", json_ct, b"{not json", 400, BAD_REQUEST),
        post("/v1/formations", json_ct, &[b' '; 70_000], 413, TOO_LARGE),
        post(
            &status_path,
            "text/plain",
            br#"{"state":"RUNNING"}"#,
            415,
            MEDIA_TYPE,
        ),
        post(&status_path, json_ct, br#"{"state":"#, 400, BAD_REQUEST),
        post(&status_path, json_ct, b"{}", 422, BAD_REQUEST),
        post(
            &status_path,
            json_ct,
            br#"{"state":"RUNNING"}"#,
            409,
            CONFLICT,
        ),
        post(
            "/v1/formations/contract-live/status",
            json_ct,
            br#"{"state":"TELEPORTING"}"#,
            400,
            BAD_REQUEST,
        ),
        post("/v1/events", json_ct, b"{}", 415, MEDIA_TYPE),
        post("/v1/events", batch_ct, &bad_batch, 400, BAD_REQUEST),
        post("/v1/events", batch_ct, &big_batch, 413, TOO_LARGE),
    ];
    for (method, path, auth, body, status, ty) in cases {
        let what = format!("{method} {path}");
        let (headers, body) = match body {
            Some((content_type, bytes)) => (vec![("content-type", content_type)], Some(bytes)),
            None => (Vec::new(), None),
        };
        let r = srv.send(method, &path, auth, &headers, body).await;
        check_problem(&problem, &r, status, ty, &what);
        if status == 405 {
            assert!(r.header("allow").is_some(), "{what}: 405 carries Allow");
        }
    }

    // Meta routes.
    let version = srv.get("/v1/version").await.expect_json(
        200,
        &validator("version.schema.json"),
        "GET /v1/version",
    );
    assert_eq!(version["server"]["version"], env!("CARGO_PKG_VERSION"));
    srv.get_as("/healthz", Auth::None).await.expect_json(
        200,
        &validator("health.schema.json"),
        "GET /healthz",
    );
    srv.get_as("/readyz", Auth::None).await.expect_json(
        200,
        &validator("readiness.schema.json"),
        "GET /readyz",
    );
    let metrics = srv.get("/metrics").await;
    metrics.expect(200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("text/plain")));
    srv.shutdown().await;
}

const UNAUTHORIZED: &str = "/problems/unauthorized";
const BAD_REQUEST: &str = "/problems/bad-request";
const NOT_FOUND: &str = "/problems/not-found";
const NOT_ALLOWED: &str = "/problems/method-not-allowed";
const CONFLICT: &str = "/problems/conflict";
const TOO_LARGE: &str = "/problems/payload-too-large";
const MEDIA_TYPE: &str = "/problems/unsupported-media-type";

/// A bodiless request and the problem it must get.
fn call(method: Method, path: &str, auth: Auth<'static>, status: u16, ty: &'static str) -> Case {
    (method, path.to_owned(), auth, None, status, ty)
}

/// An authenticated POST and the problem it must get.
fn post(
    path: &str,
    content_type: &'static str,
    body: &[u8],
    status: u16,
    ty: &'static str,
) -> Case {
    let body = Some((content_type, body.to_vec()));
    (Method::POST, path.to_owned(), Auth::Token, body, status, ty)
}

/// A request and the problem it must get: method, path, authorization, body, status, `type`.
type Case = (
    Method,
    String,
    Auth<'static>,
    Option<(&'static str, Vec<u8>)>,
    u16,
    &'static str,
);

#[track_caller]
fn check_problem(v: &Validator, r: &Resp, status: u16, ty: &str, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: status; body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{what}: content type"
    );
    let body = r.json();
    assert_valid(v, &body, what);
    assert_eq!(body["type"], ty, "{what}: problem type");
    assert_eq!(
        body["status"], status,
        "{what}: body status equals HTTP status"
    );
}
