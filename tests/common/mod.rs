//! Black-box harness: an in-process server on a real loopback socket (or the real binary for
//! crash tests), an HTTP client with timeouts, problem+json assertions and CloudEvent builders.
//!
//! Every network call goes to 127.0.0.1, has a timeout, and every wait loop is bounded.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]
#![allow(dead_code)]

pub(crate) mod log_contract;
pub(crate) mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

pub(crate) const TOKEN: &str = "t0k3n-for-tests";
/// Upper bound on any single HTTP exchange.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on waiting for `/readyz` (or the binary's listening line).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) const STRUCTURED: &str = "application/cloudevents+json";
pub(crate) const BATCH: &str = "application/cloudevents-batch+json";

pub(crate) const STARTED: &str = "dev.cellos.events.cell.lifecycle.v1.started";
pub(crate) const DESTROYED: &str = "dev.cellos.events.cell.lifecycle.v1.destroyed";
pub(crate) const COMMAND_COMPLETED: &str = "dev.cellos.events.cell.command.v1.completed";

// ------------------------------------------------------------------------------------------------
// Responses and problem+json

/// A fully read response.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("response body is UTF-8")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// The first value of a header, as a string.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub(crate) fn content_type(&self) -> Option<String> {
        self.header("content-type")
    }

    /// Asserts the status, printing the body on failure.
    pub(crate) fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// Asserts a 200 `application/json` response and returns its body as text.
    pub(crate) fn ok_json_text(&self) -> String {
        self.expect(200);
        assert_eq!(self.content_type().as_deref(), Some("application/json"));
        self.text()
    }
}

/// A problem kind: HTTP status, `type` URI, `title`.
pub(crate) type ProblemKind = (u16, &'static str, &'static str);

pub(crate) const UNAUTHORIZED: ProblemKind = (401, "/problems/unauthorized", "Unauthorized");
pub(crate) const BAD_REQUEST: ProblemKind = (400, "/problems/bad-request", "Bad Request");
pub(crate) const NOT_FOUND: ProblemKind = (404, "/problems/not-found", "Not Found");
pub(crate) const METHOD_NOT_ALLOWED: ProblemKind =
    (405, "/problems/method-not-allowed", "Method Not Allowed");
pub(crate) const PAYLOAD_TOO_LARGE: ProblemKind =
    (413, "/problems/payload-too-large", "Payload Too Large");
pub(crate) const UNSUPPORTED_MEDIA_TYPE: ProblemKind = (
    415,
    "/problems/unsupported-media-type",
    "Unsupported Media Type",
);

/// The exact body a problem must have: four keys, in order.
pub(crate) fn problem_body(kind: ProblemKind, detail: &str) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap();
    format!(
        "{{\"type\":{},\"title\":{},\"status\":{},\"detail\":{}}}",
        s(kind.1),
        s(kind.2),
        kind.0,
        s(detail)
    )
}

