//! A crash while a checkpoint is written: the real binary, killed with SIGKILL the moment a
//! checkpoint file is half written, boots next from the newest whole checkpoint and serves what a
//! full replay of the same log serves, every acknowledged event included.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

async fn boot(config: cellos_server::Config) -> (cellos_server::Running, Client) {
    let (running, client) = start_config(config).await;
    client.wait_ready().await;
    (running, client)
}

fn config(dir: &Path) -> cellos_server::Config {
    cellos_server::Config::for_tests(TOKEN, dir.to_path_buf())
}

/// What a crash test compares: lists and pages, not every cell (there are thousands).
async fn summary(c: &Client) -> Vec<(String, u16, String)> {
    let mut out = Vec::new();
    for path in [
        "/v1/cells",
        "/v1/formations",
        "/v1/events?since=0&limit=1000",
        "/v1/events?since=15000&limit=1000",
        "/v1/cells/cell-7/events",
    ] {
        let r = c.get(path).await;
        out.push((path.to_owned(), r.status, r.text()));
    }
    out
}

fn partial_exists(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("checkpoints")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    })
}

/// The binary is killed (SIGKILL) while it writes a checkpoint file, twice; each next boot
/// serves exactly what a full replay of the same log serves, with every acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_checkpoint_write_leaves_a_correct_boot() {
    let dir = tempfile::tempdir().unwrap();
    let often = [
        ("CELLOS_CHECKPOINT_EVERY_EVENTS", "1"),
        ("CELLOS_CHECKPOINT_EVERY_SECS", "0"),
    ];
    let mut acknowledged = 0;
    for round in 0..2 {
        // Each attempt kills the server the moment a `.partial` file shows up; it counts once
        // the file is still there afterwards (the write had not finished).
        let mut killed_mid_write = false;
        for attempt in 0..10 {
            let mut server = BinServer::spawn_unready(dir.path(), &often).await;
            server.wait_ready().await;
            if attempt == 0 {
                // Enough cells that a checkpoint takes a while to write.
                for batch in 0..10 {
                    let events: Vec<Value> = (0..1000)
                        .map(|i| {
                            let cell = format!("cell-{round}-{batch}-{i}");
                            started(&cell, "spec", Some("run"), &ts(i % 3600))
                        })
                        .collect();
                    acknowledged += server
                        .ingest_raw(BATCH, serde_json::to_vec(&events).unwrap())
                        .await
                        .len();
                }
            }
            let deadline = Instant::now() + WAIT;
            let mut killed = false;
            while !killed && Instant::now() < deadline {
                let one = started(&format!("more-{acknowledged}"), "s", None, &ts(1));
                server.ingest_one(&one).await;
                acknowledged += 1;
                let data = dir.path().to_path_buf();
                killed = tokio::task::block_in_place(|| {
                    server.kill9_when(|| partial_exists(&data), Duration::from_millis(400))
                });
            }
            assert!(killed, "never saw a checkpoint being written");
            if partial_exists(dir.path()) {
                killed_mid_write = true;
                break;
            }
        }
        assert!(killed_mid_write, "every kill came after the write ended");
    }

    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("events.redb"),
        copy.path().join("events.redb"),
    )
    .unwrap();
    let (running, resumed) = boot(config(dir.path())).await;
    assert!(!partial_exists(dir.path()), "the half-written file is gone");
    assert!(resumed.metric("cellos_checkpoint_boot_seq").await.unwrap() > 0.0);
    let cells = resumed.get_json("/v1/cells").await;
    assert_eq!(cells.as_array().unwrap().len(), acknowledged);
    let got = summary(&resumed).await;
    stop(running).await;
    let (running, replayed) = boot(no_checkpoints(copy.path())).await;
    assert_eq!(summary(&replayed).await, got);
    stop(running).await;
}
