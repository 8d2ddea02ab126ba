//! One `EventLog` contract suite (`tests/common/log_contract.rs`) run on both backends: the
//! embedded redb log and the JetStream log on a real nats-server (started per test on its own
//! loopback port; without nats-server installed the JetStream run says so and passes, unless
//! `CELLOS_REQUIRE_NATS=1`).
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::jetstream::{JetStreamLog, JetStreamOptions, NatsAuth, NatsSettings};
use cellos_server::log::EventLog;
use common::log_contract::{check_log_contract, check_reopened};
use nats::{settings, Nats};

fn open_embedded(dir: &std::path::Path) -> Arc<dyn EventLog> {
    Arc::new(EmbeddedLog::open(dir, Retention::default(), system_clock()).expect("open the log"))
}

/// The JetStream log on `nats`, once it reports healthy (bounded wait).
async fn open_jetstream(nats: &Nats) -> Arc<dyn EventLog> {
    let log = JetStreamLog::connect(&settings(&nats.url()), JetStreamOptions::default())
        .await
        .expect("connect the log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.health().is_err() {
        assert!(Instant::now() < deadline, "the log never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Arc::new(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_log_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_embedded(dir.path());
    let identity = check_log_contract(log.clone()).await;
    // The file lock goes with the last handle: reopen only once this one is gone.
    assert_eq!(
        Arc::strong_count(&log),
        1,
        "the suite let go of every handle"
    );
    drop(log);
    check_reopened(open_embedded(dir.path()), &identity).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_log_keeps_the_log_contract() {
    let Some(nats) = Nats::start().await else {
        return;
    };
    // Only unusable settings fail at once (an unreachable server is retried).
    let missing = NatsSettings {
        auth: NatsAuth::CredsFile("/nonexistent/cellos.creds".into()),
        ..settings(&nats.url())
    };
    let err = JetStreamLog::connect(&missing, JetStreamOptions::default())
        .await
        .err()
        .expect("a missing creds file fails at once");
    assert!(
        err.to_string()
            .contains("creds file /nonexistent/cellos.creds"),
        "{err}"
    );
    let log = open_jetstream(&nats).await;
    let identity = check_log_contract(log.clone()).await;
    drop(log);
    check_reopened(open_jetstream(&nats).await, &identity).await;
}
