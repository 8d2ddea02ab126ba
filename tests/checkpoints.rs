//! Checkpoints of the projection on the embedded log, over real sockets: state outlives the log's
//! retention; a boot from a checkpoint plus the log after it serves byte for byte what a full
//! replay serves (for random histories and positions); damaged, foreign, future and ahead-of-log
//! checkpoints are skipped; events retention took before any checkpoint are reported. A crash
//! mid-write: `checkpoint_crash.rs`; JetStream replicas: `checkpoints_jetstream.rs`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cellos_server::checkpoint::dir::DirStore;
use cellos_server::checkpoint::{CheckpointStore, Schedule};
use cellos_server::event::subject::ingest_subject;
use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::{Append, EventLog};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> cellos_server::Config {
    cellos_server::Config::for_tests(TOKEN, dir.to_path_buf())
}

async fn wait_for_metric(c: &Client, name: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c.metric(name).await.unwrap_or(0.0);
        if v >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {v} < {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn boot(config: cellos_server::Config) -> (cellos_server::Running, Client) {
    let (running, client) = start_config(config).await;
    client.wait_ready().await;
    (running, client)
}

async fn post_formation(c: &Client, name: &str) -> String {
    let r = c.post_formation(&admission_request(name)).await;
    r.expect(201);
    r.json()["id"].as_str().expect("formation id").to_owned()
}

fn started_in(cell: &str, formation: &str, secs: u32) -> Value {
    let mut ev = started(cell, "spec-a", Some("run-1"), &ts(secs));
    ev["data"]["correlation"] = json!({ "formationId": formation });
    ev
}

/// The issue's reproduction: with the log keeping 10 events, a formation and its 30 cells are
/// served after a restart exactly as before it, and the log really did drop older events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_outlives_log_retention_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retention_max_events = 10;
    // A checkpoint at the writer's next look whenever anything was applied.
    c.checkpoints = Schedule {
        every_events: 1,
        every: Duration::ZERO,
    };
    let (running, client) = boot(c.clone()).await;
    let fid = post_formation(&client, "long-lived").await;
    for i in 0..30 {
        client
            .ingest_one(&started_in(&format!("cell-{i:02}"), &fid, i))
            .await;
    }
    // A checkpoint holds all 31 events; the next append lets retention drop the older ones.
    wait_for_metric(&client, "cellos_checkpoint_last_seq", 31.0).await;
    client
        .ingest_one(&cloud_event(
            "dev.cellos.events.other",
            "x",
            None,
            json!({}),
        ))
        .await;
    let before = client.every_get().await;
    let cells = client.get_json("/v1/cells").await;
    assert_eq!(cells.as_array().unwrap().len(), 30);
    stop(running).await;

    let (running, client) = boot(c).await;
    assert!(client.metric("cellos_checkpoint_boot_seq").await.unwrap() >= 31.0);
    let (events, _) = client.events_page("?since=0&limit=1000").await;
    assert!(
        events.first().unwrap().0 > 1,
        "retention removed the oldest events"
    );
    client
        .get("/v1/formations/by-name/long-lived")
        .await
        .expect(200);
    assert_eq!(client.every_get().await, before);
    stop(running).await;
}

/// Without a checkpoint holding them, events retention took are missing from the projection:
/// the boot says so in `/readyz` and a metric (serving goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_to_retention_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = no_checkpoints(dir.path());
    c.retention_max_events = 5;
    let (running, client) = boot(c).await;
    for i in 0..20 {
        client
            .ingest_one(&started(&format!("c{i}"), "s", None, &ts(i)))
            .await;
    }
    stop(running).await;
    let (running, client) = boot(config(dir.path())).await;
    assert_eq!(client.metric("cellos_boot_lost_events").await, Some(15.0));
    let ready = client.get("/readyz").await;
    ready.expect(200);
    let warnings = ready.json()["warnings"].clone();
    let warning = warnings[0].as_str().expect("a warning");
    assert!(
        warning.starts_with("events 1 to 15 (15) were removed by the log's retention"),
        "{warning}"
    );
    stop(running).await;
}

