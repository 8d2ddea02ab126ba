//! `GET /v1/cells/{id}/events`: the JSON tail and the live NDJSON stream behind `cellctl logs`.

mod common;

use common::*;
use serde_json::json;

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
    let mut stream = s.follow("/v1/cells/c1/events?follow=true&tail=2").await;
    let head = stream.lines(2).await;
    assert_eq!(head[0]["id"], "pretty-1");
    assert_eq!(head[1]["type"], DESTROYED);
    s.ingest(&[
        started("other", "sp", None, &ts(5)),
        cloud_event("x.note", "sup", None, json!({"cellId": "c1", "n": 1})),
    ])
    .await;
    let now = stream.lines(3).await;
    assert_eq!(now[2]["type"], "x.note");
    assert_eq!(now.len(), 3, "events of other cells are not streamed");
    drop(stream);
    s.shutdown().await;
}
