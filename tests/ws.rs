//! `/ws/events` with a real WebSocket client over loopback: live frames, resume across the
//! ring/log boundary, filters, auth, lag, retention, shutdown, and many sockets at once.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::time::Duration;

use common::ws::{
    close_code, connect, frames, next, raw_frames, raw_upgrade, refused_status, try_connect, Got,
    Ws, WAIT,
};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn cell_events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| started(&format!("{prefix}-{i}"), "spec", None, &ts(i as u32)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_frames_carry_the_stored_bytes() {
    let s = TestServer::start().await;
    let mut ws = connect(s.addr, "").await;
    let raw =
        r#"{"specversion":"1.0","id":"x-1","source":"s",  "type":"t.one","data":{"k":[1, 2]}}"#;
    let seq = s.ingest_raw(STRUCTURED, raw).await[0];
    match next(&mut ws).await {
        Got::Frame(got, _, text) => {
            assert_eq!(got, seq);
            assert_eq!(text, format!("{{\"seq\":{seq},\"event\":{raw}}}"));
        }
        other => panic!("{other:?}"),
    }
    let seqs = s.ingest(&cell_events("c", 5)).await;
    let got: Vec<u64> = frames(&mut ws, 5).await.into_iter().map(|f| f.0).collect();
    assert_eq!(got, seqs);
    ws.close(None).await.unwrap();
    s.shutdown().await;
}

/// Sessions run on a runtime of their own (`--ws-threads`): while it is fully occupied, writes are
/// still logged, applied and answered, the sessions wait, and their frames follow once it is free.
/// The test runs on one thread, so anything the sessions' runtime shared with requests would stall.
#[tokio::test]
async fn a_busy_fan_out_does_not_hold_up_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    assert_eq!(config.ws_threads, 1);
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    let mut ws = connect(running.local_addr(), "").await;

    // Occupy the sessions' only worker for a while.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let sessions = running
        .ctx()
        .sessions
        .clone()
        .expect("sessions have their own runtime");
    let still_busy = busy.clone();
    sessions.spawn(async move {
        let _ = started_tx.send(());
        std::thread::sleep(Duration::from_secs(3));
        still_busy.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    started_rx.await.unwrap();

    let seqs = c.ingest(&cell_events("busy", 3)).await;
    // Neither a frame nor the answer to a ping comes while the session cannot run.
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        early.is_err(),
        "a session ran while its runtime was occupied: {early:?}"
    );
    assert!(
        busy.load(std::sync::atomic::Ordering::SeqCst),
        "the write was answered only after the sessions' runtime was free again"
    );
    let got: Vec<u64> = frames(&mut ws, 3).await.into_iter().map(|f| f.0).collect();
    assert_eq!(got, seqs);
    ws.close(None).await.unwrap();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_ring_and_log_under_concurrent_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.ring_capacity = 512;
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    for chunk in 0..10 {
        c.ingest(&cell_events(&format!("a{chunk}"), 100)).await;
    }
    // 1000 events, twice what the ring holds: the oldest history comes from the log, the rest
    // from the ring, then live events while a writer keeps ingesting.
    let addr = c.addr;
    let writer = tokio::spawn(async move {
        let c = Client::new(addr);
        for chunk in 0..25 {
            c.ingest(&cell_events(&format!("b{chunk}"), 20)).await;
        }
    });
    let mut ws = connect(c.addr, "?since=7").await;
    let got: Vec<u64> = frames(&mut ws, 1493)
        .await
        .into_iter()
        .map(|f| f.0)
        .collect();
    writer.await.unwrap();
    assert_eq!(
        got,
        (8..=1500).collect::<Vec<u64>>(),
        "gap-free and duplicate-free"
    );
    // since beyond the tail: nothing until newer events exist.
    let mut ahead = connect(c.addr, "?since=1502").await;
    c.ingest(&cell_events("late", 3)).await;
    assert_eq!(frames(&mut ahead, 1).await[0].0, 1503);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_and_formation_filters() {
    let s = TestServer::start().await;
    let fid = new_fid();
    s.ingest(&[formation_created(
        &fid,
        "team-a",
        &ts(1),
        document("team-a"),
    )])
    .await;
    let mut by_name = connect(s.addr, "?formation=team-a&since=0").await;
    let mut by_id = connect(s.addr, &format!("?formation={}", fid.to_uppercase())).await;
    let mut cells_only = connect(s.addr, "?subject=cellos.events.cells.%3E").await;
    let mut starts = connect(s.addr, "?subject=cellos.events.cells.*.started").await;
    let mut correlated = started("in-team", "spec", None, &ts(2));
    correlated["data"]["correlation"] = json!({"formationId": fid});
    s.ingest(&[
        started("loner", "spec", None, &ts(2)),
        correlated,
        destroyed("loner", "spec", "succeeded", &ts(3)),
        formation_phase(&fid, "team-a", "running", &ts(4)),
    ])
    .await;
    let names = |fs: Vec<(u64, Value)>| -> Vec<u64> { fs.into_iter().map(|f| f.0).collect() };
    assert_eq!(names(frames(&mut by_name, 3).await), vec![1, 3, 5]);
    assert_eq!(names(frames(&mut by_id, 2).await), vec![3, 5]);
    assert_eq!(names(frames(&mut cells_only, 3).await), vec![2, 3, 4]);
    assert_eq!(names(frames(&mut starts, 2).await), vec![2, 3]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_upgrade() {
    let s = TestServer::start().await;
    assert_eq!(
        refused_status(try_connect(s.addr, "", None).await.unwrap_err()),
        401
    );
    assert_eq!(
        refused_status(try_connect(s.addr, "", Some("nope")).await.unwrap_err()),
        401
    );
    assert_eq!(
        refused_status(
            try_connect(s.addr, "?since=abc", Some(TOKEN))
                .await
                .unwrap_err()
        ),
        400
    );
    for bad in [
        "foo.%3E",
        "cellos.events.%3E.x",
        "cellos.events..a",
        "cellos.events",
    ] {
        let e = try_connect(s.addr, &format!("?subject={bad}"), Some(TOKEN)).await;
        assert_eq!(refused_status(e.unwrap_err()), 400, "{bad}");
    }
    assert_eq!(
        refused_status(
            try_connect(s.addr, "?formation=nobody", Some(TOKEN))
                .await
                .unwrap_err()
        ),
        404
    );
    // A plain GET (no upgrade headers) is a problem, auth first.
    let r = s.get_as("/ws/events", Auth::None).await;
    assert_problem(&r, UNAUTHORIZED, "missing Authorization header");
    let r = s.get("/ws/events").await;
    assert_problem(
        &r,
        BAD_REQUEST,
        "Connection header did not include 'upgrade'",
    );
    s.shutdown().await;
}

/// Reads `slow` until it is closed: its frames are gap-free from seq 1, the close is 4008 with
/// the last seq it got as the resume point, and resuming there delivers the rest through `total`
/// (from the log and then the ring).
async fn lagged_then_resumes(addr: std::net::SocketAddr, slow: &mut Ws, total: u64) {
    let mut last = 0;
    let close = loop {
        match next(slow).await {
            Got::Frame(seq, _, _) => {
                assert_eq!(seq, last + 1, "frames before the close are gap-free");
                last = seq;
            }
            Got::Closed(c) => break c,
        }
    };
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 4008);
    assert_eq!(reason, format!("lagged; resume with since={last}"));
    assert!(last < total);
    let mut resumed = connect(addr, &format!("?since={last}")).await;
    let rest: Vec<u64> = frames(&mut resumed, (total - last) as usize)
        .await
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(rest, ((last + 1)..=total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_is_closed_with_its_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.ring_capacity = 1024;
    config.ws_max_backlog = 16;
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    let mut slow = connect(c.addr, "").await;
    let mut fast = connect(c.addr, "").await;
    // ~24 MB of frames while `slow` reads nothing: its socket buffers fill and it falls behind.
    let blob = "x".repeat(60_000);
    let total = 400usize;
    for chunk in 0..(total / 10) {
        let batch: Vec<Value> = (0..10)
            .map(|i| {
                cloud_event(
                    "t.big",
                    "load",
                    None,
                    json!({"n": chunk * 10 + i, "blob": blob}),
                )
            })
            .collect();
        c.ingest(&batch).await;
        // The fast reader keeps up as the events arrive.
        assert_eq!(frames(&mut fast, 10).await.len(), 10);
    }
    lagged_then_resumes(c.addr, &mut slow, total as u64).await;
    running.shutdown().await;
}

/// `n` events of about `size` bytes each.
fn large_events(prefix: &str, n: usize, size: usize) -> Vec<Value> {
    let blob = "y".repeat(size);
    (0..n)
        .map(|i| cloud_event("t.large", prefix, None, json!({"n": i, "blob": blob})))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_bounded_in_bytes_keeps_resume_and_lag_exact() {
    const RING_BYTES: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.ring_bytes = RING_BYTES;
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    let mut slow = connect(c.addr, "").await;
    // 300 events of ~60 KB (18 MB, more than socket buffers absorb, so `slow` falls behind):
    // the ring holds about 17 of them, far fewer than its 65,536 slots.
    for chunk in 0..30 {
        c.ingest(&large_events(&format!("a{chunk}"), 10, 60_000))
            .await;
    }
    let held = c
        .metric("cellos_ring_bytes")
        .await
        .expect("cellos_ring_bytes");
    assert!(held <= RING_BYTES as f64, "the ring holds {held} bytes");
    let frames_held = c
        .metric("cellos_ring_frames")
        .await
        .expect("cellos_ring_frames");
    assert!((10.0..=20.0).contains(&frames_held), "{frames_held} frames");

    // History older than the ring comes from the log, the rest from the ring, then live events
    // while a writer keeps ingesting: gap-free and duplicate-free.
    let addr = c.addr;
    let writer = tokio::spawn(async move {
        let c = Client::new(addr);
        for chunk in 0..10 {
            c.ingest(&large_events(&format!("b{chunk}"), 10, 60_000))
                .await;
        }
    });
    let mut ws = connect(c.addr, "?since=7").await;
    let got: Vec<u64> = frames(&mut ws, 393)
        .await
        .into_iter()
        .map(|f| f.0)
        .collect();
    writer.await.unwrap();
    assert_eq!(got, (8..=400).collect::<Vec<u64>>());

    // The subscriber that read nothing fell out of the ring by bytes long before it was
    // `ws_max_backlog` frames behind: closed with 4008 and its resume point, and resuming
    // there gives the rest.
    lagged_then_resumes(c.addr, &mut slow, 400).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_before_retention_is_4410() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.retention_max_events = 5;
    // Without checkpoints retention is free to remove events at once (with them, it keeps
    // every event after the newest checkpoint: `tests/checkpoints.rs`).
    config.checkpoints = cellos_server::checkpoint::Schedule {
        every_events: 0,
        every: std::time::Duration::ZERO,
    };
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    for i in 0..4 {
        c.ingest(&cell_events(&format!("r{i}"), 5)).await;
    }
    let mut ws = connect(c.addr, "?since=3").await;
    match next(&mut ws).await {
        Got::Closed(Some((4410, reason))) => assert_eq!(reason, "retention-exhausted"),
        other => panic!("expected 4410 and no frame first, got {other:?}"),
    }
    // Resuming inside the retained range works.
    let mut ok = connect(c.addr, "?since=15").await;
    assert_eq!(
        frames(&mut ok, 5)
            .await
            .iter()
            .map(|f| f.0)
            .collect::<Vec<_>>(),
        vec![16, 17, 18, 19, 20]
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket_with_1001() {
    let s = TestServer::start().await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(connect(s.addr, "").await);
    }
    s.shutdown().await;
    for ws in &mut sockets {
        match next(ws).await {
            Got::Closed(Some((code, _))) => assert_eq!(code, 1001),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_and_oversized_messages() {
    let s = TestServer::start().await;
    let mut ws = connect(s.addr, "").await;
    ws.send(Message::Text("hello".into())).await.unwrap();
    ws.send(Message::Ping(vec![1, 2, 3].into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(vec![1, 2, 3].into()));
    ws.send(Message::Text("x".repeat(70_000).into()))
        .await
        .unwrap();
    match next(&mut ws).await {
        Got::Closed(Some((code, _))) => assert_eq!(code, 1009),
        other => panic!("{other:?}"),
    }
    let mut polite = connect(s.addr, "").await;
    polite
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    match next(&mut polite).await {
        Got::Closed(Some((code, _))) => assert_eq!(code, 1000),
        other => panic!("{other:?}"),
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_receive_identical_ordered_streams() {
    let s = TestServer::start().await;
    let mut sockets = Vec::new();
    for _ in 0..1000 {
        sockets.push(connect(s.addr, "").await);
    }
    let addr = s.addr;
    let writer = tokio::spawn(async move {
        let c = Client::new(addr);
        for chunk in 0..5 {
            c.ingest(&cell_events(&format!("m{chunk}"), 10)).await;
        }
    });
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                frames(&mut ws, 50)
                    .await
                    .into_iter()
                    .map(|f| f.0)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        assert_eq!(r.await.unwrap(), (1..=50).collect::<Vec<u64>>());
    }
    s.shutdown().await;
}

#[test]
fn asyncapi_documents_the_query_and_close_codes() {
    let doc: Value = serde_json::from_str(include_str!("../contracts/asyncapi.json")).unwrap();
    let query = &doc["channels"]["events"]["bindings"]["ws"]["query"]["properties"];
    for key in ["since", "subject", "formation"] {
        assert!(
            query.get(key).is_some(),
            "query parameter {key} undocumented"
        );
    }
    let codes = &doc["x-close-codes"];
    for code in [
        cellos_server::ws::close::LAGGED,
        cellos_server::ws::close::RETENTION_EXHAUSTED,
        1001,
        1008,
        1009,
    ] {
        assert!(
            codes.get(code.to_string()).is_some(),
            "close code {code} undocumented"
        );
    }
    assert!(codes["4008"]
        .as_str()
        .unwrap()
        .starts_with("lagged; resume with since="));
    assert!(codes["4410"]
        .as_str()
        .unwrap()
        .starts_with("retention-exhausted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_the_pong_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.ws_ping_every = Duration::from_secs(1);
    config.ws_pong_timeout = Duration::from_millis(2500);
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    let addr = c.addr;
    // A raw client that never answers pings: it sees pings, then a 1008 close.
    let frames = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let auth = format!("authorization: Bearer {TOKEN}\r\n");
        tcp.write_all(raw_upgrade("", "x", &auth).as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    let (_, frames) = raw_frames(&frames);
    let opcodes: Vec<u8> = frames.iter().map(|f| f.0 & 0x0f).collect();
    let close_code = frames
        .iter()
        .find(|f| f.0 & 0x0f == 0x8)
        .and_then(|f| close_code(&f.1));
    assert!(
        opcodes.iter().filter(|&&o| o == 0x9).count() >= 2,
        "pings were sent: {opcodes:?}"
    );
    assert_eq!(close_code, Some(1008), "closed for the missing pongs");
    // A client that answers pings (tungstenite does) stays connected past the deadline.
    let mut ws = connect(addr, "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("a client that answers pings stays open, got {other:?}"),
        }
    }
    assert!(pings >= 2, "pings arrive and are answered: {pings}");
    c.ingest(&cell_events("still", 1)).await;
    assert_eq!(frames_of(&mut ws).await, 1);
    running.shutdown().await;
}

async fn frames_of(ws: &mut Ws) -> usize {
    frames(ws, 1).await.len()
}
