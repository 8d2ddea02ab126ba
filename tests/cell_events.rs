//! `GET /v1/cells/{id}/events`: the JSON tail and the live NDJSON stream behind `cellctl logs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn lines(buf: &[u8]) -> Vec<Value> {
    buf.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each line is one JSON event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_follow() {
    let s = TestServer::start().await;
    let identity = cloud_event(
        "dev.cellos.events.cell.identity.v1.materialized",
        "sup",
        Some(&ts(2)),
        json!({"cellId": "c1", "specId": "sp"}),
    );
    // Stored with a raw line break inside: NDJSON must still carry it on one line.
    let pretty = "{\"specversion\":\"1.0\",\"id\":\"pretty-1\",\"source\":\"s\",\n\"type\":\"dev.cellos.events.cell.command.v1.completed\",\"data\":{\"cellId\":\"c1\",\"specId\":\"sp\",\"exitCode\":0}}";
    s.ingest(&[
        started("c1", "sp", Some("r1"), &ts(1)),
        started("other", "sp", None, &ts(1)),
        identity,
    ])
    .await;
    s.ingest_raw(STRUCTURED, pretty).await;
    s.ingest(&[destroyed("c1", "sp", "succeeded", &ts(4))])
        .await;

    let all = s.get_json("/v1/cells/c1/events").await;
    let types: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            STARTED,
            "dev.cellos.events.cell.identity.v1.materialized",
            COMMAND_COMPLETED,
            DESTROYED
        ]
    );
    let two = s.get_json("/v1/cells/c1/events?tail=2").await;
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_eq!(two[1]["type"], DESTROYED);
    let r = s.get("/v1/cells/nope/events").await;
    assert_problem(&r, NOT_FOUND, "cell nope not found");
    let r = s.get("/v1/cells/c1/events?tail=x").await;
    assert_problem(
        &r,
        BAD_REQUEST,
        "Failed to deserialize query string: invalid digit found in string",
    );

    // follow=true: the tail, then live events as they are applied.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut stream = http
        .get(format!("{}/v1/cells/c1/events?follow=true&tail=2", s.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "application/x-ndjson");
    let mut buf = Vec::new();
    let head = read_lines(&mut stream, &mut buf, 2).await;
    assert_eq!(head[0]["id"], "pretty-1");
    assert_eq!(head[1]["type"], DESTROYED);
    s.ingest(&[
        started("other", "sp", None, &ts(5)),
        cloud_event("x.note", "sup", None, json!({"cellId": "c1", "n": 1})),
    ])
    .await;
    let now = read_lines(&mut stream, &mut buf, 3).await;
    assert_eq!(now[2]["type"], "x.note");
    assert_eq!(now.len(), 3, "events of other cells are not streamed");
    drop(stream);
    s.shutdown().await;
}

async fn read_lines(stream: &mut reqwest::Response, buf: &mut Vec<u8>, n: usize) -> Vec<Value> {
    while lines(buf).len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
            .await
            .expect("a chunk in time")
            .unwrap()
            .expect("stream still open");
        buf.extend_from_slice(&chunk);
    }
    lines(buf)
}
