//! Boot: a server starting on a long log never answers from a half-replayed projection (on either
//! log), WebSocket subscribers opened meanwhile get no gap and no replayed history as "live",
//! writes sent right after a start are applied rather than refused, and `cellctl get` right
//! after a restart shows the cells.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use cellos_server::config::LogBackend;
use cellos_server::event::subject::ingest_subject;
use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::jetstream::{JetStreamLog, JetStreamOptions, STREAM_NAME};
use cellos_server::log::{Append, EventLog};
use cellos_server::Config;
use common::ws::{connect, frames, next, Got};
use common::*;
use nats::{settings, Nats};
use serde_json::Value;
use tempfile::TempDir;

/// Events in the log the server boots on.
const EVENTS: usize = 200_000;
/// Events of one cell: started, commands, destroyed.
const PER_CELL: usize = 100;
/// Formations created along the way, evenly spread.
const FORMATIONS: usize = 10;
/// Upper bound on one boot replay of [`EVENTS`] in a debug build.
const BOOT_WAIT: Duration = Duration::from_secs(240);
/// Where the WebSocket opened during boot resumes: enough history to be read from the log.
const RESUME_BACK: u64 = 25_000;

/// A log's worth of supervisor history, in log order (seq = index + 1).
struct History {
    appends: Vec<Append>,
    /// Seqs of the formation `created` events.
    formation_seqs: Vec<u64>,
    /// The cell whose events end the log.
    last_cell: String,
    /// Id and name of the newest formation.
    last_formation: (String, String),
}

fn append_of(ev: &Value, formation: Option<&str>, cell: Option<&str>) -> Append {
    Append {
        subject: ingest_subject(formation, cell, ev["type"].as_str().unwrap()),
        payload: serde_json::to_vec(ev).unwrap().into(),
        dedupe_id: ev["id"].as_str().unwrap().to_owned(),
    }
}

/// `events` events (a multiple of [`PER_CELL`]): cells that start, run commands and end, one
/// after another, and a formation created before every tenth of them, the last one among the
/// last cell's events.
fn history(events: usize) -> History {
    let cells = events / PER_CELL;
    let every = cells / FORMATIONS;
    let mut h = History {
        appends: Vec::with_capacity(events + FORMATIONS),
        formation_seqs: Vec::new(),
        last_cell: String::new(),
        last_formation: (String::new(), String::new()),
    };
    for c in 0..cells {
        let cell = format!("boot-cell-{c:06}");
        let t = ts((c % 3600) as u32);
        h.appends.push(append_of(
            &started(&cell, "spec", None, &t),
            None,
            Some(&cell),
        ));
        for k in 0..PER_CELL - 2 {
            let ev = command_completed(&cell, "spec", (k % 3) as i64, &t);
            h.appends.push(append_of(&ev, None, Some(&cell)));
        }
        if c % every == every - 1 {
            let fid = new_fid();
            let name = format!("boot-formation-{}", c / every);
            let ev = formation_created(&fid, &name, &t, document(&name));
            h.appends.push(append_of(&ev, Some(&fid), None));
            h.formation_seqs.push(h.appends.len() as u64);
            h.last_formation = (fid, name);
        }
        let ev = destroyed(&cell, "spec", "succeeded", &t);
        h.appends.push(append_of(&ev, None, Some(&cell)));
        h.last_cell = cell;
    }
    h
}

impl History {
    /// The projection reads polled during boot.
    fn paths(&self) -> Vec<String> {
        let (fid, name) = &self.last_formation;
        let cell = &self.last_cell;
        let end = self.appends.len() as u64;
        vec![
            "/v1/formations".into(),
            format!("/v1/formations/by-name/{name}"),
            format!("/v1/formations/{fid}"),
            format!("/v1/cells/{cell}"),
            "/v1/cells?limit=20".into(),
            format!("/v1/cells/{cell}/events?tail=3"),
            format!("/v1/events?since={}", end - 5),
            format!("/v1/events?since=0&limit=3&formation={name}"),
        ]
    }
}

/// Writes the history into an embedded log in `dir`, closed again when this returns.
async fn seed_embedded(dir: &std::path::Path, h: &History) {
    let path = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || {
        EmbeddedLog::open(&path, Retention::default(), system_clock()).expect("open log")
    })
    .await
    .unwrap();
    for chunk in h.appends.chunks(1000) {
        log.append(chunk.to_vec()).await.expect("append");
    }
    tokio::task::spawn_blocking(move || drop(log))
        .await
        .unwrap();
}

/// Publishes the history into the stream (created by a server that ran before), in order.
async fn seed_jetstream(nats: &Nats, h: &History) {
    let js = nats.jetstream().await;
    for chunk in h.appends.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for a in chunk {
            let msg = PublishMessage::build()
                .payload(a.payload.clone())
                .message_id(&a.dedupe_id);
            acks.push(
                js.send_publish(a.subject.clone(), msg)
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            tokio::time::timeout(Duration::from_secs(30), ack)
                .await
                .expect("ack in time")
                .expect("ack");
        }
    }
}

