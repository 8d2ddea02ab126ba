//! The HTTP edge: hyper 1 accept loop, connection cap, timeouts, graceful shutdown. Handlers only
//! read snapshots and append to the log; none of them mutates state.
//!
//! Request parsing that needs no I/O ([`query`], [`cloudevents`]) builds without the `server`
//! feature, for the fuzz targets and the gates. Handlers share [`crate::app::Ctx`]; the
//! WebSocket route hands over to [`crate::ws`], which depends on nothing here.

pub mod cloudevents;
pub mod query;

cfg_server! {
    pub mod auth;
    mod body;
    mod cell_events;
    mod cells;
    mod events;
    mod formation_writes;
    mod formations;
    mod meta;
    mod render;
    mod routes;
    mod serve;

    pub use serve::{empty, full, json, problem, serve, MAX_HEAD_BYTES};
}
