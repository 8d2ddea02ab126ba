//! The HTTP edge: hyper 1 accept loop, connection cap, timeouts, graceful shutdown. Handlers only
//! read snapshots and append to the log; none of them mutates state.
//!
//! Request parsing that needs no I/O ([`query`], [`cloudevents`], [`problem`]) builds without the
//! `server` feature, for the fuzz targets and the gates.

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
mod body;
#[cfg(feature = "server")]
mod cell_events;
#[cfg(feature = "server")]
mod cells;
pub mod cloudevents;
#[cfg(feature = "server")]
mod events;
#[cfg(feature = "server")]
mod formation_writes;
#[cfg(feature = "server")]
pub mod formations;
#[cfg(feature = "server")]
mod meta;
pub mod problem;
pub mod query;
#[cfg(feature = "server")]
mod render;
#[cfg(feature = "server")]
mod routes;
#[cfg(feature = "server")]
mod serve;

#[cfg(feature = "server")]
pub use serve::{empty, full, json, problem, serve, Body, BoxError, Ctx, MAX_HEAD_BYTES};