/// A server in this process; `tweak` adjusts the test configuration.
struct Server {
    running: Option<cellos_server::Running>,
    client: Client,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Server {
    /// Returns as soon as the listener is bound: the boot replay has only begun.
    async fn start(dir: &TempDir, log: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::for_tests(TOKEN, dir.path().to_path_buf());
        if let Some(url) = log {
            config.log = LogBackend::jetstream(url).expect("a NATS URL");
        }
        tweak(&mut config);
        let (running, client) = start_config(config).await;
        Server {
            running: Some(running),
            client,
        }
    }

    async fn shutdown(mut self) {
        let running = self.running.take().unwrap();
        stop(running).await;
    }
}

/// Asserts the 503 of a read refused during the boot replay.
fn assert_replaying(path: &str, r: &Resp) {
    assert_eq!(
        r.content_type().as_deref(),
        Some("application/problem+json")
    );
    let v = r.json();
    assert_eq!(v["type"], "/problems/service-unavailable", "{path}: {v}");
    assert_eq!(v["status"], 503);
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the projection is replaying the event log after a start"),
        "{path}: {detail}"
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{path}");
}

/// Polls every path from the server's first accepted connection until `/readyz` is 200, then
/// checks that each answer was a replay 503 or exactly what the replayed server answers. Returns
/// how many 503s were seen.
async fn poll_through_boot(s: &Server, paths: &[String]) -> usize {
    let deadline = Instant::now() + BOOT_WAIT;
    let mut seen: Vec<(usize, Resp)> = Vec::new();
    loop {
        for (i, p) in paths.iter().enumerate() {
            seen.push((i, s.get(p).await));
        }
        if s.get_as("/readyz", Auth::None).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "boot replay took over {BOOT_WAIT:?}"
        );
    }
    let mut finals = Vec::new();
    for p in paths {
        finals.push(s.get(p).await.ok_json_text());
    }
    let mut unavailable = 0;
    for (i, r) in &seen {
        match r.status {
            503 => {
                assert_replaying(&paths[*i], r);
                unavailable += 1;
            }
            200 => assert_eq!(
                r.text(),
                finals[*i],
                "{} answered from a partial projection",
                paths[*i]
            ),
            other => panic!("{} answered {other} during boot: {}", paths[*i], r.text()),
        }
    }
    unavailable
}

/// The whole scenario on one log: boot on the history, poll, WebSockets opened during boot.
async fn boot_on(dir: &TempDir, nats: Option<&Nats>, h: &History) {
    let url = nats.map(Nats::url);
    let s = Server::start(dir, url.as_deref(), |c| c.replay_read_wait = Duration::ZERO).await;
    let end = h.appends.len() as u64;
    // Opened during the replay: history from the log (no gap) and a live-only socket.
    let since = end - RESUME_BACK;
    let mut resumed = connect(
        s.addr,
        &format!("?since={since}&subject=cellos.events.formations.%3E"),
    )
    .await;
    let mut live = connect(s.addr, "").await;

    let unavailable = poll_through_boot(&s, &h.paths()).await;
    assert!(unavailable > 0, "no read was refused: the test saw no boot");

    let metrics = s.get("/metrics").await.expect(200).text();
    assert!(metrics.contains("cellos_boot_replaying 0"), "{metrics}");
    assert!(
        metrics.contains(&format!("cellos_boot_replay_target_seq {end}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("cellos_boot_replay_events {end}")),
        "{metrics}"
    );

    let wanted: Vec<u64> = h
        .formation_seqs
        .iter()
        .copied()
        .filter(|&q| q > since)
        .collect();
    assert!(!wanted.is_empty());
    let got: Vec<u64> = frames(&mut resumed, wanted.len())
        .await
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(got, wanted, "the resumed socket's formation events");

    // The live-only socket opened mid-replay starts after the log's end at that moment: the
    // first frame it gets is the first event written after the boot.
    let seq = s
        .ingest_one(&started("after-boot", "spec", None, &ts(1)))
        .await;
    assert_eq!(seq, end + 1);
    match next(&mut live).await {
        Got::Frame(first, ev, _) => {
            assert_eq!(first, seq, "a live-only socket got replayed history: {ev}")
        }
        other => panic!("{other:?}"),
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_boot_replay_are_503_or_final_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let h = history(EVENTS);
    seed_embedded(dir.path(), &h).await;
    boot_on(&dir, None, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_boot_replay_are_503_or_final_on_jetstream() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = history(EVENTS);
    // The stream as the server creates it, then the history a fleet's supervisors published.
    let first = Server::start(&dir, Some(&nats.url()), |_| {}).await;
    first.wait_ready().await;
    first.shutdown().await;
    seed_jetstream(&nats, &h).await;
    boot_on(&dir, Some(&nats), &h).await;
}

/// Deletes the stream, so that the next server creates it; a missing stream is fine.
async fn delete_stream(nats: &Nats) {
    let _ = nats.jetstream().await.delete_stream(STREAM_NAME).await;
}

/// Fresh starts, each followed at once (the moment the listener is bound) by a write: while the
/// client connects and the stream is looked up or created, the write waits instead of 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_a_jetstream_start_is_applied() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        if i % 2 == 0 {
            delete_stream(&nats).await;
        }
        let s = Server::start(&dir, Some(&nats.url()), |_| {}).await;
        let r = s
            .post_formation(&admission_request(&format!("fresh-{i}")))
            .await;
        assert_eq!(r.status, 201, "start {i}: {}", r.text());
        s.shutdown().await;
    }
    for i in 0..50 {
        if i % 2 == 0 {
            delete_stream(&nats).await;
        }
        let s = Server::start(&dir, Some(&nats.url()), |_| {}).await;
        let ev = started(&format!("fresh-{i}"), "spec", None, &ts(1));
        let r = s
            .post_events(STRUCTURED, serde_json::to_vec(&ev).unwrap())
            .await;
        assert_eq!(r.status, 202, "start {i}: {}", r.text());
        s.shutdown().await;
    }
}

/// The log on its own: an append issued the moment the log is opened (connection and stream
/// setup still under way, the stream sometimes still to be created) waits for the setup and is
/// stored, rather than failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_append_right_after_connecting_waits_for_the_stream() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    for i in 0..20u64 {
        if i % 2 == 0 {
            delete_stream(&nats).await;
        }
        let log = JetStreamLog::connect(&settings(&nats.url()), JetStreamOptions::default())
            .await
            .expect("connect");
        let ev = started(&format!("early-{i}"), "spec", None, &ts(1));
        let seqs = log
            .append(vec![append_of(&ev, None, Some("early"))])
            .await
            .unwrap_or_else(|e| panic!("append {i} right after connecting: {e}"));
        assert_eq!(seqs.len(), 1);
    }
}