/// Asserts a problem+json answer: status, exact content type, CORS header, and a body that is
/// exactly `{"type","title","status","detail"}` in that order with these values.
pub(crate) fn assert_problem(resp: &Resp, kind: ProblemKind, detail: &str) {
    let body = resp.text();
    assert_eq!(resp.status, kind.0, "status; body: {body}");
    assert_eq!(
        resp.content_type().as_deref(),
        Some("application/problem+json"),
        "content type; body: {body}"
    );
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    // Exactly four keys...
    let v: Value = serde_json::from_str(&body).expect("problem body is JSON");
    let obj = v.as_object().expect("problem body is an object");
    assert_eq!(obj.len(), 4, "problem has exactly four keys: {body}");
    // ...in this order in the raw text...
    let positions: Vec<usize> = ["\"type\":", "\"title\":", "\"status\":", "\"detail\":"]
        .iter()
        .map(|k| {
            body.find(k)
                .unwrap_or_else(|| panic!("problem lacks {k}: {body}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "problem keys out of order: {body}"
    );
    // ...with exactly these values.
    assert_eq!(body, problem_body(kind, detail));
}

/// Like [`assert_problem`] for HEAD answers, which carry no body.
pub(crate) fn assert_head_problem(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status);
    assert_eq!(
        resp.content_type().as_deref(),
        Some("application/problem+json")
    );
    assert!(resp.body.is_empty(), "HEAD answer has a body");
}

// ------------------------------------------------------------------------------------------------
// Client

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Auth<'a> {
    /// `Authorization: Bearer <TOKEN>`.
    Token,
    /// No `Authorization` header.
    None,
    /// This exact header value (bytes, so non-ASCII can be sent).
    Raw(&'a [u8]),
}

/// An HTTP client bound to one server address.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    pub addr: SocketAddr,
    pub base: String,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        assert!(addr.ip().is_loopback(), "tests talk to loopback only");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building the HTTP client");
        Client {
            http,
            addr,
            base: format!("http://{addr}"),
        }
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        match auth {
            Auth::Token => {
                req = req.header("authorization", format!("Bearer {TOKEN}"));
            }
            Auth::None => {}
            Auth::Raw(v) => {
                req = req.header(
                    "authorization",
                    HeaderValue::from_bytes(v).expect("a valid header value"),
                );
            }
        }
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading body: {e}"));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, Auth::Token, &[], None).await
    }

    pub(crate) async fn get_as(&self, path: &str, auth: Auth<'_>) -> Resp {
        self.send(Method::GET, path, auth, &[], None).await
    }

    pub(crate) async fn head(&self, path: &str) -> Resp {
        self.send(Method::HEAD, path, Auth::Token, &[], None).await
    }

    /// GET that must answer 200 `application/json`; returns the raw body.
    pub(crate) async fn get_ok(&self, path: &str) -> Bytes {
        let r = self.get(path).await;
        r.expect(200);
        assert_eq!(
            r.content_type().as_deref(),
            Some("application/json"),
            "GET {path}"
        );
        r.body
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let body = self.get_ok(path).await;
        serde_json::from_slice(&body).expect("JSON body")
    }

    /// POST /v1/events with this content type and body, authenticated.
    pub(crate) async fn post_events(&self, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.send(
            Method::POST,
            "/v1/events",
            Auth::Token,
            &[("content-type", content_type)],
            Some(body.into()),
        )
        .await
    }

    /// POST /v1/formations with this admission request, authenticated.
    pub(crate) async fn post_formation(&self, request: &Value) -> Resp {
        self.send(
            Method::POST,
            "/v1/formations",
            Auth::Token,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(request).unwrap()),
        )
        .await
    }

    /// POST /v1/events that may fail at the transport level (the server may be killed).
    pub(crate) async fn try_post_events(
        &self,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Resp, reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}/v1/events", self.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// Posts a raw batch body that must be accepted; returns the seqs.
    pub(crate) async fn ingest_raw(
        &self,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Vec<u64> {
        let r = self.post_events(content_type, body).await;
        r.expect(202);
        assert_eq!(r.content_type().as_deref(), Some("application/json"));
        seqs_of(&r)
    }

    /// Posts events as one batch; they must be accepted. Returns their seqs.
    pub(crate) async fn ingest(&self, events: &[Value]) -> Vec<u64> {
        let body = serde_json::to_vec(events).unwrap();
        let seqs = self.ingest_raw(BATCH, body).await;
        assert_eq!(seqs.len(), events.len());
        seqs
    }

    /// Posts one event in structured mode; it must be accepted. Returns its seq.
    pub(crate) async fn ingest_one(&self, event: &Value) -> u64 {
        let seqs = self
            .ingest_raw(STRUCTURED, serde_json::to_vec(event).unwrap())
            .await;
        assert_eq!(seqs.len(), 1);
        seqs[0]
    }

    /// One page of `/v1/events`: (seq, event) pairs and the cursor.
    pub(crate) async fn events_page(&self, query: &str) -> (Vec<(u64, Value)>, u64) {
        let v = self.get_json(&format!("/v1/events{query}")).await;
        let events = v["events"]
            .as_array()
            .expect("events array")
            .iter()
            .map(|f| (f["seq"].as_u64().expect("seq"), f["event"].clone()))
            .collect();
        (events, v["cursor"].as_u64().expect("cursor"))
    }

    /// Every event in the log, paging with `since = cursor` (bounded number of pages).
    pub(crate) async fn all_events(&self) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        let mut since = 0;
        for _ in 0..1000 {
            let (page, cursor) = self
                .events_page(&format!("?since={since}&limit=1000"))
                .await;
            if page.is_empty() {
                return out;
            }
            assert!(cursor > since, "cursor must advance past a non-empty page");
            out.extend(page);
            since = cursor;
        }
        panic!("too many pages");
    }

    /// The value of a metric without labels (or with exactly these labels, written as in the
    /// exposition: `name{label="value"}`), from `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get("/metrics").await.expect(200).text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Every projection read a client can make of this server's state, answered: each list,
    /// then every formation (by id, by name, by-name), cell (record, events, events tail) and
    /// filter they name, and event pages. (path, status, body) in a fixed order, so two servers
    /// that serve the same projection give equal vectors.
    pub(crate) async fn every_get(&self) -> Vec<(String, u16, String)> {
        let mut paths = vec![
            "/v1/formations".to_owned(),
            "/v1/cells".to_owned(),
            "/v1/cells?state=pending".to_owned(),
            "/v1/cells?state=running".to_owned(),
            "/v1/cells?state=destroyed&limit=3".to_owned(),
            "/v1/events?since=0&limit=1000".to_owned(),
            "/v1/events?since=3&limit=5".to_owned(),
            "/v1/formations/by-name/no-such-name".to_owned(),
            "/v1/cells/no-such-cell".to_owned(),
            "/v1/cells/no-such-cell/events".to_owned(),
        ];
        let formations = self.get_json("/v1/formations").await;
        for f in formations["formations"]
            .as_array()
            .expect("formations array")
        {
            let id = f["id"].as_str().expect("formation id");
            let name = enc(f["name"].as_str().unwrap_or_default());
            paths.extend([
                format!("/v1/formations/{id}"),
                format!("/v1/formations/{name}"),
                format!("/v1/formations/by-name/{name}"),
                format!("/v1/cells?formation={id}"),
                format!("/v1/cells?formation={name}"),
                format!("/v1/events?since=0&formation={id}"),
            ]);
        }
        let cells = self.get_json("/v1/cells").await;
        for c in cells.as_array().expect("cells array") {
            let id = enc(c["id"].as_str().expect("cell id"));
            paths.extend([
                format!("/v1/cells/{id}"),
                format!("/v1/cells/{id}/events"),
                format!("/v1/cells/{id}/events?tail=2"),
            ]);
        }
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let r = self.get(&path).await;
            out.push((path, r.status, r.text()));
        }
        out
    }

    /// An authenticated POST of `body` with this content type.
    pub(crate) async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Resp {
        self.send(
            Method::POST,
            path,
            Auth::Token,
            &[("content-type", content_type)],
            Some(body.into()),
        )
        .await
    }

    /// An authenticated GET of a streaming `application/x-ndjson` answer (asserted: 200 and that
    /// content type), to read line by line.
    pub(crate) async fn follow(&self, path: &str) -> Follow {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("")),
            Some("application/x-ndjson"),
            "GET {path}"
        );
        Follow {
            resp,
            buf: Vec::new(),
        }
    }

    /// Polls `/readyz` until 200; fails loudly after [`READY_TIMEOUT`].
    pub(crate) async fn wait_ready(&self) {
        self.wait_ready_within(READY_TIMEOUT).await
    }

    /// Polls `/readyz` until 200; fails loudly after `limit`.
    pub(crate) async fn wait_ready_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                self.http.get(format!("{}/readyz", self.base)).send(),
            )
            .await;
            match attempt {
                Ok(Ok(r)) if r.status().as_u16() == 200 => return,
                Ok(Ok(r)) => {
                    last = format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_else(|e| e.to_string())
                    )
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} not ready within {limit:?}: {last}", self.addr);
    }
}

