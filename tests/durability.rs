//! The log is the truth: a restart on the same data directory serves byte-identical reads, and a
//! `kill -9` right after an acknowledgement loses nothing that was acknowledged and duplicates
//! nothing.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// (status, content type, body) of each GET, in order.
async fn capture(c: &Client, paths: &[String]) -> Vec<(String, u16, Option<String>, String)> {
    let mut out = Vec::new();
    for p in paths {
        let r = c.get(p).await;
        out.push((p.clone(), r.status, r.content_type(), r.text()));
    }
    out
}

fn assert_same(
    before: &[(String, u16, Option<String>, String)],
    after: &[(String, u16, Option<String>, String)],
) {
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b, a, "GET {} differs after restart", b.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_byte_identical_reads() {
    let s = TestServer::start().await;
    let fa = "00000000-0000-4000-8000-0000000000fa".to_string();
    let (fb, fc, fd) = (new_fid(), new_fid(), new_fid());
    let c1_started = started("c1", "spec", Some("run-1"), &ts(5));
    s.ingest(&[
        formation_created(&fa, "web", &ts(1), document("web")),
        formation_created(&fb, "web", &ts(2), document("web")), // loses the name
        formation_created(
            &fc,
            "api",
            &ts(3),
            json!({"name": "api", "z": [3, 2, 1], "a": {"k": "v"}}),
        ),
    ])
    .await;
    s.ingest(&[
        cloud_event(
            STARTED,
            "sup",
            Some(&ts(4)),
            json!({"cellId": "c1", "specId": "spec", "runId": "run-1", "formationId": fa}),
        ),
        cloud_event(
            STARTED,
            "sup",
            Some(&ts(5)),
            json!({"cellId": "cell two/2", "specId": "s2", "correlation": {"formationId": fc}}),
        ),
        command_completed("c1", "spec", 7, &ts(6)),
        destroyed("c1", "spec", "failed", &ts(7)),
        started("c3", "s3", None, &ts(8)),
        command_completed("c4", "", 2, &ts(9)),
    ])
    .await;
    s.ingest(&[
        formation_phase(&fa, "web", "launching", &ts(10)),
        formation_phase(&fa, "web", "running", &ts(11)),
        formation_phase(&fc, "api", "degraded", &ts(12)),
    ])
    .await;
    s.ingest_one(&formation_phase(&fa, "web", "completed", &ts(13)))
        .await;
    s.ingest(&[
        formation_created(&fd, "web", &ts(14), document("web")), // reuses the name
        formation_phase(&fb, "web", "running", &ts(15)),         // ignored: rejected
        formation_phase(&fa, "web", "running", &ts(16)),         // ignored: terminal
        c1_started.clone(),                                      // ignored: destroyed
        cloud_event(STARTED, "sup", Some(&ts(17)), json!({"cellId": "nospec"})),
        cloud_event(
            "dev.cellos.events.cell.dns.v1.resolved",
            "sup",
            None,
            json!({"q": "x"}),
        ),
        cloud_event(
            "io.cellos.formation.v1.failed",
            &fc,
            Some(&ts(18)),
            json!({"formationId": fc, "formationName": "api", "reason": "boom"}),
        ),
    ])
    .await;
    // A retry of an old event id appends nothing.
    assert_eq!(s.ingest(std::slice::from_ref(&c1_started)).await, [17]);
    s.ingest_raw(
        STRUCTURED,
        " {\"id\":\"raw-x\", \"specversion\":\"1.0\",\"source\":\"s\",\"type\":\"t\",\"data\":[1, 2]}\n",
    )
    .await;

    let paths: Vec<String> = vec![
        "/v1/formations".into(),
        format!("/v1/formations/{fa}"),
        format!("/v1/formations/{fb}"),
        format!("/v1/formations/{fc}"),
        format!("/v1/formations/{fd}"),
        "/v1/formations/web".into(),
        "/v1/formations/by-name/web".into(),
        "/v1/formations/by-name/api".into(),
        "/v1/cells".into(),
        "/v1/cells?state=destroyed".into(),
        "/v1/cells?state=pending".into(),
        format!("/v1/cells?formation={fa}"),
        "/v1/cells?formation=api".into(),
        "/v1/cells/c1".into(),
        "/v1/cells/cell%20two%2F2".into(),
        "/v1/cells/c4".into(),
        "/v1/cells/nospec".into(),
        "/v1/events?since=0&limit=1000".into(),
        "/v1/events?since=3&limit=4".into(),
        format!("/v1/events?formation={fa}"),
        "/v1/events?formation=api&limit=2".into(),
    ];
    let before = capture(&s, &paths).await;
    // Sanity: the history is what it should be.
    let formations = s.get_json("/v1/formations").await;
    let statuses: BTreeMap<String, String> = formations["formations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        (fa.clone(), "SUCCEEDED"),
        (fc.clone(), "FAILED"),
        (fd.clone(), "PENDING"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(statuses, want);
    assert_eq!(formations["cursor"], 21);
    assert_eq!(
        s.get_json("/v1/formations/by-name/web").await["id"],
        json!(fd)
    );
    assert_eq!(s.get_json("/v1/cells/c1").await["state"], "destroyed");

    let dir = s.shutdown().await;
    let s = TestServer::start_in(dir).await;
    let after = capture(&s, &paths).await;
    assert_same(&before, &after);

    // The sequence continues after the restart, and dedupe ids survived it.
    assert_eq!(s.ingest(std::slice::from_ref(&c1_started)).await, [17]);
    assert_eq!(s.ingest_one(&started("c5", "s5", None, &ts(30))).await, 22);
    let before = capture(&s, &paths).await;
    let dir = s.shutdown().await;
    let s = TestServer::start_in(dir).await;
    assert_same(&before, &capture(&s, &paths).await);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_log_restarts_empty() {
    let s = TestServer::start().await;
    let dir = s.shutdown().await;
    let s = TestServer::start_in(dir).await;
    assert_eq!(
        s.get("/v1/formations").await.ok_json_text(),
        "{\"formations\":[],\"cursor\":0}"
    );
    assert_eq!(s.get("/v1/cells").await.ok_json_text(), "[]");
    assert_eq!(s.ingest_one(&started("first", "s", None, &ts(1))).await, 1);
    s.shutdown().await;
}

/// The exact `/v1/events` body for these (seq, payload) pairs.
fn frames(items: &[(u64, Vec<u8>)], cursor: u64) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|(seq, p)| format!("{{\"seq\":{seq},\"event\":{}}}", String::from_utf8_lossy(p)))
        .collect();
    format!("{{\"events\":[{}],\"cursor\":{cursor}}}", parts.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_an_acknowledgement_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();

    // Round 1: one batch, SIGKILL the moment the 202 arrives.
    let srv = BinServer::spawn(dir.path()).await;
    let f = new_fid();
    let mut batch1 = vec![
        formation_created(&f, "crash", &ts(1), document("crash")),
        formation_phase(&f, "crash", "running", &ts(2)),
    ];
    for i in 0..20 {
        let cell = format!("k{i:02}");
        batch1.push(cloud_event(
            STARTED,
            "sup",
            Some(&ts(3)),
            json!({"cellId": cell, "specId": "s", "formationId": f}),
        ));
        if i % 2 == 0 {
            batch1.push(destroyed(&cell, "s", "succeeded", &ts(4)));
        }
    }
    let n1 = batch1.len() as u64;
    let r = srv
        .try_post_events(BATCH, serde_json::to_vec(&batch1).unwrap())
        .await
        .expect("POST before the kill");
    r.expect(202);
    srv.kill9();
    let acked1 = seqs_of(&r);
    assert_eq!(acked1, (1..=n1).collect::<Vec<u64>>());

    let srv = BinServer::spawn(dir.path()).await;
    let items: Vec<(u64, Vec<u8>)> = batch1
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, serde_json::to_vec(e).unwrap()))
        .collect();
    assert_eq!(
        srv.get("/v1/events?since=0&limit=1000")
            .await
            .ok_json_text(),
        frames(&items, n1),
        "every acknowledged event is in the log, once, byte for byte; output:\n{}",
        srv.output()
    );
    let formation = srv.get_json(&format!("/v1/formations/{f}")).await;
    assert_eq!(formation["status"], "RUNNING");
    let cells = srv.get_json(&format!("/v1/cells?formation={f}")).await;
    assert_eq!(cells.as_array().unwrap().len(), 20);
    for c in cells.as_array().unwrap() {
        let i: usize = c["id"].as_str().unwrap()[1..].parse().unwrap();
        let want = if i % 2 == 0 { "destroyed" } else { "running" };
        assert_eq!(c["state"], want, "{c}");
    }

    // Round 2: concurrent writers, SIGKILL while requests are in flight.
    let acked: Arc<Mutex<Vec<(u64, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let unacked: Arc<Mutex<Vec<Vec<Value>>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for t in 0..4 {
        let client = srv.client.clone();
        let acked = acked.clone();
        let unacked = unacked.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..200 {
                let batch: Vec<Value> = (0..5)
                    .map(|k| started(&format!("w{t}-{round}-{k}"), "s", None, &ts(5)))
                    .collect();
                match client
                    .try_post_events(BATCH, serde_json::to_vec(&batch).unwrap())
                    .await
                {
                    Ok(r) if r.status == 202 => {
                        let seqs = seqs_of(&r);
                        acked.lock().unwrap().extend(seqs.into_iter().zip(batch));
                    }
                    Ok(r) => panic!("unexpected answer {}: {}", r.status, r.text()),
                    Err(_) => {
                        unacked.lock().unwrap().push(batch);
                        return;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        acked.lock().unwrap().len() >= 100,
        "writers made no progress"
    );
    srv.kill9();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("writer stopped")
            .expect("writer task");
    }
    let acked = acked.lock().unwrap().clone();
    let unacked = unacked.lock().unwrap().clone();

    let srv = BinServer::spawn(dir.path()).await;
    let log = srv.all_events().await;
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<u64>>(),
        "seqs are gap-free and unique"
    );
    let ids: BTreeSet<&str> = log.iter().map(|(_, e)| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), log.len(), "no event id is stored twice");
    for (seq, ev) in &acked {
        assert_eq!(
            &log[*seq as usize - 1].1,
            ev,
            "acknowledged seq {seq} lost or changed"
        );
        let cell = ev["data"]["cellId"].as_str().unwrap();
        assert_eq!(
            srv.get_json(&format!("/v1/cells/{cell}")).await["state"],
            "running"
        );
    }
    let attempted: BTreeSet<String> = acked
        .iter()
        .map(|(_, e)| e["id"].as_str().unwrap().to_owned())
        .chain(
            unacked
                .iter()
                .flatten()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        )
        .chain(batch1.iter().map(|e| e["id"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        ids.iter().all(|id| attempted.contains(*id)),
        "the log holds events nobody sent"
    );

    // Retrying the unacknowledged batches with the same ids: whatever was stored keeps its seq
    // (dedupe survived the crash); afterwards every sent event is stored exactly once.
    let stored: BTreeMap<String, u64> = log
        .iter()
        .map(|(s, e)| (e["id"].as_str().unwrap().to_owned(), *s))
        .collect();
    for batch in &unacked {
        let got = srv.ingest(batch).await;
        for (e, seq) in batch.iter().zip(got) {
            if let Some(&old) = stored.get(e["id"].as_str().unwrap()) {
                assert_eq!(seq, old, "a retried id got a new seq");
            } else {
                assert!(seq > log.len() as u64);
            }
        }
    }
    let log = srv.all_events().await;
    let ids: BTreeSet<&str> = log.iter().map(|(_, e)| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), log.len(), "no event id is stored twice");
    assert_eq!(ids.len(), attempted.len(), "every sent event is stored");
    srv.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_the_replay_has_caught_up() {
    let s = TestServer::start().await;
    let f = new_fid();
    s.ingest_one(&formation_created(&f, "replay", &ts(1), document("replay")))
        .await;
    for b in 0..5 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| started(&format!("r{b}-{i:04}"), "s", None, &ts(2)))
            .collect();
        s.ingest(&batch).await;
    }
    let last = s
        .ingest_one(&formation_phase(&f, "replay", "completed", &ts(3)))
        .await;
    assert_eq!(last, 5002);
    let formations = s.get("/v1/formations").await.ok_json_text();
    let dir = s.shutdown().await;

    let s = TestServer::start_in_unready(dir).await;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "not ready in time");
        let r = s.get_as("/readyz", Auth::None).await;
        if r.status == 200 {
            // Ready: everything in the log is applied and visible.
            let v = r.json();
            assert_eq!(v["status"], "ready");
            assert_eq!(v["cursor"], last);
            assert_eq!(s.get("/v1/formations").await.ok_json_text(), formations);
            assert_eq!(
                s.get_json("/v1/cells").await.as_array().unwrap().len(),
                5000
            );
            break;
        }
        // Not ready: a 503 problem that says why.
        assert_eq!(r.status, 503, "{}", r.text());
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty());
        assert_problem(
            &r,
            (
                503,
                "/problems/service-unavailable",
                "Event store unavailable",
            ),
            &detail,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.shutdown().await;
}

/// Shutdown returns only once nothing holds the log any more (the embedded log's file lock goes
/// with the last handle), however early in the pipeline's life it comes: right after start the
/// tailer, the log-end sampler and the ingest thread are all busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_every_handle_on_the_log() {
    use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
    use cellos_server::log::EventLog;

    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..20 {
        let log: Arc<dyn EventLog> = Arc::new(
            EmbeddedLog::open(dir.path(), Retention::default(), system_clock()).expect("open"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
        let storage = cellos_server::server::Storage {
            log: log.clone(),
            checkpoints: None,
        };
        let running = cellos_server::start_with(config, storage, listener)
            .await
            .expect("start");
        if round % 2 == 1 {
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(30), running.shutdown())
            .await
            .expect("shutdown timed out");
        assert_eq!(
            Arc::strong_count(&log),
            1,
            "round {round}: the log is still held"
        );
    }
}
