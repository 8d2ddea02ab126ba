//! The JetStream event log against a real nats-server (started per test on its own loopback port
//! and store directory): supervisor events replayed and followed live, restarts of this server
//! and of NATS, outages with other producers, two replicas on one stream, no consumer per
//! request or socket, formation writes. Without nats-server installed these tests say so and
//! pass, unless `CELLOS_REQUIRE_NATS=1`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream::Stream};
use cellos_server::config::LogBackend;
use cellos_server::log::jetstream::{
    drift, stream_config, JetStreamLog, JetStreamOptions, StreamSettings, STREAM_NAME,
};
use cellos_server::log::{Bounds, EventLog, LogError};
use common::log_contract::{append, drain};
use common::*;
use nats::{settings, Nats};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Upper bound on every wait for something to happen.
const WAIT: Duration = Duration::from_secs(30);

const SERVICE_UNAVAILABLE: ProblemKind = (
    503,
    "/problems/service-unavailable",
    "Event store unavailable",
);
const STORE_UNAVAILABLE: &str = "Event store is temporarily unreachable; retry later";

/// The running nats-server, or return from the test (see `nats::Nats::start`).
macro_rules! nats_or_skip {
    () => {
        match Nats::start().await {
            Some(n) => n,
            None => return,
        }
    };
}

