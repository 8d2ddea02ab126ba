//! A real `nats-server` for the JetStream tests: JetStream on, its own store directory, a free
//! loopback port, stopped on drop. Every wait is bounded. A server can also run from a config
//! file the test writes (TLS, authorization, a cluster node: [`NatsSpec`], `cluster.rs`).
//!
//! When `nats-server` is not installed the tests print why and pass, unless
//! `CELLOS_REQUIRE_NATS=1`, which makes them fail loudly instead.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]
#![allow(dead_code)]

pub(crate) mod cluster;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tempfile::TempDir;

/// Upper bound on a start (process up and JetStream answering) or a stop.
pub(crate) const NATS_TIMEOUT: Duration = Duration::from_secs(20);

/// The `nats-server` binary: on PATH, or where Debian installs it.
fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A loopback port that is free now, below the kernel's ephemeral range (32768 and up here):
/// nats-server binds it a moment later, and a port the kernel hands out for `:0` listeners and
/// outgoing connections (which other tests running at the same time make by the hundred) could
/// be taken again in between. Here only another explicit pick can collide, one in 22,000.
pub(crate) fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    const FIRST: u16 = 10_000;
    const PORTS: u64 = 32_768 - FIRST as u64;
    let state = RandomState::new();
    for attempt in 0u64.. {
        let port = FIRST + (state.hash_one(attempt) % PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(attempt < 10_000, "no free loopback port below 32768");
    }
    unreachable!("the loop returns or fails")
}

/// How test clients connect to a server (credentials, TLS).
pub(crate) type ClientOptions = Arc<dyn Fn() -> async_nats::ConnectOptions + Send + Sync>;

/// A server run from a config file.
#[derive(Clone)]
pub(crate) struct NatsSpec {
    /// The config file; `{port}` and `{store}` are filled in with the client port and the
    /// store directory.
    pub conf: String,
    /// How test clients (and the readiness check) connect.
    pub client: ClientOptions,
    /// `nats` or `tls`.
    pub scheme: &'static str,
}

/// The binary, or `None` after saying why (a failure under `CELLOS_REQUIRE_NATS=1`).
pub(crate) fn binary_or_skip() -> Option<PathBuf> {
    let found = find_binary();
    if found.is_none() {
        if std::env::var("CELLOS_REQUIRE_NATS").as_deref() == Ok("1") {
            panic!("CELLOS_REQUIRE_NATS=1 but nats-server is not on PATH (nor in /usr/sbin)");
        }
        eprintln!(
            "SKIPPED: nats-server is not installed (not on PATH, nor in /usr/sbin); \
             install it or set CELLOS_REQUIRE_NATS=1 to make this a failure"
        );
    }
    found
}

/// A running (or stopped, between [`Nats::stop`] and [`Nats::restart`]) nats-server.
pub(crate) struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    store: TempDir,
    logs: TempDir,
    starts: u32,
    spec: Option<NatsSpec>,
}

impl Nats {
    /// Starts a fresh server, or returns `None` (after saying why) when nats-server is missing
    /// and `CELLOS_REQUIRE_NATS` is not `1`.
    pub(crate) async fn start() -> Option<Nats> {
        Nats::start_spec(None).await
    }

    /// [`Nats::start`] from a config file.
    pub(crate) async fn start_with(spec: NatsSpec) -> Option<Nats> {
        Nats::start_spec(Some(spec)).await
    }

    async fn start_spec(spec: Option<NatsSpec>) -> Option<Nats> {
        let mut nats = Nats::new(binary_or_skip()?, spec, 0);
        // Another process may take the port between picking and binding it: pick again.
        for _ in 0..5 {
            nats.port = free_port();
            if nats.spawn_and_wait().await {
                return Some(nats);
            }
        }
        panic!("nats-server did not start:\n{}", nats.log_text());
    }

