//! The HTTP edge: hyper 1 accept loop, connection cap, timeouts, graceful shutdown. Handlers only
//! read snapshots and append to the log; none of them mutates state.
//!
//! Request parsing that needs no I/O ([`query`], [`cloudevents`], [`problem`](mod@problem))
//! builds without the `server` feature, for the fuzz targets and the gates.

pub mod cloudevents;
pub mod problem;
pub mod query;

cfg_server! {
    pub mod auth;
    mod body;
    mod cell_events;
    mod cells;
    mod events;
    mod formation_writes;
    pub mod formations;
    mod meta;
    mod render;
    mod routes;
    mod serve;

    pub use serve::{empty, full, json, problem, serve, Body, BoxError, Ctx, MAX_HEAD_BYTES};
}