/// A streaming NDJSON answer ([`Client::follow`]); dropping it ends the request.
pub(crate) struct Follow {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Follow {
    /// Every complete line received so far, as JSON, once at least `n` arrived. Each chunk must
    /// come within [`REQUEST_TIMEOUT`], and at most 1000 chunks are read.
    pub(crate) async fn lines(&mut self, n: usize) -> Vec<Value> {
        for _ in 0..1000 {
            let complete = self.buf.iter().filter(|&&b| b == b'\n').count();
            if complete >= n {
                break;
            }
            let chunk = tokio::time::timeout(REQUEST_TIMEOUT, self.resp.chunk())
                .await
                .expect("a chunk in time")
                .expect("stream readable")
                .expect("stream still open");
            self.buf.extend_from_slice(&chunk);
        }
        let end = self
            .buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let lines: Vec<Value> = self.buf[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("each NDJSON line is JSON"))
            .collect();
        assert!(lines.len() >= n, "fewer than {n} lines: {lines:?}");
        lines
    }
}

/// The bytes of a JSON value, as a request body.
pub(crate) fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serializes")
}

/// The `seqs` of a 202 answer.
pub(crate) fn seqs_of(r: &Resp) -> Vec<u64> {
    let v = r.json();
    let obj = v.as_object().expect("202 body is an object");
    assert_eq!(obj.len(), 1, "202 body is exactly {{\"seqs\":[…]}}: {v}");
    v["seqs"]
        .as_array()
        .expect("seqs array")
        .iter()
        .map(|s| s.as_u64().expect("seq is a u64"))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// In-process server

/// Starts a server in this process with `config` and returns it with a client for it, as soon
/// as the listener is bound; fails loudly if that takes over [`READY_TIMEOUT`].
pub(crate) async fn start_config(
    config: cellos_server::Config,
) -> (cellos_server::Running, Client) {
    let running = tokio::time::timeout(READY_TIMEOUT, cellos_server::start(config))
        .await
        .expect("server start timed out")
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    let client = Client::new(running.local_addr());
    (running, client)
}

/// A test configuration on the embedded log in `dir` that neither writes nor reads checkpoints.
pub(crate) fn no_checkpoints(dir: &Path) -> cellos_server::Config {
    let mut c = cellos_server::Config::for_tests(TOKEN, dir.to_path_buf());
    c.checkpoints = cellos_server::checkpoint::Schedule {
        every_events: 0,
        every: Duration::ZERO,
    };
    c
}

/// Graceful shutdown of a server started with [`start_config`], bounded to 30 s.
pub(crate) async fn stop(running: cellos_server::Running) {
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .expect("shutdown timed out");
}

/// A server running in this process on 127.0.0.1:0 with its own data directory.
pub(crate) struct TestServer {
    running: Option<cellos_server::Running>,
    dir: Option<TempDir>,
    pub client: Client,
}

impl Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestServer {
    /// Starts on a fresh data directory and waits until ready.
    pub(crate) async fn start() -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir")).await
    }

    /// Starts on an existing data directory (a restart) and waits until ready.
    pub(crate) async fn start_in(dir: TempDir) -> TestServer {
        let server = Self::start_in_unready(dir).await;
        server.wait_ready().await;
        server
    }

    /// Starts on a data directory and returns as soon as the listener is bound (replay may
    /// still be running).
    pub(crate) async fn start_in_unready(dir: TempDir) -> TestServer {
        let config = cellos_server::Config::for_tests(TOKEN, dir.path().to_path_buf());
        let (running, client) = start_config(config).await;
        TestServer {
            running: Some(running),
            dir: Some(dir),
            client,
        }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub(crate) async fn shutdown(mut self) -> TempDir {
        let running = self.running.take().unwrap();
        stop(running).await;
        self.dir.take().unwrap()
    }
}

// ------------------------------------------------------------------------------------------------
// The real binary (for kill -9)

/// The `cellos-server` binary running as a child process on 127.0.0.1:0.
pub(crate) struct BinServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub client: Client,
    output: Arc<Mutex<Vec<String>>>,
}

