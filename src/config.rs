//! All configuration: flags and environment variables, parsed and validated once. This is the only
//! module that reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use async_nats::jetstream::stream::Placement;

use crate::checkpoint::Schedule;
use crate::fanout::{DEFAULT_RING_BYTES, DEFAULT_RING_CAPACITY};
use crate::log::jetstream::{
    NatsAuth, NatsSettings, NatsTls, Secret, SettingsError, StreamSettings, MAX_REPLICAS,
};

/// Default checkpoint triggers: at the replay rates measured here (about 400,000 events/s) a
/// boot then replays at most a quarter of a second of log after loading the checkpoint.
pub const DEFAULT_CHECKPOINT_EVERY_EVENTS: u64 = 100_000;
pub const DEFAULT_CHECKPOINT_EVERY_SECS: u64 = 300;

/// Default cap on concurrent connections: under the 20,000 open files per process, with headroom
/// for the log, listeners and outbound connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "cellos-server",
    version,
    about = "CellOS control plane: admits formations, projects the event log, streams events."
)]
pub struct Args {
    /// Bearer token every authenticated route requires (required, non-empty).
    #[arg(long, env = "CELLOS_SERVER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Listen address, host:port (the host may be a name to resolve).
    #[arg(long, env = "CELLOS_SERVER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// NATS seed servers, comma-separated (nats://host:port or tls://host:port; credentials as
    /// user:password@ or token@ are accepted and never logged); when set, JetStream stream
    /// CELLOS_EVENTS is the event log. The client also uses the servers the cluster advertises.
    #[arg(long, env = "CELLOS_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// NATS user (with --nats-password).
    #[arg(long, env = "CELLOS_NATS_USER", hide_env_values = true)]
    pub nats_user: Option<String>,

    /// NATS password (with --nats-user). Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "CELLOS_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS token. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "CELLOS_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// NATS creds file (a user JWT and its nkey seed, for servers in operator mode).
    #[arg(long, env = "CELLOS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// File holding the NATS nkey seed (SU...) of an nkey user.
    #[arg(long, env = "CELLOS_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,

    /// PEM file of the CA(s) that sign the NATS servers' certificates (default: the system's).
    #[arg(long, env = "CELLOS_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS servers that verify clients (with --nats-tls-key).
    #[arg(long, env = "CELLOS_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of --nats-tls-cert.
    #[arg(long, env = "CELLOS_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Refuse NATS servers that do not offer TLS (also implied by tls:// seeds).
    #[arg(long, env = "CELLOS_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,

    /// Replicas of the stream and of the checkpoint bucket when the server creates them (1..=5;
    /// 3 on a production cluster). An existing stream is used as it is; a different value is
    /// logged as a warning.
    #[arg(long, env = "CELLOS_NATS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REPLICAS as u64))]
    pub nats_stream_replicas: u64,

    /// Place the stream and the checkpoint bucket in this NATS cluster (by name).
    #[arg(long, env = "CELLOS_NATS_PLACEMENT_CLUSTER")]
    pub nats_placement_cluster: Option<String>,

    /// Place the stream and the checkpoint bucket on servers with these tags (comma-separated).
    #[arg(long, env = "CELLOS_NATS_PLACEMENT_TAGS", value_delimiter = ',')]
    pub nats_placement_tags: Vec<String>,

    /// Most bytes the stream keeps, oldest removed first (0 = no bound).
    #[arg(long, env = "CELLOS_NATS_MAX_BYTES", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub nats_max_bytes: u64,

    /// Directory of the embedded event log (used when no NATS URL is set).
    #[arg(long, env = "CELLOS_DATA_DIR", default_value = "./cellos-data")]
    pub data_dir: PathBuf,

