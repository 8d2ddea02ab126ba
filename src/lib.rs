//! cellos-server: the CellOS control plane as a lock-free event pipeline.
//!
//! Crate map, in data-flow order:
//!
//! ```text
//! producers (HTTP writes, POST /v1/events, supervisors on NATS)
//!   │ append(subject, payload, dedupe id) -> seq
//!   ▼
//! log        EventLog: embedded redb log (default) or JetStream; ordered tail from a seq
//!   ▼
//! ingest     tailer task → bounded channel → ingest thread (the only writer):
//!            event::decode (simd-json, pure) → state::apply (pure) → snapshot publish (arc-swap)
//!            → fanout ring (one shared frame per event) → applied cursor
//!   ▼                                   ▼
//! http       reads: one snapshot load   WebSocket sessions read the ring
//!            writes: append → wait until applied → answer
//! ```
//!
//! Pure core (no I/O, clock or randomness): [`event`], [`state`], [`admission`]. Edges: [`log`],
//! [`ingest`] (threads and tasks), [`http`], [`server`]. Only [`config`] reads the environment.

pub mod admission;
pub mod config;
pub mod event;
pub mod fanout;
pub mod http;
pub mod ingest;
pub mod log;
pub mod metrics;
pub mod server;
pub mod state;
pub mod ws;

pub use config::Config;
pub use server::{start, start_with, Running};