/// Polls an async condition until it holds; fails after [`WAIT`].
macro_rules! wait_until {
    ($what:expr, $cond:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            if $cond {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

// ------------------------------------------------------------------------------------------------
// Harness

/// cellos-server in this process with the JetStream log.
struct Js {
    running: Option<cellos_server::Running>,
    client: Client,
    _dir: TempDir,
}

impl Deref for Js {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Js {
    async fn start(nats: &Nats) -> Js {
        let s = Js::start_unready(&nats.url()).await;
        s.wait_ready().await;
        s
    }

    /// Returns once the listener is bound, whether or not NATS is reachable.
    async fn start_unready(url: &str) -> Js {
        Js::start_unready_with(url, |_| {}).await
    }

    /// [`Js::start_unready`] with `tweak` applied to the test configuration.
    async fn start_unready_with(url: &str, tweak: impl FnOnce(&mut cellos_server::Config)) -> Js {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
        config.log = LogBackend::jetstream(url).expect("a NATS URL");
        tweak(&mut config);
        let (running, client) = start_config(config).await;
        Js {
            running: Some(running),
            client,
            _dir: dir,
        }
    }

    async fn shutdown(mut self) {
        let running = self.running.take().unwrap();
        stop(running).await;
    }

    async fn readyz_status(&self) -> u16 {
        self.get_as("/readyz", Auth::None).await.status
    }

    /// The cursor of the snapshot (`/v1/formations`).
    async fn cursor(&self) -> u64 {
        self.get_json("/v1/formations").await["cursor"]
            .as_u64()
            .expect("cursor")
    }

    /// The snapshot reads whose bytes must agree across restarts and replicas.
    async fn reads(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for path in ["/v1/formations", "/v1/cells", "/v1/events?limit=1000"] {
            out.push((path.to_owned(), self.get(path).await.ok_json_text()));
        }
        out
    }
}

/// Publishes a CloudEvent the way a supervisor does: JetStream publish, `Nats-Msg-Id` = its id.
async fn publish(js: &jetstream::Context, subject: &str, ev: &Value) -> PublishAck {
    let msg = PublishMessage::build()
        .payload(json_body(ev).into())
        .message_id(ev["id"].as_str().expect("event id"));
    let ack = tokio::time::timeout(WAIT, async {
        js.send_publish(subject.to_owned(), msg)
            .await
            .expect("publish")
            .await
    })
    .await
    .expect("publish timed out");
    ack.expect("publish ack")
}

/// Publishes `started` for a cell on its subject; returns the seq.
async fn publish_started(js: &jetstream::Context, cell: &str) -> u64 {
    let ev = started(cell, "spec", None, &ts(1));
    publish(js, &format!("cellos.events.cells.{cell}.started"), &ev)
        .await
        .sequence
}

async fn stream_of(nats: &Nats) -> Stream {
    nats.jetstream()
        .await
        .get_stream(STREAM_NAME)
        .await
        .expect("the stream exists")
}

async fn consumer_count(stream: &Stream) -> usize {
    stream
        .get_info()
        .await
        .expect("stream info")
        .state
        .consumer_count
}

fn seqs_of_events(events: &[(u64, Value)]) -> Vec<u64> {
    events.iter().map(|e| e.0).collect()
}

// ------------------------------------------------------------------------------------------------
// Tests

/// (a) + (b): events a supervisor published before the server started are replayed; events
/// published while it runs are projected; one id is one event whoever publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_events_are_replayed_then_followed_live() {
    let nats = nats_or_skip!();
    let js = nats.jetstream().await;
    // A stream the operator created with other settings is used as it is (and the drift logged).
    let mut theirs = stream_config(&StreamSettings::default());
    theirs.duplicate_window = Duration::from_secs(60);
    theirs.max_messages = 100_000;
    js.create_stream(theirs.clone()).await.unwrap();
    let c1_started = started("c1", "spec-1", Some("run-1"), &ts(1));
    let c2_started = started("c2", "spec-2", None, &ts(2));
    let c1_destroyed = destroyed("c1", "spec-1", "succeeded", &ts(3));
    let mut seqs = Vec::new();
    for (subject, ev) in [
        ("cellos.events.cells.c1.started", &c1_started),
        ("cellos.events.cells.c2.started", &c2_started),
        ("cellos.events.cells.c1.destroyed", &c1_destroyed),
    ] {
        seqs.push(publish(&js, subject, ev).await.sequence);
    }
    assert_eq!(seqs, [1, 2, 3]);

    let s = Js::start(&nats).await;
    let (t1, t2, t3) = (ts(1), ts(2), ts(3));
    let c1 = CellRec {
        id: "c1",
        spec_id: "spec-1",
        run_id: Some("run-1"),
        state: "destroyed",
        started_at: Some(&t1),
        destroyed_at: Some(&t3),
        outcome: Some("succeeded"),
        ..Default::default()
    };
    let c2 = CellRec {
        id: "c2",
        spec_id: "spec-2",
        state: "running",
        started_at: Some(&t2),
        ..Default::default()
    };
    assert_eq!(s.get("/v1/cells/c1").await.ok_json_text(), c1.json());
    assert_eq!(s.get("/v1/cells/c2").await.ok_json_text(), c2.json());
    let events = s.all_events().await;
    assert_eq!(seqs_of_events(&events), [1, 2, 3]);
    assert_eq!(events[0].1, c1_started);
    assert_eq!(events[2].1, c1_destroyed);
    // The subject is kept as published.
    let raw = s.get("/v1/cells/c1/events").await.ok_json_text();
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        json!([c1_started, c1_destroyed])
    );

    // Live: published while running, projected without any request to the server.
    let c3_started = started("c3", "spec-3", None, &ts(4));
    let ack = publish(&js, "cellos.events.cells.c3.started", &c3_started).await;
    assert_eq!(ack.sequence, 4);
    wait_until!("c3 is projected", s.get("/v1/cells/c3").await.status == 200);
    assert_eq!(s.get_json("/v1/cells/c3").await["state"], "running");
    // The same id again, from the supervisor or over HTTP, is the same event.
    let again = publish(&js, "cellos.events.cells.c3.started", &c3_started).await;
    assert!(again.duplicate);
    assert_eq!(
        again.sequence, 4,
        "a duplicate's ack carries the original seq"
    );
    assert_eq!(s.ingest_one(&c3_started).await, 4);
    let c4 = s.ingest_one(&started("c4", "spec", None, &ts(5))).await;
    assert_eq!(c4, 5);
    assert_eq!(seqs_of_events(&s.all_events().await), [1, 2, 3, 4, 5]);
    let kept = stream_of(&nats).await.get_info().await.unwrap().config;
    assert_eq!(
        (kept.duplicate_window, kept.max_messages),
        (theirs.duplicate_window, theirs.max_messages)
    );
    s.shutdown().await;
}

/// (h) + (c): formation writes answer after apply; a restart on the same stream serves
/// byte-identical reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formation_writes_apply_before_answering_and_survive_a_restart() {
    let nats = nats_or_skip!();
    let s = Js::start(&nats).await;
    let r = s.post_formation(&admission_request("web")).await;
    r.expect(201);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // Read-your-writes: the record is there at once.
    let rec = s.get_json(&format!("/v1/formations/{id}")).await;
    assert_eq!(rec["status"], "PENDING");
    assert_eq!(rec["document"], admission_request("web"));
    // A live name is taken (decided on the snapshot: nothing is appended).
    s.post_formation(&admission_request("web"))
        .await
        .expect(409);
    s.send(
        Method::POST,
        &format!("/v1/formations/{id}/status"),
        Auth::Token,
        &[("content-type", "application/json")],
        Some(json_body(&json!({"state": "running"}))),
    )
    .await
    .expect(204);
    assert_eq!(
        s.get_json(&format!("/v1/formations/{id}")).await["status"],
        "RUNNING"
    );
    let other = s.post_formation(&admission_request("batch")).await;
    other.expect(201);
    s.send(
        Method::DELETE,
        "/v1/formations/by-name/batch",
        Auth::Token,
        &[],
        None,
    )
    .await
    .expect(204);
    assert_eq!(
        s.get_json("/v1/formations/by-name/batch").await["status"],
        "CANCELLED"
    );
    s.ingest(&[
        started("x1", "spec", None, &ts(10)),
        command_completed("x1", "spec", 3, &ts(11)),
        started("x2", "spec", Some("r"), &ts(12)),
    ])
    .await;
    let types: Vec<String> = s
        .all_events()
        .await
        .iter()
        .map(|e| e.1["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            formation_type("created"),
            formation_type("running"),
            formation_type("created"),
            formation_type("cancelled"),
            STARTED.to_owned(),
            COMMAND_COMPLETED.to_owned(),
            STARTED.to_owned(),
        ]
    );

    let before = s.reads().await;
    let by_name = s.get("/v1/formations/by-name/web").await.ok_json_text();
    s.shutdown().await;
    let again = Js::start(&nats).await;
    assert_eq!(again.reads().await, before);
    assert_eq!(
        again.get("/v1/formations/by-name/web").await.ok_json_text(),
        by_name
    );
    // And it keeps writing after the restart.
    let r = again
        .post_formation(&admission_request("after-restart"))
        .await;
    r.expect(201);
    again.shutdown().await;
}

/// (d): NATS stops mid-stream: not ready, writes 503 and change nothing, reads keep serving the
/// last snapshot; after NATS is back the tail resumes with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_and_repeats_nothing() {
    let mut nats = nats_or_skip!();
    let s = Js::start(&nats).await;
    let first: Vec<Value> = (0..5)
        .map(|i| started(&format!("a{i}"), "spec", None, &ts(i)))
        .collect();
    assert_eq!(s.ingest(&first).await, [1, 2, 3, 4, 5]);
    let reads_before = s.reads().await;
    let formations_before = s.get("/v1/formations").await.ok_json_text();
    let cells_before = s.get("/v1/cells").await.ok_json_text();

    nats.stop().await;
    wait_until!("/readyz says 503", s.readyz_status().await == 503);
    let ready = s.get_as("/readyz", Auth::None).await;
    assert!(ready.text().contains("NATS"), "{}", ready.text());
    let during = started("during", "spec", None, &ts(20));
    let r = s.post_events(STRUCTURED, json_body(&during)).await;
    assert_problem(&r, SERVICE_UNAVAILABLE, STORE_UNAVAILABLE);
    let r = s.post_formation(&admission_request("offline")).await;
    assert_problem(&r, SERVICE_UNAVAILABLE, STORE_UNAVAILABLE);
    // Snapshot reads keep serving what was applied.
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        formations_before
    );
    assert_eq!(s.get("/v1/cells").await.ok_json_text(), cells_before);
    s.get_as("/healthz", Auth::None).await.expect(200);

    nats.restart().await;
    s.wait_ready().await;
    // Nothing was stored by the refused write: the same event now gets the next seq.
    assert_eq!(s.reads().await, reads_before);
    assert_eq!(s.ingest_one(&during).await, 6);
    let more: Vec<Value> = (0..3)
        .map(|i| started(&format!("b{i}"), "spec", None, &ts(30 + i)))
        .collect();
    assert_eq!(s.ingest(&more).await, [7, 8, 9]);
    let events = s.all_events().await;
    assert_eq!(seqs_of_events(&events), (1..=9).collect::<Vec<u64>>());
    let cells = s.get_json("/v1/cells").await;
    assert_eq!(cells.as_array().unwrap().len(), 9);
    s.shutdown().await;
}