    /// Embedded log: drop events older than this many seconds (0 = never). Default 90 days.
    #[arg(
        long,
        env = "CELLOS_RETENTION_MAX_AGE_SECS",
        default_value_t = 7_776_000
    )]
    pub retention_max_age_secs: u64,

    /// Embedded log: keep at most this many events (0 = no limit).
    #[arg(long, env = "CELLOS_RETENTION_MAX_EVENTS", default_value_t = 0)]
    pub retention_max_events: u64,

    /// Write a checkpoint of the projection after this many events (0 = not by count). With the
    /// time trigger, whichever comes first; both 0 turns checkpoints off.
    #[arg(long, env = "CELLOS_CHECKPOINT_EVERY_EVENTS", default_value_t = DEFAULT_CHECKPOINT_EVERY_EVENTS)]
    pub checkpoint_every_events: u64,

    /// Write a checkpoint of the projection this many seconds after the last one, if any event
    /// was applied since (0 = not by time; 0..=86400).
    #[arg(long, env = "CELLOS_CHECKPOINT_EVERY_SECS", default_value_t = DEFAULT_CHECKPOINT_EVERY_SECS,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub checkpoint_every_secs: u64,

    /// Maximum concurrent connections (HTTP and WebSocket); beyond it new ones are refused.
    #[arg(long, env = "CELLOS_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Frames kept in the shared WebSocket ring (rounded up to a power of two, 1024..=4194304).
    #[arg(long, env = "CELLOS_RING_CAPACITY", default_value_t = DEFAULT_RING_CAPACITY as u64,
          value_parser = clap::value_parser!(u64).range(1024..=4_194_304))]
    pub ring_capacity: u64,

    /// Bytes of frames the WebSocket ring keeps at most, per-frame overhead included; older
    /// frames leave first (subscribers behind them resume from the log). 1 MiB..=64 GiB.
    #[arg(long, env = "CELLOS_RING_BYTES", default_value_t = DEFAULT_RING_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1 << 20..=64 << 30))]
    pub ring_bytes: u64,

    /// Frames a WebSocket subscriber may fall behind the newest before it is closed with 4008
    /// (at most half the ring).
    #[arg(long, env = "CELLOS_WS_MAX_BACKLOG", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(16..=2_097_152))]
    pub ws_max_backlog: u64,

    /// Worker threads of the runtime that runs WebSocket sessions and followed event streams,
    /// apart from the one serving HTTP and reading the log, so that a heavy fan-out cannot delay
    /// requests or the log tail (0 = run them with everything else; 0..=1024). Default: one per
    /// CPU.
    #[arg(long, env = "CELLOS_WS_THREADS",
          value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub ws_threads: Option<u64>,

    /// Seconds between WebSocket pings.
    #[arg(long, env = "CELLOS_WS_PING_SECS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_ping_secs: u64,

    /// Seconds without a pong after which a WebSocket is closed (1008).
    #[arg(long, env = "CELLOS_WS_PONG_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_pong_timeout_secs: u64,

    /// Every write is answered within this in all (ms): waiting for the boot replay, for its
    /// event to be logged and to be applied share one deadline; past it, 503.
    #[arg(long, env = "CELLOS_WRITE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub write_timeout_ms: u64,

    /// While the projection replays the log at start, how long a read waits for the replay to
    /// finish before answering 503 with Retry-After (ms, 0 = answer 503 at once; 0..=60000).
    /// Writes wait for it within their write timeout instead.
    #[arg(long, env = "CELLOS_REPLAY_READ_WAIT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub replay_read_wait_ms: u64,

    /// JetStream log: how long one round of publishes waits for its acks before the unacknowledged
    /// events are published again with the same Nats-Msg-Id (3 rounds, then 503) (ms,
    /// 100..=60000).
    #[arg(long, env = "CELLOS_NATS_ACK_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub nats_ack_timeout_ms: u64,

    /// Time allowed to receive a request's headers (ms).
    #[arg(long, env = "CELLOS_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_timeout_ms: u64,

    /// Time allowed to send a request's body once its headers are in; slower bodies get 408 and
    /// the connection is closed (ms).
    #[arg(long, env = "CELLOS_BODY_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub body_timeout_ms: u64,

    /// On SIGTERM: how long in-flight requests may take to finish before their connections are
    /// dropped (ms).
    #[arg(long, env = "CELLOS_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Where events are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogBackend {
    Embedded {
        data_dir: PathBuf,
    },
    JetStream {
        nats: NatsSettings,
        stream: StreamSettings,
    },
}

