//! Checkpoints on JetStream, against a real nats-server: a replica started later boots from the
//! checkpoint another replica wrote into the shared Object Store bucket, and serves what it
//! serves. Without nats-server installed this says so and passes, unless `CELLOS_REQUIRE_NATS=1`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::time::{Duration, Instant};

use cellos_server::checkpoint::Schedule;
use cellos_server::config::LogBackend;
use common::*;
use nats::Nats;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn config(url: &str, dir: &std::path::Path) -> cellos_server::Config {
    let mut c = cellos_server::Config::for_tests(TOKEN, dir.to_path_buf());
    c.log = LogBackend::jetstream(url).expect("a NATS URL");
    c.checkpoints = Schedule {
        every_events: 100,
        every: Duration::ZERO,
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_boots_from_another_replicas_checkpoint() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, a) = start_config(config(&nats.url(), dir_a.path())).await;
    a.wait_ready().await;
    let fid = new_fid();
    a.ingest_one(&formation_created(
        &fid,
        "shared",
        &ts(0),
        document("shared"),
    ))
    .await;
    for i in 0..250u32 {
        let mut ev = started(&format!("cell-{i}"), "spec", Some("run"), &ts(i % 3600));
        ev["data"]["correlation"] = json!({ "formationId": fid });
        a.ingest_one(&ev).await;
    }
    // Every 100 events, at the writer's ticks: at least one by now, and once the events stop,
    // none after the one due then.
    let deadline = Instant::now() + WAIT;
    while a
        .metric("cellos_checkpoint_writes_total")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(Instant::now() < deadline, "replica A wrote no checkpoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = a.metric("cellos_checkpoint_last_seq").await.unwrap();
    assert!(written >= 100.0, "{written}");

    let (second, b) = start_config(config(&nats.url(), dir_b.path())).await;
    b.wait_ready().await;
    assert_eq!(
        b.metric("cellos_checkpoint_boot_seq").await,
        Some(written),
        "B loaded A's checkpoint"
    );
    assert_eq!(b.every_get().await, a.every_get().await);

    // Both keep following the same stream.
    for i in 250..260u32 {
        a.ingest_one(&started(&format!("cell-{i}"), "spec", None, &ts(i)))
            .await;
    }
    let deadline = Instant::now() + WAIT;
    while b.get_json("/v1/cells").await.as_array().unwrap().len() < 260 {
        assert!(Instant::now() < deadline, "B did not follow the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want = a.every_get().await;
    assert_eq!(b.every_get().await, want);
    let last = a.metric("cellos_applied_cursor").await.unwrap();

    // Both stop at once and write their last checkpoint at the same log position, under the same
    // name: the bucket keeps one whole checkpoint, which a third replica boots from.
    let _ = tokio::join!(stop(second), stop(first));
    let dir_c = tempfile::tempdir().unwrap();
    let (third, c) = start_config(config(&nats.url(), dir_c.path())).await;
    c.wait_ready().await;
    assert_eq!(c.metric("cellos_checkpoint_boot_seq").await, Some(last));
    assert_eq!(c.metric("cellos_boot_replay_events").await, Some(0.0));
    assert_eq!(c.every_get().await, want);
    stop(third).await;
}
