//! Query-string parsing for every route: never panics, whatever the bytes.
#![no_main]

use cellos_server::http::query::{CellEventsQuery, CellsQuery, EventsQuery};
use cellos_server::ws::query::WsQuery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    let _ = CellsQuery::parse(Some(q));
    let _ = EventsQuery::parse(Some(q));
    let _ = WsQuery::parse(Some(q));
    let _ = CellEventsQuery::parse(Some(q));
});