/// NATS comes back with its store lost: the stream is recreated empty, so the log now ends before
/// what this server applied. It keeps serving what it has, but is not ready, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_was_reset_is_refused_by_readyz() {
    let mut nats = nats_or_skip!();
    let s = Js::start(&nats).await;
    let evs: Vec<Value> = (0..3)
        .map(|i| started(&format!("r{i}"), "spec", None, &ts(i)))
        .collect();
    assert_eq!(s.ingest(&evs).await, [1, 2, 3]);
    let cells_before = s.get("/v1/cells").await.ok_json_text();

    nats.stop().await;
    std::fs::remove_dir_all(nats.store_dir()).unwrap();
    std::fs::create_dir_all(nats.store_dir()).unwrap();
    nats.restart().await;
    // Another producer publishes into the new, empty stream (the server recreates it too).
    let js = nats.jetstream().await;
    let _ = js
        .get_or_create_stream(stream_config(&StreamSettings::default()))
        .await
        .unwrap();
    publish(
        &js,
        "cellos.events.cells.x.started",
        &started("x", "spec", None, &ts(9)),
    )
    .await;

    let mut last;
    wait_until!(format!("/readyz refuses the reset log (last: {last})"), {
        let r = s.get_as("/readyz", Auth::None).await;
        last = r.text();
        r.status == 503 && last.contains("reset or replaced")
    });
    let r = s.get_as("/readyz", Auth::None).await;
    assert!(
        r.text().contains("before the applied seq 3"),
        "{}",
        r.text()
    );
    assert_eq!(s.get("/v1/cells").await.ok_json_text(), cells_before);
    s.shutdown().await;
}

