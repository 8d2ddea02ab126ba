//! A write is answered within the write timeout in all, however its time splits between the
//! append and waiting for the event to be applied (a slow JetStream ack followed by a tail that
//! is reconnecting after a node loss). The log here is the embedded one behind a wrapper whose
//! appends take most of the timeout and whose tail stops delivering after the boot.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellos_server::event::RawEvent;
use cellos_server::log::embedded::{system_clock, EmbeddedLog, Retention};
use cellos_server::log::{
    Append, Bounds, BoxFuture, EventLog, LogError, LogIdentity, LogTail, TailBatch,
};
use common::*;
use reqwest::Method;

const WRITE_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Most of the write timeout: on its own within it, but not together with any wait after it.
const APPEND_DELAY: Duration = Duration::from_millis(1_000);

/// The embedded log, with slow appends (once `slow` is set) and a tail that delivers nothing
/// after its first catch-up while `slow` is set.
struct SlowLog {
    inner: Arc<EmbeddedLog>,
    slow: Arc<AtomicBool>,
}

struct StalledTail {
    inner: Box<dyn LogTail>,
    slow: Arc<AtomicBool>,
    caught_up: bool,
}

impl EventLog for SlowLog {
    fn append(&self, events: Vec<Append>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            if self.slow.load(Ordering::Acquire) {
                tokio::time::sleep(APPEND_DELAY).await;
            }
            self.inner.append(events).await
        })
    }
    fn read(&self, after: u64, max: usize) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        self.inner.read(after, max)
    }
    fn get(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<RawEvent>, LogError>> {
        self.inner.get(seqs)
    }
    fn bounds(&self) -> BoxFuture<'_, Result<Bounds, LogError>> {
        self.inner.bounds()
    }
    fn tail(self: Arc<Self>, after: u64) -> Box<dyn LogTail> {
        Box::new(StalledTail {
            inner: self.inner.clone().tail(after),
            slow: self.slow.clone(),
            caught_up: false,
        })
    }
    fn identity(&self) -> BoxFuture<'_, Result<LogIdentity, LogError>> {
        self.inner.identity()
    }
}

impl LogTail for StalledTail {
    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<TailBatch, LogError>> {
        Box::pin(async move {
            let batch = self.inner.next(max).await?;
            // A batch that arrives once stalled is held back for good (the tail may have been
            // waiting for it since before the stall began).
            if self.caught_up && self.slow.load(Ordering::Acquire) {
                std::future::pending::<()>().await;
            }
            self.caught_up |= batch.caught_up;
            Ok(batch)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_answers_within_the_write_timeout_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(false));
    let inner =
        Arc::new(EmbeddedLog::open(dir.path(), Retention::default(), system_clock()).unwrap());
    let log: Arc<dyn EventLog> = Arc::new(SlowLog {
        inner,
        slow: slow.clone(),
    });
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.write_timeout = WRITE_TIMEOUT;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage = cellos_server::server::Storage {
        log,
        checkpoints: None,
    };
    let running = cellos_server::start_with(config, storage, listener)
        .await
        .expect("start");
    let client = Client::new(running.local_addr());
    client.wait_ready().await;
    client
        .ingest_one(&started("before", "spec", None, &ts(0)))
        .await;
    let r = client.post_formation(&admission_request("held")).await;
    assert_eq!(r.status, 201, "{}", r.text());

    slow.store(true, Ordering::Release);
    let event = serde_json::to_vec(&started("after", "spec", None, &ts(1))).unwrap();
    let writes: [(&str, Method, &str, Option<Vec<u8>>); 3] = [
        ("an event", Method::POST, "/v1/events", Some(event)),
        (
            "an admission",
            Method::POST,
            "/v1/formations",
            Some(serde_json::to_vec(&admission_request("late")).unwrap()),
        ),
        (
            "a cancel",
            Method::DELETE,
            "/v1/formations/by-name/held",
            None,
        ),
    ];
    for (what, method, path, body) in writes {
        let content_type = if path == "/v1/events" {
            "application/cloudevents+json"
        } else {
            "application/json"
        };
        let t = Instant::now();
        let r = client
            .send(
                method,
                path,
                Auth::Token,
                &[("content-type", content_type)],
                body,
            )
            .await;
        let took = t.elapsed();
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        // Answered at the write timeout, not at the append's delay plus another full timeout
        // (which is what separate timeouts per step would give: 2.5 s).
        assert!(
            took < WRITE_TIMEOUT + Duration::from_millis(700),
            "{what} was answered after {took:?}"
        );
        assert!(
            r.text().contains("not applied within"),
            "{what}: {}",
            r.text()
        );
    }
    stop(running).await;
}
