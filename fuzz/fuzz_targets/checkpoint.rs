//! Checkpoints as read at boot: any bytes are a state or an error, never a panic, and whatever
//! restores is encoded back to bytes that restore to the same state. The first byte chooses
//! what the rest is: even, a whole checkpoint file (envelope, checksum, header, image); odd, a
//! payload alone (header and image, no checksum to get past), so the fuzzer reaches the image
//! decoder.
#![no_main]

use cellos_server::checkpoint::format::{self, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let restored = if mode % 2 == 0 {
        format::open(rest).and_then(|opened| Ok((opened.header.clone(), opened.restore(7)?)))
    } else {
        format::open_payload(rest).and_then(|opened| Ok((opened.header.clone(), opened.restore(7)?)))
    };
    let Ok((header, state)) = restored else {
        return;
    };
    let Header { log, seq, .. } = header;
    let bytes = format::encode(&log, seq, &state).expect("a restored state encodes");
    let again = format::open(&bytes).expect("an encoded checkpoint opens");
    assert_eq!(again.header.seq, seq);
    let state_again = again.restore(11).expect("an encoded checkpoint restores");
    assert_eq!(state_again, state);
    let bytes_again = format::encode(&log, seq, &state_again).expect("encodes again");
    assert_eq!(bytes_again, bytes, "deterministic");
});
