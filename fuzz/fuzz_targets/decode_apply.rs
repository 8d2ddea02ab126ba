//! Decode + apply over event sequences (`state::apply::model::check_input`), two ways, chosen by
//! the first byte:
//! - model (even): the rest of the input becomes structured events over small id spaces, and the
//!   projection must equal the naive model in `state::apply::model`, whatever the batch split,
//!   with published snapshots unchanged afterwards;
//! - raw (odd): the rest is arbitrary payloads separated by 0xff; nothing may panic, and any
//!   batch split gives the same state with snapshots unchanged.
#![no_main]

use cellos_server::state::apply::model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = model::check_input(data) {
        panic!("{why}");
    }
});
