//! Checkpoints of the projection: the whole state at a log position, so that state outlives the
//! log's retention and a boot costs the size of the state, not the length of the log.
//!
//! ```text
//! published snapshot ──(O(1) clone, off the ingest thread)──▶ format::encode ──▶ CheckpointStore
//!                                                             (every N events or T seconds)
//! boot: newest checkpoint that opens, restores and belongs to this log ──▶ ingest thread
//!       + the log after its seq (the tail)
//! ```
//!
//! [`format`](mod@format) is pure (bytes in, bytes out). The stores, the writer task and the boot loader are
//! edges: the data directory for the embedded log, a JetStream Object Store bucket for JetStream.

pub mod format;

pub use format::{FormatError, Header, FORMAT_VERSION};

cfg_server! {
    pub mod bucket;
    pub mod dir;
    pub mod load;
    pub mod store;
    pub mod writer;

    pub use store::{CheckpointStore, StoreError, KEEP, MAX_CHECKPOINT_BYTES};
    pub use writer::Schedule;
}