    /// A server on a port chosen by the caller, not started yet (cluster nodes).
    pub(crate) fn new(bin: PathBuf, spec: Option<NatsSpec>, port: u16) -> Nats {
        Nats {
            bin,
            child: None,
            port,
            store: tempfile::tempdir().expect("store dir"),
            logs: tempfile::tempdir().expect("log dir"),
            starts: 0,
            spec,
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = self.spec.as_ref().map_or("nats", |s| s.scheme);
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn store_dir(&self) -> &Path {
        self.store.path()
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("nats-{}.log", self.starts))
    }

    /// Everything the server processes wrote so far.
    pub(crate) fn log_text(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.logs.path().join(format!("nats-{i}.log"));
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }

    /// Spawns on `self.port` without waiting for it.
    pub(crate) fn spawn(&mut self) {
        self.starts += 1;
        let log = File::create(self.log_path()).expect("nats log file");
        let mut command = Command::new(&self.bin);
        match &self.spec {
            None => command.arg("-js").arg("-sd").arg(self.store.path()).args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ]),
            Some(spec) => {
                let conf = spec
                    .conf
                    .replace("{port}", &self.port.to_string())
                    .replace("{store}", &self.store.path().display().to_string());
                let path = self.logs.path().join(format!("nats-{}.conf", self.starts));
                std::fs::write(&path, conf).expect("writing the nats-server config");
                command.arg("-c").arg(path)
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning nats-server");
        self.child = Some(child);
    }

    /// Spawns on `self.port` and waits until JetStream answers. `false` if the process exited
    /// (typically: the port was taken).
    async fn spawn_and_wait(&mut self) -> bool {
        self.spawn();
        self.wait_ready().await
    }

    /// Waits until the server accepts connections and JetStream answers. `false` if the process
    /// exited.
    pub(crate) async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + NATS_TIMEOUT;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("nats-server exited ({status}):\n{}", self.log_text());
                self.child = None;
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not accepting connections within {NATS_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Accepting connections; now wait for JetStream to answer API requests.
        // (The raw account info request: async-nats' typed one expects 2.10+ fields.)
        let client = self.client().await;
        loop {
            let info = client.request("$JS.API.INFO", bytes::Bytes::new());
            let last = match tokio::time::timeout(Duration::from_secs(2), info).await {
                Ok(Ok(m)) if !m.payload.windows(7).any(|w| w == b"\"error\"") => return true,
                Ok(Ok(m)) => String::from_utf8_lossy(&m.payload).into_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            assert!(
                Instant::now() < deadline,
                "JetStream not answering within {NATS_TIMEOUT:?} ({last}):\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then reap: a node lost without warning.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM: the file store is flushed), SIGKILL if it lingers.
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + NATS_TIMEOUT;
        loop {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts again on the same port and store directory (after [`Nats::stop`]).
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        // The old listener is closed; a few tries cover a slow release of the port.
        for _ in 0..10 {
            if self.spawn_and_wait().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("nats-server did not restart:\n{}", self.log_text());
    }

    /// A plain client (bounded retries while the server comes up).
    pub(crate) async fn client(&self) -> async_nats::Client {
        let deadline = Instant::now() + NATS_TIMEOUT;
        loop {
            let options = match &self.spec {
                Some(spec) => (spec.client)(),
                None => async_nats::ConnectOptions::new(),
            };
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                options.name("cellos-test-producer").connect(self.url()),
            )
            .await;
            match attempt {
                Ok(Ok(c)) => return c,
                Ok(Err(e)) if Instant::now() >= deadline => panic!("connecting to NATS: {e}"),
                Err(_) if Instant::now() >= deadline => panic!("connecting to NATS timed out"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A JetStream context on a fresh client.
    pub(crate) async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Connection settings for a NATS URL with no credentials or TLS.
pub(crate) fn settings(url: &str) -> cellos_server::log::jetstream::NatsSettings {
    cellos_server::log::jetstream::NatsSettings::from_urls(url).expect("a NATS URL")
}