impl LogBackend {
    /// JetStream at these seeds (comma-separated URLs), with the default stream settings.
    pub fn jetstream(urls: &str) -> Result<LogBackend, SettingsError> {
        Ok(LogBackend::JetStream {
            nats: NatsSettings::from_urls(urls)?,
            stream: StreamSettings::default(),
        })
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_token: String,
    pub bind: String,
    pub log: LogBackend,
    pub retention_max_age: Duration,
    pub retention_max_events: u64,
    /// When checkpoints of the projection are written; disabled when both triggers are zero.
    pub checkpoints: Schedule,
    pub max_connections: usize,
    pub ring_capacity: usize,
    pub ring_bytes: usize,
    pub ws_max_backlog: usize,
    /// Workers of the WebSocket sessions' own runtime; 0 runs them on the caller's runtime.
    pub ws_threads: usize,
    pub ws_ping_every: Duration,
    pub ws_pong_timeout: Duration,
    pub write_timeout: Duration,
    /// Longest wait of a read that arrives while the boot replay runs, before its 503.
    pub replay_read_wait: Duration,
    /// JetStream log: wait for the acks of one round of publishes.
    pub nats_ack_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_filter: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("CELLOS_SERVER_API_TOKEN must be set (fail-closed): environment variable not found")]
    MissingToken,
    #[error("CELLOS_SERVER_API_TOKEN must not be empty")]
    EmptyToken,
    #[error("CELLOS_NATS_URL must not be empty when set")]
    EmptyNatsUrl,
    #[error("{0}")]
    Nats(#[from] SettingsError),
    #[error("CELLOS_NATS_USER and CELLOS_NATS_PASSWORD go together")]
    UserWithoutPassword,
    #[error("NATS settings ({0}) are given but CELLOS_NATS_URL is not: the embedded log needs none")]
    NatsSettingsWithoutUrl(&'static str),
}

impl Args {
    /// Seeds, credentials (from the URLs or their own settings, one way only) and TLS.
    fn nats_settings(&self, urls: &str) -> Result<NatsSettings, ConfigError> {
        let auth = match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => NatsAuth::UserPassword {
                user: user.clone(),
                password: Secret::new(password.clone()),
            },
            (None, None) => NatsAuth::None,
            _ => return Err(ConfigError::UserWithoutPassword),
        };
        let mut settings = NatsSettings::from_urls(urls)?.with_auth(auth)?;
        if let Some(token) = &self.nats_token {
            settings = settings.with_auth(NatsAuth::Token(Secret::new(token.clone())))?;
        }
        if let Some(path) = &self.nats_nkey {
            settings = settings.with_auth(NatsAuth::NkeySeedFile(path.clone()))?;
        }
        if let Some(path) = &self.nats_creds {
            settings = settings.with_auth(NatsAuth::CredsFile(path.clone()))?;
        }
        settings.tls = NatsTls {
            ca: self.nats_tls_ca.clone(),
            client: match (&self.nats_tls_cert, &self.nats_tls_key) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                (None, None) => None,
                _ => return Err(SettingsError::CertWithoutKey.into()),
            },
            required: self.nats_tls_required,
        };
        Ok(settings)
    }

    fn stream_settings(&self) -> StreamSettings {
        let placement = (self.nats_placement_cluster.is_some()
            || !self.nats_placement_tags.is_empty())
        .then(|| Placement {
            cluster: self.nats_placement_cluster.clone(),
            tags: self.nats_placement_tags.clone(),
        });
        StreamSettings {
            replicas: self.nats_stream_replicas as usize,
            placement,
            max_bytes: if self.nats_max_bytes == 0 {
                -1
            } else {
                self.nats_max_bytes as i64
            },
        }
    }

