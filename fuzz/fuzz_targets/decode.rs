//! Event decode: any bytes must decode to an event or an error, never a panic, and the same bytes
//! must always decode the same way (the decoder reuses its buffers).
#![no_main]

use cellos_server::event::decode::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let first = decoder.decode(data).map(|e| format!("{e:?}")).map_err(|e| e.to_string());
    let second = decoder.decode(data).map(|e| format!("{e:?}")).map_err(|e| e.to_string());
    assert_eq!(first, second);
});
