//! Named counters, gauges and histograms, and their Prometheus rendering for `GET /metrics`.
//!
//! Each server owns its own recorder (none is installed globally), so several servers in one
//! process (tests) keep separate figures. Handles are registered once and are cheap to update.

#![allow(clippy::disallowed_methods, reason = "the newest checkpoint's age, rendered on each scrape")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const META: Metadata<'static> = Metadata::new("cellos_server", Level::INFO, None);

/// Buckets (seconds) for latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];
/// Buckets for batch sizes.
const SIZE_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub ingest: IngestMetrics,
    pub boot: BootMetrics,
    pub checkpoint: CheckpointMetrics,
    pub log_lag: Gauge,
    pub snapshot_age_seconds: Gauge,
    pub ws_connections: Gauge,
    /// Bytes and frames the fan-out ring holds (set when `/metrics` is read).
    pub ring_bytes: Gauge,
    pub ring_frames: Gauge,
    pub ws_frames_sent: Counter,
    pub ws_lagged: Counter,
    pub connections_rejected: Counter,
    /// When the ingest thread last published a snapshot (ms since the epoch).
    last_publish_ms: AtomicU64,
}

/// Ingest figures the ingest thread updates once per round.
pub struct IngestMetrics {
    pub batch_events: Histogram,
    pub batch_seconds: Histogram,
    pub cursor: Gauge,
}

/// The boot replay's progress (see `ingest::boot`).
pub struct BootMetrics {
    /// 1 until the projection holds everything the log held at start, then 0.
    pub replaying: Gauge,
    /// The log's last seq when it was first reached after start.
    pub target: Gauge,
    /// Events applied by the replay so far (all of them once it is over).
    pub events: Gauge,
    /// Seconds the replay has taken so far (its whole duration once it is over).
    pub seconds: Gauge,
}

/// Checkpoints of the projection (see `checkpoint`).
pub struct CheckpointMetrics {
    /// Seq of the newest checkpoint this server wrote or booted from (0: none).
    pub last_seq: Gauge,
    /// Size of the last checkpoint written.
    pub last_bytes: Gauge,
    /// Time the last checkpoint took, encoding and writing.
    pub last_seconds: Gauge,
    pub written: Counter,
    pub failures: Counter,
    /// Seq of the checkpoint the projection was loaded from at boot (0: replayed the whole log).
    pub boot_seq: Gauge,
    /// Time to find, read and restore that checkpoint.
    pub load_seconds: Gauge,
    /// Events retention dropped before any checkpoint held them, found at boot: the projection
    /// misses them (0: none).
    pub lost_events: Gauge,
    /// Age of the newest checkpoint (rendered from `last_ms`).
    age_seconds: Gauge,
    /// When the newest checkpoint was written or loaded (ms since the epoch; 0: none).
    last_ms: AtomicU64,
}

impl CheckpointMetrics {
    /// The newest checkpoint is now this one (written, or loaded at boot).
    pub fn set_newest(&self, seq: u64) {
        self.last_seq.set(seq as f64);
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_events".into()),
                    SIZE_BUCKETS,
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let c = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &META)
        };
        let ingest = IngestMetrics {
            batch_events: recorder
                .register_histogram(&Key::from_name("cellos_ingest_batch_events"), &META),
            batch_seconds: recorder
                .register_histogram(&Key::from_name("cellos_ingest_batch_seconds"), &META),
            cursor: recorder.register_gauge(&Key::from_name("cellos_applied_cursor"), &META),
        };
        let g = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &META);
        let boot = BootMetrics {
            replaying: g("cellos_boot_replaying"),
            target: g("cellos_boot_replay_target_seq"),
            events: g("cellos_boot_replay_events"),
            seconds: g("cellos_boot_replay_seconds"),
        };
        boot.replaying.set(1.0);
        let checkpoint = CheckpointMetrics {
            last_seq: g("cellos_checkpoint_last_seq"),
            last_bytes: g("cellos_checkpoint_last_bytes"),
            last_seconds: g("cellos_checkpoint_last_duration_seconds"),
            written: c("cellos_checkpoint_writes_total", vec![]),
            failures: c("cellos_checkpoint_failures_total", vec![]),
            boot_seq: g("cellos_checkpoint_boot_seq"),
            load_seconds: g("cellos_checkpoint_load_seconds"),
            lost_events: g("cellos_boot_lost_events"),
            age_seconds: g("cellos_checkpoint_age_seconds"),
            last_ms: AtomicU64::new(0),
        };
        Arc::new(Metrics {
            checkpoint,
            log_lag: g("cellos_log_lag_events"),
            snapshot_age_seconds: g("cellos_snapshot_age_seconds"),
            ws_connections: g("cellos_ws_connections"),
            ring_bytes: g("cellos_ring_bytes"),
            ring_frames: g("cellos_ring_frames"),
            ws_frames_sent: c("cellos_ws_frames_sent_total", vec![]),
            ws_lagged: c("cellos_ws_lagged_total", vec![]),
            connections_rejected: c("cellos_connections_rejected_total", vec![]),
            last_publish_ms: AtomicU64::new(now_ms()),
            ingest,
            boot,
            handle,
            recorder,
        })
    }

    /// Adds `n` events to `cellos_events_<outcome>_total{family,reason}`. Registered on first use,
    /// so only combinations that happened show up.
    pub fn events(
        &self,
        outcome: &'static str,
        family: &'static str,
        reason: &'static str,
        n: u64,
    ) {
        let name = match outcome {
            "applied" => "cellos_events_applied_total",
            "failed" => "cellos_events_failed_total",
            _ => "cellos_events_ignored_total",
        };
        let mut labels = vec![Label::new("family", family)];
        if !reason.is_empty() {
            labels.push(Label::new("reason", reason));
        }
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
            .increment(n);
    }

    /// Counts one HTTP response.
    pub fn http_request(&self, route: &'static str, status: u16, seconds: f64) {
        let labels = vec![
            Label::new("route", route),
            Label::new("status", status.to_string()),
        ];
        self.recorder
            .register_counter(
                &Key::from_parts("cellos_http_requests_total", labels),
                &META,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &Key::from_parts(
                    "cellos_http_request_seconds",
                    vec![Label::new("route", route)],
                ),
                &META,
            )
            .record(seconds);
    }

    /// Counts a checkpoint passed over at boot, by why (`cellos_checkpoint_skipped_total`).
    pub fn checkpoint_skipped(&self, reason: &'static str) {
        self.recorder
            .register_counter(
                &Key::from_parts(
                    "cellos_checkpoint_skipped_total",
                    vec![Label::new("reason", reason)],
                ),
                &META,
            )
            .increment(1);
    }

    /// Called by the ingest thread after each snapshot publish.
    pub fn snapshot_published(&self) {
        self.last_publish_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let age = now_ms().saturating_sub(self.last_publish_ms.load(Ordering::Relaxed));
        self.snapshot_age_seconds.set(age as f64 / 1000.0);
        let newest = self.checkpoint.last_ms.load(Ordering::Relaxed);
        if newest > 0 {
            let age = now_ms().saturating_sub(newest);
            self.checkpoint.age_seconds.set(age as f64 / 1000.0);
        }
        self.handle.render()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
