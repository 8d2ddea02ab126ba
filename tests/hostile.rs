//! Hostile input over real sockets: each gets a clear answer (problem+json, a close code, or a
//! closed connection), and the server keeps serving everyone else with nothing lost.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

fn auth_line() -> String {
    format!("authorization: Bearer {TOKEN}\r\n")
}

/// Reads until the peer closes (or 10 s pass); returns what arrived.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

/// Starts a server with `config` and waits until it is ready.
async fn start_ready(config: cellos_server::Config) -> (cellos_server::Running, Client) {
    let running = cellos_server::start(config).await.unwrap();
    let c = Client::new(running.local_addr());
    c.wait_ready().await;
    (running, c)
}

async fn still_serving(c: &Client, before: usize) {
    let seqs = c.ingest(&[started("alive", "sp", None, &ts(1))]).await;
    assert_eq!(seqs.len(), 1);
    assert_eq!(
        c.all_events().await.len(),
        before + 1,
        "nothing lost, nothing added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_huge_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.header_timeout = Duration::from_millis(500);
    let (running, c) = start_ready(config).await;
    let addr = c.addr;
    // A client that sends half a request line and then nothing: the header timeout closes it.
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /v1/cel").unwrap();
        let started = std::time::Instant::now();
        let got = read_to_close(&mut s);
        (started.elapsed(), got)
    });
    // Meanwhile everyone else is served.
    c.get("/v1/version").await.expect(200);
    let (waited, got) = slow.await.unwrap();
    assert!(
        waited < Duration::from_secs(9),
        "the slow client was cut off, not left hanging"
    );
    assert!(
        got.is_empty() || String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{got:?}"
    );
    // 100 KiB of headers: refused with 431, connection closed.
    let big = format!(
        "GET /v1/version HTTP/1.1\r\nhost: x\r\n{}x-big: {}\r\n\r\n",
        auth_line(),
        "a".repeat(100 * 1024)
    );
    let (status, _, _) = tokio::task::spawn_blocking(move || raw_http(addr, big.as_bytes()))
        .await
        .unwrap();
    assert_eq!(status, 431);
    // A fresh client: with a 500 ms header timeout, pooled keep-alive connections idle that long
    // are closed by the server, as they should be.
    still_serving(&Client::new(addr), 0).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_in_every_json_route() {
    let s = TestServer::start().await;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let deep_obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes();
    // Within each route's body limit, as deep as it allows.
    let r = s
        .send(
            Method::POST,
            "/v1/formations",
            Auth::Token,
            &[],
            Some(deep(32_000)),
        )
        .await;
    r.expect(400);
    let r = s
        .send(
            Method::POST,
            "/v1/formations",
            Auth::Token,
            &[],
            Some(deep_obj(10_000)),
        )
        .await;
    r.expect(400);
    for ct in [STRUCTURED, BATCH] {
        let r = s.post_events(ct, deep(500_000)).await;
        r.expect(400);
        let r = s.post_events(ct, deep_obj(170_000)).await;
        r.expect(400);
    }
    let id = {
        let r = s
            .send(
                Method::POST,
                "/v1/formations",
                Auth::Token,
                &[],
                Some(
                    serde_json::to_vec(
                        &json!({"name": "deep", "coordinator": "c", "members": [{"id": "c"}]}),
                    )
                    .unwrap(),
                ),
            )
            .await;
        r.expect(201);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    for body in [deep(1_000_000), deep_obj(300_000)] {
        let r = s
            .send(
                Method::POST,
                &format!("/v1/formations/{id}/status"),
                Auth::Token,
                &[("content-type", "application/json")],
                Some(body),
            )
            .await;
        assert!(
            r.status == 400 || r.status == 422,
            "{} {}",
            r.status,
            r.text()
        );
    }
    // The formation created above is the only event so far.
    still_serving(&s, 1).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_everywhere() {
    let s = TestServer::start().await;
    let addr = s.addr;
    // Percent-encoded invalid UTF-8 in path parameters: a 400 problem.
    for path in [
        "/v1/cells/%ff",
        "/v1/formations/%c3",
        "/v1/formations/by-name/%80x",
        "/v1/cells/%fe/events",
    ] {
        let r = s.get(path).await;
        assert_problem(
            &r,
            BAD_REQUEST,
            "Invalid URL: path parameter is not valid UTF-8",
        );
    }
    // Raw invalid bytes in the request line: hyper refuses the request.
    let (status, _, _) = tokio::task::spawn_blocking(move || {
        raw_http(addr, b"GET /v1/cells/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
    // Invalid UTF-8 in names and events: clear 400s.
    let r = s
        .send(
            Method::POST,
            "/v1/formations",
            Auth::Token,
            &[],
            Some(b"{\"name\":\"\xff\",\"coordinator\":\"c\",\"members\":[]}".to_vec()),
        )
        .await;
    r.expect(400);
    let r = s
        .post_events(
            STRUCTURED,
            b"{\"specversion\":\"1.0\",\"id\":\"\xc3\",\"source\":\"s\",\"type\":\"t\"}".to_vec(),
        )
        .await;
    r.expect(400);
    still_serving(&s, 0).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.max_connections = 4;
    let running = cellos_server::start(config).await.unwrap();
    let addr = running.local_addr();
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Give the server a moment to take the four (bounded retries below instead of a sleep).
    let mut refused = None;
    for _ in 0..50 {
        let (status, head, body) = tokio::task::spawn_blocking(move || {
            raw_http(
                addr,
                format!("GET /v1/version HTTP/1.1\r\nhost: x\r\n{}\r\n", auth_line()).as_bytes(),
            )
        })
        .await
        .unwrap();
        if status == 503 {
            refused = Some((head, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (head, body) = refused.expect("a connection over the cap is refused");
    assert!(head
        .to_lowercase()
        .contains("content-type: application/problem+json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "/problems/service-unavailable");
    // Once the idle ones leave, the server serves again.
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        let status = tokio::task::spawn_blocking(move || {
            raw_http(
                addr,
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .0
        })
        .await
        .unwrap();
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "served again after the cap freed up");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_garbage_is_a_protocol_close() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let got = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.write_all(ws::raw_upgrade("", "x", &auth_line()).as_bytes())
            .unwrap();
        // Random bytes where frames belong (reserved bits set).
        tcp.write_all(&[0xff, 0xff, 0x12, 0x34, 0x56, 0x78, 0x9a])
            .unwrap();
        read_to_close(&mut tcp)
    })
    .await
    .unwrap();
    let (head, frames) = ws::raw_frames(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (first, payload) = frames.first().expect("a frame follows the upgrade");
    assert_eq!(*first, 0x88, "a close frame follows: {frames:?}");
    assert_eq!(ws::close_code(payload), Some(1002));
    still_serving(&s, 0).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_anyone_up() {
    let s = TestServer::start().await;
    let blob = "y".repeat(50_000);
    for chunk in 0..10 {
        let batch: Vec<_> = (0..10)
            .map(|i| {
                cloud_event(
                    "t.big",
                    "load",
                    None,
                    json!({"n": chunk * 10 + i, "blob": blob}),
                )
            })
            .collect();
        s.ingest(&batch).await;
    }
    // Ask for ~5 MB of events and never read the answer.
    let addr = s.addr;
    let stuck = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        for _ in 0..20 {
            let _ = tcp.write_all(
                format!(
                    "GET /v1/events?limit=1000 HTTP/1.1\r\nhost: x\r\n{}\r\n",
                    auth_line()
                )
                .as_bytes(),
            );
        }
        std::thread::sleep(Duration::from_secs(3));
        drop(tcp);
    });
    // Everyone else is served meanwhile.
    for _ in 0..20 {
        s.get("/v1/version").await.expect(200);
    }
    still_serving(&s, 100).await;
    stuck.join().unwrap();
    s.shutdown().await;
}

/// Sends a POST whose body never completes: headers, then 10 of the 200 declared bytes.
fn trickled_post(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\n{}content-type: application/cloudevents-batch+json\r\ncontent-length: 200\r\n\r\n[{{\"specve",
        auth_line()
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408_and_a_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.body_timeout = Duration::from_millis(300);
    let (running, c) = start_ready(config).await;
    let addr = c.addr;
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = trickled_post(addr);
        let started = std::time::Instant::now();
        let got = read_to_close(&mut s);
        (
            started.elapsed(),
            String::from_utf8_lossy(&got).into_owned(),
        )
    });
    c.get("/v1/version").await.expect(200);
    let (waited, got) = slow.await.unwrap();
    assert!(waited < Duration::from_secs(9), "cut off, not left hanging");
    let (head, body) = got.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["type"], "/problems/bad-request");
    assert_eq!(problem["status"], 408);
    assert_eq!(
        problem["detail"],
        "the request body was not received within 300 ms"
    );
    still_serving(&c, 0).await;
    running.shutdown().await;
}

/// A request still in flight when the shutdown grace ends is dropped with its connection, and
/// shutdown returns with the log closed: the same data directory opens again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_requests_that_outlive_the_grace_and_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
    config.body_timeout = Duration::from_secs(120);
    config.shutdown_grace = Duration::from_millis(300);
    let (running, c) = start_ready(config.clone()).await;
    c.ingest(&[started("kept", "sp", None, &ts(1))]).await;
    let addr = c.addr;
    let stuck = tokio::task::spawn_blocking(move || {
        let mut s = trickled_post(addr);
        read_to_close(&mut s)
    });
    // The handler is waiting for the rest of the body when shutdown starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started_at = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), running.shutdown())
        .await
        .expect("shutdown returns even with a request stuck in flight");
    assert!(started_at.elapsed() < Duration::from_secs(10));
    let got = stuck.await.unwrap();
    assert!(
        got.is_empty() || String::from_utf8_lossy(&got).starts_with("HTTP/1.1 "),
        "the stuck client sees its connection closed: {got:?}"
    );
    let (restarted, c) = tokio::time::timeout(Duration::from_secs(10), start_ready(config))
        .await
        .expect("restart on the same data directory (the log was released by shutdown)");
    assert_eq!(
        c.all_events().await.len(),
        1,
        "the acknowledged event is kept"
    );
    restarted.shutdown().await;
}