/// (e): while this server is cut off, another producer publishes (right after NATS comes back,
/// before this server has reconnected, and later): everything is projected exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_this_server_was_cut_off_are_projected_once() {
    let mut nats = nats_or_skip!();
    let s = Js::start(&nats).await;
    let ours: Vec<Value> = (0..3)
        .map(|i| started(&format!("ours{i}"), "spec", None, &ts(i)))
        .collect();
    s.ingest(&ours).await;

    nats.stop().await;
    wait_until!("/readyz says 503", s.readyz_status().await == 503);
    // Let the client's reconnect backoff grow, so the producer below usually publishes before
    // this server is back (the outcome must be the same either way).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    nats.restart().await;
    let js = nats.jetstream().await;
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(publish_started(&js, &format!("theirs{i}")).await);
    }
    eprintln!(
        "published while this server was still cut off: {}",
        s.readyz_status().await == 503
    );
    s.wait_ready().await;
    s.ingest(&[
        started("ours-after-0", "spec", None, &ts(40)),
        started("ours-after-1", "spec", None, &ts(41)),
    ])
    .await;
    for i in 10..12 {
        published.push(publish_started(&js, &format!("theirs{i}")).await);
    }
    let total = 3 + 10 + 2 + 2;
    wait_until!("every event is applied", s.cursor().await == total as u64);
    let events = s.all_events().await;
    assert_eq!(
        seqs_of_events(&events),
        (1..=total as u64).collect::<Vec<u64>>()
    );
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e.1["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), total, "every event exactly once");
    let cells = s.get_json("/v1/cells").await;
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), total);
    for i in 0..12 {
        let id = format!("theirs{i}");
        assert_eq!(
            cells.iter().filter(|c| c["id"] == id.as_str()).count(),
            1,
            "{id} projected once"
        );
    }
    s.shutdown().await;
}

