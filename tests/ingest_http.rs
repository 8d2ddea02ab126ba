//! POST /v1/events: CloudEvents over HTTP in structured and batch modes, validation (all or
//! nothing), limits, read-your-writes and dedupe by CloudEvent id.

mod common;

use common::*;
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A structured event of exactly `size` bytes.
fn event_of_size(id: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"s","type":"dev.example.big","data":{{"pad":""#
    );
    let tail = r#""}}"#;
    let pad = size - head.len() - tail.len();
    let mut out = head.into_bytes();
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(tail.as_bytes());
    assert_eq!(out.len(), size);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_and_batch_modes_answer_202_with_seqs() {
    let s = TestServer::start().await;
    let r = s
        .post_events(STRUCTURED, body(&started("s1", "spec", None, &ts(1))))
        .await;
    r.expect(202);
    assert_eq!(r.content_type().as_deref(), Some("application/json"));
    assert_eq!(r.text(), r#"{"seqs":[1]}"#);
    // Media types are compared case-insensitively and without parameters.
    let r = s
        .post_events(
            "Application/CloudEvents+JSON; charset=utf-8",
            body(&started("s2", "spec", None, &ts(2))),
        )
        .await;
    assert_eq!(r.text(), r#"{"seqs":[2]}"#);
    let batch = json!([
        started("b1", "spec", None, &ts(3)),
        started("b2", "spec", None, &ts(4)),
        started("b3", "spec", None, &ts(5)),
    ]);
    let r = s.post_events(BATCH, body(&batch)).await;
    r.expect(202);
    assert_eq!(r.text(), r#"{"seqs":[3,4,5]}"#);
    let r = s
        .post_events(" application/cloudevents-batch+json ", "[]")
        .await;
    r.expect(202);
    assert_eq!(r.text(), r#"{"seqs":[]}"#);
    // Surrounding whitespace is fine in both modes.
    let r = s
        .post_events(
            STRUCTURED,
            format!(
                "\n  {}\n",
                serde_json::to_string(&started("s3", "x", None, &ts(6))).unwrap()
            ),
        )
        .await;
    assert_eq!(r.text(), r#"{"seqs":[6]}"#);
    let ids: Vec<String> = s
        .get_json("/v1/cells")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["b1", "b2", "b3", "s1", "s2", "s3"]);
    let (events, cursor) = s.events_page("").await;
    assert_eq!(events.len(), 6);
    assert_eq!(cursor, 6);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_comes_after_apply_so_a_following_get_sees_it() {
    let s = TestServer::start().await;
    for i in 0..20 {
        let cell = format!("ryw-{i}");
        if i % 2 == 0 {
            s.ingest_one(&started(&cell, "spec", None, &ts(i))).await;
        } else {
            s.ingest(&[
                command_completed(&cell, "spec", i as i64, &ts(i)),
                destroyed(&cell, "spec", "failed", &ts(i + 1)),
            ])
            .await;
        }
        let c = s.get_json(&format!("/v1/cells/{cell}")).await;
        let want = if i % 2 == 0 { "running" } else { "destroyed" };
        assert_eq!(c["state"], want, "{c}");
        let list = s.get_json("/v1/cells").await;
        assert_eq!(list.as_array().unwrap().len(), i as usize + 1);
    }
    // Concurrent writers: each sees its own write at once.
    let mut tasks = Vec::new();
    for t in 0..6 {
        let client = s.client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let cell = format!("conc-{t}-{i}");
                let seq = client
                    .ingest_one(&started(&cell, "spec", None, &ts(i)))
                    .await;
                let c = client.get_json(&format!("/v1/cells/{cell}")).await;
                assert_eq!(c["state"], "running");
                let f = client.get_json("/v1/formations").await;
                assert!(f["cursor"].as_u64().unwrap() >= seq);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    assert_eq!(s.get_json("/v1/cells").await.as_array().unwrap().len(), 68);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_types_are_415_and_append_nothing() {
    let s = TestServer::start().await;
    let ev = body(&started("ct", "spec", None, &ts(1)));
    let detail = "Expected request with `Content-Type: application/cloudevents+json` or `application/cloudevents-batch+json`";
    for ct in [
        "application/json",
        "text/plain",
        "application/cloudevents",
        "application/cloudevents+json-seq",
        "application/x-www-form-urlencoded",
    ] {
        assert_problem(
            &s.post_events(ct, ev.clone()).await,
            UNSUPPORTED_MEDIA_TYPE,
            detail,
        );
    }
    // No content type at all.
    let r = s
        .send(
            reqwest::Method::POST,
            "/v1/events",
            Auth::Token,
            &[],
            Some(ev),
        )
        .await;
    assert_problem(&r, UNSUPPORTED_MEDIA_TYPE, detail);
    assert!(s.all_events().await.is_empty());
    assert_problem(&s.get("/v1/cells/ct").await, NOT_FOUND, "cell ct not found");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_one_mib_are_413() {
    let s = TestServer::start().await;
    let detail = "Failed to buffer the request body: length limit exceeded";
    // Exactly 1 MiB is allowed.
    let exact = event_of_size("big-ok", MIB);
    let seqs = s.ingest_raw(STRUCTURED, exact.clone()).await;
    assert_eq!(seqs, [1]);
    // One byte more, with a Content-Length.
    let over = event_of_size("big-over", MIB + 1);
    assert_problem(
        &s.post_events(STRUCTURED, over.clone()).await,
        PAYLOAD_TOO_LARGE,
        detail,
    );
    let mut batch = b"[".to_vec();
    batch.extend_from_slice(&event_of_size("big-batch", MIB - 1));
    batch.push(b']');
    assert_eq!(batch.len(), MIB + 1);
    assert_problem(
        &s.post_events(BATCH, batch).await,
        PAYLOAD_TOO_LARGE,
        detail,
    );
    // Chunked, without a Content-Length.
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: {STRUCTURED}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        s.addr
    )
    .into_bytes();
    for chunk in over.chunks(64 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let addr = s.addr;
    let (status, head, resp_body) = tokio::task::spawn_blocking(move || raw_http(addr, &req))
        .await
        .unwrap();
    assert_eq!(status, 413, "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(
        String::from_utf8(resp_body).unwrap(),
        problem_body(PAYLOAD_TOO_LARGE, detail)
    );
    // Only the 1 MiB event was stored, byte for byte.
    let raw = s.get_ok("/v1/events").await;
    let mut want = b"{\"events\":[{\"seq\":1,\"event\":".to_vec();
    want.extend_from_slice(&exact);
    want.extend_from_slice(b"}],\"cursor\":1}");
    assert!(
        raw[..] == want[..],
        "GET /v1/events does not hold exactly the 1 MiB event"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_1000_events_is_413() {
    let s = TestServer::start().await;
    let events: Vec<Value> = (0..1001)
        .map(|i| cloud_event("dev.example.tick", "s", None, json!({"i": i})))
        .collect();
    assert_problem(
        &s.post_events(BATCH, body(&Value::Array(events.clone())))
            .await,
        PAYLOAD_TOO_LARGE,
        "batch of 1001 events exceeds the limit of 1000",
    );
    assert!(s.all_events().await.is_empty());
    let seqs = s.ingest(&events[..1000]).await;
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let s = TestServer::start().await;
    let cases: [(&str, &str, &str); 6] = [
        (
            STRUCTURED,
            "{x",
            "invalid json: key must be a string at line 1 column 2",
        ),
        (
            STRUCTURED,
            "",
            "invalid json: EOF while parsing a value at line 1 column 0",
        ),
        (
            STRUCTURED,
            "{} x",
            "invalid json: trailing characters at line 1 column 4",
        ),
        (
            BATCH,
            "[{x",
            "invalid json: key must be a string at line 1 column 3",
        ),
        (
            BATCH,
            "[{},",
            "invalid json: EOF while parsing a value at line 1 column 4",
        ),
        (
            BATCH,
            "[] []",
            "invalid json: trailing characters at line 1 column 4",
        ),
    ];
    for (ct, b, detail) in cases {
        assert_problem(&s.post_events(ct, b).await, BAD_REQUEST, detail);
    }
    // A batch body must be an array; a structured body must be an object.
    let one = body(&started("m", "s", None, &ts(1)));
    let r = s.post_events(BATCH, one.clone()).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid json: "),
        "{}",
        r.text()
    );
    assert_problem(&r, BAD_REQUEST, r.json()["detail"].as_str().unwrap());
    let mut arr = b"[".to_vec();
    arr.extend_from_slice(&one);
    arr.push(b']');
    assert_problem(
        &s.post_events(STRUCTURED, arr).await,
        BAD_REQUEST,
        "event: must be a JSON object",
    );
    assert!(s.all_events().await.is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalid_event_rejects_the_whole_batch() {
    let s = TestServer::start().await;
    s.ingest_one(&started("before", "spec", None, &ts(1))).await;
    let before = s.get_ok("/v1/events?since=0&limit=1000").await;
    let good = |cell: &str| started(cell, "spec", None, &ts(2));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = good("bad-cell");
        f(&mut e);
        e
    };
    let obj = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        with(&|e: &mut Value| f(e.as_object_mut().unwrap()))
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            obj(&|e| {
                e.insert("id".into(), json!(""));
            }),
            "id: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.remove("id");
            }),
            "id: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.insert("id".into(), json!(7));
            }),
            "id: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.remove("source");
            }),
            "source: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.insert("source".into(), json!(""));
            }),
            "source: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.insert("type".into(), json!(""));
            }),
            "type: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.insert("type".into(), json!(null));
            }),
            "type: must be a non-empty string",
        ),
        (
            obj(&|e| {
                e.remove("specversion");
            }),
            "specversion: must be \"1.0\"",
        ),
        (
            obj(&|e| {
                e.insert("specversion".into(), json!("0.3"));
            }),
            "specversion: must be \"1.0\"",
        ),
        (
            obj(&|e| {
                e.insert("specversion".into(), json!(1.0));
            }),
            "specversion: must be \"1.0\"",
        ),
    ];
    for (bad, field) in &cases {
        for at in 0..3 {
            let mut batch = vec![good("ok-a"), good("ok-b")];
            batch.insert(at, bad.clone());
            let r = s.post_events(BATCH, body(&Value::Array(batch))).await;
            assert_problem(&r, BAD_REQUEST, &format!("events[{at}].{field}"));
        }
        let r = s.post_events(STRUCTURED, body(bad)).await;
        assert_problem(&r, BAD_REQUEST, &format!("event.{field}"));
    }
    for non_object in ["42", "null", "\"x\"", "[]", "true"] {
        let b = format!(
            "[{},{non_object}]",
            serde_json::to_string(&good("ok-a")).unwrap()
        );
        assert_problem(
            &s.post_events(BATCH, b).await,
            BAD_REQUEST,
            "events[1]: must be a JSON object",
        );
    }
    // The first invalid event is the one named.
    let b = json!([good("ok-a"), cases[0].0, cases[3].0]);
    assert_problem(
        &s.post_events(BATCH, body(&b)).await,
        BAD_REQUEST,
        "events[1].id: must be a non-empty string",
    );
    // Nothing of any rejected batch was appended or applied.
    assert_eq!(s.get_ok("/v1/events?since=0&limit=1000").await, before);
    for cell in ["ok-a", "ok-b", "bad-cell"] {
        assert_problem(
            &s.get(&format!("/v1/cells/{cell}")).await,
            NOT_FOUND,
            &format!("cell {cell} not found"),
        );
    }
    // A CloudEvent with extra attributes and no data is still valid.
    let minimal = r#"{"specversion":"1.0","id":"min-1","source":"/s","type":"t","ext":1}"#;
    assert_eq!(s.ingest_raw(STRUCTURED, minimal).await, [2]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cloudevent_id_returns_the_original_seq_and_appends_nothing() {
    let s = TestServer::start().await;
    let first = started("dup-cell", "spec", Some("run-1"), &ts(1));
    let seq = s.ingest_one(&first).await;
    assert_eq!(seq, 1);
    // The same event again, structured and in a batch.
    assert_eq!(s.ingest_one(&first).await, 1);
    assert_eq!(s.ingest(std::slice::from_ref(&first)).await, [1]);
    // Same id, different content: still the original, and the stored payload is the original.
    let mut changed = started("other-cell", "spec", None, &ts(2));
    changed["id"] = first["id"].clone();
    assert_eq!(s.ingest_one(&changed).await, 1);
    // Mixed batch: known id keeps its seq, new ids get new ones; a repeat inside one batch
    // appends once.
    let fresh = started("fresh-cell", "spec", None, &ts(3));
    let seqs = s
        .ingest(&[first.clone(), fresh.clone(), fresh.clone(), changed.clone()])
        .await;
    assert_eq!(seqs, [1, 2, 2, 1]);
    let events = s.all_events().await;
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(events[0].1, first);
    assert_eq!(events[1].1, fresh);
    assert_problem(
        &s.get("/v1/cells/other-cell").await,
        NOT_FOUND,
        "cell other-cell not found",
    );
    let c = s.get_json("/v1/cells/dup-cell").await;
    assert_eq!(c["run_id"], "run-1");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_long_ids_are_never_taken_for_retries_of_each_other() {
    // The contract puts no length limit on CloudEvent ids. Two different ids must be two events
    // (or, if the server caps id length, both must be refused with a 400): never may the second
    // be acknowledged with the first one's seq and silently dropped.
    let s = TestServer::start().await;
    let prefix = "x".repeat(1100);
    let a = json!({"specversion": "1.0", "id": format!("{prefix}a"), "source": "s", "type": "t",
                   "data": {"which": "a"}});
    let b = json!({"specversion": "1.0", "id": format!("{prefix}b"), "source": "s", "type": "t",
                   "data": {"which": "b"}});
    let ra = s.post_events(STRUCTURED, body(&a)).await;
    let rb = s.post_events(STRUCTURED, body(&b)).await;
    match (ra.status, rb.status) {
        (202, 202) => {
            assert_ne!(
                seqs_of(&ra),
                seqs_of(&rb),
                "event b was acknowledged with event a's seq and not stored"
            );
            let events = s.all_events().await;
            assert_eq!(events.len(), 2);
            assert_eq!(events[1].1, b);
        }
        (400, 400) => assert!(s.all_events().await.is_empty()),
        other => panic!(
            "inconsistent answers {other:?}: {} / {}",
            ra.text(),
            rb.text()
        ),
    }
    // A retry of the same long id is still deduplicated.
    let again = s.post_events(STRUCTURED, body(&a)).await;
    assert_eq!(again.status, ra.status);
    if ra.status == 202 {
        assert_eq!(seqs_of(&again), seqs_of(&ra));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_json_with_integers_beyond_64_bits_is_accepted_verbatim() {
    // RFC 8259 JSON has no integer size limit; the reference (serde_json) reads such numbers as
    // floats and accepts the event. The frame must carry the bytes as posted.
    let s = TestServer::start().await;
    let ev = br#"{"specversion":"1.0","id":"bigint-1","source":"s","type":"dev.example.t","data":{"n":123456789012345678901234567890,"m":-98765432109876543210}}"#;
    let r = s.post_events(STRUCTURED, ev.to_vec()).await;
    assert_eq!(r.status, 202, "valid JSON refused: {}", r.text());
    let mut want = b"{\"events\":[{\"seq\":1,\"event\":".to_vec();
    want.extend_from_slice(ev);
    want.extend_from_slice(b"}],\"cursor\":1}");
    assert_eq!(
        String::from_utf8_lossy(&s.get_ok("/v1/events").await),
        String::from_utf8_lossy(&want)
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_json_inside_an_event_is_refused_whole() {
    let s = TestServer::start().await;
    let good = body(&started("u1", "s", None, &ts(1)));
    // Invalid UTF-8 inside a string, a lone surrogate escape.
    let bad_utf8 =
        b"{\"specversion\":\"1.0\",\"id\":\"u\",\"source\":\"s\",\"type\":\"t\",\"data\":\"\xff\"}"
            .to_vec();
    let lone =
        br#"{"specversion":"1.0","id":"v","source":"s","type":"t","data":"\ud800"}"#.to_vec();
    for bad in [bad_utf8, lone] {
        let mut batch = b"[".to_vec();
        batch.extend_from_slice(&good);
        batch.push(b',');
        batch.extend_from_slice(&bad);
        batch.push(b']');
        let r = s.post_events(BATCH, batch).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.starts_with("invalid json: ") || detail.starts_with("events[1]"),
            "{detail}"
        );
        assert_problem(&r, BAD_REQUEST, &detail);
    }
    assert!(s.all_events().await.is_empty());
    s.shutdown().await;
}