/// A write that arrives during the boot replay waits for it within its write timeout: past that
/// it answers the replay 503 with nothing appended; inside it, it is simply answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_boot_wait_for_the_replay_within_their_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let h = history(EVENTS);
    seed_embedded(dir.path(), &h).await;
    let s = Server::start(&dir, None, |c| {
        c.write_timeout = Duration::from_millis(100);
        c.replay_read_wait = Duration::ZERO;
    })
    .await;
    let ev = started("during-boot", "spec", None, &ts(1));
    let r = s
        .post_events(STRUCTURED, serde_json::to_vec(&ev).unwrap())
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_replaying("POST /v1/events", &r);
    s.wait_ready_within(BOOT_WAIT).await;
    // Refused before it was appended: the same event now gets the next seq.
    assert_eq!(s.ingest_one(&ev).await, h.appends.len() as u64 + 1);
    s.shutdown().await;

    // A write that arrives during a replay it can outwait is simply answered.
    let s = Server::start(&dir, None, |_| {}).await;
    let r = s.post_formation(&admission_request("after-restart")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    s.shutdown().await;
}

/// `cellctl get cells` the moment a restarted server listens: the read waits for the replay and
/// shows every cell (cellctl does not retry: a 503 or a partial list fails this). Needs `cellctl` (crate `cellos-ctl` 0.5.6) on PATH; CI installs it and
/// sets `CELLOS_REQUIRE_CELLCTL=1`, which turns its absence into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellctl_get_right_after_a_restart_shows_the_cells() {
    let Some(cellctl) = find_cellctl() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = history(20_000);
    seed_embedded(dir.path(), &h).await;
    // A debug build sharing two cores with the other tests may take seconds to replay: the
    // wait is set well above that, so only a server that answers before the replay can fail.
    let s = BinServer::spawn_unready(dir.path(), &[("CELLOS_REPLAY_READ_WAIT_MS", "30000")]).await;
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let server = format!("http://{}", s.addr);
        move || {
            std::process::Command::new(cellctl)
                .args(["get", "cells", "-o", "name"])
                .env("HOME", home.path())
                .env("CELLCTL_SERVER", server)
                .env("CELLCTL_TOKEN", TOKEN)
                .output()
                .expect("running cellctl")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cellctl failed: {}\n{stdout}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        s.output()
    );
    let shown: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let cells = h.appends.len() / PER_CELL;
    assert_eq!(shown.len(), cells, "{stdout}");
    assert!(stdout.contains(&h.last_cell), "{stdout}");
}

/// `cellctl` on PATH, or `None` (after saying so) unless `CELLOS_REQUIRE_CELLCTL=1`.
fn find_cellctl() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("cellctl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CELLOS_REQUIRE_CELLCTL").as_deref() == Ok("1") {
            panic!("CELLOS_REQUIRE_CELLCTL=1 but cellctl is not on PATH");
        }
        eprintln!(
            "SKIPPED: cellctl is not installed (cargo install cellos-ctl --version 0.5.6); \
             set CELLOS_REQUIRE_CELLCTL=1 to make this a failure"
        );
    }
    found
}
