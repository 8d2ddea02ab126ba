//! The server on a 3-node JetStream cluster of real nats-server processes (loopback ports, one
//! store directory per node): an R3 stream; writers that keep going while the stream's leader
//! is killed (SIGKILL) and restarted, then the node the server is connected to; two servers on
//! different nodes that agree through a leader change. Without nats-server installed these
//! tests say so and pass, unless `CELLOS_REQUIRE_NATS=1`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;
mod nats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cellos_server::config::LogBackend;
use cellos_server::log::jetstream::{NatsSettings, StreamSettings, STREAM_NAME};
use common::ws::{connect, next, Got};
use common::*;
use futures_util::StreamExt;
use nats::cluster::Cluster;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Every write is answered within this (plus the HTTP round trip), whatever the cluster does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn r3(seeds: &str, dir: &std::path::Path) -> cellos_server::Config {
    let mut c = cellos_server::Config::for_tests(TOKEN, dir.to_path_buf());
    c.log = LogBackend::JetStream {
        nats: NatsSettings::from_urls(seeds).expect("seeds"),
        stream: StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        },
    };
    c.write_timeout = WRITE_TIMEOUT;
    c
}

/// One write and how it was answered.
#[derive(Debug, Clone)]
struct Answer {
    /// The CloudEvent id (events) or the formation name (admissions).
    key: String,
    formation: bool,
    status: u16,
    at: Instant,
    took: Duration,
}