/// (f): two replicas on one stream serve identical reads once caught up, and decide a contested
/// name the same way: one 201 overall, every other POST 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_on_everything_including_name_conflicts() {
    let nats = nats_or_skip!();
    let a = Js::start(&nats).await;
    let b = Js::start(&nats).await;
    a.ingest(&[
        started("r1", "spec", None, &ts(1)),
        started("r2", "spec", None, &ts(2)),
    ])
    .await;
    b.ingest_one(&destroyed("r1", "spec", "failed", &ts(3)))
        .await;

    let clients = [a.client.clone(), b.client.clone()];
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..16 {
        let c = clients[i % 2].clone();
        posts.spawn(async move { c.post_formation(&admission_request("contested")).await });
    }
    let (mut created, mut conflicts, mut winner) = (0, 0, String::new());
    while let Some(r) = posts.join_next().await {
        let r = r.unwrap();
        match r.status {
            201 => {
                created += 1;
                winner = r.json()["id"].as_str().unwrap().to_owned();
            }
            409 => conflicts += 1,
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!((created, conflicts), (1, 15));

    let last = stream_of(&nats)
        .await
        .get_info()
        .await
        .unwrap()
        .state
        .last_sequence;
    // Three cell events, the winner's `created`, and the `created` of every POST that passed the
    // snapshot check before the winner was applied (recorded as rejected by `apply`).
    assert!((3 + 1..=3 + 16).contains(&last), "{last}");
    wait_until!("both replicas applied everything", {
        a.cursor().await == last && b.cursor().await == last
    });
    for s in [&a, &b] {
        assert_eq!(
            s.get_json("/v1/formations/by-name/contested").await["id"],
            winner.as_str()
        );
    }
    assert_eq!(a.reads().await, b.reads().await);
    assert_eq!(
        a.get("/v1/formations/by-name/contested")
            .await
            .ok_json_text(),
        b.get("/v1/formations/by-name/contested")
            .await
            .ok_json_text()
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// (g): one consumer per running server (its tail), whatever the number of GET /v1/events
/// requests and WebSocket resumes; a stopped server's consumer goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_per_server_not_per_request_or_socket() {
    let nats = nats_or_skip!();
    let s = Js::start(&nats).await;
    let stream = stream_of(&nats).await;
    // The stream this server created has the reference settings.
    let config = stream.get_info().await.unwrap().config;
    let defaults = StreamSettings::default();
    assert!(
        drift(&config, &defaults).is_empty(),
        "{:?}",
        drift(&config, &defaults)
    );
    assert_eq!((config.num_replicas, config.allow_direct), (1, false));
    assert_eq!(consumer_count(&stream).await, 1);
    let evs: Vec<Value> = (0..20)
        .map(|i| started(&format!("g{i}"), "spec", None, &ts(i)))
        .collect();
    s.ingest(&evs).await;

    for since in 0..40u64 {
        let (page, _) = s.events_page(&format!("?since={since}&limit=7")).await;
        assert_eq!(page.len(), 7.min(20u64.saturating_sub(since) as usize));
    }
    s.get("/v1/cells/g3/events").await.expect(200);
    let mut sockets = Vec::new();
    for i in 0..20u64 {
        let mut ws = ws::connect(s.addr, &format!("?since={i}")).await;
        let got: Vec<u64> = ws::frames(&mut ws, (20 - i) as usize)
            .await
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(got, (i + 1..=20).collect::<Vec<u64>>());
        sockets.push(ws);
    }
    assert_eq!(consumer_count(&stream).await, 1);
    drop(sockets);

    let second = Js::start(&nats).await;
    assert_eq!(consumer_count(&stream).await, 2);
    second.shutdown().await;
    wait_until!(
        "the stopped server's consumer is gone",
        consumer_count(&stream).await == 1
    );
    s.shutdown().await;
}

/// A configured NATS that is down at boot is retried, never replaced by the embedded log. Until
/// the log is reached and replayed, reads and writes wait their bound and then answer the replay
/// 503: an empty projection is not the log's (nothing is appended by the refused write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_boot_is_waited_for() {
    let mut nats = nats_or_skip!();
    nats.stop().await;
    let s = Js::start_unready_with(&nats.url(), |c| {
        c.write_timeout = Duration::from_millis(200);
        c.replay_read_wait = Duration::ZERO;
    })
    .await;
    let ready = s.get_as("/readyz", Auth::None).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("not connected to NATS"),
        "{}",
        ready.text()
    );
    let replaying = "the projection is replaying the event log after a start: applied through \
                     seq 0, the log's end is not known yet (the log is not reachable yet); retry \
                     shortly";
    let r = s
        .post_events(
            STRUCTURED,
            json_body(&started("early", "spec", None, &ts(1))),
        )
        .await;
    assert_problem(&r, SERVICE_UNAVAILABLE, replaying);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let r = s.get("/v1/formations").await;
    assert_problem(&r, SERVICE_UNAVAILABLE, replaying);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    nats.restart().await;
    s.wait_ready().await;
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        r#"{"formations":[],"cursor":0}"#
    );
    assert_eq!(
        s.ingest_one(&started("late", "spec", None, &ts(2))).await,
        1
    );
    assert_eq!(s.get_json("/v1/cells/late").await["state"], "running");
    s.shutdown().await;
}

