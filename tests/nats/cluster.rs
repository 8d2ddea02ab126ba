//! A JetStream cluster of real nats-server processes on loopback: config files written here
//! (`server_name`, `cluster { routes }`, a store directory per node, the monitoring port), nodes
//! killed with SIGKILL and restarted, and questions the tests ask of it (which node leads a
//! stream, which node a client is connected to). Every wait is bounded.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run servers and wait for them in real time, and read their own environment switches"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::{binary_or_skip, free_port, Nats, NatsSpec, NATS_TIMEOUT};

pub(crate) const CLUSTER_NAME: &str = "cellos";

pub(crate) struct Cluster {
    pub nodes: Vec<Nats>,
    /// Monitoring (HTTP) port of each node.
    monitor: Vec<u16>,
}

fn node_conf(index: usize, monitor: u16, route: u16, routes: &[u16]) -> String {
    let routes: Vec<String> = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    format!(
        "server_name: n{index}\n\
         listen: 127.0.0.1:{{port}}\n\
         http: 127.0.0.1:{monitor}\n\
         jetstream {{ store_dir: \"{{store}}\" }}\n\
         cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
        routes.join(", ")
    )
}

impl Cluster {
    /// `size` nodes, started together (JetStream needs a quorum to elect its meta leader), or
    /// `None` when nats-server is missing and not required.
    pub(crate) async fn start(size: usize) -> Option<Cluster> {
        let bin = binary_or_skip()?;
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<u16> = ports.iter().map(|p| p.2).collect();
        let mut nodes: Vec<Nats> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, monitor, route))| {
                let spec = NatsSpec {
                    conf: node_conf(i + 1, monitor, route, &routes),
                    client: Arc::new(async_nats::ConnectOptions::new),
                    scheme: "nats",
                };
                Nats::new(bin.clone(), Some(spec), client)
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            assert!(
                node.wait_ready().await,
                "cluster node did not start:\n{}",
                node.log_text()
            );
        }
        let monitor = ports.iter().map(|p| p.1).collect();
        Some(Cluster { nodes, monitor })
    }

    /// Every node's URL, comma-separated (the server's seeds).
    pub(crate) fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Nats::url).collect();
        urls.join(",")
    }

    /// A JetStream context through the first running node.
    pub(crate) async fn jetstream(&self) -> jetstream::Context {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node");
        node.jetstream().await
    }

    /// Index of the node leading `stream`'s replicas, once one leads (bounded wait).
    pub(crate) async fn stream_leader(&self, stream: &str) -> usize {
        let deadline = Instant::now() + NATS_TIMEOUT;
        loop {
            let js = self.jetstream().await;
            let leader = match js.get_stream(stream).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.cluster.clone())
                    .and_then(|c| c.leader),
                Err(_) => None,
            };
            if let Some(index) = leader.and_then(|l| node_index(&l)) {
                return index;
            }
            assert!(Instant::now() < deadline, "no leader for stream {stream}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the running node a client named `name` is connected to, from the nodes'
    /// monitoring endpoints.
    pub(crate) async fn serving(&self, name: &str) -> Option<usize> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}/connz?limit=1024", self.monitor[i]);
            let Ok(r) = http.get(url).send().await else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                continue;
            };
            let conns = v["connections"].as_array().cloned().unwrap_or_default();
            if conns.iter().any(|c| c["name"] == name) {
                return Some(i);
            }
        }
        None
    }
}

/// `n3` → 2.
fn node_index(server_name: &str) -> Option<usize> {
    server_name
        .strip_prefix('n')?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}