/// Keeps writing (nine events, then one formation) until `stop`, recording every answer.
async fn writer(c: Client, lane: usize, stop: Arc<AtomicBool>, answers: Arc<Mutex<Vec<Answer>>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        let (key, formation, status) = if i % 10 == 0 {
            let name = format!("f-{lane}-{i}");
            let r = c.post_formation(&admission_request(&name)).await;
            (name, true, r.status)
        } else {
            let ev = started_event(&format!("cell-{lane}-{i}"));
            let id = ev["id"].as_str().unwrap().to_owned();
            let r = c
                .try_post_events(STRUCTURED, serde_json::to_vec(&ev).unwrap())
                .await;
            (id, false, r.map_or(0, |r| r.status))
        };
        answers.lock().unwrap().push(Answer {
            key,
            formation,
            status,
            at: started,
            took: started.elapsed(),
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn started_event(cell: &str) -> Value {
    started(cell, "spec", Some("run"), &ts(1))
}

/// The failover time among writes started in `[from, to)`: from the start of the first that
/// failed to the end of the first that succeeded after it; or, when none failed, how long the
/// slowest took.
fn failover(answers: &[Answer], from: Instant, to: Instant) -> String {
    let window: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at >= from && a.at < to)
        .collect();
    let Some(first_failure) = window.iter().find(|a| !ok(a)) else {
        let slowest = window.iter().map(|a| a.took).max().unwrap_or_default();
        return format!("no write failed, the slowest took {slowest:?}");
    };
    let recovered = window
        .iter()
        .find(|a| ok(a) && a.at > first_failure.at)
        .map(|a| (a.at + a.took).duration_since(first_failure.at));
    format!("{recovered:?} from the first failed write to the first successful one")
}

fn ok(a: &Answer) -> bool {
    matches!(a.status, 201 | 202)
}

/// Waits until a write started after `since` succeeded.
async fn until_a_write_succeeds(answers: &Mutex<Vec<Answer>>, since: Instant) {
    let deadline = Instant::now() + WAIT;
    while !answers
        .lock()
        .unwrap()
        .iter()
        .any(|a| a.at > since && ok(a))
    {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message of the stream, by seq: (seq, payload).
async fn stream_messages(cluster: &Cluster) -> Vec<(u64, Value)> {
    let js = cluster.jetstream().await;
    let stream = js.get_stream(STREAM_NAME).await.expect("the stream");
    let last = stream.cached_info().state.last_sequence;
    let mut out = Vec::new();
    let gets = futures_util::stream::iter(1..=last)
        .map(|seq| {
            let stream = &stream;
            async move { (seq, stream.get_raw_message(seq).await) }
        })
        .buffered(64);
    futures_util::pin_mut!(gets);
    while let Some((seq, got)) = gets.next().await {
        if let Ok(m) = got {
            out.push((
                seq,
                serde_json::from_slice(&m.payload).expect("JSON events"),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_the_loss_of_the_leader_and_of_the_served_node() {
    // The server's warnings (a failed tail, unacknowledged publishes) show if the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("cellos_server=warn")
        .with_writer(std::io::stderr)
        .try_init();
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (running, client) = start_config(r3(&cluster.urls(), dir.path())).await;
    client.wait_ready_within(WAIT).await;
    let js = cluster.jetstream().await;
    let mut stream = js.get_stream(STREAM_NAME).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3, "an R3 stream");
    assert_eq!(info.cluster.as_ref().unwrap().replicas.len(), 2);
    // The checkpoint bucket (created when the boot looked for a checkpoint) has the same
    // replicas.
    let mut bucket = js.get_stream("OBJ_CELLOS_CHECKPOINTS").await.unwrap();
    assert_eq!(bucket.info().await.unwrap().config.num_replicas, 3);

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    // Reads and readiness, sampled all along.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let monitor = {
        let (c, stop, samples) = (client.clone(), stop.clone(), samples.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let read = c.get("/v1/cells?limit=1").await.status;
                let ready = c.get("/readyz").await;
                let detail = ready.json()["detail"].as_str().unwrap_or("").to_owned();
                samples.lock().unwrap().push((read, ready.status, detail));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|lane| tokio::spawn(writer(client.clone(), lane, stop.clone(), answers.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let leader = cluster.stream_leader(STREAM_NAME).await;
    let leader_lost = Instant::now();
    cluster.nodes[leader].kill9();
    until_a_write_succeeds(&answers, leader_lost).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[leader].restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let served = cluster
        .serving("cellos-server")
        .await
        .expect("the server is connected to a node");
    let node_lost = Instant::now();
    cluster.nodes[served].kill9();
    until_a_write_succeeds(&answers, node_lost).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[served].restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    monitor.await.unwrap();
    let answers = answers.lock().unwrap().clone();
    // Reads kept serving the last snapshot; readiness said why when it was not ready.
    let samples = samples.lock().unwrap().clone();
    assert!(samples.iter().all(|s| s.0 == 200), "a read was refused");
    let unready: Vec<&String> = samples
        .iter()
        .filter(|s| s.1 != 200)
        .map(|s| &s.2)
        .collect();
    for detail in &unready {
        assert!(detail.starts_with("event log unreachable: "), "{detail}");
    }
    let stored = stream_messages(&cluster).await;
    let last = stored.last().map_or(0, |m| m.0);

    // Nothing hung: every answer came within the write timeout plus the HTTP round trip.
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    assert!(
        slowest < WRITE_TIMEOUT + Duration::from_secs(1),
        "a write took {slowest:?}"
    );
    for a in &answers {
        assert!(matches!(a.status, 201 | 202 | 503), "{a:?}");
    }

    // Every write answered 201/202 is in the stream exactly once.
    let mut events_by_id: HashMap<String, usize> = HashMap::new();
    let mut created_by_name: HashMap<String, usize> = HashMap::new();
    for (_, ev) in &stored {
        *events_by_id
            .entry(ev["id"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
        if ev["type"].as_str().unwrap_or("").ends_with(".created") {
            let name = ev["data"]["formationName"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            *created_by_name.entry(name).or_default() += 1;
        }
    }
    let acked: Vec<&Answer> = answers.iter().filter(|a| ok(a)).collect();
    for a in &acked {
        let count = if a.formation {
            created_by_name.get(&a.key)
        } else {
            events_by_id.get(&a.key)
        };
        assert_eq!(count, Some(&1), "{a:?} is stored exactly once");
    }
    assert!(acked.len() > 100, "only {} writes succeeded", acked.len());

    // ...and in the projection, once the server has applied the whole stream.
    let deadline = Instant::now() + WAIT;
    while client.get_json("/v1/formations").await["cursor"].as_u64() < Some(last) {
        assert!(Instant::now() < deadline, "the server did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let projected: Vec<(u64, Value)> = client.all_events().await;
    assert_eq!(
        projected.iter().map(|e| e.0).collect::<Vec<_>>(),
        stored.iter().map(|e| e.0).collect::<Vec<_>>(),
        "the projection holds the stream, no gap, no duplicate"
    );
    for a in acked.iter().filter(|a| a.formation) {
        client
            .get(&format!("/v1/formations/by-name/{}", a.key))
            .await
            .expect(200);
    }
    let failed = answers.iter().filter(|a| !ok(a)).count();
    eprintln!(
        "cluster failover: {} writes, {failed} answered 503, the slowest in {slowest:?}; \
         /readyz not ready in {} of {} samples; stream leader killed: {}; connected node \
         killed: {}",
        answers.len(),
        unready.len(),
        samples.len(),
        failover(&answers, leader_lost, node_lost),
        failover(&answers, node_lost, Instant::now()),
    );
    stop_server(running).await;
}

async fn stop_server(running: cellos_server::Running) {
    common::stop(running).await;
}

/// Reads frames until one with seq `last` (bounded by the frame wait).
async fn frames_through(ws: &mut common::ws::Ws, last: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        match next(ws).await {
            Got::Frame(seq, _, text) => {
                out.push((seq, text));
                if seq >= last {
                    return out;
                }
            }
            Got::Closed(c) => panic!("closed after {} frames: {c:?}", out.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_different_nodes_agree_through_a_leader_change() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_running, a) = start_config(r3(&cluster.nodes[0].url(), dir_a.path())).await;
    let (b_running, b) = start_config(r3(&cluster.nodes[1].url(), dir_b.path())).await;
    a.wait_ready_within(WAIT).await;
    b.wait_ready_within(WAIT).await;
    let mut ws_a = connect(a.addr, "?since=0").await;
    let mut ws_b = connect(b.addr, "?since=0").await;

    let fid = new_fid();
    a.ingest_one(&formation_created(
        &fid,
        "shared",
        &ts(0),
        document("shared"),
    ))
    .await;
    for i in 0..60u32 {
        let writer = if i % 2 == 0 { &a } else { &b };
        let mut ev = started_event(&format!("cell-{i}"));
        ev["data"]["correlation"] = json!({ "formationId": fid });
        writer.ingest_one(&ev).await;
        if i == 30 {
            // The stream's leader steps down: another node is elected.
            let before = cluster.stream_leader(STREAM_NAME).await;
            let nc = cluster.nodes[0].client().await;
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM_NAME}");
            nc.request(subject, bytes::Bytes::new()).await.unwrap();
            let deadline = Instant::now() + WAIT;
            while cluster.stream_leader(STREAM_NAME).await == before {
                assert!(Instant::now() < deadline, "no new leader");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let last = a.get_json("/v1/formations").await["cursor"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while b.get_json("/v1/formations").await["cursor"].as_u64() < Some(last) {
        assert!(Instant::now() < deadline, "B did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (frames_a, frames_b) = (
        frames_through(&mut ws_a, last).await,
        frames_through(&mut ws_b, last).await,
    );
    assert_eq!(frames_a.len() as u64, last, "every event, no gap");
    assert_eq!(frames_a, frames_b, "identical WebSocket streams");
    assert_eq!(a.every_get().await, b.every_get().await);
    stop_server(a_running).await;
    stop_server(b_running).await;
}
