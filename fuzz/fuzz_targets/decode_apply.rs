//! Decode + apply over event sequences, two ways, chosen by the first byte:
//! - model (even): the rest of the input becomes structured events over small id spaces, and the
//!   projection must equal the naive model in `state::apply::model`, whatever the batch split,
//!   with published snapshots unchanged afterwards;
//! - raw (odd): the rest is arbitrary payloads separated by 0xff; nothing may panic, and any
//!   batch split gives the same state with snapshots unchanged.
#![no_main]

use cellos_server::event::decode::Decoder;
use cellos_server::state::apply::model;
use cellos_server::state::{apply, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    // The mode byte's upper bits choose the batch cuts (before op i when bit i % 7 is set).
    let cut = |i: usize| mode & (2 << (i % 7)) != 0;
    if mode & 1 == 0 {
        let ops = model::ops_from_bytes(rest);
        let cuts: Vec<usize> = (0..ops.len()).filter(|&i| cut(i)).collect();
        if let Err(why) = model::check(&ops, &cuts) {
            panic!("{why}");
        }
        return;
    }
    let payloads: Vec<&[u8]> = rest.split(|&b| b == 0xff).take(64).collect();
    let mut decoder = Decoder::new();
    let mut one = State::default();
    for (i, p) in payloads.iter().enumerate() {
        if let Ok(ev) = decoder.decode(p) {
            apply(&mut one, i as u64 + 1, &ev);
        }
    }
    let mut batched = State::default();
    let mut snapshots = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if cut(i) {
            snapshots.push((batched.clone(), format!("{batched:?}")));
        }
        if let Ok(ev) = decoder.decode(p) {
            apply(&mut batched, i as u64 + 1, &ev);
        }
    }
    assert_eq!(one, batched);
    for (snap, printed) in snapshots {
        assert_eq!(format!("{snap:?}"), printed, "a snapshot changed after it was taken");
    }
});