/// What only the JetStream log meets (the shared contract is `tests/log_contract.rs`): messages
/// deleted or purged behind its back are skipped by reads, gets and new tails, and the NATS
/// server's max_payload bounds an event too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_purged_messages_and_max_payload() {
    let nats = nats_or_skip!();
    let log = Arc::new(
        JetStreamLog::connect(&settings(&nats.url()), JetStreamOptions::default())
            .await
            .unwrap(),
    );
    wait_until!("the log is healthy", log.health().is_ok());
    let mut tail = log.clone().tail(0);
    let idle = tail.next(100).await.unwrap();
    assert!(idle.events.is_empty() && idle.caught_up);
    let seqs = log
        .append(vec![
            append("cellos.events.other.a", "{\"n\":1}", "id-1"),
            append("cellos.events.other.b", "{\"n\":2}", "id-2"),
            append("cellos.events.other.c", "[3]", "id-3"),
            append("cellos.events.other.d", "{\"n\":4}", "id-4"),
        ])
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2, 3, 4]);

    let stream = stream_of(&nats).await;
    assert!(stream.delete_message(2).await.unwrap());
    let rest = log.read(0, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 4]);
    let one = log.read(1, 1).await.unwrap();
    assert_eq!(one.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    assert!(log.read(4, 10).await.unwrap().is_empty());
    let got = log.get(vec![4, 2, 1, 99]).await.unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 1]);

    // The tail opened before the delete had already been handed every message; a tail opened
    // now skips the deleted one.
    assert_eq!(drain(&mut tail, 4).await, [1, 2, 3, 4]);
    let mut late = log.clone().tail(0);
    assert_eq!(drain(&mut late, 4).await, [1, 3, 4]);
    drop(late);
    log.append(vec![append("cellos.events.other.e", "{}", "id-5")])
        .await
        .unwrap();

    // The server's max_payload (1 MiB by default) bounds an event too, headers included: an
    // event the embedded log takes can be too large here, and is refused before anything is sent.
    let at_limit = "x".repeat(cellos_server::event::decode::MAX_EVENT_BYTES);
    assert!(matches!(
        log.append(vec![
            append("cellos.events.other.f", "{}", "id-6"),
            append("cellos.events.other.f", &at_limit, "id-7"),
        ])
        .await,
        Err(LogError::TooLarge { .. })
    ));
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 5 });

    // Purged: nothing retained, the last seq stays.
    stream.purge().await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 6, last: 5 });
    assert!(log.read(0, 10).await.unwrap().is_empty());
    drop(tail);
}