    /// A NATS-only setting given without a NATS URL, if any (its flag's name).
    fn nats_setting_given(&self) -> Option<&'static str> {
        [
            (self.nats_user.is_some(), "--nats-user"),
            (self.nats_password.is_some(), "--nats-password"),
            (self.nats_token.is_some(), "--nats-token"),
            (self.nats_creds.is_some(), "--nats-creds"),
            (self.nats_nkey.is_some(), "--nats-nkey"),
            (self.nats_tls_ca.is_some(), "--nats-tls-ca"),
            (self.nats_tls_cert.is_some(), "--nats-tls-cert"),
            (self.nats_tls_key.is_some(), "--nats-tls-key"),
            (self.nats_tls_required, "--nats-tls-required"),
            (self.nats_stream_replicas != 1, "--nats-stream-replicas"),
            (self.nats_placement_cluster.is_some(), "--nats-placement-cluster"),
            (!self.nats_placement_tags.is_empty(), "--nats-placement-tags"),
            (self.nats_max_bytes != 0, "--nats-max-bytes"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let api_token = match self.api_token.clone() {
            None => return Err(ConfigError::MissingToken),
            Some(t) if t.trim().is_empty() => return Err(ConfigError::EmptyToken),
            Some(t) => t,
        };
        let log = match self.nats_url.as_deref() {
            Some(url) if url.trim().is_empty() => return Err(ConfigError::EmptyNatsUrl),
            Some(url) => LogBackend::JetStream {
                nats: self.nats_settings(url)?,
                stream: self.stream_settings(),
            },
            None => {
                if let Some(setting) = self.nats_setting_given() {
                    return Err(ConfigError::NatsSettingsWithoutUrl(setting));
                }
                LogBackend::Embedded {
                    data_dir: self.data_dir.clone(),
                }
            }
        };
        Ok(Config {
            api_token,
            bind: self.bind,
            log,
            retention_max_age: Duration::from_secs(self.retention_max_age_secs),
            retention_max_events: self.retention_max_events,
            checkpoints: Schedule {
                every_events: self.checkpoint_every_events,
                every: Duration::from_secs(self.checkpoint_every_secs),
            },
            max_connections: self.max_connections as usize,
            ring_capacity: self.ring_capacity as usize,
            ring_bytes: usize::try_from(self.ring_bytes).unwrap_or(usize::MAX),
            ws_max_backlog: self.ws_max_backlog as usize,
            ws_threads: match self.ws_threads {
                Some(n) => n as usize,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            ws_ping_every: Duration::from_secs(self.ws_ping_secs),
            ws_pong_timeout: Duration::from_secs(self.ws_pong_timeout_secs),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            replay_read_wait: Duration::from_millis(self.replay_read_wait_ms),
            nats_ack_timeout: Duration::from_millis(self.nats_ack_timeout_ms),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            log_filter: self.log_filter,
        })
    }
}

impl Config {
    /// Parses flags and the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Args::parse().validate()
    }

    /// A configuration for tests and embedding: embedded log in `data_dir`, loopback, port 0.
    pub fn for_tests(api_token: &str, data_dir: PathBuf) -> Config {
        Config {
            api_token: api_token.to_owned(),
            bind: "127.0.0.1:0".into(),
            log: LogBackend::Embedded { data_dir },
            retention_max_age: Duration::from_secs(7_776_000),
            retention_max_events: 0,
            checkpoints: Schedule {
                every_events: DEFAULT_CHECKPOINT_EVERY_EVENTS,
                every: Duration::from_secs(DEFAULT_CHECKPOINT_EVERY_SECS),
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ring_capacity: DEFAULT_RING_CAPACITY,
            ring_bytes: DEFAULT_RING_BYTES,
            ws_max_backlog: 16_384,
            ws_threads: 1,
            ws_ping_every: Duration::from_secs(25),
            ws_pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            replay_read_wait: Duration::from_secs(2),
            nats_ack_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            log_filter: "info".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["cellos-server"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap().validate()
    }

    #[test]
    fn token_is_required_and_not_blank() {
        // Flags win over the environment, so these hold whatever the test environment has.
        assert_eq!(
            parse(&["--api-token", " "]).unwrap_err(),
            ConfigError::EmptyToken
        );
        let c = parse(&["--api-token", "t"]).unwrap();
        assert_eq!(c.api_token, "t");
    }

    #[test]
    fn nats_url_selects_jetstream() {
        let c = parse(&["--api-token", "t", "--nats-url", "nats://127.0.0.1:4222"]).unwrap();
        assert_eq!(c.log, LogBackend::jetstream("nats://127.0.0.1:4222").unwrap());
        assert!(Args::try_parse_from(["x", "--ring-capacity", "10"]).is_err());
        assert!(Args::try_parse_from(["x", "--max-connections", "0"]).is_err());
        assert!(Args::try_parse_from(["x", "--nats-ack-timeout-ms", "10"]).is_err());
        assert_eq!(c.nats_ack_timeout, Duration::from_secs(2));
    }

    #[test]
    fn request_and_shutdown_timeouts_have_defaults_and_bounds() {
        let c = parse(&["--api-token", "t"]).unwrap();
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        let c = parse(&["--api-token", "t", "--body-timeout-ms", "250"]).unwrap();
        assert_eq!(c.body_timeout, Duration::from_millis(250));
        assert!(Args::try_parse_from(["x", "--body-timeout-ms", "10"]).is_err());
        let c = parse(&["--api-token", "t", "--shutdown-grace-ms", "0"]).unwrap();
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert!(Args::try_parse_from(["x", "--shutdown-grace-ms", "600001"]).is_err());
        assert_eq!(c.replay_read_wait, Duration::from_secs(2));
        let c = parse(&["--api-token", "t", "--replay-read-wait-ms", "0"]).unwrap();
        assert_eq!(c.replay_read_wait, Duration::ZERO);
        assert!(Args::try_parse_from(["x", "--replay-read-wait-ms", "60001"]).is_err());
    }

    #[test]
    fn checkpoints_by_count_or_time_and_off_with_both_zero() {
        let c = parse(&["--api-token", "t"]).unwrap();
        assert_eq!(c.checkpoints.every_events, 100_000);
        assert_eq!(c.checkpoints.every, Duration::from_secs(300));
        assert!(c.checkpoints.enabled());
        let c = parse(&["--api-token", "t", "--checkpoint-every-events", "0"]).unwrap();
        assert!(c.checkpoints.enabled());
        let off = [
            "--api-token",
            "t",
            "--checkpoint-every-events",
            "0",
            "--checkpoint-every-secs",
            "0",
        ];
        assert!(!parse(&off).unwrap().checkpoints.enabled());
        assert!(Args::try_parse_from(["x", "--checkpoint-every-secs", "86401"]).is_err());
    }

    #[test]
    fn websocket_sessions_get_one_thread_per_cpu_unless_told() {
        let c = parse(&["--api-token", "t"]).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.ws_threads, cpus);
        assert_eq!(parse(&["--api-token", "t", "--ws-threads", "0"]).unwrap().ws_threads, 0);
        assert_eq!(parse(&["--api-token", "t", "--ws-threads", "3"]).unwrap().ws_threads, 3);
        assert!(Args::try_parse_from(["x", "--ws-threads", "1025"]).is_err());
    }
}