// ------------------------------------------------------------------------------------------------
// Random histories: checkpoint + tail == full replay, over HTTP

#[derive(Clone, Debug)]
enum Op {
    Created {
        f: u8,
        name: u8,
    },
    Phase {
        f: u8,
        phase: u8,
    },
    Started {
        cell: u8,
        spec: u8,
        run: Option<u8>,
        formation: Option<u8>,
    },
    Completed {
        cell: u8,
        exit: i64,
    },
    Destroyed {
        cell: u8,
        outcome: u8,
    },
    Other {
        cell: Option<u8>,
    },
}

fn fid(f: u8) -> String {
    format!("6f9619ff-8b86-d011-b42d-00cf4fc964{f:02x}")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..4, 0u8..3).prop_map(|(f, name)| Op::Created { f, name }),
        1 => (0u8..4, 0u8..6).prop_map(|(f, phase)| Op::Phase { f, phase }),
        4 => (0u8..8, 0u8..3, prop::option::of(0u8..3), prop::option::of(0u8..4))
            .prop_map(|(cell, spec, run, formation)| Op::Started { cell, spec, run, formation }),
        2 => (0u8..8, -2i64..300).prop_map(|(cell, exit)| Op::Completed { cell, exit }),
        1 => (0u8..8, 0u8..2).prop_map(|(cell, outcome)| Op::Destroyed { cell, outcome }),
        1 => prop::option::of(0u8..8).prop_map(|cell| Op::Other { cell }),
    ]
}

impl Op {
    fn event(&self, i: u32) -> Value {
        let t = ts(i % 3600);
        match *self {
            Op::Created { f, name } => formation_created(
                &fid(f),
                &format!("n{name}"),
                &t,
                document(&format!("n{name}")),
            ),
            Op::Phase { f, phase } => {
                let phase = [
                    "launching",
                    "running",
                    "degraded",
                    "completed",
                    "failed",
                    "cancelled",
                ][phase as usize];
                formation_phase(&fid(f), "", phase, &t)
            }
            Op::Started {
                cell,
                spec,
                run,
                formation,
            } => {
                let run = run.map(|r| format!("r{r}"));
                let mut ev = started(&format!("c{cell}"), &format!("s{spec}"), run.as_deref(), &t);
                if let Some(f) = formation {
                    ev["data"]["correlation"] = json!({ "formationId": fid(f) });
                }
                ev
            }
            Op::Completed { cell, exit } => command_completed(&format!("c{cell}"), "s0", exit, &t),
            Op::Destroyed { cell, outcome } => destroyed(
                &format!("c{cell}"),
                "s0",
                ["succeeded", "failed"][outcome as usize],
                &t,
            ),
            Op::Other { cell } => {
                let data = cell.map_or(json!({}), |c| json!({ "cellId": format!("c{c}") }));
                cloud_event(
                    "dev.cellos.events.cell.dns.v1.resolved",
                    "sup",
                    Some(&t),
                    data,
                )
            }
        }
    }
}

/// What the server would append for `ev`.
fn append(ev: &Value) -> Append {
    let ty = ev["type"].as_str().unwrap();
    let data = &ev["data"];
    let formation = data["formationId"]
        .as_str()
        .or(data["correlation"]["formationId"].as_str());
    Append {
        subject: ingest_subject(formation, data["cellId"].as_str(), ty),
        payload: serde_json::to_vec(ev).unwrap().into(),
        dedupe_id: ev["id"].as_str().unwrap().to_owned(),
    }
}

async fn append_to(dir: &Path, events: &[Append]) {
    let log = EmbeddedLog::open(dir, Retention::default(), system_clock()).expect("open the log");
    if !events.is_empty() {
        log.append(events.to_vec()).await.expect("append");
    }
    let _ = tokio::task::spawn_blocking(move || drop(log)).await;
}

