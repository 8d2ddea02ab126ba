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
//!
//! checkpoint published snapshot → image (pure) → store (data dir / JetStream Object Store);
//!            at boot: newest valid checkpoint → ingest thread, tail from its seq
//! ```
//!
//! Pure core (no I/O, clock or randomness): [`event`], [`state`], [`admission`], the checkpoint
//! format ([`checkpoint::format`]), and request parsing ([`problem`] for errors, [`form`] for
//! query strings). Edges: [`log`], [`ingest`] (threads and tasks), checkpoint stores and writer,
//! [`app`] (the context handlers and sessions share), [`http`], [`ws`], [`server`], and
//! [`memory`] (the global allocator, and handing freed pages back to the OS).
//! Only [`config`] reads the environment.
//!
//! Dependencies between the edges flow one way: `server` → `http` → `ws` → `app`, and `http` →
//! `app`; nothing in `ws` or `app` reaches back into `http` (`tests/layering.rs`).
//!
//! The edges are behind the default `server` feature. Without it the crate builds only the core,
//! the frame ring, the ingest core ([`ingest::Ingestor`]), the log's types and request parsing:
//! no tokio runtime, hyper, redb or NATS, and no clock or random source (`chrono/clock` and
//! `uuid/v4` come with `server`). The fuzz targets and the instruction-count gates build that.

/// Items of the edges: compiled with the `server` feature only.
macro_rules! cfg_server {
    ($($item:item)*) => { $( #[cfg(feature = "server")] $item )* };
}

pub mod admission;
pub mod checkpoint;
pub mod event;
pub mod fanout;
pub mod form;
pub mod http;
pub mod ingest;
pub mod log;
pub mod problem;
pub mod state;
pub mod ws;

cfg_server! {
    pub mod app;
    pub mod config;
    pub mod memory;
    pub mod metrics;
    pub mod server;

    pub use config::Config;
    pub use server::{start, start_with, Running};
}
