//! Decode + apply over a sequence of payloads: never panics, and applying the same events in any
//! batch split (with snapshots taken between batches) gives the same state, while snapshots stay
//! as they were published.
#![no_main]

use cellos_server::event::decode::Decoder;
use cellos_server::state::{apply, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses batch cuts; the rest is payloads separated by 0xff.
    let Some((&cuts, rest)) = data.split_first() else { return };
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
        if cuts & (1 << (i % 8)) != 0 {
            snapshots.push((i, batched.clone(), format!("{batched:?}")));
        }
        if let Ok(ev) = decoder.decode(p) {
            apply(&mut batched, i as u64 + 1, &ev);
        }
    }
    assert_eq!(one, batched);
    for (_, snap, printed) in snapshots {
        assert_eq!(format!("{snap:?}"), printed, "a snapshot changed after it was taken");
    }
});