impl Deref for BinServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl BinServer {
    /// Spawns the binary on `data_dir`, parses the bound address from its JSON log, waits ready.
    pub(crate) async fn spawn(data_dir: &Path) -> BinServer {
        let server = Self::spawn_unready(data_dir, &[]).await;
        server.wait_ready().await;
        server
    }

    /// Spawns the binary on `data_dir` with these extra environment variables and returns as
    /// soon as it logged its listening address (the boot replay may still be running).
    pub(crate) async fn spawn_unready(data_dir: &Path, env: &[(&str, &str)]) -> BinServer {
        let data_dir: PathBuf = data_dir.to_path_buf();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, output) =
            tokio::task::spawn_blocking(move || spawn_blocking(&data_dir, &env))
                .await
                .expect("spawning the binary");
        let client = Client::new(addr);
        BinServer {
            child: Some(child),
            addr,
            client,
            output,
        }
    }

    /// SIGKILL (then reap) the moment `now` says so, looking every 100 µs for at most `within`;
    /// whether it was killed. Blocks the calling thread: the kill comes within microseconds of
    /// what `now` saw.
    pub(crate) fn kill9_when(&mut self, now: impl Fn() -> bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if now() {
                if let Some(mut child) = self.child.take() {
                    child.kill().expect("SIGKILL");
                    let _ = child.wait();
                }
                return true;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        false
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    pub(crate) fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_blocking(
    data_dir: &Path,
    env: &[(String, String)],
) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cellos-server"))
        .env("CELLOS_SERVER_API_TOKEN", TOKEN)
        .env("CELLOS_SERVER_BIND", "127.0.0.1:0")
        .env("CELLOS_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env_remove("CELLOS_NATS_URL")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning cellos-server");
    let output = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let out = output.clone();
    std::thread::spawn(move || {
        // Keeps draining until EOF so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            out.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = output.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        if !s.is_empty() {
            err.lock().unwrap().push(format!("[stderr] {s}"));
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "cellos-server did not log its listening address; output:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "cellos-server listening" {
            let bind = v["fields"]["bind"].as_str().expect("fields.bind");
            let addr: SocketAddr = bind.parse().expect("bind is an address");
            return (child, addr, output);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Files of this crate

/// The crate's root directory.
pub(crate) fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A JSON file, parsed; panics naming the file when it cannot be read or parsed.
pub(crate) fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Files under `dir` (recursively), sorted, skipping directories named in `skip`.
pub(crate) fn files_under(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !skip.contains(&name) {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `a/b.schema.json` style path of `path` relative to `base`, with `/` separators.
pub(crate) fn rel_path(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).expect("path under base");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

// ------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 (for what the client library cannot send, e.g. chunked bodies)

/// Writes `request` to the server (write errors after the server answered are ignored) and reads
/// until the server closes: (status, head, body).
pub(crate) fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let _ = s.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        // Stop once a full response with a Content-Length body is in.
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
    let end = find(&buf, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head, buf[end + 4..].to_vec())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------------------------------------------
// CloudEvents

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A CloudEvent id unique in this test process.
pub(crate) fn fresh_id() -> String {
    format!(
        "ev-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// `2026-01-01T00:MM:SS.000Z` for a number of seconds (< 3600).
pub(crate) fn ts(secs: u32) -> String {
    format!("2026-01-01T00:{:02}:{:02}.000Z", secs / 60, secs % 60)
}

/// A CloudEvent with a fresh id.
pub(crate) fn cloud_event(ty: &str, source: &str, time: Option<&str>, data: Value) -> Value {
    let mut ev = json!({
        "specversion": "1.0",
        "id": fresh_id(),
        "source": source,
        "type": ty,
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(t) = time {
        ev["time"] = json!(t);
    }
    ev
}

pub(crate) fn started(cell: &str, spec: &str, run: Option<&str>, time: &str) -> Value {
    let mut data = json!({"cellId": cell, "specId": spec, "ttlSeconds": 300});
    if let Some(r) = run {
        data["runId"] = json!(r);
    }
    cloud_event(STARTED, "cellos-supervisor", Some(time), data)
}

pub(crate) fn command_completed(cell: &str, spec: &str, exit_code: i64, time: &str) -> Value {
    cloud_event(
        COMMAND_COMPLETED,
        "cellos-supervisor",
        Some(time),
        json!({"cellId": cell, "specId": spec, "exitCode": exit_code, "durationMs": 12,
               "argv": ["/bin/true"]}),
    )
}

pub(crate) fn destroyed(cell: &str, spec: &str, outcome: &str, time: &str) -> Value {
    cloud_event(
        DESTROYED,
        "cellos-supervisor",
        Some(time),
        json!({"cellId": cell, "specId": spec, "ttlSeconds": 300, "outcome": outcome}),
    )
}

pub(crate) fn formation_type(phase: &str) -> String {
    format!("dev.cellos.events.cell.formation.v1.{phase}")
}

/// A `created` event carrying the document.
pub(crate) fn formation_created(fid: &str, name: &str, time: &str, document: Value) -> Value {
    cloud_event(
        &formation_type("created"),
        fid,
        Some(time),
        json!({"formationId": fid, "formationName": name, "cellCount": 2,
               "failedCellIds": [], "document": document}),
    )
}

/// A lifecycle event for an existing formation.
pub(crate) fn formation_phase(fid: &str, name: &str, phase: &str, time: &str) -> Value {
    cloud_event(
        &formation_type(phase),
        fid,
        Some(time),
        json!({"formationId": fid, "formationName": name, "cellCount": 2, "failedCellIds": []}),
    )
}

/// A small formation document (flat shape).
pub(crate) fn document(name: &str) -> Value {
    json!({
        "name": name,
        "coordinator": "coord",
        "members": [
            {"id": "coord", "authority": {"egress": ["a.example"]}},
            {"id": "worker", "parent": "coord", "authority": {"egress": ["a.example"]}}
        ]
    })
}

/// The smallest admission request the gate admits: a coordinator and one member it authorizes.
pub(crate) fn admission_request(name: &str) -> Value {
    json!({"name": name, "coordinator": "c",
           "members": [{"id": "c"}, {"id": "w", "authorizedBy": "c"}]})
}

/// A fresh random formation id, lowercase hyphenated.
pub(crate) fn new_fid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

// ------------------------------------------------------------------------------------------------
// Expected records

fn jstr(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn jopt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), jstr)
}

/// Compact JSON with object keys sorted at every level (what formation documents render as).
pub(crate) fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", jstr(k), canonical(&m[k])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => serde_json::to_string(other).unwrap(),
    }
}

/// The exact bytes of a formation record.
pub(crate) fn formation_record(
    id: &str,
    name: &str,
    status: &str,
    document: &Value,
    created_at: Option<&str>,
    updated_at: Option<&str>,
) -> String {
    format!(
        "{{\"id\":{},\"name\":{},\"status\":{},\"document\":{},\"created_at\":{},\"updated_at\":{}}}",
        jstr(id),
        jstr(name),
        jstr(status),
        canonical(document),
        jopt(created_at),
        jopt(updated_at)
    )
}

/// A cell record as clients see it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CellRec<'a> {
    pub id: &'a str,
    pub spec_id: &'a str,
    pub run_id: Option<&'a str>,
    pub state: &'a str,
    pub formation_id: Option<&'a str>,
    pub started_at: Option<&'a str>,
    pub destroyed_at: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub exit_code: Option<i64>,
}

impl CellRec<'_> {
    /// The exact bytes: every key, in order, `null` when unset, `status` mirroring `state`.
    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"id\":{},\"spec_id\":{},\"run_id\":{},\"state\":{},\"status\":{},\"formation_id\":{},\"started_at\":{},\"destroyed_at\":{},\"outcome\":{},\"exit_code\":{}}}",
            jstr(self.id),
            jstr(self.spec_id),
            jopt(self.run_id),
            jstr(self.state),
            jstr(self.state),
            jopt(self.formation_id),
            jopt(self.started_at),
            jopt(self.destroyed_at),
            jopt(self.outcome),
            self.exit_code.map_or_else(|| "null".to_owned(), |c| c.to_string())
        )
    }
}

/// Percent-encodes every byte outside the RFC 3986 unreserved set (for path segments).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (the inverse of [`enc`]); anything else, including a `%` not followed by
/// two hex digits, is kept as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("a percent-decoded string is UTF-8")
}
