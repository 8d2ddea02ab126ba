//! `/ws/events`: validation before the upgrade (`upgrade`), then one session task per socket
//! reading the shared frame ring (`session`: delivery, resume and lag). The query parser builds
//! without the `server` feature, for the fuzz targets and the gates.

pub mod close;
pub mod delivery;
pub mod query;

cfg_server! {
    mod session;
    mod upgrade;
    pub mod writer;

    pub use session::Filter;
    pub use upgrade::{upgrade, MAX_INBOUND_BYTES};
}