/// An idle tail stays on its consumer: the server's idle heartbeats (NATS 2.9 sends them for
/// pull requests) keep it from being taken for dead, so it reports no error while waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tail_outlives_several_heartbeat_intervals() {
    let nats = nats_or_skip!();
    let log = Arc::new(
        JetStreamLog::connect(&settings(&nats.url()), JetStreamOptions::default())
            .await
            .unwrap(),
    );
    wait_until!("the log is healthy", log.health().is_ok());
    let stream = stream_of(&nats).await;
    let mut tail = log.clone().tail(0);
    let idle = tail.next(100).await.unwrap();
    assert!(idle.events.is_empty() && idle.caught_up);
    // Three heartbeat intervals; two missed heartbeats would end the wait with an error.
    let waited = tokio::time::timeout(Duration::from_secs(16), tail.next(100)).await;
    assert!(waited.is_err(), "the idle tail returned: {waited:?}");
    assert_eq!(consumer_count(&stream).await, 1);
    log.append(vec![append("cellos.events.other.x", "{}", "idle-1")])
        .await
        .unwrap();
    let live = tail.next(100).await.unwrap();
    assert_eq!(live.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
}

/// Payloads a supervisor published that are not JSON objects: each advances the cursor; one that
/// is not JSON gets no frame and is in no events page, a JSON value that is not an object is
/// served verbatim; the events after them are projected and delivered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_json_objects_advance_the_cursor_and_break_nothing() {
    let nats = nats_or_skip!();
    let js = nats.jetstream().await;
    js.create_stream(stream_config(&StreamSettings::default()))
        .await
        .unwrap();
    for (id, payload) in [("not-json", &b"{\"id\": oops"[..]), ("array", b"[1,2]")] {
        let msg = PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(id);
        let ack = js
            .send_publish("cellos.events.cells.x.started".to_owned(), msg)
            .await
            .expect("publish")
            .await
            .expect("publish ack");
        assert!(!ack.duplicate);
    }
    let c1 = started("c1", "spec", None, &ts(1));
    assert_eq!(publish_started(&js, "c1").await, 3);
    let s = Js::start(&nats).await;
    wait_until!("the cursor passes all three", s.cursor().await == 3);
    assert_eq!(s.readyz_status().await, 200);
    assert_eq!(s.get_json("/v1/cells/c1").await["state"], "running");
    let events = s.all_events().await;
    assert_eq!(seqs_of_events(&events), [2, 3]);
    assert_eq!(events[0].1, json!([1, 2]));
    assert_eq!(events[1].1["data"]["cellId"], c1["data"]["cellId"]);
    let mut sock = ws::connect(s.addr, "?since=0").await;
    let frames = ws::frames(&mut sock, 2).await;
    assert_eq!(seqs_of_events(&frames), [2, 3]);
    s.shutdown().await;
}