/// Every projection read, plus the event chains of cells that may have no record.
async fn reads(c: &Client) -> Vec<(String, u16, String)> {
    let mut all = c.every_get().await;
    for cell in 0..8 {
        let r = c.get(&format!("/v1/cells/c{cell}/events")).await;
        all.push((format!("c{cell}/events"), r.status, r.text()));
    }
    all
}

async fn checkpoint_then_tail_case(ops: Vec<Op>, cut: usize) {
    let events: Vec<Append> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| append(&op.event(i as u32)))
        .collect();
    let (full, resumed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    append_to(full.path(), &events).await;

    // The first `cut` events, projected by a server that writes its checkpoint as it stops;
    // then the rest of the history appended behind its back.
    append_to(resumed.path(), &events[..cut]).await;
    let (running, _) = boot(config(resumed.path())).await;
    stop(running).await;
    append_to(resumed.path(), &events[cut..]).await;

    let (running, from_checkpoint) = boot(config(resumed.path())).await;
    assert_eq!(
        from_checkpoint.metric("cellos_checkpoint_boot_seq").await,
        Some(cut as f64),
        "booted from the checkpoint at {cut}"
    );
    let got = reads(&from_checkpoint).await;
    stop(running).await;

    let (running, replayed) = boot(no_checkpoints(full.path())).await;
    assert_eq!(
        replayed.metric("cellos_checkpoint_boot_seq").await,
        Some(0.0)
    );
    let want = reads(&replayed).await;
    stop(running).await;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "checkpoint at {cut} of {}", events.len());
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn checkpoint_plus_tail_serves_what_a_full_replay_serves() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        max_shrink_iters: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = (
        prop::collection::vec(op(), 1..60),
        any::<prop::sample::Index>(),
    );
    runner
        .run(&case, |(ops, at)| {
            let cut = 1 + at.index(ops.len());
            rt.block_on(checkpoint_then_tail_case(ops, cut));
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------------------------------------------
// Checkpoints that must not be trusted

async fn checkpoint_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let store = DirStore::open(dir).unwrap();
    let listed = store.list().await.unwrap();
    listed
        .into_iter()
        .map(|s| (s.seq, store.dir().join(format!("{}.ckpt", s.name))))
        .collect()
}

/// Posts `n` cell events and stops: a checkpoint at the last seq.
async fn history_with_checkpoint(dir: &Path, first: u32, n: u32) {
    let (running, client) = boot(config(dir)).await;
    for i in first..first + n {
        client
            .ingest_one(&started(
                &format!("cell-{i}"),
                "s",
                Some("r"),
                &ts(i % 3600),
            ))
            .await;
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_foreign_and_future_checkpoints_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    history_with_checkpoint(dir.path(), 0, 10).await;
    history_with_checkpoint(dir.path(), 10, 10).await;
    let files = checkpoint_files(dir.path()).await;
    assert_eq!(files.iter().map(|f| f.0).collect::<Vec<_>>(), vec![20, 10]);
    let (running, client) = boot(no_checkpoints(dir.path())).await;
    let want = client.every_get().await;
    stop(running).await;
    let newest = files[0].1.clone();
    let good = std::fs::read(&newest).unwrap();

    let other = tempfile::tempdir().unwrap();
    history_with_checkpoint(other.path(), 0, 20).await;
    let foreign = std::fs::read(&checkpoint_files(other.path()).await[0].1).unwrap();

    let mut future = good.clone();
    future[8] = 2; // the format version, right after the 8-byte magic
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let damaged: [(&str, Vec<u8>); 5] = [
        ("checksum", flipped),
        ("malformed", good[..good.len() / 3].to_vec()),
        ("malformed", b"not a checkpoint at all".to_vec()),
        ("unknown_version", future),
        ("other_log", foreign),
    ];
    for (reason, bytes) in damaged {
        std::fs::write(&newest, &bytes).unwrap();
        let (running, client) = boot(config(dir.path())).await;
        assert_eq!(
            client.metric("cellos_checkpoint_boot_seq").await,
            Some(10.0),
            "{reason}: the older checkpoint is used"
        );
        let skipped = format!("cellos_checkpoint_skipped_total{{reason=\"{reason}\"}}");
        assert_eq!(client.metric(&skipped).await, Some(1.0), "{reason}");
        assert_eq!(client.every_get().await, want, "{reason}");
        // Stopping writes a good checkpoint at 20 again: damage it anew for the next round.
        stop(running).await;
    }

    // A checkpoint ahead of the log's end (the log restored from an older copy) is skipped
    // without being read, and so is a checkpoint whose name and header disagree.
    std::fs::write(&newest, &good).unwrap();
    std::fs::rename(&newest, with_seq(&newest, 15)).unwrap();
    std::fs::write(with_seq(&newest, 99), &good).unwrap();
    let mut c = config(dir.path());
    c.shutdown_grace = Duration::ZERO; // no checkpoint at the stop
    let (running, client) = boot(c).await;
    assert_eq!(
        client.metric("cellos_checkpoint_boot_seq").await,
        Some(10.0)
    );
    for reason in ["ahead_of_log", "inconsistent"] {
        let skipped = format!("cellos_checkpoint_skipped_total{{reason=\"{reason}\"}}");
        assert_eq!(client.metric(&skipped).await, Some(1.0), "{reason}");
    }
    assert_eq!(client.every_get().await, want);
    stop(running).await;
}

/// `path` (a checkpoint file) renamed to another seq of the same log.
fn with_seq(path: &Path, seq: u64) -> std::path::PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    let tag = &name["checkpoint-".len() + 21..];
    path.with_file_name(format!("checkpoint-{seq:020}-{tag}"))
}

/// Checkpoints named for another log (this directory's log file was replaced) are passed over
/// without being read, even newer ones, and go once this log has a checkpoint of its own; they
/// never push this log's own out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_another_log_never_displace_this_logs() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    history_with_checkpoint(other.path(), 0, 30).await;
    let foreign = checkpoint_files(other.path()).await;
    let foreign_name = foreign[0].1.file_name().unwrap().to_owned();
    history_with_checkpoint(dir.path(), 0, 5).await;
    let ckpts = dir.path().join("checkpoints");
    std::fs::copy(&foreign[0].1, ckpts.join(&foreign_name)).unwrap();
    let (running, client) = boot(config(dir.path())).await;
    assert_eq!(client.metric("cellos_checkpoint_boot_seq").await, Some(5.0));
    let skipped = "cellos_checkpoint_skipped_total{reason=\"other_log\"}";
    assert_eq!(client.metric(skipped).await, Some(1.0));
    client
        .ingest_one(&started("one-more", "s", None, &ts(1)))
        .await;
    stop(running).await;
    let left: Vec<u64> = checkpoint_files(dir.path())
        .await
        .iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        left,
        vec![6, 5],
        "the other log's checkpoint (seq 30) is gone"
    );
    assert!(!ckpts.join(&foreign_name).exists());
}

/// Keeps the newest three checkpoints, written every N events off the ingest thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_follow_the_schedule_and_the_newest_three_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoints = Schedule {
        every_events: 10,
        every: Duration::ZERO,
    };
    let (running, client) = boot(c).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| started(&format!("c{i}"), "s", None, &ts(i)))
        .collect();
    for round in 1..=5u32 {
        let body = serde_json::to_vec(
            &batch
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e["id"] = json!(fresh_id());
                    e
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
        client.ingest_raw(BATCH, body).await;
        wait_for_metric(&client, "cellos_checkpoint_last_seq", f64::from(round * 10)).await;
    }
    assert_eq!(
        client.metric("cellos_checkpoint_writes_total").await,
        Some(5.0)
    );
    assert!(client.metric("cellos_checkpoint_last_bytes").await.unwrap() > 0.0);
    assert_eq!(
        client.metric("cellos_checkpoint_failures_total").await,
        Some(0.0)
    );
    let kept: Vec<u64> = checkpoint_files(dir.path())
        .await
        .iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(kept, vec![50, 40, 30]);
    stop(running).await;
}
